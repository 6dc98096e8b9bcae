//! Server frames of the data plane, written once per wire format.
//!
//! JSON is what `kefu.compiled.encode_json` writes for the same dict (compact, keys in the hub's
//! order, non-ASCII kept, floats in shortest round-trip form); binary is what `encode_frame` writes
//! (`conv`/`seq` in the header, the other keys in the body in the same order, canonical msgpack).
//! The twin tests decode both and compare them with the Python hub's frames.

use kefu_codec::{FrameEncoder, FrameError, FrameLimits, FrameType};
use serde_json::{Map, Value};

use crate::tables::PrincipalRow;

/// Spare bytes in front of every encoded frame: picows writes the WebSocket header there
/// (`send_reuse_external_*`), so a frame goes to every subscriber without another copy.
pub const HEADROOM: usize = 14;

/// A frame in both encodings, each after [`HEADROOM`] spare bytes; `binary` is `None` when no
/// target speaks `kefu.bin.v1`, `json` is empty when no target speaks JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub json: Vec<u8>,
    pub binary: Option<Vec<u8>>,
}

impl Encoded {
    /// The JSON frame without its headroom (empty when absent).
    pub fn json_payload(&self) -> &[u8] {
        self.json.get(HEADROOM..).unwrap_or(&[])
    }

    /// The binary frame without its headroom.
    pub fn binary_payload(&self) -> Option<&[u8]> {
        self.binary.as_deref().map(|b| &b[HEADROOM..])
    }
}

/// `frame` after [`HEADROOM`] spare bytes (the codec writes from offset 0: one copy per frame,
/// not per subscriber).
pub fn with_headroom(frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADROOM + frame.len());
    out.resize(HEADROOM, 0);
    out.extend_from_slice(frame);
    out
}

/// A stored message, everything a `msg` frame says.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub conv: u64,
    pub seq: u64,
    pub ts: f64,
    pub sender: &'a PrincipalRow,
    pub cmid: &'a str,
    pub kind: &'a str,
    pub text: &'a str,
    /// The `meta` object and its compact JSON (written as is into the JSON frame).
    pub meta: Option<(&'a Map<String, Value>, &'a str)>,
}

struct Json(Vec<u8>);

impl Json {
    fn start(frame_type: &str) -> Json {
        let mut out = Vec::with_capacity(HEADROOM + 128);
        out.resize(HEADROOM, 0);
        out.extend_from_slice(b"{\"t\":\"");
        out.extend_from_slice(frame_type.as_bytes());
        out.push(b'"');
        Json(out)
    }
    fn key(&mut self, key: &str) -> &mut Self {
        self.0.extend_from_slice(b",\"");
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(b"\":");
        self
    }
    fn str(&mut self, value: &str) -> &mut Self {
        // serde_json escapes exactly what json.dumps(ensure_ascii=False) escapes.
        serde_json::to_writer(&mut self.0, value).expect("writing to a Vec cannot fail");
        self
    }
    fn raw(&mut self, value: &str) -> &mut Self {
        self.0.extend_from_slice(value.as_bytes());
        self
    }
    fn u64(&mut self, value: u64) -> &mut Self {
        self.raw(&value.to_string())
    }
    fn f64(&mut self, value: f64) -> &mut Self {
        // ryu's shortest form, like Python's repr for timestamps ("1764400000.0", "1764400000.25").
        serde_json::to_writer(&mut self.0, &value).expect("finite float");
        self
    }
    fn bool(&mut self, value: bool) -> &mut Self {
        self.raw(if value { "true" } else { "false" })
    }
    fn from(&mut self, sender: &PrincipalRow) -> &mut Self {
        self.raw("{\"id\":").str(&sender.id);
        self.raw(",\"role\":").str(sender.role.name());
        if let Some(name) = sender.name.as_deref().filter(|name| !name.is_empty()) {
            self.raw(",\"name\":").str(name);
        }
        self.raw("}")
    }
    fn finish(mut self) -> Vec<u8> {
        self.0.push(b'}');
        self.0
    }
}

fn sender_fields(sender: &PrincipalRow) -> usize {
    2 + usize::from(sender.name.as_deref().is_some_and(|name| !name.is_empty()))
}

