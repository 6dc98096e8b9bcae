//! The in-process write lock: one per database file, shared by every writer in the process.
//!
//! SQLite lets one connection write at a time and makes the others wait in its busy handler, which
//! sleeps and polls (up to `busy_timeout`). Inside one process we know who the writers are (the
//! journal's thread and the Python control writer), so they queue here instead, in FIFO order (a
//! ticket lock), and SQLite's file lock is only ever contended by other processes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, Weak};

/// A FIFO lock whose acquire and release may be separate calls (the Python binding needs that: the
/// lock is held across Python code, where no Rust guard can live).
#[derive(Debug, Default)]
pub struct WriteLock {
    tickets: Mutex<Tickets>,
    turn_changed: Condvar,
}

#[derive(Debug, Default)]
struct Tickets {
    next: u64,
    serving: u64,
}

impl WriteLock {
    /// The lock of the database file at `path`, shared by everyone in the process who asks for the
    /// same file (paths are compared after canonicalisation; a file that does not exist yet falls back
    /// to the path as given).
    pub fn for_path(path: &Path) -> Arc<WriteLock> {
        static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Weak<WriteLock>>>> = OnceLock::new();
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut locks = LOCKS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        locks.retain(|_, lock| lock.strong_count() > 0);
        if let Some(lock) = locks.get(&key).and_then(Weak::upgrade) {
            return lock;
        }
        let lock = Arc::new(WriteLock::default());
        locks.insert(key, Arc::downgrade(&lock));
        lock
    }

    /// Waits for this caller's turn (callers are served in arrival order), then holds the lock until
    /// [`release`](Self::release).
    pub fn acquire(&self) {
        let mut tickets = self.tickets.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = tickets.next;
        tickets.next += 1;
        while tickets.serving != mine {
            tickets = self
                .turn_changed
                .wait(tickets)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Passes the lock to the next caller in line. Must only be called by the holder.
    pub fn release(&self) {
        let mut tickets = self.tickets.lock().unwrap_or_else(PoisonError::into_inner);
        debug_assert!(tickets.serving < tickets.next, "release without acquire");
        tickets.serving += 1;
        drop(tickets);
        self.turn_changed.notify_all();
    }

    /// Acquires and returns a guard that releases on drop.
    pub fn hold(&self) -> WriteLockGuard<'_> {
        self.acquire();
        WriteLockGuard { lock: self }
    }
}

/// Holds a [`WriteLock`] until dropped.
#[derive(Debug)]
pub struct WriteLockGuard<'a> {
    lock: &'a WriteLock,
}

impl Drop for WriteLockGuard<'_> {
    fn drop(&mut self) {
        self.lock.release();
    }
}
