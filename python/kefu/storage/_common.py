"""What both storage backends share: id formats, argument checks and JSON column encoding.

Keeping these in one place is what makes the SQLite and PostgreSQL backends answer the same inputs the
same way (the contract tests run against both).
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any, Final

from kefu.storage.base import (
    Agent,
    CannedReply,
    Conversation,
    NewMessage,
    NotFound,
    Site,
    StorageError,
    StoredMessage,
    Visitor,
)

VISITOR_ID_PATTERN: Final = re.compile(r"v_[A-Za-z0-9_-]{22}\Z")
CONVERSATION_STATES: Final = frozenset({"queued", "assigned", "transferred", "closed"})
AGENT_ROLES: Final = frozenset({"agent", "admin"})
AGENT_UPDATABLE_FIELDS: Final = frozenset(
    {"password_hash", "name", "role", "teams", "skills", "capacity", "languages", "geo", "disabled",
     "bump_token_gen"}
)
# Upper bounds on list sizes: a caller's `limit` beyond them is served partially ("at most limit").
MAX_LIST_LIMIT: Final = 1_000
MAX_PAGE_LIMIT: Final = 10_000
MAX_ID: Final = 2**63 - 1  # both databases store ids as signed 64-bit integers


def new_visitor_id() -> str:
    """"v_" + 22 url-safe characters (128 random bits): unguessable, so a visitor id is a weak credential."""
    return "v_" + secrets.token_urlsafe(16)


def new_agent_id() -> str:
    return "a_" + secrets.token_urlsafe(16)


def new_site_key() -> str:
    """"s_" + 22 url-safe characters: the prefix keeps a key from starting with "-", which command
    lines would take for an option (`kefu admin create --site -x…`)."""
    return "s_" + secrets.token_urlsafe(16)


def new_epoch() -> str:
    """128 random bits, hex: identifies one database's history (a restore elsewhere gets another)."""
    return secrets.token_hex(16)


def dump_json(value: Any) -> str:
    """Compact JSON; NaN and ±Infinity raise ValueError (not JSON, and PostgreSQL's jsonb refuses them)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def load_json(text: str) -> Any:
    return json.loads(text)


def check_storable_message(msg: NewMessage) -> str:
    """Validate what the database must accept and return the encoded `meta`.

    Checked here, before the message joins a batch, because a value the driver cannot encode would
    otherwise fail the whole batch. PostgreSQL cannot store U+0000 in text or jsonb, so neither backend
    accepts it; lone surrogates (JSON allows "\\ud800") are not UTF-8. Either is a ValueError (bad
    input, never `unavailable`), the same answer from both backends."""
    if not 0 < msg.conv <= MAX_ID:
        raise NotFound(f"conversation {msg.conv}")
    meta_json = dump_json(msg.meta) if msg.meta else "{}"
    if not storable_fields((msg.cmid, msg.sender_id, msg.text, msg.kind, msg.sender_name or ""), meta_json):
        raise ValueError("message fields must be UTF-8 text without U+0000")
    return meta_json


def storable_fields(values: tuple[str, ...], meta_json: str) -> bool:
    """The text rules of `check_storable_message` for already-encoded fields (the native data plane's
    records): UTF-8 without U+0000, and no U+0000 escaped in the JSON of `meta`."""
    for value in (*values, meta_json):
        if "\x00" in value or (not value.isascii() and not _is_utf8_encodable(value)):
            return False
    return "\\u0000" not in meta_json


def _is_utf8_encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_state(state: str) -> None:
    if state not in CONVERSATION_STATES:
        raise ValueError(f"unknown conversation state {state!r}")


def check_role(role: str) -> None:
    if role not in AGENT_ROLES:
        raise ValueError(f"unknown agent role {role!r}")


def check_agent_fields(fields: dict[str, Any]) -> None:
    unknown = set(fields) - AGENT_UPDATABLE_FIELDS
    if unknown:
        raise ValueError(f"update_agent cannot change {sorted(unknown)}")
    if "role" in fields:
        check_role(fields["role"])


def agent_column_values(fields: dict[str, Any]) -> dict[str, Any]:
    """update_agent's fields as column values (JSON columns encoded, geo split into lat/lon);
    `bump_token_gen` is not a value (see `TOKEN_GEN_BUMP`)."""
    columns: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "bump_token_gen":
            continue
        if name in ("teams", "languages"):
            columns[name] = dump_json(list(value))
        elif name == "skills":
            columns[name] = dump_json(dict(value))
        elif name == "geo":
            columns["lat"], columns["lon"] = (None, None) if value is None else (float(value[0]), float(value[1]))
        elif name == "capacity":
            columns[name] = int(value)
        elif name == "disabled":
            columns[name] = bool(value)
        else:
            columns[name] = value
    return columns


# Appended to update_agent's SET list when `bump_token_gen` is true: one statement, so no window in
# which the change is visible and the old tokens still valid.
TOKEN_GEN_BUMP: Final = "token_gen = token_gen + 1"


def agent_set_clause(assignments: list[str], fields: dict[str, Any]) -> str:
    """The SET list of update_agent: the column assignments, plus the generation bump if asked."""
    if fields.get("bump_token_gen"):
        assignments = [*assignments, TOKEN_GEN_BUMP]
    return ", ".join(assignments) or "id = id"


def clamp_limit(limit: int, upper: int) -> int:
    return max(0, min(int(limit), upper))


def clamp_seq(seq: int) -> int:
    """A client's seq as the databases can compare it (a hostile 2^70 or -4 must not fail the query)."""
    return clamp_limit(seq, MAX_ID)


