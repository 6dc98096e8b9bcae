"""The control process's side of the rings: connections held by workers, seen as hub connections.

The hub keeps its policy and state exactly as in one process; it only sees `RemoteConnection`s
instead of gateway connections, each with a slot in the control process's native data plane.
Workers forward every client frame untouched (`F` records, kefu.workers.wire); `WorkerRouter` (Rust)
runs them through the data plane and writes its deliveries as one `D` record per worker, so `send`,
`typing` and their acks and fan-out cross no Python code. Python sees a frame only when the data plane
declines it (`hello`, `open`, `accept`, every malformed frame, ...): it is decoded here, as the
gateway would, and handed to the hub. What the hub sends itself (pickled records) goes through the
router too, so each worker receives everything in the order it was produced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from kefu import compiled
from kefu.realtime.hub import ConnState, Hub
from kefu.workers import wire

log = logging.getLogger("kefu.workers")

# Records a worker's ring could not take yet are retried this often, in order, before anything newer.
RETRY_S = 0.002
CLOSE_TRY_AGAIN_LATER = 1013  # RFC 6455 §7.4.1 (IANA registry): a limit refused the socket


class RemoteConnection:
    """A WebSocket held by a gateway worker, with the attributes and methods the hub uses."""

    __slots__ = (
        "__weakref__",
        "binary",
        "closed",
        "conn_id",
        "ping_outstanding",
        "ping_sent_at",
        "principal",
        "slot",
        "state",
        "subscriptions",
        "worker",
        "worker_slot",
    )

    def __init__(self, worker: WorkerLink, conn_id: int, principal: Any, binary: bool, worker_slot: int,
                 slot: int) -> None:
        self.worker = worker
        self.conn_id = conn_id
        self.principal = principal
        self.binary = binary
        self.worker_slot = worker_slot  # the gateway slot on its worker (frames and deliveries name it)
        self.slot = slot  # the control process's data-plane slot
        self.subscriptions: set[int] = set()
        self.state = ConnState()
        self.closed = False
        # The worker pings and times out idle sockets itself; control never does.
        self.ping_outstanding = False
        self.ping_sent_at = 0.0

    @property
    def last_rx(self) -> float:
        return time.monotonic()

    def send_frame(self, frame: dict[str, Any]) -> bool:
        if self.closed:
            return False
        if self.binary:
            self.worker.send(wire.encode("send", (self.conn_id,), None, compiled.encode_frame(frame)))
        else:
            self.worker.send(wire.encode("send", (self.conn_id,), compiled.encode_json(frame), None))
        return True

    def send_error(self, code: str, message: str, ref: Any) -> bool:
        frame: dict[str, Any] = {"t": "error", "code": code, "msg": message}
        if ref is not None:
            frame["ref"] = ref
        return self.send_frame(frame)

    def send_ping(self) -> None:
        return None

    def close(self, code: int = 1000, reason: bytes = b"", graceful: bool = True) -> None:
        if not self.closed:
            self.closed = True
            self.worker.send(wire.encode("close", self.conn_id, code, reason, graceful))


class WorkerLink:
    """Control's view of one worker incarnation: its connections (by id and by gateway slot)."""

    def __init__(self, index: int, generation: int, router: Router) -> None:
        self.index = index
        self.generation = generation
        self.router = router
        self.connections: dict[int, RemoteConnection] = {}
        self.by_slot: dict[int, RemoteConnection] = {}
        self.counters: dict[str, int] = {}  # as the worker last reported them

    def send(self, record: bytes) -> None:
        self.router.send(self.index, record)


class Router:
    """`WorkerRouter` plus the loop timer that retries a backed-up ring (records wait in order)."""

    def __init__(self) -> None:
        self.native = compiled.WorkerRouter()
        self._retry: asyncio.TimerHandle | None = None

    def send(self, worker: int, record: bytes) -> None:
        self._backed_up(self.native.send(worker, record))

    def route(self, plane: Any) -> None:
        self._backed_up(self.native.route(plane))

    def _backed_up(self, backed_up: bool) -> None:
        if backed_up and self._retry is None:
            self._retry = asyncio.get_running_loop().call_later(RETRY_S, self._flush)

    def _flush(self) -> None:
        self._retry = None
        self._backed_up(self.native.flush())


