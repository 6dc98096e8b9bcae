"""Run the bundled sentiment model: text -> p_neg (probability the visitor is upset), plus mood smoothing.

The model is one ONNX file (``model/sentiment.onnx``, built by ``kefu.sentiment.train``): the native
featuriser turns text into hashed n-gram ids, onnxruntime turns ids into class probabilities. The file
carries its featuriser version, hash width and lexicon in ``metadata_props``, so it is self-contained;
a model built for another featuriser version is refused instead of silently scoring garbage.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import onnxruntime

from kefu import compiled
from kefu.compiled import FEATURIZER_VERSION, Featurizer
from kefu.sentiment.onnx_tensors import TensorFormatError, initializers

BUNDLED_MODEL = "model/sentiment.onnx"


class ModelError(ValueError):
    """The model file is unusable (wrong featuriser version, missing metadata, wrong graph)."""


class SentimentModel:
    """A loaded sentiment model. Thread-safe: onnxruntime sessions and the featuriser are shareable."""

    def __init__(self, session: onnxruntime.InferenceSession, metadata: dict[str, str],
                 path: str | os.PathLike[str] | None = None) -> None:
        """`path`: where the model was read from (None: the bundled one), to read its weights again
        for the native scorer (`mood_pipe`) without keeping a second copy in memory."""
        version = metadata.get("featurizer_version")
        if version != FEATURIZER_VERSION:
            raise ModelError(
                f"model was built for featuriser {version!r}, this build has {FEATURIZER_VERSION!r}: "
                "retrain it with `make model`"
            )
        try:
            bits = int(metadata["bits"])
            self.classes: tuple[str, ...] = tuple(metadata["classes"].split(","))
            lexicon = _parse_lexicon(metadata.get("lexicon_tsv", ""))
        except (KeyError, ValueError) as error:
            raise ModelError(f"model metadata is incomplete: {error}") from error
        outputs = {output.name for output in session.get_outputs()}
        if "p_neg" not in outputs or self.classes[0] != "neg":
            raise ModelError("model has no p_neg output or its first class is not 'neg'")
        self._session = session
        self._featurizer = Featurizer(bits, lexicon)
        self._bits = bits
        self._lexicon = lexicon
        self._path = path
        self.metadata = metadata

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> SentimentModel:
        """The model at ``path`` (default: the bundled one), loaded once per process and path.

        Sessions use one intra-op and one inter-op thread: a single message takes tens of
        microseconds, and a second thread only adds hand-off latency (docs/sentiment.md).
        """
        key = (os.getpid(), None if path is None else str(Path(path).resolve()))
        with _CACHE_LOCK:
            model = _CACHE.get(key)
            if model is None:
                model = _CACHE[key] = cls._from_bytes(_read_model(path), path)
            return model

    @classmethod
    def _from_bytes(cls, model_bytes: bytes, path: str | os.PathLike[str] | None = None) -> SentimentModel:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            session = onnxruntime.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own untyped errors for malformed files
            raise ModelError(f"not a loadable ONNX model: {error}") from error
        return cls(session, dict(session.get_modelmeta().custom_metadata_map), path)

    @property
    def featurizer_version(self) -> str:
        return self.metadata["featurizer_version"]

    def predict(self, text: str) -> float:
        """Probability that ``text`` is negative (the visitor is upset), in [0, 1]."""
        ids = self._featurizer.featurize(text)[np.newaxis, :]
        mask = np.ones(ids.shape, dtype=np.float32)
        return float(self._session.run(["p_neg"], {"ids": ids, "mask": mask})[0][0])

    def mood_pipe(self, tracker: MoodTracker | None = None) -> compiled.MoodPipe:
        """The same model run natively on its own thread, with the mood tracker of `tracker`'s
        settings (kefu.compiled.MoodPipe; the data plane feeds it). This object stays the reference:
        tests compare the two on the same texts."""
        tracker = tracker or MoodTracker()
        try:
            tensors = initializers(_read_model(self._path))
        except TensorFormatError as error:
            raise ModelError(f"cannot read the model's weights: {error}") from error
        try:
            weights, bias = tensors["weights"], tensors["bias"]
        except KeyError as error:
            raise ModelError(f"model has no {error} initializer") from error
        if weights.dtype != np.float16 or weights.shape != (1 << self._bits, len(self.classes)):
            raise ModelError(f"weight table is {weights.dtype}{weights.shape}, not a linear model over the ids")
        return compiled.MoodPipe(
            weights.view(np.uint16), bias.astype(np.float32).tolist(), bits=self._bits, lexicon=self._lexicon,
            neg_class=self.classes.index("neg"), alpha=tracker.alpha, angry_threshold=tracker.angry_threshold,
            calm_threshold=tracker.calm_threshold, max_conversations=tracker.max_conversations)

    def predict_batch(self, texts: Sequence[str]) -> np.ndarray:
        """``p_neg`` for each text, float32 of shape ``(len(texts),)``."""
        if not texts:
            return np.zeros(0, dtype=np.float32)
        ids, mask = self._featurizer.featurize_batch(list(texts))
        return self._session.run(["p_neg"], {"ids": ids, "mask": mask})[0]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities ``(len(texts), len(self.classes))`` in the order of ``self.classes``."""
        if not texts:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        ids, mask = self._featurizer.featurize_batch(list(texts))
        return self._session.run(["probs"], {"ids": ids, "mask": mask})[0]