def storage_error(exc: BaseException) -> StorageError:
    """Wrap a driver error for the caller (each caller gets its own instance, never a shared one)."""
    return StorageError(f"{type(exc).__name__}: {exc}")


# --- rows -> records ------------------------------------------------------------------------------
# Both backends select these column lists in this order and keep JSON columns as JSON text, so one set
# of converters serves both (asyncpg hands jsonb over as text unless told otherwise).

SITE_COLUMNS: Final = "id, key, name, allowed_origins, routing"
VISITOR_COLUMNS: Final = "id, site_id, name, lang, lat, lon, tags, last_agent_id"
AGENT_COLUMNS: Final = (
    "id, site_id, username, password_hash, name, role, teams, skills, capacity, languages, lat, lon, disabled, "
    "token_gen"
)
CONVERSATION_COLUMNS: Final = "id, site_id, visitor_id, state, agent_id, team, last_seq, created_at, closed_at, tags"
MESSAGE_COLUMNS: Final = "conv, seq, cmid, sender_id, sender_role, sender_name, body, kind, meta, ts"


def _geo(lat: float | None, lon: float | None) -> tuple[float, float] | None:
    return None if lat is None or lon is None else (float(lat), float(lon))


CANNED_COLUMNS: Final = "id, site_id, shortcut, body, updated_at"


def canned_from_row(row: Any) -> CannedReply:
    return CannedReply(id=row[0], site_id=row[1], shortcut=row[2], text=row[3], updated_at=row[4])


def site_from_row(row: Any) -> Site:
    return Site(
        id=row[0], key=row[1], name=row[2], allowed_origins=tuple(load_json(row[3])), routing=load_json(row[4])
    )


def visitor_from_row(row: Any) -> Visitor:
    return Visitor(
        id=row[0], site_id=row[1], name=row[2], lang=row[3], geo=_geo(row[4], row[5]),
        tags=tuple(load_json(row[6])), last_agent_id=row[7],
    )


def agent_from_row(row: Any) -> Agent:
    return Agent(
        id=row[0], site_id=row[1], username=row[2], password_hash=row[3], name=row[4], role=row[5],
        teams=tuple(load_json(row[6])), skills=load_json(row[7]), capacity=row[8],
        languages=tuple(load_json(row[9])), geo=_geo(row[10], row[11]), disabled=bool(row[12]),
        token_gen=int(row[13]),
    )


def conversation_from_row(row: Any) -> Conversation:
    return Conversation(
        id=row[0], site_id=row[1], visitor_id=row[2], state=row[3], agent_id=row[4], team=row[5],
        last_seq=row[6], created_at=row[7], closed_at=row[8], tags=tuple(load_json(row[9])),
    )


def message_from_row(row: Any) -> StoredMessage:
    return StoredMessage(
        conv=row[0], seq=row[1], cmid=row[2], sender_id=row[3], sender_role=row[4], sender_name=row[5],
        text=row[6], kind=row[7], meta=load_json(row[8]), ts=row[9],
    )


def decision_from_row(row: Any) -> dict[str, Any]:
    """A routing decision as stored, with its 'id' and 'ts' (they win over same-named keys inside)."""
    decision = load_json(row[2])
    decision["id"] = row[0]
    decision["ts"] = row[1]
    return decision
