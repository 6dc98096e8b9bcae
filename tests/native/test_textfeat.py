"""The native sentiment featuriser against its pure-Python twin, a committed golden file, and hypothesis.

The golden file (tests/native/corpus/textfeat_golden.jsonl) pins the contract itself: it was written by
the reference (``python tests/native/test_textfeat.py --regenerate``), so a change to either side that
would silently invalidate the bundled model fails here.
"""

from __future__ import annotations

import json
import sys
import unicodedata
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kefu import compiled
from kefu.reference import textfeat as reference

GOLDEN = Path(__file__).parent / "corpus" / "textfeat_golden.jsonl"
GOLDEN_BITS = (18, 12)
GOLDEN_LEXICON = {"good": 2, "terrible": -3, "love": 3, "can't": -1, "0": 1}

GOLDEN_TEXTS = [
    "",
    " ",
    "\t\n  \u3000",
    "你好",
    "退款太慢了！！！",
    "请问怎么修改收货地址？",
    "麻烦帮我查一下订单号",
    "质量还不错，内容只适合边上厕所便消遣了",
    "這個產品真的很糟糕",
    "Thank you so much, that was very helpful!",
    "This is TERRIBLE. I want a refund NOW.",
    "I can't log in... again?!",
    "not good, not good at all",
    "I don't love it and it isn't good, never terrible",
    "not one two three good; not one two good; good not",
    "nothing can't no love",
    "😡😡 worst service ever",
    "👍 thanks 🙏",
    "🇨🇳🏳️‍🌈 flags",
    "订单 12345 还没到, order #12345 missing",
    "Order 0012 costs $1,299.99 on 2024-05-01",
    "１２３ＡＢＣ　全角",
    "Straße STRASSE straße",
    "ΣΊΣΥΦΟΣ σίσυφος ς",
    "İstanbul ǅ ﬁle ﬀ Ⅻ ㎏ ①",
    "Кириллица ТЕКСТ",
    "مرحبا بالعالم",
    "e\u0301 vs é, combining marks",
    "zero\u200bwidth and\u00a0nbsp\u2028line",
    "tabs\tand\x1cseparators\x1fhere",
    "control \x02\x03 sentinels inside",
    "lone \ud800 surrogate \udfff pair",
    "mixed 中文 and English 混合 text, 好的 ok",
    "a" * 2000,
    "长" * 1500,
    " ".join(f"word{i}" for i in range(600)),
    "这家店的客服态度非常差，等了三天都没有人回复，我要投诉！" * 20,
]

IMPLEMENTATIONS = {
    "native": (compiled.Featurizer, compiled.featurize, compiled.featurize_batch),
    "reference": (reference.Featurizer, reference.featurize, reference.featurize_batch),
}


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def implementation(request: pytest.FixtureRequest):
    return IMPLEMENTATIONS[request.param]


def _golden_rows() -> list[dict]:
    return [json.loads(line) for line in GOLDEN.read_text(encoding="utf-8").splitlines()]


def _golden_ids(featurizer_cls, text: str, bits: int, lexicon: bool) -> list[int]:
    return featurizer_cls(bits, GOLDEN_LEXICON if lexicon else None).featurize(text).tolist()


def test_versions_agree() -> None:
    assert compiled.FEATURIZER_VERSION == reference.FEATURIZER_VERSION
    assert f"/u{unicodedata.unidata_version}/" in reference.FEATURIZER_VERSION


def test_golden_file_covers_the_texts() -> None:
    rows = _golden_rows()
    assert len(rows) == len(GOLDEN_TEXTS) * len(GOLDEN_BITS) * 2
    assert {row["version"] for row in rows} == {reference.FEATURIZER_VERSION}


def test_matches_golden_file(implementation) -> None:
    featurizer_cls, _, _ = implementation
    for row in _golden_rows():
        assert _golden_ids(featurizer_cls, row["text"], row["bits"], row["lexicon"]) == row["ids"], row


def test_output_shape_and_dtype(implementation) -> None:
    _, featurize, _ = implementation
    for text in GOLDEN_TEXTS:
        ids = featurize(text)
        assert ids.dtype == np.int64
        assert ids.ndim == 1
        assert 3 <= len(ids) <= reference.MAX_IDS
        assert np.all(np.diff(ids) > 0)
        assert ids.min() >= 0 and ids.max() < 1 << reference.DEFAULT_BITS


def test_empty_text_is_the_three_sentinel_grams(implementation) -> None:
    _, featurize, _ = implementation
    mask = (1 << 18) - 1
    expected = sorted(zlib.crc32(f"c\x1f{gram}".encode()) & mask for gram in ("\x02", "\x03", "\x02\x03"))
    assert featurize("").tolist() == expected


