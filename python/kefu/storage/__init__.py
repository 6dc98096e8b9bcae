"""Storage: the source of truth for delivery. `open_storage(url)` picks the backend from a URL.

URLs:
- `sqlite:///data/kefu.db` (relative path), `sqlite:////var/lib/kefu/kefu.db` (absolute path), or a
  bare path; `?synchronous=NORMAL` trades power-loss durability for latency (FULL is the default).
- `postgresql://user@host:5432/db` or `postgres://…`; every query parameter asyncpg understands
  (e.g. `?search_path=kefu` to put the tables in schema kefu) is passed through.
The backend modules are imported on demand, so the SQLite path never imports asyncpg.
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

from kefu.storage.base import (
    Agent,
    AppendResult,
    CannedReply,
    Conflict,
    Conversation,
    ConversationState,
    NewMessage,
    NotFound,
    Role,
    Site,
    Storage,
    StorageError,
    StoredMessage,
    Visitor,
)

__all__ = [
    "Agent", "AppendResult", "CannedReply", "Conflict", "Conversation", "ConversationState", "NewMessage", "NotFound",
    "Role", "Site", "Storage", "StorageError", "StoredMessage", "Visitor", "open_storage",
]


def open_storage(url: str) -> Storage:
    """Build (not open) the backend for `url`; the caller awaits `open()`. ValueError for a bad URL."""
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme in ("postgresql", "postgres"):
        from kefu.storage.postgres import PostgresStorage

        return PostgresStorage(url)
    if scheme == "sqlite" and rest:
        parts = urlsplit(url)
        if parts.netloc:
            raise ValueError(f"sqlite URL with a host is not supported: {url!r} (use sqlite:///path)")
        path = unquote(parts.path[1:])  # "sqlite:///a.db" -> "a.db", "sqlite:////abs/a.db" -> "/abs/a.db"
        options = {key: values[-1] for key, values in parse_qs(parts.query, strict_parsing=False).items()}
        unknown = set(options) - {"synchronous"}
        if unknown:
            raise ValueError(f"unknown sqlite URL options {sorted(unknown)}")
        if not path:
            raise ValueError(f"sqlite URL without a path: {url!r}")
        from kefu.storage.sqlite import SqliteStorage

        return SqliteStorage(path, synchronous=options.get("synchronous", "FULL").upper())  # type: ignore[arg-type]
    if "://" in url:
        raise ValueError(f"unsupported storage URL scheme {scheme!r}")
    from kefu.storage.sqlite import SqliteStorage

    return SqliteStorage(url)
