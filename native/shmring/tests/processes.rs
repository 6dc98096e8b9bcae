//! Real processes (fork): producers write into a ring the parent consumes, while it sleeps on the
//! futex. Every record arrives once, in each producer's order; a producer killed mid-claim does not
//! wedge the consumer.

use std::time::{Duration, Instant};

use kefu_shmring::{PushError, SharedRing, StallWatch};

const PRODUCERS: u32 = 4;
const PER_PRODUCER: u32 = 20_000;

/// Child body: only stack buffers and ring calls (no allocation after fork), then `_exit`.
fn produce(ring: &SharedRing, producer: u32) -> ! {
    let pid = std::process::id();
    let mut record = [0u8; 200];
    for n in 0..PER_PRODUCER {
        // Sizes vary with n so records span one to several cells and wrap at every offset.
        let len = 8 + (n as usize * 13) % 190;
        record[..4].copy_from_slice(&producer.to_le_bytes());
        record[4..8].copy_from_slice(&n.to_le_bytes());
        for (i, byte) in record[8..len].iter_mut().enumerate() {
            *byte = (n as usize + i) as u8;
        }
        loop {
            match ring.ring().try_push(&record[..len], pid) {
                Ok(()) => break,
                Err(PushError::Full) => std::thread::sleep(Duration::from_micros(50)),
                Err(error) => {
                    eprintln!("push failed: {error:?}");
                    // SAFETY: leaving the forked child without running the parent's destructors.
                    unsafe { libc::_exit(3) }
                }
            }
        }
    }
    // SAFETY: as above.
    unsafe { libc::_exit(0) }
}

fn fork_producer(ring: &SharedRing, producer: u32) -> libc::pid_t {
    // SAFETY: the child only runs `produce`, which allocates nothing and exits with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        produce(ring, producer);
    }
    pid
}

fn wait_exit(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    status
}

#[test]
fn many_producer_processes_one_consumer_every_record_once_in_order() {
    let shared = SharedRing::create("stress", 1024, 64).unwrap();
    let children: Vec<_> = (0..PRODUCERS).map(|p| fork_producer(&shared, p)).collect();
    let mut next = vec![0u32; PRODUCERS as usize];
    let mut watch = StallWatch::default();
    let (mut bytes, mut lengths) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut total = 0u32;
    while total < PRODUCERS * PER_PRODUCER {
        assert!(Instant::now() < deadline, "stalled at {total} records");
        bytes.clear();
        lengths.clear();
        if watch.drain(shared.ring(), &mut bytes, &mut lengths, 256) == 0 {
            watch.wait(shared.ring(), Duration::from_millis(100));
            continue;
        }
        let mut at = 0;
        for &len in &lengths {
            let record = &bytes[at..at + len];
            at += len;
            let producer = u32::from_le_bytes(record[..4].try_into().unwrap());
            let n = u32::from_le_bytes(record[4..8].try_into().unwrap());
            assert_eq!(n, next[producer as usize], "producer {producer} out of order");
            assert_eq!(len, 8 + (n as usize * 13) % 190);
            assert!(record[8..].iter().enumerate().all(|(i, &b)| b == (n as usize + i) as u8));
            next[producer as usize] += 1;
            total += 1;
        }
    }
    for child in children {
        assert_eq!(wait_exit(child), 0);
    }
    assert_eq!(shared.ring().abandoned(), 0);
}

#[test]
fn a_producer_killed_between_claim_and_commit_does_not_wedge_the_consumer() {
    let shared = SharedRing::create("crash", 64, 64).unwrap();
    // SAFETY: the child claims, then waits to be killed; no allocation.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        shared.ring().claim_and_abandon(100, std::process::id()).unwrap();
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    while shared.ring().used_cells() == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    shared.ring().try_push(b"after the crash", std::process::id()).unwrap();
    // SAFETY: killing our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    wait_exit(pid);
    let mut watch = StallWatch::default();
    let (mut bytes, mut lengths) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + Duration::from_secs(5);
    while lengths.is_empty() {
        assert!(Instant::now() < deadline, "consumer wedged behind the dead producer's claim");
        if watch.drain(shared.ring(), &mut bytes, &mut lengths, 16) == 0 {
            watch.wait(shared.ring(), Duration::from_millis(500));
        }
    }
    assert_eq!(bytes, b"after the crash");
    assert_eq!(shared.ring().abandoned(), 1);
}
