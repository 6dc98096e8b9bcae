//! Model check of the claim/commit/release protocol (`RUSTFLAGS="--cfg loom"`, scripts/loom.sh).
#![cfg(loom)]

use kefu_shmring::loom_support::HeapRing;
use loom::sync::Arc;
use loom::thread;

/// Bounded preemptions keep the model to seconds (`LOOM_MAX_PREEMPTIONS` overrides). No thread of
/// this protocol ever waits for another (a claimer that stalls is helped past), so every path ends.
fn model(scenario: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(scenario);
}

fn drain(ring: &HeapRing, got: &mut Vec<Vec<u8>>) {
    let mut bytes = Vec::new();
    while ring.ring.pop_into(&mut bytes) {
        got.push(std::mem::take(&mut bytes));
    }
}

#[test]
fn two_producers_one_consumer_records_arrive_whole_and_in_producer_order() {
    model(|| {
        // 4 cells of 16 bytes: a 20-byte record spans two cells, so claims overlap the wrap.
        let ring = Arc::new(HeapRing::new(4, 16));
        let producers: Vec<_> = [1u8, 2u8]
            .into_iter()
            .map(|id| {
                let ring = ring.clone();
                thread::spawn(move || {
                    let mut sent = 0;
                    for n in 0..2u8 {
                        let record = vec![id * 10 + n; if n == 0 { 20 } else { 3 }];
                        if ring.ring.try_push(&record, id as u32).is_ok() {
                            sent += 1;
                        }
                    }
                    sent
                })
            })
            .collect();
        let mut got = Vec::new();
        drain(&ring, &mut got);
        let sent: usize = producers.into_iter().map(|p| p.join().unwrap()).sum();
        drain(&ring, &mut got);
        assert_eq!(got.len(), sent);
        for id in [1u8, 2u8] {
            let mine: Vec<u8> = got.iter().filter(|r| r[0] / 10 == id).map(|r| r[0] % 10).collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "producer {id} reordered: {mine:?}");
        }
        for record in &got {
            assert!(record.iter().all(|&b| b == record[0]), "torn record {record:?}");
        }
    });
}
