//! Real-thread stress: N producers × M consumers through rings of several capacities, checking that
//! every item arrives exactly once and that each consumer sees each producer's items in push order.
#![cfg(not(loom))]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;

use kefu_queue::ArrayRing;

/// (producer id, per-producer counter).
type Item = (usize, usize);

/// Runs one producers × consumers round and checks exactly-once delivery and per-producer order.
fn exchange(capacity: usize, producers: usize, consumers: usize, items_per_producer: usize) {
    let ring = Arc::new(ArrayRing::<Item>::new(capacity));
    let total = producers * items_per_producer;
    let delivered = Arc::new(AtomicUsize::new(0));
    let start = Arc::new(Barrier::new(producers + consumers));

    let producer_threads: Vec<_> = (0..producers)
        .map(|producer| {
            let (ring, start) = (Arc::clone(&ring), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                for counter in 0..items_per_producer {
                    let mut item = (producer, counter);
                    while let Err(rejected) = ring.try_push(item) {
                        item = rejected;
                        thread::yield_now();
                    }
                }
            })
        })
        .collect();

    let consumer_threads: Vec<_> = (0..consumers)
        .map(|_| {
            let (ring, start, delivered) = (
                Arc::clone(&ring),
                Arc::clone(&start),
                Arc::clone(&delivered),
            );
            thread::spawn(move || {
                start.wait();
                let mut seen = Vec::new();
                while delivered.load(Ordering::Relaxed) < total {
                    match ring.try_pop() {
                        Some(item) => {
                            delivered.fetch_add(1, Ordering::Relaxed);
                            seen.push(item);
                        }
                        None => thread::yield_now(),
                    }
                }
                seen
            })
        })
        .collect();

    for producer in producer_threads {
        producer.join().expect("producer panicked");
    }
    let mut times_seen = vec![vec![0u8; items_per_producer]; producers];
    for consumer in consumer_threads {
        let seen = consumer.join().expect("consumer panicked");
        let mut last_counter: Vec<Option<usize>> = vec![None; producers];
        for (producer, counter) in seen {
            if let Some(last) = last_counter[producer] {
                assert!(
                    counter > last,
                    "capacity {capacity}: consumer saw producer {producer}'s {counter} after {last}"
                );
            }
            last_counter[producer] = Some(counter);
            times_seen[producer][counter] += 1;
        }
    }
    for (producer, counts) in times_seen.iter().enumerate() {
        for (counter, &count) in counts.iter().enumerate() {
            assert_eq!(
                count, 1,
                "capacity {capacity}: item ({producer}, {counter}) seen {count} times"
            );
        }
    }
    assert!(ring.is_empty());
}

#[test]
fn many_producers_many_consumers_across_capacities() {
    for capacity in [1, 2, 3, 7, 64, 1000] {
        exchange(capacity, 4, 4, 5_000);
    }
}

#[test]
fn uneven_producer_consumer_counts() {
    for capacity in [1, 2, 16] {
        exchange(capacity, 1, 3, 10_000);
        exchange(capacity, 3, 1, 5_000);
    }
}

#[test]
fn items_pushed_before_close_are_all_popped() {
    for capacity in [1, 2, 8] {
        let ring = Arc::new(ArrayRing::<usize>::new(capacity));
        let pusher = {
            let ring = Arc::clone(&ring);
            thread::spawn(move || {
                let mut accepted = 0;
                for item in 0.. {
                    match ring.try_push(item) {
                        Ok(()) => accepted += 1,
                        Err(_) if ring.is_closed() => return accepted,
                        Err(_) => thread::yield_now(),
                    }
                }
                unreachable!()
            })
        };
        let mut popped = 0;
        while popped < 2_000 {
            if ring.try_pop().is_some() {
                popped += 1;
            }
        }
        ring.close();
        let accepted = pusher.join().unwrap();
        // Drain: after close, "empty" is final.
        while ring.try_pop().is_some() {
            popped += 1;
        }
        assert_eq!(popped, accepted, "capacity {capacity}");
        assert_eq!(ring.try_push(0), Err(0));
    }
}

#[test]
fn drop_with_items_inside_after_concurrent_use() {
    let witness = Arc::new(());
    let ring = Arc::new(ArrayRing::new(8));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (ring, witness) = (Arc::clone(&ring), Arc::clone(&witness));
            thread::spawn(move || {
                for _ in 0..1_000 {
                    let _ = ring.try_push(Arc::clone(&witness));
                    drop(ring.try_pop());
                }
                let _ = ring.try_push(Arc::clone(&witness));
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    assert_eq!(Arc::strong_count(&witness), 1 + ring.len());
    drop(ring);
    assert_eq!(Arc::strong_count(&witness), 1);
}
