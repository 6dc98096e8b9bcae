//! A shared-memory ring of byte records between processes: many producers, one consumer.
//!
//! Kefu's worker processes write to the control process through one such ring (ingress), and the
//! control process writes to each worker through its own (delivery). The ring lives in a memfd the
//! supervisor creates and hands to children; everything in it is an offset or an atomic word, so each
//! process maps it wherever it likes. Records are variable-size, in fixed cells (see `ring` for the
//! claim/commit protocol and its crash behaviour). The consumer sleeps on a process-shared futex in the
//! mapping; producers pay one fence and one load to learn it sleeps. No `sched_yield` anywhere.
//!
//! Linux only (memfd, futex). No architecture-specific code: atomics and `sysconf` page size.

mod consumer;
mod futex;
#[cfg(not(loom))]
mod mapping;
mod ring;
pub mod records;
mod sync;

pub use consumer::{process_alive, wait_for_record, StallWatch, STALL_CHECK_AFTER};
#[cfg(not(loom))]
pub use mapping::{page_size, SharedRing, MAX_CELLS, MAX_CELL_SIZE, MIN_CELL_SIZE};
pub use ring::{Head, PushError, Ring, LEN_PREFIX, MAX_RECORD_CELLS};

#[cfg(loom)]
pub mod loom_support {
    //! A heap ring for the loom model (loom atomics cannot live in a shared mapping).
    use crate::ring::{Header, Ring};
    use crate::sync::{AtomicU32, AtomicU64};

    pub struct HeapRing {
        _header: Box<Header>,
        _stamps: Box<[AtomicU64]>,
        _owners: Box<[AtomicU32]>,
        _data: Box<[u8]>,
        pub ring: Ring,
    }

    impl HeapRing {
        pub fn new(cells: u64, cell_size: usize) -> Self {
            let header = Box::new(Header::new_zeroed());
            let stamps: Box<[AtomicU64]> = (0..cells).map(|_| AtomicU64::new(0)).collect();
            let owners: Box<[AtomicU32]> = (0..cells).map(|_| AtomicU32::new(0)).collect();
            let mut data = vec![0u8; cells as usize * cell_size].into_boxed_slice();
            // SAFETY: the boxes live as long as the ring (same struct) and never move their contents.
            let ring = unsafe {
                Ring::from_raw(&*header, stamps.as_ptr(), owners.as_ptr(), data.as_mut_ptr(), cells, cell_size)
            };
            ring.initialise();
            Self { _header: header, _stamps: stamps, _owners: owners, _data: data, ring }
        }
    }
}
