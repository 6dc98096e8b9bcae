//! The shared attack corpus (tests/native/corpus/codec): every case is refused with the code in its
//! file name, without panicking, also when the limits are raised far above the defaults.

mod common;

use common::corpus;
use kefu_codec::value::decode;
use kefu_codec::FrameLimits;

#[test]
fn corpus_is_not_empty() {
    assert!(corpus().len() >= 40, "corpus went missing");
}

#[test]
fn every_corpus_case_is_refused_with_its_code() {
    let limits = FrameLimits::default();
    for (case, code, bytes) in corpus() {
        let error = decode(&bytes, &limits).expect_err(&case);
        assert_eq!(error.code.as_str(), code, "{case}: {error}");
    }
}

#[test]
fn deep_nesting_is_refused_even_at_the_depth_ceiling() {
    let limits =
        FrameLimits::new(1 << 20, kefu_codec::MAX_DEPTH_CEILING, 1 << 20, 1 << 20).unwrap();
    let (_, _, bytes) = corpus()
        .into_iter()
        .find(|(case, ..)| case == "nesting-10000-fixarray")
        .unwrap();
    assert_eq!(
        decode(&bytes, &limits).unwrap_err().code.as_str(),
        "bad_frame"
    );
}

#[test]
fn chained_array16_is_refused_when_the_container_limit_allows_it() {
    // With max_container_len raised, the only defence left is "count ≤ bytes remaining".
    let limits = FrameLimits::new(1 << 20, 32, 1 << 20, 1 << 20).unwrap();
    let (_, _, bytes) = corpus()
        .into_iter()
        .find(|(case, ..)| case == "chained-array16")
        .unwrap();
    assert_eq!(
        decode(&bytes, &limits).unwrap_err().code.as_str(),
        "bad_frame"
    );
}
