//! Round trips, canonical encoding, each refusal, and limits at exactly the limit and one past it.

use kefu_codec::value::{decode, encode};
use kefu_codec::{
    ErrorCode, Frame, FrameError, FrameLimits, FrameType, Value, FLAG_EMPTY_BODY, HEADER_SIZE,
};

fn header(frame_type: u8, flags: u16, body_len: u32, conv: u64, seq: u64) -> Vec<u8> {
    let mut bytes = vec![1, frame_type];
    bytes.extend_from_slice(&flags.to_le_bytes());
    bytes.extend_from_slice(&body_len.to_le_bytes());
    bytes.extend_from_slice(&conv.to_le_bytes());
    bytes.extend_from_slice(&seq.to_le_bytes());
    bytes
}

/// A frame of type `msg` with `body` (flags derived from its length).
fn with_body(body: &[u8]) -> Vec<u8> {
    let flags = if body.is_empty() { FLAG_EMPTY_BODY } else { 0 };
    let mut bytes = header(6, flags, body.len() as u32, 0, 0);
    bytes.extend_from_slice(body);
    bytes
}

fn code_of(result: Result<Frame<'_>, FrameError>) -> ErrorCode {
    result.expect_err("frame should be refused").code
}

fn sample_frame() -> Frame<'static> {
    Frame {
        frame_type: FrameType::Msg,
        conv: 42,
        seq: 7,
        fields: vec![
            (
                "text",
                Value::Str("Hello, I need help with my order #1234 — it has not arrived yet."),
            ),
            ("id", Value::Str("m-01HZX")),
            ("ts", Value::Float(1_700_000_000.25)),
            (
                "n",
                Value::Array(vec![
                    Value::Nil,
                    Value::Bool(true),
                    Value::Int(-1),
                    Value::Int(-33),
                    Value::Int(-40_000),
                    Value::Int(i64::MIN),
                    Value::Int(200),
                    Value::Int(70_000),
                    Value::Int(i64::MAX),
                    Value::UInt(u64::MAX),
                    Value::Bin(b"\x00\xff"),
                ]),
            ),
            (
                "meta",
                Value::Map(vec![
                    ("lang", Value::Str("zh")),
                    ("score", Value::Float(-0.5)),
                ]),
            ),
        ],
    }
}

#[test]
fn round_trip_preserves_everything() {
    let limits = FrameLimits::default();
    let frame = sample_frame();
    let bytes = encode(&frame, &limits).unwrap();
    assert_eq!(decode(&bytes, &limits).unwrap(), frame);
}

#[test]
fn every_frame_type_round_trips_with_an_empty_body() {
    let limits = FrameLimits::default();
    for &frame_type in FrameType::ALL {
        let frame = Frame {
            frame_type,
            conv: 0,
            seq: u64::MAX,
            fields: vec![],
        };
        let bytes = encode(&frame, &limits).unwrap();
        assert_eq!(bytes.len(), HEADER_SIZE);
        assert_eq!(u16::from_le_bytes([bytes[2], bytes[3]]), FLAG_EMPTY_BODY);
        assert_eq!(decode(&bytes, &limits).unwrap(), frame);
        assert_eq!(FrameType::from_name(frame_type.name()), Some(frame_type));
    }
}

