//! The frame encoder: canonical msgpack (smallest encoding of every int, str, bin, array and map
//! length; floats always float64) so output is deterministic and byte-identical across the Rust
//! kernel, the PyO3 binding and the pure-Python twin (and equal to `msgpack.packb(body,
//! use_bin_type=True)` for the same body).
//!
//! The encoder is a push API, not a `Value` walker, so the binding can stream Python objects straight
//! into it. It enforces the decoder's limits on what it writes, which is what makes "whatever encode
//! emits, decode accepts" hold: depth and container length when a container header is written
//! (the caller passes the container's depth: the body map is 1, its direct values 2), `max_str_len` on
//! str/bin/keys, non-finite floats refused, and `max_frame_size` checked before *every* write (so an
//! oversized frame fails early with `too_large` and never buffers far beyond the limit).
//! Check order per item — type, value model, limits, then room — is shared with the Python twin so
//! both report the same error code when several things are wrong.

use crate::error::FrameError;
use crate::header::{FrameType, Header, HEADER_SIZE};
use crate::limits::FrameLimits;

/// The markers of one length-prefixed msgpack family; the 32-bit form is always `marker16 + 1`.
struct LengthFamily {
    /// Base marker and exclusive length bound of the one-byte form (fixstr, fixarray, fixmap).
    fixed: Option<(u8, usize)>,
    /// Marker of the 8-bit-length form (str8, bin8).
    marker8: Option<u8>,
    /// Marker of the 16-bit-length form.
    marker16: u8,
}

const STR: LengthFamily = LengthFamily {
    fixed: Some((0xa0, 32)),
    marker8: Some(0xd9),
    marker16: 0xda,
};
const BIN: LengthFamily = LengthFamily {
    fixed: None,
    marker8: Some(0xc4),
    marker16: 0xc5,
};
const ARRAY: LengthFamily = LengthFamily {
    fixed: Some((0x90, 16)),
    marker8: None,
    marker16: 0xdc,
};
const MAP: LengthFamily = LengthFamily {
    fixed: Some((0x80, 16)),
    marker8: None,
    marker16: 0xde,
};

/// Streams one frame into a buffer; [`FrameEncoder::finish`] fills in the header.
pub struct FrameEncoder<'l> {
    out: Vec<u8>,
    header: Header,
    limits: &'l FrameLimits,
}

impl<'l> FrameEncoder<'l> {
    /// Start a frame whose body map will hold exactly `field_count` entries (0: no body at all).
    /// The caller must then write `field_count` key/value pairs.
    pub fn new(
        frame_type: FrameType,
        conv: u64,
        seq: u64,
        field_count: usize,
        limits: &'l FrameLimits,
    ) -> Result<Self, FrameError> {
        let header = Header {
            frame_type,
            body_len: 0,
            conv,
            seq,
        };
        let mut encoder = FrameEncoder {
            out: Vec::with_capacity(128),
            header,
            limits,
        };
        encoder.out.extend_from_slice(&[0u8; HEADER_SIZE]);
        if field_count > 0 {
            encoder.map_header(field_count, 1)?;
        }
        Ok(encoder)
    }

    /// The whole frame; patches `body_len` and the empty-body flag into the header.
    pub fn finish(mut self) -> Vec<u8> {
        // `room` keeps the frame within `max_frame_size`, which `FrameLimits::new` bounds by 24 + u32::MAX.
        self.header.body_len = u32::try_from(self.out.len() - HEADER_SIZE).unwrap_or(u32::MAX);
        self.out[..HEADER_SIZE].copy_from_slice(&self.header.to_bytes());
        self.out
    }

    fn room(&mut self, len: usize) -> Result<(), FrameError> {
        if self.out.len() + len > self.limits.max_frame_size {
            return Err(FrameError::too_large(format!(
                "encoded frame exceeds {} bytes",
                self.limits.max_frame_size
            )));
        }
        Ok(())
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        self.room(bytes.len())?;
        self.out.extend_from_slice(bytes);
        Ok(())
    }

    /// A length-prefixed item (`payload` is empty for container headers) in the smallest form of
    /// its `family` that holds `len`.
    fn put_length_prefixed(
        &mut self,
        family: &LengthFamily,
        len: usize,
        payload: &[u8],
    ) -> Result<(), FrameError> {
        let mut prefix = [0u8; 5];
        let prefix_len = match (family.fixed, family.marker8) {
            (Some((fix_base, fix_limit)), _) if len < fix_limit => {
                prefix[0] = fix_base | len as u8;
                1
            }
            (_, Some(marker8)) if len <= 0xff => {
                prefix[0] = marker8;
                prefix[1] = len as u8;
                2
            }
            _ if len <= 0xffff => {
                prefix[0] = family.marker16;
                prefix[1..3].copy_from_slice(&(len as u16).to_be_bytes());
                3
            }
            _ => {
                // `room` below refuses anything beyond max_frame_size ≤ 24 + u32::MAX first, so a
                // length that does not fit 32 bits is never written.
                prefix[0] = family.marker16 + 1;
                prefix[1..5].copy_from_slice(&(len as u32).to_be_bytes());
                5
            }
        };
        self.room(prefix_len + payload.len())?;
        self.out.extend_from_slice(&prefix[..prefix_len]);
        self.out.extend_from_slice(payload);
        Ok(())
    }

