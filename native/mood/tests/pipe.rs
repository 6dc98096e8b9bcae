//! The mood thread end to end: batches in, moods kept, an armed alert out on the eventfd.

use std::time::{Duration, Instant};

use kefu_mood::{LinearScorer, MoodPipe, Tracker, TrackerConfig};
use kefu_textfeat::Featurizer;

const BITS: u32 = 6;
/// fp16 of +1.0: every id pushes towards the negative class (index 0).
const ONE: u16 = 0x3c00;

fn upset_pipe(backlog: usize) -> MoodPipe {
    let featurizer = Featurizer::new(BITS, Vec::<(String, i64)>::new()).unwrap();
    let rows = 1usize << BITS;
    let weights: Vec<u16> = (0..rows).flat_map(|_| [ONE, 0, 0]).collect();
    let scorer = LinearScorer::new(featurizer, weights, vec![0.0, 0.0, 0.0], 0).unwrap();
    MoodPipe::start(
        scorer,
        Tracker::new(TrackerConfig::default()).unwrap(),
        backlog,
    )
    .unwrap()
}

fn batch(items: &[(u64, &str)]) -> (Vec<u64>, Vec<u32>, String) {
    let mut text = String::new();
    let mut ends = Vec::new();
    for (_, item) in items {
        text.push_str(item);
        ends.push(text.len() as u32);
    }
    (items.iter().map(|(conv, _)| *conv).collect(), ends, text)
}

fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "the mood thread did not catch up"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn readable(fd: i32) -> bool {
    let mut poll = libc_pollfd(fd);
    // SAFETY: one valid pollfd, 1 s timeout.
    unsafe { libc::poll(&mut poll, 1, 1000) == 1 }
}

fn libc_pollfd(fd: i32) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

#[test]
fn a_batch_is_scored_in_order_and_an_armed_conversation_alerts_once() {
    let pipe = upset_pipe(8);
    let expected = pipe.score("so long a wait");
    assert!(expected > 0.5, "every id leans negative: {expected}");
    pipe.arm(2, Some(0.5));
    let (convs, ends, text) = batch(&[(1, "so long a wait"), (2, "angry"), (1, ""), (2, "again")]);
    assert!(pipe.submit(convs, ends, text));
    wait_until(|| pipe.stats().scored == 4);
    let alerts = pipe.take_alerts();
    assert_eq!(alerts.len(), 1, "fired once, then disarmed: {alerts:?}");
    assert_eq!(alerts[0].conv, 2);
    assert!(
        !readable_now(pipe.fd()),
        "taking the alerts re-arms the eventfd"
    );
    let first = f64::from(expected);
    let empty = f64::from(pipe.score(""));
    let mood = 0.4 * empty + 0.6 * first;
    assert!((pipe.mood(1).unwrap() - mood).abs() < 1e-12);
    assert_eq!(pipe.stats().conversations, 2);
}

fn readable_now(fd: i32) -> bool {
    let mut poll = libc_pollfd(fd);
    // SAFETY: one valid pollfd, no wait.
    unsafe { libc::poll(&mut poll, 1, 0) == 1 }
}

#[test]
fn the_eventfd_wakes_a_waiting_reader() {
    let pipe = upset_pipe(8);
    pipe.arm(9, Some(0.0));
    let (convs, ends, text) = batch(&[(9, "hi")]);
    pipe.submit(convs, ends, text);
    assert!(readable(pipe.fd()));
    assert_eq!(pipe.take_alerts().len(), 1);
}

#[test]
fn after_close_batches_are_dropped_and_counted() {
    let pipe = upset_pipe(1);
    let (convs, ends, text) = batch(&[(1, "a"), (2, "b")]);
    assert!(pipe.submit(convs, ends, text));
    pipe.close();
    assert_eq!(pipe.stats().scored, 2, "close scores what was handed over");
    let (convs, ends, text) = batch(&[(1, "late")]);
    assert!(!pipe.submit(convs, ends, text));
    assert_eq!(pipe.stats().dropped, 1);
    assert_eq!(pipe.stats().backlog, 0);
}
