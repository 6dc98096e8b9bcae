//! The benchmark driver: it must measure real commits, so every message it counts is stored, each
//! conversation's seqs are gap-free, and nothing it submitted is left in flight.

mod common;

use std::time::Duration;

use common::{create_database, last_seq, stored, TempDir};
use kefu_journal::closed_loop::closed_loop;
use kefu_journal::{Journal, JournalConfig};

#[test]
fn closed_loop_counts_only_committed_messages() {
    let dir = TempDir::new("closed-loop");
    create_database(&dir.db(), 4);
    let journal = Journal::open(&dir.db(), JournalConfig::default()).unwrap();
    let conversations: Vec<(i64, String)> =
        (1..=4).map(|conv| (conv, format!("v_{conv}"))).collect();
    let report = closed_loop(
        &journal,
        &conversations,
        32,
        Duration::from_millis(50),
        Duration::from_millis(200),
    )
    .unwrap();
    assert_eq!(report.failed, 0);
    assert!(report.acked > 0);
    assert_eq!(report.latencies_ns.len() as u64, report.acked);
    assert!(report
        .latencies_ns
        .windows(2)
        .all(|pair| pair[0] <= pair[1]));
    assert!(report.batches > 0 && report.batches <= report.acked);
    // Every outcome was drained; the writer lowers its in-flight count right after publishing.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while journal.in_flight() > 0 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(journal.in_flight(), 0);
    let mut total = 0;
    for (conv, _) in &conversations {
        let rows = stored(&dir.db(), *conv);
        assert!(rows
            .iter()
            .zip(1..)
            .all(|((seq, _), expected)| *seq == expected));
        assert_eq!(last_seq(&dir.db(), *conv), rows.len() as i64);
        total += rows.len() as u64;
    }
    // Warm-up and drain-out messages are stored but not counted.
    assert!(total >= report.acked);
}

#[test]
fn closed_loop_refuses_more_appenders_than_the_journal_holds() {
    let dir = TempDir::new("closed-loop-full");
    create_database(&dir.db(), 1);
    let config = JournalConfig {
        max_pending: 8,
        ..JournalConfig::default()
    };
    let journal = Journal::open(&dir.db(), config).unwrap();
    // Hold the write lock so nothing completes while the driver submits its first round.
    let lock = std::sync::Arc::clone(journal.write_lock());
    lock.acquire();
    let result = closed_loop(
        &journal,
        &[(1, "v_1".to_owned())],
        9,
        Duration::ZERO,
        Duration::from_millis(10),
    );
    lock.release();
    assert!(result.is_err());
}
