"""The bus interface."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class BusEvent:
    """An event for other server processes: `kind` ("msg", "conv", "typing", "read") about `conv`,
    with the frame as the originating process sent it to its own subscribers."""

    origin: str  # id of the publishing process; a process ignores its own events
    kind: str
    conv: int
    frame: dict[str, Any]


class Bus(abc.ABC):
    """Publish/subscribe between server processes. Delivery is at most once (a hint)."""

    node_id: str

    @abc.abstractmethod
    async def start(self, on_event: Callable[[BusEvent], None]) -> None:
        """Begin delivering other processes' events to `on_event` (called on the event loop)."""

    @abc.abstractmethod
    async def publish(self, kind: str, conv: int, frame: dict[str, Any]) -> None: ...

    @abc.abstractmethod
    async def healthy(self) -> bool:
        """True when a probe published now comes back: health means delivering, not connected."""

    @abc.abstractmethod
    async def close(self) -> None: ...
