//! A borrowed value tree for Rust callers (tests, fuzzing, tools): [`decode`] and [`encode`].
//! The Python binding does not use it; it drives the same decoder with its own visitor.

use std::collections::HashSet;

use crate::decode::{decode_frame, Visitor};
use crate::encode::FrameEncoder;
use crate::error::FrameError;
use crate::header::{FrameType, Header};
use crate::limits::FrameLimits;

/// One value of the codec's model; strings and bytes borrow from the decoded buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// msgpack nil.
    Nil,
    /// msgpack bool.
    Bool(bool),
    /// An integer in `i64` range.
    Int(i64),
    /// An integer above `i64::MAX` (the decoder never produces `UInt` for smaller values).
    UInt(u64),
    /// A finite float.
    Float(f64),
    /// A UTF-8 string.
    Str(&'a str),
    /// A byte string.
    Bin(&'a [u8]),
    /// An array.
    Array(Vec<Value<'a>>),
    /// A map with unique string keys, in wire order.
    Map(Vec<(&'a str, Value<'a>)>),
}

/// A decoded frame: header fields plus the body entries in wire order.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame<'a> {
    /// Header byte 1.
    pub frame_type: FrameType,
    /// Conversation id, 0 when none.
    pub conv: u64,
    /// Sequence number, 0 when none.
    pub seq: u64,
    /// Body entries (never a reserved key, never a duplicate).
    pub fields: Vec<(&'a str, Value<'a>)>,
}

/// Decode a whole frame into a [`Frame`] borrowing from `bytes`.
pub fn decode<'a>(bytes: &'a [u8], limits: &FrameLimits) -> Result<Frame<'a>, FrameError> {
    let (header, map) = decode_frame(bytes, limits, &mut ValueBuilder)?;
    Ok(Frame {
        frame_type: header.frame_type,
        conv: header.conv,
        seq: header.seq,
        fields: map.entries,
    })
}

/// Encode a [`Frame`]; fails with the same errors the decoder would raise on the result.
pub fn encode(frame: &Frame<'_>, limits: &FrameLimits) -> Result<Vec<u8>, FrameError> {
    let mut encoder = FrameEncoder::new(
        frame.frame_type,
        frame.conv,
        frame.seq,
        frame.fields.len(),
        limits,
    )?;
    let mut seen = HashSet::with_capacity(frame.fields.len());
    for (key, value) in &frame.fields {
        if crate::decode::RESERVED_KEYS.contains(key) || !seen.insert(*key) {
            return Err(FrameError::bad_frame(format!(
                "body key {key:?} is reserved or repeated"
            )));
        }
        encoder.str(key)?;
        encode_value(&mut encoder, value, 2)?;
    }
    Ok(encoder.finish())
}

fn encode_value(
    encoder: &mut FrameEncoder<'_>,
    value: &Value<'_>,
    depth: usize,
) -> Result<(), FrameError> {
    match value {
        Value::Nil => encoder.nil(),
        Value::Bool(flag) => encoder.bool(*flag),
        Value::Int(number) => encoder.i64(*number),
        Value::UInt(number) => encoder.u64(*number),
        Value::Float(number) => encoder.f64(*number),
        Value::Str(text) => encoder.str(text),
        Value::Bin(bytes) => encoder.bin(bytes),
        Value::Array(items) => {
            encoder.array_header(items.len(), depth)?;
            items
                .iter()
                .try_for_each(|item| encode_value(encoder, item, depth + 1))
        }
        Value::Map(entries) => {
            encoder.map_header(entries.len(), depth)?;
            let mut seen = HashSet::with_capacity(entries.len());
            for (key, item) in entries {
                if !seen.insert(*key) {
                    return Err(FrameError::bad_frame(format!("duplicate key {key:?}")));
                }
                encoder.str(key)?;
                encode_value(encoder, item, depth + 1)?;
            }
            Ok(())
        }
    }
}

/// Map under construction: entries in order, plus a key set once the map is big enough that a
/// linear duplicate scan could be made quadratic by a hostile peer.
pub struct MapBuilder<'a> {
    entries: Vec<(&'a str, Value<'a>)>,
    keys: Option<HashSet<&'a str>>,
}

/// Below this many entries a linear scan beats hashing.
const LINEAR_SCAN_MAX: usize = 8;

/// The [`Visitor`] that builds [`Value`]s.
pub struct ValueBuilder;

impl<'de> Visitor<'de> for ValueBuilder {
    type Value = Value<'de>;
    type Array = Vec<Value<'de>>;
    type Map = MapBuilder<'de>;
    type Error = FrameError;

    fn visit_nil(&mut self) -> Result<Value<'de>, FrameError> {
        Ok(Value::Nil)
    }
    fn visit_bool(&mut self, value: bool) -> Result<Value<'de>, FrameError> {
        Ok(Value::Bool(value))
    }
    fn visit_i64(&mut self, value: i64) -> Result<Value<'de>, FrameError> {
        Ok(Value::Int(value))
    }
    fn visit_u64(&mut self, value: u64) -> Result<Value<'de>, FrameError> {
        Ok(Value::UInt(value))
    }
    fn visit_f64(&mut self, value: f64) -> Result<Value<'de>, FrameError> {
        Ok(Value::Float(value))
    }
    fn visit_str(&mut self, value: &'de str) -> Result<Value<'de>, FrameError> {
        Ok(Value::Str(value))
    }
    fn visit_bin(&mut self, value: &'de [u8]) -> Result<Value<'de>, FrameError> {
        Ok(Value::Bin(value))
    }
    fn array_start(&mut self, len: usize) -> Result<Vec<Value<'de>>, FrameError> {
        Ok(Vec::with_capacity(len))
    }
    fn array_push(
        &mut self,
        array: &mut Vec<Value<'de>>,
        item: Value<'de>,
    ) -> Result<(), FrameError> {
        array.push(item);
        Ok(())
    }
    fn array_end(&mut self, array: Vec<Value<'de>>) -> Result<Value<'de>, FrameError> {
        Ok(Value::Array(array))
    }
    fn map_start(&mut self, len: usize) -> Result<MapBuilder<'de>, FrameError> {
        let keys = (len > LINEAR_SCAN_MAX).then(|| HashSet::with_capacity(len));
        Ok(MapBuilder {
            entries: Vec::with_capacity(len),
            keys,
        })
    }
    fn map_insert(
        &mut self,
        map: &mut MapBuilder<'de>,
        key: &'de str,
        value: Value<'de>,
    ) -> Result<bool, FrameError> {
        let is_new = match &mut map.keys {
            Some(keys) => keys.insert(key),
            None => map.entries.iter().all(|(existing, _)| *existing != key),
        };
        map.entries.push((key, value));
        Ok(is_new)
    }
    fn map_end(&mut self, map: MapBuilder<'de>) -> Result<Value<'de>, FrameError> {
        Ok(Value::Map(map.entries))
    }
    fn frame_start(&mut self, _header: &Header, len: usize) -> Result<MapBuilder<'de>, FrameError> {
        self.map_start(len)
    }
}
