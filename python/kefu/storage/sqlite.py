"""SQLite storage (the embedded default): WAL mode, messages written by the native journal.

Why this shape:
- Messages (the hot path) go to `kefu.compiled.Journal` (native/journal, Rust): `submit_message` hands
  the record over without blocking; the journal's writer thread commits everything pending as ONE
  `BEGIN IMMEDIATE … COMMIT` (one fsync) with prepared statements, and signals an eventfd once per
  batch. The event loop watches that fd (`add_reader`) and resolves every future of the batch in one
  callback. The journal bounds what is in flight (`max_pending`): when the disk cannot keep up,
  writes are refused with StorageError ("overloaded") instead of piling up in memory.
- Control writes (sites, agents, conversations, read marks, routing audit) stay Python: one thread owns
  a Python write connection, takes requests from `kefu.compiled.MpmcQueue`, and runs each batch of them
  in one transaction, every request in a SAVEPOINT so a failure fails only that request. It holds the
  journal's in-process write lock around its transaction, so the two writers take turns in FIFO order
  instead of meeting in SQLite's busy handler (which sleeps and polls).
- A failing COMMIT (disk full, I/O error) fails every request of the batch with StorageError: nothing of
  it was acknowledged, nothing of it is in the database. The journal replays a batch record by record
  after an unexpected error, so only the records the database refuses fail.
- Reads run on a few reader threads with their own connections; WAL lets them read the last committed
  state while the writers write.
`BEGIN IMMEDIATE` takes SQLite's write lock before reading, so seq assignment and the "one open
conversation per visitor" check stay correct even when several processes share the file. Both writers
link the same libsqlite3 (two copies in one process would break SQLite's POSIX locks).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, Literal, TypeVar

from kefu.compiled import Journal, JournalClosed, JournalFull, MpmcQueue, QueueClosed, QueueEmpty
from kefu.storage import _common as c
from kefu.storage._common import (
    AGENT_COLUMNS,
    CANNED_COLUMNS,
    CONVERSATION_COLUMNS,
    MESSAGE_COLUMNS,
    SITE_COLUMNS,
    VISITOR_COLUMNS,
    dump_json,
)
from kefu.storage.base import (
    Agent,
    AppendResult,
    CannedReply,
    Conflict,
    Conversation,
    ConversationState,
    NewMessage,
    NotFound,
    Site,
    Storage,
    StorageError,
    StoredMessage,
    Visitor,
)

T = TypeVar("T")

# Ordered migrations: entry i brings the schema from version i to i + 1. Never edit a released entry;
# append a new one.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
        """CREATE TABLE sites (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            key TEXT NOT NULL UNIQUE,
            name TEXT NOT NULL,
            allowed_origins TEXT NOT NULL,
            routing TEXT NOT NULL,
            created_at REAL NOT NULL)""",
        """CREATE TABLE agents (
            id TEXT PRIMARY KEY,
            site_id INTEGER NOT NULL REFERENCES sites(id),
            username TEXT NOT NULL UNIQUE,
            password_hash TEXT NOT NULL,
            name TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('agent', 'admin')),
            teams TEXT NOT NULL,
            skills TEXT NOT NULL,
            capacity INTEGER NOT NULL CHECK (capacity >= 0),
            languages TEXT NOT NULL,
            lat REAL, lon REAL,
            disabled INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL) WITHOUT ROWID""",
        "CREATE INDEX agents_by_site ON agents(site_id)",
        """CREATE TABLE visitors (
            id TEXT PRIMARY KEY,
            site_id INTEGER NOT NULL REFERENCES sites(id),
            name TEXT, lang TEXT, lat REAL, lon REAL,
            tags TEXT NOT NULL,
            last_agent_id TEXT REFERENCES agents(id),
            created_at REAL NOT NULL) WITHOUT ROWID""",
        """CREATE TABLE conversations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            site_id INTEGER NOT NULL REFERENCES sites(id),
            visitor_id TEXT NOT NULL REFERENCES visitors(id),
            state TEXT NOT NULL CHECK (state IN ('queued', 'assigned', 'transferred', 'closed')),
            agent_id TEXT REFERENCES agents(id),
            team TEXT,
            last_seq INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            closed_at REAL,
            tags TEXT NOT NULL)""",
        # The rule "at most one open conversation per visitor" lives in the database, not in a
        # check-then-insert (Rocket.Chat #38148 created two open rooms that way).
        "CREATE UNIQUE INDEX conversations_one_open_per_visitor ON conversations(visitor_id) WHERE state != 'closed'",
        "CREATE INDEX conversations_by_visitor ON conversations(visitor_id, id)",
        "CREATE INDEX conversations_by_agent ON conversations(agent_id, id)",
        "CREATE INDEX conversations_by_site ON conversations(site_id, id)",
        # Clustered on (conv, seq): replay and history are one range scan.
        """CREATE TABLE messages (
            conv INTEGER NOT NULL REFERENCES conversations(id),
            seq INTEGER NOT NULL,
            cmid TEXT NOT NULL,
            sender_id TEXT NOT NULL,
            sender_role TEXT NOT NULL,
            sender_name TEXT,
            body TEXT NOT NULL,
            kind TEXT NOT NULL,
            meta TEXT NOT NULL,
            ts REAL NOT NULL,
            PRIMARY KEY (conv, seq)) WITHOUT ROWID""",
        "CREATE UNIQUE INDEX messages_idempotency ON messages(conv, sender_id, cmid)",
        """CREATE TABLE read_marks (
            conv INTEGER NOT NULL REFERENCES conversations(id),
            participant_id TEXT NOT NULL,
            seq INTEGER NOT NULL,
            PRIMARY KEY (conv, participant_id)) WITHOUT ROWID""",
        """CREATE TABLE routing_decisions (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conv INTEGER NOT NULL REFERENCES conversations(id),
            ts REAL NOT NULL,
            decision TEXT NOT NULL)""",
        "CREATE INDEX routing_decisions_by_conv ON routing_decisions(conv, id)",
    ),
    (
        # Issue 8: agent tokens carry a generation checked on every request; returning visitors
        # prove themselves with a secret (only its SHA-256 is kept). Rows from before have no
        # secret and cannot be resumed: their visitors get a new id once.
        "ALTER TABLE agents ADD COLUMN token_gen INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE visitors ADD COLUMN secret_hash TEXT",
    ),
    (
        """CREATE TABLE canned_replies (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            site_id INTEGER NOT NULL REFERENCES sites(id),
            shortcut TEXT NOT NULL,
            body TEXT NOT NULL,
            updated_at REAL NOT NULL,
            UNIQUE (site_id, shortcut))""",
    ),
)

_SYNCHRONOUS_LEVELS: Final = {"NORMAL": 1, "FULL": 2}
_BUSY_TIMEOUT_MS: Final = 5_000
# Checkpoints (copying the WAL back into the database file, with fsyncs) run on their own thread so
# the writer never stalls on them: at most one per interval while commits happen. SQLite's own
# automatic checkpoint on the writer stays as a backstop at a much larger WAL size.
_CHECKPOINT_INTERVAL_S: Final = 0.25
_BACKSTOP_AUTOCHECKPOINT_PAGES: Final = 16_384
_WRITER_CACHE_KIB: Final = 32 * 1024  # the control writer's; the journal keeps its own
# Page size of a NEW database file (an existing one keeps its own: a WAL database cannot change it).
# Every commit writes each page it dirtied to the WAL whole, and the messages of different
# conversations share no page below this size's worth of rows, so with many small conversations the
# per-page cost dominates: 16 KiB cut the journal's CPU per message ~20 % on the chat-shaped load of
# bench.storage (10,000 conversations) and ~15 % on its 100-conversation load (docs/storage.md).
_NEW_DATABASE_PAGE_SIZE: Final = 16_384

# Raise (participant, seq, conv)'s read mark, never past the conversation's last seq nor lower.
_RAISE_READ_MARK: Final = (
    "INSERT INTO read_marks(conv, participant_id, seq) "
    "SELECT id, ?, max(0, min(?, last_seq)) FROM conversations WHERE id = ? "
    "ON CONFLICT(conv, participant_id) DO UPDATE SET seq = max(seq, excluded.seq)")

# An operation for the writer thread: gets the write connection inside the open batch transaction.
WriteOp = Callable[[sqlite3.Connection], Any]


class SqliteStorage(Storage):
    """SQLite in WAL mode: messages through the native journal, control writes through one Python thread.

    `synchronous="FULL"` (default) makes an ack survive power loss; "NORMAL" survives a crash of the
    process (kill -9) but may lose the last commits on power loss or an OS crash. OFF is refused.
    `max_batch` caps one transaction, `readers` is the number of reader threads, `max_pending` the
    number of writes in flight (per writer) beyond which writes fail fast with StorageError
    ("overloaded").
    Call every method from the event loop that called `open()`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        max_batch: int = 16_384,
        readers: int = 2,
        max_pending: int = 65_536,
    ) -> None:
        level = str(synchronous).upper()
        if level not in _SYNCHRONOUS_LEVELS:
            raise ValueError(
                f"SQLite synchronous={synchronous!r} refused: an ack must mean stored; use FULL or NORMAL"
            )
        if max_batch < 1 or readers < 1 or max_pending < 1:
            raise ValueError("max_batch, readers and max_pending must be positive")
        self.path = os.fspath(path)
        if self.path == ":memory:" or self.path.startswith("file:"):
            raise ValueError("SqliteStorage needs a file path (WAL does not apply to memory databases)")
        self.synchronous = level
        self.max_batch = max_batch
        self._reader_count = readers
        self._max_pending = max_pending
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: MpmcQueue | None = None
        self._writer: threading.Thread | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._reader_local = threading.local()
        self._reader_connections: list[sqlite3.Connection] = []
        self._reader_connections_lock = threading.Lock()
        self._epoch = ""
        self._accepting = False
        self._journal: Journal | None = None
        # Message futures by journal token; the outcome names the token.
        self._waiting: dict[int, asyncio.Future[AppendResult]] = {}
        self._next_token = 0
        self._page_limit = 0  # the control connection's max_page_count, mirrored to the journal
        self._checkpointer: threading.Thread | None = None
        self._wal_grew = threading.Event()
        self._checkpointer_stop = threading.Event()
        self._fault_hook: Callable[[], None] | None = None

    @property
    def _fault_before_commit(self) -> Callable[[], None] | None:
        """Fault injection for tests: called on the control writer right before COMMIT; may raise
        sqlite3.Error to simulate a commit that fails (disk full, I/O error). While set, the journal's
        commits fail too."""
        return self._fault_hook

    @_fault_before_commit.setter
    def _fault_before_commit(self, hook: Callable[[], None] | None) -> None:
        self._fault_hook = hook
        if self._journal is not None:
            self._journal.set_commit_fault(hook is not None)

    # --- lifecycle ---------------------------------------------------------------------------------
    async def open(self) -> None:
        if self._writer is not None:
            raise RuntimeError("storage already opened")
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._queue = MpmcQueue(self._max_pending)
        ready: asyncio.Future[str] = loop.create_future()
        self._writer = threading.Thread(target=self._writer_main, args=(ready,), name="kefu-sqlite-writer", daemon=True)
        self._writer.start()
        try:
            self._epoch = await ready
        except BaseException:
            self._writer.join()
            self._writer = None
            raise
        assert self._journal is not None
        loop.add_reader(self._journal.completion_fd, self._on_completions)
        self._readers = ThreadPoolExecutor(max_workers=self._reader_count, thread_name_prefix="kefu-sqlite-reader")
        self._checkpointer_stop.clear()
        self._checkpointer = threading.Thread(target=self._checkpointer_main, name="kefu-sqlite-checkpointer",
                                              daemon=True)
        self._checkpointer.start()
        self._accepting = True

    async def close(self) -> None:
        if not self._accepting:
            return
        self._accepting = False
        assert self._queue is not None and self._writer is not None and self._readers is not None
        assert self._journal is not None
        loop = asyncio.get_running_loop()
        # The journal first writes what was submitted before close; then its last outcomes resolve.
        await loop.run_in_executor(None, self._journal.close)
        loop.remove_reader(self._journal.completion_fd)
        self._on_completions()
        self._queue.close()
        # Joining blocks; the writer first drains what was queued before close (pending acks resolve).
        await loop.run_in_executor(None, self._writer.join)
        assert self._checkpointer is not None
        self._checkpointer_stop.set()
        self._wal_grew.set()
        await loop.run_in_executor(None, self._checkpointer.join)
        readers = self._readers
        await loop.run_in_executor(None, readers.shutdown)
        with self._reader_connections_lock:
            for conn in self._reader_connections:
                conn.close()
            self._reader_connections.clear()

    async def epoch(self) -> str:
        return self._epoch

    async def healthy(self) -> bool:
        probe = c.new_epoch()
        try:
            await self._write(lambda conn: conn.execute(
                "INSERT INTO meta(key, value) VALUES ('health_probe', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (probe,)))
            row = await self._read(lambda conn: conn.execute(
                "SELECT value FROM meta WHERE key = 'health_probe'").fetchone())
        except StorageError:
            return False
        return row is not None and row[0] == probe

    # --- the writer thread -------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=_BUSY_TIMEOUT_MS / 1000
        )
        conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        return conn

    def _make_private(self) -> None:
        """The database holds password hashes and every message: mode 0600 for it and its -wal and
        -shm (SQLite gives those the database file's mode), created so before SQLite opens it."""
        if not os.path.exists(self.path):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                if os.stat(self.path + suffix).st_mode & 0o077:
                    os.chmod(self.path + suffix, 0o600)
            except FileNotFoundError:
                pass

    def _setup_writer(self) -> tuple[sqlite3.Connection, str]:
        self._make_private()
        conn = self._connect()
        try:
            conn.execute(f"PRAGMA page_size = {_NEW_DATABASE_PAGE_SIZE}")  # ignored unless the file is new
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"SQLite refused WAL mode (journal_mode={mode}) for {self.path}")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            if conn.execute("PRAGMA synchronous").fetchone()[0] != _SYNCHRONOUS_LEVELS[self.synchronous]:
                raise StorageError(f"SQLite did not accept synchronous={self.synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA wal_autocheckpoint = {_BACKSTOP_AUTOCHECKPOINT_PAGES}")
            # The writer touches the hot ends of every conversation's message b-tree; keep them cached.
            conn.execute(f"PRAGMA cache_size = -{_WRITER_CACHE_KIB}")
            epoch = self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        return conn, epoch

    def _migrate(self, conn: sqlite3.Connection) -> str:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            current = row[0] or 0
            if current > len(MIGRATIONS):
                raise StorageError(
                    f"database schema version {current} is newer than this Kefu ({len(MIGRATIONS)})"
                )
            for version in range(current, len(MIGRATIONS)):
                for statement in MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_version(version) VALUES (?)", (version + 1,))
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('epoch', ?)", (c.new_epoch(),))
            epoch = conn.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0]
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return epoch

    def _writer_main(self, ready: asyncio.Future[str]) -> None:
        loop = self._loop
        assert loop is not None and self._queue is not None
        try:
            conn, epoch = self._setup_writer()
        except Exception as exc:
            error = exc if isinstance(exc, StorageError) else c.storage_error(exc)
            loop.call_soon_threadsafe(_settle_one, ready, None, error)
            return
        try:
            # Opened after the migration: the journal needs the schema.
            self._journal = Journal(self.path, self.synchronous, self.max_batch, self._max_pending,
                                    _BUSY_TIMEOUT_MS / 1000)
            self._page_limit = conn.execute("PRAGMA max_page_count").fetchone()[0]
        except (OSError, sqlite3.Error) as exc:
            conn.close()
            loop.call_soon_threadsafe(_settle_one, ready, None, c.storage_error(exc))
            return
        loop.call_soon_threadsafe(_settle_one, ready, epoch, None)
        queue = self._queue
        try:
            while True:
                try:
                    # Blocks without the GIL until work arrives, then takes all that is pending.
                    items = queue.get_many(self.max_batch, 1.0)
                except QueueEmpty:
                    continue
                except QueueClosed:  # closed and drained
                    break
                self._run_batch(conn, items)
        finally:
            conn.close()

    def _run_batch(self, conn: sqlite3.Connection, items: list[tuple[Any, Any, asyncio.Future[Any]]]) -> None:
        """One transaction for all `items`, then one wake-up of the event loop with every outcome."""
        journal = self._journal
        assert journal is not None
        journal.acquire_write_lock()  # the journal's writer and this one take turns (FIFO)
        try:
            conn.execute("BEGIN IMMEDIATE")
            outcomes = self._apply(conn, items)
            if self._fault_hook is not None:
                self._fault_hook()
            commit_started = time.perf_counter()
            conn.execute("COMMIT")
            if self.commit_observer is not None:
                self.commit_observer(len(items), time.perf_counter() - commit_started)
            self._wal_grew.set()
        except Exception as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite rolls back by itself after some errors; the next BEGIN starts clean
            outcomes = [(future, None, c.storage_error(exc)) for _, _, future in items]
        finally:
            journal.release_write_lock()
        self._mirror_page_limit(conn, journal)
        try:
            self._loop.call_soon_threadsafe(_settle_batch, outcomes)  # type: ignore[union-attr]
        except RuntimeError:
            pass  # the event loop is closed: nobody is waiting for these outcomes any more

    def _mirror_page_limit(self, conn: sqlite3.Connection, journal: Journal) -> None:
        """A size cap (`PRAGMA max_page_count`) set through a control write binds the journal too.

        SQLite keeps that cap per connection; the file has two writers, and an operator capping it
        means both. Checked after each control batch (rare), before its outcomes are announced."""
        try:
            pages = conn.execute("PRAGMA max_page_count").fetchone()[0]
        except sqlite3.Error:
            return
        if pages != self._page_limit:
            self._page_limit = pages
            journal.limit_pages(pages)

    @staticmethod
    def _apply(
        conn: sqlite3.Connection, items: list[tuple[Any, Any, asyncio.Future[Any]]]
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        """Run every request in its own SAVEPOINT, so a failure fails only that request."""
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        cursor = conn.cursor()
        try:
            for op, arg, future in items:
                cursor.execute("SAVEPOINT item")
                try:
                    result = op(cursor, arg)
                except Exception as exc:
                    cursor.execute("ROLLBACK TO item")
                    cursor.execute("RELEASE item")
                    outcomes.append((future, None, c.storage_error(exc) if isinstance(exc, sqlite3.Error) else exc))
                else:
                    cursor.execute("RELEASE item")
                    outcomes.append((future, result, None))
        finally:
            cursor.close()  # resets a half-read statement, which would otherwise block COMMIT
        return outcomes

    def _submit(self, op: Callable[[sqlite3.Cursor, Any], T], arg: Any) -> asyncio.Future[T]:
        if not self._accepting:
            raise StorageError("storage is not open")
        future: asyncio.Future[T] = self._loop.create_future()  # type: ignore[union-attr]
        if not self._queue.try_put((op, arg, future)):  # type: ignore[union-attr]
            raise StorageError("storage overloaded: too many writes pending")
        return future

    async def _write(self, fn: Callable[[sqlite3.Cursor], T]) -> T:
        """Run `fn(cursor)` on the control writer inside its next batch transaction (in a SAVEPOINT)."""
        return await self._submit(_call, fn)

    # --- the journal's outcomes --------------------------------------------------------------------
    @property
    def journal(self) -> Journal:
        """The file's one message writer, for the native data plane to submit to from Rust
        (`DataPlane.use_journal`): one journal thread and one connection write every message."""
        if self._journal is None:
            raise StorageError("storage is not open")
        return self._journal

    def observe_journal_batches(self) -> None:
        """Report the journal's committed batches to `commit_observer` (the `kefu_storage_*` metrics),
        whoever submitted their records. Called once per wake-up by every consumer of the journal's
        outcomes (this storage, the data plane), not per message."""
        if self._journal is None:
            return
        stats = self._journal.take_batch_stats()
        observer = self.commit_observer
        if observer is not None:
            for records, commit_seconds in stats:
                observer(records, commit_seconds)

    def _on_completions(self) -> None:
        """The journal's eventfd fired: resolve the futures of every message whose batch is done."""
        self.observe_journal_batches()
        waiting = self._waiting
        for token, conv, seq, ts, duplicate, error, detail in self._journal.drain():  # type: ignore[union-attr]
            future = waiting.pop(token, None)
            if future is None or future.done():  # the caller went away; the outcome stands in the database
                continue
            if error is None:
                future.set_result(AppendResult(seq=seq, ts=ts, created=not duplicate))
            elif error == "not_found":
                future.set_exception(NotFound(f"conversation {conv}"))
            elif error == "conflict":
                future.set_exception(Conflict(f"conversation {conv} is closed"))
            else:
                future.set_exception(StorageError(detail or "storage unavailable"))

    def _checkpointer_main(self) -> None:
        conn = self._connect()
        journal = self._journal
        assert journal is not None
        checkpointed_at = journal.commits
        try:
            # At most one checkpoint per interval, and only when a writer committed since the last.
            while not self._checkpointer_stop.wait(_CHECKPOINT_INTERVAL_S):
                commits = journal.commits
                if commits == checkpointed_at and not self._wal_grew.is_set():
                    continue
                checkpointed_at = commits
                self._wal_grew.clear()
                try:
                    # PASSIVE: copies what it can without blocking the writers or readers.
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error:
                    pass  # committed data is safe in the WAL; the next round (or the backstop) retries
        finally:
            conn.close()

    # --- the reader threads ------------------------------------------------------------------------
    def _reader_connection(self) -> sqlite3.Connection:
        conn = getattr(self._reader_local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = ON")
            self._reader_local.conn = conn
            with self._reader_connections_lock:
                self._reader_connections.append(conn)
        return conn

    def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return fn(self._reader_connection())
        except sqlite3.Error as exc:
            raise c.storage_error(exc) from exc

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if not self._accepting:
            raise StorageError("storage is not open")
        return await self._loop.run_in_executor(self._readers, self._run_read, fn)  # type: ignore[union-attr]

    # --- sites -------------------------------------------------------------------------------------
    async def create_site(self, name: str, allowed_origins: tuple[str, ...], key: str | None = None) -> Site:
        site_key = c.new_site_key() if key is None else key
        origins = dump_json(list(allowed_origins))

        def insert(cur: sqlite3.Cursor) -> Site:
            try:
                row = cur.execute(
                    f"INSERT INTO sites(key, name, allowed_origins, routing, created_at) VALUES (?, ?, ?, '{{}}', ?) "
                    f"RETURNING {SITE_COLUMNS}", (site_key, name, origins, time.time())).fetchone()
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"site key {site_key!r} exists") from exc
            return c.site_from_row(row)

        return await self._write(insert)

    async def get_site_by_key(self, key: str) -> Site | None:
        row = await self._read(lambda conn: conn.execute(
            f"SELECT {SITE_COLUMNS} FROM sites WHERE key = ?", (key,)).fetchone())
        return None if row is None else c.site_from_row(row)

    async def get_site(self, site_id: int) -> Site | None:
        row = await self._read(lambda conn: conn.execute(
            f"SELECT {SITE_COLUMNS} FROM sites WHERE id = ?", (site_id,)).fetchone())
        return None if row is None else c.site_from_row(row)

    async def list_sites(self) -> list[Site]:
        rows = await self._read(lambda conn: conn.execute(
            f"SELECT {SITE_COLUMNS} FROM sites ORDER BY id").fetchall())
        return [c.site_from_row(row) for row in rows]

    async def update_site(
        self, site_id: int, *, allowed_origins: tuple[str, ...] | None = None,
        routing: dict[str, Any] | None = None,
    ) -> Site:
        origins = None if allowed_origins is None else dump_json(list(allowed_origins))
        routing_json = None if routing is None else dump_json(routing)

        def update(cur: sqlite3.Cursor) -> Site:
            row = cur.execute(
                f"UPDATE sites SET allowed_origins = coalesce(?, allowed_origins), routing = coalesce(?, routing) "
                f"WHERE id = ? RETURNING {SITE_COLUMNS}", (origins, routing_json, site_id)).fetchone()
            if row is None:
                raise NotFound(f"site {site_id}")
            return c.site_from_row(row)

        return await self._write(update)

    # --- visitors ----------------------------------------------------------------------------------
    async def upsert_visitor(
        self, site_id: int, visitor_id: str | None, *, name: str | None, lang: str | None,
        geo: tuple[float, float] | None, tags: tuple[str, ...], secret_hash: str | None = None,
        new_secret_hash: str | None = None,
    ) -> Visitor:
        """Profile fields given as None (and empty `tags`) leave the stored value unchanged."""
        lat, lon = (None, None) if geo is None else (float(geo[0]), float(geo[1]))
        tags_json = dump_json(list(tags)) if tags else None
        known_id = visitor_id if visitor_id is not None and c.VISITOR_ID_PATTERN.match(visitor_id) else None

        def upsert(cur: sqlite3.Cursor) -> Visitor:
            if known_id is not None and secret_hash is not None:  # no secret, no returning visitor
                row = cur.execute(
                    f"UPDATE visitors SET name = coalesce(?, name), lang = coalesce(?, lang), "
                    f"lat = coalesce(?, lat), lon = coalesce(?, lon), tags = coalesce(?, tags) "
                    f"WHERE id = ? AND site_id = ? AND secret_hash = ? RETURNING {VISITOR_COLUMNS}",
                    (name, lang, lat, lon, tags_json, known_id, site_id, secret_hash)).fetchone()
                if row is not None:
                    return c.visitor_from_row(row)
            try:
                row = cur.execute(
                    f"INSERT INTO visitors(id, site_id, name, lang, lat, lon, tags, created_at, secret_hash) "
                    f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING {VISITOR_COLUMNS}",
                    (c.new_visitor_id(), site_id, name, lang, lat, lon, tags_json or "[]", time.time(),
                     new_secret_hash)).fetchone()
            except sqlite3.IntegrityError as exc:
                raise NotFound(f"site {site_id}") from exc
            return c.visitor_from_row(row)

        return await self._write(upsert)

    async def get_visitor(self, visitor_id: str) -> Visitor | None:
        row = await self._read(lambda conn: conn.execute(
            f"SELECT {VISITOR_COLUMNS} FROM visitors WHERE id = ?", (visitor_id,)).fetchone())
        return None if row is None else c.visitor_from_row(row)

    async def set_visitor_last_agent(self, visitor_id: str, agent_id: str) -> None:
        def update(cur: sqlite3.Cursor) -> None:
            try:
                cur.execute("UPDATE visitors SET last_agent_id = ? WHERE id = ?", (agent_id, visitor_id))
            except sqlite3.IntegrityError as exc:
                raise NotFound(f"agent {agent_id}") from exc
            if cur.rowcount == 0:
                raise NotFound(f"visitor {visitor_id}")

        await self._write(update)

    # --- agents ------------------------------------------------------------------------------------
    async def create_agent(
        self, site_id: int, username: str, password_hash: str, *, name: str,
        role: Literal["agent", "admin"] = "agent", teams: tuple[str, ...] = (),
        skills: dict[str, float] | None = None, capacity: int = 5, languages: tuple[str, ...] = (),
        geo: tuple[float, float] | None = None,
    ) -> Agent:
        c.check_role(role)
        lat, lon = (None, None) if geo is None else (float(geo[0]), float(geo[1]))
        values = (
            c.new_agent_id(), site_id, username, password_hash, name, role, dump_json(list(teams)),
            dump_json(skills or {}), int(capacity), dump_json(list(languages)), lat, lon, time.time(),
        )

        def insert(cur: sqlite3.Cursor) -> Agent:
            try:
                row = cur.execute(
                    f"INSERT INTO agents(id, site_id, username, password_hash, name, role, teams, skills, "
                    f"capacity, languages, lat, lon, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    f"RETURNING {AGENT_COLUMNS}", values).fetchone()
            except sqlite3.IntegrityError as exc:
                if "UNIQUE" in str(exc):
                    raise Conflict(f"username {username!r} exists") from exc
                raise NotFound(f"site {site_id}") from exc
            return c.agent_from_row(row)

        return await self._write(insert)

    async def get_agent(self, agent_id: str) -> Agent | None:
        row = await self._read(lambda conn: conn.execute(
            f"SELECT {AGENT_COLUMNS} FROM agents WHERE id = ?", (agent_id,)).fetchone())
        return None if row is None else c.agent_from_row(row)

    async def get_agent_by_username(self, username: str) -> Agent | None:
        row = await self._read(lambda conn: conn.execute(
            f"SELECT {AGENT_COLUMNS} FROM agents WHERE username = ?", (username,)).fetchone())
        return None if row is None else c.agent_from_row(row)

    async def list_agents(self, site_id: int) -> list[Agent]:
        rows = await self._read(lambda conn: conn.execute(
            f"SELECT {AGENT_COLUMNS} FROM agents WHERE site_id = ? ORDER BY username", (site_id,)).fetchall())
        return [c.agent_from_row(row) for row in rows]

    async def update_agent(self, agent_id: str, **fields: Any) -> Agent:
        c.check_agent_fields(fields)
        columns = c.agent_column_values(fields)

        def update(cur: sqlite3.Cursor) -> Agent:
            assignments = c.agent_set_clause([f"{column} = ?" for column in columns], fields)
            row = cur.execute(
                f"UPDATE agents SET {assignments} WHERE id = ? RETURNING {AGENT_COLUMNS}",
                (*columns.values(), agent_id)).fetchone()
            if row is None:
                raise NotFound(f"agent {agent_id}")
            return c.agent_from_row(row)

        return await self._write(update)

    # --- conversations -----------------------------------------------------------------------------
    async def open_conversation(
        self, site_id: int, visitor_id: str, tags: tuple[str, ...] = ()
    ) -> tuple[Conversation, bool]:
        tags_json = dump_json(list(tags))

        def open_or_create(cur: sqlite3.Cursor) -> tuple[Conversation, bool]:
            # Under BEGIN IMMEDIATE nobody else writes between this check and the insert; the partial
            # unique index still guards the rule should that ever change.
            row = cur.execute(
                f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE visitor_id = ? AND state != 'closed'",
                (visitor_id,)).fetchone()
            if row is not None:
                if row[1] != site_id:
                    raise NotFound(f"visitor {visitor_id} on site {site_id}")
                return c.conversation_from_row(row), False
            owner = cur.execute("SELECT site_id FROM visitors WHERE id = ?", (visitor_id,)).fetchone()
            if owner is None or owner[0] != site_id:
                raise NotFound(f"visitor {visitor_id} on site {site_id}")
            try:
                row = cur.execute(
                    f"INSERT INTO conversations(site_id, visitor_id, state, created_at, tags) "
                    f"VALUES (?, ?, 'queued', ?, ?) RETURNING {CONVERSATION_COLUMNS}",
                    (site_id, visitor_id, time.time(), tags_json)).fetchone()
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"visitor {visitor_id} has an open conversation") from exc
            return c.conversation_from_row(row), True

        return await self._write(open_or_create)

    async def get_conversation(self, conv_id: int) -> Conversation | None:
        row = await self._read(lambda conn: conn.execute(
            f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?", (conv_id,)).fetchone())
        return None if row is None else c.conversation_from_row(row)

    async def set_conversation_state(
        self, conv_id: int, state: ConversationState, agent_id: str | None, *, team: str | None = None,
    ) -> Conversation:
        """`team=None` keeps the conversation's team; reopening while another is open raises Conflict."""
        c.check_state(state)

        def update(cur: sqlite3.Cursor) -> Conversation:
            try:
                row = cur.execute(
                    f"UPDATE conversations SET state = ?, agent_id = ?, team = coalesce(?, team), "
                    f"closed_at = CASE WHEN ? = 'closed' THEN coalesce(closed_at, ?) ELSE NULL END "
                    f"WHERE id = ? RETURNING {CONVERSATION_COLUMNS}",
                    (state, agent_id, team, state, time.time(), conv_id)).fetchone()
            except sqlite3.IntegrityError as exc:
                if "UNIQUE" in str(exc):
                    raise Conflict(f"the visitor of conversation {conv_id} has another open one") from exc
                raise NotFound(f"agent {agent_id}") from exc
            if row is None:
                raise NotFound(f"conversation {conv_id}")
            return c.conversation_from_row(row)

        return await self._write(update)

    async def list_conversations(
        self, *, site_id: int | None = None, visitor_id: str | None = None, agent_id: str | None = None,
        states: tuple[ConversationState, ...] | None = None, limit: int = 200,
    ) -> list[Conversation]:
        clauses, params = _conversation_filter(site_id, visitor_id, agent_id, states)
        params.append(c.clamp_limit(limit, c.MAX_LIST_LIMIT))
        sql = f"SELECT {CONVERSATION_COLUMNS} FROM conversations {clauses} ORDER BY id DESC LIMIT ?"
        rows = await self._read(lambda conn: conn.execute(sql, params).fetchall())
        return [c.conversation_from_row(row) for row in rows]

    # --- messages ----------------------------------------------------------------------------------
    def submit_message(self, msg: NewMessage) -> asyncio.Future[AppendResult]:
        meta_json = c.check_storable_message(msg)
        if not self._accepting:
            raise StorageError("storage is not open")
        token = self._next_token
        self._next_token = token + 1
        try:
            self._journal.submit(  # type: ignore[union-attr]
                token, msg.conv, msg.cmid, msg.sender_id, msg.sender_role, msg.sender_name, msg.text, msg.kind,
                meta_json)
        except JournalFull:
            raise StorageError("storage overloaded: too many writes pending") from None
        except JournalClosed:
            raise StorageError("storage is not open") from None
        future: asyncio.Future[AppendResult] = self._loop.create_future()  # type: ignore[union-attr]
        self._waiting[token] = future
        return future

    async def messages_after(self, conv_id: int, after_seq: int, limit: int) -> list[StoredMessage]:
        page = c.clamp_limit(limit, c.MAX_PAGE_LIMIT)
        if page == 0:
            return []
        rows = await self._read(lambda conn: conn.execute(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conv = ? AND seq > ? ORDER BY seq LIMIT ?",
            (conv_id, after_seq, page)).fetchall())
        return [c.message_from_row(row) for row in rows]

    async def set_read_mark(self, conv_id: int, participant_id: str, seq: int) -> int:
        """The mark never passes the conversation's last seq (a hostile client cannot park it at 2^53)."""

        def raise_mark(cur: sqlite3.Cursor) -> int:
            row = cur.execute(_RAISE_READ_MARK + " RETURNING seq",
                              (participant_id, c.clamp_seq(seq), conv_id)).fetchone()
            if row is None:
                raise NotFound(f"conversation {conv_id}")
            return row[0]

        return await self._write(raise_mark)

    async def set_read_marks(self, marks: Sequence[tuple[int, str, int]]) -> None:
        rows = [(participant_id, c.clamp_seq(seq), conv_id) for conv_id, participant_id, seq in marks]

        def raise_marks(cur: sqlite3.Cursor) -> None:
            cur.executemany(_RAISE_READ_MARK, rows)

        await self._write(raise_marks)

    # --- routing audit -----------------------------------------------------------------------------
    async def record_routing_decision(self, conv_id: int, decision: dict[str, Any]) -> int:
        decision_json = dump_json(decision)

        def insert(cur: sqlite3.Cursor) -> int:
            try:
                row = cur.execute(
                    "INSERT INTO routing_decisions(conv, ts, decision) VALUES (?, ?, ?) RETURNING id",
                    (conv_id, time.time(), decision_json)).fetchone()
            except sqlite3.IntegrityError as exc:
                raise NotFound(f"conversation {conv_id}") from exc
            return row[0]

        return await self._write(insert)

    async def routing_decisions(self, conv_id: int) -> list[dict[str, Any]]:
        rows = await self._read(lambda conn: conn.execute(
            "SELECT id, ts, decision FROM routing_decisions WHERE conv = ? ORDER BY id", (conv_id,)).fetchall())
        return [c.decision_from_row(row) for row in rows]

    # --- canned replies ----------------------------------------------------------------------------
    async def create_canned_reply(self, site_id: int, shortcut: str, text: str) -> CannedReply:
        def insert(cur: sqlite3.Cursor) -> CannedReply:
            try:
                row = cur.execute(
                    f"INSERT INTO canned_replies(site_id, shortcut, body, updated_at) VALUES (?, ?, ?, ?) "
                    f"RETURNING {CANNED_COLUMNS}", (site_id, shortcut, text, time.time())).fetchone()
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"shortcut {shortcut!r} exists on site {site_id}") from exc
            return c.canned_from_row(row)

        return await self._write(insert)

    async def get_canned_reply(self, reply_id: int) -> CannedReply | None:
        row = await self._read(lambda conn: conn.execute(
            f"SELECT {CANNED_COLUMNS} FROM canned_replies WHERE id = ?", (reply_id,)).fetchone())
        return None if row is None else c.canned_from_row(row)

    async def list_canned_replies(self, site_id: int, query: str | None = None, limit: int = 200) -> list[CannedReply]:
        rows = await self._read(lambda conn: conn.execute(
            f"SELECT {CANNED_COLUMNS} FROM canned_replies WHERE site_id = ? "
            "AND (? IS NULL OR instr(lower(shortcut || char(10) || body), lower(?)) > 0) "
            "ORDER BY shortcut LIMIT ?", (site_id, query, query, min(limit, c.MAX_LIST_LIMIT))).fetchall())
        return [c.canned_from_row(row) for row in rows]

    async def update_canned_reply(self, reply_id: int, *, shortcut: str | None = None,
                                  text: str | None = None) -> CannedReply:
        def update(cur: sqlite3.Cursor) -> CannedReply:
            try:
                row = cur.execute(
                    "UPDATE canned_replies SET shortcut = coalesce(?, shortcut), body = coalesce(?, body), "
                    f"updated_at = ? WHERE id = ? RETURNING {CANNED_COLUMNS}",
                    (shortcut, text, time.time(), reply_id)).fetchone()
            except sqlite3.IntegrityError as exc:
                raise Conflict(f"shortcut {shortcut!r} exists") from exc
            if row is None:
                raise NotFound(f"canned reply {reply_id}")
            return c.canned_from_row(row)

        return await self._write(update)

    async def delete_canned_reply(self, reply_id: int) -> bool:
        return await self._write(lambda cur: cur.execute(
            "DELETE FROM canned_replies WHERE id = ?", (reply_id,)).rowcount > 0)


# --- operations run by the control writer thread -----------------------------------------------

def _call(cur: sqlite3.Cursor, fn: Callable[[sqlite3.Cursor], T]) -> T:
    return fn(cur)


def _settle_one(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller went away (cancelled); the outcome stands in the database
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def _settle_batch(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in outcomes:
        if future.done():  # the caller went away (cancelled); the outcome stands in the database
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


def _conversation_filter(
    site_id: int | None, visitor_id: str | None, agent_id: str | None,
    states: tuple[ConversationState, ...] | None,
) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in (("site_id", site_id), ("visitor_id", visitor_id), ("agent_id", agent_id)):
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(value)
    if states is not None:
        for state in states:
            c.check_state(state)
        if not states:
            clauses.append("0")
        else:
            clauses.append(f"state IN ({', '.join('?' * len(states))})")
            params.extend(states)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params
