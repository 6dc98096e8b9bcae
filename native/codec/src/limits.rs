//! Decoder and encoder limits: one value shared by both directions so that whatever the encoder emits
//! under some limits, the decoder accepts under the same limits.

use crate::header::HEADER_SIZE;

/// Hard ceiling for `max_depth`: decoding and encoding recurse once per container level, so the
/// depth must stay small enough that no configuration can exhaust the stack (the anchor asks ≤ 32).
pub const MAX_DEPTH_CEILING: usize = 32;

/// Bounds applied to every frame. Defaults match docs/protocol.md and OWASP's 64 KiB suggestion for chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameLimits {
    /// Largest whole frame (24-byte header included) in bytes; larger is `too_large`.
    pub max_frame_size: usize,
    /// Deepest container nesting; the body map itself is depth 1.
    pub max_depth: usize,
    /// Most items in one array, or entries in one map (the body map included).
    pub max_container_len: usize,
    /// Longest str or bin payload in bytes (map keys included).
    pub max_str_len: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_frame_size: 65536,
            max_depth: 8,
            max_container_len: 1024,
            max_str_len: 65536,
        }
    }
}

impl FrameLimits {
    /// Validated constructor.
    ///
    /// `max_frame_size` must hold at least a header and at most a header plus a `u32` body (the
    /// header's length field); `max_depth` must be in `1..=MAX_DEPTH_CEILING`.
    pub fn new(
        max_frame_size: usize,
        max_depth: usize,
        max_container_len: usize,
        max_str_len: usize,
    ) -> Result<Self, String> {
        let largest_frame = HEADER_SIZE as u64 + u64::from(u32::MAX);
        if max_frame_size < HEADER_SIZE || max_frame_size as u64 > largest_frame {
            return Err(format!(
                "max_frame_size must be in {HEADER_SIZE}..={largest_frame}, got {max_frame_size}"
            ));
        }
        if !(1..=MAX_DEPTH_CEILING).contains(&max_depth) {
            return Err(format!(
                "max_depth must be in 1..={MAX_DEPTH_CEILING}, got {max_depth}"
            ));
        }
        Ok(FrameLimits {
            max_frame_size,
            max_depth,
            max_container_len,
            max_str_len,
        })
    }
}
