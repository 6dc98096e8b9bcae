"""Visitors' moods for the hub: scored off the event loop, folded into each conversation's EWMA, and
turned into escalations by the router.

Two engines behind one interface (`Moods`):

- `NativeMoods` (the native data plane): the data plane hands each batch's visitor texts to a
  `kefu.compiled.MoodPipe` thread, which runs the model's linear graph in Rust and keeps the moods.
  Python hears only *alerts*: a conversation is armed with the mood at which the router could
  escalate it (`RoutingEngine.escalation_threshold`), and the pipe reports it once when the mood gets
  there. No Python runs per message; the router reads current moods through `mood_of`.
- `PythonMoods` (the reference path, KEFU_DATAPLANE=python): `MoodScorer` runs onnxruntime on a
  worker thread per batch, and every scored message goes through `MoodTracker` and
  `RoutingEngine.sentiment_changed`, as before the native pipe existed.

One ONNX call per message on the loop thread cost more than everything else a message needs
(bench: ~40 µs of the loop's time per scored message under load), so neither engine scores on the
loop. Mood is advisory: when a backlog is full a message is not scored, and that is counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Protocol

import numpy as np
from kefu.sentiment.model import MoodTracker

if TYPE_CHECKING:
    from kefu.metrics import Metrics
    from kefu.routing.engine import Outcome, RoutingEngine
    from kefu.sentiment.model import SentimentModel

log = logging.getLogger("kefu.mood")


class BatchModel(Protocol):
    def predict_batch(self, texts: Sequence[str]) -> np.ndarray: ...


Scored = Callable[[list[tuple[int, str, float]]], None]


class MoodScorer:
    def __init__(self, model: BatchModel, on_scored: Scored, *, max_pending: int = 10_000,
                 max_batch: int = 256) -> None:
        """`on_scored([(conv_id, text, p_neg), ...])` runs on the event loop, in submission order."""
        self._model = model
        self._on_scored = on_scored
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._pending: list[tuple[int, str]] = []
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kefu-mood")
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.scored = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=True, cancel_futures=True)

    def submit(self, conv_id: int, text: str) -> bool:
        """Queue a visitor's message for scoring; False (and counted) when the backlog is full."""
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            return False
        self._pending.append((conv_id, text))
        self._wakeup.set()
        return True

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch:]
                texts = [text for _, text in batch]
                try:
                    scores = await loop.run_in_executor(self._executor, self._model.predict_batch, texts)
                except Exception:
                    log.exception("mood scoring failed for a batch of %d messages", len(batch))
                    continue
                self.scored += len(batch)
                self._on_scored([(conv, text, float(p)) for (conv, text), p in zip(batch, scores)])


Apply = Callable[[list["Outcome"]], None]


class Moods(Protocol):
    def start(self) -> None: ...
    async def stop(self) -> None: ...
    def observe(self, conv_id: int, text: str) -> float:
        """Score `text` now and fold it in (a conversation's first message, routed at once)."""
    def submit(self, conv_id: int, text: str) -> None:
        """A visitor's message stored by the Python path: score it off the loop."""
    def watch(self, conv_id: int) -> None:
        """The router knows `conv_id` now (or its site's configuration changed)."""
    def mood(self, conv_id: int) -> float | None: ...
    def forget(self, conv_id: int) -> None: ...


class PythonMoods:
    """The reference: onnxruntime per batch on a thread, then Python per scored message."""

    def __init__(self, model: SentimentModel, router: RoutingEngine, metrics: Metrics, apply: Apply) -> None:
        self._model = model
        self._router = router
        self._metrics = metrics
        self._apply = apply
        self._tracker = MoodTracker()
        self._scorer = MoodScorer(model, self._on_scored)
        metrics.gauge("kefu_mood_unscored_total", "visitor messages not scored (backlog full)",
                      lambda: self._scorer.dropped)

    def start(self) -> None:
        self._scorer.start()

    async def stop(self) -> None:
        await self._scorer.stop()

    def observe(self, conv_id: int, text: str) -> float:
        return self._tracker.update(conv_id, self._model.predict(text)).mood

    def submit(self, conv_id: int, text: str) -> None:
        self._scorer.submit(conv_id, text)

    def watch(self, conv_id: int) -> None:
        pass  # every scored message reaches the router anyway

    def mood(self, conv_id: int) -> float | None:
        return self._tracker.mood(conv_id)

    def forget(self, conv_id: int) -> None:
        self._tracker.forget(conv_id)

    def _on_scored(self, scored: list[tuple[int, str, float]]) -> None:
        """Fold scored visitor messages into their conversations' moods (an EWMA of p_neg); the
        router may escalate to a stronger de-escalator when a mood turns bad (RoutingConfig.escalation)."""
        now = time.time()
        for conv_id, _text, p_neg in scored:
            mood = self._tracker.update(conv_id, p_neg)
            self._metrics.inc("kefu_messages_scored_total")
            if mood.turned_angry:
                self._metrics.inc("kefu_conversations_turned_angry_total")
            outcomes = self._router.sentiment_changed(conv_id, mood.mood, now)
            if outcomes:
                self._apply(outcomes)


class NativeMoods:
    """The native pipe: fed by the data plane once per batch; Python runs per alert, not per message."""

    def __init__(self, model: SentimentModel, router: RoutingEngine, metrics: Metrics, apply: Apply) -> None:
        self.pipe = model.mood_pipe()
        self._router = router
        self._apply = apply
        self._reading = False
        router.mood_of = self.pipe.mood
        for key, name in (("scored", "kefu_messages_scored_total"),
                          ("turned_angry", "kefu_conversations_turned_angry_total")):
            metrics.count_from(name, lambda key=key: self.pipe.stats()[key])
        metrics.gauge("kefu_mood_unscored_total", "visitor messages not scored (backlog full)",
                      lambda: self.pipe.stats()["dropped"])

    def start(self) -> None:
        asyncio.get_running_loop().add_reader(self.pipe.fileno(), self._on_alerts)
        self._reading = True

    async def stop(self) -> None:
        if self._reading:
            asyncio.get_running_loop().remove_reader(self.pipe.fileno())
            self._reading = False
        await asyncio.get_running_loop().run_in_executor(None, self.pipe.close)

    def observe(self, conv_id: int, text: str) -> float:
        return self.pipe.observe(conv_id, text)[0]

    def submit(self, conv_id: int, text: str) -> None:
        self.pipe.submit(conv_id, text)

    def watch(self, conv_id: int) -> None:
        self.pipe.arm(conv_id, self._router.escalation_threshold(conv_id))

    def mood(self, conv_id: int) -> float | None:
        return self.pipe.mood(conv_id)

    def forget(self, conv_id: int) -> None:
        self.pipe.forget(conv_id)

    def _on_alerts(self) -> None:
        """Moods reached their conversations' escalation thresholds: let the router decide, then
        re-arm (an alert fires once; a conversation that could not escalate yet, e.g. no strong
        de-escalator free, is asked again at its next message, as on the Python path)."""
        now = time.time()
        for conv_id, mood in self.pipe.take_alerts():
            outcomes = self._router.sentiment_changed(conv_id, min(max(mood, 0.0), 1.0), now)
            self.watch(conv_id)
            if outcomes:
                self._apply(outcomes)
