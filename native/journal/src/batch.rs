//! One batch, one transaction: what the writer thread runs while it holds the write lock.
//!
//! Seqs are assigned exactly like the Python writer always did (kefu.reference.journal is the twin):
//! per conversation, in arrival order, from `conversations.last_seq` read inside the transaction; a
//! record whose (conv, sender_id, cmid) is stored already answers with the original seq and ts and
//! takes none. Per record the hot path is one INSERT; per conversation and batch one SELECT and one
//! UPDATE. Statements are prepared once and cached on the connection.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection, OptionalExtension};

use crate::insert::StaticInsert;
use crate::{AppendError, AppendRecord, Appended};

const SELECT_CONVERSATION: &str =
    "SELECT last_seq, state = 'closed' FROM conversations WHERE id = ?1";
const INSERT_MESSAGE: &str =
    "INSERT INTO messages(conv, seq, cmid, sender_id, sender_role, sender_name, body, kind, meta, ts) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT(conv, sender_id, cmid) DO NOTHING";
const SELECT_ORIGINAL: &str =
    "SELECT seq, ts FROM messages WHERE conv = ?1 AND sender_id = ?2 AND cmid = ?3";
const UPDATE_LAST_SEQ: &str = "UPDATE conversations SET last_seq = ?2 WHERE id = ?1";

/// Rows per multi-row INSERT in the fast path, largest first (each size is one cached statement).
const INSERT_CHUNKS: [usize; 4] = [64, 16, 4, 1];
const MESSAGE_COLUMNS: usize = 10;

/// `INSERT … VALUES (…), (…), …` for `rows` rows; duplicates of the idempotency key are skipped.
fn insert_rows_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO messages(conv, seq, cmid, sender_id, sender_role, sender_name, body, kind, meta, ts) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push_str("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
    }
    sql.push_str(" ON CONFLICT(conv, sender_id, cmid) DO NOTHING");
    sql
}

/// Every statement the writer runs, so that [`prepare_all`] can check the schema at open.
const STATEMENTS: [&str; 4] = [
    SELECT_CONVERSATION,
    INSERT_MESSAGE,
    SELECT_ORIGINAL,
    UPDATE_LAST_SEQ,
];

/// What one record's append answered.
pub(crate) type RecordResult = Result<Appended, AppendError>;

/// The fast path's multi-row INSERTs, one per size of [`INSERT_CHUNKS`] (same order).
pub(crate) struct Inserts(Vec<StaticInsert>);

/// Prepares every statement: fails at open, not at the first message, when the schema is missing
/// or different. The small ones are cached on the connection; the fast path's INSERTs are returned.
pub(crate) fn prepare_all(conn: &Connection) -> rusqlite::Result<Inserts> {
    for sql in STATEMENTS {
        conn.prepare_cached(sql)?;
    }
    INSERT_CHUNKS
        .iter()
        .map(|rows| StaticInsert::prepare(conn, &insert_rows_sql(*rows)))
        .collect::<rusqlite::Result<_>>()
        .map(Inserts)
}

/// A conversation as the batch sees it: its last seq so far, whether it is closed, and whether the
/// batch has raised `last_seq` (then it must be written back).
struct ConvCursor {
    last_seq: i64,
    closed: bool,
    raised: bool,
}

fn load_conversation(conn: &Connection, conv: i64) -> rusqlite::Result<Option<ConvCursor>> {
    conn.prepare_cached(SELECT_CONVERSATION)?
        .query_row([conv], |row| {
            Ok(ConvCursor {
                last_seq: row.get(0)?,
                closed: row.get(1)?,
                raised: false,
            })
        })
        .optional()
}

fn original(conn: &Connection, record: &AppendRecord) -> rusqlite::Result<Option<Appended>> {
    conn.prepare_cached(SELECT_ORIGINAL)?
        .query_row(
            params![record.conv, record.sender_id(), record.cmid()],
            |row| {
                Ok(Appended {
                    seq: row.get(0)?,
                    ts: row.get(1)?,
                    duplicate: true,
                })
            },
        )
        .optional()
}

