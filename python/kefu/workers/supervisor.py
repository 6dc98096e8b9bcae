"""`kefu serve --workers N`: the supervisor, which is also the control process.

It runs everything of `kefu.server.Server` except the WebSocket listener (storage and its one writer,
the hub, the router, the HTTP API), creates the rings, starts N gateway workers on the shared port,
restarts a worker that dies (its clients reconnect to any worker and resume from their last seq), and
on SIGTERM drains: workers stop accepting and close their sockets with 1001, then the writer flushes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kefu import auth, compiled
from kefu.auth import TokenSigner
from kefu.config import Config
from kefu.http.api import SiteCache
from kefu.realtime.hub import Hub
from kefu.server import Server
from kefu.workers.control import ControlPlane
from kefu.workers.pump import RingPump, notify_fd
from kefu.workers.worker import WorkerSpec

log = logging.getLogger("kefu.workers")

# Ring geometry: 64-byte cells; a record of a few hundred bytes spans a handful. 4 MiB per ring.
CELL_SIZE = 64
INGRESS_CELLS = 1 << 16
DELIVERY_CELLS = 1 << 16
# A worker that dies sooner than this after starting is restarted only after this delay (crash loop).
RESTART_BACKOFF_S = 1.0
WORKER_START_TIMEOUT_S = 30.0
DRAIN_TIMEOUT_S = 10.0
# Test mode: worker i listens on ws_port + i, so a test can put a visitor and an agent on different workers.
DISTINCT_PORTS_ENV = "KEFU_TEST_DISTINCT_WORKER_PORTS"


class PublishingSiteCache(SiteCache):
    """The control process's site cache: every change is also pushed to the workers' origin tables."""

    def __init__(self, storage: Any, publish: Callable[[Iterable[Any]], None]) -> None:
        super().__init__(storage)
        self._publish = publish

    async def reload(self) -> None:
        await super().reload()
        self._publish(self.all())

    def remember(self, site: Any) -> None:
        super().remember(site)
        self._publish(self.all())


@dataclass
class WorkerProcess:
    index: int
    generation: int = 0
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    up: asyncio.Event = field(default_factory=asyncio.Event)
    start_seconds: float = 0.0
    delivery_notify: int = -1  # eventfd of its delivery ring (we write it, the worker waits on it)


class ControlServer(Server):
    """`Server` without its own WebSocket listener: N gateway workers hold the sockets."""

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.control: ControlPlane | None = None
        self.workers = [WorkerProcess(i) for i in range(config.workers)]
        self.ingress = compiled.ShmRing.create(INGRESS_CELLS, CELL_SIZE)
        self.ingress_notify = notify_fd()
        self._pump: RingPump | None = None
        self._secret = b""
        self._placeholder: socket.socket | None = None
        self.distinct_ports = os.environ.get(DISTINCT_PORTS_ENV) == "1"
        self._pending_sites: list[Any] = []

    def site_cache(self) -> SiteCache:
        return PublishingSiteCache(self.storage, self._publish_sites)

    def prepare_hub(self, hub: Hub) -> None:
        # Before the hub starts: its native data plane must route to the rings, not to a local gateway.
        self.control = ControlPlane(hub, on_worker_up=self._on_worker_up)

    def _publish_sites(self, sites: Iterable[Any]) -> None:
        if self.control is None:
            self._pending_sites = list(sites)
        else:
            self.control.publish_sites(sites)

    async def start_gateway(self, signer: TokenSigner, sites: SiteCache, ssl_context: Any = None) -> None:
        """`ssl_context` is this process's (https); each worker loads the same certificate files
        itself (`config.tls_cert`, `tls_key`: set by `Server` also when they came from KEFU_TLS_DIR)."""
        assert self.hub is not None
        config = self.config
        self._secret = auth.load_or_create_secret(config.data_dir, config.secret, dev=config.dev)
        assert self.control is not None
        self.control.publish_sites(sites.all())
        loop = asyncio.get_running_loop()
        self._pump = RingPump(self.ingress, self.ingress_notify, loop, self.control.on_records)
        self._pump.start()
        self.ws_port = self._shared_port()
        for worker in self.workers:
            self._spawn(worker)
        for worker in self.workers:
            await asyncio.wait_for(worker.up.wait(), WORKER_START_TIMEOUT_S)
        self.metrics.gauge("kefu_worker_start_seconds_max", "slowest worker: spawn to listening, in seconds",
                           lambda: max(w.start_seconds for w in self.workers))
        self.metrics.gauge("kefu_ring_abandoned_total", "ingress records skipped after a worker died mid-write",
                           lambda: self.ingress.abandoned)

    def reload(self) -> None:
        """SIGHUP: this process's https context, then every worker's wss context, re-read the files."""
        super().reload()
        for worker in self.workers:
            if worker.proc is not None and worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGHUP)

    def _shared_port(self) -> int:
        """The port every worker binds with SO_REUSEPORT. Port 0 is resolved here, once: a bound,
        never-listening socket keeps the number ours for the server's life (it takes no connections)."""
        if self.distinct_ports:
            return self.config.ws_port
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        placeholder = socket.socket(family, socket.SOCK_STREAM)
        placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        placeholder.bind((self.config.host, self.config.ws_port))
        self._placeholder = placeholder
        return int(placeholder.getsockname()[1])

    def worker_ws_urls(self) -> list[str]:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return [f"ws://{host}:{self.ws_port + (w.index if self.distinct_ports else 0)}/ws" for w in self.workers]

    # --- workers -------------------------------------------------------------------------------------
    def _spawn(self, worker: WorkerProcess) -> None:
        assert self.control is not None
        worker.generation += 1
        worker.up = asyncio.Event()
        delivery = compiled.ShmRing.create(DELIVERY_CELLS, CELL_SIZE)
        if worker.delivery_notify >= 0:
            os.close(worker.delivery_notify)  # the previous incarnation's
        worker.delivery_notify = notify_fd()
        delivery.set_notify(worker.delivery_notify)  # we produce into it; the worker waits on the eventfd
        self.control.attach(worker.index, worker.generation, delivery)
        spec = WorkerSpec(
            config=self.config, secret=self._secret, index=worker.index, generation=worker.generation,
            ingress_fd=self.ingress.fd, ingress_notify_fd=self.ingress_notify,
            delivery_fd=delivery.fd, delivery_notify_fd=worker.delivery_notify,
            ws_port=self.ws_port + (worker.index if self.distinct_ports else 0), reuse_port=not self.distinct_ports)
        read_end, write_end = os.pipe()
        worker.started_at = time.perf_counter()
        worker.proc = subprocess.Popen(
            # The index is only for operators reading `ps`; the spec on the pipe is what counts.
            [sys.executable, "-m", "kefu.workers.worker", str(read_end), f"--index={worker.index}"],
            pass_fds=(read_end, self.ingress.fd, self.ingress_notify, delivery.fd, worker.delivery_notify),
            stdin=subprocess.DEVNULL)
        os.close(read_end)
        with os.fdopen(write_end, "wb") as pipe:
            pickle.dump(spec, pipe)
        log.info("worker %d (generation %d) started: pid %d", worker.index, worker.generation, worker.proc.pid)

    def _on_worker_up(self, index: int) -> None:
        worker = self.workers[index]
        worker.start_seconds = time.perf_counter() - worker.started_at
        log.info("worker %d listening %.3f s after spawn", index, worker.start_seconds)
        worker.up.set()

    async def supervise(self, stopping: asyncio.Event) -> None:
        """Restart workers that exit while the server is not stopping."""
        assert self.control is not None
        while not stopping.is_set():
            try:
                await asyncio.wait_for(stopping.wait(), 0.1)
                return
            except TimeoutError:
                pass
            for worker in self.workers:
                if worker.proc is None or worker.proc.poll() is None:
                    continue
                code = worker.proc.returncode
                log.warning("worker %d exited (%s); restarting it", worker.index, code)
                self.metrics.inc("kefu_worker_restarts_total")
                self.control.detach(worker.index)
                worker.proc = None
                if time.perf_counter() - worker.started_at < RESTART_BACKOFF_S:
                    await asyncio.sleep(RESTART_BACKOFF_S)
                self._spawn(worker)

    async def stop(self) -> None:
        """Drain: workers stop accepting and send 1001 to their clients; then the writer flushes."""
        procs = [w.proc for w in self.workers if w.proc is not None and w.proc.poll() is None]
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        for proc in procs:
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if self._pump is not None:
            self._pump.stop()
        if self._placeholder is not None:
            self._placeholder.close()
        await super().stop()


async def serve_with_workers(config: Config) -> None:
    server = ControlServer(config)
    await server.start()
    if server.distinct_ports:
        print("KEFU WORKERS " + " ".join(f"ws={url}" for url in server.worker_ws_urls()), flush=True)
    print(server.ready_line(), flush=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.stopping.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload)  # certificates: here and in every worker
    await server.supervise(server.stopping)
    await server.stop()
