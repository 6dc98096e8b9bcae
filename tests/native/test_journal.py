"""The native `Journal` (native/journal) against its pure-Python twin (kefu.reference.journal).

Both get the same record sequences on two copies of one database (the real schema from
kefu.storage.sqlite's migrations) and must answer the same seqs, the same duplicates and errors, and
leave the same rows. Also: the extension links the very libsqlite3 Python's sqlite3 module uses.
"""

from __future__ import annotations

import ctypes
import select
import sqlite3
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kefu import compiled
from kefu.reference.journal import JournalOutcome, JournalRecord, ReferenceJournal
from kefu.storage.sqlite import MIGRATIONS

OPEN_CONVERSATIONS = (1, 2)
CLOSED_CONVERSATION = 3
UNKNOWN_CONVERSATION = 99


def create_database(path: Path) -> None:
    """The real schema, one site, three visitors with a conversation each (the third closed)."""
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("INSERT INTO sites(id, key, name, allowed_origins, routing, created_at) "
                     "VALUES (1, 's_k', 'shop', '[]', '{}', 0)")
        for conv in (*OPEN_CONVERSATIONS, CLOSED_CONVERSATION):
            conn.execute("INSERT INTO visitors(id, site_id, tags, created_at) VALUES (?, 1, '[]', 0)", (f"v_{conv}",))
            conn.execute("INSERT INTO conversations(id, site_id, visitor_id, state, created_at, tags) "
                         "VALUES (?, 1, ?, ?, 0, '[]')",
                         (conv, f"v_{conv}", "closed" if conv == CLOSED_CONVERSATION else "queued"))
        # A message stored before the close: retries of it still get its seq.
        conn.execute("INSERT INTO messages VALUES (3, 1, 'old', 'v_3', 'visitor', NULL, 'before', 'text', '{}', 1.5)")
        conn.execute("UPDATE conversations SET last_seq = 1 WHERE id = 3")
    conn.close()


def snapshot(path: Path) -> tuple[list[tuple], list[tuple]]:
    with sqlite3.connect(path) as conn:
        messages = conn.execute("SELECT * FROM messages ORDER BY conv, seq").fetchall()
        conversations = conn.execute("SELECT id, last_seq FROM conversations ORDER BY id").fetchall()
    conn.close()
    return messages, conversations


def run_native(journal: compiled.Journal, batches: list[list[JournalRecord]]) -> list[JournalOutcome]:
    """Each batch submitted while the file's write lock is held, so it lands as (about) one transaction."""
    outcomes: list[JournalOutcome] = []
    for batch in batches:
        journal.acquire_write_lock()
        try:
            for record in batch:
                journal.submit(*record)
        finally:
            journal.release_write_lock()
        wanted = len(outcomes) + len(batch)
        deadline = time.monotonic() + 30
        while len(outcomes) < wanted:
            assert time.monotonic() < deadline, "the journal did not answer"
            select.select([journal.completion_fd], [], [], 1.0)
            outcomes += journal.drain()
    return outcomes


records_strategy = st.lists(
    st.tuples(
        st.sampled_from([*OPEN_CONVERSATIONS, CLOSED_CONVERSATION, UNKNOWN_CONVERSATION]),
        st.sampled_from(["visitor", "agent"]),
        st.sampled_from(["a", "b", "c", "old"]),  # a small pool: retries within and across batches
        st.booleans(),  # split the batch after this record
    ),
    min_size=1, max_size=40,
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records_strategy)
def test_native_and_reference_agree_on_seqs_duplicates_errors_and_rows(draws: list) -> None:
    batches: list[list[JournalRecord]] = [[]]
    for token, (conv, role, cmid, split) in enumerate(draws):
        sender = f"v_{conv}" if role == "visitor" else "a_agent"
        batches[-1].append((token, conv, cmid, sender, role, None if role == "visitor" else "Ann",
                            f"text {token} ✓", "text", f'{{"n":{token}}}', 1000.0 + token))
        if split:
            batches.append([])
    batches = [batch for batch in batches if batch]
    with tempfile.TemporaryDirectory() as workdir:
        native_path, reference_path = Path(workdir, "native.db"), Path(workdir, "reference.db")
        create_database(native_path)
        create_database(reference_path)
        journal = compiled.Journal(native_path)
        try:
            native = run_native(journal, batches)
        finally:
            journal.close()
        twin = ReferenceJournal(reference_path)
        try:
            reference = [outcome for batch in batches for outcome in twin.append_batch(batch)]
        finally:
            twin.close()
        assert sorted(native) == reference
        assert snapshot(native_path) == snapshot(reference_path)