/// Appends one record to a known conversation, raising `cursor.last_seq` (not yet written back).
fn append_to(
    conn: &Connection,
    record: &AppendRecord,
    cursor: &mut ConvCursor,
    now: f64,
) -> rusqlite::Result<RecordResult> {
    if cursor.closed {
        // A retry of a message stored before the close still gets its seq; a new one is refused.
        return Ok(original(conn, record)?.ok_or(AppendError::Conflict));
    }
    let seq = cursor.last_seq + 1;
    let ts = record.ts.unwrap_or(now);
    let inserted = conn.prepare_cached(INSERT_MESSAGE)?.execute(params![
        record.conv,
        seq,
        record.cmid(),
        record.sender_id(),
        record.sender_role.as_str(),
        record.sender_name(),
        record.text(),
        record.kind(),
        record.meta(),
        ts,
    ])?;
    if inserted == 1 {
        cursor.last_seq = seq;
        cursor.raised = true;
        return Ok(Ok(Appended {
            seq,
            ts,
            duplicate: false,
        }));
    }
    // The idempotency key exists: this thread holds the write lock, so the row is committed (or
    // earlier in this very batch) and cannot vanish before we read it.
    match original(conn, record)? {
        Some(appended) => Ok(Ok(appended)),
        None => Err(rusqlite::Error::QueryReturnedNoRows),
    }
}

fn write_back(conn: &Connection, conv: i64, cursor: &ConvCursor) -> rusqlite::Result<()> {
    if cursor.raised {
        conn.prepare_cached(UPDATE_LAST_SEQ)?
            .execute(params![conv, cursor.last_seq])?;
    }
    Ok(())
}

/// The conversations a batch touches: each loaded once, written back once at the end.
#[derive(Default)]
struct Cursors(HashMap<i64, Option<ConvCursor>>);

impl Cursors {
    /// `conv`'s cursor (None: no such conversation), loaded on first use.
    fn get(&mut self, conn: &Connection, conv: i64) -> rusqlite::Result<&mut Option<ConvCursor>> {
        Ok(match self.0.entry(conv) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(load_conversation(conn, conv)?),
        })
    }

    /// Stores every `last_seq` the batch raised.
    fn write_back(&self, conn: &Connection) -> rusqlite::Result<()> {
        for (conv, cursor) in &self.0 {
            if let Some(cursor) = cursor {
                write_back(conn, *conv, cursor)?;
            }
        }
        Ok(())
    }
}

/// The fastest way, when no record of the batch is a retry (the common case): seqs reserved per
/// conversation in arrival order, rows sorted by (conv, seq) so that consecutive inserts land next to
/// each other in the b-tree, and written by multi-row INSERTs (one statement step per chunk instead of
/// one per record). Returns `None` when fewer rows went in than were sent, i.e. some record repeats a
/// stored (conv, sender_id, cmid): the caller undoes the attempt and takes [`append_together`].
fn append_sorted(
    conn: &Connection,
    inserts: &Inserts,
    records: &[&AppendRecord],
    now: f64,
) -> rusqlite::Result<Option<Vec<RecordResult>>> {
    let mut conversations = Cursors::default();
    let mut results = Vec::with_capacity(records.len());
    let mut rows: Vec<(i64, i64, usize)> = Vec::with_capacity(records.len()); // (conv, seq, record)
    for (index, record) in records.iter().enumerate() {
        results.push(match conversations.get(conn, record.conv)? {
            None => Err(AppendError::NotFound),
            // Closed: answers depend on what is stored, which is the careful path's business.
            Some(cursor) if cursor.closed => return Ok(None),
            Some(cursor) => {
                cursor.last_seq += 1;
                cursor.raised = true;
                rows.push((record.conv, cursor.last_seq, index));
                Ok(Appended {
                    seq: cursor.last_seq,
                    ts: record.ts.unwrap_or(now),
                    duplicate: false,
                })
            }
        });
    }
    rows.sort_unstable();
    let mut inserted = 0;
    let mut rest = &rows[..];
    for (size, statement) in INSERT_CHUNKS.into_iter().zip(&inserts.0) {
        while rest.len() >= size {
            let (chunk, tail) = rest.split_at(size);
            for (row, (conv, seq, index)) in chunk.iter().enumerate() {
                let record = records[*index];
                let first = row * MESSAGE_COLUMNS + 1;
                statement.bind_i64(first, *conv)?;
                statement.bind_i64(first + 1, *seq)?;
                statement.bind_text(first + 2, record.cmid())?;
                statement.bind_text(first + 3, record.sender_id())?;
                statement.bind_text(first + 4, record.sender_role.as_str())?;
                statement.bind_optional_text(first + 5, record.sender_name())?;
                statement.bind_text(first + 6, record.text())?;
                statement.bind_text(first + 7, record.kind())?;
                statement.bind_text(first + 8, record.meta())?;
                statement.bind_f64(first + 9, record.ts.unwrap_or(now))?;
            }
            // `records` outlives this call: the statically bound texts stay valid through it.
            inserted += statement.execute()?;
            rest = tail;
        }
    }
    if inserted != rows.len() {
        return Ok(None);
    }
    conversations.write_back(conn)?;
    Ok(Some(results))
}

