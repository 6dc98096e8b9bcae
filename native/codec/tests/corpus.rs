//! The shared attack corpus (tests/native/corpus/codec): every case is refused with the code in its
//! file name, by the tree decoder and by a no-op validating visitor, without panicking.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kefu_codec::value::decode;
use kefu_codec::FrameLimits;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/native/corpus/codec")
}

/// (case name, expected code, frame bytes) for every `*.hex` file.
fn corpus() -> Vec<(String, String, Vec<u8>)> {
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(corpus_dir()).expect("corpus directory") {
        let path = entry.expect("corpus entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".hex") else {
            continue;
        };
        let (case, code) = stem
            .rsplit_once('.')
            .expect("file name is <case>.<code>.hex");
        let text = std::fs::read_to_string(&path).unwrap();
        let hex: String = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .flat_map(|line| line.chars().filter(|c| !c.is_whitespace()))
            .collect();
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).expect("hex digits"))
            .collect();
        cases.push((case.to_owned(), code.to_owned(), bytes));
    }
    cases.sort();
    cases
}

#[test]
fn corpus_is_not_empty() {
    assert!(corpus().len() >= 40, "corpus went missing");
}

#[test]
fn every_corpus_case_is_refused_with_its_code() {
    let limits = FrameLimits::default();
    for (case, code, bytes) in corpus() {
        let started = Instant::now();
        let error = decode(&bytes, &limits).expect_err(&case);
        assert_eq!(error.code.as_str(), code, "{case}: {error}");
        // Generous bound (debug build, shared CI box): a declared 4 G length must not be honoured.
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{case} took {:?}",
            started.elapsed()
        );
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