def test_outcomes_name_their_errors(tmp_path: Path) -> None:
    create_database(tmp_path / "k.db")
    journal = compiled.Journal(tmp_path / "k.db")
    try:
        outcomes = run_native(journal, [[
            (1, 1, "m", "v_1", "visitor", None, "hi", "text", "{}", None),
            (2, UNKNOWN_CONVERSATION, "m", "v_1", "visitor", None, "hi", "text", "{}", None),
            (3, CLOSED_CONVERSATION, "new", "v_3", "visitor", None, "hi", "text", "{}", None),
            (4, CLOSED_CONVERSATION, "old", "v_3", "visitor", None, "again", "text", "{}", None),
        ]])
    finally:
        journal.close()
    by_token = {outcome[0]: outcome for outcome in outcomes}
    assert by_token[1][2:5] == (1, by_token[1][3], False) and by_token[1][5] is None
    assert by_token[2][5:] == ("not_found", None)
    assert by_token[3][5:] == ("conflict", None)
    assert by_token[4][1:] == (CLOSED_CONVERSATION, 1, 1.5, True, None, None)


def test_submit_refuses_bad_role_when_full_and_when_closed(tmp_path: Path) -> None:
    create_database(tmp_path / "k.db")
    journal = compiled.Journal(tmp_path / "k.db", max_pending=2)
    try:
        with pytest.raises(ValueError, match="role"):
            journal.submit(1, 1, "m", "v_1", "robot", None, "hi", "text", "{}")
        journal.acquire_write_lock()  # the writer waits: nothing completes
        try:
            journal.submit(1, 1, "m1", "v_1", "visitor", None, "hi", "text", "{}")
            journal.submit(2, 1, "m2", "v_1", "visitor", None, "hi", "text", "{}")
            with pytest.raises(compiled.JournalFull):
                journal.submit(3, 1, "m3", "v_1", "visitor", None, "hi", "text", "{}")
        finally:
            journal.release_write_lock()
    finally:
        journal.close()
    assert journal.closed and len(journal.drain()) == 2
    with pytest.raises(compiled.JournalClosed):
        journal.submit(4, 1, "m4", "v_1", "visitor", None, "hi", "text", "{}")


def test_open_refuses_a_file_without_the_schema_and_synchronous_off(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        compiled.Journal(tmp_path / "empty.db")
    create_database(tmp_path / "k.db")
    with pytest.raises(ValueError, match="refused"):
        compiled.Journal(tmp_path / "k.db", synchronous="OFF")


def test_links_the_same_libsqlite3_as_python() -> None:
    """Two SQLite copies in one process break POSIX locking on a shared file
    (https://www.sqlite.org/howtocorrupt.html, 2.2.1): the extension must use Python's."""
    import _sqlite3  # noqa: F401  (maps the library Python uses)

    with open("/proc/self/maps", encoding="utf-8") as maps:
        libraries = {line.split()[-1] for line in maps if "libsqlite3" in line}
    assert len(libraries) == 1, libraries
    system = ctypes.CDLL(libraries.pop())
    native = ctypes.CDLL(compiled._native.__file__)
    # dlsym through the extension's handle resolves in the extension, then in its dependencies: the
    # same address means the extension carries no SQLite of its own.
    assert (ctypes.cast(native.sqlite3_libversion, ctypes.c_void_p).value
            == ctypes.cast(system.sqlite3_libversion, ctypes.c_void_p).value)
