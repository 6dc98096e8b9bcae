"""A gateway worker: holds WebSockets on the shared port and relays them to the control process.

Started by the supervisor as `python -m kefu.workers.worker FD`, where FD is a pipe carrying the
pickled `WorkerSpec` (config, token secret, ring fds, which worker it is). The worker authenticates
the upgrade itself (token signature, origin), so refused handshakes never reach control. Each
complete, rate-limited frame goes up the ingress ring as received (`compiled.RingForwarder`, in Rust:
the worker never decodes a client frame); the control process's data plane and hub answer it. What
control sends back arrives on this worker's delivery ring: delivery records are written to the sockets
by `compiled.write_ring_records` (C), the rare control records by `Relay`. Liveness (ping, pong
timeout) is checked here, where the sockets are.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import signal
import sys
import time
from dataclasses import dataclass
from typing import Any

from picows import ws_create_server

from kefu import compiled
from kefu.auth import Principal, TokenSigner
from kefu.config import Config
from kefu.metrics import Metrics
from kefu.tls import ServerTLS
from kefu.workers import wire
from kefu.workers.pump import RingPump

log = logging.getLogger("kefu.workers")


@dataclass(frozen=True)
class WorkerSpec:
    config: Config
    secret: Any  # what auth.load_or_create_secret returned
    index: int
    generation: int
    ingress_fd: int
    ingress_notify_fd: int  # the control process's eventfd for the ingress ring (we produce)
    delivery_fd: int
    delivery_notify_fd: int  # our eventfd for the delivery ring (we consume)
    ws_port: int  # the shared port (or this worker's own port in test mode)
    reuse_port: bool


class SiteTable:
    """Allowed origins by site id, pushed by control (`Gateway` asks `.get(site_id).allowed_origins`)."""

    @dataclass(frozen=True)
    class Entry:
        allowed_origins: tuple[str, ...]

    def __init__(self) -> None:
        self.by_id: dict[int, SiteTable.Entry] = {}

    def replace(self, origins: dict[int, tuple[str, ...]]) -> None:
        self.by_id = {site_id: SiteTable.Entry(tuple(allowed)) for site_id, allowed in origins.items()}

    def get(self, site_id: int) -> SiteTable.Entry | None:
        return self.by_id.get(site_id)


class Relay:
    """The gateway's "hub" inside a worker: every callback becomes an ingress record."""

    def __init__(self, spec: WorkerSpec, ingress: Any, metrics: Metrics) -> None:
        self.spec = spec
        self.ingress = ingress
        self.metrics = metrics
        self.forwarder = compiled.RingForwarder(ingress, spec.index, spec.generation)
        config = spec.config
        self.limits = compiled.GatewayLimits(
            max_message_size=config.max_message_size, max_pending_bytes=config.max_pending_bytes,
            rate_per_s=config.rate_per_s, burst=config.rate_burst)
        self.connections: dict[int, Any] = {}
        self.sites = SiteTable()
        self._next_id = 0
        self._reported: dict[str, int] = {}

    def _push(self, *record: Any) -> bool:
        return bool(self.ingress.push(wire.encode(record[0], self.spec.index, self.spec.generation, *record[1:])))

    def new_connection(self, principal: Principal, binary: bool) -> Any:
        conn = compiled.Connection(self, principal, binary, self.limits)
        self._next_id = (self._next_id + 1) & 0xFFFFFFFF or 1  # a u32 on the rings; 0 is never used
        conn.state = conn.serial = self._next_id
        return conn

    def on_connected(self, conn: Any) -> None:
        # The gateway gave the connection its slot just before this call.
        self.connections[conn.state] = conn
        self.forwarder.bind(conn.slot, conn.serial)
        if not self._push("conn", conn.state, conn.principal, conn.binary, conn.slot):
            conn.close(1013, b"server busy, retry later")

    def on_disconnected(self, conn: Any) -> None:
        if self.connections.pop(conn.state, None) is not None:
            # Must reach control; the ring being full for long means control is gone anyway.
            self._push_reliably("gone", conn.state)

    def _push_reliably(self, *record: Any) -> None:
        for _ in range(1000):
            if self._push(*record):
                return
            time.sleep(0.001)
        log.error("ingress ring full for 1 s; control is not consuming")

    def on_slow_consumer(self, conn: Any) -> None:
        self._push("slow", conn.state)

    def on_frame_refused(self, conn: Any, size: int) -> None:
        self.metrics.inc("kefu_frames_refused_total")
        log.error("refused to send a frame of %d bytes to %s (-1: not encodable)", size, conn.principal.id)

    def on_frame(self, conn: Any, frame: dict[str, Any]) -> None:
        if not self._push("frame", conn.state, frame):
            ref = frame.get("cmid") if type(frame.get("cmid")) is str else frame.get("t")
            conn.send_error("unavailable", "server busy; nothing was stored, retry later", ref)

    # --- delivery --------------------------------------------------------------------------------
    def on_delivery(self, records: list[bytes]) -> None:
        connections = self.connections
        index, count = 0, len(records)
        while True:
            # Delivery records in C; stop at each control record and apply it here, in order.
            index = compiled.write_ring_records(records, index)
            if index >= count:
                return
            record = wire.decode(records[index])
            index += 1
            kind = record[0]
            if kind == "send":
                _, ids, json_payload, binary_payload = record
                for conn_id in ids:
                    conn = connections.get(conn_id)
                    if conn is not None:
                        conn.send_encoded(json_payload, binary_payload)
            elif kind == "close":
                conn = connections.get(record[1])
                if conn is not None:
                    conn.close(record[2], record[3], graceful=record[4])
            elif kind == "sites":
                self.sites.replace(record[1])

    def report_counters(self) -> None:
        """This worker's counters (handshakes refused, frames refused, …) go to control's /metrics,
        whole and only when they changed; a push lost to a full ring is retried at the next sweep."""
        counters = self.metrics.counters
        if counters != self._reported and self._push("counters", dict(counters)):
            self._reported = dict(counters)

    def sweep(self, now: float) -> None:
        self.report_counters()
        config = self.spec.config
        for conn in tuple(self.connections.values()):
            if conn.ping_outstanding:
                if now - conn.ping_sent_at > config.pong_timeout_s:
                    conn.close(compiled.CLOSE_IDLE, b"no reply to ping", graceful=False)
            elif now - conn.last_rx > config.idle_timeout_s:
                conn.send_ping()


