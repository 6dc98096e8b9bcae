//! Python bindings for the `kefu-shmring` kernel: `ShmRing`, a ring of byte records in a memfd shared
//! between processes (many producers, one consumer).
//!
//! The consumer side keeps its crash-recovery state (`StallWatch`) behind a mutex: only one thread of
//! one process consumes a ring, the mutex just makes misuse safe instead of undefined.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use kefu_shmring::{wait_for_record, PushError, SharedRing, StallWatch};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

/// Longest single `wait`: the caller gets control back this often to check for shutdown and signals.
const MAX_WAIT: Duration = Duration::from_secs(1);

#[pyclass(name = "ShmRing", module = "kefu._native", frozen)]
pub(crate) struct ShmRing {
    pub(crate) shared: SharedRing,
    watch: Mutex<StallWatch>,
    pid: u32,
    /// The consumer's eventfd in this process (a producer's view), or -1: written when a push finds
    /// the consumer asleep, so a consumer that waits in its event loop (epoll) wakes up.
    notify: AtomicI32,
}

impl ShmRing {
    fn wrap(shared: SharedRing) -> Self {
        Self {
            shared,
            watch: Mutex::new(StallWatch::default()),
            pid: std::process::id(),
            notify: AtomicI32::new(-1),
        }
    }

    /// After a successful push: one load when the consumer is awake; an eventfd write when it sleeps.
    pub(crate) fn notify_consumer(&self) {
        let fd = self.notify.load(Ordering::Relaxed);
        if fd >= 0 && self.shared.ring().consumer_sleeping() {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live buffer to an fd this process owns. EAGAIN (counter
            // saturated) still leaves the eventfd readable, which is all the consumer needs.
            unsafe { libc::write(fd, one.as_ptr().cast(), one.len()) };
        }
    }
}

#[pymethods]
impl ShmRing {
    /// A new ring in a fresh memfd (close-on-exec; pass `fd` to children explicitly).
    #[staticmethod]
    fn create(cells: u64, cell_size: usize) -> PyResult<Self> {
        SharedRing::create("kefu-ring", cells, cell_size)
            .map(Self::wrap)
            .map_err(|error| PyValueError::new_err(error.to_string()))
    }

    /// Maps a ring another process created, from an inherited fd (which stays the caller's).
    #[staticmethod]
    fn open(fd: i32) -> PyResult<Self> {
        SharedRing::open(fd)
            .map(Self::wrap)
            .map_err(|error| PyOSError::new_err(error.to_string()))
    }

    #[getter]
    fn fd(&self) -> i32 {
        self.shared.fd()
    }

    #[getter]
    fn max_record(&self) -> usize {
        self.shared.ring().max_record()
    }

    #[getter]
    fn cells(&self) -> u64 {
        self.shared.ring().cells()
    }

    #[getter]
    fn cell_size(&self) -> usize {
        self.shared.ring().cell_size()
    }

    #[getter]
    fn abandoned(&self) -> u64 {
        self.shared.ring().abandoned()
    }

    #[getter]
    fn used_cells(&self) -> u64 {
        self.shared.ring().used_cells()
    }

    /// Writes one record; False when the ring is full now (nothing written). ValueError when the
    /// record can never fit.
    fn push(&self, record: &[u8]) -> PyResult<bool> {
        match self.shared.ring().try_push(record, self.pid) {
            Ok(()) => {
                self.notify_consumer();
                Ok(true)
            }
            Err(PushError::Full | PushError::Abandoned) => Ok(false),
            Err(PushError::TooLarge) => Err(PyValueError::new_err(format!(
                "record of {} bytes exceeds the ring's {} byte maximum",
                record.len(),
                self.shared.ring().max_record()
            ))),
        }
    }

    /// Producer side: also write the consumer's eventfd `fd` (in this process) when a push finds it
    /// asleep (-1: futex only). The fd stays the caller's.
    fn set_notify(&self, fd: i32) {
        self.notify.store(fd, Ordering::Relaxed);
    }

    /// Consumer side, for a consumer that waits in an event loop: announce sleeping. False when a
    /// record is already there (drain again, do not wait); True: a producer will signal.
    fn prepare_sleep(&self) -> bool {
        self.shared.ring().prepare_sleep().is_some()
    }

    /// Consumer side: awake again (producers stop signalling until the next `prepare_sleep`).
    fn end_sleep(&self) {
        self.shared.ring().end_sleep();
    }

    /// Takes up to `max_records` committed records, oldest first, without waiting (consumer only).
    fn drain<'py>(&self, py: Python<'py>, max_records: usize) -> PyResult<Bound<'py, PyList>> {
        let (mut bytes, mut lengths) = (Vec::new(), Vec::new());
        self.watch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(self.shared.ring(), &mut bytes, &mut lengths, max_records);
        let mut at = 0;
        let records = lengths.into_iter().map(|len| {
            let record = PyBytes::new(py, &bytes[at..at + len]);
            at += len;
            record
        });
        PyList::new(py, records)
    }

    /// Sleeps (GIL released, on the futex in the mapping) until a producer commits a record, at most
    /// `timeout` seconds (capped at 1 s). Returns at once when a record is already there.
    fn wait(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        if timeout.is_nan() || timeout < 0.0 {
            return Err(PyValueError::new_err("timeout must be >= 0"));
        }
        let timeout = Duration::from_secs_f64(timeout.min(MAX_WAIT.as_secs_f64()));
        // The watch is locked only to read the budget: `drain` must never wait behind a sleeper.
        let budget = self
            .watch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sleep_budget(timeout);
        py.detach(|| wait_for_record(self.shared.ring(), budget));
        Ok(())
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ShmRing>()?;
    Ok(())
}
