"""Tokens, secrets, passwords and the login throttle."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest
from kefu import auth
from kefu.auth import LoginThrottle, Principal, TokenSigner

VISITOR = Principal(id="v_abc", role="visitor", site_id=3, name="Ana")


def test_token_round_trip_and_expiry() -> None:
    signer = TokenSigner(b"k" * 32, leeway_s=0)
    token, expires = signer.issue(VISITOR, ttl_s=60, now=1000.0)
    assert expires == 1060.0
    principal = signer.verify(token, now=1059.0)
    assert principal is not None and (principal.id, principal.role, principal.site_id, principal.name) == (
        "v_abc", "visitor", 3, "Ana")
    assert signer.verify(token, now=1061.0) is None


@pytest.mark.parametrize("mutate", [
    lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # signature
    lambda t: t.replace("v1.", "v2.", 1),  # version
    lambda t: t + ".extra",
    lambda t: "",
    lambda t: "v1..",
    lambda t: "x" * 5000,
])
def test_tampered_tokens_are_rejected(mutate) -> None:
    signer = TokenSigner(b"k" * 32)
    token, _ = signer.issue(VISITOR, ttl_s=60)
    assert signer.verify(mutate(token)) is None


def test_claims_cannot_be_edited_without_the_key() -> None:
    signer = TokenSigner(b"k" * 32)
    token, _ = signer.issue(VISITOR, ttl_s=60)
    _, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["role"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert signer.verify(f"v1.{forged}.{signature}") is None
    assert TokenSigner(b"other" * 8).verify(token) is None


def test_secret_is_generated_once_with_private_permissions(tmp_path) -> None:
    first = auth.load_or_create_secret(tmp_path, None, dev=False)
    assert len(first) == 32
    assert auth.load_or_create_secret(tmp_path, None, dev=False) == first
    assert stat.S_IMODE(os.stat(tmp_path / "secret.key").st_mode) == 0o600


@pytest.mark.parametrize("secret", ["change-me", "short-secret"])
def test_sample_or_short_secrets_are_refused_outside_dev_mode(tmp_path, secret: str) -> None:
    with pytest.raises(auth.InsecureSecret):
        auth.load_or_create_secret(tmp_path, secret, dev=False)
    assert auth.load_or_create_secret(tmp_path, secret, dev=True) == secret.encode()


def test_passwords_use_argon2id_with_owasp_parameters() -> None:
    first, second = auth.hash_password("correct horse"), auth.hash_password("correct horse")
    assert first.startswith("$argon2id$v=19$m=19456,t=2,p=1$") and first != second
    assert auth.verify_password(first, "correct horse")
    assert not auth.verify_password(first, "wrong horse")
    assert not auth.verify_password(None, "anything")
    assert not auth.verify_password("not a hash", "anything")


def test_login_throttle_window() -> None:
    throttle = LoginThrottle(max_failures=3, window_s=10)
    for second in range(3):
        assert throttle.retry_after("ana", float(second)) == 0
        throttle.failed("ana", float(second))
    assert throttle.retry_after("ana", 3.0) == pytest.approx(7.0)
    assert throttle.retry_after("bob", 3.0) == 0
    assert throttle.retry_after("ana", 10.5) == 0  # the first failure left the window
    throttle.succeeded("ana")
    assert throttle.retry_after("ana", 4.0) == 0
