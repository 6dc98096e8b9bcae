"""The hub: conversation policy over the gateway's connections (docs/protocol.md, delivery rules).

The Cython gateway hands every decoded frame to `Hub.on_frame`. The hub checks identity (from the
token, never from the frame), membership and limits, talks to storage, asks the router, and fans
frames out encoded once per wire format.

Delivery invariants kept here:
- `ack` only after `storage.append_message` resolved, i.e. after the durable commit;
- per conversation, subscribers get `msg` frames in `seq` order, without gaps or duplicates: live
  fan-out is released in seq order (`_release_in_order`), and a resuming connection is registered
  for live frames *before* storage is read, buffering live frames until the replay is written,
  then deduplicating by seq (the Rocket.Chat reconnect race, docs/design.md "Reliability rules");
- a retried cmid gets the original seq and is not fanned out again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from kefu import compiled
from kefu.admission import Admission
from kefu.auth import AgentStateCache, Principal
from kefu.bus import Bus, BusEvent
from kefu.config import Config
from kefu.metrics import Metrics
from kefu.realtime import frames as F
from kefu.realtime.dataplane import NativeDataPlane
from kefu.realtime.frames import ProtocolError
from kefu.realtime.mood import Moods, NativeMoods, PythonMoods
from kefu.routing import (
    AgentProfile,
    Assign,
    Outcome,
    Queued,
    QueuePosition,
    Rejected,
    RouteRequest,
    RoutingEngine,
)
from kefu.routing.skills import parse_skill_path
from kefu.sentiment.model import SentimentModel
from kefu.storage.base import (
    Agent,
    AppendResult,
    Conversation,
    NewMessage,
    NotFound,
    Storage,
    StorageError,
    StoredMessage,
)

log = logging.getLogger("kefu.hub")

OPEN_STATES = ("queued", "assigned", "transferred")
# Agents' de-escalation proficiency (for angry visitors) is this skill's level; 0.5 when unset.
DEESCALATION_SKILL = "deescalation"
# Transfer refusals of the router, as protocol errors.
TRANSFER_ERRORS = {"unknown_agent": "not_found", "not_assigned_to_sender": "conflict"}
# How long a seq gap in live fan-out may wait for its message before storage fills it.
GAP_FILL_DELAY_S = 0.5
# Conversations per connection whose last typing-on time is remembered (bounds ConnState memory).
MAX_TYPING_ENTRIES = 256


@dataclass(slots=True)
class ConnState:
    """Hub-side state of one connection (kept in `Connection.state`)."""

    greeted: bool = False
    replay_buffers: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    typing_sent: dict[int, float] = field(default_factory=dict)


class ConvRuntime:
    """What the hub keeps in memory about a conversation it has touched. With the native data plane,
    `conv` changes are pushed into its tables and `fanned_seq` is the data plane's (it fans out)."""

    __slots__ = ("_conv", "_fanned_seq", "gap_timer", "native", "pending")

    def __init__(self, conv: Conversation, fanned_seq: int, native: NativeDataPlane | None = None) -> None:
        self.native = native
        self._fanned_seq = fanned_seq  # highest seq written to live subscribers (Python path)
        self.pending: dict[int, dict[str, Any]] = {}  # seq → msg frame, out of order
        self.gap_timer: asyncio.TimerHandle | None = None
        self._conv = conv
        if native is not None:
            native.conversation(conv, fanned_seq)

    @property
    def conv(self) -> Conversation:
        return self._conv

    @conv.setter
    def conv(self, conv: Conversation) -> None:
        self._conv = conv
        if self.native is not None:
            self.native.conversation(conv, 0)

    @property
    def fanned_seq(self) -> int:
        if self.native is not None:
            seq = self.native.fanned_seq(self._conv.id)
            if seq is not None:
                return max(seq, self._fanned_seq)
        return self._fanned_seq

    @fanned_seq.setter
    def fanned_seq(self, seq: int) -> None:
        self._fanned_seq = seq


