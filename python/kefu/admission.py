"""Limits on anonymous use: visitor sessions, new conversations and sockets, per client address and
per site (issue 8, item 5). Agents are not limited here (they log in; see LoginThrottle).

Without these, one address could create hundreds of sessions a second, fill a site's queue with
conversations nobody is behind, and hold thousands of sockets on one token. Rates use token buckets
(a burst of one minute's allowance, refilled continuously) over a bounded number of keys; socket
counts are exact and released on disconnect.
"""

from __future__ import annotations

import time
from typing import Any


class KeyedRate:
    """A token bucket per key: `per_minute` sustained, bursts up to `per_minute`. Memory is bounded:
    past `max_keys` the oldest key is forgotten (it starts again full, which only errs towards
    allowing)."""

    def __init__(self, per_minute: float, *, max_keys: int = 100_000) -> None:
        self._rate = per_minute / 60.0
        self._burst = max(per_minute, 1.0)
        self._max_keys = max_keys
        self._buckets: dict[Any, tuple[float, float]] = {}  # key → (tokens, at)

    def take(self, key: Any, now: float | None = None) -> float:
        """0 when `key` may act now (and counts the act); otherwise the seconds to wait."""
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self._rate
        if key not in self._buckets and len(self._buckets) >= self._max_keys:
            self._buckets.pop(next(iter(self._buckets)))
        self._buckets[key] = (tokens - 1.0, now)
        return 0.0


class Admission:
    """The anonymous-use limits of one server process."""

    def __init__(self, config: Any) -> None:
        self.sessions_by_address = KeyedRate(config.sessions_per_min)
        self.sessions_by_site = KeyedRate(config.site_sessions_per_min)
        self.opens_by_address = KeyedRate(config.opens_per_min)
        self.max_sockets = {"visitor": config.sockets_per_visitor, "address": config.sockets_per_address,
                            "site": config.sockets_per_site}
        self._sockets: dict[tuple[str, Any], int] = {}

    def session(self, address: str, site_id: int) -> float:
        """Seconds to wait before this address may get a visitor session on this site (0: now)."""
        wait = self.sessions_by_address.take(address)
        return wait or self.sessions_by_site.take(site_id)

    def open_conversation(self, address: str | None) -> float:
        return self.opens_by_address.take(address or "")

    @staticmethod
    def _socket_keys(principal: Any) -> list[tuple[str, Any]]:
        keys: list[tuple[str, Any]] = [("visitor", principal.id), ("site", principal.site_id)]
        if principal.addr:
            keys.append(("address", principal.addr))
        return keys

    def may_connect(self, principal: Any) -> str | None:
        """Why a new socket of `principal` is refused, or None. Visitors only."""
        if principal.role != "visitor":
            return None
        for key in self._socket_keys(principal):
            if self._sockets.get(key, 0) >= self.max_sockets[key[0]]:
                return f"too many sockets for this {key[0]}"
        return None

    def connected(self, principal: Any) -> None:
        if principal.role == "visitor":
            for key in self._socket_keys(principal):
                self._sockets[key] = self._sockets.get(key, 0) + 1

    def disconnected(self, principal: Any) -> None:
        if principal.role == "visitor":
            for key in self._socket_keys(principal):
                left = self._sockets.get(key, 0) - 1
                if left > 0:
                    self._sockets[key] = left
                else:
                    self._sockets.pop(key, None)
