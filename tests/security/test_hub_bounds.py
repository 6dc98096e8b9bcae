"""Issue 8, item 13 (typing map): per-connection hub state has a bound a client cannot push past.

In-process: a real Hub (SQLite storage file, local bus, routing engine) and a gateway Connection
that is never connected; only the typing bookkeeping runs, which needs neither."""

from __future__ import annotations

from kefu.auth import Principal
from kefu.bus import open_bus
from kefu.config import Config
from kefu.metrics import Metrics
from kefu.realtime.hub import MAX_TYPING_ENTRIES, Hub
from kefu.routing import RoutingConfig, RoutingEngine
from kefu.storage.sqlite import SqliteStorage


async def test_typing_map_is_bounded_per_connection(tmp_path) -> None:
    # The Python hub's own bookkeeping is under test; a native DataPlane (bound to its creating thread)
    # could be collected by the storage writer thread's garbage collection and refuse to be dropped there.
    hub = Hub(Config(dataplane="python"), SqliteStorage(tmp_path / "kefu.db"), open_bus(None),
              RoutingEngine(RoutingConfig()), Metrics(), sentiment=None)
    principal = Principal(id="v_x", role="visitor", site_id=1)
    conn = hub.new_connection(principal, binary=False)
    for conv in range(1, 20 * MAX_TYPING_ENTRIES):
        work = hub._on_typing(conn, principal, {"t": "typing", "conv": conv, "on": True})
        assert work is not None
        work.close()  # the access check and relay are not under test here
    assert len(conn.state.typing_sent) == MAX_TYPING_ENTRIES
    # The once-per-second forwarding rule still holds for a remembered conversation.
    last = 20 * MAX_TYPING_ENTRIES - 1
    assert hub._on_typing(conn, principal, {"t": "typing", "conv": last, "on": True}) is None


async def test_refused_conversation_ids_are_not_kept_in_memory(tmp_path) -> None:
    """Probing other visitors' conversation ids must not load them into the hub's cache."""
    import pytest
    from kefu.realtime.frames import ProtocolError

    storage = SqliteStorage(tmp_path / "kefu.db")
    await storage.open()
    try:
        hub = Hub(Config(dataplane="python"), storage, open_bus(None), RoutingEngine(RoutingConfig()), Metrics(),
                  sentiment=None)
        site = await storage.create_site("s", ())
        owner = await storage.upsert_visitor(site.id, None, name=None, lang=None, geo=None, tags=())
        prober = await storage.upsert_visitor(site.id, None, name=None, lang=None, geo=None, tags=())
        conv, _ = await storage.open_conversation(site.id, owner.id)
        stranger = Principal(id=prober.id, role="visitor", site_id=site.id)
        with pytest.raises(ProtocolError):
            await hub._accessible(stranger, conv.id)
        assert conv.id not in hub.convs
        runtime = await hub._accessible(Principal(id=owner.id, role="visitor", site_id=site.id), conv.id)
        assert hub.convs[conv.id] is runtime
    finally:
        await storage.close()