#[test]
fn encoding_is_canonical() {
    let limits = FrameLimits::default();
    let cases: Vec<(Value<'_>, &[u8])> = vec![
        (Value::Int(0), &[0x00]),
        (Value::Int(127), &[0x7f]),
        (Value::Int(128), &[0xcc, 0x80]),
        (Value::Int(256), &[0xcd, 0x01, 0x00]),
        (Value::Int(65_536), &[0xce, 0x00, 0x01, 0x00, 0x00]),
        (Value::Int(1 << 32), &[0xcf, 0, 0, 0, 1, 0, 0, 0, 0]),
        (Value::Int(-1), &[0xff]),
        (Value::Int(-32), &[0xe0]),
        (Value::Int(-33), &[0xd0, 0xdf]),
        (Value::Int(-129), &[0xd1, 0xff, 0x7f]),
        (Value::Int(-32_769), &[0xd2, 0xff, 0xff, 0x7f, 0xff]),
        (
            Value::Int(-(1 << 31) - 1),
            &[0xd3, 0xff, 0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff],
        ),
        (Value::Float(1.5), &[0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]),
        (Value::Str(""), &[0xa0]),
        (Value::Array(vec![]), &[0x90]),
        (Value::Map(vec![]), &[0x80]),
        (Value::Bin(b""), &[0xc4, 0x00]),
    ];
    for (value, expected) in cases {
        let frame = Frame {
            frame_type: FrameType::Msg,
            conv: 0,
            seq: 0,
            fields: vec![("a", value)],
        };
        let bytes = encode(&frame, &limits).unwrap();
        assert_eq!(
            &bytes[HEADER_SIZE + 3..],
            expected,
            "{:?}",
            frame.fields[0].1
        );
    }
    let long = "x".repeat(32);
    let frame = Frame {
        frame_type: FrameType::Msg,
        conv: 0,
        seq: 0,
        fields: vec![("a", Value::Str(&long))],
    };
    assert_eq!(
        &encode(&frame, &limits).unwrap()[HEADER_SIZE + 3..HEADER_SIZE + 5],
        &[0xd9, 32]
    );
}

#[test]
fn non_canonical_input_is_accepted_and_reencodes_canonically() {
    let limits = FrameLimits::default();
    // {"a": uint64 5, "b": float32 1.5, "c": str16 "hi"} and a map16 body header.
    let body = [
        0xde, 0x00, 0x03, 0xa1, b'a', 0xcf, 0, 0, 0, 0, 0, 0, 0, 5, 0xa1, b'b', 0xca, 0x3f, 0xc0,
        0, 0, 0xa1, b'c', 0xda, 0x00, 0x02, b'h', b'i',
    ];
    let bytes = with_body(&body);
    let frame = decode(&bytes, &limits).unwrap();
    assert_eq!(
        frame.fields,
        vec![
            ("a", Value::Int(5)),
            ("b", Value::Float(1.5)),
            ("c", Value::Str("hi"))
        ]
    );
    let canonical = encode(&frame, &limits).unwrap();
    assert_eq!(decode(&canonical, &limits).unwrap(), frame);
    assert!(canonical.len() < bytes.len());
}

#[test]
fn header_refusals() {
    let limits = FrameLimits::default();
    let body = [0x81, 0xa1, b'a', 0x01];
    let mut bad_version = with_body(&body);
    bad_version[0] = 2;
    assert_eq!(code_of(decode(&bad_version, &limits)), ErrorCode::BadFrame);
    for frame_type in [0u8, 17, 255] {
        let mut bytes = header(frame_type, 0, 4, 0, 0);
        bytes.extend_from_slice(&body);
        assert_eq!(code_of(decode(&bytes, &limits)), ErrorCode::BadFrame);
    }
    for flags in [2u16, 0x8000, 0xfffe] {
        let mut bytes = header(6, flags, 4, 0, 0);
        bytes.extend_from_slice(&body);
        assert_eq!(
            code_of(decode(&bytes, &limits)),
            ErrorCode::BadFrame,
            "flags {flags:#x}"
        );
    }
    assert_eq!(
        code_of(decode(&header(6, 1, 4, 0, 0), &limits)),
        ErrorCode::BadFrame
    );
    assert_eq!(
        code_of(decode(&header(6, 0, 0, 0, 0), &limits)),
        ErrorCode::BadFrame
    );
    assert_eq!(
        code_of(decode(&with_body(&body)[..HEADER_SIZE + 3], &limits)),
        ErrorCode::BadFrame
    );
    let mut longer = with_body(&body);
    longer.push(0);
    assert_eq!(code_of(decode(&longer, &limits)), ErrorCode::BadFrame);
    for len in 0..HEADER_SIZE {
        assert_eq!(
            code_of(decode(&header(15, 1, 0, 0, 0)[..len], &limits)),
            ErrorCode::BadFrame
        );
    }
}

#[test]
fn conv_and_seq_come_from_the_header() {
    let limits = FrameLimits::default();
    let bytes = header(8, 1, 0, u64::MAX, 3);
    let frame = decode(&bytes, &limits).unwrap();
    assert_eq!(
        (frame.frame_type, frame.conv, frame.seq),
        (FrameType::Conv, u64::MAX, 3)
    );
}