    /// nil.
    pub fn nil(&mut self) -> Result<(), FrameError> {
        self.put(&[0xc0])
    }

    /// true / false.
    pub fn bool(&mut self, value: bool) -> Result<(), FrameError> {
        self.put(&[if value { 0xc3 } else { 0xc2 }])
    }

    /// A signed integer, smallest encoding (non-negative values use the unsigned forms).
    pub fn i64(&mut self, value: i64) -> Result<(), FrameError> {
        match value {
            0.. => self.u64(value as u64),
            -32..=-1 => self.put(&[value as u8]),
            -128..=-33 => self.put(&[0xd0, value as u8]),
            -32768..=-129 => {
                let [a, b] = (value as i16).to_be_bytes();
                self.put(&[0xd1, a, b])
            }
            -2147483648..=-32769 => {
                let [a, b, c, d] = (value as i32).to_be_bytes();
                self.put(&[0xd2, a, b, c, d])
            }
            _ => {
                let mut bytes = [0xd3u8; 9];
                bytes[1..].copy_from_slice(&value.to_be_bytes());
                self.put(&bytes)
            }
        }
    }

    /// An unsigned integer, smallest encoding.
    pub fn u64(&mut self, value: u64) -> Result<(), FrameError> {
        match value {
            0..=0x7f => self.put(&[value as u8]),
            0x80..=0xff => self.put(&[0xcc, value as u8]),
            0x100..=0xffff => {
                let [a, b] = (value as u16).to_be_bytes();
                self.put(&[0xcd, a, b])
            }
            0x1_0000..=0xffff_ffff => {
                let [a, b, c, d] = (value as u32).to_be_bytes();
                self.put(&[0xce, a, b, c, d])
            }
            _ => {
                let mut bytes = [0xcfu8; 9];
                bytes[1..].copy_from_slice(&value.to_be_bytes());
                self.put(&bytes)
            }
        }
    }

    /// A finite float, always as float64; NaN and ±Inf are `bad_frame` (JSON cannot carry them).
    pub fn f64(&mut self, value: f64) -> Result<(), FrameError> {
        if !value.is_finite() {
            return Err(FrameError::bad_frame("float is NaN or infinite"));
        }
        let mut bytes = [0xcbu8; 9];
        bytes[1..].copy_from_slice(&value.to_be_bytes());
        self.put(&bytes)
    }

    /// A string value or map key.
    pub fn str(&mut self, value: &str) -> Result<(), FrameError> {
        self.check_payload_len(value.len(), "str")?;
        self.put_length_prefixed(&STR, value.len(), value.as_bytes())
    }

    /// A byte string.
    pub fn bin(&mut self, value: &[u8]) -> Result<(), FrameError> {
        self.check_payload_len(value.len(), "bin")?;
        self.put_length_prefixed(&BIN, value.len(), value)
    }

    /// The header of an array of `len` items at nesting `depth`; the caller writes the items next.
    pub fn array_header(&mut self, len: usize, depth: usize) -> Result<(), FrameError> {
        self.check_container(len, depth, "array")?;
        self.put_length_prefixed(&ARRAY, len, &[])
    }

    /// The header of a map of `len` entries at nesting `depth`; the caller writes key/value pairs next.
    pub fn map_header(&mut self, len: usize, depth: usize) -> Result<(), FrameError> {
        self.check_container(len, depth, "map")?;
        self.put_length_prefixed(&MAP, len, &[])
    }

    fn check_payload_len(&self, len: usize, what: &str) -> Result<(), FrameError> {
        if len > self.limits.max_str_len {
            return Err(FrameError::bad_frame(format!(
                "{what} of {len} bytes, limit is {}",
                self.limits.max_str_len
            )));
        }
        Ok(())
    }

    fn check_container(&self, len: usize, depth: usize, what: &str) -> Result<(), FrameError> {
        if depth > self.limits.max_depth {
            return Err(FrameError::bad_frame(format!(
                "nesting deeper than {}",
                self.limits.max_depth
            )));
        }
        if len > self.limits.max_container_len {
            return Err(FrameError::bad_frame(format!(
                "{what} of {len} items, limit is {}",
                self.limits.max_container_len
            )));
        }
        Ok(())
    }
}
