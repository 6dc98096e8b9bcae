//! A database with the tables the journal writes, as kefu.storage.sqlite's first migration creates
//! them (the journal never creates schema itself).

#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;
use std::time::{Duration, Instant};

use kefu_journal::{AppendRecord, Journal, Outcome, RecordTexts, Role};
use rusqlite::Connection;

pub const SCHEMA: &str = "
    PRAGMA journal_mode = WAL;
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        site_id INTEGER NOT NULL,
        visitor_id TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('queued', 'assigned', 'transferred', 'closed')),
        agent_id TEXT,
        team TEXT,
        last_seq INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        closed_at REAL,
        tags TEXT NOT NULL);
    CREATE TABLE messages (
        conv INTEGER NOT NULL REFERENCES conversations(id),
        seq INTEGER NOT NULL,
        cmid TEXT NOT NULL,
        sender_id TEXT NOT NULL,
        sender_role TEXT NOT NULL,
        sender_name TEXT,
        body TEXT NOT NULL,
        kind TEXT NOT NULL,
        meta TEXT NOT NULL,
        ts REAL NOT NULL,
        PRIMARY KEY (conv, seq)) WITHOUT ROWID;
    CREATE UNIQUE INDEX messages_idempotency ON messages(conv, sender_id, cmid);
";

/// Creates the schema and `conversations` open conversations (ids 1..=conversations).
pub fn create_database(path: &Path, conversations: i64) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(SCHEMA).unwrap();
    for id in 1..=conversations {
        conn.execute(
            "INSERT INTO conversations(id, site_id, visitor_id, state, created_at, tags) \
             VALUES (?1, 1, ?2, 'queued', 0, '[]')",
            rusqlite::params![id, format!("v_{id}")],
        )
        .unwrap();
    }
}

pub fn record(conv: i64, cmid: &str, token: u64) -> AppendRecord {
    let sender_id = format!("v_{conv}");
    let text = format!("text of {cmid}");
    let texts = RecordTexts {
        sender_id: &sender_id,
        sender_name: None,
        cmid,
        kind: "text",
        text: &text,
        meta: "{}",
    };
    AppendRecord::new(conv, Role::Visitor, texts, None, token)
}

/// Waits (polling the eventfd with poll(2)) until `count` outcomes arrived; panics after 30 s.
pub fn collect(journal: &Journal, count: usize) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while outcomes.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} outcomes",
            outcomes.len()
        );
        let mut pollfd = libc::pollfd {
            fd: journal.completion_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pollfd, 1, 1000) };
        journal.drain_completions(&mut outcomes);
    }
    outcomes
}

pub fn stored(path: &Path, conv: i64) -> Vec<(i64, String)> {
    let conn = Connection::open(path).unwrap();
    let mut statement = conn
        .prepare("SELECT seq, cmid FROM messages WHERE conv = ?1 ORDER BY seq")
        .unwrap();
    statement
        .query_map([conv], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

pub fn last_seq(path: &Path, conv: i64) -> i64 {
    Connection::open(path)
        .unwrap()
        .query_row(
            "SELECT last_seq FROM conversations WHERE id = ?1",
            [conv],
            |row| row.get(0),
        )
        .unwrap()
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "kefu-journal-{name}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn db(&self) -> std::path::PathBuf {
        self.0.join("kefu.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
