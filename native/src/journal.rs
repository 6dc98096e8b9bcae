//! Python bindings for the `kefu-journal` kernel: `Journal`, the native durable message writer.
//!
//! The Python storage layer submits records and drains outcomes when the completion eventfd fires
//! (one wake-up per committed batch). Other native code in this extension (a data plane) gets the
//! very same `Arc<Journal>` from the Python object with [`journal_arc`] and submits Rust to Rust,
//! without entering the interpreter per message.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kefu_journal::closed_loop::closed_loop;
use kefu_journal::{
    AppendError, AppendRecord, BatchStat, Journal as Kernel, JournalConfig, Outcome, RecordTexts,
    Role, SubmitError, Synchronous,
};
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

create_exception!(
    kefu._native,
    JournalFull,
    PyException,
    "Raised by `Journal.submit` when `max_pending` records are in flight (the disk does not keep up)."
);
create_exception!(
    kefu._native,
    JournalClosed,
    PyException,
    "Raised by `Journal.submit` once the journal is closed."
);

/// One outcome as Python sees it: (token, conv, seq, ts, duplicate, error_code, error_detail).
/// On success the error fields are None; on failure seq is 0 and ts 0.0.
type OutcomeTuple = (
    u64,
    i64,
    i64,
    f64,
    bool,
    Option<&'static str>,
    Option<String>,
);

fn outcome_tuple(outcome: Outcome) -> OutcomeTuple {
    match outcome.result {
        Ok(appended) => (
            outcome.token,
            outcome.conv,
            appended.seq,
            appended.ts,
            appended.duplicate,
            None,
            None,
        ),
        Err(error) => {
            let detail = match &error {
                AppendError::Unavailable(detail) => Some(detail.to_string()),
                AppendError::NotFound | AppendError::Conflict => None,
            };
            (
                outcome.token,
                outcome.conv,
                0,
                0.0,
                false,
                Some(error.code()),
                detail,
            )
        }
    }
}

/// The durable writer of one SQLite database file (which must already hold Kefu's schema).
///
/// `submit` never blocks; outcomes are collected with `drain` once `completion_fd` is readable
/// (register it with `loop.add_reader`). Other writers of the same file in this process take the
/// file's write lock (`acquire_write_lock` / `release_write_lock`) around their transactions.
#[pyclass(name = "Journal", module = "kefu._native", frozen)]
pub struct PyJournal {
    kernel: Arc<Kernel>,
}

/// The journal inside a `kefu._native.Journal` object, for native code that submits Rust to Rust.
pub fn journal_arc(obj: &Bound<'_, PyAny>) -> PyResult<Arc<Kernel>> {
    Ok(Arc::clone(&obj.cast::<PyJournal>()?.get().kernel))
}

