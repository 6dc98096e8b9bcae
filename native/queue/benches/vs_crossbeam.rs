//! Message passing through `kefu_queue::ArrayRing` and `crossbeam_queue::ArrayQueue` in the same run.
//!
//! `cargo bench --manifest-path native/Cargo.toml -p kefu-queue --bench vs_crossbeam -- [--messages N]
//! [--runs R] [--capacity C]` prints one JSON object per (queue, producers × consumers) line on stdout:
//! messages per second (one push + one pop each), median over R runs. Both queues get the same
//! threads, capacity, item type (u64) and wait policy (yield when full/empty), so the ratio compares
//! the rings themselves. Progress goes to stderr.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Instant;

use crossbeam_queue::ArrayQueue;
use kefu_queue::ArrayRing;

/// The two operations the benchmark needs, so both queues run the identical driver.
trait BoundedQueue: Send + Sync + 'static {
    const NAME: &'static str;
    fn with_capacity(capacity: usize) -> Self;
    fn push(&self, value: u64) -> Result<(), u64>;
    fn pop(&self) -> Option<u64>;
}

impl BoundedQueue for ArrayRing<u64> {
    const NAME: &'static str = "kefu ArrayRing";
    fn with_capacity(capacity: usize) -> Self {
        ArrayRing::new(capacity)
    }
    fn push(&self, value: u64) -> Result<(), u64> {
        self.try_push(value)
    }
    fn pop(&self) -> Option<u64> {
        self.try_pop()
    }
}

impl BoundedQueue for ArrayQueue<u64> {
    const NAME: &'static str = "crossbeam ArrayQueue";
    fn with_capacity(capacity: usize) -> Self {
        ArrayQueue::new(capacity)
    }
    fn push(&self, value: u64) -> Result<(), u64> {
        ArrayQueue::push(self, value)
    }
    fn pop(&self) -> Option<u64> {
        ArrayQueue::pop(self)
    }
}

struct Settings {
    messages: u64,
    runs: usize,
    capacity: usize,
}

impl Settings {
    /// Reads `--messages`, `--runs`, `--capacity`; ignores what cargo adds (`--bench`).
    fn from_args() -> Self {
        let mut settings = Settings {
            messages: 2_000_000,
            runs: 5,
            capacity: 1024,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            let mut value = || -> u64 {
                args.next()
                    .and_then(|value| value.parse().ok())
                    .unwrap_or_else(|| panic!("{flag} needs a positive integer"))
            };
            match flag.as_str() {
                "--messages" => settings.messages = value(),
                "--runs" => settings.runs = value() as usize,
                "--capacity" => settings.capacity = value() as usize,
                _ => {}
            }
        }
        settings
    }
}

/// One run: `producers` threads push `messages` u64s in total, `consumers` threads pop them all.
/// Returns messages per second and checks that the sum of what was popped matches what was pushed.
fn run_once<Q: BoundedQueue>(settings: &Settings, producers: u64, consumers: u64) -> f64 {
    let queue = Arc::new(Q::with_capacity(settings.capacity));
    let per_producer = settings.messages / producers;
    let total = per_producer * producers;
    let popped = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new((producers + consumers + 1) as usize));

    let producer_threads: Vec<_> = (0..producers)
        .map(|producer| {
            let (queue, start) = (Arc::clone(&queue), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                for counter in 0..per_producer {
                    let mut value = producer * per_producer + counter;
                    while let Err(rejected) = queue.push(value) {
                        value = rejected;
                        thread::yield_now();
                    }
                }
            })
        })
        .collect();
    let consumer_threads: Vec<_> = (0..consumers)
        .map(|_| {
            let (queue, start, popped) =
                (Arc::clone(&queue), Arc::clone(&start), Arc::clone(&popped));
            thread::spawn(move || {
                start.wait();
                let mut sum = 0u64;
                while popped.load(Ordering::Relaxed) < total {
                    match queue.pop() {
                        Some(value) => {
                            sum = sum.wrapping_add(value);
                            popped.fetch_add(1, Ordering::Relaxed);
                        }
                        None => thread::yield_now(),
                    }
                }
                sum
            })
        })
        .collect();

    start.wait();
    let began = Instant::now();
    for producer in producer_threads {
        producer.join().expect("producer panicked");
    }
    let sum = consumer_threads
        .into_iter()
        .map(|consumer| consumer.join().expect("consumer panicked"))
        .fold(0u64, u64::wrapping_add);
    let seconds = began.elapsed().as_secs_f64();
    assert_eq!(
        black_box(sum),
        (0..total).fold(0u64, u64::wrapping_add),
        "{} lost messages",
        Q::NAME
    );
    total as f64 / seconds
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    let middle = samples.len() / 2;
    if samples.len() % 2 == 1 {
        samples[middle]
    } else {
        (samples[middle - 1] + samples[middle]) / 2.0
    }
}

/// Prints one JSON line for `Q`'s samples and returns their median.
fn report<Q: BoundedQueue>(
    settings: &Settings,
    producers: u64,
    consumers: u64,
    samples: &[f64],
) -> f64 {
    let median_rate = median(samples.to_vec());
    let runs = samples
        .iter()
        .map(|rate| format!("{rate:.0}"))
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "{{\"queue\":\"{}\",\"producers\":{producers},\"consumers\":{consumers},\"capacity\":{},\
         \"messages\":{},\"runs_ops_per_s\":[{runs}],\"median_ops_per_s\":{median_rate:.0}}}",
        Q::NAME,
        settings.capacity,
        settings.messages
    );
    median_rate
}

fn main() {
    let settings = Settings::from_args();
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    eprintln!(
        "vs_crossbeam: {} messages, capacity {}, median of {} runs, {threads} hardware threads",
        settings.messages, settings.capacity, settings.runs
    );
    for (producers, consumers) in [(1, 1), (2, 2), (4, 4)] {
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        // Interleave the two queues' runs and alternate which goes first, so drift in machine state
        // (frequency, other load) spreads over both instead of biasing one.
        for run in 0..settings.runs {
            if run % 2 == 0 {
                ours.push(run_once::<ArrayRing<u64>>(&settings, producers, consumers));
                theirs.push(run_once::<ArrayQueue<u64>>(&settings, producers, consumers));
            } else {
                theirs.push(run_once::<ArrayQueue<u64>>(&settings, producers, consumers));
                ours.push(run_once::<ArrayRing<u64>>(&settings, producers, consumers));
            }
        }
        let ours = report::<ArrayRing<u64>>(&settings, producers, consumers, &ours);
        let theirs = report::<ArrayQueue<u64>>(&settings, producers, consumers, &theirs);
        eprintln!(
            "  {producers}p{consumers}c: kefu {ours:>12.0}/s  crossbeam {theirs:>12.0}/s  ratio {:.2}",
            ours / theirs
        );
    }
}