#[test]
fn body_refusals() {
    let limits = FrameLimits::default();
    let bodies: &[&[u8]] = &[
        &[0x91, 0x01],                                           // not a map
        &[0x81, 0x01, 0x01],                                     // int key
        &[0x82, 0xa1, b'a', 0x01, 0xa1, b'a', 0x02],             // duplicate
        &[0x81, 0xa1, b't', 0x01],                               // reserved key
        &[0x81, 0xa1, b'a', 0xc1],                               // never-used marker
        &[0x81, 0xa1, b'a', 0xd4, 0x01, 0x00],                   // ext
        &[0x81, 0xa1, b'a', 0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0], // NaN
        &[0x81, 0xa1, b'a', 0xa1, 0xff],                         // invalid UTF-8
        &[0x81, 0xa1, b'a', 0x01, 0x00],                         // trailing byte
        &[0x81, 0xa1, b'a'],                                     // missing value
        &[0x82, 0xa1, b'a', 0x01],                               // missing entry
    ];
    for body in bodies {
        assert_eq!(
            code_of(decode(&with_body(body), &limits)),
            ErrorCode::BadFrame,
            "{body:02x?}"
        );
    }
}

/// `{"a": [[...[nil]...]]}` with containers nested to `depth` (the body map counts as 1).
fn nested(depth: usize) -> Vec<u8> {
    let mut body = vec![0x81, 0xa1, b'a'];
    body.extend(std::iter::repeat_n(0x91, depth - 1));
    body.push(0xc0);
    with_body(&body)
}

#[test]
fn depth_limit_is_inclusive() {
    let limits = FrameLimits::default();
    assert!(decode(&nested(limits.max_depth), &limits).is_ok());
    assert_eq!(
        code_of(decode(&nested(limits.max_depth + 1), &limits)),
        ErrorCode::BadFrame
    );
    let tight = FrameLimits::new(65536, 1, 1024, 65536).unwrap();
    assert!(decode(&with_body(&[0x81, 0xa1, b'a', 0x01]), &tight).is_ok());
    assert_eq!(code_of(decode(&nested(2), &tight)), ErrorCode::BadFrame);
}

#[test]
fn container_limit_is_inclusive() {
    let limits = FrameLimits::new(65536, 8, 4, 65536).unwrap();
    let array = |len: u8| {
        with_body(
            &[
                &[0x81, 0xa1, b'a', 0x90 | len][..],
                &vec![0u8; len as usize],
            ]
            .concat(),
        )
    };
    assert!(decode(&array(4), &limits).is_ok());
    assert_eq!(code_of(decode(&array(5), &limits)), ErrorCode::BadFrame);
    let body_map = |len: u8| {
        let mut body = vec![0x80 | len];
        for key in 0..len {
            body.extend_from_slice(&[0xa1, b'a' + key, 0x00]);
        }
        with_body(&body)
    };
    assert!(decode(&body_map(4), &limits).is_ok());
    assert_eq!(code_of(decode(&body_map(5), &limits)), ErrorCode::BadFrame);
}

#[test]
fn string_limit_is_inclusive_for_values_keys_and_bin() {
    let limits = FrameLimits::new(65536, 8, 1024, 3).unwrap();
    assert!(decode(
        &with_body(&[0x81, 0xa1, b'a', 0xa3, b'x', b'y', b'z']),
        &limits
    )
    .is_ok());
    assert_eq!(
        code_of(decode(
            &with_body(&[0x81, 0xa1, b'a', 0xa4, b'w', b'x', b'y', b'z']),
            &limits
        )),
        ErrorCode::BadFrame
    );
    assert_eq!(
        code_of(decode(
            &with_body(&[0x81, 0xa4, b'w', b'x', b'y', b'z', 0x01]),
            &limits
        )),
        ErrorCode::BadFrame
    );
    assert!(decode(&with_body(&[0x81, 0xa1, b'a', 0xc4, 3, 1, 2, 3]), &limits).is_ok());
    assert_eq!(
        code_of(decode(
            &with_body(&[0x81, 0xa1, b'a', 0xc4, 4, 1, 2, 3, 4]),
            &limits
        )),
        ErrorCode::BadFrame
    );
}

