//! Seam 1: the data plane hands accepted records to a durable writer and learns of commits.
//!
//! The data plane never waits: `submit` queues, and outcomes come back later through
//! [`crate::DataPlane::on_outcomes`], once per committed batch. Implementations: the native SQLite
//! journal (native/journal), a batch handed to Python's asyncpg writer (PostgreSQL), a ring to the
//! writer process (`--workers N`), and [`MemorySink`] for tests.

use std::cell::RefCell;

use crate::parse::Kind;
use crate::tables::Role;

/// One message to append, borrowed from the parsed frame and the connection's principal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AppendRecord<'a> {
    /// Opaque to the writer, returned in the [`Outcome`].
    pub token: u64,
    pub conv: u64,
    pub sender_id: &'a str,
    pub sender_role: Role,
    pub sender_name: Option<&'a str>,
    pub cmid: &'a str,
    pub kind: Kind,
    pub text: &'a str,
    /// Compact JSON of a non-empty `meta` object; `None` stores `{}`.
    pub meta_json: Option<&'a str>,
    /// Server receive time, Unix seconds (the stored `ts` of a new message).
    pub ts: f64,
}

/// Why a record was not queued: nothing was stored, the client may retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkError {
    /// The writer's queue is full (backpressure).
    Full,
    /// The writer is stopped.
    Closed,
}

/// What became of a submitted record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Stored now with a new seq.
    Created,
    /// (conv, sender, cmid) was stored before: `seq`/`ts` are the original ones.
    Duplicate,
    /// The conversation does not exist.
    NotFound,
    /// The conversation was closed before this (new) cmid was stored.
    Conflict,
    /// Storage failed; nothing was stored.
    Failed,
}

/// A commit (or failure) report for one record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    pub token: u64,
    pub conv: u64,
    pub seq: u64,
    pub ts: f64,
    pub status: Status,
}

/// Where accepted records go.
pub trait DurableSink {
    fn submit(&self, record: &AppendRecord<'_>) -> Result<(), SinkError>;
}

/// A record as [`MemorySink`] keeps it (owned).
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedRecord {
    pub token: u64,
    pub conv: u64,
    pub sender_id: String,
    pub sender_role: Role,
    pub sender_name: Option<String>,
    pub cmid: String,
    pub kind: Kind,
    pub text: String,
    pub meta_json: Option<String>,
    pub ts: f64,
}

/// An in-memory journal with the writer's semantics (per-conversation seq from 1, a retried
/// (conv, sender, cmid) gets its original seq). For tests of the data plane alone; durability is
/// the journal's job. `commit` plays the writer finishing a batch.
#[derive(Debug, Default)]
pub struct MemorySink {
    queued: RefCell<Vec<OwnedRecord>>,
    stored: RefCell<Vec<(OwnedRecord, u64)>>,
    /// Conversations that exist; others get `NotFound`. Empty: every conversation exists.
    pub known_convs: RefCell<Vec<u64>>,
    /// Refuse new records (backpressure tests).
    pub full: RefCell<bool>,
}

impl MemorySink {
    /// Store everything queued; return the outcomes of the batch, in submission order.
    pub fn commit(&self) -> Vec<Outcome> {
        let batch: Vec<OwnedRecord> = self.queued.borrow_mut().drain(..).collect();
        let mut stored = self.stored.borrow_mut();
        let known = self.known_convs.borrow();
        batch
            .into_iter()
            .map(|record| {
                if !known.is_empty() && !known.contains(&record.conv) {
                    return Outcome {
                        token: record.token,
                        conv: record.conv,
                        seq: 0,
                        ts: 0.0,
                        status: Status::NotFound,
                    };
                }
                let original = stored.iter().find(|(r, _)| {
                    r.conv == record.conv
                        && r.sender_id == record.sender_id
                        && r.cmid == record.cmid
                });
                if let Some((first, seq)) = original {
                    return Outcome {
                        token: record.token,
                        conv: record.conv,
                        seq: *seq,
                        ts: first.ts,
                        status: Status::Duplicate,
                    };
                }
                let seq = 1 + stored.iter().filter(|(r, _)| r.conv == record.conv).count() as u64;
                let outcome = Outcome {
                    token: record.token,
                    conv: record.conv,
                    seq,
                    ts: record.ts,
                    status: Status::Created,
                };
                stored.push((record, seq));
                outcome
            })
            .collect()
    }

    /// Every stored record with its seq, in commit order.
    pub fn stored(&self) -> Vec<(OwnedRecord, u64)> {
        self.stored.borrow().clone()
    }
}

impl DurableSink for MemorySink {
    fn submit(&self, record: &AppendRecord<'_>) -> Result<(), SinkError> {
        if *self.full.borrow() {
            return Err(SinkError::Full);
        }
        self.queued.borrow_mut().push(OwnedRecord {
            token: record.token,
            conv: record.conv,
            sender_id: record.sender_id.to_owned(),
            sender_role: record.sender_role,
            sender_name: record.sender_name.map(str::to_owned),
            cmid: record.cmid.to_owned(),
            kind: record.kind,
            text: record.text.to_owned(),
            meta_json: record.meta_json.map(str::to_owned),
            ts: record.ts,
        });
        Ok(())
    }
}
