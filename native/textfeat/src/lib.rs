//! Kefu's sentiment featuriser: a text becomes a short, sorted list of hashed n-gram ids.
//!
//! The ids index the weight table of the bundled ONNX sentiment model, so this crate and the Python
//! reference twin (`kefu.reference.textfeat`) implement one contract, versioned by
//! [`FEATURIZER_VERSION`]; any change to what follows needs a new version (and a retrained model):
//!
//! 1. Lone surrogates are already replaced by U+FFFD (done by the binding); keep the first
//!    [`MAX_INPUT_CHARS`] code points, which bounds the work a hostile message can cause.
//! 2. NFKC, then full Unicode case folding (`str.casefold`, table generated from CPython), then each
//!    run of ASCII digits becomes `0`, then whitespace runs (Python's `str.split()` set) become one
//!    space, trimmed at both ends.
//! 3. Character 1..=[`CHAR_NGRAM_MAX`] (4)-grams of `"\x02" + text + "\x03"` (code points), namespace `c`.
//! 4. Word 1- and 2-grams of the `[a-z0-9']+` tokens, namespace `w` (a bigram is `"a b"`).
//! 5. Optionally, for each token found in a lexicon, the gram `"<bucket>"` in namespace `v`, where the
//!    bucket is the integer the lexicon maps the token to (e.g. VADER valence rounded, `-3`).
//!    When one of the [`NEGATION_SCOPE`] tokens before it is a negator ([`is_negator`]: `not`, `never`,
//!    `no`, ... or any token ending in `n't`), also the grams `"<bucket>"` and `token` in namespace `n`,
//!    so "not good" and "never helpful" stop counting only as praise.
//! 6. Each gram hashes to `crc32(ns + "\x1f" + gram) & (2^bits - 1)` (IEEE CRC-32 over UTF-8).
//! 7. Ids are deduplicated and sorted; only the [`MAX_IDS`] smallest are kept.

mod casefold_table;

use std::collections::HashMap;
use std::fmt;

use unicode_normalization::UnicodeNormalization;

pub use casefold_table::UNICODE_VERSION;

/// Version of the contract above; models record it and the runtime refuses a mismatch.
pub const FEATURIZER_VERSION: &str = "kefu-textfeat-2/c1-4/w1-2/v/n3/u14.0.0/max512";
/// Default hash width: 2^18 buckets.
pub const DEFAULT_BITS: u32 = 18;
/// Widest accepted hash (ids stay well inside int32 and a model's weight table stays sane).
pub const MAX_BITS: u32 = 30;
/// Code points of input considered; the rest of a longer message is ignored.
pub const MAX_INPUT_CHARS: usize = 1024;
/// Ids kept per text (the smallest after sorting).
pub const MAX_IDS: usize = 512;
/// Longest character n-gram.
pub const CHAR_NGRAM_MAX: usize = 4;
/// A lexicon token is negated when a negator is among this many tokens before it.
pub const NEGATION_SCOPE: usize = 3;
/// Negating tokens besides those ending in `n't` (sorted, for the binary search).
pub const NEGATORS: [&str; 12] = [
    "cannot", "hardly", "neither", "never", "no", "nobody", "none", "nor", "not", "nothing",
    "nowhere", "without",
];

const TEXT_START: char = '\u{2}';
const TEXT_END: char = '\u{3}';

/// Why a [`Featurizer`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeaturizerError {
    /// `bits` outside `1..=MAX_BITS`.
    BitsOutOfRange(u32),
}

impl fmt::Display for FeaturizerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BitsOutOfRange(bits) => write!(f, "bits must be in 1..={MAX_BITS}, got {bits}"),
        }
    }
}

impl std::error::Error for FeaturizerError {}

/// Hashes texts into sorted n-gram ids. Immutable after construction, so one instance can be shared
/// by any number of threads.
#[derive(Debug, Clone)]
pub struct Featurizer {
    bits: u32,
    mask: u32,
    /// Token -> ids of its lexicon bucket gram in namespaces `v` and `n` (negated), hashed once here
    /// instead of per occurrence.
    lexicon_ids: HashMap<String, (u32, u32)>,
}

/// Reusable buffers, so a batch allocates once instead of once per text.
#[derive(Debug, Default)]
pub struct Scratch {
    normalized: String,
    char_starts: Vec<usize>,
    ids: Vec<u32>,
}

