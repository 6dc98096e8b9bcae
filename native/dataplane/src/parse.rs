//! Typed parsing of the three data-plane frames (`send`, `typing`, `read`) from either wire format.
//!
//! The rules are those of `kefu.realtime.frames` and the hub's handlers, checked in the same order,
//! with one difference in *outcome*: where Python would answer with an error frame, the parser
//! returns [`ClientFrame::Decline`], and the frame goes to the Python control plane, which answers
//! exactly as before. The data plane therefore only has to be right about what it *accepts*: it
//! must never accept a frame Python would refuse, nor read a value differently. Where the two
//! parsers could read the same bytes differently, it declines:
//!
//! - JSON that serde_json refuses but Python's `json.loads` takes (`NaN`, a UTF-16 body, a leading
//!   BOM) or the reverse: declined either way, Python decides;
//! - an integer literal in `meta` outside [-2^63, 2^64) (Python refuses it, serde_json would round
//!   it to a float): declined;
//! - U+0000 in `cmid`, `text` or `meta` (no database stores it; `check_storable_message`): declined.
//!
//! Duplicate keys follow `json.loads`: the last one wins (and keeps the first one's position in
//! `meta`, like a Python dict). Strings without escapes are borrowed from the input, not copied.

use std::borrow::Cow;
use std::fmt;

use kefu_codec::{FrameLimits, FrameType, Value as BinValue};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

/// JSON numbers must stay exact integers (`kefu.realtime.frames.MAX_CONV_ID`).
pub const MAX_CONV_ID: u64 = (1 << 53) - 1;
/// `meta` nests at most this deep, the object itself being level 1.
pub const MAX_META_DEPTH: usize = 4;
/// Keys per `meta` object and items per `meta` list.
pub const MAX_META_KEYS: usize = 32;
/// `meta` as compact JSON, in bytes (`frames.MAX_META_BYTES`).
pub const MAX_META_BYTES: usize = 4096;

/// The per-server limits of `send` (Config.max_text_bytes, Config.max_cmid_len).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest `text`, in bytes of UTF-8.
    pub max_text_bytes: usize,
    /// Longest `cmid`, in characters (Unicode code points, as Python's `len`).
    pub max_cmid_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_text_bytes: 8192,
            max_cmid_len: 64,
        }
    }
}

/// A message's kind (`kefu.realtime.frames.MESSAGE_KINDS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Image,
    File,
}

impl Kind {
    pub fn from_name(name: &str) -> Option<Kind> {
        match name {
            "text" => Some(Kind::Text),
            "image" => Some(Kind::Image),
            "file" => Some(Kind::File),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Image => "image",
            Kind::File => "file",
        }
    }
}

/// A valid `send`: borrowed from the frame where no unescaping was needed.
#[derive(Debug, Clone, PartialEq)]
pub struct SendFrame<'a> {
    pub conv: u64,
    pub cmid: Cow<'a, str>,
    pub text: Cow<'a, str>,
    pub kind: Kind,
    /// A non-empty `meta` object and its compact JSON (what storage keeps and `msg` relays).
    pub meta: Option<(Map<String, Value>, String)>,
}

/// What the data plane makes of one client frame.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame<'a> {
    Send(SendFrame<'a>),
    Typing {
        conv: u64,
        on: bool,
    },
    Read {
        conv: u64,
        seq: u64,
    },
    /// Not a data-plane frame, or one Python would refuse or might read differently.
    Decline,
}

/// One top-level field value, as far as the data plane cares about its type.
#[derive(Debug, Clone, PartialEq)]
enum Field<'a> {
    Int(i64),
    UInt(u64),
    Str(Cow<'a, str>),
    Bool(bool),
    /// Null, a float, an array or an object where a scalar was expected: never valid here.
    Other,
}

/// The fields the data plane reads; absent ones are `None`, unknown ones are skipped.
#[derive(Debug, Default)]
struct Fields<'a> {
    t: Option<Field<'a>>,
    conv: Option<Field<'a>>,
    seq: Option<Field<'a>>,
    cmid: Option<Field<'a>>,
    text: Option<Field<'a>>,
    kind: Option<Field<'a>>,
    on: Option<Field<'a>>,
    /// `Some(None)`: present but null (Python treats it as absent).
    meta: Option<Option<MetaSlot>>,
}

#[derive(Debug)]
enum MetaSlot {
    Object(Map<String, Value>),
    /// Present, not an object (or not representable exactly): Python refuses it.
    Invalid,
}

