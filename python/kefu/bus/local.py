"""The in-process bus: one server process, so there is nobody else to tell."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from kefu.bus.base import Bus, BusEvent


class LocalBus(Bus):
    def __init__(self) -> None:
        self.node_id = secrets.token_hex(6)
        self._on_event: Callable[[BusEvent], None] | None = None

    async def start(self, on_event: Callable[[BusEvent], None]) -> None:
        self._on_event = on_event

    async def publish(self, kind: str, conv: int, frame: dict[str, Any]) -> None:
        # The publishing process already delivered to its own subscribers; no other process exists.
        return None

    async def healthy(self) -> bool:
        return self._on_event is not None

    async def close(self) -> None:
        self._on_event = None
