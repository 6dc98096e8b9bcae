"""Identity: the signing secret, short-lived signed tokens, agent passwords, login throttling.

Tokens are ``v1.<payload>.<signature>``: base64url JSON claims and an HMAC-SHA256 over them with the
installation's secret. There is one algorithm and no header to negotiate, so the JWT `alg` confusions
(RFC 8725) cannot arise. Identity in a connection always comes from its token, never from frames.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

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
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret.hex())
    return secret


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is on the other end of a request or connection, as the token says."""

    id: str
    role: Role
    site_id: int
    name: str | None = None
    expires_at: float = 0.0

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
                                  name=claims.get("name"), expires_at=expires)
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
    """Counts failed logins per key (username and client address) in a sliding window;
    a key over the limit is refused until its oldest failure leaves the window."""

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
