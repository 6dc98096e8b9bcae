"""A native data plane writing through a real SqliteStorage's journal (shared by the journal tests)."""

from __future__ import annotations

from kefu import compiled
from kefu.storage.base import Conversation, Visitor
from kefu.storage.sqlite import SqliteStorage

VISITOR = 0  # the visitor's connection slot


async def plane_on_journal(storage: SqliteStorage, *, name: str | None = "Ann"
                           ) -> tuple[compiled.DataPlane, int, Conversation, Visitor]:
    """A new site, visitor and queued conversation in `storage`, and a data plane on storage's journal
    with that visitor connected (slot VISITOR) and granted. Returns (plane, its completion fd, conv,
    visitor)."""
    site = await storage.create_site("shop", ())
    visitor = await storage.upsert_visitor(site.id, None, name=name, lang=None, geo=None, tags=())
    conv, _ = await storage.open_conversation(site.id, visitor.id)
    plane = compiled.DataPlane(max_text_bytes=8192, max_cmid_len=64, typing_interval_s=1.0)
    fd = plane.use_journal(storage.journal)
    plane.connection(VISITOR, visitor.id, "visitor", name, False)
    plane.conversation(conv.id, "queued", None, 0)
    plane.grant(VISITOR, conv.id)
    return plane, fd, conv, visitor
