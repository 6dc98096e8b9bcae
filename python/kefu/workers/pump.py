"""Bring a ring's records onto the event loop, one batch per wake-up, with no thread in between.

The consumer waits in the loop itself: each ring has an eventfd that producers write when a push finds
the consumer asleep (`ShmRing.set_notify` on the producer's side), and the loop watches it
(`add_reader`). On a wake-up the pump drains the ring, then announces sleep and checks once more
(`prepare_sleep`: a record that arrived in between is drained, never missed). A producer that died in
the middle of a record leaves a claimed cell the ring skips once its process is gone; a timer drains
now and then so that the check happens even when nothing else wakes the loop.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any

log = logging.getLogger("kefu.workers")

BATCH = 1024
# How often a stalled ring (a dead producer's claimed cell) is looked at again.
STALL_CHECK_S = 0.25


def notify_fd() -> int:
    """A fresh eventfd for a ring's consumer (non-blocking; pass it to producer processes explicitly)."""
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


class RingPump:
    """Consumes `ring` (the only consumer) and calls `handle(records)` on `loop` for each batch."""

    def __init__(self, ring: Any, notify: int, loop: asyncio.AbstractEventLoop,
                 handle: Callable[[list[bytes]], None]) -> None:
        self.ring = ring
        self.notify = notify
        self.loop = loop
        self.handle = handle
        self._timer: asyncio.TimerHandle | None = None
        self._running = False

    def start(self) -> None:
        self._running = True
        self.loop.add_reader(self.notify, self._on_notified)
        self._timer = self.loop.call_later(STALL_CHECK_S, self._check_stalled)
        self._on_notified()  # whatever producers wrote before we watched

    def stop(self) -> None:
        self._running = False
        self.loop.remove_reader(self.notify)
        if self._timer is not None:
            self._timer.cancel()

    def _on_notified(self) -> None:
        try:
            os.eventfd_read(self.notify)
        except BlockingIOError:
            pass
        self.ring.end_sleep()
        while self._running:
            self._drain()
            if self.ring.prepare_sleep():  # asleep: the next push writes the eventfd
                return

    def _check_stalled(self) -> None:
        if self.ring.used_cells:
            self._on_notified()
        if self._running:
            self._timer = self.loop.call_later(STALL_CHECK_S, self._check_stalled)

    def _drain(self) -> None:
        try:
            while True:
                records = self.ring.drain(BATCH)
                if records:
                    self.handle(records)
                if len(records) < BATCH:
                    return
        except Exception:
            log.exception("ring batch failed")
