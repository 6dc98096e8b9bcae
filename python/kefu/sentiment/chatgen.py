"""Synthetic customer-service chat lines with labels, for the neutral class the packaged data lacks.

The packaged corpora are product reviews (and, for English, tweets and editorial snippets): nothing in
them looks like "请问怎么修改收货地址？", so a model trained on them alone scores ordinary questions as
complaints. This module composes chat lines from templates and wide slot vocabularies
(``chatgen_zh``, ``chatgen_en``): questions and requests about orders, shipping, billing, accounts,
products, opening hours, returns (neutral, polite and plain registers), complaints and anger (negative)
and thanks and praise (positive).

Labels come from construction and are checked by a lexicon (``weak_label``): a neutral line in which
the lexicon finds sentiment, or a negative/positive line in which it finds none of that polarity, is
dropped. The output is deterministic: one ``random.Random`` seeded with a string per language and
class (string seeds are hashed with SHA-512, stable across runs and platforms), no global state.

The hand-written evaluation lines (``data/chat_eval_*.tsv``) were written before this module and are
never read by it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType

from kefu.reference.textfeat import normalize
from kefu.sentiment import chatgen_en, chatgen_zh

GENERATOR_VERSION = "chatgen-v1"
LABELS = ("neg", "neu", "pos")
_SLOT = re.compile(r"\{([a-z_0-9]+)\}")
_WORD = re.compile(r"[a-z0-9']+")
_VOCABULARIES: dict[str, ModuleType] = {"zh": chatgen_zh, "en": chatgen_en}
#: Draws allowed per wanted line before giving up (templates can collide into duplicates).
_ATTEMPTS_PER_LINE = 20


@dataclass(frozen=True, slots=True)
class ChatLine:
    text: str
    label: str  # neg | neu | pos
    lang: str  # zh | en
    kind: str  # the template family, e.g. "order", "complaint", "thanks"


def fill(template: str, slots: Mapping[str, Sequence[str]], rng: random.Random) -> str:
    """``template`` with every ``{slot}`` replaced by a draw from ``slots`` (each occurrence drawn anew;
    slot values may themselves contain slots, expanded up to a small depth)."""
    text = template
    for _ in range(4):
        expanded = _SLOT.sub(lambda match: rng.choice(slots[match.group(1)]), text)
        if expanded == text:
            break
        text = expanded
    return text


def weak_label(text: str, lang: str) -> str | None:
    """The lexicon's opinion: "neg", "pos", "neu" (no cue at all) or None (cues of both polarities).

    Gratitude ("谢谢", "thanks") counts as positive only in a line that is not also a question or a
    request: "帮我查一下订单，谢谢" is a polite request (neutral), "好的，谢谢" is thanks (positive)."""
    vocabulary = _VOCABULARIES[lang]
    normalised = normalize(text)
    if lang == "en":  # whole words and phrases: "kind" must not match "kindle"
        haystack = " " + " ".join(_WORD.findall(normalised)) + " "

        def has(cue: str) -> bool:
            return f" {cue.replace('-', ' ')} " in haystack
    else:

        def has(cue: str) -> bool:
            return cue in normalised

    negative = any(has(cue) for cue in vocabulary.NEGATIVE_CUES)
    positive = any(has(cue) for cue in vocabulary.POSITIVE_CUES)
    if not positive and any(has(cue) for cue in vocabulary.GRATITUDE_CUES):
        positive = not any(marker in normalised for marker in vocabulary.REQUEST_MARKERS)
    if negative and positive:
        return None
    return "neg" if negative else "pos" if positive else "neu"


def _agrees(line: ChatLine) -> bool:
    opinion = weak_label(line.text, line.lang)
    if line.label == "neu":
        return opinion == "neu"
    # A complaint may thank in passing and praise may mention a problem solved: only require that the
    # lexicon sees the labelled polarity.
    return opinion in (line.label, None)


def generate(lang: str, counts: Mapping[str, int]) -> list[ChatLine]:
    """``counts[label]`` distinct lines per label (fewer if the templates run dry), in a fixed order."""
    vocabulary = _VOCABULARIES[lang]
    lines: list[ChatLine] = []
    for label in LABELS:
        wanted = counts.get(label, 0)
        families: dict[str, Sequence[str]] = vocabulary.TEMPLATES[label]
        kinds = sorted(families)
        rng = random.Random(f"{GENERATOR_VERSION}/{lang}/{label}")
        seen: set[str] = set()
        for _ in range(wanted * _ATTEMPTS_PER_LINE):
            if len(seen) >= wanted:
                break
            kind = rng.choice(kinds)
            body = fill(rng.choice(families[kind]), vocabulary.SLOTS, rng)
            text = fill(rng.choice(vocabulary.FRAMES[label]), {**vocabulary.SLOTS, "body": (body,)}, rng)
            key = normalize(text)
            if key in seen:
                continue
            line = ChatLine(text, label, lang, kind)
            if _agrees(line):
                seen.add(key)
                lines.append(line)
    return lines
