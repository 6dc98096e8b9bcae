//! Model checks of `ArrayRing` under loom: every interleaving (within a preemption bound) of small
//! producer/consumer scenarios, with loom's `UnsafeCell` tracking flagging any unsynchronised slot
//! access and its atomics exploring the weak-memory outcomes the orderings allow.
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --manifest-path native/Cargo.toml -p kefu-queue --release --test loom`
//! (or scripts/loom.sh).
#![cfg(loom)]

use kefu_queue::ArrayRing;
use loom::sync::Arc;
use loom::thread;

/// Bounded preemptions keep each model to seconds; bugs in rings of this kind show up within 2–3
/// (`LOOM_MAX_PREEMPTIONS` overrides; 4 still finishes in ~10 s).
///
/// Scenarios are shaped so that at most one thread can ever be waiting on another: loom has no notion
/// of fair scheduling, so two threads spinning (with yields) on a third that was preempted mid-push
/// make it explore the schedule where the third never runs again, an infinite path it reports as
/// "exceeded maximum number of branches". That is loom's limit, not a livelock: real schedulers run
/// the preempted thread, and the real-thread stress test (tests/stress.rs) covers many waiters.
fn model(scenario: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(scenario);
}

/// Pushes `item`, yielding to other model threads while the ring is full.
fn push_until_accepted<T>(ring: &ArrayRing<T>, mut item: T) {
    while let Err(rejected) = ring.try_push(item) {
        item = rejected;
        thread::yield_now();
    }
}

/// Pops one item, yielding to other model threads while the ring is empty.
fn pop_until_some<T>(ring: &ArrayRing<T>) -> T {
    loop {
        if let Some(item) = ring.try_pop() {
            return item;
        }
        thread::yield_now();
    }
}

#[test]
fn two_producers_one_consumer_capacity_two() {
    model(|| {
        let ring = Arc::new(ArrayRing::new(2));
        // Offset the positions by one so the two concurrent pushes straddle a lap boundary (index 1 of
        // lap 0 and index 0 of lap 1): wraparound is exercised without adding threads.
        ring.try_push((9, 9)).unwrap();
        assert_eq!(ring.try_pop(), Some((9, 9)));
        let producers: Vec<_> = (0..2)
            .map(|producer| {
                let ring = Arc::clone(&ring);
                thread::spawn(move || push_until_accepted(&ring, (producer, 0)))
            })
            .collect();
        let mut seen = vec![pop_until_some(&ring), pop_until_some(&ring)];
        for producer in producers {
            producer.join().unwrap();
        }
        seen.sort_unstable();
        assert_eq!(seen, [(0, 0), (1, 0)], "an item was lost or duplicated");
        assert_eq!(ring.try_pop(), None);
    });
}

#[test]
fn one_producer_two_consumers_capacity_two() {
    model(|| {
        let ring = Arc::new(ArrayRing::new(2));
        ring.try_push(0).unwrap();
        ring.try_push(1).unwrap();
        // Each consumer takes one of the published items while the producer refills the slots they
        // free: producer and consumers race on both slots, and the producer waits on the ring being
        // full (the only thread that ever waits, see the note on `model`).
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let ring = Arc::clone(&ring);
                thread::spawn(move || ring.try_pop().expect("two items were published"))
            })
            .collect();
        push_until_accepted(&ring, 2);
        push_until_accepted(&ring, 3);
        let mut seen: Vec<usize> = consumers.into_iter().map(|c| c.join().unwrap()).collect();
        seen.sort_unstable();
        assert_eq!(seen, [0, 1], "consumers must get the two oldest items");
        assert_eq!(ring.try_pop(), Some(2));
        assert_eq!(ring.try_pop(), Some(3));
        assert_eq!(ring.try_pop(), None);
    });
}

#[test]
fn capacity_one_hands_over_in_order() {
    model(|| {
        let ring = Arc::new(ArrayRing::new(1));
        let producer = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || {
                for item in 0..3 {
                    push_until_accepted(&ring, item);
                }
            })
        };
        for expected in 0..3 {
            assert_eq!(pop_until_some(&ring), expected);
        }
        producer.join().unwrap();
    });
}

#[test]
fn close_races_with_push_and_nothing_is_lost() {
    model(|| {
        let ring = Arc::new(ArrayRing::new(2));
        let producer = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || (0..2).filter(|&item| ring.try_push(item).is_ok()).count())
        };
        ring.close();
        let accepted = producer.join().unwrap();
        let mut drained = 0;
        while ring.try_pop().is_some() {
            drained += 1;
        }
        assert_eq!(drained, accepted);
    });
}

#[test]
fn drop_releases_items_left_inside() {
    model(|| {
        let witness = Arc::new(());
        let ring = Arc::new(ArrayRing::new(2));
        let producer = {
            let (ring, witness) = (Arc::clone(&ring), Arc::clone(&witness));
            thread::spawn(move || {
                push_until_accepted(&ring, Arc::clone(&witness));
                push_until_accepted(&ring, witness);
            })
        };
        drop(pop_until_some(&ring));
        producer.join().unwrap();
        drop(ring);
        assert_eq!(Arc::strong_count(&witness), 1);
    });
}
