"""The Storage contract, run against both real backends (SQLite file, PostgreSQL database).

What is checked is what delivery relies on: seq gap-free and unique under concurrency (also with two
storage instances = two server processes on one database), a retried cmid never creates a second
message, one open conversation per visitor, an ack only after a durable commit (kill -9 test), and a
failed commit acks nothing and leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from kefu.storage import (
    AppendResult,
    Conflict,
    Conversation,
    NewMessage,
    NotFound,
    Site,
    Storage,
    StorageError,
    Visitor,
    _common,
    open_storage,
)
from kefu.storage.postgres import PostgresStorage
from kefu.storage.sqlite import SqliteStorage

# --- fixtures: real databases ----------------------------------------------------------------------
# SQLite: a file under tmp_path. PostgreSQL: one randomly named database per session on the server at
# KEFU_TEST_PG_DSN (dropped afterwards) and a fresh schema in it per test (`pg_schema_dsn`, chosen
# through the DSN's search_path as an operator would). PostgreSQL tests fail when the server is unreachable.

@dataclass
class Backend:
    """A storage location; `make()` returns a new, unopened Storage on it (to reopen, or a 2nd node)."""

    name: str
    make: Callable[..., Storage]


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        path = tmp_path / "kefu.db"
        return Backend("sqlite", lambda **options: SqliteStorage(path, **options))
    dsn = request.getfixturevalue("pg_schema_dsn")
    return Backend("postgres", lambda **options: PostgresStorage(dsn, **options))


@pytest.fixture()
async def pg_store(pg_schema_dsn: str) -> AsyncIterator[PostgresStorage]:
    """An open PostgresStorage on a fresh schema, for the PostgreSQL-only tests."""
    store = PostgresStorage(pg_schema_dsn)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def storage(backend: Backend) -> AsyncIterator[Storage]:
    store = backend.make()
    await store.open()
    try:
        yield store
    finally:
        await store.close()


async def make_conversations(storage: Storage, count: int, site: Site | None = None) -> list[Conversation]:
    site = site or await storage.create_site("shop", ("https://shop.example",))
    conversations = []
    for index in range(count):
        visitor = await storage.upsert_visitor(site.id, None, name=f"v{index}", lang="en", geo=None, tags=())
        conversation, created = await storage.open_conversation(site.id, visitor.id)
        assert created
        conversations.append(conversation)
    return conversations


def message(conv: Conversation, cmid: str, sender: str | None = None, text: str = "hello") -> NewMessage:
    return NewMessage(conv=conv.id, cmid=cmid, sender_id=sender or conv.visitor_id, sender_role="visitor",
                      sender_name=None, text=text)


# --- messages ------------------------------------------------------------------------------------

async def test_seq_starts_at_one_and_is_gap_free_under_concurrency(storage: Storage) -> None:
    conversations = await make_conversations(storage, 20)
    sends = [message(conversations[i % 20], f"m{i}") for i in range(2000)]
    results = await asyncio.gather(*(storage.append_message(m) for m in sends))
    assert all(result.created for result in results)
    for conv in conversations:
        seqs = sorted(result.seq for m, result in zip(sends, results) if m.conv == conv.id)
        assert seqs == list(range(1, 101))
        stored = await storage.messages_after(conv.id, 0, 1000)
        assert [m.seq for m in stored] == list(range(1, 101))
        # Same cmid <-> seq mapping in storage as in the acks.
        acked = {m.cmid: result.seq for m, result in zip(sends, results) if m.conv == conv.id}
        assert {m.cmid: m.seq for m in stored} == acked
        assert (await storage.get_conversation(conv.id)).last_seq == 100


async def test_two_instances_on_one_database_keep_seq_gap_free(storage: Storage, backend: Backend) -> None:
    """Two server processes sharing the database: the seq rule and idempotency hold across them."""
    conversations = await make_conversations(storage, 4)
    other = backend.make()
    await other.open()
    try:
        sends = [message(conversations[i % 4], f"m{i}") for i in range(400)]
        duplicate = message(conversations[0], "same")
        results = await asyncio.gather(
            *((storage if i % 2 else other).append_message(m) for i, m in enumerate(sends)),
            *((storage if i % 2 else other).append_message(duplicate) for i in range(10)),
        )
    finally:
        await other.close()
    duplicate_results = results[400:]
    assert len({r.seq for r in duplicate_results}) == 1
    assert sum(r.created for r in duplicate_results) == 1
    for conv in conversations:
        stored = await storage.messages_after(conv.id, 0, 1000)
        expected = 101 if conv.id == conversations[0].id else 100
        assert [m.seq for m in stored] == list(range(1, expected + 1))


async def test_retried_cmid_returns_original_seq_and_consumes_none(storage: Storage) -> None:
    (conv,) = await make_conversations(storage, 1)
    first = await storage.append_message(message(conv, "c1", text="first"))
    retry = await storage.append_message(message(conv, "c1", text="first, resent"))
    assert first == AppendResult(seq=1, ts=first.ts, created=True)
    assert retry == AppendResult(seq=1, ts=first.ts, created=False)
    assert (await storage.append_message(message(conv, "c2"))).seq == 2
    stored = await storage.messages_after(conv.id, 0, 10)
    assert [(m.seq, m.cmid, m.text) for m in stored] == [(1, "c1", "first"), (2, "c2", "hello")]


async def test_concurrent_duplicates_make_exactly_one_row(storage: Storage) -> None:
    (conv,) = await make_conversations(storage, 1)
    results = await asyncio.gather(*(storage.append_message(message(conv, "dup")) for _ in range(10)))
    assert {r.seq for r in results} == {1}
    assert sum(r.created for r in results) == 1
    assert len({r.ts for r in results}) == 1
    assert [m.seq for m in await storage.messages_after(conv.id, 0, 10)] == [1]
    assert (await storage.get_conversation(conv.id)).last_seq == 1


async def test_different_senders_may_reuse_a_cmid(storage: Storage) -> None:
    (conv,) = await make_conversations(storage, 1)
    from_visitor = await storage.append_message(message(conv, "x"))
    from_agent = await storage.append_message(message(conv, "x", sender="a_agent"))
    assert (from_visitor.seq, from_agent.seq) == (1, 2)
    assert from_agent.created


async def test_unknown_conversation_fails_alone(storage: Storage) -> None:
    conversations = await make_conversations(storage, 2)
    missing = NewMessage(conv=999_999, cmid="lost", sender_id="v_x", sender_role="visitor", sender_name=None,
                         text="nobody")
    out_of_range = NewMessage(conv=2**70, cmid="huge", sender_id="v_x", sender_role="visitor", sender_name=None,
                              text="nobody")
    sends = [message(conversations[i % 2], f"m{i}") for i in range(20)]
    sends.insert(7, missing)
    sends.insert(12, out_of_range)
    results = await asyncio.gather(*(storage.append_message(m) for m in sends), return_exceptions=True)
    assert isinstance(results[7], NotFound) and isinstance(results[12], NotFound)
    ok = [r for i, r in enumerate(results) if i not in (7, 12)]
    assert all(isinstance(r, AppendResult) and r.created for r in ok)
    for conv in conversations:
        assert [m.seq for m in await storage.messages_after(conv.id, 0, 100)] == list(range(1, 11))


async def test_messages_after_pages_in_seq_order_and_round_trips_fields(storage: Storage) -> None:
    (conv,) = await make_conversations(storage, 1)
    await storage.append_message(NewMessage(
        conv=conv.id, cmid="rich", sender_id="a_1", sender_role="agent", sender_name="Ann", text="你好 ✓",
        kind="image", meta={"url": "https://x/y.png", "size": [1, 2]}))
    for i in range(24):
        await storage.append_message(message(conv, f"m{i}"))
    pages, after = [], 0
    while page := await storage.messages_after(conv.id, after, 10):
        pages.append([m.seq for m in page])
        after = page[-1].seq
    assert pages == [list(range(1, 11)), list(range(11, 21)), list(range(21, 26))]
    (rich,) = await storage.messages_after(conv.id, 0, 1)
    assert (rich.cmid, rich.sender_id, rich.sender_role, rich.sender_name, rich.text, rich.kind, rich.meta) == (
        "rich", "a_1", "agent", "Ann", "你好 ✓", "image", {"url": "https://x/y.png", "size": [1, 2]})
    assert await storage.messages_after(conv.id, 0, 0) == []
    assert await storage.messages_after(conv.id, 25, 10) == []


async def test_unstorable_text_is_refused_as_bad_input_without_failing_others(storage: Storage) -> None:
    (conv,) = await make_conversations(storage, 1)
    bad = [
        message(conv, "nul", text="a\x00b"),
        message(conv, "surrogate", text="a\ud800b"),  # what json.loads('"\\ud800"') produces
        message(conv, "bad\udfff-cmid"),
        NewMessage(conv=conv.id, cmid="m1", sender_id=conv.visitor_id, sender_role="visitor", sender_name=None,
                   text="t", meta={"k": "\x00"}),
        NewMessage(conv=conv.id, cmid="m2", sender_id=conv.visitor_id, sender_role="visitor", sender_name=None,
                   text="t", meta={"k": ["\ud800"]}),
        NewMessage(conv=conv.id, cmid="m3", sender_id=conv.visitor_id, sender_role="visitor", sender_name=None,
                   text="t", meta={"k": float("nan")}),
    ]
    good = [message(conv, f"ok{i}", text="fine ✓") for i in range(5)]
    results = await asyncio.gather(*(storage.append_message(m) for m in [*bad, *good]), return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results[: len(bad)])
    assert [r.seq for r in results[len(bad):]] == [1, 2, 3, 4, 5]
    assert [m.cmid for m in await storage.messages_after(conv.id, 0, 10)] == [m.cmid for m in good]


async def test_postgres_message_the_database_refuses_fails_alone(
    pg_store: PostgresStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If PostgreSQL refuses one message of a batch, the others are still stored (one per transaction)."""
    (conv,) = await make_conversations(pg_store, 1)
    vetted = _common.check_storable_message

    def let_invalid_json_through(msg: NewMessage) -> str:  # what the real check would stop
        return "{not json" if msg.cmid == "refused" else vetted(msg)

    monkeypatch.setattr(_common, "check_storable_message", let_invalid_json_through)
    sends = [message(conv, f"m{i}") for i in range(6)]
    sends.insert(3, message(conv, "refused"))
    results = await asyncio.gather(*(pg_store.append_message(m) for m in sends), return_exceptions=True)
    assert isinstance(results[3], StorageError)
    assert [r.seq for i, r in enumerate(results) if i != 3] == [1, 2, 3, 4, 5, 6]
    assert [m.seq for m in await pg_store.messages_after(conv.id, 0, 10)] == [1, 2, 3, 4, 5, 6]


