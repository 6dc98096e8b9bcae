//! Python bindings for the `kefu-queue` kernel: `MpmcQueue`, a bounded MPMC queue of Python objects.
//!
//! The fast path (`try_put`/`try_get`, and `put`/`get` when they need not wait) is the kernel's
//! lock-free ring plus one fence and one atomic load to see whether anybody sleeps. Waiting is the
//! slow path: spin briefly with the GIL released (pause instructions, never `sched_yield`: on a
//! shared core yielding in a loop burns the slice of whoever we wait for), then sleep on an
//! [`EventCount`] (a mutex and condvar touched only by sleepers and by the wakers that find
//! sleepers), waking at least every
//! [`SIGNAL_CHECK_INTERVAL`] to run Python signal handlers so Ctrl-C interrupts a blocked call.

use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kefu_queue::ArrayRing;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyList;

create_exception!(
    kefu._native,
    QueueFull,
    PyException,
    "Raised by `MpmcQueue.put` when no space freed up before the timeout."
);
create_exception!(
    kefu._native,
    QueueEmpty,
    PyException,
    "Raised by `MpmcQueue.get`/`get_many` when no item arrived before the timeout."
);
create_exception!(
    kefu._native,
    QueueClosed,
    PyException,
    "Raised when putting into a closed `MpmcQueue`, or getting from one that is closed and drained."
);

/// Largest capacity a Python caller may ask for: 16 Mi slots, 256 MiB of ring. A queue is a buffer
/// between threads, not storage; anything bigger is a configuration mistake.
const MAX_CAPACITY: usize = 1 << 24;

/// How long a blocked call sleeps at most before re-taking the GIL to run signal handlers.
const SIGNAL_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// Attempts made with `spin_loop` pauses before sleeping: a peer that is mid-operation usually
/// finishes within this, and sleeping costs two syscalls. No `yield_now` phase: a consumer waiting
/// for work (e.g. a writer thread between batches) used to spend as much time in `sched_yield` as in
/// its real work, on the core the event loop needed.
const SPIN_ATTEMPTS: u32 = 32;

/// A sleep/wake-up primitive for the slow path ("eventcount").
///
/// Wakers pay one fence and one load when nobody sleeps. A sleeper registers, re-checks its condition
/// and only then sleeps, so a wake-up between its check and its sleep is never lost: either the
/// re-check sees the waker's change, or the waker sees the registration (both sides separate their
/// write from their read with a SeqCst fence), and `epoch` tells a late sleeper it was already woken.
struct EventCount {
    sleepers: AtomicUsize,
    /// Bumped (under `lock`) by every wake-up that found sleepers.
    epoch: AtomicU64,
    lock: Mutex<()>,
    condvar: Condvar,
}

impl EventCount {
    fn new() -> Self {
        Self {
            sleepers: AtomicUsize::new(0),
            epoch: AtomicU64::new(0),
            lock: Mutex::new(()),
            condvar: Condvar::new(),
        }
    }

    /// Registers a sleeper; returns the epoch to pass to [`sleep`](Self::sleep). The caller must
    /// re-check its condition after this and then call either `sleep` or `cancel`.
    fn prepare(&self) -> u64 {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        // Orders the registration before the caller's re-check of the queue (Dekker with `notify`).
        fence(Ordering::SeqCst);
        self.epoch.load(Ordering::SeqCst)
    }

