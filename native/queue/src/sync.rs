//! The synchronisation primitives the ring is written against.
//!
//! Normal builds use `std`; `RUSTFLAGS="--cfg loom"` swaps in loom's instrumented twins so that
//! tests/loom.rs model-checks the very code that ships. Only what the ring touches is re-exported.

#[cfg(loom)]
pub(crate) use loom::cell::UnsafeCell;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicUsize, Ordering};

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicUsize, Ordering};

/// Backoff spins `2^step` times per wait up to this step, then yields. Loom counts every spin as a
/// scheduling branch, so under loom a single yield per wait keeps models within their branch budget.
#[cfg(loom)]
pub(crate) const BACKOFF_YIELD_FROM_STEP: u32 = 0;
/// Backoff spins `2^step` times per wait up to this step, then yields.
#[cfg(not(loom))]
pub(crate) const BACKOFF_YIELD_FROM_STEP: u32 = 6;

/// Waits a little while another thread finishes the step we depend on.
///
/// Under loom a spin must be a yield, otherwise the model checker explores the spinning thread forever.
#[cfg(loom)]
pub(crate) fn spin_hint() {
    loom::thread::yield_now();
}

/// Waits a little while another thread finishes the step we depend on.
#[cfg(not(loom))]
pub(crate) fn spin_hint() {
    std::hint::spin_loop();
}

/// Gives the CPU away: the thread we wait for is mid-operation and may have been preempted.
#[cfg(loom)]
pub(crate) fn yield_now() {
    loom::thread::yield_now();
}

/// Gives the CPU away: the thread we wait for is mid-operation and may have been preempted.
#[cfg(not(loom))]
pub(crate) fn yield_now() {
    std::thread::yield_now();
}

/// `std::cell::UnsafeCell` behind loom's closure-based API, so the ring has a single code path.
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    /// Runs `access` with a raw pointer to the contents; the caller upholds exclusivity.
    pub(crate) fn with_mut<R>(&self, access: impl FnOnce(*mut T) -> R) -> R {
        access(self.0.get())
    }
}
