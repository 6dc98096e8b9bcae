"""The control process's side of the rings: connections held by workers, seen as hub connections.

The hub keeps its policy and state exactly as in one process; it only sees `RemoteConnection`s
instead of gateway connections. Everything the hub sends to a connection becomes a record on the
delivery ring of the worker holding it; a fan-out to many connections becomes one record per worker
(the payloads encoded once, the connection ids listed).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from kefu import compiled
from kefu.realtime.hub import ConnState, Hub
from kefu.workers import wire

log = logging.getLogger("kefu.workers")

# Records a worker's ring could not take yet are retried this often, in order, before anything newer.
RETRY_S = 0.002


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
        "state",
        "subscriptions",
        "worker",
    )

    def __init__(self, worker: WorkerLink, conn_id: int, principal: Any, binary: bool) -> None:
        self.worker = worker
        self.conn_id = conn_id
        self.principal = principal
        self.binary = binary
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
    """Control's view of one worker incarnation: its delivery ring and its connections."""

    def __init__(self, index: int, generation: int, ring: Any) -> None:
        self.index = index
        self.generation = generation
        self.ring = ring
        self.connections: dict[int, RemoteConnection] = {}
        self._backlog: collections.deque[bytes] = collections.deque()
        self._retry: asyncio.TimerHandle | None = None

    def send(self, record: bytes) -> None:
        if self._backlog or not self.ring.push(record):
            self._backlog.append(record)
            if self._retry is None:
                self._retry = asyncio.get_running_loop().call_later(RETRY_S, self._flush)

    def _flush(self) -> None:
        self._retry = None
        while self._backlog and self.ring.push(self._backlog[0]):
            self._backlog.popleft()
        if self._backlog:
            self._retry = asyncio.get_running_loop().call_later(RETRY_S, self._flush)

    def discard(self) -> None:
        if self._retry is not None:
            self._retry.cancel()
        self._backlog.clear()


class ControlPlane:
    """Applies the workers' ingress records to the hub and routes its output to the workers."""

    def __init__(self, hub: Hub, *, on_worker_up: Callable[[int], None] | None = None) -> None:
        self.hub = hub
        self.on_worker_up = on_worker_up
        self.workers: dict[int, WorkerLink] = {}
        self.sites: dict[int, tuple[str, ...]] = {}
        hub.send_to_all = self.send_to_all  # the hub's one fan-out hook

    # --- workers come and go -------------------------------------------------------------------------
    def attach(self, index: int, generation: int, ring: Any) -> None:
        self.detach(index)
        self.workers[index] = WorkerLink(index, generation, ring)

    def detach(self, index: int) -> None:
        """A worker exited: its sockets are gone; their clients reconnect (to any worker) and resume."""
        link = self.workers.pop(index, None)
        if link is None:
            return
        link.discard()
        for conn in list(link.connections.values()):
            conn.closed = True
            self.hub.on_disconnected(conn)  # type: ignore[arg-type]
        link.connections.clear()

    def publish_sites(self, sites: Iterable[Any]) -> None:
        self.sites = {site.id: tuple(site.allowed_origins) for site in sites}
        record = wire.encode("sites", self.sites)
        for link in self.workers.values():
            link.send(record)

    # --- ingress -------------------------------------------------------------------------------------
    def on_records(self, records: list[bytes]) -> None:
        for data in records:
            try:
                self._apply(wire.decode(data))
            except Exception:
                log.exception("ingress record failed")

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
            conn = link.connections[record[3]] = RemoteConnection(link, record[3], record[4], record[5])
            self.hub.on_connected(conn)  # type: ignore[arg-type]
        elif kind == "gone":
            gone = link.connections.pop(record[3], None)
            if gone is not None:
                gone.closed = True
                self.hub.on_disconnected(gone)  # type: ignore[arg-type]
        elif kind == "slow":
            slow = link.connections.get(record[3])
            if slow is not None:
                self.hub.on_slow_consumer(slow)  # type: ignore[arg-type]
        elif kind == "up":
            link.send(wire.encode("sites", self.sites))
            if self.on_worker_up is not None:
                self.on_worker_up(index)

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
