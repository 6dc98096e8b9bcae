"""The storage interface: SQLite (default, embedded) and PostgreSQL (at scale) implement it.

Storage is the source of truth for delivery: `seq` is assigned per conversation inside the storing
transaction, `(conv, sender, cmid)` is unique so a retried send returns the original `seq`, and
`append_message` resolves only after the transaction is durably committed (the caller acks then).
All methods are coroutines run on the server's event loop; implementations keep blocking I/O off it.
Participant ids are opaque strings: visitors "v_…", agents "a_…". Conversation ids are positive ints.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

ConversationState = Literal["queued", "assigned", "transferred", "closed"]
Role = Literal["visitor", "agent", "admin"]
# A message as the native data plane hands it over (`DataPlane.take_records`):
# (token, conv, sender_id, sender_role, sender_name, cmid, kind, text, meta_json, ts).
MessageRecord = tuple[int, int, str, str, "str | None", str, str, str, "str | None", float]
# Its answer: (token, conv, seq, ts, status), status as `Storage.append_records` lists them.
RecordOutcome = tuple[int, int, int, float, str]

log = logging.getLogger("kefu.storage")


class StorageError(Exception):
    """Storage failed; nothing was stored. The caller answers `unavailable` (retry later)."""


class NotFound(StorageError):
    """The referenced row does not exist."""


class Conflict(StorageError):
    """A uniqueness rule was violated (e.g. a username that already exists)."""


@dataclass(frozen=True, slots=True)
class Site:
    id: int
    key: str  # public site key used by the widget (`data-site`)
    name: str
    allowed_origins: tuple[str, ...]  # exact scheme://host[:port] matches; empty = no browser origin allowed
    routing: dict[str, Any] = field(default_factory=dict)  # per-site routing weights/knobs (JSON)


@dataclass(frozen=True, slots=True)
class Visitor:
    id: str
    site_id: int
    name: str | None
    lang: str | None
    geo: tuple[float, float] | None  # (lat, lon)
    tags: tuple[str, ...]
    last_agent_id: str | None  # sticky routing for returning visitors


@dataclass(frozen=True, slots=True)
class Agent:
    id: str
    site_id: int
    username: str
    password_hash: str  # argon2id PHC string
    name: str
    role: Literal["agent", "admin"]
    teams: tuple[str, ...]
    skills: dict[str, float]  # skill path ("billing/refund/card") -> proficiency 0..1
    capacity: int  # max concurrent conversations
    languages: tuple[str, ...]
    geo: tuple[float, float] | None
    disabled: bool = False
    token_gen: int = 0  # bumped by disable, role or password change and logout: older tokens stop working


@dataclass(frozen=True, slots=True)
class Conversation:
    id: int
    site_id: int
    visitor_id: str
    state: ConversationState
    agent_id: str | None
    team: str | None
    last_seq: int
    created_at: float  # unix seconds
    closed_at: float | None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StoredMessage:
    conv: int
    seq: int
    cmid: str
    sender_id: str
    sender_role: Role
    sender_name: str | None
    text: str
    kind: str  # text | image | file
    meta: dict[str, Any]
    ts: float  # unix seconds, assigned at store time


@dataclass(frozen=True, slots=True)
class CannedReply:
    """A prepared answer agents insert into a chat; `shortcut` is unique per site ("/refund")."""

    id: int
    site_id: int
    shortcut: str
    text: str
    updated_at: float  # unix seconds


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to store; `cmid` is the client's idempotency key (unique per sender and conversation)."""

    conv: int
    cmid: str
    sender_id: str
    sender_role: Role
    sender_name: str | None
    text: str
    kind: str = "text"
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AppendResult:
    seq: int
    ts: float
    created: bool  # False when (conv, sender, cmid) already existed: seq/ts are the original ones


