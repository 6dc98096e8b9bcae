"""Issue 8, items 6, 10 and 11 (HTTP side): slow clients are dropped, hostile bodies get a 4xx (never
a 500 or a traceback), and names the database or the wire could not carry are refused."""

from __future__ import annotations

import asyncio
import json
import socket

from kefu_client import Api
from sec_tools import post_raw, start, wait_closed


def raw_http(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if data:
        sock.sendall(data)
    return sock


async def test_slow_clients_are_dropped_after_the_header_and_body_deadlines(tmp_path_factory) -> None:
    proc = start(tmp_path_factory, KEFU_HTTP_HEADER_TIMEOUT_S="1", KEFU_HTTP_BODY_TIMEOUT_S="1")
    try:
        silent = raw_http(proc.http_port, b"")
        partial_head = raw_http(proc.http_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        partial_body = raw_http(proc.http_port, b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
                                                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"us")
        results = await asyncio.gather(*(asyncio.to_thread(wait_closed, s, 15)
                                         for s in (silent, partial_head)))
        assert all(r is not None for r in results), results  # dropped (1 s configured; 15 s allowed)
        partial_body.settimeout(15)
        answer = partial_body.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        for sock in (silent, partial_head, partial_body):
            sock.close()
        # A well-behaved client is served, and an idle keep-alive connection is also closed later.
        polite = raw_http(proc.http_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        polite.settimeout(5)
        assert polite.recv(4096).startswith(b"HTTP/1.1 200")
        assert await asyncio.to_thread(wait_closed, polite, 15) is not None
        polite.close()
        status, _ = await Api(proc).request("GET", "/healthz")
        assert status == 200
    finally:
        proc.stop()


async def test_hostile_bodies_get_4xx_without_tracebacks(api: Api) -> None:
    base = api.server.http
    site = api.server.site_key
    bodies = [
        b"[" * 50_000,  # nesting past the parser's recursion limit
        json.dumps({"site": site, "tags": [[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]}).encode(),
        json.dumps({"site": site, "geo": {"lat": int("9" * 400), "lon": 0}}).encode(),
        b'{"site": "%s", "geo": {"lat": NaN, "lon": 0}}' % site.encode(),
        b'{"site": "%s", "name": "\\ud800"}' % site.encode(),
        b'{"site": "%s", "name": "a\\u0000b"}' % site.encode(),
        b'{"site": "%s", "lang": "\\udfff"}' % site.encode(),
        b'{"site": "%s", "\\ud800": 1}' % site.encode(),
        '{"site": "x"}'.encode("utf-16"),
        b"\xff\xfe not utf-8",
    ]
    for body in bodies:
        status, answer = await post_raw(base, "/api/v1/visitor/session", body)
        assert status == 400 and answer["error"] == "bad_request", (body[:60], status, answer)
    for body in (b'{"username": "\\ud800", "password": "x"}', b'{"username": "a", "password": "\\udc00"}',
                 b'{"username": "a\\u0000", "password": "x"}'):
        status, answer = await post_raw(base, "/api/v1/auth/login", body)
        assert status == 400, (body, status, answer)
    admin = await api.admin()
    for body in (b'{"username": "n\\u0000", "password": "password1"}',
                 b'{"username": "ok-name", "password": "password1", "name": "\\ud800"}',
                 b'{"username": "ok-name", "password": "password1", "skills": {"\\ud800": 1}}',
                 b'{"username": "ok-name", "password": "password1", "geo": {"lat": 1e400, "lon": 0}}'):
        status, answer = await post_raw(base, "/api/v1/admin/agents", body,
                                        headers={"Authorization": f"Bearer {admin['token']}"})
        assert status == 400, (body, status, answer)
    # A body cut off mid-way (the client goes away): no 500, no traceback.
    sock = raw_http(api.server.http_port, b"POST /api/v1/visitor/session HTTP/1.1\r\nHost: x\r\n"
                                          b"Content-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"site\":")
    sock.close()
    await asyncio.sleep(0.5)
    status, _ = await api.request("GET", "/healthz")
    assert status == 200
    output = "".join(api.server.output)
    assert "Traceback" not in output and " 500 " not in output, output[-3000:]


async def test_names_the_wire_cannot_carry_are_refused(api: Api) -> None:
    """Item 11: a visitor name with U+0000 was accepted and then broke every message of that sender."""
    for name in ("a\u0000b", "\ud800x"):
        status, answer = await api.request("POST", "/api/v1/visitor/session",
                                           body={"site": api.server.site_key, "name": name})
        assert status == 400 and answer["error"] == "bad_request", (name, status, answer)
    status, _ = await api.request("POST", "/api/v1/visitor/session",
                                  body={"site": api.server.site_key, "name": "李雷 ✓"})
    assert status == 200
