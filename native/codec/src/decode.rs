//! The bounded msgpack-subset body decoder, driven by a [`Visitor`].
//!
//! Why a visitor rather than a `Value` tree: the hot caller (the PyO3 binding) wants Python objects,
//! and building a tree first would cost one allocation per container plus a second walk for every
//! frame. With a visitor the same validated parse builds `dict`/`list`/`str` directly, while Rust
//! callers (tests, fuzzing) use [`crate::value::ValueBuilder`] to get a borrowed [`crate::Value`].
//! All policy (limits, value model, duplicate keys, reserved keys) lives here, so every visitor
//! inherits it; a visitor only constructs values and reports whether a map key was new.

use crate::error::FrameError;
use crate::header::{parse_header, Header, HEADER_SIZE};
use crate::limits::FrameLimits;

/// Body keys that belong in the header (or in the frame type) and are therefore refused in a body.
pub const RESERVED_KEYS: [&str; 3] = ["t", "conv", "seq"];

/// Builds values while the decoder walks a body. Lengths passed to `*_start` are already checked
/// against the limits and the remaining input, so preallocating them is safe.
pub trait Visitor<'de> {
    /// A decoded value.
    type Value;
    /// An array under construction.
    type Array;
    /// A map under construction.
    type Map;
    /// The visitor's error; codec errors convert into it.
    type Error: From<FrameError>;

    /// msgpack nil.
    fn visit_nil(&mut self) -> Result<Self::Value, Self::Error>;
    /// msgpack bool.
    fn visit_bool(&mut self, value: bool) -> Result<Self::Value, Self::Error>;
    /// Any integer in `i64` range (whatever its wire width).
    fn visit_i64(&mut self, value: i64) -> Result<Self::Value, Self::Error>;
    /// An integer above `i64::MAX`.
    fn visit_u64(&mut self, value: u64) -> Result<Self::Value, Self::Error>;
    /// A finite float (float32 on the wire is widened).
    fn visit_f64(&mut self, value: f64) -> Result<Self::Value, Self::Error>;
    /// A valid UTF-8 string borrowed from the input.
    fn visit_str(&mut self, value: &'de str) -> Result<Self::Value, Self::Error>;
    /// A byte string borrowed from the input.
    fn visit_bin(&mut self, value: &'de [u8]) -> Result<Self::Value, Self::Error>;
    /// Begin an array of exactly `len` items.
    fn array_start(&mut self, len: usize) -> Result<Self::Array, Self::Error>;
    /// Append the next item.
    fn array_push(&mut self, array: &mut Self::Array, item: Self::Value)
        -> Result<(), Self::Error>;
    /// Finish an array.
    fn array_end(&mut self, array: Self::Array) -> Result<Self::Value, Self::Error>;
    /// Begin a nested map of exactly `len` entries.
    fn map_start(&mut self, len: usize) -> Result<Self::Map, Self::Error>;
    /// Insert an entry; return `false` if `key` was already present (the decoder then fails with
    /// `bad_frame`, so what happens to the map afterwards does not matter).
    fn map_insert(
        &mut self,
        map: &mut Self::Map,
        key: &'de str,
        value: Self::Value,
    ) -> Result<bool, Self::Error>;
    /// Finish a nested map.
    fn map_end(&mut self, map: Self::Map) -> Result<Self::Value, Self::Error>;
    /// Begin the body map of a frame whose header is `header`, with `len` entries (0 for an empty
    /// body). The map is returned as is from [`decode_frame`], so the visitor may seed it with
    /// header-derived entries (type, conv, seq): the reserved-key check guarantees no body entry
    /// collides with them.
    fn frame_start(&mut self, header: &Header, len: usize) -> Result<Self::Map, Self::Error>;
}

/// Decode one whole frame (header and body) with `visitor`; returns the header and the body map.
///
/// Header checks are described in [`parse_header`]. Then the body, when present, must be exactly one
/// msgpack map with string keys consuming all `body_len` bytes, none of them a [`RESERVED_KEYS`] entry,
/// within `limits`; every violation is `bad_frame`.
pub fn decode_frame<'de, V: Visitor<'de>>(
    frame: &'de [u8],
    limits: &FrameLimits,
    visitor: &mut V,
) -> Result<(Header, V::Map), V::Error> {
    let header = parse_header(frame, limits)?;
    let mut reader = Reader {
        input: &frame[HEADER_SIZE..],
        limits,
    };
    if reader.input.is_empty() {
        let map = visitor.frame_start(&header, 0)?;
        return Ok((header, map));
    }
    let marker = reader.byte()?;
    let len = match marker {
        0x80..=0x8f => usize::from(marker & 0x0f),
        0xde => reader.length(2)?,
        0xdf => reader.length(4)?,
        _ => {
            return Err(FrameError::bad_frame(format!(
                "body must be a map, found marker {marker:#04x}"
            ))
            .into())
        }
    };
    reader.check_map_len(len)?;
    let mut map = visitor.frame_start(&header, len)?;
    for _ in 0..len {
        let key = reader.key()?;
        if RESERVED_KEYS.contains(&key) {
            return Err(
                FrameError::bad_frame(format!("body key {key:?} belongs in the header")).into(),
            );
        }
        let value = reader.value(2, visitor)?;
        if !visitor.map_insert(&mut map, key, value)? {
            return Err(FrameError::bad_frame(format!("duplicate key {key:?}")).into());
        }
    }
    if !reader.input.is_empty() {
        return Err(FrameError::bad_frame(format!(
            "{} trailing bytes after the body map",
            reader.input.len()
        ))
        .into());
    }
    Ok((header, map))
}

/// A cursor over the unread part of the body.
struct Reader<'de, 'l> {
    input: &'de [u8],
    limits: &'l FrameLimits,
}

fn truncated() -> FrameError {
    FrameError::bad_frame("truncated body")
}

impl<'de> Reader<'de, '_> {
    fn take(&mut self, len: usize) -> Result<&'de [u8], FrameError> {
        if len > self.input.len() {
            return Err(truncated());
        }
        let (taken, rest) = self.input.split_at(len);
        self.input = rest;
        Ok(taken)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], FrameError> {
        let Some((taken, rest)) = self.input.split_first_chunk::<N>() else {
            return Err(truncated());
        };
        self.input = rest;
        Ok(*taken)
    }

    fn byte(&mut self) -> Result<u8, FrameError> {
        self.take_array::<1>().map(|[byte]| byte)
    }

    /// A big-endian length field of `width` bytes (1, 2 or 4).
    fn length(&mut self, width: usize) -> Result<usize, FrameError> {
        Ok(match width {
            1 => usize::from(self.byte()?),
            2 => usize::from(u16::from_be_bytes(self.take_array()?)),
            _ => u32::from_be_bytes(self.take_array()?) as usize,
        })
    }

    /// Every item takes at least one byte, so a declared count above the remaining input is a lie:
    /// refuse it before anyone allocates for it.
    fn check_array_len(&self, len: usize) -> Result<(), FrameError> {
        if len > self.limits.max_container_len {
            return Err(FrameError::bad_frame(format!(
                "array of {len} items, limit is {}",
                self.limits.max_container_len
            )));
        }
        if len > self.input.len() {
            return Err(FrameError::bad_frame(format!(
                "array declares {len} items, {} bytes remain",
                self.input.len()
            )));
        }
        Ok(())
    }

    /// Like [`Self::check_array_len`], with two bytes at least per entry.
    fn check_map_len(&self, len: usize) -> Result<(), FrameError> {
        if len > self.limits.max_container_len {
            return Err(FrameError::bad_frame(format!(
                "map of {len} entries, limit is {}",
                self.limits.max_container_len
            )));
        }
        if len > self.input.len() / 2 {
            return Err(FrameError::bad_frame(format!(
                "map declares {len} entries, {} bytes remain",
                self.input.len()
            )));
        }
        Ok(())
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

    fn str_of_len(&mut self, len: usize) -> Result<&'de str, FrameError> {
        self.check_payload_len(len, "str")?;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| FrameError::bad_frame("str is not valid UTF-8"))
    }

    fn key(&mut self) -> Result<&'de str, FrameError> {
        let marker = self.byte()?;
        let len = match marker {
            0xa0..=0xbf => usize::from(marker & 0x1f),
            0xd9 => self.length(1)?,
            0xda => self.length(2)?,
            0xdb => self.length(4)?,
            _ => {
                return Err(FrameError::bad_frame(format!(
                    "map key must be a str, found marker {marker:#04x}"
                )))
            }
        };
        self.str_of_len(len)
    }

    fn finite(value: f64) -> Result<f64, FrameError> {
        if value.is_finite() {
            Ok(value)
        } else {
            Err(FrameError::bad_frame("float is NaN or infinite"))
        }
    }

    /// One value whose containers would sit at nesting `depth` (the body map is depth 1).
    fn value<V: Visitor<'de>>(
        &mut self,
        depth: usize,
        visitor: &mut V,
    ) -> Result<V::Value, V::Error> {
        let marker = self.byte()?;
        match marker {
            0x00..=0x7f => visitor.visit_i64(i64::from(marker)),
            0x80..=0x8f => self.map(usize::from(marker & 0x0f), depth, visitor),
            0x90..=0x9f => self.array(usize::from(marker & 0x0f), depth, visitor),
            0xa0..=0xbf => {
                let text = self.str_of_len(usize::from(marker & 0x1f))?;
                visitor.visit_str(text)
            }
            0xc0 => visitor.visit_nil(),
            0xc2 => visitor.visit_bool(false),
            0xc3 => visitor.visit_bool(true),
            0xc4..=0xc6 => {
                let len = self.length(1 << (marker - 0xc4))?;
                self.check_payload_len(len, "bin")?;
                let bytes = self.take(len)?;
                visitor.visit_bin(bytes)
            }
            0xca => {
                let value = f64::from(f32::from_be_bytes(self.take_array()?));
                visitor.visit_f64(Self::finite(value)?)
            }
            0xcb => {
                let value = f64::from_be_bytes(self.take_array()?);
                visitor.visit_f64(Self::finite(value)?)
            }
            0xcc => visitor.visit_i64(i64::from(self.byte()?)),
            0xcd => visitor.visit_i64(i64::from(u16::from_be_bytes(self.take_array()?))),
            0xce => visitor.visit_i64(i64::from(u32::from_be_bytes(self.take_array()?))),
            0xcf => {
                let value = u64::from_be_bytes(self.take_array()?);
                match i64::try_from(value) {
                    Ok(small) => visitor.visit_i64(small),
                    Err(_) => visitor.visit_u64(value),
                }
            }
            0xd0 => visitor.visit_i64(i64::from(i8::from_be_bytes(self.take_array()?))),
            0xd1 => visitor.visit_i64(i64::from(i16::from_be_bytes(self.take_array()?))),
            0xd2 => visitor.visit_i64(i64::from(i32::from_be_bytes(self.take_array()?))),
            0xd3 => visitor.visit_i64(i64::from_be_bytes(self.take_array()?)),
            0xd9..=0xdb => {
                let len = self.length(1 << (marker - 0xd9))?;
                let text = self.str_of_len(len)?;
                visitor.visit_str(text)
            }
            0xdc => {
                let len = self.length(2)?;
                self.array(len, depth, visitor)
            }
            0xdd => {
                let len = self.length(4)?;
                self.array(len, depth, visitor)
            }
            0xde => {
                let len = self.length(2)?;
                self.map(len, depth, visitor)
            }
            0xdf => {
                let len = self.length(4)?;
                self.map(len, depth, visitor)
            }
            0xc7..=0xc9 | 0xd4..=0xd8 => {
                Err(FrameError::bad_frame("msgpack ext types are not accepted").into())
            }
            0xc1 => Err(FrameError::bad_frame("marker 0xc1 is never used in msgpack").into()),
            0xe0..=0xff => visitor.visit_i64(i64::from(marker as i8)),
        }
    }

    fn check_depth(&self, depth: usize) -> Result<(), FrameError> {
        if depth > self.limits.max_depth {
            return Err(FrameError::bad_frame(format!(
                "nesting deeper than {}",
                self.limits.max_depth
            )));
        }
        Ok(())
    }

    fn array<V: Visitor<'de>>(
        &mut self,
        len: usize,
        depth: usize,
        visitor: &mut V,
    ) -> Result<V::Value, V::Error> {
        self.check_depth(depth)?;
        self.check_array_len(len)?;
        let mut array = visitor.array_start(len)?;
        for _ in 0..len {
            let item = self.value(depth + 1, visitor)?;
            visitor.array_push(&mut array, item)?;
        }
        visitor.array_end(array)
    }

    fn map<V: Visitor<'de>>(
        &mut self,
        len: usize,
        depth: usize,
        visitor: &mut V,
    ) -> Result<V::Value, V::Error> {
        self.check_depth(depth)?;
        self.check_map_len(len)?;
        let mut map = visitor.map_start(len)?;
        for _ in 0..len {
            let key = self.key()?;
            let value = self.value(depth + 1, visitor)?;
            if !visitor.map_insert(&mut map, key, value)? {
                return Err(FrameError::bad_frame(format!("duplicate key {key:?}")).into());
            }
        }
        visitor.map_end(map)
    }
}
