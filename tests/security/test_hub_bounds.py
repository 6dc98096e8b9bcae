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
    hub = Hub(Config(), SqliteStorage(tmp_path / "kefu.db"), open_bus(None), RoutingEngine(RoutingConfig()),
              Metrics(), sentiment=None)
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