async def test_a_closed_conversation_refuses_new_messages_but_answers_retries(storage: Storage) -> None:
    (conv,) = await make_conversations(storage, 1)
    first = await storage.append_message(message(conv, "before"))
    await storage.set_conversation_state(conv.id, "closed", None)
    with pytest.raises(Conflict):
        await storage.append_message(message(conv, "after"))
    retry = await storage.append_message(message(conv, "before"))
    assert (retry.seq, retry.ts, retry.created) == (first.seq, first.ts, False)
    assert [m.cmid for m in await storage.messages_after(conv.id, 0, 10)] == ["before"]


def record(token: int, conv: int, sender: str, cmid: str, text: str = "hi", meta_json: str | None = None) -> tuple:
    """A record as the native data plane's `take_records` hands it over."""
    return (token, conv, sender, "visitor", None, cmid, "text", text, meta_json, 0.0)


async def test_append_records_stores_a_data_plane_batch_with_the_message_rules(storage: Storage) -> None:
    """`append_records` (the native data plane's PostgreSQL path, one round trip there; one
    `submit_message` per record elsewhere): seqs per conversation in batch order, a retried cmid
    (stored before, or twice in the batch) answers its original seq and is stored once, a closed
    conversation refuses, an unknown one is not_found, unstorable text fails alone."""
    one, two, closed = await make_conversations(storage, 3)
    stored = await storage.append_message(message(one, "old"))
    kept = await storage.append_message(message(closed, "kept"))
    await storage.set_conversation_state(closed.id, "closed", None)
    batch = [
        record(10, one.id, one.visitor_id, "a", meta_json='{"n":1}'),
        record(11, two.id, two.visitor_id, "a"),
        record(12, one.id, one.visitor_id, "old"),  # stored before the batch
        record(13, one.id, one.visitor_id, "b"),
        record(14, one.id, one.visitor_id, "a"),  # twice in the batch
        record(15, 999_999, one.visitor_id, "x"),  # no such conversation
        record(16, closed.id, closed.visitor_id, "new"),
        record(17, closed.id, closed.visitor_id, "kept"),  # stored before the close
        record(18, two.id, two.visitor_id, "nul", text="a\x00b"),
        record(19, 0, one.visitor_id, "zero"),
        record(20, two.id, two.visitor_id, "b"),
    ]
    outcomes = await storage.append_records(batch)
    by_token = {outcome[0]: outcome for outcome in outcomes}
    assert [outcome[0] for outcome in outcomes] == [r[0] for r in batch], "one outcome per record, in order"
    assert [(by_token[t][2], by_token[t][4]) for t in (10, 13, 14)] == [(2, "created"), (3, "created"),
                                                                        (2, "duplicate")]
    assert by_token[14][3] == by_token[10][3], "a retry answers the original ts"
    assert (by_token[12][2], by_token[12][3], by_token[12][4]) == (stored.seq, stored.ts, "duplicate")
    assert [(by_token[t][2], by_token[t][4]) for t in (11, 20)] == [(1, "created"), (2, "created")]
    assert by_token[15][4] == "not_found" and by_token[19][4] == "not_found"
    assert by_token[16][4] == "conflict"
    assert (by_token[17][2], by_token[17][4]) == (kept.seq, "duplicate")
    assert by_token[18][4] == "failed"
    messages = await storage.messages_after(one.id, 0, 10)
    assert [(m.seq, m.cmid) for m in messages] == [(1, "old"), (2, "a"), (3, "b")]
    assert messages[1].meta == {"n": 1}
    assert [(m.seq, m.cmid) for m in await storage.messages_after(two.id, 0, 10)] == [(1, "a"), (2, "b")]
    assert [m.cmid for m in await storage.messages_after(closed.id, 0, 10)] == ["kept"]
    assert (await storage.get_conversation(one.id)).last_seq == 3  # type: ignore[union-attr]


