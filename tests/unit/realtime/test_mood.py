"""Batched mood scoring off the event loop."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
from kefu.realtime.mood import MoodScorer


class FakeModel:
    """Scores len(text)/100 and records which thread and batch sizes it saw."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[int] = []
        self.threads: set[str] = set()
        self.fail_on = fail_on

    def predict_batch(self, texts):
        self.threads.add(threading.current_thread().name)
        self.batches.append(len(texts))
        if self.fail_on in texts:
            raise RuntimeError("model broke")
        return np.array([len(t) / 100 for t in texts], dtype=np.float32)


async def test_scores_arrive_in_order_in_batches_from_a_worker_thread() -> None:
    model = FakeModel()
    results: list[tuple[int, str, float]] = []
    scorer = MoodScorer(model, results.extend, max_batch=4)
    scorer.start()
    for i in range(10):
        assert scorer.submit(i, "x" * i)
    while len(results) < 10:
        await asyncio.sleep(0.01)
    await scorer.stop()
    assert [(c, t) for c, t, _ in results] == [(i, "x" * i) for i in range(10)]
    assert [round(p, 2) for _, _, p in results] == [i / 100 for i in range(10)]
    assert max(model.batches) <= 4 and sum(model.batches) == 10
    assert all(name.startswith("kefu-mood") for name in model.threads)


async def test_backlog_is_bounded_and_failures_do_not_stop_scoring() -> None:
    model = FakeModel(fail_on="boom")
    results: list[tuple[int, str, float]] = []
    scorer = MoodScorer(model, results.extend, max_pending=3, max_batch=1)
    assert [scorer.submit(1, t) for t in ("a", "boom", "c", "d")] == [True, True, True, False]
    assert scorer.dropped == 1
    scorer.start()
    while len(results) < 2:
        await asyncio.sleep(0.01)
    await scorer.stop()
    assert [t for _, t, _ in results] == ["a", "c"] and scorer.scored == 2