/// Parse a `kefu.json.v1` text frame.
pub fn parse_json<'a>(payload: &'a [u8], limits: &Limits) -> ClientFrame<'a> {
    let mut deserializer = serde_json::Deserializer::from_slice(payload);
    let fields = match deserializer.deserialize_map(FieldsVisitor) {
        Ok(fields) => fields,
        Err(_) => return ClientFrame::Decline,
    };
    if deserializer.end().is_err() {
        return ClientFrame::Decline;
    }
    check(fields, limits)
}

/// Parse a `kefu.bin.v1` binary frame (header + msgpack body) with the gateway's codec limits.
pub fn parse_binary<'a>(
    payload: &'a [u8],
    limits: &Limits,
    frame_limits: &FrameLimits,
) -> ClientFrame<'a> {
    let Ok(frame) = kefu_codec::value::decode(payload, frame_limits) else {
        return ClientFrame::Decline;
    };
    let t = match frame.frame_type {
        FrameType::Send => "send",
        FrameType::Typing => "typing",
        FrameType::Read => "read",
        _ => return ClientFrame::Decline,
    };
    // The binding hands Python `conv`/`seq` only when the header's value is not 0.
    let header_number = |n: u64| (n != 0).then(|| int_field(n));
    let mut fields = Fields {
        t: Some(Field::Str(Cow::Borrowed(t))),
        conv: header_number(frame.conv),
        seq: header_number(frame.seq),
        ..Fields::default()
    };
    for (key, value) in frame.fields {
        let slot = match key {
            "cmid" => &mut fields.cmid,
            "text" => &mut fields.text,
            "kind" => &mut fields.kind,
            "on" => &mut fields.on,
            "meta" => {
                fields.meta = Some(match value {
                    BinValue::Nil => None,
                    BinValue::Map(_) => Some(match binary_to_json(value) {
                        Some(Value::Object(map)) => MetaSlot::Object(map),
                        _ => MetaSlot::Invalid,
                    }),
                    _ => Some(MetaSlot::Invalid),
                });
                continue;
            }
            _ => continue,
        };
        *slot = Some(match value {
            BinValue::Int(n) => Field::Int(n),
            BinValue::UInt(n) => Field::UInt(n),
            BinValue::Str(s) => Field::Str(Cow::Borrowed(s)),
            BinValue::Bool(b) => Field::Bool(b),
            _ => Field::Other,
        });
    }
    check(fields, limits)
}

fn int_field(n: u64) -> Field<'static> {
    i64::try_from(n).map_or(Field::UInt(n), Field::Int)
}

/// A msgpack value as the JSON value Python would hold; `None` for bytes (not a JSON value).
fn binary_to_json(value: BinValue<'_>) -> Option<Value> {
    Some(match value {
        BinValue::Nil => Value::Null,
        BinValue::Bool(b) => Value::Bool(b),
        BinValue::Int(n) => Value::from(n),
        BinValue::UInt(n) => Value::from(n),
        BinValue::Float(f) => Value::from(serde_json::Number::from_f64(f)?),
        BinValue::Str(s) => Value::String(s.to_owned()),
        BinValue::Bin(_) => return None,
        BinValue::Array(items) => Value::Array(
            items
                .into_iter()
                .map(binary_to_json)
                .collect::<Option<_>>()?,
        ),
        BinValue::Map(entries) => {
            let mut map = Map::with_capacity(entries.len());
            for (key, item) in entries {
                map.insert(key.to_owned(), binary_to_json(item)?);
            }
            Value::Object(map)
        }
    })
}

/// The hub's checks, in its order; the first failure declines.
fn check<'a>(fields: Fields<'a>, limits: &Limits) -> ClientFrame<'a> {
    let Some(Field::Str(t)) = &fields.t else {
        return ClientFrame::Decline;
    };
    let Some(conv) = conv_id(&fields.conv) else {
        return ClientFrame::Decline;
    };
    match t.as_ref() {
        "send" => check_send(fields, conv, limits).map_or(ClientFrame::Decline, ClientFrame::Send),
        "typing" => match fields.on {
            Some(Field::Bool(on)) => ClientFrame::Typing { conv, on },
            _ => ClientFrame::Decline,
        },
        "read" => match fields.seq {
            Some(Field::Int(seq)) if (0..=MAX_CONV_ID as i64).contains(&seq) => ClientFrame::Read {
                conv,
                seq: seq as u64,
            },
            _ => ClientFrame::Decline,
        },
        _ => ClientFrame::Decline,
    }
}

