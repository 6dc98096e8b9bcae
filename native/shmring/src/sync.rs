//! The atomics the ring is written against: `std` normally, loom's instrumented twins under
//! `RUSTFLAGS="--cfg loom"` (then only heap rings exist: loom atomics cannot live in a mapping).

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
