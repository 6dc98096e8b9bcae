"""The hub's side of the native data plane (docs/architecture.md, "Data plane and control plane").

`NativeDataPlane` owns a `kefu._native.DataPlane` and keeps its tables equal to the hub's decisions
(who is greeted on which slot, which conversations exist in which state, who is subscribed, who
is replaying). The gateway runs `send` and `typing` through it without Python; what is left here
runs once per *batch*:

- With SQLite, records go from Rust to storage's own native journal (native/journal): one journal
  thread and one connection write every message of the file. The data plane's outcomes come back on
  its own completion queue, whose eventfd wakes `_pump` once per committed batch, which lets the data
  plane ack and fan out the batch (and reports the journal's batches to the storage metrics).
- With PostgreSQL (asyncpg), `flush` (scheduled by the gateway when records are queued) carries the
  batch to `Storage.append_records`, which writes it in one round trip (`kefu_append_batch`), with
  no `NewMessage` or future per record; one batch is in flight at a time, the next takes what queued
  meanwhile.
- `_committed` reports the batch's outcomes to the data plane, which acks and fans out in seq order,
  and hands the batch's visitor texts to the mood pipe (in Rust); then live frames of replaying
  conversations go to the hub's replay buffers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import select
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kefu import compiled
from kefu.storage.base import MessageRecord, Storage
from kefu.storage.sqlite import SqliteStorage

if TYPE_CHECKING:
    from kefu.auth import Principal
    from kefu.storage.base import Conversation

log = logging.getLogger("kefu.dataplane")


class NativeDataPlane:
    def __init__(self, storage: Storage, *, max_text_bytes: int, max_cmid_len: int, typing_interval_s: float) -> None:
        self.storage = storage
        self.plane = compiled.DataPlane(max_text_bytes=max_text_bytes, max_cmid_len=max_cmid_len,
                                        typing_interval_s=typing_interval_s)
        # Set by the hub: called after each batch with what the data plane left for Python.
        self.on_replay_frames: Callable[[list[tuple[int, bytes]]], None] = lambda frames: None
        self.on_stuck: Callable[[list[tuple[int, int, int]]], None] = lambda stuck: None
        self.on_read_marks: Callable[[list[tuple[int, str, int]]], None] = lambda marks: None
        self.on_acked: Callable[[int, int], None] = lambda acked, deduplicated: None
        self._attached = False
        self._journal_fd: int | None = None
        # Where deliveries go: this process's gateway, or (control process of --workers) the rings.
        self._write_deliveries: Callable[[], None] = compiled.write_deliveries
        self._local_gateway = True
        self._observe_batches: Callable[[], None] = lambda: None
        self._storing = False
        self._store_tasks: set[asyncio.Task[None]] = set()

    def use_mood(self, pipe: compiled.MoodPipe) -> None:
        """Visitors' texts go to `pipe`'s thread, from Rust, once per batch of outcomes."""
        self.plane.use_mood(pipe)

    def route_through(self, write_deliveries: Callable[[], None]) -> None:
        """The control process of `--workers N`: the connections live in gateway workers, so frames
        arrive from `WorkerRouter.feed` and deliveries leave by `write_deliveries` (to the rings)
        instead of through this process's gateway. Call before `attach`."""
        self._write_deliveries = write_deliveries
        self._local_gateway = False

    def attach(self) -> None:
        """From now on the gateway gives every frame to the data plane first. Storage is open (the
        journal needs its schema)."""
        loop = asyncio.get_running_loop()
        if isinstance(self.storage, SqliteStorage):
            self._journal_fd = self.plane.use_journal(self.storage.journal)
            self._observe_batches = self.storage.observe_journal_batches
            loop.add_reader(self._journal_fd, self._pump)
        if self._local_gateway:
            compiled.attach_dataplane(self.plane, self.flush, loop.call_soon)
        self._attached = True

    def detach(self, timeout_s: float = 30.0) -> None:
        """Stop taking frames; what was submitted is still written and its outcomes delivered (waits
        up to `timeout_s` for them: the journal is storage's and stays open)."""
        if self._attached:
            if self._local_gateway:
                compiled.detach_dataplane()
            self._attached = False
        self.plane.close()
        marks = self.plane.take_read_marks()  # raised by the last frames: stored with the rest
        if marks:
            self.on_read_marks(marks)
        if self._journal_fd is not None:
            fd = self._journal_fd
            asyncio.get_running_loop().remove_reader(fd)
            self._journal_fd = None
            deadline = time.monotonic() + timeout_s
            self._pump()
            while self.plane.stats()["in_flight"] and time.monotonic() < deadline:
                select.select([fd], [], [], 0.1)
                self._pump()

    def _pump(self) -> None:
        """The journal committed a batch (eventfd readable): ack, fan out, once for the batch."""
        self._observe_batches()
        acked, deduplicated, _failed = self.plane.pump()
        if acked:
            self.on_acked(acked, deduplicated)
        self._after()

    # --- tables (called by the hub where it decides) ----------------------------------------------
    def connection(self, conn: compiled.Connection, principal: Principal) -> None:
        if conn.slot >= 0:
            self.plane.connection(conn.slot, principal.id, principal.role, principal.name, conn.binary)

    def connection_gone(self, conn: compiled.Connection) -> None:
        if conn.slot >= 0:
            self.plane.connection_gone(conn.slot)

    def conversation(self, conv: Conversation, watermark: int) -> None:
        """State and agent of `conv`; `watermark` (the seq fanned out so far, 0 on updates) only ever
        raises the data plane's: a stored `last_seq` may already count messages whose outcome is
        still on its way, and those must still be fanned out."""
        self.plane.conversation(conv.id, conv.state, conv.agent_id, watermark)

    def conversation_gone(self, conv_id: int) -> None:
        self.plane.conversation_gone(conv_id)

    def grant(self, conn: compiled.Connection, conv_id: int) -> None:
        if conn.slot >= 0:
            self.plane.grant(conn.slot, conv_id)

    def caught_up(self, conn: compiled.Connection, conv_id: int, seq: int) -> None:
        if conn.slot >= 0:
            self.plane.caught_up(conn.slot, conv_id, seq)

    def revoke(self, conn: compiled.Connection, conv_id: int) -> None:
        if conn.slot >= 0:
            self.plane.revoke(conn.slot, conv_id)

    def replaying(self, conv_id: int, on: bool) -> None:
        self.plane.replaying(conv_id, on)

    def read_mark(self, conv_id: int, participant_id: str, seq: int) -> None:
        """The participant's mark is stored (at least `seq`): its later reads stay in the data plane."""
        self.plane.read_mark(conv_id, participant_id, seq)

    def fanned_seq(self, conv_id: int) -> int | None:
        return self.plane.fanned_seq(conv_id)

    # --- messages stored by the control plane ---------------------------------------------------
    def deliver(self, frame: dict[str, Any]) -> None:
        """Fan out a `msg` frame the hub built (an `open`'s text, a Python-path send, the bus, a gap
        fill) through the data plane, so one place keeps every conversation's seq order."""
        sender = frame["from"]
        meta = frame.get("meta")
        self.plane.deliver(frame["conv"], frame["seq"], frame["ts"], sender["id"], sender["role"],
                           sender.get("name"), frame["cmid"], frame["kind"], frame["text"],
                           json.dumps(meta, ensure_ascii=False, separators=(",", ":")) if meta else None)
        self._after()

    # --- the Python-side writer (seam 1 for asyncpg) ----------------------------------------------
    def flush(self) -> None:
        """Records are queued or read marks raised (the gateway schedules this once per batch of
        frames): hand the marks to the hub to store, and the records to storage as one batch. One
        batch at a time; what queues meanwhile goes in the next one (group commit)."""
        marks = self.plane.take_read_marks()
        if marks:
            self.on_read_marks(marks)
        if self._storing:
            return  # the running batch loop takes these when its batch is done
        records: list[MessageRecord] = self.plane.take_records()
        if records:
            self._storing = True
            task = asyncio.get_running_loop().create_task(self._store(records))
            self._store_tasks.add(task)
            task.add_done_callback(self._store_tasks.discard)

    async def _store(self, records: list[MessageRecord]) -> None:
        try:
            while records:
                try:
                    outcomes = await self.storage.append_records(records)
                except Exception:  # nothing of the batch is known to be stored: its senders retry
                    log.exception("storing %d messages failed", len(records))
                    outcomes = [(record[0], record[1], 0, 0.0, "failed") for record in records]
                self._committed(outcomes)
                records = self.plane.take_records()
        finally:
            self._storing = False

    def _committed(self, outcomes: list[tuple[int, int, int, float, str]]) -> None:
        self.plane.on_outcomes(outcomes)
        acked = sum(1 for outcome in outcomes if outcome[4] in ("created", "duplicate"))
        self.on_acked(acked, sum(1 for outcome in outcomes if outcome[4] == "duplicate"))
        self._after()

    def after_frames(self) -> None:
        """After a batch of frames fed from the workers' rings: what the gateway does in one process
        (write the deliveries; with a Python-side writer, carry the queued records to it)."""
        self.flush()
        self._after()

    def _after(self) -> None:
        """Write what the data plane produced and give Python its share, once per batch."""
        self._write_deliveries()
        frames = self.plane.take_replay_frames()
        if frames:
            self.on_replay_frames(frames)
        stuck = self.plane.stuck()
        if stuck:
            self.on_stuck(stuck)
