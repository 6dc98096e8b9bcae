"""A deadline on slow HTTP clients (slowloris), which aiohttp does not impose by itself.

aiohttp waits for a request head as long as the client keeps the connection open, so connections
with partial headers, or no bytes at all, stayed open for minutes, sharing the process's descriptors
with the WebSocket port. Here every connection must deliver a complete request head within
`header_timeout_s` of being accepted or of its previous response (which also bounds idle keep-alive),
else it is aborted. Bodies are read by the handlers under their own deadline (`read_body`).

How: the protocol factory wraps aiohttp's per-connection protocol in `_Guarded`, which arms a timer
when the connection is made; the middleware (`watch`) learns when a request head has been parsed
(its handler starts) and disarms it, and re-arms it when the response is done.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web


class _Guarded(asyncio.Protocol):
    """aiohttp's RequestHandler, forwarded to, plus the head deadline."""

    def __init__(self, guard: SlowClientGuard, inner: Any) -> None:
        self._guard = guard
        self.inner = inner
        self.busy = 0
        self._timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.BaseTransport | None = None

    def arm(self) -> None:
        self.disarm()
        self._timer = self._guard.loop.call_later(self._guard.header_timeout_s, self._expire)

    def disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self.busy == 0 and self._transport is not None:
            self._guard.dropped += 1
            self._transport.abort()  # type: ignore[attr-defined]

    # asyncio.Protocol, forwarded
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport
        self._guard.by_handler[self.inner] = self
        self.arm()
        self.inner.connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.disarm()
        self._guard.by_handler.pop(self.inner, None)
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class SlowClientGuard:
    def __init__(self, header_timeout_s: float, body_timeout_s: float) -> None:
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.loop = asyncio.get_running_loop()
        self.by_handler: dict[Any, _Guarded] = {}
        self.dropped = 0

    def factory(self, make_handler: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        """Wrap aiohttp's protocol factory (`web.AppRunner.server`)."""
        return lambda: _Guarded(self, make_handler())

    @web.middleware
    async def watch(self, request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]) -> Any:
        guarded = self.by_handler.get(request.protocol)
        if guarded is None:
            return await handler(request)
        guarded.busy += 1
        guarded.disarm()
        try:
            return await handler(request)
        finally:
            guarded.busy -= 1
            if guarded.busy == 0:
                guarded.arm()

    async def read_body(self, request: web.Request) -> bytes:
        """The request body, or TimeoutError when it does not arrive within `body_timeout_s`."""
        return await asyncio.wait_for(request.read(), self.body_timeout_s)
