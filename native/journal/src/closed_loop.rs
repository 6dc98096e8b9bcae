//! A closed-loop load driver, for benchmarks only: what the journal sustains when it is fed the way
//! the native data plane feeds it (records built and submitted from Rust, outcomes drained from a
//! completion queue once per eventfd wake-up, no Python per message).
//!
//! `appenders` clients each keep one message in flight: submit, wait for its outcome, submit the
//! next. The driver runs on the calling thread, which plays the data plane's event loop: it sleeps
//! in `poll` on the completion eventfd, drains the batch, and answers every outcome with the next
//! record of that appender. Each record is built like the data plane's sink builds it (owned
//! strings copied from borrowed fields), so its allocation cost is in the numbers.

use std::io;
use std::time::{Duration, Instant};

use crate::{AppendRecord, Journal, RecordTexts, Role, SubmitError};

/// What one run measured (only what happened inside the measured window counts).
#[derive(Clone, Debug, PartialEq)]
pub struct LoadReport {
    /// Acknowledged (committed) messages whose outcome arrived in the window.
    pub acked: u64,
    /// Outcomes other than success in the window (a benchmark expects none).
    pub failed: u64,
    /// Length of the window, seconds.
    pub seconds: f64,
    /// CPU time of the whole process (every thread) in the window, seconds.
    pub cpu_seconds: f64,
    /// CPU time of the journal's writer thread in the window, seconds (its cost per message bounds
    /// the throughput one free core can give).
    pub writer_cpu_seconds: f64,
    /// Batches the journal committed in the window.
    pub batches: u64,
    /// Submit-to-outcome latency of every acked message of the window, nanoseconds, sorted.
    pub latencies_ns: Vec<u64>,
}

impl LoadReport {
    /// The `q`-quantile (0..=1) of the latencies, nanoseconds; 0 when nothing was acked.
    pub fn latency_quantile_ns(&self, q: f64) -> u64 {
        if self.latencies_ns.is_empty() {
            return 0;
        }
        let index =
            ((self.latencies_ns.len() as f64 * q) as usize).min(self.latencies_ns.len() - 1);
        self.latencies_ns[index]
    }
}

/// The message text, the same as bench/storage.py's (about eighty characters, some CJK).
const TEXT: &str =
    "a customer-service message of typical length, about eighty characters long. 你好";

/// Runs `appenders` closed-loop clients over `conversations` ((conv, sender_id), appender `i` writes
/// to `conversations[i % len]`) for `warmup`, then measures for `measure`, then lets every message
/// in flight finish. Fails when the journal refuses a submit (more appenders than `max_pending`, or
/// closed) or the eventfd cannot be polled.
pub fn closed_loop(
    journal: &Journal,
    conversations: &[(i64, String)],
    appenders: usize,
    warmup: Duration,
    measure: Duration,
) -> io::Result<LoadReport> {
    if conversations.is_empty() || appenders == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "need conversations and appenders",
        ));
    }
    let sink = journal.new_completions()?;
    let mut sent = vec![0u64; appenders];
    let mut started = vec![Instant::now(); appenders];
    let submit = |appender: usize, sent: &mut [u64], started: &mut [Instant]| -> io::Result<()> {
        let (conv, sender_id) = &conversations[appender % conversations.len()];
        sent[appender] += 1;
        started[appender] = Instant::now();
        let cmid = format!("w{appender}-{}", sent[appender]);
        let texts = RecordTexts {
            sender_id,
            sender_name: None,
            cmid: &cmid,
            kind: "text",
            text: TEXT,
            meta: "{}",
        };
        let record = AppendRecord::new(*conv, Role::Visitor, texts, None, appender as u64);
        journal.submit_to(record, &sink).map_err(|error| {
            let why = match error {
                SubmitError::Full(_) => "journal full: more appenders than max_pending",
                SubmitError::Closed(_) => "journal closed",
            };
            io::Error::other(why)
        })
    };
    for appender in 0..appenders {
        submit(appender, &mut sent, &mut started)?;
    }
    let begin = Instant::now();
    let window_start = begin + warmup;
    let window_end = window_start + measure;
    let mut measuring = false;
    let mut stopping = false;
    let mut outstanding = appenders;
    let (mut cpu_start, mut commits_start, mut writer_cpu_start) = (0.0, 0, Duration::ZERO);
    let mut report = LoadReport {
        acked: 0,
        failed: 0,
        seconds: measure.as_secs_f64(),
        cpu_seconds: 0.0,
        writer_cpu_seconds: 0.0,
        batches: 0,
        latencies_ns: Vec::new(),
    };
    let mut outcomes = Vec::new();
    while outstanding > 0 {
        wait_readable(sink.fd(), Duration::from_millis(50))?;
        outcomes.clear();
        sink.drain(&mut outcomes);
        let now = Instant::now();
        if !measuring && !stopping && now >= window_start {
            measuring = true;
            cpu_start = process_cpu_seconds();
            commits_start = journal.commits();
            writer_cpu_start = journal.writer_cpu();
        }
        if measuring && now >= window_end {
            measuring = false;
            stopping = true;
            report.cpu_seconds = process_cpu_seconds() - cpu_start;
            report.batches = journal.commits() - commits_start;
            report.writer_cpu_seconds = journal
                .writer_cpu()
                .saturating_sub(writer_cpu_start)
                .as_secs_f64();
            report.seconds = (now - window_start).as_secs_f64();
        }
        for outcome in outcomes.drain(..) {
            let appender = outcome.token as usize;
            if measuring {
                match outcome.result {
                    Ok(_) => {
                        report.acked += 1;
                        report
                            .latencies_ns
                            .push((now - started[appender]).as_nanos() as u64);
                    }
                    Err(_) => report.failed += 1,
                }
            }
            if stopping {
                outstanding -= 1;
            } else {
                submit(appender, &mut sent, &mut started)?;
            }
        }
    }
    report.latencies_ns.sort_unstable();
    Ok(report)
}

fn wait_readable(fd: std::os::fd::RawFd, timeout: Duration) -> io::Result<()> {
    let mut pollfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
    // SAFETY: one valid pollfd for the duration of the call.
    let ready = unsafe { libc::poll(&mut pollfd, 1, millis) };
    if ready < 0 {
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    Ok(())
}

fn process_cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF counts every thread.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let seconds = |time: libc::timeval| time.tv_sec as f64 + time.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