fn conv_id(field: &Option<Field<'_>>) -> Option<u64> {
    match field {
        Some(Field::Int(n)) if (1..=MAX_CONV_ID as i64).contains(n) => Some(*n as u64),
        _ => None,
    }
}

fn check_send<'a>(fields: Fields<'a>, conv: u64, limits: &Limits) -> Option<SendFrame<'a>> {
    let Some(Field::Str(cmid)) = fields.cmid else {
        return None;
    };
    if cmid.is_empty() || cmid.chars().count() > limits.max_cmid_len || cmid.contains('\0') {
        return None;
    }
    let Some(Field::Str(text)) = fields.text else {
        return None;
    };
    if text.len() > limits.max_text_bytes || text.contains('\0') {
        return None;
    }
    let kind = match fields.kind {
        None => Kind::Text,
        Some(Field::Str(name)) => Kind::from_name(&name)?,
        Some(_) => return None,
    };
    let meta = match fields.meta {
        None | Some(None) => None,
        Some(Some(MetaSlot::Invalid)) => return None,
        Some(Some(MetaSlot::Object(map))) => {
            if !meta_ok_object(&map, 1) || has_nul(&map) {
                return None;
            }
            if map.is_empty() {
                None
            } else {
                let json = serde_json::to_string(&map).ok()?;
                // `\u0000` written out by the client: check_storable_message refuses it too.
                // Python's float repr may be 2 bytes longer than ryu's ("1e+16", "1e-05"): count
                // that, so the native side never admits a meta Python finds too large.
                if json.contains("\\u0000") || json.len() + 2 * count_floats(&map) > MAX_META_BYTES
                {
                    return None;
                }
                Some((map, json))
            }
        }
    };
    Some(SendFrame {
        conv,
        cmid,
        text,
        kind,
        meta,
    })
}

/// `frames._check_meta` for an object at `depth`.
fn meta_ok_object(map: &Map<String, Value>, depth: usize) -> bool {
    depth <= MAX_META_DEPTH
        && map.len() <= MAX_META_KEYS
        && map.values().all(|item| meta_ok(item, depth + 1))
}

fn meta_ok(value: &Value, depth: usize) -> bool {
    if depth > MAX_META_DEPTH {
        return false; // Python refuses anything, scalars too, below the fourth level
    }
    match value {
        Value::Object(map) => meta_ok_object(map, depth),
        Value::Array(items) => {
            items.len() <= MAX_META_KEYS && items.iter().all(|item| meta_ok(item, depth + 1))
        }
        _ => true, // serde_json numbers are finite; null, bool, str are JSON values
    }
}

fn count_floats(map: &Map<String, Value>) -> usize {
    fn count(value: &Value) -> usize {
        match value {
            Value::Number(n) => usize::from(n.is_f64()),
            Value::Array(items) => items.iter().map(count).sum(),
            Value::Object(map) => count_floats(map),
            _ => 0,
        }
    }
    map.values().map(count).sum()
}

/// `check_storable_message`: no U+0000 in any key or string of `meta`.
fn has_nul(map: &Map<String, Value>) -> bool {
    fn value_has_nul(value: &Value) -> bool {
        match value {
            Value::String(s) => s.contains('\0'),
            Value::Array(items) => items.iter().any(value_has_nul),
            Value::Object(map) => has_nul(map),
            _ => false,
        }
    }
    map.iter()
        .any(|(key, value)| key.contains('\0') || value_has_nul(value))
}

// --- serde plumbing ---------------------------------------------------------------------------------

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Fields<'de>, A::Error> {
        let mut fields = Fields::default();
        while let Some(key) = access.next_key::<Key<'de>>()? {
            let slot = match key.0.as_ref() {
                "t" => &mut fields.t,
                "conv" => &mut fields.conv,
                "seq" => &mut fields.seq,
                "cmid" => &mut fields.cmid,
                "text" => &mut fields.text,
                "kind" => &mut fields.kind,
                "on" => &mut fields.on,
                "meta" => {
                    fields.meta = Some(access.next_value_seed(MetaSeed)?);
                    continue;
                }
                _ => {
                    access.next_value::<Skip>()?;
                    continue;
                }
            };
            *slot = Some(access.next_value::<Field<'de>>()?);
        }
        Ok(fields)
    }
}

/// An object key, borrowed unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(StrVisitor).map(Key)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

