//! The ring protocol: claim, write, commit (producers); read, release (the one consumer).
//!
//! Memory is `cells` cells of `cell_size` bytes plus one stamp and one owner word per cell. A record
//! of `len` bytes occupies `k = ceil((4 + len) / cell_size)` consecutive cells (wrapping at the end):
//! a little-endian u32 length, then the bytes. Positions are absolute and only grow; the cell of
//! position `p` is `p % cells`.
//!
//! A stamp packs `(position, k, state)`; its position is what makes it ABA-safe (Vyukov's per-slot
//! sequence numbers): cell `c` may be claimed for position `p` only while its stamp is exactly
//! `FREE(p)`, which the consumer writes when it releases position `p - cells`.
//!
//! Producer: read `tail` and `head`; if `tail + k <= head + cells` CAS the stamp of the tail cell
//! `FREE(t) -> CLAIMED(t, k)` (the claim), then CAS `tail: t -> t + k`. Another producer that finds the
//! tail cell claimed but `tail` not yet moved moves it for the claimer ("helping"), so a producer that
//! dies between the two steps cannot block the others. The claimer writes its pid into the owner
//! word, copies the record, and publishes it with `CLAIMED -> COMMITTED` (release).
//!
//! Consumer: at `head` it waits for `COMMITTED(head, k)`, copies the record out, writes `FREE(p + cells)`
//! into each of the k stamps and then moves `head` (release). Producers read `head` with acquire before
//! claiming, so the consumer's reads of those cells happen before any reuse.
//!
//! A producer that dies after claiming and before committing leaves `CLAIMED` at some position; the
//! consumer stops there. [`Ring::skip_abandoned`] releases such a claim when its owner process no
//! longer exists (checked by the caller, see `Consumer`), counting it in `abandoned`. Nothing in an
//! uncommitted record was ever acknowledged to a client, so skipping it loses nothing promised.

use crate::sync::{fence, AtomicU32, AtomicU64, Ordering};

/// Bits of a stamp: state (2), cells of the record (20), position (42, modulo 2^42).
const STATE_BITS: u32 = 2;
const CELLS_BITS: u32 = 20;
const POS_SHIFT: u32 = STATE_BITS + CELLS_BITS;
const POS_MASK: u64 = (1 << (64 - POS_SHIFT)) - 1;
/// Largest number of cells one record may span.
pub const MAX_RECORD_CELLS: u64 = (1 << CELLS_BITS) - 1;
/// Bytes of the length prefix in front of every record.
pub const LEN_PREFIX: usize = 4;

const FREE: u64 = 0;
const CLAIMED: u64 = 1;
const COMMITTED: u64 = 2;

fn stamp(position: u64, cells: u64, state: u64) -> u64 {
    ((position & POS_MASK) << POS_SHIFT) | (cells << STATE_BITS) | state
}

fn stamp_cells(stamp: u64) -> u64 {
    (stamp >> STATE_BITS) & MAX_RECORD_CELLS
}

fn stamp_state(stamp: u64) -> u64 {
    stamp & ((1 << STATE_BITS) - 1)
}

fn stamp_position_is(stamp: u64, position: u64) -> bool {
    stamp >> POS_SHIFT == position & POS_MASK
}

/// Why a record was not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// No room now; the consumer is behind. Nothing was written.
    Full,
    /// The record can never fit this ring.
    TooLarge,
    /// This producer stalled so long after claiming that the consumer released its claim as
    /// abandoned (only after its owner looked dead); the record was not delivered.
    Abandoned,
}

/// What the consumer found at the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// Nothing claimed at the head.
    Empty,
    /// A producer claimed the head and has not committed yet; `owner` is its pid (0: not yet written).
    InFlight { position: u64, owner: u32 },
    /// A committed record is ready.
    Ready,
}

