//! One process: records round-trip in order, of every size, across the wrap; full and too-large
//! are refused without side effects; an abandoned claim is skipped once its owner is gone.

use kefu_shmring::{page_size, Head, PushError, SharedRing, StallWatch, STALL_CHECK_AFTER};

fn drain_all(ring: &SharedRing, watch: &mut StallWatch) -> Vec<Vec<u8>> {
    let (mut bytes, mut lengths) = (Vec::new(), Vec::new());
    watch.drain(ring.ring(), &mut bytes, &mut lengths, usize::MAX);
    let mut records = Vec::new();
    let mut at = 0;
    for len in lengths {
        records.push(bytes[at..at + len].to_vec());
        at += len;
    }
    records
}

#[test]
fn records_of_every_size_round_trip_in_order_across_the_wrap() {
    let shared = SharedRing::create("t", 32, 16).unwrap();
    let ring = shared.ring();
    let mut watch = StallWatch::default();
    assert_eq!(ring.max_record(), 32 * 16 - 4);
    for round in 0..200usize {
        let sizes = [0, 1, 11, 12, 13, 60, (round * 7) % 100];
        let sent: Vec<Vec<u8>> =
            sizes.iter().map(|&n| (0..n).map(|i| (i + round) as u8).collect()).collect();
        for record in &sent {
            ring.try_push(record, 1).unwrap();
        }
        assert_eq!(drain_all(&shared, &mut watch), sent, "round {round}");
        assert_eq!(ring.peek(), Head::Empty);
    }
}

#[test]
fn a_full_ring_refuses_and_recovers_after_the_consumer_reads() {
    let shared = SharedRing::create("t", 8, 16).unwrap();
    let ring = shared.ring();
    let record = [7u8; 12]; // exactly one cell with the length prefix
    for _ in 0..8 {
        ring.try_push(&record, 1).unwrap();
    }
    assert_eq!(ring.try_push(&record, 1), Err(PushError::Full));
    assert_eq!(ring.try_push(&[0u8; 200], 1), Err(PushError::TooLarge));
    let mut watch = StallWatch::default();
    assert_eq!(drain_all(&shared, &mut watch).len(), 8);
    ring.try_push(&record, 1).unwrap();
    assert_eq!(drain_all(&shared, &mut watch), vec![record.to_vec()]);
}

#[test]
fn a_claim_whose_owner_is_dead_is_skipped_and_the_ring_moves_on() {
    let shared = SharedRing::create("t", 16, 16).unwrap();
    let ring = shared.ring();
    let mut watch = StallWatch::default();
    ring.try_push(b"before", 1).unwrap();
    // pid 0 means "died before recording its pid"; a pid beyond pid_max never exists.
    ring.claim_and_abandon(30, i32::MAX as u32).unwrap();
    ring.try_push(b"after", 1).unwrap();
    assert_eq!(drain_all(&shared, &mut watch), vec![b"before".to_vec()]);
    assert!(matches!(ring.peek(), Head::InFlight { .. }));
    std::thread::sleep(STALL_CHECK_AFTER + STALL_CHECK_AFTER / 4);
    assert_eq!(drain_all(&shared, &mut watch), vec![b"after".to_vec()]);
    assert_eq!(ring.abandoned(), 1);
}

#[test]
fn a_claim_whose_owner_lives_is_waited_for() {
    let shared = SharedRing::create("t", 16, 16).unwrap();
    let ring = shared.ring();
    let mut watch = StallWatch::default();
    ring.claim_and_abandon(30, std::process::id()).unwrap();
    ring.try_push(b"after", 1).unwrap();
    assert!(drain_all(&shared, &mut watch).is_empty());
    std::thread::sleep(STALL_CHECK_AFTER + STALL_CHECK_AFTER / 4);
    assert!(drain_all(&shared, &mut watch).is_empty(), "a live producer's claim must not be skipped");
    assert_eq!(ring.abandoned(), 0);
}

#[test]
fn geometry_follows_the_os_page_size_and_a_foreign_fd_is_refused() {
    let shared = SharedRing::create("t", 1024, 64).unwrap();
    assert_eq!(shared.mapped_len() % page_size(), 0);
    let again = SharedRing::open(shared.fd()).unwrap();
    again.ring().try_push(b"hello", 1).unwrap();
    let mut watch = StallWatch::default();
    assert_eq!(drain_all(&shared, &mut watch), vec![b"hello".to_vec()]);
    let file = std::fs::File::open("/proc/self/exe").unwrap();
    use std::os::fd::AsRawFd;
    assert!(SharedRing::open(file.as_raw_fd()).is_err());
    assert!(SharedRing::create("t", 1000, 64).is_err());
    assert!(SharedRing::create("t", 1024, 8).is_err());
}
