"""`kefu serve`: wires storage, bus, router, hub, the WebSocket gateway (picows) and the HTTP API
(aiohttp) into one process on one uvloop loop.

picows answers only body-less GETs, so the API has its own port and hands every client the
WebSocket address (`ws_url`) with its token; a reverse proxy can merge the two (docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from picows import ws_create_server

from kefu import auth
from kefu.auth import TokenSigner
from kefu.bus import open_bus
from kefu.config import Config
from kefu.handshake import Gateway
from kefu.http.api import Api, SiteCache
from kefu.metrics import Metrics
from kefu.realtime.hub import Hub
from kefu.routing import RoutingConfig, RoutingEngine
from kefu.storage.base import Storage

log = logging.getLogger("kefu.server")

READY_PREFIX = "KEFU READY "
DEMO_ORIGINS = ("http://localhost:8080", "http://127.0.0.1:8080")


def open_storage(config: Config) -> Storage:
    url = config.storage_url()
    if url.startswith(("postgresql://", "postgres://")):
        from kefu.storage.postgres import PostgresStorage

        return PostgresStorage(url)
    from kefu.storage.sqlite import SqliteStorage

    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return SqliteStorage(path, synchronous=config.sqlite_sync)  # type: ignore[arg-type]


async def bootstrap(storage: Storage, config: Config, out: Any = sys.stdout) -> None:
    """First start on an empty database: create a demo site and an admin, print the credentials once."""
    if await storage.list_sites():
        return
    own_origin = f"http://{config.host}:{config.http_port}"
    origins = DEMO_ORIGINS + ((own_origin,) if own_origin not in DEMO_ORIGINS else ())
    site = await storage.create_site("Demo site", origins)
    password = secrets.token_urlsafe(12)
    loop = asyncio.get_running_loop()
    password_hash = await loop.run_in_executor(None, auth.hash_password, password)
    admin = await storage.create_agent(site.id, "admin", password_hash, name="Administrator", role="admin",
                                       capacity=10)
    print("Kefu first start: created a demo site and an administrator. Shown only once:", file=out)
    print(f"  site key : {site.key}   (allowed origins: {', '.join(site.allowed_origins)})", file=out)
    print(f"  admin    : username 'admin', password '{password}'  (agent id {admin.id})", file=out)
    out.flush()


class Server:
    def __init__(self, config: Config, *, storage: Storage | None = None) -> None:
        self.config = config
        self.storage = storage or open_storage(config)
        self.metrics = Metrics()
        self.stopping = asyncio.Event()
        self._ws_server: asyncio.Server | None = None
        self._runner: web.AppRunner | None = None
        self.hub: Hub | None = None
        self.http_port = config.http_port
        self.ws_port = config.ws_port

    async def start(self) -> None:
        started = time.perf_counter()
        config = self.config
        secret = auth.load_or_create_secret(config.data_dir, config.secret, dev=config.dev)
        signer = TokenSigner(secret)
        await self.storage.open()
        await bootstrap(self.storage, config)
        sites = self.site_cache()
        await sites.reload()
        bus = open_bus(config.redis_url)
        router = RoutingEngine(RoutingConfig(accept_timeout_s=config.accept_timeout_s))
        self.hub = Hub(config, self.storage, bus, router, self.metrics,
                       sentiment=load_sentiment(config))
        await self.hub.start()
        await self.start_gateway(signer, sites)
        if not config.public_ws_url:
            self.config = config = config.replace(ws_port=self.ws_port)
            self.hub.config = config
        api = Api(self.hub, signer, sites)
        self._runner = web.AppRunner(api.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, config.host, config.http_port, backlog=1024)
        await site.start()
        self.http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        elapsed = time.perf_counter() - started
        self.metrics.gauge("kefu_start_seconds", "server start() to ready, in seconds", lambda: elapsed)

    def site_cache(self) -> SiteCache:
        return SiteCache(self.storage)

    async def start_gateway(self, signer: TokenSigner, sites: SiteCache) -> None:
        """Listen for WebSockets in this process (worker processes replace this: kefu.workers)."""
        assert self.hub is not None
        config = self.config
        self._ws_server = await ws_create_server(
            Gateway(self.hub, signer, sites), config.host, config.ws_port,
            websocket_handshake_timeout=config.handshake_timeout_s,
            max_frame_size=config.max_message_size,
            # 1 KiB initial read buffer and the loop's own transport: ~9 KB per idle connection
            # instead of ~28 KB (anchors/stack-feasibility.md §2e). No per-connection ping task:
            # the hub's sweeper pings idle connections in one timer.
            read_buffer_init_size=1024, use_aiofastnet=False, enable_auto_ping=False,
            backlog=4096)
        self.ws_port = self._ws_server.sockets[0].getsockname()[1]

    def ready_line(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"{READY_PREFIX}http=http://{host}:{self.http_port} ws={self.config.ws_url()}"

    async def stop(self) -> None:
        if self.hub is not None:
            await self.hub.stop()
        if self._ws_server is not None:
            self._ws_server.close()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.storage.close()


def load_sentiment(config: Config) -> Any:
    """The bundled sentiment model (loaded once, ~10 ms after import), or None when turned off with
    KEFU_SENTIMENT=0. A model that fails to load stops the start: routing by mood must not vanish
    silently."""
    if not config.sentiment:
        return None
    from kefu.sentiment import SentimentModel

    return SentimentModel.load()


async def serve(config: Config) -> None:
    if config.workers > 1:
        from kefu.workers.supervisor import serve_with_workers

        await serve_with_workers(config)
        return
    server = Server(config)
    await server.start()
    print(server.ready_line(), flush=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stopping.set)
    await server.stopping.wait()
    await server.stop()
