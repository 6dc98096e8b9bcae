//! A bounded multi-producer multi-consumer queue without locks: [`ArrayRing`].
//!
//! The algorithm is Dmitry Vyukov's bounded MPMC ring with a *stamp* per slot, in the variant used by
//! crossbeam's `ArrayQueue`/array channel: positions are `lap | index` words, so the ring holds exactly
//! the capacity the caller asked for (no rounding to a power of two, capacity 1 works), and a *mark
//! bit* in `tail` closes the ring atomically with respect to every push.
//!
//! Progress: `try_push`/`try_pop` never block on a lock and never allocate. A thread that has claimed
//! a slot (won the index CAS) but not yet published it can make a neighbour spin briefly on that one
//! slot; that is the usual trade-off of this ring and what keeps each operation to a single CAS.
//!
//! This crate knows nothing about Python or blocking: waiting for space or items is the caller's policy
//! (the binding in `native/src/queue.rs` parks threads on its own slow path).
//!
//! Checked three ways: unit tests here, a real-thread stress test (tests/stress.rs: N producers × M
//! consumers, exactly-once and per-producer order, capacities down to 1), and loom model checks of the
//! same code with loom's atomics swapped in by `--cfg loom` (tests/loom.rs, run by scripts/loom.sh).
//! `benches/vs_crossbeam.rs` compares it with crossbeam's `ArrayQueue` in the same run.

#![warn(missing_docs)]

mod sync;

use std::fmt;
use std::mem::MaybeUninit;

use sync::{
    fence, spin_hint, yield_now, AtomicUsize, Ordering, UnsafeCell, BACKOFF_YIELD_FROM_STEP,
};

/// Keeps `head` and `tail` on separate cache lines so producers and consumers do not invalidate each
/// other's line on every operation (false sharing). 128 bytes because x86-64's adjacent-line
/// prefetcher pulls cache lines in pairs, and Apple/ARM big cores use 128-byte lines.
#[repr(align(128))]
struct CachePadded<T>(T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// One cell of the ring. `stamp` says whose turn it is:
/// * `stamp == position`       → empty, the producer at `position` may write it;
/// * `stamp == position + 1`   → full, the consumer at `position` may read it;
/// * anything else             → another lap's producer/consumer is still working on it.
struct Slot<T> {
    stamp: AtomicUsize,
    value: UnsafeCell<MaybeUninit<T>>,
}

/// Escalating wait used when another thread is between its CAS and its stamp store.
struct Backoff {
    step: u32,
}

// Under loom YIELD_FROM_STEP is 0 and clippy rightly sees the step arithmetic as constant; it exists
// for the std build.
#[cfg_attr(
    loom,
    allow(clippy::unnecessary_min_or_max, clippy::absurd_extreme_comparisons)
)]
impl Backoff {
    /// Spins below this step, yields the CPU from it on.
    const YIELD_FROM_STEP: u32 = BACKOFF_YIELD_FROM_STEP;

    fn new() -> Self {
        Self { step: 0 }
    }

    /// After a lost CAS: contention, the winner is already done, a few pause instructions suffice.
    fn spin(&mut self) {
        for _ in 0..1u32 << self.step.min(Self::YIELD_FROM_STEP) {
            spin_hint();
        }
        self.step = (self.step + 1).min(Self::YIELD_FROM_STEP);
    }

    /// While waiting on another thread's publication: spin first, then let it run (it may be
    /// preempted; on a 2-core machine spinning against a descheduled thread only burns its slice).
    fn snooze(&mut self) {
        if self.step < Self::YIELD_FROM_STEP {
            for _ in 0..1u32 << self.step {
                spin_hint();
            }
            self.step += 1;
        } else {
            yield_now();
        }
    }
}