impl Featurizer {
    /// A featuriser with `2^bits` buckets and an optional lexicon of `token -> bucket`.
    ///
    /// Lexicon tokens are used as given: only keys that can be produced as tokens (lower-case
    /// `[a-z0-9']+`, digit runs as `0`) ever match.
    pub fn new<I, S>(bits: u32, lexicon: I) -> Result<Self, FeaturizerError>
    where
        I: IntoIterator<Item = (S, i64)>,
        S: Into<String>,
    {
        if !(1..=MAX_BITS).contains(&bits) {
            return Err(FeaturizerError::BitsOutOfRange(bits));
        }
        let mask = (1u32 << bits) - 1;
        let lexicon_ids = lexicon
            .into_iter()
            .map(|(token, bucket)| {
                let bucket = bucket.to_string();
                (
                    token.into(),
                    (
                        hash_gram(b"v", bucket.as_bytes()) & mask,
                        hash_gram(b"n", bucket.as_bytes()) & mask,
                    ),
                )
            })
            .collect();
        Ok(Self {
            bits,
            mask,
            lexicon_ids,
        })
    }

    /// Hash width in bits.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Number of lexicon entries.
    pub fn lexicon_len(&self) -> usize {
        self.lexicon_ids.len()
    }

    /// The ids of `text` (sorted, unique, at most [`MAX_IDS`]).
    pub fn featurize(&self, text: &str) -> Vec<u32> {
        let mut scratch = Scratch::default();
        self.featurize_with(text, &mut scratch).to_vec()
    }

    /// The ids of `text`, computed in `scratch`'s buffers; valid until `scratch` is used again.
    pub fn featurize_with<'s>(&self, text: &str, scratch: &'s mut Scratch) -> &'s [u32] {
        let Scratch {
            normalized,
            char_starts,
            ids,
        } = scratch;
        normalized.clear();
        normalized.push(TEXT_START);
        normalize_into(text, normalized);
        let body_end = normalized.len();
        normalized.push(TEXT_END);
        ids.clear();

        char_starts.clear();
        char_starts.extend(normalized.char_indices().map(|(offset, _)| offset));
        char_starts.push(normalized.len());
        let char_count = char_starts.len() - 1;
        // The grams starting at one character share their prefix ("c", "ca", "cat", "cats"): one
        // running CRC per start position hashes each character once instead of up to four times.
        let char_ns = NamespaceHasher::new(b"c");
        let bytes = normalized.as_bytes();
        for start in 0..char_count {
            let mut crc = char_ns.start();
            for end in start + 1..=(start + CHAR_NGRAM_MAX).min(char_count) {
                crc = crc.update(&bytes[char_starts[end - 1]..char_starts[end]]);
                ids.push(crc.finish() & self.mask);
            }
        }

        let body = &normalized[TEXT_START.len_utf8()..body_end];
        let word_ns = NamespaceHasher::new(b"w");
        let negated_ns = NamespaceHasher::new(b"n");
        let mut previous: Option<&str> = None;
        // Tokens since the last negator; NEGATION_SCOPE + 1 means "none in scope".
        let mut since_negator = NEGATION_SCOPE + 1;
        for token in body
            .split(|c: char| !is_word_char(c))
            .filter(|t| !t.is_empty())
        {
            ids.push(word_ns.hash(&[token.as_bytes()]) & self.mask);
            if let Some(previous) = previous {
                ids.push(word_ns.hash(&[previous.as_bytes(), b" ", token.as_bytes()]) & self.mask);
            }
            if let Some(&(lexicon_id, negated_id)) = self.lexicon_ids.get(token) {
                ids.push(lexicon_id);
                if since_negator <= NEGATION_SCOPE {
                    ids.push(negated_id);
                    ids.push(negated_ns.hash(&[token.as_bytes()]) & self.mask);
                }
            }
            since_negator = if is_negator(token) {
                1
            } else {
                (since_negator + 1).min(NEGATION_SCOPE + 1)
            };
            previous = Some(token);
        }

        ids.sort_unstable();
        ids.dedup();
        ids.truncate(MAX_IDS);
        ids
    }
}

/// Step 2 of the contract, appended to `out`: NFKC, case fold, digit runs to `0`, whitespace
/// collapsed and trimmed. Reads at most [`MAX_INPUT_CHARS`] code points of `text`.
pub fn normalize_into(text: &str, out: &mut String) {
    let mut collapser = Collapser {
        out,
        start_len: 0,
        pending_space: false,
        in_digit_run: false,
    };
    collapser.start_len = collapser.out.len();
    let head = match text.char_indices().nth(MAX_INPUT_CHARS) {
        Some((cut, _)) => &text[..cut],
        None => text,
    };
    if head.is_ascii() {
        // NFKC is the identity on ASCII and folding is lower-casing: skip the decomposition machinery.
        head.chars()
            .for_each(|c| collapser.push(c.to_ascii_lowercase()));
    } else {
        for c in head.chars().nfkc() {
            match casefold(c) {
                Folded::Same(c) => collapser.push(c),
                Folded::Expanded(folded) => folded.chars().for_each(|f| collapser.push(f)),
            }
        }
    }
}

