//! No input makes the decoder allocate much: a counting global allocator records the peak of live
//! heap bytes while each attack-corpus case (and a maximal valid frame) is decoded. This is the
//! deterministic form of "never preallocate from a declared length" (a declared 4 G array would
//! show up as gigabytes here, long before any timeout). One test per binary, so no other test's
//! allocations run concurrently and skew the peak.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use kefu_codec::value::{decode, encode};
use kefu_codec::{Frame, FrameLimits, FrameType, Value};

mod common;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak extra heap bytes while running `work`.
fn peak_during(work: impl FnOnce()) -> usize {
    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    work();
    PEAK.load(Ordering::Relaxed) - baseline
}

#[test]
fn decoding_never_allocates_more_than_a_small_multiple_of_the_frame_limit() {
    let limits = FrameLimits::default();
    // 16 × max_frame_size: the anchor's "frame limit × small factor".
    let budget = 16 * limits.max_frame_size;
    for (case, _, bytes) in common::corpus() {
        let peak = peak_during(|| drop(decode(&bytes, &limits)));
        assert!(peak < budget, "{case}: peak {peak} bytes");
    }
    // The most allocation-hungry valid frame: the body map and arrays as wide and deep as allowed.
    let mut value = Value::Nil;
    for _ in 2..limits.max_depth {
        value = Value::Array(vec![value; 7]);
    }
    let wide = Value::Array(vec![Value::Nil; limits.max_container_len]);
    let frame = Frame {
        frame_type: FrameType::Msg,
        conv: 1,
        seq: 1,
        fields: vec![("deep", Value::Array(vec![value])), ("wide", wide)],
    };
    let tight =
        FrameLimits::new(1 << 24, limits.max_depth, limits.max_container_len, 1 << 24).unwrap();
    let bytes = encode(&frame, &tight).unwrap();
    let peak = peak_during(|| drop(decode(&bytes, &tight)));
    assert!(
        peak < 64 * bytes.len().max(limits.max_frame_size),
        "valid frame: peak {peak} bytes"
    );
}
