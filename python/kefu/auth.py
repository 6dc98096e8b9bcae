"""Identity: the signing secret, short-lived signed tokens, agent passwords, login throttling, and
the check of agent tokens against the agent's current state.

Tokens are ``v1.<payload>.<signature>``: base64url JSON claims and an HMAC-SHA256 over them with the
installation's secret. There is one algorithm and no header to negotiate, so the JWT `alg` confusions
(RFC 8725) cannot arise. Identity in a connection always comes from its token, never from frames.

A signature proves only that the server issued the token. Agent tokens also carry the agent's token
generation (`gen`); disabling the agent, changing its role or password, and logging out bump the
generation stored with the agent, so every older token stops working (`AgentStateCache`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

Role = Literal["visitor", "agent", "admin"]

# Values that appear in docs and examples. They must never sign production tokens.
SAMPLE_SECRETS = frozenset({"change-me", "changeme", "secret", "kefu-dev-secret", "your_strong_password"})
MIN_SECRET_LEN = 32


class InsecureSecret(RuntimeError):
    """The configured secret is a sample or too short, and dev mode is off."""


def load_or_create_secret(data_dir: Path, configured: str | None, *, dev: bool) -> bytes:
    """Return the signing secret: the configured one (checked), else the one kept in
    ``data_dir/secret.key``, generated with 256 random bits on first start (mode 0600)."""
    if configured is not None:
        if not dev and (configured in SAMPLE_SECRETS or len(configured) < MIN_SECRET_LEN):
            raise InsecureSecret(
                f"KEFU_SECRET is a sample value or shorter than {MIN_SECRET_LEN} characters; "
                "set a random secret or unset it to let Kefu generate one (or use --dev)")
        return configured.encode()
    path = data_dir / "secret.key"
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    ensure_private_dir(data_dir)
    secret = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret.hex())
    return secret


def ensure_private_dir(path: Path) -> None:
    """Create `path` (and parents) readable by this user only; tighten it if it exists with wider
    permissions. The data directory holds the signing secret, the database and its WAL."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o700)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is on the other end of a request or connection, as the token says."""

    id: str
    role: Role
    site_id: int
    name: str | None = None
    expires_at: float = 0.0
    gen: int = 0  # agents: the token generation it was issued under (see AgentStateCache)
    addr: str | None = None  # visitors: the client address that created the session (admission limits)

    @property
    def is_staff(self) -> bool:
        return self.role in ("agent", "admin")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Issues and verifies tokens. Verification is constant-time and checks expiry."""

    MAX_TOKEN_LEN = 1024

    def __init__(self, secret: bytes, *, leeway_s: float = 5.0) -> None:
        self._key = hashlib.sha256(b"kefu-token-v1\x00" + secret).digest()
        self._leeway = leeway_s

    def issue(self, principal: Principal, ttl_s: float, *, now: float | None = None) -> tuple[str, float]:
        issued = time.time() if now is None else now
        expires = issued + ttl_s
        claims = {"sub": principal.id, "role": principal.role, "site": principal.site_id,
                  "iat": int(issued), "exp": int(expires)}
        if principal.name:
            claims["name"] = principal.name
        if principal.role != "visitor":
            claims["gen"] = principal.gen
        if principal.addr:
            claims["addr"] = principal.addr
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signature = _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())
        return f"v1.{payload}.{signature}", float(int(expires))

    def verify(self, token: str | None, *, now: float | None = None) -> Principal | None:
        """The token's principal, or None for anything malformed, forged or expired."""
        if not token or len(token) > self.MAX_TOKEN_LEN:
            return None
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != "v1":
            return None
        expected = _b64(hmac.new(self._key, parts[1].encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, parts[2]):
            return None
        try:
            claims = json.loads(_unb64(parts[1]))
            expires = float(claims["exp"])
            principal = Principal(id=str(claims["sub"]), role=claims["role"], site_id=int(claims["site"]),
                                  name=claims.get("name"), expires_at=expires, gen=int(claims.get("gen", 0)),
                                  addr=claims.get("addr"))
        except (ValueError, KeyError, TypeError):
            return None
        if principal.role not in ("visitor", "agent", "admin"):
            return None
        if (time.time() if now is None else now) > expires + self._leeway:
            return None
        return principal


# OWASP password storage minimum for argon2id: m = 19 MiB, t = 2, p = 1.
_hasher = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)



