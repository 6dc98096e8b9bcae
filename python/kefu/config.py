"""Server configuration: one frozen object, built from defaults, then environment, then CLI flags.

Environment variables (the names operators already know from the seed's Docker example are kept):
  KEFU_DATA_DIR        data directory (SQLite file, secret key)             default ./data
  DB_URL               storage URL: sqlite:///path or postgresql://…        default sqlite in the data dir
  DB_HOST, DB_PORT, DB_USER, DB_PASSWORD, DB_NAME   PostgreSQL pieces, used when DB_URL is unset
  KEFU_HOST            listen address                                       default 127.0.0.1
  KEFU_HTTP_PORT       HTTP API port                                        default 8080
  KEFU_WS_PORT         WebSocket port                                       default 8081
  KEFU_PUBLIC_WS_URL   ws_url handed to clients (behind a proxy)            default ws://HOST:WS_PORT/ws
  KEFU_SECRET          token signing secret (≥ 32 chars); generated in the data dir when unset
  KEFU_DEV             1 = dev mode (sample secrets allowed, relaxed origins for the demo site)
  KEFU_SQLITE_SYNC     FULL (default: survives power loss) or NORMAL (survives process crash)
  KEFU_SENTIMENT       0 = do not score visitors' messages (no mood-aware routing)
  WORKERS              gateway worker processes for `kefu serve` (default: the number of cores)
  KEFU_DATAPLANE       native (default: send/typing in Rust) or python (the reference hub path)
  REDIS_URL, REDIS_PASS, TLS_CERT, TLS_KEY  read now, used by the scale-out issues
  KEFU_RATE_PER_S, KEFU_RATE_BURST, KEFU_REPLAY_LIMIT, KEFU_MAX_PENDING_BYTES, KEFU_IDLE_TIMEOUT_S,
  KEFU_PONG_TIMEOUT_S, KEFU_ACCEPT_TIMEOUT_S, KEFU_AGENT_OFFLINE_GRACE_S   protocol limits (see below)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote


@dataclass(frozen=True, slots=True)
class Config:
    data_dir: Path = Path("data")
    db_url: str | None = None  # None: SQLite file in data_dir
    host: str = "127.0.0.1"
    http_port: int = 8080
    ws_port: int = 8081
    public_ws_url: str | None = None
    dev: bool = False
    secret: str | None = None  # None: generated once and kept in data_dir/secret.key
    sqlite_sync: str = "FULL"
    redis_url: str | None = None
    workers: int = 1
    tls_cert: str | None = None
    tls_key: str | None = None
    sentiment: bool = True  # score visitors' messages with the bundled model (mood-aware routing)
    dataplane: str = "native"  # "python": every frame through the hub (the reference path)

    # Tokens
    visitor_token_ttl_s: int = 2 * 3600
    agent_token_ttl_s: int = 12 * 3600

    # Wire limits (PROTOCOL.md): text ≤ 8 KiB, cmid ≤ 64 chars; a whole frame ≤ max_message_size.
    max_message_size: int = 64 * 1024
    max_text_bytes: int = 8 * 1024
    max_cmid_len: int = 64
    max_pending_bytes: int = 1 << 20  # per connection, beyond the transport's own high-water mark
    rate_per_s: float = 50.0  # frames per second per connection, sustained
    rate_burst: float = 100.0
    typing_interval_s: float = 1.0
    replay_limit: int = 500  # messages per conversation replayed on resume before `limited`
    handshake_timeout_s: float = 5.0
    idle_timeout_s: float = 45.0  # silence before the server pings
    pong_timeout_s: float = 15.0  # silence after that ping before the server disconnects
    agent_offline_grace_s: float = 15.0  # reconnect window before an agent counts as offline
    accept_timeout_s: float = 60.0  # assigned but not accepted → re-route

    def storage_url(self) -> str:
        return self.db_url or f"sqlite:///{(self.data_dir / 'kefu.db').resolve()}"

    def ws_url(self) -> str:
        if self.public_ws_url:
            return self.public_ws_url
        scheme = "wss" if self.tls_cert else "ws"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.ws_port}/ws"

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        if "KEFU_DATA_DIR" in env:
            values["data_dir"] = Path(env["KEFU_DATA_DIR"])
        db_url = env.get("DB_URL") or _postgres_url_from_parts(env)
        if db_url:
            values["db_url"] = db_url
        for key, name, kind in (
            ("KEFU_HOST", "host", str), ("KEFU_HTTP_PORT", "http_port", int),
            ("KEFU_WS_PORT", "ws_port", int), ("KEFU_PUBLIC_WS_URL", "public_ws_url", str),
            ("KEFU_SECRET", "secret", str), ("KEFU_SQLITE_SYNC", "sqlite_sync", str),
            ("WORKERS", "workers", int), ("TLS_CERT", "tls_cert", str), ("TLS_KEY", "tls_key", str),
            # Protocol limits, mostly for tests and capacity tuning.
            ("KEFU_RATE_PER_S", "rate_per_s", float), ("KEFU_RATE_BURST", "rate_burst", float),
            ("KEFU_REPLAY_LIMIT", "replay_limit", int), ("KEFU_MAX_PENDING_BYTES", "max_pending_bytes", int),
            ("KEFU_IDLE_TIMEOUT_S", "idle_timeout_s", float), ("KEFU_PONG_TIMEOUT_S", "pong_timeout_s", float),
            ("KEFU_ACCEPT_TIMEOUT_S", "accept_timeout_s", float),
            ("KEFU_AGENT_OFFLINE_GRACE_S", "agent_offline_grace_s", float),
            ("KEFU_DATAPLANE", "dataplane", str),
        ):
            if env.get(key):
                values[name] = kind(env[key])
        if env.get("REDIS_URL"):
            values["redis_url"] = _redis_url_with_password(env["REDIS_URL"], env.get("REDIS_PASS"))
        values["dev"] = env.get("KEFU_DEV", "") in ("1", "true", "yes")
        if env.get("KEFU_SENTIMENT", "") in ("0", "false", "no", "off"):
            values["sentiment"] = False
        return cls(**values)


def _postgres_url_from_parts(env: Mapping[str, str]) -> str | None:
    host = env.get("DB_HOST")
    if not host:
        return None
    user = quote(env.get("DB_USER", "postgres"), safe="")
    password = env.get("DB_PASSWORD")
    auth = f"{user}:{quote(password, safe='')}" if password else user
    return f"postgresql://{auth}@{host}:{env.get('DB_PORT', '5432')}/{env.get('DB_NAME', 'kefu')}"


def _redis_url_with_password(url: str, password: str | None) -> str:
    if not password or "@" in url.split("//", 1)[-1]:
        return url
    scheme, rest = url.split("//", 1)
    return f"{scheme}//:{quote(password, safe='')}@{rest}"
