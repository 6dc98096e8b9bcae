"""SqliteStorage on the native journal: what the contract tests do not pin down for SQLite alone.

Group commit through the storage API (many appends, few transactions, while the control writer holds
the file's write lock), closed conversations refused inside the transaction, and the control writer
and the journal taking turns on one file.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
from kefu.storage import Conflict, NewMessage
from kefu.storage.sqlite import SqliteStorage


async def open_store(path: Path) -> tuple[SqliteStorage, int, str]:
    store = SqliteStorage(path)
    await store.open()
    site = await store.create_site("shop", ())
    visitor = await store.upsert_visitor(site.id, None, name=None, lang=None, geo=None, tags=())
    conv, _ = await store.open_conversation(site.id, visitor.id)
    return store, conv.id, visitor.id


async def test_appends_queued_behind_a_control_write_commit_together(tmp_path: Path) -> None:
    store, conv, visitor = await open_store(tmp_path / "k.db")
    try:
        entered, gate = threading.Event(), threading.Event()

        def hold_the_lock(cur: sqlite3.Cursor) -> bool:
            entered.set()
            return gate.wait(30)

        blocker = asyncio.ensure_future(store._write(hold_the_lock))
        assert await asyncio.to_thread(entered.wait, 30)
        commits_before = store._journal.commits  # type: ignore[union-attr]
        sends = [asyncio.ensure_future(store.append_message(NewMessage(conv, f"m{i}", visitor, "visitor", None, "x")))
                 for i in range(500)]
        await asyncio.sleep(0)  # every append reaches the journal, which waits for the lock
        gate.set()
        results = await asyncio.gather(*sends)
        assert await blocker is True
        assert [r.seq for r in results] == list(range(1, 501))
        # The writer may have taken the first record before the rest arrived: at most two batches.
        assert store._journal.commits - commits_before <= 2  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_closed_conversation_refuses_new_messages_but_answers_retries(tmp_path: Path) -> None:
    store, conv, visitor = await open_store(tmp_path / "k.db")
    try:
        first = await store.append_message(NewMessage(conv, "before", visitor, "visitor", None, "hi"))
        await store.set_conversation_state(conv, "closed", None)
        with pytest.raises(Conflict):
            await store.append_message(NewMessage(conv, "after", visitor, "visitor", None, "late"))
        retry = await store.append_message(NewMessage(conv, "before", visitor, "visitor", None, "hi"))
        assert (retry.seq, retry.ts, retry.created) == (first.seq, first.ts, False)
        assert [m.cmid for m in await store.messages_after(conv, 0, 10)] == ["before"]
    finally:
        await store.close()


async def test_control_writes_and_appends_interleave_without_busy_errors(tmp_path: Path) -> None:
    """Both writers of the file at full speed: every call succeeds (they take turns on the in-process
    lock; SQLite's busy handler would otherwise make some wait and poll)."""
    store, conv, visitor = await open_store(tmp_path / "k.db")
    try:
        appends = [store.append_message(NewMessage(conv, f"m{i}", visitor, "visitor", None, "x")) for i in range(300)]
        marks = [store.set_read_mark(conv, f"a_{i % 7}", i) for i in range(100)]
        results = await asyncio.gather(*appends, *marks)
        assert sorted(r.seq for r in results[:300]) == list(range(1, 301))
        assert (await store.get_conversation(conv)).last_seq == 300  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_a_new_database_gets_large_pages_and_an_existing_one_keeps_its_own(tmp_path: Path) -> None:
    fresh = SqliteStorage(tmp_path / "fresh.db")
    await fresh.open()
    await fresh.close()
    old_path = tmp_path / "old.db"
    with sqlite3.connect(old_path) as conn:  # a database made before: 4 KiB pages, WAL
        conn.execute("PRAGMA page_size = 4096")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE unrelated (x)")
    conn.close()
    old = SqliteStorage(old_path)
    await old.open()
    try:
        site = await old.create_site("shop", ())
        assert site.id == 1, "the existing file is usable as it is"
    finally:
        await old.close()
    sizes = {}
    for name in ("fresh.db", "old.db"):
        with sqlite3.connect(tmp_path / name) as conn:
            sizes[name] = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.close()
    assert sizes == {"fresh.db": 16384, "old.db": 4096}