/// A frame whose total size is exactly `size`: `{"a": bin}` padded to fit.
fn frame_of_size(size: usize) -> Vec<u8> {
    let payload = size - HEADER_SIZE - 3 - 5;
    let mut body = vec![0x81, 0xa1, b'a', 0xc6];
    body.extend_from_slice(&(payload as u32).to_be_bytes());
    body.extend(std::iter::repeat_n(7u8, payload));
    with_body(&body)
}

#[test]
fn frame_size_limit_is_inclusive_from_buffer_and_header() {
    let limits = FrameLimits::default();
    assert!(decode(&frame_of_size(limits.max_frame_size), &limits).is_ok());
    assert_eq!(
        code_of(decode(&frame_of_size(limits.max_frame_size + 1), &limits)),
        ErrorCode::TooLarge
    );
    // The header alone decides: declared 65537 bytes, nothing follows.
    let declared = header(6, 0, (limits.max_frame_size + 1 - HEADER_SIZE) as u32, 0, 0);
    assert_eq!(code_of(decode(&declared, &limits)), ErrorCode::TooLarge);
    let at_limit = header(6, 0, (limits.max_frame_size - HEADER_SIZE) as u32, 0, 0);
    assert_eq!(code_of(decode(&at_limit, &limits)), ErrorCode::BadFrame);
}

#[test]
fn encoder_refuses_what_the_decoder_would() {
    let limits = FrameLimits::new(65536, 2, 2, 4).unwrap();
    let frame = |fields| Frame {
        frame_type: FrameType::Send,
        conv: 0,
        seq: 0,
        fields,
    };
    let refused = |fields| encode(&frame(fields), &limits).unwrap_err().code;
    assert_eq!(
        refused(vec![("a", Value::Float(f64::NAN))]),
        ErrorCode::BadFrame
    );
    assert_eq!(
        refused(vec![("a", Value::Float(f64::NEG_INFINITY))]),
        ErrorCode::BadFrame
    );
    assert_eq!(
        refused(vec![("a", Value::Str("12345"))]),
        ErrorCode::BadFrame
    );
    assert_eq!(refused(vec![("abcde", Value::Nil)]), ErrorCode::BadFrame);
    assert_eq!(
        refused(vec![("a", Value::Array(vec![Value::Array(vec![])]))]),
        ErrorCode::BadFrame
    );
    assert_eq!(
        refused(vec![("a", Value::Array(vec![Value::Nil; 3]))]),
        ErrorCode::BadFrame
    );
    assert_eq!(
        refused(vec![
            ("a", Value::Nil),
            ("b", Value::Nil),
            ("c", Value::Nil)
        ]),
        ErrorCode::BadFrame
    );
    assert_eq!(refused(vec![("t", Value::Nil)]), ErrorCode::BadFrame);
    assert_eq!(
        refused(vec![("a", Value::Nil), ("a", Value::Nil)]),
        ErrorCode::BadFrame
    );
    assert!(encode(
        &frame(vec![("a", Value::Array(vec![Value::Nil; 2]))]),
        &limits
    )
    .is_ok());

    let small = FrameLimits::new(HEADER_SIZE + 5, 8, 1024, 65536).unwrap();
    let fits = Frame {
        frame_type: FrameType::Send,
        conv: 0,
        seq: 0,
        fields: vec![("a", Value::Int(1))],
    };
    assert_eq!(encode(&fits, &small).unwrap().len(), HEADER_SIZE + 4);
    let too_big = Frame {
        frame_type: FrameType::Send,
        conv: 0,
        seq: 0,
        fields: vec![("a", Value::Str("xy"))],
    };
    assert_eq!(
        encode(&too_big, &small).unwrap_err().code,
        ErrorCode::TooLarge
    );
}

#[test]
fn limits_are_validated() {
    assert!(FrameLimits::new(HEADER_SIZE - 1, 8, 1, 1).is_err());
    assert!(FrameLimits::new(HEADER_SIZE, 0, 1, 1).is_err());
    assert!(FrameLimits::new(HEADER_SIZE, kefu_codec::MAX_DEPTH_CEILING + 1, 1, 1).is_err());
    assert!(FrameLimits::new(HEADER_SIZE + u32::MAX as usize + 1, 8, 1, 1).is_err());
    assert_eq!(
        FrameLimits::new(65536, 8, 1024, 65536),
        Ok(FrameLimits::default())
    );
}
