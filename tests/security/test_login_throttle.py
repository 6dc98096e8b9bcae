"""Issue 8, items 3 and 4: login attempts are counted before the password is hashed, per account and
per real client address; `X-Forwarded-For` names the client only when the connection comes from a
configured trusted proxy (right-most untrusted hop)."""

from __future__ import annotations

import asyncio
import uuid

from kefu.http.client_address import ClientAddress
from kefu_client import Api
from sec_tools import start
from test_delivery import agent_session


async def login_status(api: Api, username: str, password: str, forwarded_for: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else None
    status, _ = await api.request("POST", "/api/v1/auth/login", body={"username": username, "password": password},
                                  headers=headers)
    return status


async def test_concurrent_wrong_passwords_are_counted_before_hashing(api: Api) -> None:
    login = await agent_session(api)
    statuses = await asyncio.gather(*(login_status(api, login["username"], f"wrong-{i}") for i in range(40)))
    assert statuses.count(401) == 5 and statuses.count(429) == 35, statuses


def test_client_address_believes_only_trusted_proxies() -> None:
    none_trusted = ClientAddress([])
    assert none_trusted.of("203.0.113.9", "1.2.3.4") == "203.0.113.9"
    proxied = ClientAddress(["127.0.0.1", "10.0.0.0/8"])
    assert proxied.of("127.0.0.1", "198.51.100.7") == "198.51.100.7"
    assert proxied.of("127.0.0.1", "6.6.6.6, 198.51.100.7, 10.1.2.3") == "198.51.100.7"  # right-most untrusted
    assert proxied.of("203.0.113.9", "198.51.100.7") == "203.0.113.9"  # not from a proxy: header ignored
    assert proxied.of("::ffff:127.0.0.1", "198.51.100.7") == "198.51.100.7"
    assert proxied.of("127.0.0.1", None) == "127.0.0.1"
    assert proxied.of("127.0.0.1", "10.0.0.1, 10.0.0.2") == "10.0.0.1"  # all trusted: the first hop


async def test_spoofed_forwarded_for_does_not_escape_the_address_throttle(tmp_path_factory) -> None:
    """No trusted proxy configured (the default): X-Forwarded-For is ignored, so varying it does not
    give an attacker fresh addresses."""
    proc = start(tmp_path_factory)
    try:
        api = Api(proc)
        for i in range(30):
            assert await login_status(api, f"ghost{i}-{uuid.uuid4().hex[:6]}", "x", f"198.51.100.{i}") == 401
        assert await login_status(api, f"ghost-{uuid.uuid4().hex[:6]}", "x", "198.51.100.250") == 429
    finally:
        proc.stop()


async def test_behind_a_trusted_proxy_one_client_cannot_lock_out_the_others(tmp_path_factory) -> None:
    proc = start(tmp_path_factory, KEFU_TRUSTED_PROXIES="127.0.0.1")
    try:
        api = Api(proc)
        login = await agent_session(api)
        attacker = "198.51.100.66"
        for i in range(30):  # spoofed left-most hops do not help: the proxy's own hop counts
            assert await login_status(api, f"ghost{i}", "x", f"6.6.6.{i}, {attacker}") == 401
        assert await login_status(api, "ghost-final", "x", f"7.7.7.7, {attacker}") == 429
        # Another client behind the same proxy still logs in.
        assert await login_status(api, login["username"], "password-" + login["username"], "203.0.113.5") == 200
    finally:
        proc.stop()