async def test_postgres_append_records_is_one_round_trip_and_a_refused_record_fails_alone(
    pg_store: PostgresStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    (conv,) = await make_conversations(pg_store, 1)
    calls = []
    run = pg_store._run

    async def counting_run(fn):  # type: ignore[no-untyped-def]
        calls.append(fn)
        return await run(fn)

    monkeypatch.setattr(pg_store, "_run", counting_run)
    outcomes = await pg_store.append_records([record(n, conv.id, conv.visitor_id, f"m{n}") for n in range(50)])
    assert len(calls) == 1, "one database call for the whole batch"
    assert [(o[2], o[4]) for o in outcomes] == [(n + 1, "created") for n in range(50)]
    # Invalid JSON in meta (the data plane never sends it) is refused by PostgreSQL for that record only.
    batch = [record(100 + n, conv.id, conv.visitor_id, f"r{n}") for n in range(4)]
    batch[2] = record(102, conv.id, conv.visitor_id, "refused", meta_json="{not json")
    outcomes = await pg_store.append_records(batch)
    assert [(o[0], o[2], o[4]) for o in outcomes] == [(100, 51, "created"), (101, 52, "created"),
                                                       (102, 0, "failed"), (103, 53, "created")]
    assert [m.seq for m in await pg_store.messages_after(conv.id, 50, 10)] == [51, 52, 53]


# --- conversations -------------------------------------------------------------------------------

async def test_open_conversation_race_creates_one(storage: Storage) -> None:
    site = await storage.create_site("shop", ())
    visitor = await storage.upsert_visitor(site.id, None, name=None, lang=None, geo=None, tags=())
    outcomes = await asyncio.gather(*(storage.open_conversation(site.id, visitor.id, ("vip",)) for _ in range(20)))
    assert len({conv.id for conv, _ in outcomes}) == 1
    assert sum(created for _, created in outcomes) == 1
    conv = outcomes[0][0]
    assert (conv.state, conv.agent_id, conv.last_seq, conv.tags, conv.closed_at) == ("queued", None, 0, ("vip",), None)

    closed = await storage.set_conversation_state(conv.id, "closed", None)
    assert closed.closed_at is not None
    again, created = await storage.open_conversation(site.id, visitor.id)
    assert created and again.id != conv.id
    # Reopening the closed one while another is open would break "one open conversation".
    with pytest.raises(Conflict):
        await storage.set_conversation_state(conv.id, "queued", None)
    assert [c.id for c in await storage.list_conversations(visitor_id=visitor.id)] == [again.id, conv.id]


async def test_open_conversation_checks_the_visitor_belongs_to_the_site(storage: Storage) -> None:
    site = await storage.create_site("shop", ())
    other_site = await storage.create_site("other", ())
    visitor = await storage.upsert_visitor(site.id, None, name=None, lang=None, geo=None, tags=())
    with pytest.raises(NotFound):
        await storage.open_conversation(other_site.id, visitor.id)
    with pytest.raises(NotFound):
        await storage.open_conversation(site.id, "v_" + "x" * 22)
    await storage.open_conversation(site.id, visitor.id)
    with pytest.raises(NotFound):  # not even the open one is handed out under another site
        await storage.open_conversation(other_site.id, visitor.id)


async def test_conversation_state_and_listing(storage: Storage) -> None:
    site = await storage.create_site("shop", ())
    agent = await storage.create_agent(site.id, "ann", "$argon2id$x", name="Ann")
    first, second = await make_conversations(storage, 2, site)
    assigned = await storage.set_conversation_state(first.id, "assigned", agent.id, team="billing")
    assert (assigned.state, assigned.agent_id, assigned.team, assigned.closed_at) == (
        "assigned", agent.id, "billing", None)
    transferred = await storage.set_conversation_state(first.id, "transferred", None)
    assert (transferred.agent_id, transferred.team) == (None, "billing")  # team=None keeps the team
    await storage.set_conversation_state(second.id, "assigned", agent.id)
    with pytest.raises(NotFound):
        await storage.set_conversation_state(999_999, "assigned", agent.id)
    with pytest.raises(NotFound):
        await storage.set_conversation_state(first.id, "assigned", "a_nobody")
    with pytest.raises(ValueError):
        await storage.set_conversation_state(first.id, "lost", None)  # type: ignore[arg-type]

    assert [c.id for c in await storage.list_conversations(site_id=site.id)] == [second.id, first.id]
    assert [c.id for c in await storage.list_conversations(agent_id=agent.id)] == [second.id]
    assert [c.id for c in await storage.list_conversations(states=("transferred",))] == [first.id]
    assert await storage.list_conversations(states=()) == []
    assert [c.id for c in await storage.list_conversations(site_id=site.id, limit=1)] == [second.id]
    assert await storage.get_conversation(999_999) is None


async def test_read_marks_only_rise_and_stay_within_the_conversation(storage: Storage) -> None:
    (conv,) = await make_conversations(storage, 1)
    for i in range(5):
        await storage.append_message(message(conv, f"m{i}"))
    assert await storage.set_read_mark(conv.id, "a_1", 3) == 3
    assert await storage.set_read_mark(conv.id, "a_1", 2) == 3
    assert await storage.set_read_mark(conv.id, "a_1", 2**53) == 5  # clamped to last_seq
    assert await storage.set_read_mark(conv.id, conv.visitor_id, -4) == 0
    assert await storage.set_read_mark(conv.id, conv.visitor_id, 2**70) == 5
    with pytest.raises(NotFound):
        await storage.set_read_mark(999_999, "a_1", 1)


async def test_a_batch_of_read_marks_rises_like_single_marks(storage: Storage) -> None:
    """The native data plane's write-behind: many marks in one write, unknown conversations skipped."""
    (conv,) = await make_conversations(storage, 1)
    for i in range(5):
        await storage.append_message(message(conv, f"m{i}"))
    await storage.set_read_mark(conv.id, "a_1", 2)
    await storage.set_read_marks([(conv.id, "a_1", 4), (conv.id, "a_1", 3), (999_999, "a_1", 1),
                                  (conv.id, conv.visitor_id, 2**60)])
    await storage.set_read_marks([])
    assert await storage.set_read_mark(conv.id, "a_1", 0) == 4  # the highest of the batch, never lowered
    assert await storage.set_read_mark(conv.id, conv.visitor_id, 0) == 5  # clamped to last_seq


async def test_routing_decisions_round_trip(storage: Storage) -> None:
    (conv,) = await make_conversations(storage, 1)
    first = {"agent": "a_1", "scores": {"geo": 0.5, "skill": 1.0}, "excluded": ["a_2"]}
    second = {"agent": None, "queued": True, "position": 3}
    first_id = await storage.record_routing_decision(conv.id, first)
    second_id = await storage.record_routing_decision(conv.id, second)
    assert second_id > first_id
    decisions = await storage.routing_decisions(conv.id)
    assert [d["id"] for d in decisions] == [first_id, second_id]
    assert all(isinstance(d["ts"], float) for d in decisions)
    assert [{k: v for k, v in d.items() if k not in ("id", "ts")} for d in decisions] == [first, second]
    assert await storage.routing_decisions(999_999) == []
    with pytest.raises(NotFound):
        await storage.record_routing_decision(999_999, first)


# --- sites, visitors, agents ---------------------------------------------------------------------

async def test_sites(storage: Storage) -> None:
    site = await storage.create_site("shop", ("https://shop.example", "http://localhost:8080"))
    assert len(site.key) >= 16 and site.routing == {}
    assert site.allowed_origins == ("https://shop.example", "http://localhost:8080")
    named = await storage.create_site("named", (), key="fixed-key-for-demo")
    with pytest.raises(Conflict):
        await storage.create_site("again", (), key="fixed-key-for-demo")
    assert await storage.get_site_by_key("fixed-key-for-demo") == named
    assert await storage.get_site(site.id) == site
    assert await storage.get_site_by_key("nope") is None
    updated = await storage.update_site(site.id, routing={"w_geo": 0.4})
    assert (updated.routing, updated.allowed_origins) == ({"w_geo": 0.4}, site.allowed_origins)
    updated = await storage.update_site(site.id, allowed_origins=())
    assert (updated.routing, updated.allowed_origins) == ({"w_geo": 0.4}, ())
    with pytest.raises(NotFound):
        await storage.update_site(999_999, routing={})
    assert [s.id for s in await storage.list_sites()] == [site.id, named.id]


async def test_visitor_upsert(storage: Storage) -> None:
    site = await storage.create_site("shop", ())
    other_site = await storage.create_site("other", ())
    visitor = await storage.upsert_visitor(site.id, None, name="Li", lang="zh", geo=(31.2, 121.5), tags=("vip",),
                                           new_secret_hash="h1")
    assert visitor.id.startswith("v_") and len(visitor.id) == 24
    assert visitor == Visitor(visitor.id, site.id, "Li", "zh", (31.2, 121.5), ("vip",), None)

    returning = await storage.upsert_visitor(site.id, visitor.id, name=None, lang="en", geo=None, tags=(),
                                             secret_hash="h1", new_secret_hash="unused")
    assert returning == Visitor(visitor.id, site.id, "Li", "en", (31.2, 121.5), ("vip",), None)

    # The id without its secret, or with a wrong one, is not the visitor (issue 8: not a credential).
    for presented in (None, "h2"):
        impostor = await storage.upsert_visitor(site.id, visitor.id, name="Eve", lang=None, geo=None, tags=(),
                                                secret_hash=presented, new_secret_hash="h3")
        assert impostor.id != visitor.id and impostor.name == "Eve"

    # Another site's visitor id, an unknown id and a malformed one all give a fresh visitor.
    foreign = await storage.upsert_visitor(other_site.id, visitor.id, name="X", lang=None, geo=None, tags=(),
                                           secret_hash="h1")
    unknown = await storage.upsert_visitor(site.id, "v_" + "A" * 22, name=None, lang=None, geo=None, tags=())
    malformed = await storage.upsert_visitor(site.id, "'; drop table visitors", name=None, lang=None, geo=None,
                                             tags=())
    fresh_ids = {foreign.id, unknown.id, malformed.id}
    assert len(fresh_ids) == 3 and visitor.id not in fresh_ids and "v_" + "A" * 22 not in fresh_ids
    assert foreign.site_id == other_site.id
    assert await storage.get_visitor(visitor.id) == returning
    with pytest.raises(NotFound):
        await storage.upsert_visitor(999_999, None, name=None, lang=None, geo=None, tags=())

    agent = await storage.create_agent(site.id, "ann", "$argon2id$x", name="Ann")
    await storage.set_visitor_last_agent(visitor.id, agent.id)
    assert (await storage.get_visitor(visitor.id)).last_agent_id == agent.id
    with pytest.raises(NotFound):
        await storage.set_visitor_last_agent("v_nobody", agent.id)
    assert await storage.get_visitor("v_nobody") is None


async def test_agents(storage: Storage) -> None:
    site = await storage.create_site("shop", ())
    other_site = await storage.create_site("other", ())
    ann = await storage.create_agent(
        site.id, "ann", "$argon2id$v=19$x", name="Ann", role="admin", teams=("billing",),
        skills={"billing/refund": 0.9}, capacity=3, languages=("en", "zh"), geo=(48.1, 11.6))
    assert ann.id.startswith("a_") and len(ann.id) > 10
    assert (ann.role, ann.teams, ann.skills, ann.capacity, ann.languages, ann.geo, ann.disabled) == (
        "admin", ("billing",), {"billing/refund": 0.9}, 3, ("en", "zh"), (48.1, 11.6), False)
    with pytest.raises(Conflict):
        await storage.create_agent(site.id, "ann", "h", name="Other Ann")
    with pytest.raises(Conflict):  # usernames are unique across the installation
        await storage.create_agent(other_site.id, "ann", "h", name="Other Ann")
    with pytest.raises(NotFound):
        await storage.create_agent(999_999, "bob", "h", name="Bob")
    bob = await storage.create_agent(site.id, "bob", "h", name="Bob")
    assert await storage.get_agent(ann.id) == ann
    assert await storage.get_agent_by_username("ann") == ann
    assert await storage.get_agent_by_username("nobody") is None
    assert [a.username for a in await storage.list_agents(site.id)] == ["ann", "bob"]
    assert await storage.list_agents(other_site.id) == []

    changed = await storage.update_agent(bob.id, capacity=7, skills={"sales": 0.5}, geo=None, disabled=True,
                                         teams=("sales", "vip"), role="admin", name="Robert")
    assert (changed.capacity, changed.skills, changed.disabled, changed.teams, changed.role, changed.name) == (
        7, {"sales": 0.5}, True, ("sales", "vip"), "admin", "Robert")
    assert await storage.get_agent(bob.id) == changed
    assert changed.token_gen == 0
    bumped = await storage.update_agent(bob.id, role="agent", bump_token_gen=True)
    assert (bumped.role, bumped.token_gen) == ("agent", 1)
    assert (await storage.update_agent(bob.id, bump_token_gen=True)).token_gen == 2
    assert (await storage.update_agent(bob.id, capacity=3)).token_gen == 2
    with pytest.raises(ValueError):
        await storage.update_agent(bob.id, username="bobby")
    with pytest.raises(NotFound):
        await storage.update_agent("a_nobody", capacity=1)


async def test_canned_replies(storage: Storage) -> None:
    site = await storage.create_site("shop", ())
    other = await storage.create_site("other", ())
    refund = await storage.create_canned_reply(site.id, "/refund", "Refunds take 3-5 days.")
    hello = await storage.create_canned_reply(site.id, "/hi", "您好，请问有什么可以帮您？")
    await storage.create_canned_reply(other.id, "/refund", "Other site's text")
    with pytest.raises(Conflict):
        await storage.create_canned_reply(site.id, "/refund", "again")
    assert await storage.get_canned_reply(refund.id) == refund
    assert await storage.get_canned_reply(999_999) is None
    assert [r.shortcut for r in await storage.list_canned_replies(site.id)] == ["/hi", "/refund"]
    assert await storage.list_canned_replies(site.id, "REFUND") == [refund]  # shortcut, any case
    assert await storage.list_canned_replies(site.id, "days") == [refund]  # text
    assert await storage.list_canned_replies(site.id, "帮您") == [hello]
    assert await storage.list_canned_replies(site.id, "%") == []  # no pattern syntax
    assert len(await storage.list_canned_replies(site.id, limit=1)) == 1
    updated = await storage.update_canned_reply(refund.id, text="Refunds take a week.")
    assert (updated.shortcut, updated.text) == ("/refund", "Refunds take a week.")
    assert updated.updated_at >= refund.updated_at
    with pytest.raises(Conflict):
        await storage.update_canned_reply(refund.id, shortcut="/hi")
    with pytest.raises(NotFound):
        await storage.update_canned_reply(999_999, text="x")
    assert await storage.delete_canned_reply(refund.id) is True
    assert await storage.delete_canned_reply(refund.id) is False
    assert await storage.list_canned_replies(site.id) == [hello]


# --- lifecycle -----------------------------------------------------------------------------------

async def test_reopen_keeps_data_and_epoch(backend: Backend) -> None:
    first = backend.make()
    await first.open()
    epoch = await first.epoch()
    assert len(epoch) == 32 and int(epoch, 16) >= 0
    assert await first.healthy()
    (conv,) = await make_conversations(first, 1)
    await first.append_message(message(conv, "before"))
    await first.close()
    await first.close()  # idempotent

    second = backend.make()
    await second.open()
    try:
        assert await second.epoch() == epoch
        assert [m.cmid for m in await second.messages_after(conv.id, 0, 10)] == ["before"]
        assert (await second.append_message(message(conv, "after"))).seq == 2
        assert (await second.append_message(message(conv, "before"))).created is False
    finally:
        await second.close()
    with pytest.raises(StorageError):
        await second.append_message(message(conv, "closed"))


async def test_close_resolves_appends_already_made(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    (conv,) = await make_conversations(store, 1)
    pending = [asyncio.ensure_future(store.append_message(message(conv, f"m{i}"))) for i in range(50)]
    await asyncio.sleep(0)  # let them reach the storage
    await store.close()
    assert sorted(r.seq for r in await asyncio.gather(*pending)) == list(range(1, 51))


# --- durability settings -------------------------------------------------------------------------

def test_sqlite_refuses_synchronous_off(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="refused"):
        SqliteStorage(tmp_path / "k.db", synchronous="OFF")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="refused"):
        open_storage(f"sqlite:///{tmp_path}/k.db?synchronous=off")


async def test_sqlite_open_failure_is_a_storage_error(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "missing-directory" / "k.db")
    with pytest.raises(StorageError):
        await store.open()
    await store.close()  # nothing to release; must not hang or raise


async def test_postgres_refuses_synchronous_commit_off(pg_schema_dsn: str) -> None:
    store = PostgresStorage(pg_schema_dsn + "&synchronous_commit=off")
    with pytest.raises(StorageError, match="synchronous_commit"):
        await store.open()
    accepted = PostgresStorage(pg_schema_dsn + "&synchronous_commit=remote_apply")
    await accepted.open()
    await accepted.close()


def test_open_storage_urls(tmp_path: Path) -> None:
    absolute = open_storage(f"sqlite:///{tmp_path}/a.db")
    assert isinstance(absolute, SqliteStorage) and absolute.path == f"{tmp_path}/a.db"
    relative = open_storage("sqlite:///data/kefu.db?synchronous=NORMAL")
    assert isinstance(relative, SqliteStorage)
    assert (relative.path, relative.synchronous) == ("data/kefu.db", "NORMAL")
    assert open_storage("kefu.db").path == "kefu.db"  # type: ignore[attr-defined]
    pg = open_storage("postgres://u@h:5432/db?search_path=kefu")
    assert isinstance(pg, PostgresStorage) and pg.dsn == "postgres://u@h:5432/db?search_path=kefu"
    assert isinstance(open_storage("postgresql://u@h/db"), PostgresStorage)
    for bad in ("mysql://h/db", "sqlite://", "sqlite://host/x.db", "sqlite:///x.db?journal=off", ":memory:"):
        with pytest.raises(ValueError):
            open_storage(bad)


# --- faults (SQLite; the PostgreSQL server's own faults belong to the integration tests) -------------

async def test_sqlite_failed_commit_acks_nothing_and_recovers(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "k.db")
    await store.open()
    try:
        (conv,) = await make_conversations(store, 1)

        def disk_io_error() -> None:
            raise sqlite3.OperationalError("disk I/O error")

        store._fault_before_commit = disk_io_error
        results = await asyncio.gather(*(store.append_message(message(conv, f"m{i}")) for i in range(30)),
                                       return_exceptions=True)
        assert all(type(r) is StorageError for r in results)
        with pytest.raises(StorageError):
            await store.set_read_mark(conv.id, "a_1", 1)
        store._fault_before_commit = None

        assert await store.messages_after(conv.id, 0, 100) == []
        assert (await store.get_conversation(conv.id)).last_seq == 0
        retried = await asyncio.gather(*(store.append_message(message(conv, f"m{i}")) for i in range(30)))
        assert sorted(r.seq for r in retried) == list(range(1, 31))
    finally:
        await store.close()


async def test_sqlite_disk_full_fails_only_what_did_not_fit_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "k.db"
    store = SqliteStorage(path)
    await store.open()
    try:
        (conv,) = await make_conversations(store, 1)
        # "Disk full" for real: SQLite answers SQLITE_FULL once the file may not grow any more.
        await store._write(lambda cur: cur.execute(
            "PRAGMA max_page_count = " + str(cur.execute("PRAGMA page_count").fetchone()[0] + 3)))
        sends = [message(conv, f"m{i}", text="x" * 2000) for i in range(60)]
        results = await asyncio.gather(*(store.append_message(m) for m in sends), return_exceptions=True)
        failed = [m for m, r in zip(sends, results) if isinstance(r, StorageError)]
        acked = {m.cmid: r.seq for m, r in zip(sends, results) if isinstance(r, AppendResult)}
        assert failed and len(failed) + len(acked) == len(sends)
        stored = await store.messages_after(conv.id, 0, 1000)
        assert {m.cmid: m.seq for m in stored} == acked  # no partial rows, nothing unacked stored
        assert [m.seq for m in stored] == list(range(1, len(acked) + 1))

        await store._write(lambda cur: cur.execute("PRAGMA max_page_count = 1073741823"))
        retried = await asyncio.gather(*(store.append_message(m) for m in failed))
        assert all(r.created for r in retried)
        stored = await store.messages_after(conv.id, 0, 1000)
        assert [m.seq for m in stored] == list(range(1, len(sends) + 1))
    finally:
        await store.close()
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_sqlite_full_write_queue_refuses_instead_of_buffering(tmp_path: Path) -> None:
    store = SqliteStorage(tmp_path / "k.db", max_pending=4)
    await store.open()
    try:
        (conv,) = await make_conversations(store, 1)
        entered, gate = threading.Event(), threading.Event()

        def hold_the_writer(cur: sqlite3.Cursor) -> bool:
            entered.set()
            return gate.wait(30)

        blocker = asyncio.ensure_future(store._write(hold_the_writer))
        assert await asyncio.to_thread(entered.wait, 30)
        sends = [asyncio.ensure_future(store.append_message(message(conv, f"m{i}"))) for i in range(10)]
        await asyncio.sleep(0)  # every append reaches the queue (or is refused) before the writer is let go
        gate.set()
        results = await asyncio.gather(*sends, return_exceptions=True)
        assert await blocker is True
        assert [r.seq for r in results[:4]] == [1, 2, 3, 4]
        assert all(isinstance(r, StorageError) and "overloaded" in str(r) for r in results[4:])
        assert [m.cmid for m in await store.messages_after(conv.id, 0, 100)] == ["m0", "m1", "m2", "m3"]
    finally:
        await store.close()


CRASH_WRITER = textwrap.dedent("""
    import asyncio, sys
    from kefu.storage.base import NewMessage
    from kefu.storage.sqlite import SqliteStorage

    async def main(path, synchronous):
        store = SqliteStorage(path, synchronous=synchronous)
        await store.open()
        site = await store.create_site("crash", ())
        convs = []
        for i in range(10):
            visitor = await store.upsert_visitor(site.id, None, name=None, lang=None, geo=None, tags=())
            conv, _ = await store.open_conversation(site.id, visitor.id)
            convs.append((conv.id, visitor.id))

        async def writer(k):
            conv, sender = convs[k % len(convs)]
            n = 0
            while True:
                n += 1
                cmid = f"w{k}-{n}"
                result = await store.append_message(NewMessage(conv, cmid, sender, "visitor", None, "x" * 64))
                sys.stdout.write(f"{conv} {result.seq} {cmid}\\n")
                sys.stdout.flush()

        await asyncio.gather(*(writer(k) for k in range(40)))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
async def test_sqlite_every_acked_message_survives_kill_9(tmp_path: Path, synchronous: str) -> None:
    path = tmp_path / "crash.db"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASH_WRITER, str(path), synchronous,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert child.stdout is not None and child.stderr is not None
    acked: list[tuple[int, int, str]] = []
    try:
        while len(acked) < 3000:
            line = await asyncio.wait_for(child.stdout.readline(), timeout=30)
            if not line:
                pytest.fail(f"writer exited early: {(await child.stderr.read()).decode()}")
            conv, seq, cmid = line.split()
            acked.append((int(conv), int(seq), cmid.decode()))
        child.kill()  # SIGKILL, mid-stream
        rest = await asyncio.wait_for(child.stdout.read(), timeout=30)
        await child.wait()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    # Lines printed before the kill landed in the pipe and are acks too; a torn last line is not.
    complete = rest[: rest.rfind(b"\n") + 1]
    acked += [(int(a), int(b), c.decode()) for a, b, c in (line.split() for line in complete.splitlines())]
    assert child.returncode == -signal.SIGKILL

    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store = SqliteStorage(path)
    await store.open()
    try:
        by_conv: dict[int, dict[int, str]] = {}
        for conv in {conv for conv, _, _ in acked}:
            stored = await store.messages_after(conv, 0, 10_000)
            by_conv[conv] = {m.seq: m.cmid for m in stored}
            assert [m.seq for m in stored] == list(range(1, len(stored) + 1))  # gap-free after recovery
        missing = [(conv, seq, cmid) for conv, seq, cmid in acked if by_conv[conv].get(seq) != cmid]
        assert missing == []
    finally:
        await store.close()
