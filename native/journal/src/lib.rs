//! The durable message writer ("journal"): messages go into SQLite from Rust, with prepared
//! statements and group commit.
//!
//! Producers (the Python storage layer, or native code such as a data plane, Rust to Rust) call
//! [`Journal::submit`], which never blocks: the record goes into the lock-free [`ArrayRing`] and the
//! writer thread is woken only if it sleeps. The writer takes everything pending (up to
//! `max_batch`), writes it in ONE `BEGIN IMMEDIATE … COMMIT` (one fsync, WAL, `synchronous=FULL` by
//! default) and publishes the outcomes to each producer's [`Completions`] once per batch: one
//! eventfd signal per batch, however many messages it held.
//!
//! Waiting: the writer sleeps in `thread::park` (a futex) when the ring is empty; a producer unparks
//! it only when it announced that it sleeps (a Dekker handshake of two SeqCst fences), so a busy
//! writer costs producers one fence and one load, and an idle one costs no CPU. Nobody spins on
//! `sched_yield`.
//!
//! Concurrency with other writers of the same file: every writer in the process (this journal's
//! thread, the Python control writer through the binding) takes the file's [`WriteLock`] around its
//! transaction, so in-process writers queue in FIFO order instead of meeting in SQLite's busy
//! handler. Other processes are kept apart by SQLite's own file lock (`busy_timeout`).
//!
//! The journal does not create the schema (the Python storage layer migrates it); [`Journal::open`]
//! fails when the tables it writes are missing.

#![warn(missing_docs)]

mod batch;
pub mod closed_loop;
mod insert;
mod lock;

use std::fmt;
use std::path::Path;
use std::sync::atomic::{fence, AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kefu_queue::ArrayRing;
use rusqlite::Connection;

/// A consumer's queue of outcomes: create with [`Journal::new_completions`] (or use the journal's
/// default one) and hand it to [`Journal::submit_to`]; drain it when its eventfd is readable.
pub type Completions = kefu_signal::SignalledList<Outcome>;
pub use lock::{WriteLock, WriteLockGuard};

/// Who sent a message (the `sender_role` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A website visitor.
    Visitor,
    /// A support agent.
    Agent,
    /// An administrator writing as an agent.
    Admin,
}

impl Role {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Visitor => "visitor",
            Role::Agent => "agent",
            Role::Admin => "admin",
        }
    }

    /// Parses a column value; `None` for anything else.
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "visitor" => Some(Role::Visitor),
            "agent" => Some(Role::Agent),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// One message to store. The fields become the `messages` row as they are (no re-encoding): `meta`
/// is already-encoded JSON text. The caller has validated the values (UTF-8 without U+0000).
///
/// The six texts live in one buffer: one allocation per record where the caller builds it (the
/// event loop) and one free where the journal thread drops it, instead of six of each.
#[derive(Clone, Debug, PartialEq)]
pub struct AppendRecord {
    /// Conversation id.
    pub conv: i64,
    /// The sender's role.
    pub sender_role: Role,
    /// Unix seconds to store; `None`: the time the batch is written (what `ts` means everywhere).
    pub ts: Option<f64>,
    /// Opaque to the journal; comes back in the [`Outcome`] so the caller knows whom to answer.
    pub token: u64,
    texts: Box<str>,
    /// Where each text of [`RecordTexts`] ends in `texts`, in field order.
    ends: [usize; 6],
    has_name: bool,
}

/// The texts of an [`AppendRecord`], borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordTexts<'a> {
    /// The sender's participant id (`v_…`, `a_…`).
    pub sender_id: &'a str,
    /// The sender's display name, if any.
    pub sender_name: Option<&'a str>,
    /// The client's idempotency key, unique per (conv, sender).
    pub cmid: &'a str,
    /// `text`, `image`, `file`.
    pub kind: &'a str,
    /// The message body.
    pub text: &'a str,
    /// JSON object text (`{}` when empty).
    pub meta: &'a str,
}