/// A bounded lock-free MPMC FIFO of `T`.
///
/// * Exactly `capacity()` items fit; `try_push` on a full ring hands the item back.
/// * FIFO per producer: items pushed by one thread are popped in the order it pushed them.
/// * [`close`](Self::close) makes every later push fail while items already inside stay poppable,
///   so a consumer that sees "empty and closed" knows nothing more will ever arrive.
/// * Dropping the ring drops the items still inside.
pub struct ArrayRing<T> {
    /// Next position to pop (`lap | index`).
    head: CachePadded<AtomicUsize>,
    /// Next position to push (`lap | index`), plus `mark_bit` once closed.
    tail: CachePadded<AtomicUsize>,
    slots: Box<[Slot<T>]>,
    /// The caller's capacity; also the number of slots.
    capacity: usize,
    /// Smallest power of two above every index; set in `tail` when the ring is closed.
    mark_bit: usize,
    /// `2 * mark_bit`: adding it to a position moves to the same index one lap later.
    one_lap: usize,
}

// SAFETY: the ring owns its `T`s and only ever moves them between threads by value (a push writes a
// slot, exactly one pop later moves it out), so sending the ring, or the items through it, needs
// `T: Send` and nothing more.
unsafe impl<T: Send> Send for ArrayRing<T> {}
// SAFETY: shared access goes through `&self` methods whose only non-atomic accesses are to slot
// values, and the stamp protocol gives each such access exclusivity: a producer touches a slot only
// after winning the `tail` CAS for that position while the stamp says "empty", a consumer only after
// winning the `head` CAS while the stamp says "full", and each hands the slot on with a Release store
// that the next owner Acquires. No `&T` is ever handed out, so `T: Sync` is not needed.
unsafe impl<T: Send> Sync for ArrayRing<T> {}

impl<T> ArrayRing<T> {
    /// Largest capacity accepted: leaves at least half the position word for lap numbers, so a thread
    /// stalled mid-operation cannot see its position come round again (ABA) in any realistic time.
    pub const MAX_CAPACITY: usize = usize::MAX >> (usize::BITS / 2);

    /// Creates an empty ring that holds exactly `capacity` items.
    ///
    /// # Panics
    /// If `capacity` is 0 or above [`Self::MAX_CAPACITY`]: a zero-sized ring can never carry anything,
    /// and callers that take capacities from outside validate them first.
    pub fn new(capacity: usize) -> Self {
        assert!(
            (1..=Self::MAX_CAPACITY).contains(&capacity),
            "ArrayRing capacity must be in 1..={}, got {capacity}",
            Self::MAX_CAPACITY
        );
        let mark_bit = (capacity + 1).next_power_of_two();
        let one_lap = mark_bit * 2;
        // Slot `i` starts as "empty, for the producer at position lap 0 | i".
        let slots = (0..capacity)
            .map(|index| Slot {
                stamp: AtomicUsize::new(index),
                value: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect();
        Self {
            head: CachePadded(AtomicUsize::new(0)),
            tail: CachePadded(AtomicUsize::new(0)),
            slots,
            capacity,
            mark_bit,
            one_lap,
        }
    }

    /// The number of items the ring holds when full (what was passed to [`new`](Self::new)).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The position after `position`: next index on the same lap, or index 0 of the next lap.
    fn advance(&self, position: usize) -> usize {
        let index = position & (self.mark_bit - 1);
        if index + 1 < self.capacity {
            // Cannot overflow: index + 1 < capacity < mark_bit, so the lap bits are untouched.
            position + 1
        } else {
            let lap = position & !(self.one_lap - 1);
            lap.wrapping_add(self.one_lap)
        }
    }

    /// Pushes `value`, or gives it back as `Err(value)` when the ring is full or closed
    /// (tell the two apart with [`is_closed`](Self::is_closed)). Never blocks on a lock.
    pub fn try_push(&self, value: T) -> Result<(), T> {
        let mut backoff = Backoff::new();
        // Relaxed: only a starting guess; the CAS below validates it and the stamp (not `tail`)
        // guards the slot's contents.
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            if tail & self.mark_bit != 0 {
                return Err(value);
            }
            let index = tail & (self.mark_bit - 1);
            let slot = &self.slots[index];
            // Acquire: pairs with the Release store of the consumer that emptied this slot on the
            // previous lap, so its move-out happens-before our write below.
            let stamp = slot.stamp.load(Ordering::Acquire);

            if stamp == tail {
                // The slot is free for position `tail`: claim the position.
                // SeqCst on success: `tail` is read by consumers' empty check after a SeqCst fence;
                // a single total order over head/tail updates and those fences keeps "empty"/"full"
                // verdicts consistent with completed operations. Relaxed on failure: we only retry.
                match self.tail.compare_exchange_weak(
                    tail,
                    self.advance(tail),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        slot.value.with_mut(|cell| {
                            // SAFETY: winning the CAS for `tail` while the stamp said "empty for
                            // tail" makes this thread the slot's only user until the stamp store
                            // below; no consumer reads it before it sees `tail + 1`.
                            unsafe { cell.write(MaybeUninit::new(value)) };
                        });
                        // Release: publishes the write above to the consumer that Acquires `tail + 1`.
                        slot.stamp.store(tail + 1, Ordering::Release);
                        return Ok(());
                    }
                    Err(current) => {
                        tail = current;
                        backoff.spin();
                    }
                }
            } else if stamp.wrapping_add(self.one_lap) == tail + 1 {
                // The slot still holds the item pushed one lap ago: the ring may be full.
                // SeqCst fence: orders our stamp observation before the `head` read, against the
                // consumers' SeqCst head CAS, so we never report "full" on a stale `head`.
                fence(Ordering::SeqCst);
                let head = self.head.load(Ordering::Relaxed);
                if head.wrapping_add(self.one_lap) == tail {
                    return Err(value);
                }
                // A consumer has claimed it but not finished; look again.
                backoff.spin();
                tail = self.tail.load(Ordering::Relaxed);
            } else {
                // Our `tail` is stale (another producer moved on) or a consumer is mid-pop.
                backoff.snooze();
                tail = self.tail.load(Ordering::Relaxed);
            }
        }
    }