class Storage(abc.ABC):
    """What the server needs from a database. One instance per server process."""

    # Called with (requests in the batch, seconds the COMMIT took) after each group commit, from the
    # writer's thread; the server points it at its metrics. Stores without batching leave it unused.
    commit_observer: Callable[[int, float], None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------------
    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, create/migrate the schema, verify durability settings (refuse unsafe ones)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush pending commits, then release connections/threads."""

    @abc.abstractmethod
    async def epoch(self) -> str:
        """Random id fixed when the database was created; changes on restore to a different database."""

    @abc.abstractmethod
    async def healthy(self) -> bool:
        """True when a write+read round trip succeeds now."""

    # --- sites -------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_site(self, name: str, allowed_origins: tuple[str, ...], key: str | None = None) -> Site:
        """Create a site; `key` is generated (url-safe random) when None. Conflict if the key exists."""

    @abc.abstractmethod
    async def get_site_by_key(self, key: str) -> Site | None: ...

    @abc.abstractmethod
    async def get_site(self, site_id: int) -> Site | None: ...

    @abc.abstractmethod
    async def list_sites(self) -> list[Site]: ...

    @abc.abstractmethod
    async def update_site(
        self, site_id: int, *, allowed_origins: tuple[str, ...] | None = None,
        routing: dict[str, Any] | None = None,
    ) -> Site: ...

    # --- visitors ----------------------------------------------------------------------------------
    @abc.abstractmethod
    async def upsert_visitor(
        self, site_id: int, visitor_id: str | None, *, name: str | None, lang: str | None,
        geo: tuple[float, float] | None, tags: tuple[str, ...], secret_hash: str | None = None,
        new_secret_hash: str | None = None,
    ) -> Visitor:
        """Return the visitor with this id on this site whose stored secret hash equals `secret_hash`
        (updating given profile fields), or create one bound to `new_secret_hash`.

        An id that is unknown, malformed, belongs to another site, or comes without the matching
        secret hash yields a NEW visitor with a fresh id (never another visitor): a visitor id alone
        is not a credential."""

    @abc.abstractmethod
    async def get_visitor(self, visitor_id: str) -> Visitor | None: ...

    @abc.abstractmethod
    async def set_visitor_last_agent(self, visitor_id: str, agent_id: str) -> None: ...

    # --- agents ------------------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_agent(
        self, site_id: int, username: str, password_hash: str, *, name: str,
        role: Literal["agent", "admin"] = "agent", teams: tuple[str, ...] = (),
        skills: dict[str, float] | None = None, capacity: int = 5, languages: tuple[str, ...] = (),
        geo: tuple[float, float] | None = None,
    ) -> Agent:
        """Conflict when the username exists (usernames are unique across the installation)."""

    @abc.abstractmethod
    async def get_agent(self, agent_id: str) -> Agent | None: ...

    @abc.abstractmethod
    async def get_agent_by_username(self, username: str) -> Agent | None: ...

    @abc.abstractmethod
    async def list_agents(self, site_id: int) -> list[Agent]: ...

    @abc.abstractmethod
    async def update_agent(self, agent_id: str, **fields: Any) -> Agent:
        """Update any of: password_hash, name, role, teams, skills, capacity, languages, geo, disabled.
        `bump_token_gen=True` also increments `token_gen` in the same statement (revokes tokens)."""

    # --- conversations -----------------------------------------------------------------------------
    @abc.abstractmethod
    async def open_conversation(
        self, site_id: int, visitor_id: str, tags: tuple[str, ...] = (),
    ) -> tuple[Conversation, bool]:
        """Atomically return the visitor's open (not closed) conversation, or create one in state
        "queued". Returns (conversation, created). Concurrent calls for one visitor create at most one."""

    @abc.abstractmethod
    async def get_conversation(self, conv_id: int) -> Conversation | None: ...

    @abc.abstractmethod
    async def set_conversation_state(
        self, conv_id: int, state: ConversationState, agent_id: str | None, *, team: str | None = None,
    ) -> Conversation:
        """Set state and assignee (closed_at is set when state becomes "closed")."""

    @abc.abstractmethod
    async def list_conversations(
        self, *, site_id: int | None = None, visitor_id: str | None = None, agent_id: str | None = None,
        states: tuple[ConversationState, ...] | None = None, limit: int = 200,
    ) -> list[Conversation]:
        """Filter by any combination; newest first."""

    # --- messages ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def submit_message(self, msg: NewMessage) -> asyncio.Future[AppendResult]:
        """Queue one message for storing and return the future of its `AppendResult`: the next `seq`
        of its conversation, assigned in the storing transaction, or the original seq when
        (conv, sender_id, cmid) exists. The future resolves only after a durable commit; many
        messages share one transaction (group commit). It fails with NotFound for an unknown
        conversation and StorageError when nothing could be stored.

        Called on the event loop; raises at once (ValueError) for values no database stores and
        (StorageError) when storage is closed or overloaded. The server's hot path uses this form to
        attach a callback instead of running a task per message."""

    async def append_message(self, msg: NewMessage) -> AppendResult:
        """`submit_message`, awaited."""
        return await self.submit_message(msg)

    async def append_records(self, records: list[MessageRecord]) -> list[RecordOutcome]:
        """Store a batch of the native data plane's records (`DataPlane.take_records`) and return one
        `(token, conv, seq, ts, status)` per record, in order; status is "created", "duplicate",
        "not_found", "conflict" (closed conversation) or "failed" (nothing stored; the sender may
        retry). The same rules as `submit_message`. This default stores them one `submit_message`
        each; a backend with a batch statement overrides it (PostgreSQL: one round trip)."""
        futures: list[asyncio.Future[AppendResult] | str] = []
        for _token, conv, sender_id, role, name, cmid, kind, text, meta_json, _ts in records:
            message = NewMessage(conv=conv, cmid=cmid, sender_id=sender_id, sender_role=role,  # type: ignore[arg-type]
                                 sender_name=name, text=text, kind=kind,
                                 meta=json.loads(meta_json) if meta_json else {})
            try:
                futures.append(self.submit_message(message))
            except NotFound:
                futures.append("not_found")
            except (ValueError, StorageError):  # nothing stored: the sender gets `unavailable`
                futures.append("failed")
        outcomes: list[RecordOutcome] = []
        for (token, conv, *_rest), future in zip(records, futures, strict=True):
            if isinstance(future, str):
                outcomes.append((token, conv, 0, 0.0, future))
                continue
            try:
                result = await future
            except NotFound:
                outcomes.append((token, conv, 0, 0.0, "not_found"))
            except Conflict:
                outcomes.append((token, conv, 0, 0.0, "conflict"))
            except Exception:  # whatever failed, nothing was stored: the sender retries
                log.exception("storing a message failed")
                outcomes.append((token, conv, 0, 0.0, "failed"))
            else:
                outcomes.append((token, conv, result.seq, result.ts, "created" if result.created else "duplicate"))
        return outcomes

    @abc.abstractmethod
    async def messages_after(self, conv_id: int, after_seq: int, limit: int) -> list[StoredMessage]:
        """Messages with seq > after_seq in seq order, at most `limit`."""

    @abc.abstractmethod
    async def set_read_mark(self, conv_id: int, participant_id: str, seq: int) -> int:
        """Raise the participant's read watermark to max(current, seq); returns the new watermark."""

    @abc.abstractmethod
    async def set_read_marks(self, marks: Sequence[tuple[int, str, int]]) -> None:
        """`set_read_mark` for each (conv, participant, seq) in one write; conversations that no
        longer exist are skipped (the data plane's write-behind batch)."""

    # --- routing audit -----------------------------------------------------------------------------
    @abc.abstractmethod
    async def record_routing_decision(self, conv_id: int, decision: dict[str, Any]) -> int:
        """Store an explainable routing decision (factor scores, exclusions); returns its id."""

    @abc.abstractmethod
    async def routing_decisions(self, conv_id: int) -> list[dict[str, Any]]:
        """Every decision recorded for the conversation, oldest first (each dict has 'id' and 'ts')."""

    # --- canned replies ----------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_canned_reply(self, site_id: int, shortcut: str, text: str) -> CannedReply:
        """Conflict when the site already has this shortcut."""

    @abc.abstractmethod
    async def get_canned_reply(self, reply_id: int) -> CannedReply | None: ...

    @abc.abstractmethod
    async def list_canned_replies(self, site_id: int, query: str | None = None, limit: int = 200) -> list[CannedReply]:
        """The site's replies ordered by shortcut; `query` keeps those whose shortcut or text contains
        it (case-insensitive for ASCII letters)."""

    @abc.abstractmethod
    async def update_canned_reply(self, reply_id: int, *, shortcut: str | None = None,
                                  text: str | None = None) -> CannedReply:
        """NotFound for an unknown id; Conflict when the new shortcut is taken on the site."""

    @abc.abstractmethod
    async def delete_canned_reply(self, reply_id: int) -> bool:
        """True when a reply was deleted."""
