"""Reference twin of `kefu._native.Journal`'s batch append: pure Python `sqlite3`, one record at a time.

Written to be obviously right, not fast: every record reads its conversation, inserts, and writes
`last_seq` back, inside one `BEGIN IMMEDIATE … COMMIT` per batch. The rules are the journal's (and
were the Python writer's before it): seqs per conversation in arrival order from `last_seq`; a stored
(conv, sender_id, cmid) answers with its original seq and ts and takes none; an unknown conversation
is `not_found`; a closed one refuses new messages (`conflict`) but still answers retries.
tests/native/test_journal.py feeds the same record sequences to both and compares outcomes and rows.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import Final

__all__ = ["JournalOutcome", "JournalRecord", "ReferenceJournal"]

# (token, conv, cmid, sender_id, sender_role, sender_name, text, kind, meta, ts): `Journal.submit`'s
# arguments, in its order.
JournalRecord = tuple[int, int, str, str, str, "str | None", str, str, str, "float | None"]
# (token, conv, seq, ts, duplicate, error_code, error_detail): what `Journal.drain` returns.
JournalOutcome = tuple[int, int, int, float, bool, "str | None", "str | None"]

_ROLES: Final = frozenset({"visitor", "agent", "admin"})
_SYNCHRONOUS: Final = {"FULL": 2, "NORMAL": 1}


class ReferenceJournal:
    """Appends batches of records to the SQLite file at `path` (which holds Kefu's schema)."""

    def __init__(self, path: str | os.PathLike[str], synchronous: str = "FULL") -> None:
        level = synchronous.upper()
        if level not in _SYNCHRONOUS:
            raise ValueError(f"synchronous={synchronous!r} refused: use FULL or NORMAL")
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute(f"PRAGMA synchronous = {level}")
        self._conn.execute("PRAGMA foreign_keys = ON")

    def close(self) -> None:
        self._conn.close()

    def append_batch(self, records: list[JournalRecord]) -> list[JournalOutcome]:
        """Write `records` in one transaction and commit; the outcomes in record order. A database error
        fails the whole batch (raised): the twin does not model the journal's per-record recovery."""
        for record in records:
            if record[4] not in _ROLES:
                raise ValueError(f"unknown sender role {record[4]!r}")
        now = time.time()
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            outcomes = [self._append(record, now) for record in records]
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        return outcomes

    def _append(self, record: JournalRecord, now: float) -> JournalOutcome:
        token, conv, cmid, sender_id, sender_role, sender_name, text, kind, meta, ts = record
        conversation = self._conn.execute(
            "SELECT last_seq, state FROM conversations WHERE id = ?", (conv,)).fetchone()
        if conversation is None:
            return (token, conv, 0, 0.0, False, "not_found", None)
        last_seq, state = conversation
        if state == "closed":
            return self._original(token, conv, sender_id, cmid) or (token, conv, 0, 0.0, False, "conflict", None)
        seq = last_seq + 1
        stored_ts = now if ts is None else ts
        inserted = self._conn.execute(
            "INSERT INTO messages(conv, seq, cmid, sender_id, sender_role, sender_name, body, kind, meta, ts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(conv, sender_id, cmid) DO NOTHING",
            (conv, seq, cmid, sender_id, sender_role, sender_name, text, kind, meta, stored_ts)).rowcount
        if inserted == 1:
            self._conn.execute("UPDATE conversations SET last_seq = ? WHERE id = ?", (seq, conv))
            return (token, conv, seq, stored_ts, False, None, None)
        original = self._original(token, conv, sender_id, cmid)
        assert original is not None, "the idempotency key conflicted, so the row exists"
        return original

    def _original(self, token: int, conv: int, sender_id: str, cmid: str) -> JournalOutcome | None:
        row = self._conn.execute(
            "SELECT seq, ts FROM messages WHERE conv = ? AND sender_id = ? AND cmid = ?",
            (conv, sender_id, cmid)).fetchone()
        return None if row is None else (token, conv, row[0], row[1], True, None, None)