    /// Withdraws a registration whose re-check succeeded.
    fn cancel(&self) {
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    /// Sleeps until a wake-up after `epoch` or until `until`; returns `false` on timeout.
    fn sleep(&self, epoch: u64, until: Instant) -> bool {
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let woken = loop {
            // Read under the lock: `notify` bumps it under the same lock, so a bump cannot slip
            // between this check and the condvar wait.
            if self.epoch.load(Ordering::Relaxed) != epoch {
                break true;
            }
            let now = Instant::now();
            if now >= until {
                break false;
            }
            guard = self
                .condvar
                .wait_timeout(guard, until - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        };
        drop(guard);
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        woken
    }

    /// Wakes every sleeper, if there is any. Called after each change a sleeper may wait for.
    fn notify(&self) {
        // Orders the caller's queue change before the `sleepers` read (Dekker with `prepare`).
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) == 0 {
            return;
        }
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.epoch.fetch_add(1, Ordering::Relaxed);
        // All, not one: a woken sleeper may time out or lose the race for the item, and a lost
        // single wake-up would leave another sleeper waiting for a whole check interval.
        self.condvar.notify_all();
    }
}

/// The outcome of one non-blocking attempt inside a blocking call.
enum Attempt<T> {
    Ready(T),
    Closed,
    Retry,
}

/// How a blocking call ended, other than by a Python exception from a signal handler.
enum WaitEnd<T> {
    Ready(T),
    Closed,
    TimedOut,
}

/// Converts a Python `timeout` into a deadline: `None` waits forever, like `queue.Queue`.
fn deadline_after(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    let Some(seconds) = timeout else {
        return Ok(None);
    };
    if seconds.is_nan() || seconds < 0.0 {
        return Err(PyValueError::new_err(
            "timeout must be a non-negative number or None",
        ));
    }
    // A timeout too large to represent is, in practice, forever.
    Ok(Duration::try_from_secs_f64(seconds)
        .ok()
        .and_then(|duration| Instant::now().checked_add(duration)))
}

/// Retries `attempt` without the GIL until it is not `Retry`, sleeping on `event` between attempts,
/// until `until`. Returns `None` if `until` passed first.
fn attempt_until<T>(
    event: &EventCount,
    until: Instant,
    attempt: &mut impl FnMut() -> Attempt<T>,
) -> Option<Attempt<T>> {
    for _ in 0..SPIN_ATTEMPTS {
        match attempt() {
            Attempt::Retry => std::hint::spin_loop(),
            done => return Some(done),
        }
    }
    loop {
        let epoch = event.prepare();
        match attempt() {
            Attempt::Retry => {}
            done => {
                event.cancel();
                return Some(done);
            }
        }
        if !event.sleep(epoch, until) {
            return None;
        }
    }
}

/// Runs `attempt` until it succeeds, reports closure, or `deadline` passes. The first attempt runs
/// with the GIL held (the common, uncontended case); waiting happens with the GIL released, in slices
/// of at most [`SIGNAL_CHECK_INTERVAL`] between which signal handlers run (their exception, e.g.
/// `KeyboardInterrupt`, propagates).
fn wait_for<T: Send>(
    py: Python<'_>,
    event: &EventCount,
    deadline: Option<Instant>,
    mut attempt: impl FnMut() -> Attempt<T> + Send,
) -> PyResult<WaitEnd<T>> {
    let mut outcome = Some(attempt());
    loop {
        match outcome {
            Some(Attempt::Ready(value)) => return Ok(WaitEnd::Ready(value)),
            Some(Attempt::Closed) => return Ok(WaitEnd::Closed),
            Some(Attempt::Retry) | None => {}
        }
        let now = Instant::now();
        if deadline.is_some_and(|deadline| now >= deadline) {
            return Ok(WaitEnd::TimedOut);
        }
        let slice_end = match deadline {
            Some(deadline) => deadline.min(now + SIGNAL_CHECK_INTERVAL),
            None => now + SIGNAL_CHECK_INTERVAL,
        };
        outcome = py.detach(|| attempt_until(event, slice_end, &mut attempt));
        if outcome.is_none() {
            py.check_signals()?;
        }
    }
}

/// A bounded, thread-safe FIFO of Python objects for handing work between threads (e.g. request
/// handlers → a group-commit writer thread).
///
/// Lock-free when it need not wait; blocking calls release the GIL and wake on Ctrl-C. Items are held
/// as strong references that the cyclic garbage collector does not traverse: do not put a queue into
/// itself.
#[pyclass(name = "MpmcQueue", module = "kefu._native", frozen)]
pub(crate) struct MpmcQueue {
    ring: ArrayRing<Py<PyAny>>,
    /// Consumers sleep here; woken after each push and on close.
    items_available: EventCount,
    /// Producers sleep here; woken after each pop and on close.
    space_available: EventCount,
}

impl MpmcQueue {
    fn push(&self, item: Py<PyAny>) -> Result<(), Py<PyAny>> {
        self.ring.try_push(item)?;
        self.items_available.notify();
        Ok(())
    }

    fn pop(&self) -> Option<Py<PyAny>> {
        let item = self.ring.try_pop()?;
        self.space_available.notify();
        Some(item)
    }

    /// One non-blocking get: an item, or `Closed` once the queue is closed and drained.
    fn attempt_pop(&self) -> Attempt<Py<PyAny>> {
        if let Some(item) = self.pop() {
            return Attempt::Ready(item);
        }
        if !self.ring.is_closed() {
            return Attempt::Retry;
        }
        // Closed after our pop found it empty? Items pushed before the close may have landed in
        // between; pushes after it cannot, so one more pop decides.
        match self.pop() {
            Some(item) => Attempt::Ready(item),
            None => Attempt::Closed,
        }
    }

    /// One non-blocking put of the item in `pending`; leaves it there unless it was accepted.
    fn attempt_push(&self, pending: &mut Option<Py<PyAny>>) -> Attempt<()> {
        // `pending` is emptied only by a successful push, after which no further attempt is made.
        let Some(item) = pending.take() else {
            return Attempt::Ready(());
        };
        match self.push(item) {
            Ok(()) => Attempt::Ready(()),
            Err(item) => {
                *pending = Some(item);
                if self.ring.is_closed() {
                    Attempt::Closed
                } else {
                    Attempt::Retry
                }
            }
        }
    }

