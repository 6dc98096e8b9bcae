//! Sleeping and waking on a 32-bit word in shared memory (Linux futex, process-shared: no
//! FUTEX_PRIVATE_FLAG, because producers and the consumer are different processes).

use std::time::Duration;

use crate::sync::AtomicU32;

/// Wakes one sleeper on `word`.
#[cfg(not(loom))]
pub(crate) fn wake(word: &AtomicU32) {
    // SAFETY: a valid, aligned u32 address; FUTEX_WAKE only reads it.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1, std::ptr::null::<libc::timespec>());
    }
}

/// Sleeps while `word` still holds `expected`, at most `timeout`. Returns early on a wake-up, a
/// signal, or when the word already changed.
#[cfg(not(loom))]
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: a valid, aligned u32 address and a valid relative timeout.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, &timeout as *const libc::timespec);
    }
}

#[cfg(loom)]
pub(crate) fn wake(_word: &AtomicU32) {}

#[cfg(loom)]
pub(crate) fn wait(_word: &AtomicU32, _expected: u32, _timeout: Duration) {
    loom::thread::yield_now();
}
