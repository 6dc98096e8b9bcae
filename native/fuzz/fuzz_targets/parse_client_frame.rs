//! Fuzz the data plane's typed parser (native/dataplane `parse`), JSON and kefu.bin.v1.
//!
//! Properties: parsing never panics or hangs; whatever it accepts respects the protocol's limits
//! (conv in 1..2^53, cmid 1–64 characters, text ≤ 8 KiB, no U+0000 anywhere, `meta` a non-empty
//! object whose compact JSON re-parses to the same value and stays under the size bound); and a
//! JSON `send` it accepts, written back as JSON, is accepted again with the same fields.
#![no_main]

use kefu_codec::FrameLimits;
use kefu_dataplane::parse::{parse_binary, parse_json, ClientFrame, Limits, MAX_CONV_ID, MAX_META_BYTES};
use libfuzzer_sys::fuzz_target;

fn check(frame: &ClientFrame<'_>, limits: &Limits) {
    match frame {
        ClientFrame::Send(send) => {
            assert!((1..=MAX_CONV_ID).contains(&send.conv));
            let cmid_chars = send.cmid.chars().count();
            assert!((1..=limits.max_cmid_len).contains(&cmid_chars));
            assert!(send.text.len() <= limits.max_text_bytes);
            assert!(!send.text.contains('\0') && !send.cmid.contains('\0'));
            if let Some((map, json)) = &send.meta {
                assert!(!map.is_empty() && json.len() <= MAX_META_BYTES);
                assert!(!json.contains("\\u0000"));
                let again: serde_json::Value = serde_json::from_str(json).expect("meta JSON re-parses");
                assert_eq!(again, serde_json::Value::Object(map.clone()));
            }
        }
        ClientFrame::Typing { conv, .. } => assert!((1..=MAX_CONV_ID).contains(conv)),
        ClientFrame::Read { conv, seq } => {
            assert!((1..=MAX_CONV_ID).contains(conv) && *seq <= MAX_CONV_ID);
        }
        ClientFrame::Decline => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let json = parse_json(data, &limits);
    check(&json, &limits);
    if let ClientFrame::Send(send) = &json {
        let mut rebuilt = serde_json::json!({
            "t": "send", "conv": send.conv, "cmid": send.cmid, "text": send.text, "kind": send.kind.name(),
        });
        if let Some((map, _)) = &send.meta {
            rebuilt["meta"] = serde_json::Value::Object(map.clone());
        }
        let bytes = serde_json::to_vec(&rebuilt).expect("serialises");
        let ClientFrame::Send(again) = parse_json(&bytes, &limits) else {
            panic!("an accepted send, re-encoded, was declined");
        };
        assert_eq!(&again, send);
    }
    check(&parse_binary(data, &limits, &FrameLimits::default()), &limits);
});