    /// Blocks (per `timeout`) until one item is available.
    fn get_one(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let deadline = deadline_after(timeout)?;
        match wait_for(py, &self.items_available, deadline, || self.attempt_pop())? {
            WaitEnd::Ready(item) => Ok(item),
            WaitEnd::Closed => Err(QueueClosed::new_err("queue is closed and drained")),
            WaitEnd::TimedOut => Err(QueueEmpty::new_err("no item arrived before the timeout")),
        }
    }
}

#[pymethods]
impl MpmcQueue {
    /// Creates an empty queue holding at most `capacity` items (1 ≤ capacity ≤ 16 Mi).
    #[new]
    fn new(capacity: i64) -> PyResult<Self> {
        let capacity = usize::try_from(capacity)
            .ok()
            .filter(|capacity| (1..=MAX_CAPACITY).contains(capacity))
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "capacity must be between 1 and {MAX_CAPACITY}, got {capacity}"
                ))
            })?;
        Ok(Self {
            ring: ArrayRing::new(capacity),
            items_available: EventCount::new(),
            space_available: EventCount::new(),
        })
    }

    /// Puts `item` if there is space; returns whether it was put. Raises `QueueClosed` once closed.
    fn try_put(&self, item: Py<PyAny>) -> PyResult<bool> {
        match self.push(item) {
            Ok(()) => Ok(true),
            Err(_rejected) if self.ring.is_closed() => Err(QueueClosed::new_err("queue is closed")),
            Err(_rejected) => Ok(false),
        }
    }

    /// Returns the oldest item, or `default` if the queue is empty right now. Raises `QueueClosed`
    /// when the queue is closed and drained (nothing can arrive any more).
    #[pyo3(signature = (default=None))]
    fn try_get(&self, py: Python<'_>, default: Option<Py<PyAny>>) -> PyResult<Py<PyAny>> {
        match self.attempt_pop() {
            Attempt::Ready(item) => Ok(item),
            Attempt::Closed => Err(QueueClosed::new_err("queue is closed and drained")),
            Attempt::Retry => Ok(default.unwrap_or_else(|| py.None())),
        }
    }

    /// Puts `item`, waiting up to `timeout` seconds (`None`: forever) for space.
    /// Raises `QueueFull` on timeout, `QueueClosed` if the queue is or gets closed.
    #[pyo3(signature = (item, timeout=None))]
    fn put(&self, py: Python<'_>, item: Py<PyAny>, timeout: Option<f64>) -> PyResult<()> {
        let deadline = deadline_after(timeout)?;
        let mut pending = Some(item);
        let outcome = wait_for(py, &self.space_available, deadline, || {
            self.attempt_push(&mut pending)
        })?;
        // A rejected item is released here, with the GIL held.
        drop(pending);
        match outcome {
            WaitEnd::Ready(()) => Ok(()),
            WaitEnd::Closed => Err(QueueClosed::new_err("queue is closed")),
            WaitEnd::TimedOut => Err(QueueFull::new_err("no space freed up before the timeout")),
        }
    }

    /// Returns the oldest item, waiting up to `timeout` seconds (`None`: forever) for one.
    /// Raises `QueueEmpty` on timeout, `QueueClosed` once the queue is closed and drained.
    #[pyo3(signature = (timeout=None))]
    fn get(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        self.get_one(py, timeout)
    }

    /// Waits like `get` for one item, then also takes whatever else is already there, up to
    /// `max_items` in total, without waiting again. Returns them oldest first.
    #[pyo3(signature = (max_items, timeout=None))]
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        max_items: i64,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyList>> {
        if max_items < 1 {
            return Err(PyValueError::new_err("max_items must be at least 1"));
        }
        let first = self.get_one(py, timeout)?;
        let batch = PyList::new(py, [first])?;
        // Never more than the ring holds, so the loop is bounded whatever `max_items` says.
        for _ in 1..max_items.min(self.ring.capacity() as i64) {
            let Some(item) = self.pop() else { break };
            batch.append(item)?;
        }
        Ok(batch)
    }

    /// Closes the queue: later puts raise `QueueClosed`, blocked ones wake and raise it; gets return
    /// the items still inside, then raise `QueueClosed`. Idempotent.
    fn close(&self) {
        self.ring.close();
        self.items_available.notify();
        self.space_available.notify();
    }

    /// Whether `close()` has been called.
    #[getter]
    fn closed(&self) -> bool {
        self.ring.is_closed()
    }

    /// The maximum number of items, as given to the constructor.
    #[getter]
    fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// The number of items inside; a snapshot that other threads may change at once.
    fn __len__(&self) -> usize {
        self.ring.len()
    }

    fn __repr__(&self) -> String {
        format!(
            "MpmcQueue(capacity={}, len={}, closed={})",
            self.ring.capacity(),
            self.ring.len(),
            if self.ring.is_closed() {
                "True"
            } else {
                "False"
            }
        )
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<MpmcQueue>()?;
    m.add("QueueFull", py.get_type::<QueueFull>())?;
    m.add("QueueEmpty", py.get_type::<QueueEmpty>())?;
    m.add("QueueClosed", py.get_type::<QueueClosed>())?;
    Ok(())
}
