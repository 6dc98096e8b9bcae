//! The one error type of the codec: a stable wire code plus a human-readable message.

use std::fmt;

/// The protocol error code sent back to the peer (`error` frame / close reason).
///
/// Only two codes exist on purpose: the peer learns *that* its frame was refused and whether it was
/// merely too big, never which internal check failed (the message carries that, for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Anything malformed: header, body encoding, value model or limits other than total size.
    BadFrame,
    /// The frame (declared by its header, or actually received) exceeds `max_frame_size`.
    TooLarge,
}

impl ErrorCode {
    /// The code as written in docs/protocol.md (`"bad_frame"`, `"too_large"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::TooLarge => "too_large",
        }
    }
}

/// A refused frame: returned by every decode and encode entry point; the codec never panics on input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// Stable code for the peer.
    pub code: ErrorCode,
    /// What exactly was wrong, for logs and tests; not part of the protocol.
    pub message: String,
}

impl FrameError {
    /// A `bad_frame` error with the given message.
    pub fn bad_frame(message: impl Into<String>) -> Self {
        FrameError {
            code: ErrorCode::BadFrame,
            message: message.into(),
        }
    }

    /// A `too_large` error with the given message.
    pub fn too_large(message: impl Into<String>) -> Self {
        FrameError {
            code: ErrorCode::TooLarge,
            message: message.into(),
        }
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for FrameError {}