impl AppendRecord {
    /// Copies `texts` into one buffer.
    pub fn new(
        conv: i64,
        sender_role: Role,
        texts: RecordTexts<'_>,
        ts: Option<f64>,
        token: u64,
    ) -> Self {
        let parts = [
            texts.sender_id,
            texts.sender_name.unwrap_or(""),
            texts.cmid,
            texts.kind,
            texts.text,
            texts.meta,
        ];
        let mut buffer = String::with_capacity(parts.iter().map(|part| part.len()).sum());
        let mut ends = [0; 6];
        for (end, part) in ends.iter_mut().zip(parts) {
            buffer.push_str(part);
            *end = buffer.len();
        }
        Self {
            conv,
            sender_role,
            ts,
            token,
            texts: buffer.into_boxed_str(),
            ends,
            has_name: texts.sender_name.is_some(),
        }
    }

    fn part(&self, index: usize) -> &str {
        let start = if index == 0 { 0 } else { self.ends[index - 1] };
        &self.texts[start..self.ends[index]]
    }

    /// All texts, borrowed (e.g. to build a changed copy with [`Self::new`]).
    pub fn texts(&self) -> RecordTexts<'_> {
        RecordTexts {
            sender_id: self.sender_id(),
            sender_name: self.sender_name(),
            cmid: self.cmid(),
            kind: self.kind(),
            text: self.text(),
            meta: self.meta(),
        }
    }

    /// The sender's participant id.
    pub fn sender_id(&self) -> &str {
        self.part(0)
    }

    /// The sender's display name, if any.
    pub fn sender_name(&self) -> Option<&str> {
        self.has_name.then(|| self.part(1))
    }

    /// The client's idempotency key.
    pub fn cmid(&self) -> &str {
        self.part(2)
    }

    /// `text`, `image`, `file`.
    pub fn kind(&self) -> &str {
        self.part(3)
    }

    /// The message body.
    pub fn text(&self) -> &str {
        self.part(4)
    }

    /// JSON object text.
    pub fn meta(&self) -> &str {
        self.part(5)
    }
}

/// A stored message: its seq and ts, or the original ones when it was a retry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Appended {
    /// The message's seq in its conversation.
    pub seq: i64,
    /// The stored timestamp (unix seconds).
    pub ts: f64,
    /// True when (conv, sender_id, cmid) was stored before: nothing new was written.
    pub duplicate: bool,
}

/// Why a record was not stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendError {
    /// The database failed (I/O error, disk full, failed commit): nothing of the record is stored;
    /// the client may retry with the same cmid. Carries SQLite's message.
    Unavailable(Arc<str>),
    /// No such conversation.
    NotFound,
    /// The conversation is closed and this cmid was not stored before it closed.
    Conflict,
}

impl AppendError {
    /// The protocol's error code for this failure.
    pub fn code(&self) -> &'static str {
        match self {
            AppendError::Unavailable(_) => "unavailable",
            AppendError::NotFound => "not_found",
            AppendError::Conflict => "conflict",
        }
    }
}

/// The answer for one submitted record, published after its batch committed (or failed).
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The record's token.
    pub token: u64,
    /// The record's conversation.
    pub conv: i64,
    /// What happened.
    pub result: Result<Appended, AppendError>,
}

/// Why [`Journal::submit`] refused a record (it is handed back, boxed: refusals are rare and the
/// `Result` of every submit stays small).
#[derive(Debug)]
pub enum SubmitError {
    /// `max_pending` records are in flight: the disk does not keep up. Answer `unavailable`.
    Full(Box<AppendRecord>),
    /// The journal is closed.
    Closed(Box<AppendRecord>),
}

/// SQLite's `synchronous` setting; OFF is not offered (an ack must mean stored).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Synchronous {
    /// Survives power loss (fsync of the WAL at every commit).
    Full,
    /// Survives a process crash; the last commits may be lost on power loss or an OS crash.
    Normal,
}

