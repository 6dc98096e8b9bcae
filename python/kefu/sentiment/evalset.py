"""The hand-written chat-line evaluation sets (``data/chat_eval_{zh,en}.tsv``): read, never trained on.

Each non-comment line is ``label<TAB>kind<TAB>text``; labels follow the rubric in docs/sentiment.md
(neg: dissatisfaction, blame, anger, threats; pos: thanks, praise, relief; neu: questions, requests,
information, acknowledgements, including polite reports of a problem without emotion).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

LANGS = ("zh", "en")
LABELS = ("neg", "neu", "pos")


@dataclass(frozen=True, slots=True)
class EvalLine:
    label: str
    kind: str  # question | request | other | complaint | anger | thanks | praise
    text: str


def eval_file_bytes(lang: str) -> bytes:
    return resources.files("kefu.sentiment").joinpath(f"data/chat_eval_{lang}.tsv").read_bytes()


def load_eval_lines(lang: str) -> list[EvalLine]:
    lines = []
    for number, row in enumerate(eval_file_bytes(lang).decode("utf-8").splitlines(), 1):
        if not row.strip() or row.startswith("#"):
            continue
        label, kind, text = row.split("\t")
        if label not in LABELS or not text.strip():
            raise ValueError(f"chat_eval_{lang}.tsv:{number}: bad row {row!r}")
        lines.append(EvalLine(label, kind, text))
    return lines
