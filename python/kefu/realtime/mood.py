"""Scores visitors' messages for mood off the event loop, in batches.

One ONNX call per message on the loop thread cost more than everything else a message needs
(bench: ~40 µs of the loop's time per scored message under load). Here the loop only appends the
text to a bounded backlog; one worker thread featurises and runs the model for a whole batch (both
release the GIL, so it overlaps the loop), and the results come back to the loop in one callback.
Mood is advisory: when the backlog is full a message is not scored, and that is counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

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

    def submit_many(self, messages: list[tuple[int, str]]) -> int:
        """Queue a batch of (conv_id, text) at once (the native data plane's per-batch hand-over);
        returns how many were queued, the rest are counted as dropped."""
        room = max(0, self._max_pending - len(self._pending))
        taken = messages[:room]
        self.dropped += len(messages) - len(taken)
        if taken:
            self._pending.extend(taken)
            self._wakeup.set()
        return len(taken)

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