fn write_from(encoder: &mut FrameEncoder<'_>, sender: &PrincipalRow) -> Result<(), FrameError> {
    encoder.str("from")?;
    encoder.map_header(sender_fields(sender), 2)?;
    encoder.str("id")?;
    encoder.str(&sender.id)?;
    encoder.str("role")?;
    encoder.str(sender.role.name())?;
    if let Some(name) = sender.name.as_deref().filter(|name| !name.is_empty()) {
        encoder.str("name")?;
        encoder.str(name)?;
    }
    Ok(())
}

fn write_value(
    encoder: &mut FrameEncoder<'_>,
    value: &Value,
    depth: usize,
) -> Result<(), FrameError> {
    match value {
        Value::Null => encoder.nil(),
        Value::Bool(flag) => encoder.bool(*flag),
        Value::Number(number) => {
            if let Some(n) = number.as_i64() {
                encoder.i64(n)
            } else if let Some(n) = number.as_u64() {
                encoder.u64(n)
            } else {
                encoder.f64(number.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(text) => encoder.str(text),
        Value::Array(items) => {
            encoder.array_header(items.len(), depth)?;
            items
                .iter()
                .try_for_each(|item| write_value(encoder, item, depth + 1))
        }
        Value::Object(map) => {
            encoder.map_header(map.len(), depth)?;
            for (key, item) in map {
                encoder.str(key)?;
                write_value(encoder, item, depth + 1)?;
            }
            Ok(())
        }
    }
}

/// `{"t":"msg","conv","seq","cmid","from","text","kind","ts","meta"?}`.
pub fn msg(
    message: &Message<'_>,
    binary: bool,
    limits: &FrameLimits,
) -> Result<Encoded, FrameError> {
    let mut json = Json::start("msg");
    json.key("conv")
        .u64(message.conv)
        .key("seq")
        .u64(message.seq);
    json.key("cmid")
        .str(message.cmid)
        .key("from")
        .from(message.sender);
    json.key("text")
        .str(message.text)
        .key("kind")
        .str(message.kind);
    json.key("ts").f64(message.ts);
    if let Some((_, meta_json)) = message.meta {
        json.key("meta").raw(meta_json);
    }
    both_formats(json, binary, || {
        let fields = 5 + usize::from(message.meta.is_some());
        let mut encoder =
            FrameEncoder::new(FrameType::Msg, message.conv, message.seq, fields, limits)?;
        encoder.str("cmid")?;
        encoder.str(message.cmid)?;
        write_from(&mut encoder, message.sender)?;
        encoder.str("text")?;
        encoder.str(message.text)?;
        encoder.str("kind")?;
        encoder.str(message.kind)?;
        encoder.str("ts")?;
        encoder.f64(message.ts)?;
        if let Some((meta, _)) = message.meta {
            encoder.str("meta")?;
            write_value(&mut encoder, &Value::Object(meta.clone()), 2)?;
        }
        Ok(encoder.finish())
    })
}

/// `{"t":"ack","cmid","conv","seq","ts"}`, for one connection.
pub fn ack(
    cmid: &str,
    conv: u64,
    seq: u64,
    ts: f64,
    binary: bool,
    limits: &FrameLimits,
) -> Result<Vec<u8>, FrameError> {
    if binary {
        let mut encoder = FrameEncoder::new(FrameType::Ack, conv, seq, 2, limits)?;
        encoder.str("cmid")?;
        encoder.str(cmid)?;
        encoder.str("ts")?;
        encoder.f64(ts)?;
        return Ok(with_headroom(&encoder.finish()));
    }
    let mut json = Json::start("ack");
    json.key("cmid")
        .str(cmid)
        .key("conv")
        .u64(conv)
        .key("seq")
        .u64(seq)
        .key("ts")
        .f64(ts);
    Ok(json.finish())
}

/// `{"t":"error","code","msg","ref"}`, for one connection.
pub fn error(
    code: &str,
    message: &str,
    reference: &str,
    binary: bool,
    limits: &FrameLimits,
) -> Result<Vec<u8>, FrameError> {
    if binary {
        let mut encoder = FrameEncoder::new(FrameType::Error, 0, 0, 3, limits)?;
        for (key, value) in [("code", code), ("msg", message), ("ref", reference)] {
            encoder.str(key)?;
            encoder.str(value)?;
        }
        return Ok(with_headroom(&encoder.finish()));
    }
    let mut json = Json::start("error");
    json.key("code")
        .str(code)
        .key("msg")
        .str(message)
        .key("ref")
        .str(reference);
    Ok(json.finish())
}

/// `{"t":"typing","conv","on","from"}`.
pub fn typing(
    conv: u64,
    on: bool,
    sender: &PrincipalRow,
    binary: bool,
    limits: &FrameLimits,
) -> Result<Encoded, FrameError> {
    let mut json = Json::start("typing");
    json.key("conv")
        .u64(conv)
        .key("on")
        .bool(on)
        .key("from")
        .from(sender);
    both_formats(json, binary, || {
        let mut encoder = FrameEncoder::new(FrameType::Typing, conv, 0, 2, limits)?;
        encoder.str("on")?;
        encoder.bool(on)?;
        write_from(&mut encoder, sender)?;
        Ok(encoder.finish())
    })
}

/// `{"t":"read","conv","seq","from"}` (`seq` travels in the binary header).
pub fn read(
    conv: u64,
    seq: u64,
    sender: &PrincipalRow,
    binary: bool,
    limits: &FrameLimits,
) -> Result<Encoded, FrameError> {
    let mut json = Json::start("read");
    json.key("conv")
        .u64(conv)
        .key("seq")
        .u64(seq)
        .key("from")
        .from(sender);
    both_formats(json, binary, || {
        let mut encoder = FrameEncoder::new(FrameType::Read, conv, seq, 1, limits)?;
        write_from(&mut encoder, sender)?;
        Ok(encoder.finish())
    })
}

/// The frame as `json`, plus the binary frame `write_binary` makes, only when a target speaks
/// `kefu.bin.v1` (`binary`); each after its headroom.
fn both_formats(
    json: Json,
    binary: bool,
    write_binary: impl FnOnce() -> Result<Vec<u8>, FrameError>,
) -> Result<Encoded, FrameError> {
    let binary = if binary {
        Some(with_headroom(&write_binary()?))
    } else {
        None
    };
    Ok(Encoded {
        json: json.finish(),
        binary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::Role;

    fn visitor() -> PrincipalRow {
        PrincipalRow {
            id: "v_1".into(),
            role: Role::Visitor,
            name: Some("Ann \"A\"".into()),
        }
    }

    #[test]
    fn msg_json_matches_python_encode_json() {
        let sender = visitor();
        let meta: Map<String, Value> =
            serde_json::from_str(r#"{"b":1,"a":[true,null,2.5]}"#).unwrap();
        let meta_json = serde_json::to_string(&meta).unwrap();
        let message = Message {
            conv: 3,
            seq: 9,
            ts: 1764400000.0,
            sender: &sender,
            cmid: "c\n1",
            kind: "text",
            text: "你好\u{1}",
            meta: Some((&meta, &meta_json)),
        };
        let encoded = msg(&message, true, &FrameLimits::default()).unwrap();
        assert_eq!(
            String::from_utf8(encoded.json_payload().to_vec()).unwrap(),
            r#"{"t":"msg","conv":3,"seq":9,"cmid":"c\n1","from":{"id":"v_1","role":"visitor","name":"Ann \"A\""},"text":"你好\u0001","kind":"text","ts":1764400000.0,"meta":{"b":1,"a":[true,null,2.5]}}"#
        );
        let frame =
            kefu_codec::value::decode(encoded.binary_payload().unwrap(), &FrameLimits::default())
                .unwrap();
        assert_eq!(
            (frame.frame_type, frame.conv, frame.seq),
            (FrameType::Msg, 3, 9)
        );
        let keys: Vec<_> = frame.fields.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["cmid", "from", "text", "kind", "ts", "meta"]);
    }

    #[test]
    fn ack_in_both_formats() {
        let json = ack("c1", 3, 4, 1.5, false, &FrameLimits::default()).unwrap();
        assert_eq!(
            &json[HEADROOM..],
            br#"{"t":"ack","cmid":"c1","conv":3,"seq":4,"ts":1.5}"#
        );
        let bin = ack("c1", 3, 4, 1.5, true, &FrameLimits::default()).unwrap();
        let frame = kefu_codec::value::decode(&bin[HEADROOM..], &FrameLimits::default()).unwrap();
        assert_eq!(
            frame.fields,
            vec![
                ("cmid", kefu_codec::Value::Str("c1")),
                ("ts", kefu_codec::Value::Float(1.5))
            ]
        );
    }
}
