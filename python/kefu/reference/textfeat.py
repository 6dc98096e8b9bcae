"""Pure-Python twin of the native sentiment featuriser (native/textfeat): the executable contract.

A text becomes the sorted, unique ids of its hashed n-grams; the ids index the weight table of the
bundled ONNX sentiment model. The steps (any change is a new ``FEATURIZER_VERSION``):

1. Lone surrogates become U+FFFD (one per invalid byte of their ``surrogatepass`` UTF-8 encoding);
   only the first ``MAX_INPUT_CHARS`` code points are read.
2. NFKC, ``str.casefold`` (full case folding), each run of ASCII digits becomes ``0``, whitespace runs
   (``str.split()``'s set) become one space, trimmed.
3. Character 1..``CHAR_NGRAM_MAX``-grams of ``"\\x02" + text + "\\x03"`` in namespace ``c``.
4. Word 1- and 2-grams of ``[a-z0-9']+`` tokens in namespace ``w`` (a bigram is ``"a b"``).
5. With a lexicon (``token -> int bucket``): the gram ``str(bucket)`` in namespace ``v`` per token found;
   when one of the ``NEGATION_SCOPE`` tokens before it is a negator (``is_negator``), also the grams
   ``str(bucket)`` and the token itself in namespace ``n``.
6. ``zlib.crc32((ns + "\\x1f" + gram).encode()) & (2**bits - 1)``; dedupe, sort, keep the
   ``MAX_IDS`` smallest.

The native kernel matches this exactly for every code point assigned in this interpreter's Unicode
database (14.0.0 on CPython 3.11); see docs/sentiment.md.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

FEATURIZER_VERSION = "kefu-textfeat-2/c1-4/w1-2/v/n3/u14.0.0/max512"
DEFAULT_BITS = 18
MAX_BITS = 30
MAX_INPUT_CHARS = 1024
MAX_IDS = 512
CHAR_NGRAM_MAX = 4
NEGATION_SCOPE = 3
NEGATORS = frozenset(
    ("cannot", "hardly", "neither", "never", "no", "nobody", "none", "nor", "not", "nothing", "nowhere", "without")
)

_ASCII_DIGIT_RUN = re.compile(r"[0-9]+", re.ASCII)
_WORD = re.compile(r"[a-z0-9']+")


def normalize(text: str) -> str:
    """Steps 1 and 2 of the contract."""
    text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")[:MAX_INPUT_CHARS]
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _ASCII_DIGIT_RUN.sub("0", text)
    return " ".join(text.split())


def is_negator(token: str) -> bool:
    """Whether ``token`` negates the lexicon tokens after it (step 5)."""
    return token.endswith("n't") or token in NEGATORS


def _hash(namespace: str, gram: str, mask: int) -> int:
    return zlib.crc32(f"{namespace}\x1f{gram}".encode()) & mask


class Featurizer:
    """Same API as ``kefu.compiled.Featurizer``."""

    def __init__(self, bits: int = DEFAULT_BITS, lexicon: Mapping[str, int] | None = None) -> None:
        if not 1 <= bits <= MAX_BITS:
            raise ValueError(f"bits must be in 1..={MAX_BITS}, got {bits}")
        self._mask = (1 << bits) - 1
        self.bits = bits
        self._lexicon_ids = {
            token: (_hash("v", str(int(bucket)), self._mask), _hash("n", str(int(bucket)), self._mask))
            for token, bucket in (lexicon or {}).items()
        }
        self.lexicon_size = len(self._lexicon_ids)

    def _ids(self, text: str) -> list[int]:
        body = normalize(text)
        framed = f"\x02{body}\x03"
        mask = self._mask
        ids = {
            _hash("c", framed[start : start + n], mask)
            for n in range(1, CHAR_NGRAM_MAX + 1)
            for start in range(len(framed) - n + 1)
        }
        tokens = _WORD.findall(body)
        for index, token in enumerate(tokens):
            ids.add(_hash("w", token, mask))
            if index:
                ids.add(_hash("w", f"{tokens[index - 1]} {token}", mask))
            lexicon_ids = self._lexicon_ids.get(token)
            if lexicon_ids is not None:
                ids.add(lexicon_ids[0])
                if any(is_negator(before) for before in tokens[max(0, index - NEGATION_SCOPE) : index]):
                    ids.add(lexicon_ids[1])
                    ids.add(_hash("n", token, mask))
        return sorted(ids)[:MAX_IDS]

    def featurize(self, text: str) -> np.ndarray:
        """Sorted unique ids of one text (int64)."""
        return np.array(self._ids(text), dtype=np.int64)

    def featurize_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Ids ``(B, L)`` int64 and mask ``(B, L)`` float32, padded to the longest row."""
        rows = [self._ids(text) for text in texts]
        width = max(map(len, rows), default=0)
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.float32)
        for row_index, row in enumerate(rows):
            ids[row_index, : len(row)] = row
            mask[row_index, : len(row)] = 1.0
        return ids, mask

    def __repr__(self) -> str:
        return f"Featurizer(bits={self.bits}, lexicon_size={self.lexicon_size})"


def featurize(text: str, bits: int = DEFAULT_BITS) -> np.ndarray:
    """Sorted unique ids of one text, without a lexicon."""
    return Featurizer(bits).featurize(text)


def featurize_batch(texts: Sequence[str], bits: int = DEFAULT_BITS) -> tuple[np.ndarray, np.ndarray]:
    """Padded ids and mask for a list of texts, without a lexicon."""
    return Featurizer(bits).featurize_batch(texts)
