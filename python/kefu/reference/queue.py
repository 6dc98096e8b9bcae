"""Reference twin of `kefu._native.MpmcQueue`: a bounded MPMC queue on a lock and two conditions.

Same API and semantics as the native queue (see python/kefu/_native.pyi), written to be obviously
right rather than fast: every operation holds one lock. tests/native/test_queue.py runs the same
tests against both.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from typing import Any

__all__ = ["MpmcQueue", "QueueClosed", "QueueEmpty", "QueueFull"]

MAX_CAPACITY = 1 << 24


class QueueFull(Exception):
    """Raised by `MpmcQueue.put` when no space freed up before the timeout."""


class QueueEmpty(Exception):
    """Raised by `MpmcQueue.get`/`get_many` when no item arrived before the timeout."""


class QueueClosed(Exception):
    """Raised when putting into a closed queue, or getting from one that is closed and drained."""


def _deadline_after(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if math.isnan(timeout) or timeout < 0:
        raise ValueError("timeout must be a non-negative number or None")
    return time.monotonic() + timeout


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


class MpmcQueue:
    """A bounded, thread-safe FIFO of Python objects (reference implementation)."""

    def __init__(self, capacity: int) -> None:
        if not 1 <= capacity <= MAX_CAPACITY:
            raise ValueError(f"capacity must be between 1 and {MAX_CAPACITY}, got {capacity}")
        self._capacity = capacity
        self._items: collections.deque[Any] = collections.deque()
        self._closed = False
        lock = threading.Lock()
        self._items_available = threading.Condition(lock)
        self._space_available = threading.Condition(lock)

    def try_put(self, item: Any) -> bool:
        with self._space_available:
            if self._closed:
                raise QueueClosed("queue is closed")
            if len(self._items) >= self._capacity:
                return False
            self._items.append(item)
            self._items_available.notify()
            return True

    def try_get(self, default: Any = None) -> Any:
        with self._items_available:
            if self._items:
                return self._take_one()
            if self._closed:
                raise QueueClosed("queue is closed and drained")
            return default

    def put(self, item: Any, timeout: float | None = None) -> None:
        deadline = _deadline_after(timeout)
        with self._space_available:
            while True:
                if self._closed:
                    raise QueueClosed("queue is closed")
                if len(self._items) < self._capacity:
                    self._items.append(item)
                    self._items_available.notify()
                    return
                remaining = _remaining(deadline)
                if remaining is not None and remaining <= 0:
                    raise QueueFull("no space freed up before the timeout")
                self._space_available.wait(remaining)

    def get(self, timeout: float | None = None) -> Any:
        deadline = _deadline_after(timeout)
        with self._items_available:
            self._wait_for_item(deadline)
            return self._take_one()

    def get_many(self, max_items: int, timeout: float | None = None) -> list[Any]:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        deadline = _deadline_after(timeout)
        with self._items_available:
            self._wait_for_item(deadline)
            return [self._take_one() for _ in range(min(max_items, len(self._items)))]

    def close(self) -> None:
        with self._items_available:
            self._closed = True
            self._items_available.notify_all()
            self._space_available.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"MpmcQueue(capacity={self._capacity}, len={len(self._items)}, closed={self._closed})"

    def _wait_for_item(self, deadline: float | None) -> None:
        """Waits (lock held) until an item is there; raises on close-and-drained or timeout."""
        while not self._items:
            if self._closed:
                raise QueueClosed("queue is closed and drained")
            remaining = _remaining(deadline)
            if remaining is not None and remaining <= 0:
                raise QueueEmpty("no item arrived before the timeout")
            self._items_available.wait(remaining)

    def _take_one(self) -> Any:
        item = self._items.popleft()
        self._space_available.notify()
        return item
