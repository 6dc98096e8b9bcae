//! `kefu-codec`: the `kefu.bin.v1` frame codec (docs/protocol.md, "Binary framing"), pure Rust, no Python.
//!
//! A frame is a 24-byte little-endian header (`u8 version = 1, u8 type, u16 flags, u32 body_len,
//! u64 conv, u64 seq`) followed, unless flags bit 0 says the body is empty, by exactly one msgpack map
//! of exactly `body_len` bytes. Every input is hostile:
//!
//! - the value model is a strict msgpack subset: nil, bool, int (i64 or u64 range), finite float, valid
//!   UTF-8 str, bin, array, and maps with unique str keys; ext types, NaN/±Inf, non-str keys and
//!   duplicate keys are `bad_frame` (NaN/Inf are refused so the JSON and binary protocols carry the
//!   same values);
//! - [`FrameLimits`] bound the whole frame (`too_large`, checked from the header before the body is
//!   read, and from the buffer's length), the nesting depth, container lengths and str/bin lengths;
//! - a declared length is compared with the limits *and* the bytes remaining before anything is
//!   allocated for it (an item takes ≥ 1 byte, a map entry ≥ 2), so `dd ff ff ff ff` fails at once;
//! - recursion is bounded by `max_depth` ≤ [`MAX_DEPTH_CEILING`];
//! - nothing panics on input: every entry point returns `Result<_, FrameError>`.
//!
//! Decisions (shared with the Python twin `kefu.reference.codec`, which the tests hold to identical
//! output):
//!
//! - error precedence is fixed (header checks in the order listed on [`parse_header`], then the body
//!   front to back; the encoder checks each item's type, value model, limits, then room), so two
//!   implementations report the same code for an input with several defects;
//! - the decoder accepts any valid msgpack width (a small int as uint64, float32, str16 for a short
//!   string, a one-byte empty map as a body) and hands values over normalised (`i64` when it fits,
//!   `f64`); the encoder always writes the canonical form, so decode∘encode∘decode is stable even
//!   though encode∘decode is not the identity on bytes;
//! - `max_str_len` bounds str, bin and map keys alike, in bytes; `max_container_len` bounds the body
//!   map too; `max_depth` counts the body map as 1 and is capped at [`MAX_DEPTH_CEILING`];
//! - header `conv`/`seq` of 0 mean "none"; the body may not carry `t`, `conv` or `seq` keys.
//!
//! Decoding is a single pass driven by a [`Visitor`] (see [`decode`](mod@decode) for why), and encoding a
//! push API ([`FrameEncoder`]) producing canonical msgpack. [`value::decode`] / [`value::encode`]
//! are the convenient borrowed-tree versions.

pub mod decode;
pub mod encode;
pub mod error;
pub mod header;
pub mod limits;
pub mod value;

pub use decode::{decode_frame, Visitor, RESERVED_KEYS};
pub use encode::FrameEncoder;
pub use error::{ErrorCode, FrameError};
pub use header::{parse_header, FrameType, Header, FLAG_EMPTY_BODY, HEADER_SIZE, VERSION};
pub use limits::{FrameLimits, MAX_DEPTH_CEILING};
pub use value::{Frame, Value};