impl Synchronous {
    fn level(self) -> i64 {
        match self {
            Synchronous::Full => 2,
            Synchronous::Normal => 1,
        }
    }
}

/// Most records in one transaction by default. Large on purpose: a batch costs a fixed part (every
/// conversation's hot b-tree pages are written to the WAL once per batch, whatever it holds) plus a
/// part per record, so the writer's CPU per message falls as batches grow (docs/storage.md, measured
/// with examples/closed_loop.rs: about 4.9 µs at batches of ~4k, 4.0 µs at ~11k, 3.3 µs at ~20k).
/// The cap only binds when that many records are waiting, i.e. when the writer is the bottleneck, and
/// then larger batches are what lets it catch up; when it keeps up, batches stay as small as the
/// arrivals between two commits.
pub const DEFAULT_MAX_BATCH: usize = 16_384;

/// How a journal runs.
#[derive(Clone, Debug)]
pub struct JournalConfig {
    /// Durability of a commit.
    pub synchronous: Synchronous,
    /// Most records in one transaction.
    pub max_batch: usize,
    /// Most records in flight (submitted, outcome not yet published); beyond it `submit` refuses.
    pub max_pending: usize,
    /// How long to wait for another process's write lock on the file.
    pub busy_timeout: Duration,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Full,
            max_batch: DEFAULT_MAX_BATCH,
            max_pending: 65_536,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// Opening failed: bad configuration, the file, or a schema the journal cannot write to.
#[derive(Debug)]
pub struct OpenError(String);

impl fmt::Display for OpenError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for OpenError {}

impl From<rusqlite::Error> for OpenError {
    fn from(error: rusqlite::Error) -> Self {
        OpenError(error.to_string())
    }
}

/// The WAL is checkpointed by a separate connection (see docs/storage.md); SQLite's own automatic
/// checkpoint on the writer stays as a backstop at this many pages.
const BACKSTOP_AUTOCHECKPOINT_PAGES: i64 = 16_384;
/// The writer touches the hot ends of every conversation's message b-tree; keep them cached, and big
/// enough for the dirty pages of a full batch (about 0.7 pages per record at [`DEFAULT_MAX_BATCH`]),
/// so SQLite does not spill them into the WAL before COMMIT (KiB; allocated as pages are used).
const WRITER_CACHE_KIB: i64 = 64 * 1024;

struct Pending {
    record: AppendRecord,
    sink: Arc<Completions>,
}

/// State shared by the producers and the writer thread.
struct Shared {
    ring: ArrayRing<Pending>,
    in_flight: AtomicUsize,
    max_pending: usize,
    writer_sleeps: AtomicBool,
    commits: AtomicU64,
    fail_commits: AtomicBool,
    /// A `max_page_count` for the writer's connection to apply before its next batch (0: none).
    page_limit: AtomicI64,
    lock: Arc<WriteLock>,
    /// CPU time the writer thread has used so far, nanoseconds (updated once per batch).
    writer_cpu_ns: AtomicU64,
    /// Committed batches not yet taken by [`Journal::take_batch_stats`], at most
    /// [`MAX_BATCH_STATS`] (beyond that new ones are dropped: nobody is reading them).
    batch_stats: Mutex<Vec<BatchStat>>,
}

/// Most [`BatchStat`]s kept for a reader that does not come.
const MAX_BATCH_STATS: usize = 4096;

/// One committed batch, for metrics (e.g. `kefu_storage_batch_size`, `kefu_storage_commit_seconds`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchStat {
    /// Records in the batch.
    pub records: usize,
    /// How long COMMIT took (the fsync), seconds.
    pub commit_seconds: f64,
}

/// A durable writer for one SQLite database file. Share it as `Arc<Journal>`; every method takes
/// `&self` and is safe from any thread. Dropping it closes it (pending records are still written).
pub struct Journal {
    shared: Arc<Shared>,
    completions: Arc<Completions>,
    writer_thread: Thread,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Journal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Journal")
            .field("in_flight", &self.shared.in_flight.load(Ordering::Relaxed))
            .field("commits", &self.commits())
            .field("closed", &self.shared.ring.is_closed())
            .finish()
    }
}

