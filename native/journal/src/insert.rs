//! The fast path's multi-row INSERT, prepared on the raw SQLite handle so that its text parameters
//! are bound `SQLITE_STATIC`.
//!
//! rusqlite binds every text `SQLITE_TRANSIENT`: SQLite copies each string into an allocation of its
//! own (up to seven per row here: cmid, sender, role, name, body, kind, meta), which at a batch's 640 bound
//! values per statement step runs out of the connection's lookaside slots and goes to the global
//! allocator and its mutex, and frees them all again on the next bind. The records outlive every
//! step of their batch, so SQLite may read them where they are. Measured with
//! examples/closed_loop.rs at 16,384 appenders, three runs each way on a shared machine: the writer's
//! CPU per message went from 4.5-5.0 µs to 4.1-4.6 µs.

use std::ffi::{c_int, CStr};
use std::ptr;

use rusqlite::{ffi, Connection};

/// One prepared multi-row INSERT. Finalized on drop, which must happen before its connection closes
/// (the writer owns both and drops this first).
pub(crate) struct StaticInsert {
    db: *mut ffi::sqlite3,
    stmt: *mut ffi::sqlite3_stmt,
}

// SAFETY: the statement is used by one thread at a time (the writer thread, after `Journal::open`
// moved it there with its connection); SQLite connections opened by rusqlite are in multi-thread
// mode, which allows a connection and its statements to move between threads.
unsafe impl Send for StaticInsert {}

impl StaticInsert {
    /// Prepares `sql` on `conn`'s handle.
    pub(crate) fn prepare(conn: &Connection, sql: &str) -> rusqlite::Result<StaticInsert> {
        // SAFETY: the handle stays valid while `conn` lives; `StaticInsert` is dropped before it.
        let db = unsafe { conn.handle() };
        let length = c_int::try_from(sql.len()).map_err(|_| too_big())?;
        let mut stmt = ptr::null_mut();
        // SAFETY: `sql` is valid for `length` bytes; `stmt` receives a new statement or null.
        let code = unsafe {
            ffi::sqlite3_prepare_v2(db, sql.as_ptr().cast(), length, &mut stmt, ptr::null_mut())
        };
        if code != ffi::SQLITE_OK || stmt.is_null() {
            return Err(error(db, code));
        }
        Ok(StaticInsert { db, stmt })
    }

    /// Binds `text` to parameter `index` (1-based) without copying it. The caller keeps `text`
    /// alive until [`execute`](Self::execute) returned (which clears every binding).
    pub(crate) fn bind_text(&self, index: usize, text: &str) -> rusqlite::Result<()> {
        let length = c_int::try_from(text.len()).map_err(|_| too_big())?;
        // SAFETY: a live statement; SQLITE_STATIC: SQLite reads `text` in place until the binding
        // is replaced or cleared, which `execute` does before the caller's borrow ends.
        self.check(unsafe {
            ffi::sqlite3_bind_text(
                self.stmt,
                parameter(index)?,
                text.as_ptr().cast(),
                length,
                ffi::SQLITE_STATIC(),
            )
        })
    }

    /// Binds `text`, or NULL.
    pub(crate) fn bind_optional_text(
        &self,
        index: usize,
        text: Option<&str>,
    ) -> rusqlite::Result<()> {
        match text {
            Some(text) => self.bind_text(index, text),
            // SAFETY: a live statement.
            None => self.check(unsafe { ffi::sqlite3_bind_null(self.stmt, parameter(index)?) }),
        }
    }

    /// Binds an integer.
    pub(crate) fn bind_i64(&self, index: usize, value: i64) -> rusqlite::Result<()> {
        // SAFETY: a live statement.
        self.check(unsafe { ffi::sqlite3_bind_int64(self.stmt, parameter(index)?, value) })
    }

    /// Binds a float.
    pub(crate) fn bind_f64(&self, index: usize, value: f64) -> rusqlite::Result<()> {
        // SAFETY: a live statement.
        self.check(unsafe { ffi::sqlite3_bind_double(self.stmt, parameter(index)?, value) })
    }

    /// Runs the statement to completion and returns how many rows it inserted; then resets it and
    /// clears every binding (so no pointer into the caller's records stays behind).
    pub(crate) fn execute(&self) -> rusqlite::Result<usize> {
        // SAFETY: a live statement with every parameter bound.
        let code = unsafe { ffi::sqlite3_step(self.stmt) };
        // SAFETY: a live statement and connection.
        let inserted = unsafe { ffi::sqlite3_changes(self.db) };
        // SAFETY: a live statement. reset's return repeats the step's error, handled below.
        unsafe {
            ffi::sqlite3_reset(self.stmt);
            ffi::sqlite3_clear_bindings(self.stmt);
        }
        if code != ffi::SQLITE_DONE {
            return Err(error(self.db, code));
        }
        Ok(usize::try_from(inserted).unwrap_or(0))
    }

    fn check(&self, code: c_int) -> rusqlite::Result<()> {
        if code == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(error(self.db, code))
        }
    }
}

impl Drop for StaticInsert {
    fn drop(&mut self) {
        // SAFETY: finalizes the statement this value owns, once.
        unsafe { ffi::sqlite3_finalize(self.stmt) };
    }
}

fn parameter(index: usize) -> rusqlite::Result<c_int> {
    c_int::try_from(index).map_err(|_| too_big())
}

fn too_big() -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_TOOBIG), None)
}

/// The connection's error for `code`, as rusqlite reports errors.
fn error(db: *mut ffi::sqlite3, code: c_int) -> rusqlite::Error {
    // SAFETY: a live connection; the message is copied before any other call on it.
    let message = unsafe {
        let text = ffi::sqlite3_errmsg(db);
        (!text.is_null()).then(|| CStr::from_ptr(text).to_string_lossy().into_owned())
    };
    // The extended code carries the detail (e.g. SQLITE_IOERR_FSYNC); fall back to the step's.
    // SAFETY: a live connection.
    let extended = unsafe { ffi::sqlite3_extended_errcode(db) };
    let code = if extended & 0xff == code & 0xff {
        extended
    } else {
        code
    };
    rusqlite::Error::SqliteFailure(ffi::Error::new(code), message)
}
