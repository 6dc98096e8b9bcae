//! Fuzz `decode_frame` (docs/protocol.md "Binary framing"; docs/fuzzing.md).
//!
//! Properties: decoding never panics, hangs or over-allocates (scripts/fuzz.sh passes `-timeout` and
//! `-malloc_limit_mb`); every accepted frame re-encodes, the re-encoding decodes to the same frame,
//! and encoding that again gives the same bytes (decode∘encode∘decode is stable, encode is canonical).
//! Tight limits are exercised too: a frame accepted under them must be accepted under the defaults.
#![no_main]

use kefu_codec::value::{decode, encode};
use kefu_codec::FrameLimits;
use libfuzzer_sys::fuzz_target;

fn check_stable(data: &[u8], limits: &FrameLimits) -> bool {
    let Ok(frame) = decode(data, limits) else {
        return false;
    };
    let encoded = encode(&frame, limits).expect("a decoded frame re-encodes under the same limits");
    let again = decode(&encoded, limits).expect("a re-encoded frame decodes");
    assert_eq!(again, frame, "decode(encode(decode(x))) != decode(x)");
    let encoded_again = encode(&again, limits).expect("second encode");
    assert_eq!(encoded_again, encoded, "encoding is not deterministic");
    true
}

fuzz_target!(|data: &[u8]| {
    let defaults = FrameLimits::default();
    let tight = FrameLimits::new(4096, 3, 8, 64).expect("valid limits");
    let accepted_by_defaults = check_stable(data, &defaults);
    if check_stable(data, &tight) {
        assert!(
            accepted_by_defaults,
            "accepted under tight limits but refused under the defaults"
        );
    }
});
