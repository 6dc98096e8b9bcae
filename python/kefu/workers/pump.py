"""Bring a ring's records onto the event loop: a thread sleeps on the ring's futex (GIL released) and
hands batches to the loop, one wake-up per batch rather than one per record."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("kefu.workers")

BATCH = 1024


class RingPump:
    """Consumes `ring` (the only consumer) and calls `handle(records)` on `loop` for each batch."""

    def __init__(self, ring: Any, loop: asyncio.AbstractEventLoop, handle: Callable[[list[bytes]], None]) -> None:
        self.ring = ring
        self.loop = loop
        self.handle = handle
        self._stop = threading.Event()
        self._drained = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kefu-ring-pump", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._drained.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.ring.wait(0.25)
            if self._stop.is_set():
                return
            self._drained.clear()
            try:
                self.loop.call_soon_threadsafe(self._drain)
            except RuntimeError:  # the loop closed under us: shutting down
                return
            # Sleep on the futex again only after the loop emptied the ring: no busy polling.
            self._drained.wait()

    def _drain(self) -> None:
        try:
            while True:
                records = self.ring.drain(BATCH)
                if records:
                    self.handle(records)
                if len(records) < BATCH:
                    break
        except Exception:
            log.exception("ring batch failed")
        finally:
            self._drained.set()