/// The general way: record by record in the open transaction (each retry answered with its original),
/// one `last_seq` write per conversation. Any database error aborts it (the caller rolls back and
/// replays with [`append_isolated`]).
fn append_together(
    conn: &Connection,
    records: &[&AppendRecord],
    now: f64,
) -> rusqlite::Result<Vec<RecordResult>> {
    let mut conversations = Cursors::default();
    let mut results = Vec::with_capacity(records.len());
    for record in records {
        results.push(match conversations.get(conn, record.conv)? {
            Some(cursor) => append_to(conn, record, cursor, now)?,
            None => Err(AppendError::NotFound),
        });
    }
    conversations.write_back(conn)?;
    Ok(results)
}

/// The careful way, after [`append_together`] failed: each record in its own SAVEPOINT, so a record
/// the database refuses (e.g. the disk is full) fails alone. Opens its own transaction. When SQLite
/// rolls back the whole transaction by itself (it may, on SQLITE_FULL or an I/O error), the records
/// written so far are gone: the failing record is refused and the rest is written again in a new
/// transaction, so each round refuses at least one record and the loop ends.
fn append_isolated(
    conn: &Connection,
    records: &[&AppendRecord],
    now: f64,
) -> rusqlite::Result<Vec<RecordResult>> {
    let mut refused: Vec<Option<AppendError>> = vec![None; records.len()];
    'transaction: loop {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let mut results = Vec::with_capacity(records.len());
        for (index, record) in records.iter().enumerate() {
            if let Some(error) = &refused[index] {
                results.push(Err(error.clone()));
                continue;
            }
            conn.execute_batch("SAVEPOINT record")?;
            let attempt = load_conversation(conn, record.conv).and_then(|cursor| match cursor {
                Some(mut cursor) => {
                    let result = append_to(conn, record, &mut cursor, now)?;
                    write_back(conn, record.conv, &cursor)?;
                    Ok(result)
                }
                None => Ok(Err(AppendError::NotFound)),
            });
            match attempt {
                Ok(result) => {
                    conn.execute_batch("RELEASE record")?;
                    results.push(result);
                }
                Err(error) => {
                    let error = unavailable(&error);
                    refused[index] = Some(error.clone());
                    if conn.is_autocommit() {
                        continue 'transaction;
                    }
                    conn.execute_batch("ROLLBACK TO record; RELEASE record")?;
                    results.push(Err(error));
                }
            }
        }
        return Ok(results);
    }
}

fn unavailable(error: &rusqlite::Error) -> AppendError {
    AppendError::Unavailable(Arc::from(error.to_string()))
}

fn rollback_quietly(conn: &Connection) {
    if !conn.is_autocommit() {
        // SQLite may already have rolled back after some errors; the next BEGIN starts clean anyway.
        let _ = conn.execute_batch("ROLLBACK");
    }
}

/// Writes `records` in one transaction and commits it (one fsync), or fails every record with
/// `Unavailable` when nothing could be committed. `fail_commit` is the fault-injection hook: the
/// transaction is rolled back as if COMMIT had failed. `commit_took` receives how long COMMIT ran
/// (the fsync) when the batch committed, and stays `None` otherwise.
pub(crate) fn write_batch(
    conn: &Connection,
    inserts: &Inserts,
    records: &[&AppendRecord],
    now: f64,
    fail_commit: bool,
    commit_took: &mut Option<Duration>,
) -> Vec<RecordResult> {
    let fail_all = |error: AppendError| vec![Err(error); records.len()];
    if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
        return fail_all(unavailable(&error));
    }
    // No SAVEPOINT around the fast path: pages modified inside a savepoint are first copied to a
    // sub-journal. The transaction holds nothing but this batch, so undoing means rolling it back.
    let attempt = match append_sorted(conn, inserts, records, now) {
        Ok(Some(results)) => Ok(results),
        Ok(None) => {
            // A retry or a closed conversation in the batch: undo, then one record at a time.
            conn.execute_batch("ROLLBACK; BEGIN IMMEDIATE")
                .and_then(|()| append_together(conn, records, now))
        }
        Err(error) => Err(error),
    };
    let results = match attempt {
        Ok(results) => results,
        Err(_) => {
            rollback_quietly(conn);
            match append_isolated(conn, records, now) {
                Ok(results) => results,
                Err(error) => {
                    rollback_quietly(conn);
                    return fail_all(unavailable(&error));
                }
            }
        }
    };
    if fail_commit {
        rollback_quietly(conn);
        return fail_all(AppendError::Unavailable(Arc::from(
            "commit failed (injected fault)",
        )));
    }
    let commit_started = Instant::now();
    if let Err(error) = conn.execute_batch("COMMIT") {
        rollback_quietly(conn);
        return fail_all(unavailable(&error));
    }
    *commit_took = Some(commit_started.elapsed());
    results
}