class Hub:
    def __init__(self, config: Config, storage: Storage, bus: Bus, router: RoutingEngine, metrics: Metrics,
                 *, sentiment: SentimentModel | None = None) -> None:
        """`sentiment` scores visitors' messages (the bundled model); None turns mood tracking off."""
        self.config = config
        self.storage = storage
        self.bus = bus
        self.router = router
        self.metrics = metrics
        self.sentiment = sentiment
        # Fan-out hook: the gateway's C loop in one process; one record per worker under --workers N.
        self.send_to_all: Callable[[Iterable[Any], bytes, bytes | None], int] = compiled.send_to_all
        self.limits = compiled.GatewayLimits(
            max_message_size=config.max_message_size, max_pending_bytes=config.max_pending_bytes,
            rate_per_s=config.rate_per_s, burst=config.rate_burst)
        self.connections: set[compiled.Connection] = set()
        self.by_principal: dict[str, set[compiled.Connection]] = {}
        self.subscribers: dict[int, set[compiled.Connection]] = {}
        self.replaying: dict[int, set[compiled.Connection]] = {}
        # conv → {connection: seq}: replayed up to seq from storage, so live msgs up to it skip them
        # (Python path; the native data plane keeps the same in its tables, `caught_up`).
        self.caught_up: dict[int, dict[compiled.Connection, int]] = {}
        self.convs: dict[int, ConvRuntime] = {}
        self.agents: dict[str, Agent] = {}
        # Agents' token generations (checked by the API, the handshake and hello) and the limits on
        # anonymous visitors; both live here because every entry point reaches the hub.
        self.agent_states = AgentStateCache(storage.get_agent)
        self.admission = Admission(config)
        self.online_agents: set[str] = set()
        self._offline_timers: dict[str, asyncio.TimerHandle] = {}
        self._unreachable: set[str] = set()  # online agents without a connection (in the reconnect grace)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._epoch = ""
        # KEFU_DATAPLANE=native: send/typing run in Rust; Python keeps the tables it reads current.
        self.native: NativeDataPlane | None = None
        if config.dataplane == "native":
            self.native = NativeDataPlane(
                storage, max_text_bytes=config.max_text_bytes, max_cmid_len=config.max_cmid_len,
                typing_interval_s=config.typing_interval_s)
            self.native.on_acked = self._native_acked
            self.native.on_replay_frames = self._native_replay_frames
            self.native.on_stuck = self._native_stuck
            self.native.on_read_marks = self._native_read_marks
            for key in ("submitted", "acked", "deduplicated", "failed", "declined", "delivered", "relayed"):
                metrics.gauge(f"kefu_dataplane_{key}", f"native data plane: frames {key} (since start)",
                              partial(self._native_stat, key))
            # Acks and fan-out of native sends are timed in Rust; /metrics and the admin stats add them.
            metrics.ack_latency.native = partial(self._native_latency, "ack")
            metrics.delivery_latency.native = partial(self._native_latency, "fanout")
        # Visitors' moods (kefu.realtime.mood): natively beside the native data plane, else the reference.
        self.moods: Moods | None = None
        if sentiment is not None and self.native is not None:
            native_moods = NativeMoods(sentiment, router, metrics, self._apply_soon)
            self.native.use_mood(native_moods.pipe)
            self.moods = native_moods
        elif sentiment is not None:
            self.moods = PythonMoods(sentiment, router, metrics, self._apply_soon)
        self._handlers: dict[str, Callable[[compiled.Connection, Principal, dict[str, Any]], Any]] = {
            "hello": self._on_hello, "open": self._on_open, "send": self._on_send,
            "typing": self._on_typing, "read": self._on_read, "accept": self._on_accept,
            "transfer": self._on_transfer, "close": self._on_close, "ping": self._on_ping,
        }
        metrics.gauge("kefu_connections", "open WebSocket connections", lambda: len(self.connections))
        metrics.gauge("kefu_agents_online", "agents with at least one connection", lambda: len(self.online_agents))

    # --- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        self._epoch = await self.storage.epoch()
        for site in await self.storage.list_sites():
            if site.routing:
                self.router.set_site_config(site.id, site.routing)
        # Conversations still waiting from before a restart go back into the queue, oldest first.
        waiting = await self.storage.list_conversations(states=("queued",), limit=100_000)
        for conv in sorted(waiting, key=lambda c: c.created_at):
            self.router.conversation_opened(RouteRequest(conv_id=conv.id, site_id=conv.site_id,
                                                         visitor_id=conv.visitor_id), time.time())
            if self.moods is not None:
                self.moods.watch(conv.id)
        await self.bus.start(self._on_bus_event)
        if self.moods is not None:
            self.moods.start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())
        if self.native is not None:
            self.native.attach()

    async def stop(self) -> None:
        if self._sweeper:
            self._sweeper.cancel()
        if self.native is not None:
            self.native.detach()
        for conn in list(self.connections):
            conn.close(1001, b"server restarting: reconnect after a random 1-5 s delay, then resume")
        for timer in self._offline_timers.values():
            timer.cancel()
        if self.moods is not None:
            await self.moods.stop()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("hub task failed", exc_info=task.exception())

    # --- gateway callbacks ----------------------------------------------------------------------
    def new_connection(self, principal: Principal, binary: bool) -> compiled.Connection:
        conn = compiled.Connection(self, principal, binary, self.limits)
        conn.state = ConnState()
        return conn

    def on_connected(self, conn: compiled.Connection) -> None:
        self.connections.add(conn)
        principal: Principal = conn.principal
        self.by_principal.setdefault(principal.id, set()).add(conn)
        self.admission.connected(principal)
        timer = self._offline_timers.pop(principal.id, None)
        if timer is not None:
            timer.cancel()
        self.metrics.inc("kefu_connections_total")
        log.debug("connect %s %s %s", principal.role, principal.id, "bin" if conn.binary else "json")

    def on_disconnected(self, conn: compiled.Connection) -> None:
        if self.native is not None:
            self.native.connection_gone(conn)
        self.connections.discard(conn)
        principal: Principal = conn.principal
        for conv_id in conn.subscriptions:
            self._drop_subscription(conn, conv_id)
        conn.subscriptions.clear()
        self.admission.disconnected(principal)
        peers = self.by_principal.get(principal.id)
        if peers is not None:
            peers.discard(conn)
            if not peers:
                del self.by_principal[principal.id]
                if principal.id in self.online_agents:
                    try:
                        self.router.agent_unreachable(principal.id)
                        self._unreachable.add(principal.id)
                    except KeyError:
                        pass
                    loop = asyncio.get_running_loop()
                    self._offline_timers[principal.id] = loop.call_later(
                        self.config.agent_offline_grace_s, self._agent_offline, principal.id)

    def on_slow_consumer(self, conn: compiled.Connection) -> None:
        self.metrics.inc("kefu_slow_consumers_closed_total")
        log.warning("closing slow consumer %s", conn.principal.id)

    def on_frame_refused(self, conn: compiled.Connection, size: int) -> None:
        """The gateway could not send a frame to `conn` (over the outgoing limit, or unencodable)."""
        self.metrics.inc("kefu_frames_refused_total")
        log.error("refused to send a frame of %d bytes to %s (-1: not encodable)", size, conn.principal.id)

    def on_frame(self, conn: compiled.Connection, frame: dict[str, Any]) -> None:
        kind = frame["t"]
        handler = self._handlers.get(kind)
        if handler is None:
            conn.send_error("bad_frame", f"unknown frame type {kind[:32]!r}", None)
            return
        state: ConnState = conn.state
        if not state.greeted and kind not in ("hello", "ping"):
            conn.send_error("bad_frame", "send 'hello' first", kind if kind in self._handlers else None)
            return
        try:
            result = handler(conn, conn.principal, frame)
        except ProtocolError as error:
            conn.send_error(error.code, error.message, self._ref(frame))
            return
        if result is not None:
            self._spawn(self._guard(conn, frame, result))

    async def _guard(self, conn: compiled.Connection, frame: dict[str, Any], work: Awaitable[Any]) -> None:
        """Run an async handler; turn failures into the protocol's error frames."""
        try:
            await work
        except ProtocolError as error:
            conn.send_error(error.code, error.message, self._ref(frame))
        except NotFound:
            conn.send_error("not_found", "no such conversation", self._ref(frame))
        except StorageError:
            self.metrics.inc("kefu_storage_errors_total")
            log.exception("storage failed")
            conn.send_error("unavailable", "storage unavailable; nothing was stored, retry later",
                            self._ref(frame))

    def _ref(self, frame: dict[str, Any]) -> Any:
        return F.error_ref(frame, self._handlers)

    # --- access control -------------------------------------------------------------------------
    async def _conversation(self, conv_id: int, *, visible_to: Principal | None = None) -> ConvRuntime:
        """The conversation's runtime, loaded from storage if needed. With `visible_to`, one that
        principal may not see is refused before it is kept in memory (probing ids must not fill
        `self.convs`)."""
        runtime = self.convs.get(conv_id)
        if runtime is None:
            conv = await self.storage.get_conversation(conv_id)
            if conv is None or (visible_to is not None and not self._can_access(visible_to, conv)):
                raise ProtocolError("not_found", "no such conversation")
            runtime = self.convs.get(conv_id)  # another task may have loaded it meanwhile
            if runtime is None:
                runtime = self.convs[conv_id] = self._new_runtime(conv)
        return runtime

    def _new_runtime(self, conv: Conversation) -> ConvRuntime:
        return ConvRuntime(conv, fanned_seq=conv.last_seq, native=self.native)

    def _can_access(self, principal: Principal, conv: Conversation) -> bool:
        if conv.site_id != principal.site_id:
            return False
        if principal.role == "visitor":
            return conv.visitor_id == principal.id
        if principal.role == "admin":
            return True
        if conv.agent_id == principal.id:
            return True
        agent = self.agents.get(principal.id)
        return bool(agent and conv.team and conv.team in agent.teams)

    async def _accessible(self, principal: Principal, conv_id: int) -> ConvRuntime:
        """The conversation if `principal` may see it; otherwise not_found (no existence oracle)."""
        runtime = await self._conversation(conv_id, visible_to=principal)
        if not self._can_access(principal, runtime.conv):
            raise ProtocolError("not_found", "no such conversation")
        return runtime

    # --- subscriptions and fan-out --------------------------------------------------------------
    def _subscribe_live(self, conn: compiled.Connection, conv_id: int) -> None:
        conn.subscriptions.add(conv_id)
        self.subscribers.setdefault(conv_id, set()).add(conn)
        if self.native is not None:
            self.native.grant(conn, conv_id)

    def _drop_subscription(self, conn: compiled.Connection, conv_id: int) -> None:
        caught = self.caught_up.get(conv_id)
        if caught is not None and caught.pop(conn, None) is not None and not caught:
            del self.caught_up[conv_id]
        for table in (self.subscribers, self.replaying):
            members = table.get(conv_id)
            if members is not None:
                members.discard(conn)
                if not members:
                    del table[conv_id]
        conn.state.replay_buffers.pop(conv_id, None)
        if self.native is not None:
            self.native.revoke(conn, conv_id)
            if conv_id not in self.replaying:
                self.native.replaying(conv_id, False)

    def _unsubscribe_principal(self, principal_id: str, conv_id: int) -> None:
        for conn in self.by_principal.get(principal_id, ()):
            conn.subscriptions.discard(conv_id)
            self._drop_subscription(conn, conv_id)

    def _broadcast(self, conv_id: int, frame: dict[str, Any], *, skip_principal: str | None = None) -> int:
        """Encode `frame` once per wire format and write it to every live subscriber of the
        conversation; connections still replaying buffer it."""
        members = self.subscribers.get(conv_id)
        replaying = self.replaying.get(conv_id)
        if replaying:
            for conn in replaying:
                conn.state.replay_buffers[conv_id].append(frame)
        if not members:
            return 0
        targets: Iterable[compiled.Connection] = members
        if skip_principal is not None:
            targets = [c for c in members if c.principal.id != skip_principal]
        else:
            targets = tuple(members)  # a send may close a slow consumer and shrink the set
        caught = self.caught_up.get(conv_id)
        if caught and frame.get("t") == "msg":
            seq = frame["seq"]
            targets = [c for c in targets if caught.get(c, 0) < seq]
            for conn in [c for c, upto in caught.items() if upto <= seq]:
                del caught[conn]
            if not caught:
                del self.caught_up[conv_id]
        json_payload = compiled.encode_json(frame)
        binary_payload = compiled.encode_frame(frame) if any(c.binary for c in targets) else None
        return self.send_to_all(targets, json_payload, binary_payload)

    def _send_to_principal(self, principal_id: str, frame: dict[str, Any]) -> None:
        for conn in tuple(self.by_principal.get(principal_id, ())):
            conn.send_frame(frame)

    def _release_in_order(self, runtime: ConvRuntime, frame: dict[str, Any]) -> None:
        """Fan out message frames in seq order: hold early arrivals, release runs, fill stuck gaps."""
        if self.native is not None:
            self.native.deliver(frame)  # the data plane keeps the order (and fans out natively)
            return
        seq = frame["seq"]
        if seq <= runtime.fanned_seq:
            return
        runtime.pending[seq] = frame
        while runtime.fanned_seq + 1 in runtime.pending:
            runtime.fanned_seq += 1
            self._broadcast(runtime.conv.id, runtime.pending.pop(runtime.fanned_seq))
        if runtime.pending and runtime.gap_timer is None:
            loop = asyncio.get_running_loop()
            runtime.gap_timer = loop.call_later(GAP_FILL_DELAY_S, self._schedule_gap_fill, runtime)

    def _schedule_gap_fill(self, runtime: ConvRuntime) -> None:
        runtime.gap_timer = None
        if runtime.pending:
            self._spawn(self._fill_gap(runtime))

    async def _fill_gap(self, runtime: ConvRuntime) -> None:
        missing_until = min(runtime.pending) - 1
        stored = await self.storage.messages_after(runtime.conv.id, runtime.fanned_seq,
                                                   missing_until - runtime.fanned_seq)
        for message in stored:
            self._release_in_order(runtime, self._msg_frame(message))
        if runtime.pending and min(runtime.pending) == runtime.fanned_seq + 1:
            self._release_in_order(runtime, runtime.pending.pop(runtime.fanned_seq + 1))

    @staticmethod
    def _msg_frame(message: StoredMessage) -> dict[str, Any]:
        return _message_frame(message.conv, message.seq, message.cmid, message.sender_id, message.sender_role,
                              message.sender_name, message.text, message.kind, message.meta, message.ts)

    async def _replay_then_live(self, conn: compiled.Connection, runtime: ConvRuntime, after_seq: int) -> None:
        """Register for live frames first, read what was missed, send it, then drain what arrived
        meanwhile, deduplicated by seq. Ends with `replayed`."""
        conv_id = runtime.conv.id
        conn.subscriptions.add(conv_id)
        conn.state.replay_buffers[conv_id] = []
        self.replaying.setdefault(conv_id, set()).add(conn)
        if self.native is not None:
            self.native.replaying(conv_id, True)
        limited = False
        last_sent = after_seq
        try:
            newest = max(runtime.fanned_seq, runtime.conv.last_seq)
            start = after_seq
            if newest - after_seq > self.config.replay_limit:
                start, limited = newest - self.config.replay_limit, True
            # Storage pages (at most its MAX_PAGE_LIMIT rows per read): read on until a short page,
            # or the limit, so that a replay_limit above one page still leaves no gap.
            remaining = self.config.replay_limit
            while remaining > 0:
                page = await self.storage.messages_after(conv_id, start, remaining)
                if conn.closed or conv_id not in conn.subscriptions:
                    return
                for message in page:
                    if message.seq > last_sent:
                        conn.send_frame(self._msg_frame(message))
                        last_sent = message.seq
                if not page or page[-1].seq >= newest:
                    break
                remaining -= len(page)
                start = page[-1].seq
        except BaseException:
            self._drop_subscription(conn, conv_id)
            conn.subscriptions.discard(conv_id)
            raise
        if conn.closed or conv_id not in conn.subscriptions:
            return
        if self.native is not None:
            self._native_replay_frames(self.native.plane.take_replay_frames())
        buffered = conn.state.replay_buffers.pop(conv_id, [])
        self.replaying.get(conv_id, set()).discard(conn)
        if not self.replaying.get(conv_id):
            self.replaying.pop(conv_id, None)
            if self.native is not None:
                self.native.replaying(conv_id, False)
        for frame in buffered:
            if frame.get("t") == "msg":
                if frame["seq"] <= last_sent:
                    continue
                last_sent = frame["seq"]
            conn.send_frame(frame)
        # The replay may have read messages from storage that are committed but not yet fanned out
        # (their outcome is still on its way): the live path must not send those to this connection.
        if self.native is not None:
            self.native.caught_up(conn, conv_id, last_sent)
        elif last_sent > runtime.fanned_seq:
            self.caught_up.setdefault(conv_id, {})[conn] = last_sent
        self.subscribers.setdefault(conv_id, set()).add(conn)
        if self.native is not None:
            self.native.grant(conn, conv_id)
        conn.send_frame({"t": "replayed", "conv": conv_id, "last_seq": last_sent, "limited": limited})

    def _conv_frame(self, runtime: ConvRuntime, **extra: Any) -> dict[str, Any]:
        conv = runtime.conv
        frame: dict[str, Any] = {"t": "conv", "conv": conv.id, "state": conv.state}
        if conv.agent_id:
            frame["agent"] = conv.agent_id
            # The visitor's widget shows who is helping; the agent is online when assigned.
            for agent_conn in self.by_principal.get(conv.agent_id, ()):
                if agent_conn.principal.name:
                    frame["agent_name"] = agent_conn.principal.name
                break
        frame.update({k: v for k, v in extra.items() if v is not None})
        return frame

    # --- frame handlers -------------------------------------------------------------------------
    def _on_ping(self, conn: compiled.Connection, principal: Principal, frame: dict[str, Any]) -> None:
        reply: dict[str, Any] = {"t": "pong"}
        n = F.ping_number(frame)
        if n is not None:
            reply["n"] = n
        conn.send_frame(reply)

    def _on_hello(self, conn: compiled.Connection, principal: Principal, frame: dict[str, Any]) -> Awaitable[None]:
        if conn.state.greeted:
            raise ProtocolError("conflict", "hello was already received on this connection")
        resume = F.resume_map(frame)
        conn.state.greeted = True
        if self.native is not None:
            self.native.connection(conn, principal)
        return self._hello(conn, principal, resume)

    async def _hello(self, conn: compiled.Connection, principal: Principal, resume: dict[int, int]) -> None:
        if principal.role == "visitor":
            convs = await self.storage.list_conversations(visitor_id=principal.id, states=OPEN_STATES)
        else:
            if not await self.agent_states.check(principal):  # authoritative: disabled, revoked, role
                conn.close(compiled.CLOSE_REVOKED, b"token revoked")
                return
            await self._agent_connected(principal)
            # Capacity is at most 1000, so this lists every open conversation of the agent.
            convs = await self.storage.list_conversations(agent_id=principal.id, states=OPEN_STATES, limit=1000)
        runtimes = []
        for conv in convs:
            runtime = self.convs.get(conv.id)
            if runtime is None:
                runtime = self.convs[conv.id] = self._new_runtime(conv)
            runtimes.append(runtime)
        conn.send_frame({
            "t": "welcome", "who": {"id": principal.id, "role": principal.role}, "epoch": self._epoch,
            "convs": [{"conv": r.conv.id, "last_seq": max(r.fanned_seq, r.conv.last_seq), "state": r.conv.state}
                      for r in runtimes],
        })
        for runtime in runtimes:
            if runtime.conv.id not in resume:
                self._subscribe_live(conn, runtime.conv.id)
        for conv_id, last_seq in resume.items():
            try:
                runtime = await self._accessible(principal, conv_id)
            except ProtocolError as error:
                conn.send_error(error.code, error.message, "hello")
                continue
            # Closed conversations too: a visitor may resume one to collect its last messages.
            await self._replay_then_live(conn, runtime, last_seq)

    def _on_open(self, conn: compiled.Connection, principal: Principal, frame: dict[str, Any]) -> Awaitable[None]:
        if principal.role != "visitor":
            raise ProtocolError("forbidden", "only visitors open conversations")
        text = F.text(frame, self.config.max_text_bytes, required=False)
        return self._open(conn, principal, text, F.tags(frame))

    async def _open(self, conn: compiled.Connection, principal: Principal, text: str | None,
                    tags: tuple[str, ...]) -> None:
        if not await self.storage.list_conversations(visitor_id=principal.id, states=OPEN_STATES, limit=1):
            wait = self.admission.open_conversation(principal.addr)  # only creations count
            if wait:
                raise ProtocolError("rate_limited", f"too many new conversations; retry in {wait:.0f} s")
        conv, created = await self.storage.open_conversation(principal.site_id, principal.id, tags)
        runtime = self.convs.get(conv.id)
        if runtime is None:
            runtime = self.convs[conv.id] = self._new_runtime(conv)
        for peer in tuple(self.by_principal.get(principal.id, ())):
            if conv.id not in peer.subscriptions:
                self._subscribe_live(peer, conv.id)
        if not created:
            position = self.router.queue_position(conv.id) if conv.state == "queued" else None
            conn.send_frame(self._conv_frame(runtime, position=position[0] if position else None,
                                             eta_s=_round(position[1]) if position else None))
            return
        p_neg = 0.0
        if text:
            await self._store_and_fan_out(runtime, NewMessage(
                conv=conv.id, cmid=f"open-{conv.id}", sender_id=principal.id, sender_role="visitor",
                sender_name=principal.name, text=text))
            if self.moods is not None:  # scored now: this first routing decision uses it
                p_neg = self.moods.observe(conv.id, text)
        visitor = await self.storage.get_visitor(principal.id)
        request = RouteRequest(
            conv_id=conv.id, site_id=principal.site_id, visitor_id=principal.id,
            skill_path=_skill_path(tags[0]) if tags else None, lang=visitor.lang if visitor else None,
            visitor_geo=visitor.geo if visitor else None, p_neg=min(max(p_neg, 0.0), 1.0),
            preferred_agent=visitor.last_agent_id if visitor else None)
        outcome = self.router.conversation_opened(request, time.time())
        if self.moods is not None:
            self.moods.watch(conv.id)
        await self._apply(outcome)

    def _on_send(self, conn: compiled.Connection, principal: Principal,
                 frame: dict[str, Any]) -> Awaitable[None] | None:
        received_at = time.perf_counter()
        conv_id = F.conv_id(frame)
        message = NewMessage(
            conv=conv_id, cmid=F.cmid(frame, self.config.max_cmid_len), sender_id=principal.id,
            sender_role=principal.role, sender_name=principal.name,
            text=F.text(frame, self.config.max_text_bytes, required=True) or "",
            kind=F.kind(frame), meta=F.meta(frame))
        runtime = self.convs.get(conv_id)
        if runtime is None or not self._can_access(principal, runtime.conv):
            return self._send(conn, principal, message, received_at)  # load or refuse, off the hot path
        # The hot path: no task, no coroutine; the commit's future calls back.
        self._check_sendable(principal, runtime)
        try:
            future = self.storage.submit_message(message)
        except ValueError as error:  # a value no database stores (NUL, NaN in meta): retrying won't help
            raise ProtocolError("bad_frame", str(error)) from None
        except StorageError as error:
            raise ProtocolError("unavailable", f"{error}; nothing was stored, retry later") from None
        future.add_done_callback(partial(self._on_committed, conn, runtime, message, received_at))
        return None

    def _on_committed(self, conn: compiled.Connection, runtime: ConvRuntime, message: NewMessage,
                      received_at: float, future: asyncio.Future[AppendResult]) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is None:
            self._sent(conn, runtime, message, future.result(), received_at)
        elif isinstance(error, NotFound):
            conn.send_error("not_found", "no such conversation", message.cmid)
        else:
            self.metrics.inc("kefu_storage_errors_total")
            log.error("storing a message failed", exc_info=error)
            conn.send_error("unavailable", "storage unavailable; nothing was stored, retry later", message.cmid)

    async def _send(self, conn: compiled.Connection, principal: Principal, message: NewMessage,
                    received_at: float) -> None:
        runtime = await self._accessible(principal, message.conv)
        self._check_sendable(principal, runtime)
        try:
            result = await self.storage.append_message(message)
        except ValueError as error:
            raise ProtocolError("bad_frame", str(error)) from None
        self._sent(conn, runtime, message, result, received_at)

    @staticmethod
    def _check_sendable(principal: Principal, runtime: ConvRuntime) -> None:
        if runtime.conv.state == "closed":
            raise ProtocolError("conflict", "the conversation is closed")
        if principal.role == "agent" and runtime.conv.agent_id != principal.id and runtime.conv.state == "queued":
            raise ProtocolError("forbidden", "accept the conversation first")

    def _sent(self, conn: compiled.Connection, runtime: ConvRuntime, message: NewMessage, result: AppendResult,
              received_at: float) -> None:
        """A client's message is durably stored: ack it, fan it out, score the visitor's mood."""
        created = self._announce(runtime, message, result, ack_to=conn)
        self.metrics.ack_latency.observe(time.perf_counter() - received_at)
        if created and message.sender_role == "visitor" and self.moods is not None:
            self.moods.submit(message.conv, message.text)

    async def _store_and_fan_out(self, runtime: ConvRuntime, message: NewMessage) -> bool:
        """Store a message the server writes on someone's behalf (an `open`'s text), then fan out."""
        try:
            result = await self.storage.append_message(message)
        except ValueError as error:
            raise ProtocolError("bad_frame", str(error)) from None
        return self._announce(runtime, message, result, ack_to=None)

    def _announce(self, runtime: ConvRuntime, message: NewMessage, result: AppendResult,
                  ack_to: compiled.Connection | None) -> bool:
        """After the commit: ack the sender, then fan out. Returns True when the message is new
        (a retried cmid is acked with its original seq and not delivered again)."""
        if ack_to is not None:
            ack_to.send_frame({"t": "ack", "cmid": message.cmid, "conv": message.conv, "seq": result.seq,
                               "ts": result.ts})
        self.metrics.inc("kefu_messages_acked_total")
        if not result.created:
            self.metrics.inc("kefu_messages_deduplicated_total")
            return False
        committed_at = time.perf_counter()
        self._release_in_order(runtime, _message_frame(
            message.conv, result.seq, message.cmid, message.sender_id, message.sender_role,
            message.sender_name, message.text, message.kind, message.meta, result.ts))
        self.metrics.delivery_latency.observe(time.perf_counter() - committed_at)
        return True

    # --- what the native data plane leaves to Python, once per batch ------------------------------
    def _native_stat(self, key: str) -> float:
        return self.native.plane.stats()[key] if self.native is not None else 0
    def _native_latency(self, key: str) -> tuple[list[int], float]:
        assert self.native is not None
        return self.native.plane.latency_histograms()[key]
    def _native_acked(self, acked: int, deduplicated: int) -> None:
        self.metrics.inc("kefu_messages_acked_total", acked)
        if deduplicated:
            self.metrics.inc("kefu_messages_deduplicated_total", deduplicated)

    def _native_replay_frames(self, frames: list[tuple[int, bytes]]) -> None:
        """Live frames of conversations someone is replaying: into their replay buffers, as `_broadcast` does."""
        for conv_id, payload in frames:
            replaying = self.replaying.get(conv_id)
            if replaying:
                frame = json.loads(payload)
                for conn in replaying:
                    conn.state.replay_buffers[conv_id].append(frame)

    def _native_read_marks(self, marks: list[tuple[int, str, int]]) -> None:
        """Read marks the data plane relayed and raised: stored behind it, one write per batch (a
        `read` has no ack; a crash can lose the last batch's marks, never lower one)."""
        self._spawn(self._store_read_marks(marks))

    async def _store_read_marks(self, marks: list[tuple[int, str, int]]) -> None:
        try:
            await self.storage.set_read_marks(marks)
        except StorageError:
            log.warning("storing %d read marks failed", len(marks), exc_info=True)

    def _native_stuck(self, stuck: list[tuple[int, int, int]]) -> None:
        """Committed messages wait behind a gap in the data plane: fill it from storage after a while."""
        for conv_id, _fanned, _first in stuck:
            runtime = self.convs.get(conv_id)
            if runtime is not None and runtime.gap_timer is None:
                loop = asyncio.get_running_loop()
                runtime.gap_timer = loop.call_later(GAP_FILL_DELAY_S, self._schedule_native_gap_fill, runtime)

    def _schedule_native_gap_fill(self, runtime: ConvRuntime) -> None:
        runtime.gap_timer = None
        self._spawn(self._fill_native_gap(runtime))

    async def _fill_native_gap(self, runtime: ConvRuntime) -> None:
        assert self.native is not None
        for conv_id, fanned, first in self.native.plane.stuck():
            if conv_id == runtime.conv.id:
                for message in await self.storage.messages_after(conv_id, fanned, first - 1 - fanned):
                    self.native.deliver(self._msg_frame(message))

    def _apply_soon(self, outcomes: list[Outcome]) -> None:
        """Routing outcomes decided outside a coroutine (a mood alert): applied in a task."""
        self._spawn(self._apply_all(outcomes))

    def routing_changed(self, site_id: int) -> None:
        """A site's routing configuration changed: mood alerts follow its new escalation settings."""
        if self.moods is not None:
            for conv_id in self.router.conversation_ids(site_id):
                self.moods.watch(conv_id)

    def _on_typing(self, conn: compiled.Connection, principal: Principal,
                   frame: dict[str, Any]) -> Awaitable[None] | None:
        conv_id = F.conv_id(frame)
        on = F.flag(frame, "on")
        now = time.monotonic()
        sent = conn.state.typing_sent
        if on and now - sent.get(conv_id, -1e9) < self.config.typing_interval_s:
            return None  # at most one typing-on per second per conversation is forwarded
        if conv_id not in sent and len(sent) >= MAX_TYPING_ENTRIES:
            del sent[next(iter(sent))]  # the oldest entry: a client cannot grow this without bound
        sent[conv_id] = now
        return self._typing(principal, conv_id, on)

    async def _typing(self, principal: Principal, conv_id: int, on: bool) -> None:
        await self._accessible(principal, conv_id)
        self._broadcast(conv_id, {"t": "typing", "conv": conv_id, "on": on, "from": self._from(principal)},
                        skip_principal=principal.id)

    def _on_read(self, conn: compiled.Connection, principal: Principal, frame: dict[str, Any]) -> Awaitable[None]:
        return self._read(principal, F.conv_id(frame), F.seq_number(frame))

    async def _read(self, principal: Principal, conv_id: int, seq: int) -> None:
        runtime = await self._accessible(principal, conv_id)
        if seq > max(runtime.fanned_seq, runtime.conv.last_seq):
            raise ProtocolError("bad_frame", "'seq' is beyond the conversation's last message")
        mark = await self.storage.set_read_mark(conv_id, principal.id, seq)
        if self.native is not None:  # stored: this participant's later reads stay in the data plane
            self.native.read_mark(conv_id, principal.id, mark)
        self._broadcast(conv_id, {"t": "read", "conv": conv_id, "seq": mark, "from": self._from(principal)},
                        skip_principal=principal.id)

    @staticmethod
    def _from(principal: Principal) -> dict[str, Any]:
        sender: dict[str, Any] = {"id": principal.id, "role": principal.role}
        if principal.name:
            sender["name"] = principal.name
        return sender

    def _staff_only(self, principal: Principal) -> None:
        if not principal.is_staff:
            raise ProtocolError("forbidden", "agents only")

    def _on_accept(self, conn: compiled.Connection, principal: Principal, frame: dict[str, Any]) -> Awaitable[None]:
        self._staff_only(principal)
        return self._accept(conn, principal, F.conv_id(frame))

    async def _accept(self, conn: compiled.Connection, principal: Principal, conv_id: int) -> None:
        runtime = await self._accessible(principal, conv_id)
        if runtime.conv.agent_id != principal.id or runtime.conv.state == "closed":
            raise ProtocolError("conflict", "the conversation is not waiting for you")
        if runtime.conv.state == "transferred":
            runtime.conv = await self.storage.set_conversation_state(conv_id, "assigned", principal.id,
                                                                      team=runtime.conv.team)
        # False when the router no longer tracks the offer (e.g. after a restart): storage is the truth.
        self.router.conversation_accepted(conv_id, principal.id, time.time())
        await self.storage.set_visitor_last_agent(runtime.conv.visitor_id, principal.id)
        self._broadcast(conv_id, self._conv_frame(runtime))

    def _on_transfer(self, conn: compiled.Connection, principal: Principal, frame: dict[str, Any]) -> Awaitable[None]:
        self._staff_only(principal)
        conv_id = F.conv_id(frame)
        to_agent, to_skill = F.name_field(frame, "to_agent"), F.name_field(frame, "to_skill")
        if (to_agent is None) == (to_skill is None):
            raise ProtocolError("bad_frame", "give exactly one of 'to_agent' or 'to_skill'")
        return self._transfer(principal, conv_id, to_agent, to_skill)

    async def _transfer(self, principal: Principal, conv_id: int, to_agent: str | None, to_skill: str | None) -> None:
        runtime = await self._accessible(principal, conv_id)
        if runtime.conv.state == "closed":
            raise ProtocolError("conflict", "the conversation is closed")
        if to_agent is not None:
            target = self.agents.get(to_agent) or await self.storage.get_agent(to_agent)
            if target is None or target.site_id != principal.site_id or target.disabled:
                raise ProtocolError("not_found", "no such agent")
            if to_agent not in self.online_agents:
                raise ProtocolError("unavailable", "that agent is offline")
        if to_skill is not None:
            to_skill = _skill_path(to_skill)
            if to_skill is None:
                raise ProtocolError("bad_frame", "'to_skill' is not a skill path")
        previous = runtime.conv.agent_id
        now = time.time()
        outcome = self.router.transfer(conv_id, now, to_agent=to_agent, to_skill=to_skill,
                                       from_agent=previous if principal.role == "agent" else None)
        if isinstance(outcome, Rejected) and outcome.reason == "unknown_conversation":
            # The router lost it (restart): route it afresh, away from the current agent.
            outcome = self.router.conversation_opened(RouteRequest(
                conv_id=conv_id, site_id=runtime.conv.site_id, visitor_id=runtime.conv.visitor_id,
                skill_path=to_skill, preferred_agent=to_agent,
                exclude=frozenset({previous}) if previous and previous != to_agent else frozenset()), now)
        if isinstance(outcome, Rejected):
            code = TRANSFER_ERRORS.get(outcome.reason, "unavailable")
            raise ProtocolError(code, f"transfer refused: {outcome.reason}")
        await self._apply(outcome)

    def _on_close(self, conn: compiled.Connection, principal: Principal, frame: dict[str, Any]) -> Awaitable[None]:
        return self._close(principal, F.conv_id(frame))

    async def _close(self, principal: Principal, conv_id: int) -> None:
        runtime = await self._accessible(principal, conv_id)
        if runtime.conv.state == "closed":
            raise ProtocolError("conflict", "the conversation is already closed")
        runtime.conv = await self.storage.set_conversation_state(conv_id, "closed", runtime.conv.agent_id,
                                                                  team=runtime.conv.team)
        self._broadcast(conv_id, self._conv_frame(runtime))
        for conn in tuple(self.subscribers.get(conv_id, ())):
            conn.subscriptions.discard(conv_id)
            self._drop_subscription(conn, conv_id)
        if not runtime.pending and conv_id not in self.replaying:
            self.convs.pop(conv_id, None)  # closed: reloaded from storage if someone resumes it
            if self.native is not None:
                self.native.conversation_gone(conv_id)
        if self.moods is not None:
            self.moods.forget(conv_id)
        await self._apply_all(self.router.conversation_closed(conv_id, time.time()))

    # --- routing outcomes -----------------------------------------------------------------------
    async def _apply_all(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            await self._apply(outcome)

    async def _apply(self, outcome: Outcome) -> None:
        """Make a routing outcome true: storage first, then the frames that announce it."""
        runtime = await self._conversation(outcome.conv_id)
        if isinstance(outcome, QueuePosition):
            if runtime.conv.state == "queued":
                self._broadcast(outcome.conv_id, self._conv_frame(
                    runtime, position=outcome.position, eta_s=_round(outcome.eta_s)))
            return
        if isinstance(outcome, Rejected):
            # Only a new conversation can be refused here (the queue is full): close it honestly.
            decision = outcome.decision.to_dict() if outcome.decision else {"reason": outcome.reason}
            await self.storage.record_routing_decision(outcome.conv_id, decision)
            runtime.conv = await self.storage.set_conversation_state(outcome.conv_id, "closed", None)
            self._broadcast(outcome.conv_id, self._conv_frame(runtime))
            self._broadcast(outcome.conv_id, {"t": "error", "code": "unavailable",
                                              "msg": "every agent is busy and the queue is full; try later"})
            return
        decision = outcome.decision.to_dict()
        await self.storage.record_routing_decision(outcome.conv_id, decision)
        previous = outcome.previous_agent or runtime.conv.agent_id
        if isinstance(outcome, Queued):
            if previous is not None:
                self._unsubscribe_principal(previous, outcome.conv_id)
            if runtime.conv.state != "queued":
                runtime.conv = await self.storage.set_conversation_state(outcome.conv_id, "queued", None,
                                                                          team=runtime.conv.team)
            self._broadcast(outcome.conv_id, self._conv_frame(
                runtime, position=outcome.position, eta_s=_round(outcome.eta_s)))
            return
        assert isinstance(outcome, Assign)
        moved = previous is not None and previous != outcome.agent_id
        state = "transferred" if moved else "assigned"
        runtime.conv = await self.storage.set_conversation_state(outcome.conv_id, state, outcome.agent_id,
                                                                  team=runtime.conv.team)
        if moved:
            self._broadcast(outcome.conv_id, self._conv_frame(runtime))  # visitor and previous agent
            self._unsubscribe_principal(previous, outcome.conv_id)
        else:
            self._broadcast(outcome.conv_id, self._conv_frame(runtime), skip_principal=outcome.agent_id)
        agent_frame = self._conv_frame(runtime, why=decision)
        for conn in tuple(self.by_principal.get(outcome.agent_id, ())):
            if not conn.state.greeted:
                continue
            conn.send_frame(agent_frame)
            if outcome.conv_id not in conn.subscriptions:
                self._spawn(self._replay_then_live(conn, runtime, 0))

    # --- agents' presence -----------------------------------------------------------------------
    async def _agent_connected(self, principal: Principal) -> None:
        agent = await self.storage.get_agent(principal.id)
        if agent is None or agent.disabled:
            raise ProtocolError("forbidden", "agent account is disabled")
        self.agents[agent.id] = agent
        if agent.id in self.online_agents:
            if agent.id in self._unreachable:  # back within the grace: offered new chats again
                self._unreachable.discard(agent.id)
                await self._apply_all(self.router.agent_online(_profile(agent), time.time()))
            return
        self.online_agents.add(agent.id)
        # Conversations it held before a restart count against its capacity again.
        held = await self.storage.list_conversations(agent_id=agent.id, states=("assigned", "transferred"),
                                                     limit=1000)
        holding = [RouteRequest(conv_id=c.id, site_id=c.site_id, visitor_id=c.visitor_id) for c in held]
        await self._apply_all(self.router.agent_online(_profile(agent), time.time(), holding=holding))

    def _agent_offline(self, agent_id: str) -> None:
        self._offline_timers.pop(agent_id, None)
        if agent_id in self.by_principal:
            return
        self._unreachable.discard(agent_id)
        self.online_agents.discard(agent_id)
        try:
            outcomes = self.router.agent_offline(agent_id, time.time())
        except KeyError:
            return
        if outcomes:
            self._spawn(self._apply_all(outcomes))

    async def agent_changed(self, agent: Agent) -> None:
        """An admin changed an agent (skills, capacity, languages…): keep the router's columns current."""
        if agent.id in self.agents:
            self.agents[agent.id] = agent
        if agent.id in self.online_agents and not agent.disabled:
            await self._apply_all(self.router.agent_updated(_profile(agent), time.time()))

    async def set_availability(self, agent_id: str, available: bool) -> bool:
        """An online agent's own switch: away keeps its conversations but is offered no new ones.
        False when the agent has no live session (availability exists only while connected)."""
        agent = self.agents.get(agent_id)
        if agent is None or agent_id not in self.online_agents or agent.disabled:
            return False
        now = time.time()
        await self._apply_all(self.router.agent_online(_profile(agent), now) if available
                              else self.router.agent_away(agent_id, now))
        return True

    def revoke(self, principal_id: str, reason: bytes = b"access revoked", *, offline_now: bool = False) -> int:
        """Close every connection of a principal (agent disabled, password or role changed, logout).
        `offline_now`: the agent goes offline at once, without the reconnect grace (disabled: it
        must not be routed anything meanwhile)."""
        conns = tuple(self.by_principal.get(principal_id, ()))
        for conn in conns:
            conn.close(compiled.CLOSE_REVOKED, reason)
        if offline_now and principal_id in self.online_agents:
            timer = self._offline_timers.pop(principal_id, None)
            if timer is not None:
                timer.cancel()
            self.online_agents.discard(principal_id)
            self._unreachable.discard(principal_id)
            try:
                outcomes = self.router.agent_offline(principal_id, time.time())
            except KeyError:
                outcomes = []
            if outcomes:
                self._spawn(self._apply_all(outcomes))
        return len(conns)

    # --- housekeeping ---------------------------------------------------------------------------
    async def _sweep_forever(self) -> None:
        """One timer for all connections (not a task per socket): ping the silent, drop the dead and
        those whose token expired, and let the router act on its timeouts."""
        interval = max(1.0, min(5.0, self.config.pong_timeout_s / 3))
        while True:
            await asyncio.sleep(interval)
            try:
                self._sweep_connections(time.monotonic(), time.time())
                outcomes = self.router.tick(time.time())
                if outcomes:
                    await self._apply_all(outcomes)
            except Exception:
                log.exception("sweep failed")

    def _sweep_connections(self, now_mono: float, now_wall: float) -> None:
        for conn in tuple(self.connections):
            if conn.principal.expires_at and now_wall > conn.principal.expires_at:
                conn.close(compiled.CLOSE_REVOKED, b"token expired")
            elif conn.ping_outstanding:
                if now_mono - conn.ping_sent_at > self.config.pong_timeout_s:
                    conn.close(compiled.CLOSE_IDLE, b"no reply to ping", graceful=False)
            elif now_mono - conn.last_rx > self.config.idle_timeout_s:
                conn.send_ping()

    def _on_bus_event(self, event: BusEvent) -> None:
        if event.origin == self.bus.node_id:
            return
        runtime = self.convs.get(event.conv)
        if event.kind == "msg" and runtime is not None:
            self._release_in_order(runtime, event.frame)
        elif event.kind != "msg":
            self._broadcast(event.conv, event.frame)


def _skill_path(text: str) -> str | None:
    """`text` as a routing skill path, or None when it is not one (a plain tag)."""
    try:
        return "/".join(parse_skill_path(text))
    except ValueError:
        return None


def _round(eta_s: float | None) -> float | None:
    return None if eta_s is None else round(eta_s, 1)


def _profile(agent: Agent) -> AgentProfile:
    """What routing needs to know about an agent; skills that are not valid paths are skipped."""
    skills = {path: level for path, level in agent.skills.items()
              if path != DEESCALATION_SKILL and _skill_path(path) is not None and 0.0 <= level <= 1.0}
    return AgentProfile(
        agent_id=agent.id, site_id=agent.site_id, skills=dict(list(skills.items())[:256]),
        capacity=min(max(agent.capacity, 1), 1000), languages=agent.languages, geo=agent.geo,
        deescalation=min(max(agent.skills.get(DEESCALATION_SKILL, 0.5), 0.0), 1.0), teams=agent.teams)


def _message_frame(conv: int, seq: int, cmid: str, sender_id: str, sender_role: str, sender_name: str | None,
                   text: str, kind: str, meta: dict[str, Any], ts: float) -> dict[str, Any]:
    """A `msg` frame (live or replayed: the same shape either way)."""
    sender: dict[str, Any] = {"id": sender_id, "role": sender_role}
    if sender_name:
        sender["name"] = sender_name
    frame: dict[str, Any] = {"t": "msg", "conv": conv, "seq": seq, "cmid": cmid, "from": sender, "text": text,
                             "kind": kind, "ts": ts}
    if meta:
        frame["meta"] = meta
    return frame