impl<'de> Deserialize<'de> for Field<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldVisitor)
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = Field<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Field<'de>, E> {
        Ok(Field::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Field<'de>, E> {
        Ok(Field::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Field<'de>, E> {
        Ok(int_field(v))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Field<'de>, E> {
        Ok(Field::Other)
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Field<'de>, E> {
        Ok(Field::Str(Cow::Owned(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Field<'de>, E> {
        Ok(Field::Other)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Field<'de>, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Field::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Field<'de>, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Field::Other)
    }
}

/// A value the data plane does not read. Not serde's `IgnoredAny`: serde_json skips that without
/// its nesting limit, and Python's `json` refuses very deep nesting (RecursionError), so skipping
/// through `deserialize_any` keeps serde_json's limit (128) and declines what Python might refuse.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }
}

/// Reads `meta` through its raw text first, to refuse integer literals serde_json would round.
struct MetaSeed;

impl<'de> DeserializeSeed<'de> for MetaSeed {
    type Value = Option<MetaSlot>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        let raw = <&'de serde_json::value::RawValue>::deserialize(deserializer)?;
        let text = raw.get();
        if text == "null" {
            return Ok(None);
        }
        if !text.starts_with('{') || has_long_integer(text) {
            return Ok(Some(MetaSlot::Invalid));
        }
        Ok(Some(match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => MetaSlot::Object(map),
            _ => MetaSlot::Invalid,
        }))
    }
}

/// True when the JSON text holds an integer literal (outside strings) that 64 bits cannot carry:
/// beyond msgpack's [-2^63, 2^64) (`frames.WIRE_INT_MIN/MAX`, which Python refuses) serde_json
/// would round it to a float.
fn has_long_integer(json: &str) -> bool {
    let bytes = json.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len()
                    && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let token = &json[start..i];
                let is_integer = !token.contains(['.', 'e', 'E']);
                if is_integer && !fits_wire_int(token) {
                    return true;
                }
            }
            _ => i += 1,
        }
    }
    false
}