_CACHE: dict[tuple[int, str | None], SentimentModel] = {}
_CACHE_LOCK = threading.Lock()


def _read_model(path: str | os.PathLike[str] | None) -> bytes:
    if path is None:
        return resources.files("kefu.sentiment").joinpath(BUNDLED_MODEL).read_bytes()
    return Path(path).read_bytes()


def _parse_lexicon(tsv: str) -> dict[str, int]:
    lexicon = {}
    for line in tsv.splitlines():
        token, bucket = line.split("\t")
        lexicon[token] = int(bucket)
    return lexicon


@dataclass(frozen=True, slots=True)
class MoodUpdate:
    """The smoothed mood of a conversation after one message."""

    mood: float  # EWMA of p_neg
    angry: bool  # currently flagged
    turned_angry: bool  # flagged by this very message (re-route / escalate now)


@dataclass
class MoodTracker:
    """Exponentially weighted p_neg per conversation, with a hysteresis "angry" flag.

    ``mood = alpha * p_neg + (1 - alpha) * mood``; the first message sets the mood directly, so a
    conversation that opens with a complaint is flagged at once. A conversation becomes angry when the
    mood reaches ``angry_threshold`` and calm again only below ``calm_threshold``, so a mood hovering at
    the threshold does not escalate repeatedly. At most ``max_conversations`` are remembered (least
    recently updated are forgotten first), so hostile traffic cannot grow it without bound.
    """

    alpha: float = 0.4
    angry_threshold: float = 0.7
    calm_threshold: float = 0.5
    max_conversations: int = 100_000
    _moods: OrderedDict[Hashable, tuple[float, bool]] = field(
        default_factory=OrderedDict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError("alpha must be in (0, 1]")
        if not 0.0 <= self.calm_threshold <= self.angry_threshold <= 1.0:
            raise ValueError("need 0 <= calm_threshold <= angry_threshold <= 1")
        if self.max_conversations < 1:
            raise ValueError("max_conversations must be positive")

    def update(self, conversation_id: Hashable, p_neg: float) -> MoodUpdate:
        """Fold one message's ``p_neg`` into the conversation's mood."""
        p_neg = min(max(float(p_neg), 0.0), 1.0)  # NaN-free inputs assumed from the model; clamp anyway
        previous = self._moods.pop(conversation_id, None)
        if previous is None:
            mood, was_angry = p_neg, False
        else:
            mood = self.alpha * p_neg + (1.0 - self.alpha) * previous[0]
            was_angry = previous[1]
        angry = mood >= self.angry_threshold if not was_angry else mood >= self.calm_threshold
        self._moods[conversation_id] = (mood, angry)
        while len(self._moods) > self.max_conversations:
            self._moods.popitem(last=False)
        return MoodUpdate(mood=mood, angry=angry, turned_angry=angry and not was_angry)

    def mood(self, conversation_id: Hashable) -> float | None:
        """The current mood, or None for a conversation with no scored message."""
        entry = self._moods.get(conversation_id)
        return None if entry is None else entry[0]

    def forget(self, conversation_id: Hashable) -> None:
        """Drop a closed conversation."""
        self._moods.pop(conversation_id, None)

    def __len__(self) -> int:
        return len(self._moods)