@functools.cache
def _dummy_hash() -> str:
    """A real hash to verify against when the username does not exist, so timing does not reveal
    it. Made on first use: hashing costs ~70 ms, which start-up should not pay."""
    return _hasher.hash(secrets.token_hex(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


class LoginThrottle:
    """Counts login attempts per key (username or client address) in a sliding window; a key over
    the limit is refused until its oldest attempt leaves the window.

    An attempt is counted *before* the password is hashed (`failed` right after `retry_after`), so
    concurrent guesses cannot all reach the hash before the first one is counted; a successful login
    then `succeeded` (account: forget its failures) or `released` (address: withdraw this one)."""

    def __init__(self, max_failures: int = 5, window_s: float = 60.0, max_keys: int = 100_000) -> None:
        self._max = max_failures
        self._window = window_s
        self._max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until `key` may try again; 0 when it may try now."""
        failures = self._failures.get(key)
        if not failures:
            return 0.0
        while failures and failures[0] <= now - self._window:
            failures.popleft()
        if len(failures) < self._max:
            return 0.0
        return failures[0] + self._window - now

    def failed(self, key: str, now: float) -> None:
        if key not in self._failures and len(self._failures) >= self._max_keys:
            self._failures.pop(next(iter(self._failures)))  # bounded memory under a spray attack
        self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)

    def released(self, key: str, at: float) -> None:
        """Withdraw the attempt counted at `at` (it succeeded); other attempts of the key stay."""
        failures = self._failures.get(key)
        if failures is not None:
            try:
                failures.remove(at)
            except ValueError:
                pass


@dataclass(frozen=True, slots=True)
class AgentState:
    """What a token is checked against: the agent's current generation, role and status."""

    gen: int
    role: str
    disabled: bool
    site_id: int


class AgentStateCache:
    """Agents' current token state, cached so that checking every request and upgrade is cheap.

    `check` (async, authoritative within `ttl_s`) loads a missing or old entry from storage;
    `check_cached` answers from memory only (the WebSocket handshake cannot wait on the database)
    and returns None when it does not know. A change in this process calls `remember` with the new
    row; `invalidate(agent_id)` is the single entry point for changes made elsewhere (e.g. another
    worker, through the bus), and the TTL bounds how long a missed invalidation can matter."""

    def __init__(self, load: Callable[[str], Awaitable[Any]], *, ttl_s: float = 5.0,
                 max_entries: int = 100_000) -> None:
        """`load(agent_id)` returns the storage row (with token_gen, role, disabled, site_id) or None."""
        self._load = load
        self._ttl = ttl_s
        self._max = max_entries
        self._entries: dict[str, tuple[AgentState | None, float]] = {}

    @staticmethod
    def _valid(principal: Principal, state: AgentState | None) -> bool:
        return (state is not None and not state.disabled and state.gen == principal.gen
                and state.role == principal.role and state.site_id == principal.site_id)

    def check_cached(self, principal: Principal, now: float | None = None) -> bool | None:
        entry = self._entries.get(principal.id)
        if entry is None:
            return None
        if (time.monotonic() if now is None else now) - entry[1] > self._ttl:
            return None  # too old to decide either way (a newer token may postdate it)
        return self._valid(principal, entry[0])

    async def check(self, principal: Principal) -> bool:
        """True when `principal` (an agent or admin) still holds a valid token."""
        now = time.monotonic()
        entry = self._entries.get(principal.id)
        if entry is None or now - entry[1] > self._ttl:
            state = self._state_of(await self._load(principal.id))
            self._store(principal.id, state, now)
            return self._valid(principal, state)
        return self._valid(principal, entry[0])

    def remember(self, agent: Any) -> None:
        """The agent row just written by this process: the new truth, effective at once."""
        self._store(agent.id, self._state_of(agent), time.monotonic())

    def invalidate(self, agent_id: str) -> None:
        self._entries.pop(agent_id, None)

    def _store(self, agent_id: str, state: AgentState | None, now: float) -> None:
        if agent_id not in self._entries and len(self._entries) >= self._max:
            self._entries.pop(next(iter(self._entries)))
        self._entries[agent_id] = (state, now)

    @staticmethod
    def _state_of(agent: Any) -> AgentState | None:
        if agent is None:
            return None
        return AgentState(gen=agent.token_gen, role=agent.role, disabled=agent.disabled, site_id=agent.site_id)
