//! The consumer's loop pieces: take records, sleep on the futex when there are none, and get past a
//! claim whose producer died before committing it.

use std::time::{Duration, Instant};

use crate::ring::{Head, Ring};

/// How long an uncommitted claim at the head may sit before the consumer checks whether its producer
/// still lives. A live producer holds a claim for one memcpy; this is four orders of magnitude more.
pub const STALL_CHECK_AFTER: Duration = Duration::from_millis(200);

/// Per-consumer state for crash recovery: where the head got stuck and since when.
#[derive(Debug, Default)]
pub struct StallWatch {
    stuck_at: Option<(u64, Instant)>,
}

/// Whether process `pid` exists (signal 0 probes without sending).
pub fn process_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks existence and permission.
    let result = unsafe { libc::kill(pid as libc::pid_t, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

impl StallWatch {
    /// Appends up to `max` records to `out` (each preceded by nothing: `lengths` gets each record's
    /// byte count). Releases an abandoned claim at the head when its producer is dead (or, having
    /// died between claiming and recording its pid, left none) for longer than `STALL_CHECK_AFTER`.
    pub fn drain(&mut self, ring: &Ring, out: &mut Vec<u8>, lengths: &mut Vec<usize>, max: usize) -> usize {
        let mut taken = 0;
        while taken < max {
            let before = out.len();
            if ring.pop_into(out) {
                lengths.push(out.len() - before);
                taken += 1;
                self.stuck_at = None;
                continue;
            }
            match ring.peek() {
                Head::InFlight { position, owner } => {
                    let now = Instant::now();
                    match self.stuck_at {
                        Some((at, since)) if at == position => {
                            if now.duration_since(since) >= STALL_CHECK_AFTER
                                && !process_alive(owner)
                                && ring.skip_abandoned(position)
                            {
                                self.stuck_at = None;
                                continue;
                            }
                        }
                        _ => self.stuck_at = Some((position, now)),
                    }
                }
                Head::Ready => continue,
                Head::Empty => self.stuck_at = None,
            }
            break;
        }
        taken
    }

    /// How long the next sleep may last: `timeout`, shortened while a claim is stuck at the head so
    /// the recovery check in `drain` runs.
    pub fn sleep_budget(&self, timeout: Duration) -> Duration {
        if self.stuck_at.is_some() { timeout.min(STALL_CHECK_AFTER / 2) } else { timeout }
    }

    /// Sleeps until a producer commits, at most `sleep_budget(timeout)`. Returns at once when a
    /// record is already there.
    pub fn wait(&self, ring: &Ring, timeout: Duration) {
        wait_for_record(ring, self.sleep_budget(timeout));
    }
}

/// Sleeps on the ring's futex until a producer commits, at most `timeout`; returns at once when a
/// record is already there. Consumer only.
pub fn wait_for_record(ring: &Ring, timeout: Duration) {
    if let Some(seen) = ring.prepare_sleep() {
        crate::futex::wait(ring.wake_word(), seen, timeout);
        ring.end_sleep();
    }
}