fn fits_wire_int(token: &str) -> bool {
    token
        .parse::<i128>()
        .is_ok_and(|n| (i128::from(i64::MIN)..=i128::from(u64::MAX)).contains(&n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(text: &str) -> ClientFrame<'_> {
        parse_json(text.as_bytes(), &Limits::default())
    }

    #[test]
    fn send_borrows_plain_strings() {
        let ClientFrame::Send(send) = json(r#"{"t":"send","conv":7,"cmid":"c1","text":"hi"}"#)
        else {
            panic!("not a send")
        };
        assert_eq!(send.conv, 7);
        assert!(matches!(send.text, Cow::Borrowed("hi")));
        assert_eq!(send.kind, Kind::Text);
        assert!(send.meta.is_none());
    }

    #[test]
    fn escapes_are_unescaped_and_last_key_wins() {
        let ClientFrame::Send(send) =
            json(r#"{"t":"send","conv":1,"conv":2,"cmid":"a","text":"\u4f60\n","meta":{}}"#)
        else {
            panic!("not a send")
        };
        assert_eq!(send.conv, 2);
        assert_eq!(send.text, "你\n");
        assert!(send.meta.is_none(), "an empty meta is no meta");
    }

    #[test]
    fn what_python_refuses_is_declined() {
        for frame in [
            r#"{"t":"send","conv":0,"cmid":"a","text":"x"}"#,
            r#"{"t":"send","conv":9007199254740992,"cmid":"a","text":"x"}"#,
            r#"{"t":"send","conv":1.0,"cmid":"a","text":"x"}"#,
            r#"{"t":"send","conv":true,"cmid":"a","text":"x"}"#,
            r#"{"t":"send","conv":1,"cmid":"","text":"x"}"#,
            r#"{"t":"send","conv":1,"cmid":"a","text":null}"#,
            r#"{"t":"send","conv":1,"cmid":"a","text":"x","kind":null}"#,
            r#"{"t":"send","conv":1,"cmid":"a","text":"x","kind":"video"}"#,
            r#"{"t":"send","conv":1,"cmid":"a","text":"\u0000"}"#,
            r#"{"t":"send","conv":1,"cmid":"a","text":"\ud800"}"#,
            r#"{"t":"send","conv":1,"cmid":"a","text":"x","meta":[]}"#,
            r#"{"t":"send","conv":1,"cmid":"a","text":"x","meta":{"a":{"b":{"c":{"d":1}}}}}"#,
            r#"{"t":"send","conv":1,"cmid":"a","text":"x","meta":{"n":123456789012345678901}}"#,
            r#"{"t":"send","conv":1,"cmid":"a","text":"x","meta":{"k":"\u0000"}}"#,
            r#"{"t":"send","conv":1,"cmid":"a","text":"x","meta":{"k":"\\u0000"}}"#,
            r#"{"t":"send","conv":1,"cmid":"a","text":"x","extra":NaN}"#,
            r#"{"t":"typing","conv":1,"on":1}"#,
            r#"{"t":"read","conv":1,"seq":-1}"#,
            r#"{"t":"read","conv":1}"#,
            r#"{"t":"hello"}"#,
            r#"{"t":"send","conv":1,"cmid":"a","text":"x"} x"#,
            r#"[1]"#,
        ] {
            assert_eq!(json(frame), ClientFrame::Decline, "{frame}");
        }
    }

    #[test]
    fn deep_nesting_anywhere_is_declined() {
        let deep = format!(
            r#"{{"t":"send","conv":1,"cmid":"a","text":"x","x":{}{}}}"#,
            "[".repeat(129),
            "]".repeat(129)
        );
        assert_eq!(json(&deep), ClientFrame::Decline);
        let fine = format!(
            r#"{{"t":"send","conv":1,"cmid":"a","text":"x","x":{}{}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(matches!(json(&fine), ClientFrame::Send(_)));
    }

    #[test]
    fn limits_count_like_python() {
        let cmid64: String = "é".repeat(64);
        let frame = format!(r#"{{"t":"send","conv":1,"cmid":"{cmid64}","text":"x"}}"#);
        assert!(
            matches!(json(&frame), ClientFrame::Send(_)),
            "64 characters, 128 bytes"
        );
        let frame = format!(r#"{{"t":"send","conv":1,"cmid":"{cmid64}é","text":"x"}}"#);
        assert_eq!(json(&frame), ClientFrame::Decline);
        let text = "x".repeat(8192);
        let frame = format!(r#"{{"t":"send","conv":1,"cmid":"a","text":"{text}"}}"#);
        assert!(matches!(json(&frame), ClientFrame::Send(_)));
        let frame = format!(r#"{{"t":"send","conv":1,"cmid":"a","text":"{text}é"}}"#);
        assert_eq!(json(&frame), ClientFrame::Decline);
    }

    #[test]
    fn meta_at_the_bounds() {
        let ok = r#"{"t":"send","conv":1,"cmid":"a","text":"x","meta":{"a":{"b":{"c":1}},"z":[1,2.5,null]}}"#;
        let ClientFrame::Send(send) = json(ok) else {
            panic!("declined")
        };
        let (meta, json) = send.meta.unwrap();
        assert_eq!(json, r#"{"a":{"b":{"c":1}},"z":[1,2.5,null]}"#);
        let keys: Vec<_> = meta.keys().cloned().collect();
        assert_eq!(keys, ["a", "z"]);
    }

    #[test]
    fn meta_size_is_bounded_like_python() {
        let fits = format!(
            r#"{{"t":"send","conv":1,"cmid":"a","text":"x","meta":{{"k":"{}"}}}}"#,
            "y".repeat(4088)
        );
        assert!(
            matches!(json(&fits), ClientFrame::Send(_)),
            "4096 bytes as JSON"
        );
        let over = format!(
            r#"{{"t":"send","conv":1,"cmid":"a","text":"x","meta":{{"k":"{}"}}}}"#,
            "y".repeat(4089)
        );
        assert_eq!(json(&over), ClientFrame::Decline);
    }

    #[test]
    fn meta_floats_parse_correctly_rounded_like_python() {
        // Found by fuzzing: serde_json's fast float parser is off by an ulp here; Python is not.
        let frame =
            r#"{"t":"send","conv":1,"cmid":"a","text":"x","meta":{"neg":-922.372036854771808}}"#;
        let ClientFrame::Send(send) = json(frame) else {
            panic!("declined")
        };
        let (meta, text) = send.meta.unwrap();
        assert_eq!(meta["neg"].as_f64(), Some(-922.372036854771808_f64));
        assert_eq!(text, r#"{"neg":-922.3720368547719}"#); // repr() in Python
    }

    #[test]
    fn typing_and_read() {
        assert_eq!(
            json(r#"{"t":"typing","conv":3,"on":true}"#),
            ClientFrame::Typing { conv: 3, on: true }
        );
        assert_eq!(
            json(r#"{"t":"read","conv":3,"seq":0}"#),
            ClientFrame::Read { conv: 3, seq: 0 }
        );
    }
}
