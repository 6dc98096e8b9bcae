//! Where results wait for an event loop: a list plus an eventfd that becomes readable when the list
//! becomes non-empty. A producer thread publishes once per batch; a loop watching the fd (e.g.
//! `loop.add_reader`) wakes once per batch at most, however many items the batch held. The journal's
//! completions and the mood thread's alerts are both one of these.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, PoisonError};

#[derive(Debug)]
pub struct SignalledList<T> {
    event: OwnedFd,
    items: Mutex<Vec<T>>,
}

impl<T> SignalledList<T> {
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new fd we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            // SAFETY: `fd` was just created and is owned by nobody else.
            event: unsafe { OwnedFd::from_raw_fd(fd) },
            items: Mutex::new(Vec::new()),
        })
    }

    /// The eventfd: readable while items may be waiting. Owned by this object.
    pub fn fd(&self) -> RawFd {
        self.event.as_raw_fd()
    }

    /// Moves every waiting item into `out` (appending, oldest first) and re-arms the fd.
    pub fn drain(&self, out: &mut Vec<T>) {
        // Reset the counter before taking the list: an item published after the take finds the
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
        let mut items = self.items.lock().unwrap_or_else(PoisonError::into_inner);
        if out.is_empty() {
            std::mem::swap(out, &mut items);
        } else {
            out.append(&mut items);
        }
    }

    /// Appends a batch; signals the fd only when the list goes from empty to non-empty.
    pub fn publish(&self, batch: impl IntoIterator<Item = T>) {
        let mut items = self.items.lock().unwrap_or_else(PoisonError::into_inner);
        let was_empty = items.is_empty();
        items.extend(batch);
        let signal = was_empty && !items.is_empty();
        drop(items);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(fd: RawFd) -> bool {
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&mut poll, 1, 0) == 1 }
    }

    #[test]
    fn the_fd_is_readable_exactly_while_a_published_batch_waits() {
        let list = SignalledList::new().unwrap();
        assert!(!readable(list.fd()));
        list.publish([1, 2]);
        list.publish([3]);
        list.publish(std::iter::empty());
        assert!(readable(list.fd()));
        let mut out = vec![0];
        list.drain(&mut out);
        assert_eq!(out, vec![0, 1, 2, 3]);
        assert!(!readable(list.fd()));
        list.publish(std::iter::empty());
        assert!(!readable(list.fd()), "an empty batch does not wake anyone");
    }
}
