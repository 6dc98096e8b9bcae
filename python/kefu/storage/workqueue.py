"""The hand-off queue between the event loop and the SQLite writer thread.

The writer needs two things from it: `put(item)` from the loop thread without blocking it, and
`get_many(max_items, timeout)` that blocks (without holding the GIL) until at least one item is there
and then takes everything pending up to `max_items`: that "everything pending" is the group commit.
"""

from __future__ import annotations

import queue
from typing import Any


class WorkQueue:
    """Unbounded FIFO: many producers, one consumer (the writer thread)."""

    __slots__ = ("_closed", "_items")

    def __init__(self) -> None:
        self._items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False

    def put(self, item: Any) -> None:
        if self._closed:
            raise RuntimeError("queue is closed")
        self._items.put(item)

    def get_many(self, max_items: int, timeout: float) -> list[Any]:
        """Wait up to `timeout` seconds for one item, then take up to `max_items` without waiting."""
        try:
            first = self._items.get(timeout=timeout)
        except queue.Empty:
            return []
        taken = [first]
        get_nowait = self._items.get_nowait
        while len(taken) < max_items:
            try:
                taken.append(get_nowait())
            except queue.Empty:
                break
        return taken

    def close(self) -> None:
        self._closed = True
