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
  KEFU_DATAPLANE       native (default: send/typing in Rust) or python (the reference hub path)
  TLS_CERT, TLS_KEY    PEM certificate chain and key: serve https and wss (reloaded on SIGHUP)
  KEFU_TLS_DIR         directory searched for a certificate pair when TLS_CERT is unset (the image: /app/certs)
  KEFU_BEHIND_PROXY    1 = a TLS-terminating proxy is in front; KEFU_PUBLIC_WS_URL must then be set
  KEFU_LOG_FORMAT      json (default) or text; KEFU_LOG_LEVEL (default INFO); KEFU_LOG_FILE (default stderr)
  KEFU_SHUTDOWN_GRACE_S  seconds to drain in-flight work on SIGTERM                default 10
  KEFU_CONFIG          a TOML file with any of the fields below (env and flags override it; kefu/settings.py)
  REDIS_URL, REDIS_PASS, WORKERS  read now, used by the scale-out issues (REDIS_PASS alone is ignored)
  KEFU_RATE_PER_S, KEFU_RATE_BURST, KEFU_REPLAY_LIMIT, KEFU_MAX_PENDING_BYTES, KEFU_IDLE_TIMEOUT_S,
  KEFU_PONG_TIMEOUT_S, KEFU_ACCEPT_TIMEOUT_S, KEFU_AGENT_OFFLINE_GRACE_S   protocol limits (see below)
  KEFU_TRUSTED_PROXIES comma list of proxy IPs/CIDRs whose X-Forwarded-For is believed   default none
  KEFU_HTTP_HEADER_TIMEOUT_S, KEFU_HTTP_BODY_TIMEOUT_S   slow HTTP clients are dropped after these
  KEFU_SESSIONS_PER_MIN, KEFU_SITE_SESSIONS_PER_MIN, KEFU_OPENS_PER_MIN, KEFU_SOCKETS_PER_VISITOR,
  KEFU_SOCKETS_PER_ADDRESS, KEFU_SOCKETS_PER_SITE, KEFU_MAX_QUEUE   limits on anonymous visitors
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator, Mapping
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
    tls_dir: Path | None = None  # searched for a certificate pair when tls_cert is unset
    behind_proxy: bool = False  # a proxy terminates TLS; public_ws_url says what clients connect to
    log_format: str = "json"
    log_level: str = "INFO"
    log_file: str | None = None  # None: stderr (containers, systemd); a file is reopened when rotated
    shutdown_grace_s: float = 10.0
    dataplane: str = "native"  # "python": every frame through the hub (the reference path)

    # Tokens
    visitor_token_ttl_s: int = 2 * 3600
    agent_token_ttl_s: int = 12 * 3600

    # Wire limits (docs/protocol.md): text ≤ 8 KiB, cmid ≤ 64 chars; a whole frame ≤ max_message_size.
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

    # Client addresses and anonymous visitors (docs/protocol.md, "Limits on anonymous use").
    trusted_proxies: tuple[str, ...] = ()  # IPs/CIDRs; only these may say who the client is
    http_header_timeout_s: float = 10.0  # from connection (or previous response) to a complete request head
    http_body_timeout_s: float = 10.0  # to read a request body
    sessions_per_min: float = 30.0  # visitor sessions per client address
    site_sessions_per_min: float = 6000.0  # visitor sessions per site
    opens_per_min: float = 10.0  # new conversations per client address
    sockets_per_visitor: int = 8
    sockets_per_address: int = 64
    sockets_per_site: int = 20_000  # visitor sockets
    max_queue: int = 2000  # waiting conversations per site

    def storage_url(self) -> str:
        return self.db_url or f"sqlite:///{(self.data_dir / 'kefu.db').resolve()}"

    def ws_url(self, request_host: str | None = None) -> str:
        """The WebSocket address handed to clients. Listening on every interface (0.0.0.0, ::, as in
        the container image), the address clients reached the API by (`request_host`, the HTTP Host
        header) is the best guess for the WebSocket port's address too: it is only ever returned
        to the client that sent it. KEFU_PUBLIC_WS_URL overrides all of this."""
        if self.public_ws_url:
            return self.public_ws_url
        # Only advertise wss:// when this process serves TLS (tls_cert is resolved before serving).
        scheme = "wss" if self.tls_cert else "ws"
        host = self.host
        if host in _WILDCARD_HOSTS:
            host = _hostname(request_host) or ("127.0.0.1" if host == "0.0.0.0" else "::1")
        host = f"[{host}]" if ":" in host else host
        return f"{scheme}://{host}:{self.ws_port}/ws"

    def replace(self, **changes: Any) -> Config:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        return cls(**cls.env_values(env))

    @staticmethod
    def env_values(env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The fields the environment sets, and only those (a config file fills the rest)."""
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
            ("KEFU_HTTP_HEADER_TIMEOUT_S", "http_header_timeout_s", float),
            ("KEFU_HTTP_BODY_TIMEOUT_S", "http_body_timeout_s", float),
            ("KEFU_SESSIONS_PER_MIN", "sessions_per_min", float),
            ("KEFU_SITE_SESSIONS_PER_MIN", "site_sessions_per_min", float),
            ("KEFU_OPENS_PER_MIN", "opens_per_min", float),
            ("KEFU_SOCKETS_PER_VISITOR", "sockets_per_visitor", int),
            ("KEFU_SOCKETS_PER_ADDRESS", "sockets_per_address", int),
            ("KEFU_SOCKETS_PER_SITE", "sockets_per_site", int), ("KEFU_MAX_QUEUE", "max_queue", int),
            ("KEFU_DATAPLANE", "dataplane", str),
        ):
            if env.get(key):
                values[name] = kind(env[key])
        if env.get("KEFU_TRUSTED_PROXIES"):
            values["trusted_proxies"] = tuple(p.strip() for p in env["KEFU_TRUSTED_PROXIES"].split(",") if p.strip())
        if env.get("REDIS_URL"):
            values["redis_url"] = _redis_url_with_password(env["REDIS_URL"], env.get("REDIS_PASS"))
        # Operations (TLS, logs, shutdown).
        for key, name, kind in (
            ("KEFU_TLS_DIR", "tls_dir", Path), ("KEFU_LOG_FORMAT", "log_format", str),
            ("KEFU_LOG_LEVEL", "log_level", str), ("KEFU_LOG_FILE", "log_file", str),
            ("KEFU_SHUTDOWN_GRACE_S", "shutdown_grace_s", float),
        ):
            if env.get(key):
                values[name] = kind(env[key])
        for key, name in (("KEFU_DEV", "dev"), ("KEFU_SENTIMENT", "sentiment"), ("KEFU_BEHIND_PROXY", "behind_proxy")):
            if env.get(key):
                values[name] = _parse_bool(key, env[key])
        return values


class _EnvReader(Mapping[str, str]):
    """The environment, remembering the last variable read: a value that does not parse (int("x"))
    raises inside the table above, and the error can then name the variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.last = ""

    def __getitem__(self, key: str) -> str:
        self.last = key
        return self.env[key]

    def get(self, key: str, default: Any = None) -> Any:
        self.last = key
        return self.env.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.env)

    def __len__(self) -> int:
        return len(self.env)


def env_values(env: Mapping[str, str]) -> dict[str, Any]:
    """Config.env_values with a ConfigError naming the variable whose value does not parse."""
    reader = _EnvReader(env)
    try:
        return Config.env_values(reader)
    except ValueError as error:
        if isinstance(error, ConfigError):
            raise
        kind = "an integer" if "int()" in str(error) else "a number"
        raise ConfigError(f"{reader.last}: expected {kind}, got {reader.get(reader.last)!r}") from None


class ConfigError(ValueError):
    """A setting with a value Kefu cannot use; the message names the setting."""


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _parse_bool(key: str, raw: str) -> bool:
    if raw.lower() in _TRUE + _FALSE:
        return raw.lower() in _TRUE
    raise ConfigError(f"{key}: expected one of {'/'.join(_TRUE + _FALSE)}, got {raw!r}")


_WILDCARD_HOSTS = ("0.0.0.0", "::", "")
_HOST_HEADER = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]{1,253}))(?::\d{1,5})?$")


def _hostname(host_header: str | None) -> str | None:
    """The host part of a Host header, or None when it is absent or not a plain name or address."""
    match = _HOST_HEADER.match(host_header or "")
    return match and (match["v6"] or match["name"])


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
