//! Shared by the integration tests: the attack corpus in tests/native/corpus/codec.

use std::path::PathBuf;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/native/corpus/codec")
}

/// (case name, expected code, frame bytes) for every `*.hex` file.
pub fn corpus() -> Vec<(String, String, Vec<u8>)> {
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
