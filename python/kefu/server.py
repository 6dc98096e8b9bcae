"""`kefu serve`: wires storage, bus, router, hub, the WebSocket gateway (picows) and the HTTP API
(aiohttp) into one process on one uvloop loop.

picows answers only body-less GETs, so the API has its own port and hands every client the
WebSocket address (`ws_url`) with its token; a reverse proxy can merge the two (docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
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
from kefu.backup import lock_data_dir
from kefu.bus import open_bus
from kefu.config import Config
from kefu.handshake import Gateway
from kefu.http.api import Api, SiteCache
from kefu.http.guard import SlowClientGuard
from kefu.metrics import Metrics
from kefu.realtime.hub import Hub
from kefu.routing import RoutingConfig
from kefu.storage.base import Storage
from kefu.timed_router import TimedRoutingEngine
from kefu.tls import ServerTLS, find_pair

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
    auth.ensure_private_dir(Path(path).parent)
    return SqliteStorage(path, synchronous=config.sqlite_sync)  # type: ignore[arg-type]


INITIAL_PASSWORD_FILE = "initial-admin-password"


async def bootstrap(storage: Storage, config: Config, out: Any = sys.stdout) -> None:
    """First start on an empty database: create a demo site and an admin. The password is shown
    once on a terminal; when output goes to a log (a service, a container) it is written to a file
    only this user can read in the data directory instead, and the log says where."""
    if await storage.list_sites():
        return
    own_origin = f"{'https' if config.tls_cert else 'http'}://{config.host}:{config.http_port}"
    origins = DEMO_ORIGINS + ((own_origin,) if own_origin not in DEMO_ORIGINS else ())
    site = await storage.create_site("Demo site", origins)
    password = secrets.token_urlsafe(12)
    loop = asyncio.get_running_loop()
    password_hash = await loop.run_in_executor(None, auth.hash_password, password)
    admin = await storage.create_agent(site.id, "admin", password_hash, name="Administrator", role="admin",
                                       capacity=10)
    print("Kefu first start: created a demo site and an administrator.", file=out)
    print(f"  site key : {site.key}   (allowed origins: {', '.join(site.allowed_origins)})", file=out)
    if _is_terminal(out):
        print(f"  admin    : username 'admin', password '{password}'  (agent id {admin.id}; shown only once)",
              file=out)
    else:
        path = write_private_file(config.data_dir / INITIAL_PASSWORD_FILE, password + "\n")
        print(f"  admin    : username 'admin', password in {path.resolve()} (readable by this user only; "
              f"delete it after the first login)  (agent id {admin.id})", file=out)
    out.flush()


def _is_terminal(out: Any) -> bool:
    try:
        return bool(out.isatty())
    except (AttributeError, ValueError):
        return False


def write_private_file(path: Path, text: str) -> Path:
    """Write `text` to a new file with mode 0600 (replacing an old one), in a private directory."""
    auth.ensure_private_dir(path.parent)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return path


class Server:
    def __init__(self, config: Config, *, storage: Storage | None = None) -> None:
        self.config = config
        self.storage = storage or open_storage(config)
        self.metrics = Metrics()
        self.stopping = asyncio.Event()
        self._ws_server: asyncio.Server | None = None
        self._runner: web.AppRunner | None = None
        self._http_server: asyncio.Server | None = None
        self.hub: Hub | None = None
        self.http_port = config.http_port
        self.ws_port = config.ws_port
        self.tls: ServerTLS | None = None

    async def start(self) -> None:
        started = time.perf_counter()
        config = self.config
        secret = auth.load_or_create_secret(config.data_dir, config.secret, dev=config.dev)
        signer = TokenSigner(secret)
        self.tls = _load_tls(config)
        if self.tls is not None and not config.tls_cert:
            self.config = config = config.replace(tls_cert=str(self.tls.cert), tls_key=str(self.tls.key))
        ssl_context = self.tls.context if self.tls else None
        self.storage.commit_observer = self.metrics.storage_committed
        await self.storage.open()
        await bootstrap(self.storage, config)
        sites = self.site_cache()
        await sites.reload()
        bus = open_bus(config.redis_url)
        router = TimedRoutingEngine(RoutingConfig(accept_timeout_s=config.accept_timeout_s,
                                                  max_queue=config.max_queue),
                                    self.metrics.routing_latency)
        self.metrics.gauge("kefu_queue_length", "conversations waiting for an agent", router.queued_count)
        self.hub = Hub(config, self.storage, bus, router, self.metrics,
                       sentiment=load_sentiment(config))
        self.prepare_hub(self.hub)
        await self.hub.start()
        await self.start_gateway(signer, sites, ssl_context)
        if not config.public_ws_url:
            self.config = config = config.replace(ws_port=self.ws_port)
            self.hub.config = config
        guard = SlowClientGuard(config.http_header_timeout_s, config.http_body_timeout_s)
        api = Api(self.hub, signer, sites, guard=guard)
        self._runner = web.AppRunner(api.app(), access_log=None, handle_signals=False,
                                     keepalive_timeout=config.http_header_timeout_s)
        await self._runner.setup()
        # Not web.TCPSite: the guard wraps aiohttp's protocol factory to put a deadline on request
        # heads (aiohttp has none). TLS (when configured) sits under the guard's protocol.
        assert self._runner.server is not None
        self._http_server = await asyncio.get_running_loop().create_server(
            guard.factory(self._runner.server), config.host, config.http_port, backlog=1024,
            ssl=ssl_context)
        self.http_port = self._http_server.sockets[0].getsockname()[1]
        elapsed = time.perf_counter() - started
        self.metrics.gauge("kefu_start_seconds", "server start() to ready, in seconds", lambda: elapsed)

    def site_cache(self) -> SiteCache:
        return SiteCache(self.storage)

    def prepare_hub(self, hub: Hub) -> None:
        """Called between creating the hub and starting it (worker processes hook in here)."""

    async def start_gateway(self, signer: TokenSigner, sites: SiteCache, ssl_context: Any = None) -> None:
        """Listen for WebSockets in this process (worker processes replace this: kefu.workers)."""
        assert self.hub is not None
        config = self.config
        self._ws_server = await ws_create_server(
            Gateway(self.hub, signer, sites), config.host, config.ws_port,
            websocket_handshake_timeout=config.handshake_timeout_s,
            max_frame_size=config.max_message_size,
            # 1 KiB initial read buffer and the loop's own transport: ~9 KB per idle connection
            # instead of ~28 KB (docs/design.md, memory per idle connection). No per-connection ping task:
            # the hub's sweeper pings idle connections in one timer.
            read_buffer_init_size=1024, use_aiofastnet=False, enable_auto_ping=False,
            backlog=4096, ssl=ssl_context)
        self.ws_port = self._ws_server.sockets[0].getsockname()[1]

    def ready_line(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        scheme = "https" if self.tls else "http"
        return f"{READY_PREFIX}http={scheme}://{host}:{self.http_port} ws={self.config.ws_url()}"

    async def stop(self) -> None:
        """Graceful shutdown: stop accepting, tell clients to come back (1001, with jitter), let in-flight
        writes finish, flush storage. Clients resume from their last seq on another start."""
        started = time.perf_counter()
        if self._ws_server is not None:
            self._ws_server.close()  # listening socket only; open connections stay for the 1001
        if self._http_server is not None:
            self._http_server.close()  # stop accepting HTTP too; requests in flight finish
        if self.hub is not None:
            await self.hub.stop()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.storage.close()
        log.info("stopped", extra={"seconds": round(time.perf_counter() - started, 3)})

    def reload(self) -> None:
        """SIGHUP: new TLS connections use the certificate files as they are now."""
        if self.tls is not None:
            self.tls.reload()


def _load_tls(config: Config) -> ServerTLS | None:
    if config.tls_cert and config.tls_key:
        return ServerTLS.load(config.tls_cert, config.tls_key)
    pair = find_pair(config.tls_dir) if config.tls_dir else None
    if pair is None:
        if config.tls_dir:
            log.warning("no certificate pair in the TLS directory: serving plain http and ws",
                        extra={"tls_dir": str(config.tls_dir)})
        return None
    return ServerTLS.load(*pair)


def load_sentiment(config: Config) -> Any:
    """The bundled sentiment model (loaded once, ~10 ms after import), or None when turned off with
    KEFU_SENTIMENT=0. A model that fails to load stops the start: routing by mood must not vanish
    silently."""
    if not config.sentiment:
        return None
    import onnxruntime

    onnxruntime.disable_telemetry_events()  # a chat server phones nobody
    from kefu.sentiment import SentimentModel

    return SentimentModel.load()


async def serve(config: Config) -> None:
    if config.workers > 1:
        from kefu.workers.supervisor import serve_with_workers

        await serve_with_workers(config)
        return
    lock = lock_data_dir(config.data_dir)  # one server per data directory; `kefu restore` waits for it
    try:
        server = Server(config)
        await server.start()
        print(server.ready_line(), flush=True)
        log.info("ready", extra={"http_port": server.http_port, "ws_url": server.config.ws_url(),
                                    "tls": server.tls is not None, "storage": server.storage.__class__.__name__})
        if os.environ.get("REDIS_PASS") and not config.redis_url:
            # The seed's `docker run … -e REDIS_PASS=…` line: accepted, but there is no Redis bus yet.
            log.warning("REDIS_PASS is set without REDIS_URL: running one host on the in-process bus")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.stopping.set)
        loop.add_signal_handler(signal.SIGHUP, server.reload)
        await server.stopping.wait()
        await asyncio.wait_for(server.stop(), config.shutdown_grace_s + 10)
    finally:
        lock.close()
