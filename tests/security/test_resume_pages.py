"""Gap-free resume past one storage page: storage returns at most MAX_PAGE_LIMIT rows per read, and a
replay_limit above that must page on, not stop (found when a kill -9 test flooded > 10,000 messages).

In-process: a real Hub on a real SQLite file; the resuming connection is the control process's
`RemoteConnection`, whose worker link here only records what the hub sends it."""

from __future__ import annotations

import json

import kefu.storage._common as storage_common
from kefu.auth import Principal
from kefu.bus import open_bus
from kefu.config import Config
from kefu.metrics import Metrics
from kefu.realtime.hub import Hub
from kefu.routing import RoutingConfig, RoutingEngine
from kefu.storage.base import NewMessage
from kefu.storage.sqlite import SqliteStorage
from kefu.workers import wire
from kefu.workers.control import RemoteConnection


class RecordingLink:
    """Stands in for a worker's delivery ring: keeps the records the hub sends to the connection."""

    def __init__(self) -> None:
        self.frames: list[dict] = []

    def send(self, record: bytes) -> None:
        kind, _ids, json_payload, _binary = wire.decode(record)
        assert kind == "send"
        self.frames.append(json.loads(json_payload))


async def test_resume_reads_every_page(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(storage_common, "MAX_PAGE_LIMIT", 7)
    storage = SqliteStorage(tmp_path / "kefu.db")
    await storage.open()
    try:
        hub = Hub(Config(dataplane="python", replay_limit=100), storage, open_bus(None),
                  RoutingEngine(RoutingConfig()), Metrics(), sentiment=None)
        site = await storage.create_site("s", ())
        visitor = await storage.upsert_visitor(site.id, None, name=None, lang=None, geo=None, tags=())
        conv, _ = await storage.open_conversation(site.id, visitor.id)
        for i in range(30):
            await storage.append_message(NewMessage(conv=conv.id, cmid=f"m{i}", sender_id=visitor.id,
                                                    sender_role="visitor", sender_name=None, text=f"text {i}"))
        principal = Principal(id=visitor.id, role="visitor", site_id=site.id)
        link = RecordingLink()
        conn = RemoteConnection(link, 1, principal, False, 0, 0)  # type: ignore[arg-type]
        hub.on_connected(conn)  # type: ignore[arg-type]
        runtime = await hub._accessible(principal, conv.id)
        await hub._replay_then_live(conn, runtime, 3)  # type: ignore[arg-type]
        seqs = [f["seq"] for f in link.frames if f["t"] == "msg"]
        assert seqs == list(range(4, 31))
        assert link.frames[-1] == {"t": "replayed", "conv": conv.id, "last_seq": 30, "limited": False}
        # A replay limit still cuts the oldest and says so.
        hub.config = hub.config.replace(replay_limit=10)
        link.frames.clear()
        hub._drop_subscription(conn, conv.id)  # type: ignore[arg-type]
        await hub._replay_then_live(conn, runtime, 0)  # type: ignore[arg-type]
        assert [f["seq"] for f in link.frames if f["t"] == "msg"] == list(range(21, 31))
        assert link.frames[-1]["limited"] is True
    finally:
        await storage.close()
