"""PostgreSQL storage (at scale: several server processes and hosts share one database), via asyncpg.

Same contract as the SQLite backend; what differs is how correctness holds across processes:
- `seq` and idempotency: the storing transaction first locks the rows of the conversations it writes
  to (`SELECT … FOR NO KEY UPDATE`, in id order), which serialises every writer of a conversation
  until commit, on any host. Under that lock it reads which (conv, sender_id, cmid) already exist
  (their original seq/ts is the answer to a retry, and they take no seq), gives each new message
  `last_seq` + its rank within the conversation, raises `last_seq` and inserts. The unique
  constraint on (conv, sender_id, cmid) stays as the backstop.
- group commit: appends arriving while a batch commits are collected and committed together by ONE
  set-based call of the PL/pgSQL function `kefu_append_batch` (one round trip, one WAL flush for the
  whole batch). Locking in id order means batches of different processes never deadlock; within one
  conversation the arrival order is kept. One batch is in flight per process, so a process's appends
  get seqs in the order they were made.
- durability: `synchronous_commit = off` may lose "committed" transactions on a crash, so a
  connection that reports `off` is refused. `on`, `remote_write`, `remote_apply` and `local` all flush
  the commit record to the local WAL before COMMIT returns; they differ only in what they wait for on
  synchronous standbys.
The schema goes into the first schema of the connection's search_path (set it in the DSN, e.g.
`postgresql://host/db?search_path=kefu`); creation is idempotent and serialised by an advisory lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Literal, TypeVar

import asyncpg

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
    MessageRecord,
    NewMessage,
    NotFound,
    RecordOutcome,
    Site,
    Storage,
    StorageError,
    StoredMessage,
    Visitor,
)

T = TypeVar("T")

log = logging.getLogger("kefu.storage.postgres")

# Any 64-bit constant: serialises schema creation between processes starting at the same time.
_SCHEMA_LOCK_KEY: Final = 0x6B6566755F736368  # "kefu_sch"
_COMMAND_TIMEOUT_S: Final = 15.0
_ACCEPTED_SYNCHRONOUS_COMMIT: Final = frozenset({"on", "remote_write", "remote_apply", "local"})

# Outcomes of kefu_append_batch, per message.
_CREATED: Final = 0
_DUPLICATE: Final = 1
_NO_CONVERSATION: Final = 2
_CLOSED: Final = 3
# What the native data plane's outcomes call each of them.
_STATUS: Final = {_CREATED: "created", _DUPLICATE: "duplicate", _NO_CONVERSATION: "not_found", _CLOSED: "conflict"}

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        "CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL)",
        """CREATE TABLE sites (
            id bigserial PRIMARY KEY,
            key text NOT NULL UNIQUE,
            name text NOT NULL,
            allowed_origins jsonb NOT NULL,
            routing jsonb NOT NULL,
            created_at double precision NOT NULL)""",
        """CREATE TABLE agents (
            id text PRIMARY KEY,
            site_id bigint NOT NULL REFERENCES sites(id),
            username text NOT NULL UNIQUE,
            password_hash text NOT NULL,
            name text NOT NULL,
            role text NOT NULL CHECK (role IN ('agent', 'admin')),
            teams jsonb NOT NULL,
            skills jsonb NOT NULL,
            capacity integer NOT NULL CHECK (capacity >= 0),
            languages jsonb NOT NULL,
            lat double precision, lon double precision,
            disabled boolean NOT NULL DEFAULT false,
            created_at double precision NOT NULL)""",
        "CREATE INDEX agents_by_site ON agents(site_id)",
        """CREATE TABLE visitors (
            id text PRIMARY KEY,
            site_id bigint NOT NULL REFERENCES sites(id),
            name text, lang text, lat double precision, lon double precision,
            tags jsonb NOT NULL,
            last_agent_id text REFERENCES agents(id),
            created_at double precision NOT NULL)""",
        """CREATE TABLE conversations (
            id bigserial PRIMARY KEY,
            site_id bigint NOT NULL REFERENCES sites(id),
            visitor_id text NOT NULL REFERENCES visitors(id),
            state text NOT NULL CHECK (state IN ('queued', 'assigned', 'transferred', 'closed')),
            agent_id text REFERENCES agents(id),
            team text,
            last_seq bigint NOT NULL DEFAULT 0,
            created_at double precision NOT NULL,
            closed_at double precision,
            tags jsonb NOT NULL)""",
        "CREATE UNIQUE INDEX conversations_one_open_per_visitor ON conversations(visitor_id) WHERE state <> 'closed'",
        "CREATE INDEX conversations_by_visitor ON conversations(visitor_id, id)",
        "CREATE INDEX conversations_by_agent ON conversations(agent_id, id)",
        "CREATE INDEX conversations_by_site ON conversations(site_id, id)",
        """CREATE TABLE messages (
            conv bigint NOT NULL REFERENCES conversations(id),
            seq bigint NOT NULL,
            cmid text NOT NULL,
            sender_id text NOT NULL,
            sender_role text NOT NULL,
            sender_name text,
            body text NOT NULL,
            kind text NOT NULL,
            meta jsonb NOT NULL,
            ts double precision NOT NULL,
            PRIMARY KEY (conv, seq),
            CONSTRAINT messages_idempotency UNIQUE (conv, sender_id, cmid))""",
        """CREATE TABLE read_marks (
            conv bigint NOT NULL REFERENCES conversations(id),
            participant_id text NOT NULL,
            seq bigint NOT NULL,
            PRIMARY KEY (conv, participant_id))""",
        """CREATE TABLE routing_decisions (
            id bigserial PRIMARY KEY,
            conv bigint NOT NULL REFERENCES conversations(id),
            ts double precision NOT NULL,
            decision jsonb NOT NULL)""",
        "CREATE INDEX routing_decisions_by_conv ON routing_decisions(conv, id)",
        # One round trip per batch, set-based. First lock the batch's conversations in id order: from
        # then on nobody else adds messages to them until commit, and batches of different processes
        # cannot deadlock. The next statement's snapshot therefore sees every stored cmid; new messages
        # (first copy of each key, known conversation) get last_seq + their rank within the
        # conversation, in batch order. Outcome per input row, in input order: 0 stored, 1 a retry
        # (the original seq/ts), 2 no such conversation. Output columns are prefixed so they never
        # shadow table columns.
        """CREATE FUNCTION kefu_append_batch(
                p_conv bigint[], p_cmid text[], p_sender_id text[], p_sender_role text[], p_sender_name text[],
                p_body text[], p_kind text[], p_meta text[], p_ts double precision[])
            RETURNS TABLE (out_outcome smallint, out_seq bigint, out_ts double precision)
            LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM 1 FROM conversations WHERE id = ANY(p_conv) ORDER BY id FOR NO KEY UPDATE;
                RETURN QUERY
                WITH input AS (
                    SELECT i.*, row_number() OVER (PARTITION BY i.conv, i.sender_id, i.cmid ORDER BY i.idx) AS copy
                    FROM unnest(p_conv, p_cmid, p_sender_id, p_sender_role, p_sender_name, p_body, p_kind,
                                p_meta, p_ts)
                        WITH ORDINALITY AS i(conv, cmid, sender_id, sender_role, sender_name, body, kind, meta,
                                             ts, idx)
                ),
                classified AS (
                    SELECT input.*, c.last_seq AS base_seq, c.id IS NOT NULL AS known,
                           m.seq AS old_seq, m.ts AS old_ts
                    FROM input
                    LEFT JOIN conversations c ON c.id = input.conv
                    LEFT JOIN messages m
                        ON m.conv = input.conv AND m.sender_id = input.sender_id AND m.cmid = input.cmid
                ),
                fresh AS (
                    SELECT classified.*, base_seq + row_number() OVER (PARTITION BY conv ORDER BY idx) AS new_seq
                    FROM classified WHERE known AND old_seq IS NULL AND copy = 1
                ),
                bumped AS (
                    UPDATE conversations c SET last_seq = c.last_seq + added.n
                    FROM (SELECT conv, count(*) AS n FROM fresh GROUP BY conv) added
                    WHERE c.id = added.conv
                ),
                inserted AS (
                    INSERT INTO messages (conv, seq, cmid, sender_id, sender_role, sender_name, body, kind, meta, ts)
                    SELECT conv, new_seq, cmid, sender_id, sender_role, sender_name, body, kind, meta::jsonb, ts
                    FROM fresh
                )
                SELECT (CASE WHEN NOT cl.known THEN 2 WHEN mine.new_seq IS NOT NULL THEN 0 ELSE 1 END)::smallint,
                       coalesce(mine.new_seq, cl.old_seq, first_copy.new_seq),
                       coalesce(mine.ts, cl.old_ts, first_copy.ts)
                FROM classified cl
                LEFT JOIN fresh mine ON mine.idx = cl.idx
                LEFT JOIN fresh first_copy
                    ON first_copy.conv = cl.conv AND first_copy.sender_id = cl.sender_id
                    AND first_copy.cmid = cl.cmid
                ORDER BY cl.idx;
            END
            $$""",
    ),
    (
        # Issue 8: agent tokens carry a generation checked on every request; returning visitors
        # prove themselves with a secret (only its SHA-256 is kept).
        "ALTER TABLE agents ADD COLUMN token_gen bigint NOT NULL DEFAULT 0",
        "ALTER TABLE visitors ADD COLUMN secret_hash text",
    ),
    (
        """CREATE TABLE canned_replies (
            id bigserial PRIMARY KEY,
            site_id bigint NOT NULL REFERENCES sites(id),
            shortcut text NOT NULL,
            body text NOT NULL,
            updated_at double precision NOT NULL,
            UNIQUE (site_id, shortcut))""",
    ),
    (
        # Issue 11: a closed conversation refuses new messages, as SQLite's journal always did (outcome
        # 3); a retry of a message stored before the close still answers its seq. Otherwise as above.
        """CREATE OR REPLACE FUNCTION kefu_append_batch(
                p_conv bigint[], p_cmid text[], p_sender_id text[], p_sender_role text[], p_sender_name text[],
                p_body text[], p_kind text[], p_meta text[], p_ts double precision[])
            RETURNS TABLE (out_outcome smallint, out_seq bigint, out_ts double precision)
            LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM 1 FROM conversations WHERE id = ANY(p_conv) ORDER BY id FOR NO KEY UPDATE;
                RETURN QUERY
                WITH input AS (
                    SELECT i.*, row_number() OVER (PARTITION BY i.conv, i.sender_id, i.cmid ORDER BY i.idx) AS copy
                    FROM unnest(p_conv, p_cmid, p_sender_id, p_sender_role, p_sender_name, p_body, p_kind,
                                p_meta, p_ts)
                        WITH ORDINALITY AS i(conv, cmid, sender_id, sender_role, sender_name, body, kind, meta,
                                             ts, idx)
                ),
                classified AS (
                    SELECT input.*, c.last_seq AS base_seq, c.id IS NOT NULL AS known,
                           coalesce(c.state = 'closed', false) AS closed, m.seq AS old_seq, m.ts AS old_ts
                    FROM input
                    LEFT JOIN conversations c ON c.id = input.conv
                    LEFT JOIN messages m
                        ON m.conv = input.conv AND m.sender_id = input.sender_id AND m.cmid = input.cmid
                ),
                fresh AS (
                    SELECT classified.*, base_seq + row_number() OVER (PARTITION BY conv ORDER BY idx) AS new_seq
                    FROM classified WHERE known AND NOT closed AND old_seq IS NULL AND copy = 1
                ),
                bumped AS (
                    UPDATE conversations c SET last_seq = c.last_seq + added.n
                    FROM (SELECT conv, count(*) AS n FROM fresh GROUP BY conv) added
                    WHERE c.id = added.conv
                ),
                inserted AS (
                    INSERT INTO messages (conv, seq, cmid, sender_id, sender_role, sender_name, body, kind, meta, ts)
                    SELECT conv, new_seq, cmid, sender_id, sender_role, sender_name, body, kind, meta::jsonb, ts
                    FROM fresh
                )
                SELECT (CASE WHEN NOT cl.known THEN 2
                             WHEN mine.new_seq IS NOT NULL THEN 0
                             WHEN cl.closed AND cl.old_seq IS NULL THEN 3
                             ELSE 1 END)::smallint,
                       coalesce(mine.new_seq, cl.old_seq, first_copy.new_seq),
                       coalesce(mine.ts, cl.old_ts, first_copy.ts)
                FROM classified cl
                LEFT JOIN fresh mine ON mine.idx = cl.idx
                LEFT JOIN fresh first_copy
                    ON first_copy.conv = cl.conv AND first_copy.sender_id = cl.sender_id
                    AND first_copy.cmid = cl.cmid
                ORDER BY cl.idx;
            END
            $$""",
    ),
)

_APPEND_BATCH_SQL: Final = (
    "SELECT out_outcome, out_seq, out_ts FROM kefu_append_batch("
    "$1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], "
    "$9::float8[])"
)

# Errors that say "the server or the connection is gone", as opposed to "this data was refused".
_CONNECTION_ERRORS: Final = (
    OSError, asyncio.TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError,
)

_PendingAppend = tuple[NewMessage, str, float, "asyncio.Future[AppendResult]"]


async def _check_connection(conn: asyncpg.Connection) -> None:
    """Pool `init`: every connection must commit synchronously (a role or database may override it)."""
    level = await conn.fetchval("SHOW synchronous_commit")
    if level not in _ACCEPTED_SYNCHRONOUS_COMMIT:
        raise StorageError(
            f"PostgreSQL synchronous_commit={level!r} refused: an ack must mean a durable commit "
            "(set synchronous_commit = on)"
        )


# Raise ($1 conv, $2 participant)'s read mark to $3, never past the conversation's last seq nor lower.
_RAISE_READ_MARK: Final = (
    "INSERT INTO read_marks(conv, participant_id, seq) "
    "SELECT id, $2, greatest(0, least($3::bigint, last_seq)) FROM conversations WHERE id = $1 "
    "ON CONFLICT (conv, participant_id) DO UPDATE SET seq = greatest(read_marks.seq, excluded.seq)")

class PostgresStorage(Storage):
    """PostgreSQL through an asyncpg pool; appends are group-committed. Use from one event loop."""

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 8, max_batch: int = 512) -> None:
        if max_batch < 1 or min_size < 0 or max_size < max(1, min_size):
            raise ValueError("need max_batch >= 1 and 0 <= min_size <= max_size, max_size >= 1")
        self.dsn = dsn
        self.min_size = min_size
        self.max_size = max_size
        self.max_batch = max_batch
        self._pool: asyncpg.Pool | None = None
        self._epoch = ""
        self._pending: list[_PendingAppend] = []
        self._batch_task: asyncio.Task[None] | None = None
        self._accepting = False

    # --- lifecycle ---------------------------------------------------------------------------------
    async def open(self) -> None:
        if self._pool is not None:
            raise RuntimeError("storage already opened")
        try:
            pool = await asyncpg.create_pool(
                self.dsn, min_size=self.min_size, max_size=self.max_size, init=_check_connection,
                command_timeout=_COMMAND_TIMEOUT_S,
            )
        except StorageError:
            raise
        except (*_CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            raise c.storage_error(exc) from exc
        try:
            async with pool.acquire() as conn:
                self._epoch = await self._migrate(conn)
        except BaseException as exc:
            await pool.close()
            if isinstance(exc, (*_CONNECTION_ERRORS, asyncpg.PostgresError)):
                raise c.storage_error(exc) from exc
            raise
        self._pool = pool
        self._accepting = True

    @staticmethod
    async def _migrate(conn: asyncpg.Connection) -> str:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK_KEY)
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
            current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
            if current > len(MIGRATIONS):
                raise StorageError(f"database schema version {current} is newer than this Kefu ({len(MIGRATIONS)})")
            for version in range(current, len(MIGRATIONS)):
                for statement in MIGRATIONS[version]:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO schema_version(version) VALUES ($1)", version + 1)
            await conn.execute(
                "INSERT INTO meta(key, value) VALUES ('epoch', $1) ON CONFLICT (key) DO NOTHING", c.new_epoch()
            )
            return await conn.fetchval("SELECT value FROM meta WHERE key = 'epoch'")

    async def close(self) -> None:
        if not self._accepting:
            return
        self._accepting = False
        while self._batch_task is not None:  # the running batch schedules the next while appends are pending
            await asyncio.shield(self._batch_task)
        assert self._pool is not None
        await self._pool.close()
        self._pool = None

    async def epoch(self) -> str:
        return self._epoch

    async def healthy(self) -> bool:
        probe = c.new_epoch()
        try:
            value = await self._run(lambda conn: conn.fetchval(
                "INSERT INTO meta(key, value) VALUES ('health_probe', $1) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value RETURNING value", probe))
        except StorageError:
            return False
        return value == probe

    async def _run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run `fn` on a pooled connection; driver failures become StorageError."""
        if self._pool is None:  # (still set while close() drains the pending appends)
            raise StorageError("storage is not open")
        try:
            async with self._pool.acquire(timeout=_COMMAND_TIMEOUT_S) as conn:
                return await fn(conn)
        except (*_CONNECTION_ERRORS, asyncpg.PostgresError) as exc:
            raise c.storage_error(exc) from exc

    async def _fetchrow(self, sql: str, *args: Any) -> Any:
        return await self._run(lambda conn: conn.fetchrow(sql, *args))

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        return await self._run(lambda conn: conn.fetch(sql, *args))

    # --- sites -------------------------------------------------------------------------------------
    async def create_site(self, name: str, allowed_origins: tuple[str, ...], key: str | None = None) -> Site:
        site_key = c.new_site_key() if key is None else key
        try:
            row = await self._fetchrow(
                f"INSERT INTO sites(key, name, allowed_origins, routing, created_at) "
                f"VALUES ($1, $2, $3::jsonb, '{{}}'::jsonb, $4) RETURNING {SITE_COLUMNS}",
                site_key, name, dump_json(list(allowed_origins)), time.time())
        except StorageError as exc:
            if isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                raise Conflict(f"site key {site_key!r} exists") from exc.__cause__
            raise
        return c.site_from_row(row)

    async def get_site_by_key(self, key: str) -> Site | None:
        row = await self._fetchrow(f"SELECT {SITE_COLUMNS} FROM sites WHERE key = $1", key)
        return None if row is None else c.site_from_row(row)

    async def get_site(self, site_id: int) -> Site | None:
        row = await self._fetchrow(f"SELECT {SITE_COLUMNS} FROM sites WHERE id = $1", site_id)
        return None if row is None else c.site_from_row(row)

    async def list_sites(self) -> list[Site]:
        return [c.site_from_row(row) for row in await self._fetch(f"SELECT {SITE_COLUMNS} FROM sites ORDER BY id")]

    async def update_site(
        self, site_id: int, *, allowed_origins: tuple[str, ...] | None = None,
        routing: dict[str, Any] | None = None,
    ) -> Site:
        row = await self._fetchrow(
            f"UPDATE sites SET allowed_origins = coalesce($1::jsonb, allowed_origins), "
            f"routing = coalesce($2::jsonb, routing) WHERE id = $3 RETURNING {SITE_COLUMNS}",
            None if allowed_origins is None else dump_json(list(allowed_origins)),
            None if routing is None else dump_json(routing), site_id)
        if row is None:
            raise NotFound(f"site {site_id}")
        return c.site_from_row(row)

    # --- visitors ----------------------------------------------------------------------------------
    async def upsert_visitor(
        self, site_id: int, visitor_id: str | None, *, name: str | None, lang: str | None,
        geo: tuple[float, float] | None, tags: tuple[str, ...], secret_hash: str | None = None,
        new_secret_hash: str | None = None,
    ) -> Visitor:
        """Profile fields given as None (and empty `tags`) leave the stored value unchanged."""
        lat, lon = (None, None) if geo is None else (float(geo[0]), float(geo[1]))
        tags_json = dump_json(list(tags)) if tags else None
        # No secret, no returning visitor: the id alone is not a credential.
        if visitor_id is not None and secret_hash is not None and c.VISITOR_ID_PATTERN.match(visitor_id):
            row = await self._fetchrow(
                f"UPDATE visitors SET name = coalesce($1, name), lang = coalesce($2, lang), "
                f"lat = coalesce($3, lat), lon = coalesce($4, lon), tags = coalesce($5::jsonb, tags) "
                f"WHERE id = $6 AND site_id = $7 AND secret_hash = $8 RETURNING {VISITOR_COLUMNS}",
                name, lang, lat, lon, tags_json, visitor_id, site_id, secret_hash)
            if row is not None:
                return c.visitor_from_row(row)
        try:
            row = await self._fetchrow(
                f"INSERT INTO visitors(id, site_id, name, lang, lat, lon, tags, created_at, secret_hash) "
                f"VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9) RETURNING {VISITOR_COLUMNS}",
                c.new_visitor_id(), site_id, name, lang, lat, lon, tags_json or "[]", time.time(), new_secret_hash)
        except StorageError as exc:
            if isinstance(exc.__cause__, asyncpg.ForeignKeyViolationError):
                raise NotFound(f"site {site_id}") from exc.__cause__
            raise
        return c.visitor_from_row(row)

    async def get_visitor(self, visitor_id: str) -> Visitor | None:
        row = await self._fetchrow(f"SELECT {VISITOR_COLUMNS} FROM visitors WHERE id = $1", visitor_id)
        return None if row is None else c.visitor_from_row(row)

    async def set_visitor_last_agent(self, visitor_id: str, agent_id: str) -> None:
        try:
            status = await self._run(lambda conn: conn.execute(
                "UPDATE visitors SET last_agent_id = $1 WHERE id = $2", agent_id, visitor_id))
        except StorageError as exc:
            if isinstance(exc.__cause__, asyncpg.ForeignKeyViolationError):
                raise NotFound(f"agent {agent_id}") from exc.__cause__
            raise
        if status == "UPDATE 0":
            raise NotFound(f"visitor {visitor_id}")

    # --- agents ------------------------------------------------------------------------------------
    async def create_agent(
        self, site_id: int, username: str, password_hash: str, *, name: str,
        role: Literal["agent", "admin"] = "agent", teams: tuple[str, ...] = (),
        skills: dict[str, float] | None = None, capacity: int = 5, languages: tuple[str, ...] = (),
        geo: tuple[float, float] | None = None,
    ) -> Agent:
        c.check_role(role)
        lat, lon = (None, None) if geo is None else (float(geo[0]), float(geo[1]))
        try:
            row = await self._fetchrow(
                f"INSERT INTO agents(id, site_id, username, password_hash, name, role, teams, skills, capacity, "
                f"languages, lat, lon, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9, "
                f"$10::jsonb, $11, $12, $13) RETURNING {AGENT_COLUMNS}",
                c.new_agent_id(), site_id, username, password_hash, name, role, dump_json(list(teams)),
                dump_json(skills or {}), int(capacity), dump_json(list(languages)), lat, lon, time.time())
        except StorageError as exc:
            if isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                raise Conflict(f"username {username!r} exists") from exc.__cause__
            if isinstance(exc.__cause__, asyncpg.ForeignKeyViolationError):
                raise NotFound(f"site {site_id}") from exc.__cause__
            raise
        return c.agent_from_row(row)

    async def get_agent(self, agent_id: str) -> Agent | None:
        row = await self._fetchrow(f"SELECT {AGENT_COLUMNS} FROM agents WHERE id = $1", agent_id)
        return None if row is None else c.agent_from_row(row)

    async def get_agent_by_username(self, username: str) -> Agent | None:
        row = await self._fetchrow(f"SELECT {AGENT_COLUMNS} FROM agents WHERE username = $1", username)
        return None if row is None else c.agent_from_row(row)

    async def list_agents(self, site_id: int) -> list[Agent]:
        rows = await self._fetch(f"SELECT {AGENT_COLUMNS} FROM agents WHERE site_id = $1 ORDER BY username", site_id)
        return [c.agent_from_row(row) for row in rows]

    async def update_agent(self, agent_id: str, **fields: Any) -> Agent:
        c.check_agent_fields(fields)
        columns = c.agent_column_values(fields)
        assignments = c.agent_set_clause([
            f"{column} = ${index}{'::jsonb' if column in _JSON_AGENT_COLUMNS else ''}"
            for index, column in enumerate(columns, start=2)
        ], fields)
        row = await self._fetchrow(
            f"UPDATE agents SET {assignments} WHERE id = $1 RETURNING {AGENT_COLUMNS}", agent_id, *columns.values())
        if row is None:
            raise NotFound(f"agent {agent_id}")
        return c.agent_from_row(row)

    # --- conversations -----------------------------------------------------------------------------
    async def open_conversation(
        self, site_id: int, visitor_id: str, tags: tuple[str, ...] = ()
    ) -> tuple[Conversation, bool]:
        tags_json = dump_json(list(tags))
        # Insert-or-nothing against the partial unique index, then read the winner. A conversation
        # closed between the two statements sends us around once more.
        for _ in range(5):
            row = await self._fetchrow(
                f"INSERT INTO conversations(site_id, visitor_id, state, created_at, tags) "
                f"SELECT $1, $2, 'queued', $3, $4::jsonb WHERE EXISTS "
                f"(SELECT 1 FROM visitors WHERE id = $2 AND site_id = $1) "
                f"ON CONFLICT (visitor_id) WHERE state <> 'closed' DO NOTHING RETURNING {CONVERSATION_COLUMNS}",
                site_id, visitor_id, time.time(), tags_json)
            if row is not None:
                return c.conversation_from_row(row), True
            row = await self._fetchrow(
                f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE visitor_id = $1 AND state <> 'closed'",
                visitor_id)
            if row is not None:
                if row[1] != site_id:
                    raise NotFound(f"visitor {visitor_id} on site {site_id}")
                return c.conversation_from_row(row), False
            owner = await self._run(lambda conn: conn.fetchval(
                "SELECT site_id FROM visitors WHERE id = $1", visitor_id))
            if owner != site_id:
                raise NotFound(f"visitor {visitor_id} on site {site_id}")
        raise StorageError(f"open_conversation for {visitor_id} kept racing with closes")

    async def get_conversation(self, conv_id: int) -> Conversation | None:
        row = await self._fetchrow(f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1", conv_id)
        return None if row is None else c.conversation_from_row(row)

    async def set_conversation_state(
        self, conv_id: int, state: ConversationState, agent_id: str | None, *, team: str | None = None,
    ) -> Conversation:
        """`team=None` keeps the conversation's team; reopening while another is open raises Conflict."""
        c.check_state(state)
        try:
            row = await self._fetchrow(
                f"UPDATE conversations SET state = $1, agent_id = $2, team = coalesce($3, team), "
                f"closed_at = CASE WHEN $1 = 'closed' THEN coalesce(closed_at, $4) ELSE NULL END "
                f"WHERE id = $5 RETURNING {CONVERSATION_COLUMNS}",
                state, agent_id, team, time.time(), conv_id)
        except StorageError as exc:
            if isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                raise Conflict(f"the visitor of conversation {conv_id} has another open one") from exc.__cause__
            if isinstance(exc.__cause__, asyncpg.ForeignKeyViolationError):
                raise NotFound(f"agent {agent_id}") from exc.__cause__
            raise
        if row is None:
            raise NotFound(f"conversation {conv_id}")
        return c.conversation_from_row(row)

    async def list_conversations(
        self, *, site_id: int | None = None, visitor_id: str | None = None, agent_id: str | None = None,
        states: tuple[ConversationState, ...] | None = None, limit: int = 200,
    ) -> list[Conversation]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("site_id", site_id), ("visitor_id", visitor_id), ("agent_id", agent_id)):
            if value is not None:
                params.append(value)
                clauses.append(f"{column} = ${len(params)}")
        if states is not None:
            for state in states:
                c.check_state(state)
            params.append(list(states))
            clauses.append(f"state = ANY(${len(params)}::text[])")
        params.append(c.clamp_limit(limit, c.MAX_LIST_LIMIT))
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = await self._fetch(
            f"SELECT {CONVERSATION_COLUMNS} FROM conversations {where} ORDER BY id DESC LIMIT ${len(params)}", *params)
        return [c.conversation_from_row(row) for row in rows]

    # --- messages ----------------------------------------------------------------------------------
    def submit_message(self, msg: NewMessage) -> asyncio.Future[AppendResult]:
        meta_json = c.check_storable_message(msg)
        if not self._accepting:
            raise StorageError("storage is not open")
        future: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._pending.append((msg, meta_json, time.time(), future))
        if self._batch_task is None:
            # Started, not run: appends made in this same loop tick join the first batch.
            self._batch_task = asyncio.create_task(self._commit_pending())
        return future

    async def _commit_pending(self) -> None:
        """Commit pending appends batch after batch; appends made meanwhile wait for the next batch."""
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                try:
                    await self._commit_batch(batch)
                except Exception as exc:
                    for _, _, _, future in batch:
                        _settle(future, None, c.storage_error(exc))
        finally:
            self._batch_task = None

    async def _commit_batch(self, batch: list[_PendingAppend]) -> None:
        # kefu_append_batch locks the conversations in id order itself; seqs follow the batch order.
        try:
            rows = await self._run(lambda conn: conn.fetch(_APPEND_BATCH_SQL, *_batch_columns(batch)))
        except Exception as exc:
            cause = exc.__cause__ if isinstance(exc, StorageError) else exc
            if len(batch) > 1 and not isinstance(cause, _CONNECTION_ERRORS):
                # The batch was refused for something in it: one message per transaction, so only the
                # offending message fails.
                for pending in batch:
                    await self._commit_batch([pending])
                return
            for _, _, _, future in batch:
                keep = len(batch) == 1 and isinstance(exc, (StorageError, ValueError))
                _settle(future, None, exc if keep else c.storage_error(cause or exc))
            return
        for (msg, _, _, future), (outcome, seq, ts) in zip(batch, rows, strict=True):
            if outcome == _NO_CONVERSATION:
                _settle(future, None, NotFound(f"conversation {msg.conv}"))
            elif outcome == _CLOSED:
                _settle(future, None, Conflict(f"conversation {msg.conv} is closed"))
            else:
                _settle(future, AppendResult(seq=seq, ts=ts, created=outcome == _CREATED), None)

    async def append_records(self, records: list[MessageRecord]) -> list[RecordOutcome]:
        """The native data plane's batch in one round trip per `max_batch` records (no `NewMessage`, no
        future per record): its fields go to `kefu_append_batch` as column arrays, as they came from
        the data plane (text, already-encoded meta). Same rules as `submit_message`; a record the
        database refuses fails alone (the batch is retried one record per transaction)."""
        if not self._accepting:
            raise StorageError("storage is not open")
        outcomes: list[RecordOutcome | None] = [None] * len(records)
        storable: list[int] = []
        for index, (token, conv, sender_id, _role, name, cmid, kind, text, meta_json, _ts) in enumerate(records):
            if not 0 < conv <= c.MAX_ID:
                outcomes[index] = (token, conv, 0, 0.0, "not_found")
            elif not c.storable_fields((cmid, sender_id, text, kind, name or ""), meta_json or "{}"):
                outcomes[index] = (token, conv, 0, 0.0, "failed")
            else:
                storable.append(index)
        now = time.time()  # what `ts` means everywhere: the time the batch is written
        for start in range(0, len(storable), self.max_batch):
            await self._append_record_batch(records, storable[start:start + self.max_batch], now, outcomes)
        return outcomes  # type: ignore[return-value]  # every slot was filled above or by the batches

    async def _append_record_batch(self, records: list[MessageRecord], indexes: list[int], now: float,
                                   outcomes: list[RecordOutcome | None]) -> None:
        batch = [records[index] for index in indexes]
        columns = (
            [record[1] for record in batch], [record[5] for record in batch], [record[2] for record in batch],
            [record[3] for record in batch], [record[4] for record in batch], [record[7] for record in batch],
            [record[6] for record in batch], [record[8] or "{}" for record in batch], [now] * len(batch),
        )
        try:
            rows = await self._run(lambda conn: conn.fetch(_APPEND_BATCH_SQL, *columns))
        except StorageError as exc:
            if len(indexes) > 1 and not isinstance(exc.__cause__, _CONNECTION_ERRORS):
                for index in indexes:  # refused for something in it: only the offending record fails
                    await self._append_record_batch(records, [index], now, outcomes)
                return
            log.error("storing %d messages failed: %s", len(indexes), exc)
            for index in indexes:
                outcomes[index] = (records[index][0], records[index][1], 0, 0.0, "failed")
            return
        for index, (outcome, seq, ts) in zip(indexes, rows, strict=True):
            token, conv = records[index][0], records[index][1]
            if outcome in (_CREATED, _DUPLICATE):
                outcomes[index] = (token, conv, seq, ts, _STATUS[outcome])
            else:
                outcomes[index] = (token, conv, 0, 0.0, _STATUS[outcome])

    async def messages_after(self, conv_id: int, after_seq: int, limit: int) -> list[StoredMessage]:
        page = c.clamp_limit(limit, c.MAX_PAGE_LIMIT)
        if page == 0:
            return []
        rows = await self._fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conv = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            conv_id, after_seq, page)
        return [c.message_from_row(row) for row in rows]

    async def set_read_mark(self, conv_id: int, participant_id: str, seq: int) -> int:
        """The mark never passes the conversation's last seq (a hostile client cannot park it at 2^53)."""
        value = await self._run(lambda conn: conn.fetchval(
            _RAISE_READ_MARK + " RETURNING seq", conv_id, participant_id, c.clamp_seq(seq)))
        if value is None:
            raise NotFound(f"conversation {conv_id}")
        return value

    async def set_read_marks(self, marks: Sequence[tuple[int, str, int]]) -> None:
        rows = [(conv_id, participant_id, c.clamp_seq(seq)) for conv_id, participant_id, seq in marks]
        await self._run(lambda conn: conn.executemany(_RAISE_READ_MARK, rows))

    # --- routing audit -----------------------------------------------------------------------------
    async def record_routing_decision(self, conv_id: int, decision: dict[str, Any]) -> int:
        decision_json = dump_json(decision)
        try:
            return await self._run(lambda conn: conn.fetchval(
                "INSERT INTO routing_decisions(conv, ts, decision) VALUES ($1, $2, $3::jsonb) RETURNING id",
                conv_id, time.time(), decision_json))
        except StorageError as exc:
            if isinstance(exc.__cause__, asyncpg.ForeignKeyViolationError):
                raise NotFound(f"conversation {conv_id}") from exc.__cause__
            raise

    async def routing_decisions(self, conv_id: int) -> list[dict[str, Any]]:
        rows = await self._fetch(
            "SELECT id, ts, decision FROM routing_decisions WHERE conv = $1 ORDER BY id", conv_id)
        return [c.decision_from_row(row) for row in rows]

    # --- canned replies ----------------------------------------------------------------------------
    async def _write_canned(self, sql: str, *args: Any) -> Any:
        try:
            return await self._fetchrow(sql, *args)
        except StorageError as exc:
            if isinstance(exc.__cause__, asyncpg.UniqueViolationError):
                raise Conflict("a canned reply with this shortcut exists on the site") from exc.__cause__
            raise

    async def create_canned_reply(self, site_id: int, shortcut: str, text: str) -> CannedReply:
        row = await self._write_canned(
            f"INSERT INTO canned_replies(site_id, shortcut, body, updated_at) VALUES ($1, $2, $3, $4) "
            f"RETURNING {CANNED_COLUMNS}", site_id, shortcut, text, time.time())
        return c.canned_from_row(row)

    async def get_canned_reply(self, reply_id: int) -> CannedReply | None:
        row = await self._fetchrow(f"SELECT {CANNED_COLUMNS} FROM canned_replies WHERE id = $1", reply_id)
        return None if row is None else c.canned_from_row(row)

    async def list_canned_replies(self, site_id: int, query: str | None = None, limit: int = 200) -> list[CannedReply]:
        # lower() here folds non-ASCII letters too; the contract promises ASCII folding only.
        rows = await self._fetch(
            f"SELECT {CANNED_COLUMNS} FROM canned_replies WHERE site_id = $1 "
            "AND ($2::text IS NULL OR strpos(lower(shortcut || chr(10) || body), lower($2::text)) > 0) "
            "ORDER BY shortcut COLLATE \"C\" LIMIT $3", site_id, query, min(limit, c.MAX_LIST_LIMIT))
        return [c.canned_from_row(row) for row in rows]

    async def update_canned_reply(self, reply_id: int, *, shortcut: str | None = None,
                                  text: str | None = None) -> CannedReply:
        row = await self._write_canned(
            "UPDATE canned_replies SET shortcut = coalesce($1, shortcut), body = coalesce($2, body), "
            f"updated_at = $3 WHERE id = $4 RETURNING {CANNED_COLUMNS}", shortcut, text, time.time(), reply_id)
        if row is None:
            raise NotFound(f"canned reply {reply_id}")
        return c.canned_from_row(row)

    async def delete_canned_reply(self, reply_id: int) -> bool:
        status = await self._run(lambda conn: conn.execute("DELETE FROM canned_replies WHERE id = $1", reply_id))
        return str(status) == "DELETE 1"


_JSON_AGENT_COLUMNS: Final = frozenset({"teams", "skills", "languages"})


def _batch_columns(batch: list[_PendingAppend]) -> tuple[list[Any], ...]:
    """The batch as column arrays, the shape kefu_append_batch takes (one round trip for all)."""
    return (
        [msg.conv for msg, _, _, _ in batch],
        [msg.cmid for msg, _, _, _ in batch],
        [msg.sender_id for msg, _, _, _ in batch],
        [msg.sender_role for msg, _, _, _ in batch],
        [msg.sender_name for msg, _, _, _ in batch],
        [msg.text for msg, _, _, _ in batch],
        [msg.kind for msg, _, _, _ in batch],
        [meta_json for _, meta_json, _, _ in batch],
        [ts for _, _, ts, _ in batch],
    )


def _settle(future: asyncio.Future[AppendResult], result: AppendResult | None, error: BaseException | None) -> None:
    if future.done():  # the caller went away (cancelled); the outcome stands in the database
        return
    if error is None:
        future.set_result(result)  # type: ignore[arg-type]
    else:
        future.set_exception(error)
