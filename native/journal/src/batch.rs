//! One batch, one transaction: what the writer thread runs while it holds the write lock.
//!
//! Seqs are assigned exactly like the Python writer always did (kefu.reference.journal is the twin):
//! per conversation, in arrival order, from `conversations.last_seq` read inside the transaction; a
//! record whose (conv, sender_id, cmid) is stored already answers with the original seq and ts and
//! takes none. Per record the hot path is one INSERT; per conversation and batch one SELECT and one
//! UPDATE. Statements are prepared once and cached on the connection.

use std::collections::HashMap;
use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};

use crate::{AppendError, AppendRecord, Appended};

const SELECT_CONVERSATION: &str =
    "SELECT last_seq, state = 'closed' FROM conversations WHERE id = ?1";
const INSERT_MESSAGE: &str =
    "INSERT INTO messages(conv, seq, cmid, sender_id, sender_role, sender_name, body, kind, meta, ts) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT(conv, sender_id, cmid) DO NOTHING";
const SELECT_ORIGINAL: &str =
    "SELECT seq, ts FROM messages WHERE conv = ?1 AND sender_id = ?2 AND cmid = ?3";
const UPDATE_LAST_SEQ: &str = "UPDATE conversations SET last_seq = ?2 WHERE id = ?1";

/// Every statement the writer runs, so that [`prepare_all`] can check the schema at open.
const STATEMENTS: [&str; 4] = [
    SELECT_CONVERSATION,
    INSERT_MESSAGE,
    SELECT_ORIGINAL,
    UPDATE_LAST_SEQ,
];

/// What one record's append answered.
pub(crate) type RecordResult = Result<Appended, AppendError>;

/// Prepares (and caches) every statement: fails at open, not at the first message, when the schema
/// is missing or different.
pub(crate) fn prepare_all(conn: &Connection) -> rusqlite::Result<()> {
    for sql in STATEMENTS {
        conn.prepare_cached(sql)?;
    }
    Ok(())
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
        .query_row(params![record.conv, record.sender_id, record.cmid], |row| {
            Ok(Appended {
                seq: row.get(0)?,
                ts: row.get(1)?,
                duplicate: true,
            })
        })
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
        record.cmid,
        record.sender_id,
        record.sender_role.as_str(),
        record.sender_name,
        record.text,
        record.kind,
        record.meta,
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

/// The fast way: every record in the open transaction, one `last_seq` write per conversation. Any
/// database error aborts it (the caller rolls back and replays with [`append_isolated`]).
fn append_together(
    conn: &Connection,
    records: &[&AppendRecord],
    now: f64,
) -> rusqlite::Result<Vec<RecordResult>> {
    let mut conversations: HashMap<i64, Option<ConvCursor>> = HashMap::new();
    let mut results = Vec::with_capacity(records.len());
    for record in records {
        let cursor = match conversations.get_mut(&record.conv) {
            Some(cursor) => cursor,
            None => conversations
                .entry(record.conv)
                .or_insert(load_conversation(conn, record.conv)?),
        };
        results.push(match cursor {
            Some(cursor) => append_to(conn, record, cursor, now)?,
            None => Err(AppendError::NotFound),
        });
    }
    for (conv, cursor) in &conversations {
        if let Some(cursor) = cursor {
            write_back(conn, *conv, cursor)?;
        }
    }
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
/// transaction is rolled back as if COMMIT had failed.
pub(crate) fn write_batch(
    conn: &Connection,
    records: &[&AppendRecord],
    now: f64,
    fail_commit: bool,
) -> Vec<RecordResult> {
    let fail_all = |error: AppendError| vec![Err(error); records.len()];
    if let Err(error) = conn.execute_batch("BEGIN IMMEDIATE") {
        return fail_all(unavailable(&error));
    }
    let results = match append_together(conn, records, now) {
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
    if let Err(error) = conn.execute_batch("COMMIT") {
        rollback_quietly(conn);
        return fail_all(unavailable(&error));
    }
    results
}