/// The shared control words. `#[repr(C)]` and made only of atomics and plain integers, so it can live
/// at the start of a mapping shared by processes (zero-filled memory is its empty state).
#[repr(C, align(64))]
pub struct Header {
    pub(crate) magic: AtomicU64,
    pub(crate) cells: AtomicU64,
    pub(crate) cell_size: AtomicU64,
    pub(crate) total_len: AtomicU64,
    _pad0: [u64; 4],
    /// Next position to claim (producers).
    pub(crate) tail: AtomicU64,
    _pad1: [u64; 7],
    /// Next position to read (the consumer).
    pub(crate) head: AtomicU64,
    /// Records abandoned by dead producers and skipped.
    pub(crate) abandoned: AtomicU64,
    _pad2: [u64; 6],
    /// Futex word: bumped by a producer that finds the consumer asleep.
    pub(crate) wake_seq: AtomicU32,
    /// Non-zero while the consumer is (about to be) asleep.
    pub(crate) sleeping: AtomicU32,
    _pad3: [u32; 14],
}

impl Header {
    #[cfg(loom)]
    pub(crate) fn new_zeroed() -> Self {
        Self {
            magic: AtomicU64::new(0),
            cells: AtomicU64::new(0),
            cell_size: AtomicU64::new(0),
            total_len: AtomicU64::new(0),
            _pad0: [0; 4],
            tail: AtomicU64::new(0),
            _pad1: [0; 7],
            head: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            _pad2: [0; 6],
            wake_seq: AtomicU32::new(0),
            sleeping: AtomicU32::new(0),
            _pad3: [0; 14],
        }
    }
}

/// A view of one ring: pointers into memory owned elsewhere (a mapping, or the heap in tests).
///
/// All producers and the consumer may hold views of the same memory in different processes; the
/// pointers differ per process, the contents are offsets-free by construction.
pub struct Ring {
    header: *const Header,
    stamps: *const AtomicU64,
    owners: *const AtomicU32,
    data: *mut u8,
    cells: u64,
    cell_size: usize,
}