    /// Pops the oldest item, or `None` when the ring is empty (and, if [`is_closed`](Self::is_closed),
    /// will stay empty). Never blocks on a lock.
    pub fn try_pop(&self) -> Option<T> {
        let mut backoff = Backoff::new();
        // Relaxed: a starting guess, validated by the CAS; the stamp guards the contents.
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            let index = head & (self.mark_bit - 1);
            let slot = &self.slots[index];
            // Acquire: pairs with the producer's Release store of `head + 1`, so its write of the
            // value happens-before our read below.
            let stamp = slot.stamp.load(Ordering::Acquire);

            if head + 1 == stamp {
                // SeqCst on success for the same reason as the `tail` CAS in `try_push`.
                match self.head.compare_exchange_weak(
                    head,
                    self.advance(head),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        let value = slot.value.with_mut(|cell| {
                            // SAFETY: winning the CAS for `head` while the stamp said "full for head"
                            // makes this thread the slot's only user; the producer initialised it
                            // before its Release store, which our Acquire load observed. Reading moves
                            // the value out; the stamp store below marks the slot empty so it is
                            // never read (or dropped) twice.
                            unsafe { cell.read().assume_init() }
                        });
                        // Release: hands the now-empty slot to the producer one lap later, which
                        // must not overwrite it before our move-out above.
                        slot.stamp
                            .store(head.wrapping_add(self.one_lap), Ordering::Release);
                        return Some(value);
                    }
                    Err(current) => {
                        head = current;
                        backoff.spin();
                    }
                }
            } else if stamp == head {
                // The slot has not been filled for this lap: the ring may be empty.
                // SeqCst fence: as in `try_push`, so we never report "empty" on a stale `tail`.
                fence(Ordering::SeqCst);
                let tail = self.tail.load(Ordering::Relaxed);
                if tail & !self.mark_bit == head {
                    return None;
                }
                // A producer has claimed this position but not yet published it.
                backoff.spin();
                head = self.head.load(Ordering::Relaxed);
            } else {
                // Our `head` is stale (another consumer moved on) or a producer is mid-push.
                backoff.snooze();
                head = self.head.load(Ordering::Relaxed);
            }
        }
    }

    /// Closes the ring: every later [`try_push`](Self::try_push) fails, items already inside stay
    /// poppable. Returns `true` for the call that actually closed it.
    pub fn close(&self) -> bool {
        // SeqCst: a push either completed its tail CAS before this RMW (and its item will be popped)
        // or sees the mark bit (and fails); there is no third case.
        let previous = self.tail.fetch_or(self.mark_bit, Ordering::SeqCst);
        previous & self.mark_bit == 0
    }

    /// Whether [`close`](Self::close) has been called.
    pub fn is_closed(&self) -> bool {
        // SeqCst: callers check "empty, then closed, then empty again" to prove a ring is drained;
        // this load must not be reordered with the pops around it.
        self.tail.load(Ordering::SeqCst) & self.mark_bit != 0
    }

    /// The number of items inside, as of some instant during the call.
    ///
    /// Approximate under concurrency: it is a consistent snapshot of `head` and `tail`, but pushes and
    /// pops that have claimed a position without finishing are counted as done, and the value may be
    /// stale by the time the caller reads it. Exact when no other thread is operating on the ring.
    pub fn len(&self) -> usize {
        loop {
            // SeqCst loads, re-reading `tail` until unchanged, give a (head, tail) pair that both held
            // at one moment, so the result is within 0..=capacity.
            let tail = self.tail.load(Ordering::SeqCst);
            let head = self.head.load(Ordering::SeqCst);
            if self.tail.load(Ordering::SeqCst) == tail {
                let tail = tail & !self.mark_bit;
                let head_index = head & (self.mark_bit - 1);
                let tail_index = tail & (self.mark_bit - 1);
                return if head_index < tail_index {
                    tail_index - head_index
                } else if head_index > tail_index {
                    self.capacity - head_index + tail_index
                } else if tail == head {
                    0
                } else {
                    self.capacity
                };
            }
        }
    }

    /// Whether [`len`](Self::len) is 0; approximate in the same way.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Drop for ArrayRing<T> {
    /// Drops the items still inside; `&mut self` means no other thread can be mid-operation.
    fn drop(&mut self) {
        while self.try_pop().is_some() {}
    }
}

