//! A fuzz-like test that runs in CI in well under a second: fixed-seed random mutations (flip, insert,
//! delete, truncate, header-field rewrites) of valid frames. Every result is either a typed error or a
//! frame whose canonical re-encoding decodes to the same frame (decode∘encode∘decode is stable).

use kefu_codec::value::{decode, encode};
use kefu_codec::{Frame, FrameLimits, FrameType, Value};

/// xorshift64*: deterministic and dependency-free; quality is irrelevant here.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let limits = FrameLimits::default();
    let frames = [
        Frame {
            frame_type: FrameType::Msg,
            conv: 9,
            seq: 300,
            fields: vec![
                ("id", Value::Str("m1")),
                ("text", Value::Str("你好, where is my parcel?")),
                ("at", Value::Float(1.7e9)),
                (
                    "tags",
                    Value::Array(vec![Value::Str("vip"), Value::Int(-5), Value::Nil]),
                ),
                (
                    "meta",
                    Value::Map(vec![
                        ("ok", Value::Bool(true)),
                        ("raw", Value::Bin(b"\x01\x02")),
                    ]),
                ),
            ],
        },
        Frame {
            frame_type: FrameType::Ping,
            conv: 0,
            seq: 0,
            fields: vec![],
        },
        Frame {
            frame_type: FrameType::Send,
            conv: 1,
            seq: 0,
            fields: vec![("n", Value::UInt(u64::MAX))],
        },
    ];
    frames
        .iter()
        .map(|frame| encode(frame, &limits).unwrap())
        .collect()
}

fn mutate(rng: &mut Rng, input: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !input.is_empty() => {
                let at = rng.below(input.len());
                input[at] ^= 1 << rng.below(8);
            }
            1 if !input.is_empty() => {
                let at = rng.below(input.len());
                input[at] = rng.next() as u8;
            }
            2 => {
                let at = rng.below(input.len() + 1);
                input.insert(at, rng.next() as u8);
            }
            3 if !input.is_empty() => {
                input.remove(rng.below(input.len()));
            }
            4 => input.truncate(rng.below(input.len() + 1)),
            _ if input.len() >= 8 => {
                // Rewrite body_len to stay consistent, so mutations reach the body parser.
                let body_len = input.len().saturating_sub(24) as u32;
                input[4..8].copy_from_slice(&body_len.to_le_bytes());
            }
            _ => {}
        }
    }
}

#[test]
fn random_mutations_never_panic_and_accepted_frames_are_stable() {
    let limits = FrameLimits::default();
    let seeds = seeds();
    let mut rng = Rng(0x6b65_6675_2d63_6f64);
    let (mut accepted, mut refused) = (0, 0);
    for round in 0..60_000 {
        let mut input = seeds[round % seeds.len()].clone();
        mutate(&mut rng, &mut input);
        match decode(&input, &limits) {
            Ok(frame) => {
                accepted += 1;
                let again = encode(&frame, &limits).expect("a decoded frame re-encodes");
                assert_eq!(
                    decode(&again, &limits).expect("re-encoded frame decodes"),
                    frame,
                    "{input:02x?}"
                );
            }
            Err(_) => refused += 1,
        }
    }
    assert!(
        accepted > 100 && refused > 100,
        "mutations too tame or too wild: {accepted} / {refused}"
    );
}
