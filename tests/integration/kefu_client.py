"""Test-side helpers: a Kefu server in a subprocess and an independent protocol client.

The client is built on the `websockets` library and encodes binary frames with the pure-Python
reference codec, so it shares no code path with the server's Cython gateway or native codec.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import websockets
from kefu.reference import codec as reference_codec
from websockets.asyncio.client import ClientConnection

BOOT_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    http_port: int = 0
    ws_port: int = 0
    proc: subprocess.Popen[str] | None = None
    site_key: str = ""
    admin_password: str = ""
    output: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)  # extra `kefu serve` flags; later ones win

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> ServerProcess:
        self.http_port = self.http_port or free_port()
        self.ws_port = self.ws_port or free_port()
        env = dict(os.environ, PYTHONUNBUFFERED="1", **self.env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kefu.cli", "--data-dir", str(self.data_dir), "serve", "--dev",
             "--http-port", str(self.http_port), "--ws-port", str(self.ws_port), "--log-level", "WARNING", *self.args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("server exited during start:\n" + "".join(self.output))
            self.output.append(line)
            if match := re.search(r"site key : (\S+)", line):
                self.site_key = match.group(1)
            if match := re.search(r"username 'admin', password '([^']+)'", line):
                self.admin_password = match.group(1)
            if match := re.search(r"username 'admin', password in (\S+) ", line):  # not a terminal: a file
                self.admin_password = Path(match.group(1)).read_text().strip()
            if line.startswith("KEFU READY "):
                # Keep draining output so the server never blocks on a full pipe.
                threading.Thread(target=self._pump, daemon=True).start()
                return self
        raise RuntimeError("server did not become ready:\n" + "".join(self.output))

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class Api:
    """The HTTP API as a client sees it."""

    # visitor id → the secret issued with it, as a browser keeps it in localStorage (shared by all
    # Api objects of the test run, like one browser per visitor).
    visitor_secrets: ClassVar[dict[str, str]] = {}

    def __init__(self, server: ServerProcess) -> None:
        self.server = server

    async def request(self, method: str, path: str, *, token: str | None = None,
                      body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        all_headers = dict(headers or {})
        if token:
            all_headers["Authorization"] = f"Bearer {token}"
        async with aiohttp.ClientSession() as session:
            async with session.request(method, self.server.http + path, json=body, headers=all_headers) as response:
                text = await response.text()
                try:
                    return response.status, json.loads(text)
                except ValueError:
                    return response.status, text

    async def visitor(self, visitor_id: str | None = None, **extra: Any) -> dict[str, Any]:
        body = {"site": self.server.site_key, **extra}
        if visitor_id:
            body["visitor_id"] = visitor_id
            if visitor_id in self.visitor_secrets and "visitor_secret" not in extra:
                body["visitor_secret"] = self.visitor_secrets[visitor_id]
        status, data = await self.request("POST", "/api/v1/visitor/session", body=body)
        assert status == 200, data
        self.visitor_secrets[data["visitor_id"]] = data["visitor_secret"]
        return data

    async def login(self, username: str, password: str) -> dict[str, Any]:
        status, data = await self.request("POST", "/api/v1/auth/login",
                                          body={"username": username, "password": password})
        assert status == 200, data
        return data

    async def admin(self) -> dict[str, Any]:
        return await self.login("admin", self.server.admin_password)

    async def create_agent(self, admin_token: str, username: str, **fields: Any) -> dict[str, Any]:
        status, data = await self.request("POST", "/api/v1/admin/agents", token=admin_token,
                                          body={"username": username, "password": "password-" + username, **fields})
        assert status == 201, data
        return dict(await self.login(username, "password-" + username), username=username)


class Client:
    """One protocol connection. Frames are dicts; binary frames go through the reference codec."""

    def __init__(self, ws: ClientConnection, binary: bool) -> None:
        self.ws = ws
        self.binary = binary
        self.seen: list[dict[str, Any]] = []
        self.backlog: list[dict[str, Any]] = []  # frames skipped by expect(), searched by the next ones

    @classmethod
    async def connect(cls, session: dict[str, Any], *, binary: bool = False, hello: bool = True,
                      resume: dict[int, int] | None = None, origin: str | None = None) -> Client:
        protocol = "kefu.bin.v1" if binary else "kefu.json.v1"
        ws = await websockets.connect(f"{session['ws_url']}?token={session['token']}",
                                      subprotocols=[protocol], origin=origin, max_size=2**22,
                                      open_timeout=10, ping_interval=None)
        assert ws.subprotocol == protocol
        client = cls(ws, binary)
        if hello:
            frame: dict[str, Any] = {"t": "hello"}
            if resume:
                frame["resume"] = {str(k): v for k, v in resume.items()}
            await client.send(frame)
            welcome = await client.expect("welcome")
            client.welcome = welcome
        return client

    async def send(self, frame: dict[str, Any]) -> None:
        if self.binary:
            await self.ws.send(reference_codec.encode_frame(frame))
        else:
            await self.ws.send(json.dumps(frame))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        if self.binary:
            assert isinstance(raw, bytes), "kefu.bin.v1 must carry binary frames"
            frame = reference_codec.decode_frame(raw)
        else:
            assert isinstance(raw, str), "kefu.json.v1 must carry text frames"
            frame = json.loads(raw)
        self.seen.append(frame)
        return frame

    async def expect(self, kind: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
        """First frame of type `kind` with the given fields, from the backlog of frames skipped
        earlier or from the wire; frames skipped now go to the backlog."""
        def matches(frame: dict[str, Any]) -> bool:
            return frame["t"] == kind and all(frame.get(k) == v for k, v in match.items())

        for index, frame in enumerate(self.backlog):
            if matches(frame):
                return self.backlog.pop(index)
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.recv(max(0.01, deadline - time.monotonic()))
            if matches(frame):
                return frame
            self.backlog.append(frame)

    async def quiet(self, seconds: float = 0.3) -> list[dict[str, Any]]:
        """The backlog plus every frame that arrives within `seconds`."""
        frames, self.backlog = self.backlog, []
        try:
            while True:
                frames.append(await self.recv(seconds))
        except TimeoutError:
            return frames

    async def close(self) -> None:
        await self.ws.close()