impl<T> fmt::Debug for ArrayRing<T> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("ArrayRing")
            .field("capacity", &self.capacity)
            .field("len", &self.len())
            .field("closed", &self.is_closed())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn fifo_and_exact_capacity() {
        for capacity in [1, 2, 3, 5, 8, 100] {
            let ring = ArrayRing::new(capacity);
            for round in 0..3 {
                for item in 0..capacity {
                    assert_eq!(ring.try_push(round * 1000 + item), Ok(()));
                }
                assert_eq!(
                    ring.try_push(usize::MAX),
                    Err(usize::MAX),
                    "capacity {capacity}"
                );
                assert_eq!(ring.len(), capacity);
                for item in 0..capacity {
                    assert_eq!(ring.try_pop(), Some(round * 1000 + item));
                }
                assert_eq!(ring.try_pop(), None);
                assert!(ring.is_empty());
            }
        }
    }

    #[test]
    fn len_tracks_wraparound() {
        let ring = ArrayRing::new(3);
        for step in 0..10 {
            ring.try_push(step).unwrap();
            ring.try_push(step).unwrap();
            assert_eq!(ring.len(), 2);
            ring.try_pop().unwrap();
            assert_eq!(ring.len(), 1);
            ring.try_pop().unwrap();
            assert_eq!(ring.len(), 0);
        }
    }

    #[test]
    fn close_rejects_pushes_but_keeps_items() {
        let ring = ArrayRing::new(4);
        ring.try_push(1).unwrap();
        ring.try_push(2).unwrap();
        assert!(ring.close());
        assert!(!ring.close(), "second close reports it was already closed");
        assert!(ring.is_closed());
        assert_eq!(ring.try_push(3), Err(3));
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.try_pop(), Some(1));
        assert_eq!(ring.try_pop(), Some(2));
        assert_eq!(ring.try_pop(), None);
    }

    #[test]
    fn drop_releases_remaining_items() {
        let witness = Arc::new(());
        let ring = ArrayRing::new(4);
        for _ in 0..3 {
            ring.try_push(Arc::clone(&witness)).unwrap();
        }
        drop(ring.try_pop());
        assert_eq!(Arc::strong_count(&witness), 3);
        drop(ring);
        assert_eq!(Arc::strong_count(&witness), 1);
    }

    #[test]
    #[should_panic(expected = "capacity must be")]
    fn zero_capacity_is_rejected() {
        let _ = ArrayRing::<u8>::new(0);
    }
}