impl Journal {
    /// Opens the database at `path` (which must hold Kefu's schema) and starts the writer thread.
    pub fn open(path: &Path, config: JournalConfig) -> Result<Journal, OpenError> {
        if config.max_batch == 0 || config.max_pending == 0 {
            return Err(OpenError(
                "max_batch and max_pending must be positive".into(),
            ));
        }
        if config.max_pending > ArrayRing::<Pending>::MAX_CAPACITY {
            return Err(OpenError("max_pending is too large".into()));
        }
        let connection = open_connection(path, &config)?;
        let shared = Arc::new(Shared {
            ring: ArrayRing::new(config.max_pending),
            in_flight: AtomicUsize::new(0),
            max_pending: config.max_pending,
            writer_sleeps: AtomicBool::new(false),
            commits: AtomicU64::new(0),
            fail_commits: AtomicBool::new(false),
            page_limit: AtomicI64::new(0),
            lock: WriteLock::for_path(path),
            writer_cpu_ns: AtomicU64::new(0),
            batch_stats: Mutex::new(Vec::new()),
        });
        let completions =
            Arc::new(Completions::new().map_err(|error| OpenError(error.to_string()))?);
        let writer_shared = Arc::clone(&shared);
        let max_batch = config.max_batch;
        let writer = thread::Builder::new()
            .name("kefu-journal".into())
            .spawn(move || run_writer(&writer_shared, &connection, max_batch))
            .map_err(|error| OpenError(error.to_string()))?;
        Ok(Journal {
            shared,
            completions,
            writer_thread: writer.thread().clone(),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Queues `record`; its outcome goes to the journal's own [`Completions`]. Never blocks.
    pub fn submit(&self, record: AppendRecord) -> Result<(), SubmitError> {
        self.submit_to(record, &self.completions)
    }

    /// Queues `record`; its outcome goes to `sink`. Never blocks.
    pub fn submit_to(
        &self,
        record: AppendRecord,
        sink: &Arc<Completions>,
    ) -> Result<(), SubmitError> {
        let shared = &*self.shared;
        if shared.in_flight.fetch_add(1, Ordering::AcqRel) >= shared.max_pending {
            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(if shared.ring.is_closed() {
                SubmitError::Closed(Box::new(record))
            } else {
                SubmitError::Full(Box::new(record))
            });
        }
        let pending = Pending {
            record,
            sink: Arc::clone(sink),
        };
        if let Err(pending) = shared.ring.try_push(pending) {
            // The ring holds max_pending items and in_flight counted us in, so only a close gets here.
            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(SubmitError::Closed(Box::new(pending.record)));
        }
        // Dekker with the writer's "I sleep" announcement: the push above is ordered before this load,
        // the writer's store before its emptiness check; at least one of us sees the other.
        fence(Ordering::SeqCst);
        if shared.writer_sleeps.load(Ordering::Relaxed) {
            self.writer_thread.unpark();
        }
        Ok(())
    }

    /// A new, separate outcome queue (for another consumer of the same journal).
    pub fn new_completions(&self) -> std::io::Result<Arc<Completions>> {
        Completions::new().map(Arc::new)
    }

    /// The journal's own outcome queue (where [`submit`](Self::submit) sends outcomes).
    pub fn completions(&self) -> &Arc<Completions> {
        &self.completions
    }

    /// The eventfd of the journal's own outcome queue.
    pub fn completion_fd(&self) -> std::os::fd::RawFd {
        self.completions.fd()
    }

    /// Moves the outcomes waiting in the journal's own queue into `out`.
    pub fn drain_completions(&self, out: &mut Vec<Outcome>) {
        self.completions.drain(out);
    }

    /// The in-process lock of this database file, for other writers of the same file.
    pub fn write_lock(&self) -> &Arc<WriteLock> {
        &self.shared.lock
    }

    /// Committed batches so far (e.g. to know when the WAL grew and a checkpoint is due).
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    /// CPU time of the writer thread so far (SQLite, the kernel's write and fsync work, publishing),
    /// updated once per batch: divided by the records written it is the writer's cost per message,
    /// and 1 s over that is what one free core can write.
    pub fn writer_cpu(&self) -> Duration {
        Duration::from_nanos(self.shared.writer_cpu_ns.load(Ordering::Relaxed))
    }

    /// Moves the statistics of the batches committed since the last call into `out` (oldest
    /// first). Batches that failed to commit are not in it.
    pub fn take_batch_stats(&self, out: &mut Vec<BatchStat>) {
        let mut stats = self
            .shared
            .batch_stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        out.append(&mut stats);
    }

    /// Records submitted whose outcome is not published yet.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Caps the database file at `pages` pages (`PRAGMA max_page_count`) from the next batch on, so
    /// that a size limit set on another connection of the file binds this writer too.
    pub fn limit_pages(&self, pages: i64) {
        self.shared
            .page_limit
            .store(pages.max(1), Ordering::Relaxed);
        self.writer_thread.unpark();
    }

    /// Fault injection for tests: while set, every batch is rolled back instead of committed and its
    /// records fail with `Unavailable`, as when COMMIT fails (disk error).
    pub fn set_commit_fault(&self, fail: bool) {
        self.shared.fail_commits.store(fail, Ordering::Relaxed);
    }

    /// Refuses new records, writes those already submitted, publishes their outcomes and stops the
    /// writer thread. Blocks until then. Idempotent.
    pub fn close(&self) {
        self.shared.ring.close();
        self.writer_thread.unpark();
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            // A panic in the writer is a bug; its records' outcomes are lost with it, and the
            // producers' in-flight count stays raised, so nothing new is accepted either.
            let _ = writer.join();
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.ring.is_closed()
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

/// The writer thread's connection and its fast-path statements. Field order is drop order: the
/// statements are finalized before the connection closes.
struct WriterConnection {
    inserts: batch::Inserts,
    conn: Connection,
}

fn open_connection(path: &Path, config: &JournalConfig) -> Result<WriterConnection, OpenError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(config.busy_timeout)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(OpenError(format!(
            "SQLite refused WAL mode (journal_mode={mode}) for {}",
            path.display()
        )));
    }
    let level = config.synchronous.level();
    // foreign_keys OFF on this connection only: the journal reads the message's conversation in the
    // same transaction before inserting, so SQLite's own parent-key lookup per row would repeat it.
    // temp_store MEMORY: statement and savepoint journals stay in memory instead of temp files.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {level}; PRAGMA foreign_keys = OFF; \
         PRAGMA wal_autocheckpoint = {BACKSTOP_AUTOCHECKPOINT_PAGES}; \
         PRAGMA cache_size = -{WRITER_CACHE_KIB}; PRAGMA temp_store = MEMORY;"
    ))?;
    let applied: i64 = conn.query_row("PRAGMA synchronous", [], |row| row.get(0))?;
    if applied != level {
        return Err(OpenError(format!(
            "SQLite did not accept synchronous={level}"
        )));
    }
    conn.set_prepared_statement_cache_capacity(16);
    let inserts = batch::prepare_all(&conn)?;
    Ok(WriterConnection { inserts, conn })
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

/// The writer thread: take what is pending, write it as one transaction, publish, repeat; sleep when
/// there is nothing; stop when closed and drained.
fn run_writer(shared: &Shared, connection: &WriterConnection, max_batch: usize) {
    let conn = &connection.conn;
    let mut batch: Vec<Pending> = Vec::with_capacity(max_batch.min(4096));
    let mut page_limit = 0;
    loop {
        while batch.len() < max_batch {
            match shared.ring.try_pop() {
                Some(pending) => batch.push(pending),
                None => break,
            }
        }
        if batch.is_empty() {
            if shared.ring.is_closed() {
                // Pushes that completed before the close are visible now; later ones failed.
                match shared.ring.try_pop() {
                    Some(pending) => batch.push(pending),
                    None => return,
                }
            } else {
                sleep_until_submitted(shared);
                continue;
            }
        }
        let wanted_limit = shared.page_limit.load(Ordering::Relaxed);
        if wanted_limit != page_limit {
            // If this fails the limit is simply not applied; the next batch tries again.
            if conn
                .execute_batch(&format!("PRAGMA max_page_count = {wanted_limit}"))
                .is_ok()
            {
                page_limit = wanted_limit;
            }
        }
        let records: Vec<&AppendRecord> = batch.iter().map(|pending| &pending.record).collect();
        let mut commit_took = None;
        let results = {
            let _turn = shared.lock.hold();
            batch::write_batch(
                conn,
                &connection.inserts,
                &records,
                unix_now(),
                shared.fail_commits.load(Ordering::Relaxed),
                &mut commit_took,
            )
        };
        drop(records);
        shared.commits.fetch_add(1, Ordering::Relaxed);
        let count = batch.len();
        if let Some(took) = commit_took {
            let mut stats = shared
                .batch_stats
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if stats.len() < MAX_BATCH_STATS {
                stats.push(BatchStat {
                    records: count,
                    commit_seconds: took.as_secs_f64(),
                });
            }
        }
        publish(batch.drain(..), results);
        shared.in_flight.fetch_sub(count, Ordering::AcqRel);
        shared
            .writer_cpu_ns
            .store(thread_cpu_ns(), Ordering::Relaxed);
    }
}

/// CPU time of the calling thread, nanoseconds (0 if the clock is unavailable).
fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } != 0 {
        return 0;
    }
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

fn sleep_until_submitted(shared: &Shared) {
    shared.writer_sleeps.store(true, Ordering::SeqCst);
    // Dekker with `submit`: our announcement is ordered before the emptiness check.
    fence(Ordering::SeqCst);
    if shared.ring.is_empty() && !shared.ring.is_closed() {
        // An unpark between the check and here is not lost: it leaves a token park returns on.
        thread::park();
    }
    shared.writer_sleeps.store(false, Ordering::Relaxed);
}

/// Hands each outcome to its record's sink, one publication (and at most one wake-up) per sink.
fn publish(batch: impl Iterator<Item = Pending>, results: Vec<Result<Appended, AppendError>>) {
    let mut by_sink: Vec<(Arc<Completions>, Vec<Outcome>)> = Vec::new();
    for (pending, result) in batch.zip(results) {
        let outcome = Outcome {
            token: pending.record.token,
            conv: pending.record.conv,
            result,
        };
        match by_sink
            .iter_mut()
            .find(|(sink, _)| Arc::ptr_eq(sink, &pending.sink))
        {
            Some((_, outcomes)) => outcomes.push(outcome),
            None => by_sink.push((pending.sink, vec![outcome])),
        }
    }
    for (sink, outcomes) in by_sink {
        sink.publish(outcomes);
    }
}

#[cfg(test)]
mod record_tests {
    use super::*;

    #[test]
    fn a_record_gives_back_its_texts_from_one_buffer() {
        let texts = RecordTexts {
            sender_id: "v_1",
            sender_name: Some(""),
            cmid: "c-1",
            kind: "text",
            text: "你好",
            meta: "{}",
        };
        let record = AppendRecord::new(7, Role::Visitor, texts, Some(1.5), 9);
        assert_eq!(record.texts(), texts);
        assert_eq!(
            record.sender_name(),
            Some(""),
            "an empty name is still a name"
        );
        let anonymous = RecordTexts {
            sender_name: None,
            text: "",
            ..texts
        };
        let record = AppendRecord::new(7, Role::Visitor, anonymous, None, 9);
        assert_eq!(record.texts(), anonymous);
    }
}
