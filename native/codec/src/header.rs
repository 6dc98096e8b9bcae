//! The fixed 24-byte little-endian frame header and the frame type table.

use crate::error::FrameError;
use crate::limits::FrameLimits;

/// Size of the fixed header in bytes.
pub const HEADER_SIZE: usize = 24;
/// The only protocol version this codec speaks.
pub const VERSION: u8 = 1;
/// Flags bit 0: the frame has no body (and `body_len` is 0). Every other bit is reserved and must be 0.
pub const FLAG_EMPTY_BODY: u16 = 1;

macro_rules! frame_types {
    ($($variant:ident = $code:literal, $name:literal;)*) => {
        /// The frame types of `kefu.bin.v1` (docs/protocol.md, "Binary framing").
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum FrameType { $(#[doc = $name] $variant = $code,)* }

        impl FrameType {
            /// Every type, in code order.
            pub const ALL: &'static [FrameType] = &[$(FrameType::$variant,)*];

            /// The type with this header code, if any.
            pub const fn from_code(code: u8) -> Option<FrameType> {
                match code { $($code => Some(FrameType::$variant),)* _ => None }
            }

            /// The type with this name (the `"t"` value of a Python frame), if any.
            pub fn from_name(name: &str) -> Option<FrameType> {
                match name { $($name => Some(FrameType::$variant),)* _ => None }
            }

            /// The name used as `"t"` in Python frames and JSON.
            pub const fn name(self) -> &'static str {
                match self { $(FrameType::$variant => $name,)* }
            }
        }
    };
}

frame_types! {
    Hello = 1, "hello";
    Welcome = 2, "welcome";
    Open = 3, "open";
    Send = 4, "send";
    Ack = 5, "ack";
    Msg = 6, "msg";
    Replayed = 7, "replayed";
    Conv = 8, "conv";
    Typing = 9, "typing";
    Read = 10, "read";
    Accept = 11, "accept";
    Transfer = 12, "transfer";
    Close = 13, "close";
    Error = 14, "error";
    Ping = 15, "ping";
    Pong = 16, "pong";
}

impl FrameType {
    /// The code written in header byte 1.
    pub const fn code(self) -> u8 {
        self as u8
    }
}

/// A validated header: every field has been checked against the buffer it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Header byte 1.
    pub frame_type: FrameType,
    /// Length of the msgpack body that follows the header; 0 exactly when the body is empty.
    pub body_len: u32,
    /// Conversation id, 0 when none.
    pub conv: u64,
    /// Sequence number, 0 when none.
    pub seq: u64,
}

impl Header {
    /// The 24 header bytes (flags derived from `body_len`).
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let flags = if self.body_len == 0 {
            FLAG_EMPTY_BODY
        } else {
            0
        };
        let mut bytes = [0u8; HEADER_SIZE];
        bytes[0] = VERSION;
        bytes[1] = self.frame_type.code();
        bytes[2..4].copy_from_slice(&flags.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.body_len.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.conv.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.seq.to_le_bytes());
        bytes
    }
}

/// Validate the header of a whole frame against the frame's actual length and `limits`.
///
/// The order of the checks is part of the contract (the Python twin follows it so both report the same
/// code): (1) buffer longer than `max_frame_size` → `too_large`; (2) buffer shorter than the header;
/// (3) version ≠ 1 (nothing else in an unknown version can be interpreted); (4) header-declared size
/// `24 + body_len` over `max_frame_size` → `too_large`, decided before the body is looked at;
/// (5) unknown type; (6) reserved flag bits; (7) empty-body flag disagreeing with `body_len == 0`;
/// (8) `body_len` different from the bytes actually present. All but (1) and (4) are `bad_frame`.
pub fn parse_header(frame: &[u8], limits: &FrameLimits) -> Result<Header, FrameError> {
    if frame.len() > limits.max_frame_size {
        return Err(FrameError::too_large(format!(
            "frame is {} bytes, limit is {}",
            frame.len(),
            limits.max_frame_size
        )));
    }
    let Some(header) = frame.first_chunk::<HEADER_SIZE>() else {
        return Err(FrameError::bad_frame(format!(
            "truncated header: {} of {HEADER_SIZE} bytes",
            frame.len()
        )));
    };
    let version = header[0];
    if version != VERSION {
        return Err(FrameError::bad_frame(format!(
            "unsupported version {version}"
        )));
    }
    let flags = u16::from_le_bytes([header[2], header[3]]);
    let body_len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let declared_size = HEADER_SIZE as u64 + u64::from(body_len);
    if declared_size > limits.max_frame_size as u64 {
        return Err(FrameError::too_large(format!(
            "header declares a {declared_size}-byte frame, limit is {}",
            limits.max_frame_size
        )));
    }
    let Some(frame_type) = FrameType::from_code(header[1]) else {
        return Err(FrameError::bad_frame(format!(
            "unknown frame type {}",
            header[1]
        )));
    };
    if flags & !FLAG_EMPTY_BODY != 0 {
        return Err(FrameError::bad_frame(format!(
            "reserved flag bits set: {flags:#06x}"
        )));
    }
    if (flags & FLAG_EMPTY_BODY != 0) != (body_len == 0) {
        return Err(FrameError::bad_frame(
            "empty-body flag disagrees with body length",
        ));
    }
    if declared_size != frame.len() as u64 {
        return Err(FrameError::bad_frame(format!(
            "header declares a {body_len}-byte body, {} bytes follow",
            frame.len() - HEADER_SIZE
        )));
    }
    Ok(Header {
        frame_type,
        body_len,
        conv: le_u64(header, 8),
        seq: le_u64(header, 16),
    })
}

fn le_u64(header: &[u8; HEADER_SIZE], at: usize) -> u64 {
    let mut field = [0u8; 8];
    field.copy_from_slice(&header[at..at + 8]);
    u64::from_le_bytes(field)
}