def test_batch_equals_single_rows(implementation) -> None:
    featurizer_cls, featurize, featurize_batch = implementation
    ids, mask = featurize_batch(GOLDEN_TEXTS)
    assert ids.dtype == np.int64 and mask.dtype == np.float32
    assert ids.shape == mask.shape and ids.shape[0] == len(GOLDEN_TEXTS)
    for row, text in enumerate(GOLDEN_TEXTS):
        single = featurize(text)
        length = int(mask[row].sum())
        assert ids[row, :length].tolist() == single.tolist()
        assert not ids[row, length:].any() and not mask[row, length:].any()
    with_lexicon = featurizer_cls(18, GOLDEN_LEXICON)
    lex_ids, lex_mask = with_lexicon.featurize_batch(GOLDEN_TEXTS[:8])
    for row, text in enumerate(GOLDEN_TEXTS[:8]):
        assert lex_ids[row, : int(lex_mask[row].sum())].tolist() == with_lexicon.featurize(text).tolist()


def test_empty_batch(implementation) -> None:
    _, _, featurize_batch = implementation
    ids, mask = featurize_batch([])
    assert ids.shape == (0, 0) and mask.shape == (0, 0)


def test_lexicon_adds_a_bucket_id(implementation) -> None:
    featurizer_cls, _, _ = implementation
    bucket = zlib.crc32(b"v\x1f-3") & ((1 << 18) - 1)
    with_lexicon = featurizer_cls(18, {"terrible": -3})
    assert bucket in with_lexicon.featurize("So TERRIBLE!").tolist()
    assert (
        with_lexicon.featurize("so fine").tolist() == featurizer_cls(18, None).featurize("so fine").tolist()
    )
    assert with_lexicon.bits == 18 and with_lexicon.lexicon_size == 1


@pytest.mark.parametrize("bits", [0, -1, 31, 64])
def test_rejects_bad_bits(implementation, bits: int) -> None:
    featurizer_cls, _, _ = implementation
    with pytest.raises((ValueError, OverflowError)):
        featurizer_cls(bits, None)


def test_reference_normalisation_examples() -> None:
    assert reference.normalize("  Hello\tWORLD  ") == "hello world"
    assert reference.normalize("Straße") == "strasse"
    assert reference.normalize("ΣΊΣΥΦΟΣ ς") == "σίσυφοσ σ"
    assert reference.normalize("１２３ＡＢＣ　x") == "0abc x"
    assert reference.normalize("a\ud800b") == "a\ufffd\ufffd\ufffdb"  # one per byte of ED A0 80


# Code points assigned in this interpreter's Unicode database: the native NFKC tables may be newer,
# and the contract is only defined (and only matters) for assigned characters.
_assigned_text = st.text(
    alphabet=st.characters(
        codec=None,
        exclude_categories=("Cn",),
    ),
    max_size=200,
)
_chat_like = st.text(
    alphabet=st.sampled_from(
        list("abcXYZ019 '.,!?\t\n　你好退款慢谢谢ßΣςİﬁ１２😡👍\u0301\x1c\u2028\u00a0") + ["\ud800"]
    ),
    max_size=120,
)
# Word sequences that exercise the negation scope (negators, lexicon tokens, fillers).
_negation_like = st.lists(
    st.sampled_from(["not", "no", "never", "don't", "can't", "nothing", "good", "love", "terrible", "x", "0", "好"]),
    max_size=12,
).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(_assigned_text, _chat_like, _negation_like), bits=st.sampled_from([8, 18]))
def test_native_matches_reference_on_generated_text(text: str, bits: int) -> None:
    native = compiled.Featurizer(bits, GOLDEN_LEXICON).featurize(text)
    python = reference.Featurizer(bits, GOLDEN_LEXICON).featurize(text)
    assert native.tolist() == python.tolist()


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(st.one_of(_assigned_text, _chat_like), max_size=6))
def test_native_batch_matches_reference_batch(texts: list[str]) -> None:
    native_ids, native_mask = compiled.featurize_batch(texts)
    python_ids, python_mask = reference.featurize_batch(texts)
    assert np.array_equal(native_ids, python_ids)
    assert np.array_equal(native_mask, python_mask)


def test_every_assigned_bmp_code_point_matches_reference() -> None:
    """Exhaustive over the BMP: NFKC, case folding, digit and whitespace handling of each code point."""
    code_points = [
        chr(code_point)
        for code_point in range(0x10000)
        if unicodedata.category(chr(code_point)) not in ("Cn", "Cs")
    ]
    texts = [f"a{char}B7 {char}" for char in code_points]
    native_ids, native_mask = compiled.featurize_batch(texts, bits=20)
    python_ids, python_mask = reference.featurize_batch(texts, bits=20)
    mismatched = [
        f"U+{ord(char):04X}"
        for row, char in enumerate(code_points)
        if not np.array_equal(native_ids[row], python_ids[row])
    ]
    assert not mismatched, mismatched[:20]
    assert np.array_equal(native_mask, python_mask)


def _regenerate() -> None:
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    with GOLDEN.open("w", encoding="utf-8") as out:
        for text in GOLDEN_TEXTS:
            for bits in GOLDEN_BITS:
                for lexicon in (False, True):
                    row = {
                        "version": reference.FEATURIZER_VERSION,
                        "text": text,
                        "bits": bits,
                        "lexicon": lexicon,
                        "ids": _golden_ids(reference.Featurizer, text, bits, lexicon),
                    }
                    out.write(json.dumps(row, ensure_ascii=True) + "\n")


if __name__ == "__main__" and sys.argv[1:] == ["--regenerate"]:
    _regenerate()