async def run(spec: WorkerSpec) -> None:
    from kefu.handshake import Gateway

    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    ingress = compiled.ShmRing.open(spec.ingress_fd)
    ingress.set_notify(spec.ingress_notify_fd)
    delivery = compiled.ShmRing.open(spec.delivery_fd)
    relay = Relay(spec, ingress, Metrics())
    compiled.attach_forwarder(relay.forwarder, loop.call_soon)
    pump = RingPump(delivery, spec.delivery_notify_fd, loop, relay.on_delivery)
    pump.start()
    config = spec.config
    # The control process serves https; wss is ours, from the same files (SIGHUP re-reads them).
    tls = ServerTLS.load(config.tls_cert, config.tls_key) if config.tls_cert and config.tls_key else None
    if tls is not None:
        loop.add_signal_handler(signal.SIGHUP, tls.reload)
    server = await ws_create_server(
        Gateway(relay, TokenSigner(spec.secret), relay.sites),  # type: ignore[arg-type]
        config.host, spec.ws_port, websocket_handshake_timeout=config.handshake_timeout_s,
        max_frame_size=config.max_message_size, read_buffer_init_size=1024, use_aiofastnet=False,
        enable_auto_ping=False, reuse_port=spec.reuse_port, backlog=4096, ssl=tls.context if tls else None)
    relay._push_reliably("up", os.getpid())
    log.info("worker %d up in %.3f s", spec.index, time.perf_counter() - started)
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    interval = max(1.0, min(5.0, config.pong_timeout_s / 3))
    while not stopping.is_set():
        try:
            await asyncio.wait_for(stopping.wait(), interval)
        except TimeoutError:
            relay.sweep(time.monotonic())
    # Drain: stop accepting, tell clients to come back (1001: they reconnect with jitter and resume).
    server.close()
    for conn in tuple(relay.connections.values()):
        conn.close(1001, b"server restarting")
    await asyncio.sleep(0.2)  # let close frames reach the sockets
    pump.stop()


def main(argv: list[str]) -> int:
    with os.fdopen(int(argv[1]), "rb") as pipe:
        spec: WorkerSpec = pickle.load(pipe)  # written by our parent, the supervisor
    import uvloop

    logging.basicConfig(level=os.environ.get("KEFU_LOG_LEVEL", "WARNING"),
                        format=f"%(asctime)s %(levelname)s worker{spec.index}: %(message)s")
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGHUP})
    _die_with_parent()
    uvloop.run(run(spec))
    return 0


def _die_with_parent() -> None:
    """If the control process dies (kill -9), its workers must not linger holding the port."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        log.warning("could not set the parent-death signal")
    if os.getppid() == 1:
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