class ControlPlane:
    """Applies the workers' ingress records to the hub and routes its output to the workers."""

    def __init__(self, hub: Hub, *, on_worker_up: Callable[[int], None] | None = None) -> None:
        self.hub = hub
        self.on_worker_up = on_worker_up
        self.workers: dict[int, WorkerLink] = {}
        self.sites: dict[int, tuple[str, ...]] = {}
        self.router = Router()
        # Data-plane slots of worker connections: dense, reused after a disconnect.
        self._free_slots: list[int] = []
        self._next_slot = 0
        # Workers' own counters in /metrics: the totals of worker incarnations that are gone.
        self._retired_counters: dict[str, int] = {}
        hub.send_to_all = self.send_to_all  # the hub's one fan-out hook (Python path)
        self.native = hub.native
        if self.native is not None:
            self.native.route_through(partial(self.router.route, self.native.plane))

    # --- workers come and go -------------------------------------------------------------------------
    def attach(self, index: int, generation: int, ring: Any) -> None:
        self.detach(index)
        self.router.native.attach(index, generation, ring)
        self.workers[index] = WorkerLink(index, generation, self.router)

    def detach(self, index: int) -> None:
        """A worker exited: its sockets are gone; their clients reconnect (to any worker) and resume."""
        link = self.workers.pop(index, None)
        if link is None:
            return
        self.router.native.detach(index)
        for name, value in link.counters.items():  # a restarted worker counts from 0 again
            self._retired_counters[name] = self._retired_counters.get(name, 0) + value
        for conn in list(link.connections.values()):
            self._gone(conn)
        link.connections.clear()
        link.by_slot.clear()

    def publish_sites(self, sites: Iterable[Any]) -> None:
        self.sites = {site.id: tuple(site.allowed_origins) for site in sites}
        record = wire.encode("sites", self.sites)
        for link in self.workers.values():
            link.send(record)

    # --- ingress -------------------------------------------------------------------------------------
    def on_records(self, records: list[bytes]) -> None:
        native = self.native
        feed = self.router.native.feed
        index, count = 0, len(records)
        while index < count:
            if native is not None:
                # Frames the data plane takes, in Rust; it stops at the first record Python must see.
                index = feed(native.plane, records, index)
                if index >= count:
                    break
            data = records[index]
            index += 1
            try:
                if data[:1] == wire.FRAME_TAG:
                    self._apply_frame(data)
                else:
                    self._apply(wire.decode(data))
            except Exception:
                log.exception("ingress record failed")
        if native is not None:
            native.after_frames()

    def _apply_frame(self, data: bytes) -> None:
        """A frame the data plane declined (or every frame, with KEFU_DATAPLANE=python): decoded here
        exactly as the gateway decodes it in one process, then handed to the hub."""
        record = wire.decode_frame_record(data)
        link = self.workers.get(record.worker) if record is not None else None
        if record is None or link is None or link.generation != record.generation:
            return
        conn = link.by_slot.get(record.slot)
        if conn is None or conn.closed or conn.conn_id != record.serial:
            return
        try:
            frame = compiled.decode_client_frame(record.payload, record.binary)
        except compiled.FrameError as exc:
            conn.send_error(exc.args[0], exc.args[1], None)
            return
        self.hub.on_frame(conn, frame)  # type: ignore[arg-type]

    def _slot(self) -> int:
        if self._free_slots:
            return self._free_slots.pop()
        self._next_slot += 1
        return self._next_slot - 1

    def _gone(self, conn: RemoteConnection) -> None:
        conn.closed = True
        self.hub.on_disconnected(conn)  # type: ignore[arg-type]
        self.router.native.unmap(conn.slot)
        self._free_slots.append(conn.slot)

    def _apply(self, record: tuple[Any, ...]) -> None:
        kind, index, generation = record[0], record[1], record[2]
        link = self.workers.get(index)
        if link is None or link.generation != generation:
            return  # from a worker incarnation that is gone
        if kind == "frame":
            conn = link.connections.get(record[3])
            if conn is not None and not conn.closed:
                self.hub.on_frame(conn, record[4])  # type: ignore[arg-type]
        elif kind == "conn":
            conn_id, principal, binary, worker_slot = record[3:7]
            refused = self.hub.admission.may_connect(principal)
            if refused is not None:
                # One process refuses with 429 before the upgrade; here the counts live in the control
                # process, which sees the socket after its worker upgraded it: close it (1013, try
                # again later) before the hub ever knows it. Its frames and "gone" are dropped.
                self.hub.metrics.inc("kefu_ws_refused_429_total")
                link.send(wire.encode("close", conn_id, CLOSE_TRY_AGAIN_LATER, refused.encode(), True))
                return
            conn = RemoteConnection(link, conn_id, principal, binary, worker_slot, self._slot())
            link.connections[conn_id] = link.by_slot[worker_slot] = conn
            self.router.native.map(conn.slot, index, worker_slot, conn_id)
            self.hub.on_connected(conn)  # type: ignore[arg-type]
        elif kind == "gone":
            gone = link.connections.pop(record[3], None)
            if gone is not None:
                if link.by_slot.get(gone.worker_slot) is gone:
                    del link.by_slot[gone.worker_slot]
                self._gone(gone)
        elif kind == "slow":
            slow = link.connections.get(record[3])
            if slow is not None:
                self.hub.on_slow_consumer(slow)  # type: ignore[arg-type]
        elif kind == "counters":
            link.counters = record[3]
            for name in link.counters:  # (re)registering a source is idempotent
                self.hub.metrics.count_from(name, partial(self._worker_counter, name))
        elif kind == "up":
            link.send(wire.encode("sites", self.sites))
            if self.on_worker_up is not None:
                self.on_worker_up(index)

    def _worker_counter(self, name: str) -> int:
        """A counter summed over the workers, those alive and those gone (so it never goes down)."""
        return self._retired_counters.get(name, 0) + sum(link.counters.get(name, 0) for link in self.workers.values())

    # --- fan-out -------------------------------------------------------------------------------------
    def send_to_all(self, targets: Iterable[Any], json_payload: bytes, binary_payload: bytes | None) -> int:
        """The hub's fan-out: one record per worker with the ids of its connections."""
        by_worker: dict[WorkerLink, list[int]] = {}
        for conn in targets:
            if not conn.closed:
                by_worker.setdefault(conn.worker, []).append(conn.conn_id)
        sent = 0
        for link, ids in by_worker.items():
            link.send(wire.encode("send", ids, json_payload, binary_payload))
            sent += len(ids)
        return sent

