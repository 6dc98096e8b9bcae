//! Where outcomes wait for their consumer: a list plus an eventfd that becomes readable when the list
//! becomes non-empty. The writer publishes once per batch; an event loop watching the fd wakes once
//! per batch (at most), however many messages the batch held.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, PoisonError};

use crate::Outcome;

/// A consumer's queue of outcomes. Create with [`crate::Journal::new_completions`] (or use the
/// journal's default one) and hand it to [`crate::Journal::submit_to`].
#[derive(Debug)]
pub struct Completions {
    event: OwnedFd,
    outcomes: Mutex<Vec<Outcome>>,
}

impl Completions {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new fd we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            // SAFETY: `fd` was just created and is owned by nobody else.
            event: unsafe { OwnedFd::from_raw_fd(fd) },
            outcomes: Mutex::new(Vec::new()),
        })
    }

    /// The eventfd: readable while outcomes may be waiting. Register it with the event loop (e.g.
    /// `loop.add_reader`) and call [`drain`](Self::drain) when it fires. Owned by this object.
    pub fn fd(&self) -> RawFd {
        self.event.as_raw_fd()
    }

    /// Moves every waiting outcome into `out` (appending, oldest first) and re-arms the fd.
    pub fn drain(&self, out: &mut Vec<Outcome>) {
        // Reset the counter before taking the list: an outcome published after the take finds the
        // list empty and signals again, so none can sit unnoticed.
        let mut counter = 0u64;
        // SAFETY: reads 8 bytes into a live u64; EAGAIN (nothing signalled) is fine and ignored.
        unsafe {
            libc::read(
                self.fd(),
                (&mut counter as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        let mut outcomes = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner);
        if out.is_empty() {
            std::mem::swap(out, &mut outcomes);
        } else {
            out.append(&mut outcomes);
        }
    }

    /// Appends a batch's outcomes; signals the fd only when the list goes from empty to non-empty.
    pub(crate) fn publish(&self, batch: impl IntoIterator<Item = Outcome>) {
        let mut outcomes = self.outcomes.lock().unwrap_or_else(PoisonError::into_inner);
        let was_empty = outcomes.is_empty();
        outcomes.extend(batch);
        let signal = was_empty && !outcomes.is_empty();
        drop(outcomes);
        if signal {
            let one = 1u64;
            // SAFETY: writes 8 bytes from a live u64. It cannot block (EFD_NONBLOCK) and cannot fail
            // short of the counter overflowing, which one increment per drain never reaches.
            unsafe {
                libc::write(
                    self.fd(),
                    (&one as *const u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
        }
    }
}