// SAFETY: every shared word is an atomic; record bytes are written only by the producer that owns
// their claim and read only by the consumer after the commit (release/acquire on the stamp).
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Ring {
    /// # Safety
    /// The pointers must stay valid for the view's life: `stamps` and `owners` with `cells` entries,
    /// `data` with `cells * cell_size` bytes, `cells` and `cell_size` powers of two.
    pub(crate) unsafe fn from_raw(
        header: *const Header,
        stamps: *const AtomicU64,
        owners: *const AtomicU32,
        data: *mut u8,
        cells: u64,
        cell_size: usize,
    ) -> Self {
        Self { header, stamps, owners, data, cells, cell_size }
    }

    /// Writes the initial stamps (`FREE(p)` for position p in cell p) of a new, zeroed ring.
    pub(crate) fn initialise(&self) {
        for cell in 0..self.cells {
            self.stamp(cell).store(stamp(cell, 0, FREE), Ordering::Relaxed);
        }
        fence(Ordering::Release);
    }

    fn header(&self) -> &Header {
        // SAFETY: valid for the view's life (from_raw's contract).
        unsafe { &*self.header }
    }

    fn stamp(&self, position: u64) -> &AtomicU64 {
        // SAFETY: index is masked into 0..cells.
        unsafe { &*self.stamps.add((position & (self.cells - 1)) as usize) }
    }

    fn owner(&self, position: u64) -> &AtomicU32 {
        // SAFETY: index is masked into 0..cells.
        unsafe { &*self.owners.add((position & (self.cells - 1)) as usize) }
    }

    /// Ring capacity in cells.
    pub fn cells(&self) -> u64 {
        self.cells
    }

    /// Bytes per cell.
    pub fn cell_size(&self) -> usize {
        self.cell_size
    }

    /// Largest record (payload bytes) this ring accepts.
    pub fn max_record(&self) -> usize {
        (self.cells.min(MAX_RECORD_CELLS) as usize) * self.cell_size - LEN_PREFIX
    }

    /// Cells a record of `len` payload bytes occupies.
    pub fn cells_for(&self, len: usize) -> u64 {
        (len + LEN_PREFIX).div_ceil(self.cell_size) as u64
    }

    /// Records skipped because their producer died mid-write.
    pub fn abandoned(&self) -> u64 {
        self.header().abandoned.load(Ordering::Relaxed)
    }

    /// Cells in use (claimed and not yet released); a racy snapshot, for metrics.
    pub fn used_cells(&self) -> u64 {
        let head = self.header().head.load(Ordering::Relaxed);
        self.header().tail.load(Ordering::Relaxed).saturating_sub(head)
    }

    /// Writes one record without waiting. `owner` is the producer's pid (what crash recovery checks).
    pub fn try_push(&self, record: &[u8], owner: u32) -> Result<(), PushError> {
        if record.len() > self.max_record() {
            return Err(PushError::TooLarge);
        }
        let k = self.cells_for(record.len());
        let header = self.header();
        loop {
            let tail = header.tail.load(Ordering::Acquire);
            let head = header.head.load(Ordering::Acquire);
            if tail + k > head + self.cells {
                if header.tail.load(Ordering::Acquire) == tail {
                    return Err(PushError::Full);
                }
                continue;
            }
            let cell = self.stamp(tail);
            let seen = cell.load(Ordering::Acquire);
            if seen == stamp(tail, 0, FREE) {
                if cell
                    .compare_exchange(seen, stamp(tail, k, CLAIMED), Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    continue;
                }
                self.owner(tail).store(owner, Ordering::Relaxed);
                // Fails only when another producer already helped the tail past our claim.
                let _ = header.tail.compare_exchange(tail, tail + k, Ordering::AcqRel, Ordering::Relaxed);
                self.write_record(tail, record);
                let claimed = stamp(tail, k, CLAIMED);
                let committed = stamp(tail, k, COMMITTED);
                // CAS, not store: the consumer may have declared us dead (see skip_abandoned).
                if cell.compare_exchange(claimed, committed, Ordering::AcqRel, Ordering::Relaxed).is_err() {
                    return Err(PushError::Abandoned);
                }
                self.wake_consumer();
                return Ok(());
            }
            if stamp_state(seen) != FREE && stamp_position_is(seen, tail) {
                // Claimed, tail not moved yet: help, so a claimer that stalls or dies cannot block us.
                let _ = header.tail.compare_exchange(
                    tail,
                    tail + stamp_cells(seen),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            }
            // Otherwise our tail was stale; read it again.
        }
    }

    /// Claims room for a record of `len` bytes and never commits it: what a producer that dies
    /// mid-write leaves behind. Only for crash-recovery tests.
    #[doc(hidden)]
    pub fn claim_and_abandon(&self, len: usize, owner: u32) -> Result<u64, PushError> {
        let k = self.cells_for(len);
        let header = self.header();
        loop {
            let tail = header.tail.load(Ordering::Acquire);
            let head = header.head.load(Ordering::Acquire);
            if tail + k > head + self.cells {
                return Err(PushError::Full);
            }
            let cell = self.stamp(tail);
            if cell
                .compare_exchange(stamp(tail, 0, FREE), stamp(tail, k, CLAIMED), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.owner(tail).store(owner, Ordering::Relaxed);
                let _ = header.tail.compare_exchange(tail, tail + k, Ordering::AcqRel, Ordering::Relaxed);
                return Ok(tail);
            }
        }
    }

    fn write_record(&self, position: u64, record: &[u8]) {
        let len = (record.len() as u32).to_le_bytes();
        self.copy_in(position, 0, &len);
        self.copy_in(position, LEN_PREFIX, record);
    }

    /// Copies `bytes` into the ring at byte `offset` of the record starting at `position`, wrapping.
    fn copy_in(&self, position: u64, offset: usize, bytes: &[u8]) {
        let ring_bytes = self.cells as usize * self.cell_size;
        let start = ((position & (self.cells - 1)) as usize * self.cell_size + offset) % ring_bytes;
        let first = bytes.len().min(ring_bytes - start);
        // SAFETY: both ranges lie inside the data area; this producer owns these cells (claimed).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.data.add(start), first);
            std::ptr::copy_nonoverlapping(bytes.as_ptr().add(first), self.data, bytes.len() - first);
        }
    }

    fn copy_out(&self, position: u64, offset: usize, out: &mut [u8]) {
        let ring_bytes = self.cells as usize * self.cell_size;
        let start = ((position & (self.cells - 1)) as usize * self.cell_size + offset) % ring_bytes;
        let first = out.len().min(ring_bytes - start);
        // SAFETY: both ranges lie inside the data area; the record is committed and not yet released.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data.add(start), out.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(self.data, out.as_mut_ptr().add(first), out.len() - first);
        }
    }

    /// What is at the head now (consumer only).
    pub fn peek(&self) -> Head {
        let head = self.header().head.load(Ordering::Relaxed);
        let seen = self.stamp(head).load(Ordering::Acquire);
        if !stamp_position_is(seen, head) {
            return Head::Empty;
        }
        match stamp_state(seen) {
            COMMITTED => Head::Ready,
            CLAIMED => Head::InFlight { position: head, owner: self.owner(head).load(Ordering::Relaxed) },
            _ => Head::Empty,
        }
    }

    /// Appends the record at the head to `out` and releases its cells. Consumer only; `false` when
    /// none is committed at the head.
    pub fn pop_into(&self, out: &mut Vec<u8>) -> bool {
        let header = self.header();
        let head = header.head.load(Ordering::Relaxed);
        let seen = self.stamp(head).load(Ordering::Acquire);
        if !(stamp_position_is(seen, head) && stamp_state(seen) == COMMITTED) {
            return false;
        }
        let k = stamp_cells(seen);
        let mut len = [0u8; LEN_PREFIX];
        self.copy_out(head, 0, &mut len);
        // A length beyond the claimed cells can only come from foreign writes into the mapping; clamp
        // rather than read outside the record.
        let len = (u32::from_le_bytes(len) as usize).min(k as usize * self.cell_size - LEN_PREFIX);
        let start = out.len();
        out.resize(start + len, 0);
        self.copy_out(head, LEN_PREFIX, &mut out[start..]);
        self.release(head, k);
        true
    }

    /// Releases an abandoned claim at the head (its producer is gone). Consumer only; `false` when the
    /// head is no longer that claim (it was committed after all).
    pub fn skip_abandoned(&self, position: u64) -> bool {
        let header = self.header();
        if header.head.load(Ordering::Relaxed) != position {
            return false;
        }
        let cell = self.stamp(position);
        let seen = cell.load(Ordering::Acquire);
        if !(stamp_position_is(seen, position) && stamp_state(seen) == CLAIMED) {
            return false;
        }
        let k = stamp_cells(seen);
        // CAS, not store: if the producer was alive after all and commits now, exactly one side wins.
        if cell.compare_exchange(seen, stamp(position, k, FREE), Ordering::AcqRel, Ordering::Acquire).is_err() {
            return false;
        }
        header.abandoned.fetch_add(1, Ordering::Relaxed);
        self.release(position, k);
        true
    }

    fn release(&self, position: u64, k: u64) {
        for offset in 0..k {
            let at = position + offset;
            self.owner(at).store(0, Ordering::Relaxed);
            self.stamp(at).store(stamp(at + self.cells, 0, FREE), Ordering::Release);
        }
        self.header().head.store(position + k, Ordering::Release);
    }

    /// The consumer's side of sleeping: announce it, and return the futex value to wait on, or None
    /// when something is already there (then do not sleep).
    pub fn prepare_sleep(&self) -> Option<u32> {
        let header = self.header();
        header.sleeping.store(1, Ordering::SeqCst);
        let seen = header.wake_seq.load(Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.peek() == Head::Ready {
            header.sleeping.store(0, Ordering::Relaxed);
            return None;
        }
        Some(seen)
    }

    /// The consumer is awake again.
    pub fn end_sleep(&self) {
        self.header().sleeping.store(0, Ordering::Relaxed);
    }

    /// True while the consumer has announced that it sleeps (`prepare_sleep` until `end_sleep`). A
    /// producer that also signals the consumer another way (an eventfd the consumer's event loop
    /// watches) checks this after a successful push; the push's own fence orders the two.
    pub fn consumer_sleeping(&self) -> bool {
        self.header().sleeping.load(Ordering::Relaxed) != 0
    }

    /// The futex word the consumer sleeps on.
    pub fn wake_word(&self) -> &AtomicU32 {
        &self.header().wake_seq
    }

    /// After a commit: a fence and one load when the consumer is awake; a futex wake when it sleeps.
    fn wake_consumer(&self) {
        let header = self.header();
        fence(Ordering::SeqCst);
        if header.sleeping.load(Ordering::Relaxed) != 0 {
            header.wake_seq.fetch_add(1, Ordering::SeqCst);
            crate::futex::wake(&header.wake_seq);
        }
    }
}