#[pymethods]
impl PyJournal {
    /// Opens the journal and starts its writer thread.
    #[new]
    #[pyo3(signature = (path, synchronous="FULL", max_batch=16_384, max_pending=65_536, busy_timeout=5.0))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        synchronous: &str,
        max_batch: usize,
        max_pending: usize,
        busy_timeout: f64,
    ) -> PyResult<Self> {
        let synchronous = match synchronous.to_ascii_uppercase().as_str() {
            "FULL" => Synchronous::Full,
            "NORMAL" => Synchronous::Normal,
            _ => {
                return Err(PyValueError::new_err(format!(
                "synchronous={synchronous:?} refused: an ack must mean stored; use FULL or NORMAL"
            )))
            }
        };
        let busy_timeout = Duration::try_from_secs_f64(busy_timeout)
            .map_err(|_| PyValueError::new_err("busy_timeout must be a non-negative number"))?;
        let config = JournalConfig {
            synchronous,
            max_batch,
            max_pending,
            busy_timeout,
        };
        let kernel = py
            .detach(|| Kernel::open(&path, config))
            .map_err(|error| PyOSError::new_err(error.to_string()))?;
        Ok(Self {
            kernel: Arc::new(kernel),
        })
    }

    /// Queues one message. Raises `JournalFull`, `JournalClosed`, or ValueError for an unknown role.
    /// `meta` is JSON object text; `ts` None means "the time of the commit".
    #[pyo3(signature = (token, conv, cmid, sender_id, sender_role, sender_name, text, kind, meta, ts=None))]
    #[allow(clippy::too_many_arguments)] // one per column: a record type would cost an allocation per call
    fn submit(
        &self,
        token: u64,
        conv: i64,
        cmid: String,
        sender_id: String,
        sender_role: &str,
        sender_name: Option<String>,
        text: String,
        kind: String,
        meta: String,
        ts: Option<f64>,
    ) -> PyResult<()> {
        let sender_role = Role::parse(sender_role)
            .ok_or_else(|| PyValueError::new_err(format!("unknown sender role {sender_role:?}")))?;
        let texts = RecordTexts {
            sender_id: &sender_id,
            sender_name: sender_name.as_deref(),
            cmid: &cmid,
            kind: &kind,
            text: &text,
            meta: &meta,
        };
        let record = AppendRecord::new(conv, sender_role, texts, ts, token);
        match self.kernel.submit(record) {
            Ok(()) => Ok(()),
            Err(SubmitError::Full(_)) => Err(JournalFull::new_err(
                "too many writes pending: the disk does not keep up",
            )),
            Err(SubmitError::Closed(_)) => Err(JournalClosed::new_err("the journal is closed")),
        }
    }

    /// Every outcome waiting, oldest first, as (token, conv, seq, ts, duplicate, error_code,
    /// error_detail); error_code is None, "unavailable", "not_found" or "conflict".
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let mut outcomes = Vec::new();
        self.kernel.drain_completions(&mut outcomes);
        PyList::new(py, outcomes.into_iter().map(outcome_tuple))
    }

    /// The eventfd that is readable while outcomes wait (owned by the journal; do not close it).
    #[getter]
    fn completion_fd(&self) -> i32 {
        self.kernel.completion_fd()
    }

    /// Waits (without the GIL) for this file's in-process write lock. Pair with `release_write_lock`.
    fn acquire_write_lock(&self, py: Python<'_>) {
        let lock = Arc::clone(self.kernel.write_lock());
        py.detach(|| lock.acquire());
    }

    /// Releases the write lock taken by `acquire_write_lock`.
    fn release_write_lock(&self) {
        self.kernel.write_lock().release();
    }

    /// Caps the file at `pages` pages for the journal's connection too (`PRAGMA max_page_count`).
    fn limit_pages(&self, pages: i64) {
        self.kernel.limit_pages(pages);
    }

    /// Fault injection for tests: while true, every batch is rolled back as if COMMIT failed.
    fn set_commit_fault(&self, fail: bool) {
        self.kernel.set_commit_fault(fail);
    }

    /// Batches committed (or failed) so far.
    #[getter]
    fn commits(&self) -> u64 {
        self.kernel.commits()
    }

    /// CPU seconds the writer thread has used so far (updated once per batch).
    #[getter]
    fn writer_cpu(&self) -> f64 {
        self.kernel.writer_cpu().as_secs_f64()
    }

    /// `[(records, commit_seconds)]` of the batches committed since the last call, oldest first:
    /// one entry per batch, whoever submitted its records (for the storage metrics).
    fn take_batch_stats(&self) -> Vec<(usize, f64)> {
        let mut stats = Vec::new();
        self.kernel.take_batch_stats(&mut stats);
        stats
            .into_iter()
            .map(
                |BatchStat {
                     records,
                     commit_seconds,
                 }| (records, commit_seconds),
            )
            .collect()
    }

    /// Benchmarks only (bench/storage.py): `appenders` closed-loop clients submitting from Rust on
    /// this thread (the GIL released), the way the native data plane feeds the journal, over
    /// `conversations` `[(conv, sender_id)]`; `warmup` seconds unmeasured, then `seconds` measured.
    /// Returns acked, failed, seconds, cpu_seconds (whole process), writer_cpu_seconds, batches,
    /// p50_ms, p99_ms.
    fn bench_closed_loop<'py>(
        &self,
        py: Python<'py>,
        conversations: Vec<(i64, String)>,
        appenders: usize,
        warmup: f64,
        seconds: f64,
    ) -> PyResult<Bound<'py, PyDict>> {
        let duration = |value: f64| {
            Duration::try_from_secs_f64(value)
                .map_err(|_| PyValueError::new_err("durations must be non-negative numbers"))
        };
        let (warmup, seconds) = (duration(warmup)?, duration(seconds)?);
        let kernel = Arc::clone(&self.kernel);
        let report = py
            .detach(|| closed_loop(&kernel, &conversations, appenders, warmup, seconds))
            .map_err(|error| PyOSError::new_err(error.to_string()))?;
        let dict = PyDict::new(py);
        dict.set_item("acked", report.acked)?;
        dict.set_item("failed", report.failed)?;
        dict.set_item("seconds", report.seconds)?;
        dict.set_item("cpu_seconds", report.cpu_seconds)?;
        dict.set_item("writer_cpu_seconds", report.writer_cpu_seconds)?;
        dict.set_item("batches", report.batches)?;
        dict.set_item("p50_ms", report.latency_quantile_ns(0.5) as f64 / 1e6)?;
        dict.set_item("p99_ms", report.latency_quantile_ns(0.99) as f64 / 1e6)?;
        Ok(dict)
    }

    /// Records submitted whose outcome is not published yet.
    #[getter]
    fn in_flight(&self) -> usize {
        self.kernel.in_flight()
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.kernel.is_closed()
    }

    /// Refuses new records, writes the submitted ones, publishes their outcomes, stops the writer.
    /// Blocks (without the GIL) until then; idempotent.
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.kernel.close());
    }

    fn __repr__(&self) -> String {
        format!("{:?}", self.kernel)
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<PyJournal>()?;
    m.add("JournalFull", py.get_type::<JournalFull>())?;
    m.add("JournalClosed", py.get_type::<JournalClosed>())?;
    Ok(())
}