/// The normalised form of `text` (step 2 of the contract).
pub fn normalize(text: &str) -> String {
    let mut out = String::new();
    normalize_into(text, &mut out);
    out
}

/// Digit-run and whitespace collapsing over the folded character stream.
struct Collapser<'a> {
    out: &'a mut String,
    start_len: usize,
    pending_space: bool,
    in_digit_run: bool,
}

impl Collapser<'_> {
    fn push(&mut self, c: char) {
        if is_python_whitespace(c) {
            self.pending_space = self.out.len() > self.start_len;
            self.in_digit_run = false;
            return;
        }
        if self.pending_space {
            self.out.push(' ');
            self.pending_space = false;
        }
        if c.is_ascii_digit() {
            if !self.in_digit_run {
                self.out.push('0');
                self.in_digit_run = true;
            }
        } else {
            self.out.push(c);
            self.in_digit_run = false;
        }
    }
}

enum Folded {
    Same(char),
    Expanded(&'static str),
}

/// Full case folding of one code point, exactly as CPython's `str.casefold` does it.
fn casefold(c: char) -> Folded {
    if c.is_ascii() {
        return Folded::Same(c.to_ascii_lowercase());
    }
    match casefold_table::CASEFOLD.binary_search_by_key(&c, |&(from, _)| from) {
        Ok(index) => Folded::Expanded(casefold_table::CASEFOLD[index].1),
        Err(_) => Folded::Same(c),
    }
}

/// Python's `str.isspace` set (what `str.split()` splits on), which differs from Rust's
/// `char::is_whitespace` (e.g. U+001C..U+001F are Python whitespace, U+200B is neither).
pub fn is_python_whitespace(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | '\u{1c}'..='\u{1f}' | ' ' | '\u{85}' | '\u{a0}'
            | '\u{1680}' | '\u{2000}'..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}'
            | '\u{3000}'
    )
}

/// Whether `token` negates the lexicon tokens after it (step 5 of the contract).
pub fn is_negator(token: &str) -> bool {
    token.ends_with("n't") || NEGATORS.binary_search(&token).is_ok()
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '\''
}

/// CRC-32 state after `ns + "\x1f"`, cloned per gram so the prefix is hashed once.
/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320: zlib's `crc32`, which the Python twin
/// uses) one byte per step from a 256-entry table. Grams are 1–16 bytes, where a table lookup per
/// byte beats a SIMD implementation's setup, and the state is a plain value a caller can extend.
#[derive(Clone, Copy)]
struct Crc(u32);

const CRC_TABLE: [u32; 256] = crc_table();

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                0xEDB8_8320 ^ (crc >> 1)
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[byte] = crc;
        byte += 1;
    }
    table
}

impl Crc {
    const fn new() -> Self {
        Crc(0xFFFF_FFFF)
    }

    fn update(self, bytes: &[u8]) -> Self {
        Crc(bytes.iter().fold(self.0, |crc, &byte| {
            CRC_TABLE[((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8)
        }))
    }

    fn finish(self) -> u32 {
        !self.0
    }
}

/// The CRC state after `namespace + "\x1f"`, computed once per namespace.
struct NamespaceHasher(Crc);

impl NamespaceHasher {
    fn new(namespace: &[u8]) -> Self {
        Self(Crc::new().update(namespace).update(b"\x1f"))
    }

    fn start(&self) -> Crc {
        self.0
    }

    fn hash(&self, parts: &[&[u8]]) -> u32 {
        parts
            .iter()
            .fold(self.0, |crc, part| crc.update(part))
            .finish()
    }
}

fn hash_gram(namespace: &[u8], gram: &[u8]) -> u32 {
    NamespaceHasher::new(namespace).hash(&[gram])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> Featurizer {
        Featurizer::new(DEFAULT_BITS, std::iter::empty::<(String, i64)>()).unwrap()
    }

    #[test]
    fn normalizes_like_the_contract() {
        assert_eq!(normalize("  Hello\tWORLD  "), "hello world");
        assert_eq!(normalize("Order 12345 and 6"), "order 0 and 0");
        assert_eq!(normalize("１２３ＡＢＣ"), "0abc");
        assert_eq!(normalize("Straße"), "strasse");
        assert_eq!(normalize("ΣΊΣΥΦΟΣ ς"), "σίσυφοσ σ");
        assert_eq!(normalize("ﬁne\u{1c}x\u{3000}y"), "fine x y");
        assert_eq!(normalize("12 34"), "0 0");
        assert_eq!(normalize(""), "");
        assert_eq!(normalize(" \n "), "");
    }

    #[test]
    fn caps_input_length() {
        let long = "a".repeat(MAX_INPUT_CHARS + 100);
        assert_eq!(normalize(&long).chars().count(), MAX_INPUT_CHARS);
        let long_cjk = "好".repeat(MAX_INPUT_CHARS + 5);
        assert_eq!(normalize(&long_cjk).chars().count(), MAX_INPUT_CHARS);
    }

    #[test]
    fn ids_are_sorted_unique_bounded_and_masked() {
        let featurizer = Featurizer::new(10, std::iter::empty::<(String, i64)>()).unwrap();
        for text in [
            "",
            "hi",
            "退款太慢了！！",
            &"word ".repeat(400),
            &"长文本".repeat(500),
        ] {
            let ids = featurizer.featurize(text);
            assert!(!ids.is_empty());
            assert!(ids.len() <= MAX_IDS);
            assert!(ids.windows(2).all(|pair| pair[0] < pair[1]));
            assert!(ids.iter().all(|&id| id < 1 << 10));
        }
    }

    #[test]
    fn empty_text_has_only_sentinel_grams() {
        let mut expected: Vec<u32> = ["\u{2}", "\u{3}", "\u{2}\u{3}"]
            .iter()
            .map(|gram| hash_gram(b"c", gram.as_bytes()) & ((1 << DEFAULT_BITS) - 1))
            .collect();
        expected.sort_unstable();
        assert_eq!(plain().featurize(""), expected);
        assert_eq!(plain().featurize(" \t "), expected);
    }

    #[test]
    fn known_hash_matches_zlib() {
        // Values computed with Python's zlib.crc32.
        assert_eq!(Crc::new().update(b"123456789").finish(), 0xCBF4_3926);
        assert_eq!(Crc::new().update(b"").finish(), 0);
        assert_eq!(hash_gram(b"w", b"good"), 0x0895_0D07);
        // zlib.crc32(b"c\x1f\xe4\xbd\xa0\xe5\xa5\xbd") in Python: a multi-byte gram.
        assert_eq!(hash_gram(b"c", "你好".as_bytes()), 0x4BB0_8DF4);
    }

    #[test]
    fn lexicon_adds_bucket_ids() {
        let with = Featurizer::new(DEFAULT_BITS, [("terrible".to_string(), -3)]).unwrap();
        let bucket = hash_gram(b"v", b"-3") & ((1 << DEFAULT_BITS) - 1);
        assert!(with.featurize("so TERRIBLE").contains(&bucket));
        assert_eq!(with.featurize("so fine"), plain().featurize("so fine"));
        assert_eq!(with.lexicon_len(), 1);
    }

    #[test]
    fn negated_lexicon_tokens_add_negation_ids() {
        let with = Featurizer::new(DEFAULT_BITS, [("good".to_string(), 2)]).unwrap();
        let mask = (1 << DEFAULT_BITS) - 1;
        let negated = [
            hash_gram(b"n", b"2") & mask,
            hash_gram(b"n", b"good") & mask,
        ];
        let has_negation = |text: &str| {
            let ids = with.featurize(text);
            let found = negated.iter().filter(|id| ids.contains(id)).count();
            assert!(found == 0 || found == 2, "{text}: {found}");
            found == 2
        };
        assert!(has_negation("not good"));
        assert!(has_negation("it isn't very good"));
        assert!(has_negation("never a b good"));
        assert!(!has_negation("never a b c good"));
        assert!(!has_negation("good, not bad"));
        assert!(!has_negation("good"));
        assert!(is_negator("don't") && is_negator("no") && !is_negator("note"));
        assert!(NEGATORS.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn rejects_bad_bits() {
        assert_eq!(
            Featurizer::new(0, std::iter::empty::<(String, i64)>()).unwrap_err(),
            FeaturizerError::BitsOutOfRange(0)
        );
        assert!(Featurizer::new(MAX_BITS + 1, std::iter::empty::<(String, i64)>()).is_err());
    }

    #[test]
    fn scratch_reuse_gives_same_ids() {
        let featurizer = plain();
        let mut scratch = Scratch::default();
        let first = featurizer
            .featurize_with("long enough text here", &mut scratch)
            .to_vec();
        featurizer.featurize_with("x", &mut scratch);
        assert_eq!(
            featurizer.featurize_with("long enough text here", &mut scratch),
            first.as_slice()
        );
    }
}
