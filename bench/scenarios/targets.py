"""The servers a scenario measures: Kefu and its peers, each started fresh, pinned, and measured.

Every target answers the same questions so a scenario never special-cases one:
`start()`, `stop()`, the connection lists the load generator opens (`chat_pairs`, `supervised`,
`idle`), the load generator flags its protocol needs, and CPU/memory of its whole process tree.

Peers speak the bench hub protocol (bench/peers/*: a connection joins `?room=R`; a message goes to
every member of its room, the sender included as its ack, and to room "*" watchers). Kefu speaks
docs/protocol.md: sessions and agents are created over HTTP and WebSocket first (with the `websockets`
library, a second client implementation), then the load generator reconnects with the tokens.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import psutil
from websockets.asyncio.client import ClientConnection, connect

from bench.loadgen.driver import BUILD_DIR, SpecLine, pin_prefix

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_DIR = BENCH_DIR.parent
SERVER_CPUS = "0"
HOST = "127.0.0.1"
KEFU_ORIGIN = "http://127.0.0.1"
BENCH_PASSWORD = "bench-password-0123456789"
READY_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def venv_python() -> str:
    return sys.executable


class ServerError(RuntimeError):
    """A target could not be started or set up."""


class Target(ABC):
    """One server under test."""

    name: str
    description: str
    loadgen_args: tuple[str, ...] = ()
    # Variants (2 cores, binary protocol, no fsync) only answer the chat scenario's questions.
    chat_only = False

    def __init__(self, cpus: str | None = SERVER_CPUS) -> None:
        self.cpus = cpus
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        self.ready_seconds = 0.0
        self.output: list[str] = []
        self.first_connection_seconds: float | None = None

    # ----- lifecycle -----

    @abstractmethod
    def command(self) -> tuple[list[str], dict[str, str]]:
        """The argv and extra environment that start the server on `self.port`."""

    @abstractmethod
    def ready_marker(self) -> str:
        """Prefix of the stdout line the server prints once it accepts connections."""

    def prepare(self) -> None:  # noqa: B027 - optional hook, most targets need nothing
        """Work done before the server starts (not part of its cold start)."""

    def start(self, probe_first_connection: bool = False) -> float:
        """Start the server pinned to `cpus`; return seconds from exec to its ready line.

        With `probe_first_connection`, a thread polls the WebSocket port from the moment of exec and
        `self.first_connection_seconds` says when a handshake was first answered.
        """
        self.prepare()
        self.port = self.port or free_port()
        argv, extra_env = self.command()
        env = {**os.environ, **extra_env}
        started = time.monotonic()
        self.process = subprocess.Popen([*pin_prefix(self.cpus), *argv], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, env=env, cwd=str(REPO_DIR),
                                        start_new_session=True)
        ready = threading.Event()
        marker = self.ready_marker()

        def pump() -> None:
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                if len(self.output) < 2000:
                    self.output.append(line.rstrip())
                if line.startswith(marker) and not ready.is_set():
                    self.on_ready_line(line.strip())
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        self.first_connection_seconds = None
        if probe_first_connection:
            def probe() -> None:
                while self.process is not None and self.process.poll() is None:
                    if time.monotonic() - started > READY_TIMEOUT:
                        return
                    if self.first_connection_probe():
                        self.first_connection_seconds = time.monotonic() - started
                        return
                    time.sleep(0.002)

            threading.Thread(target=probe, daemon=True).start()
        while not ready.wait(0.005):
            if self.process.poll() is not None:
                code, output = self.process.returncode, "\n".join(self.output[-15:])
                self.stop()
                raise ServerError(f"{self.name} exited with code {code}: {output}")
            if time.monotonic() - started > READY_TIMEOUT:
                self.stop()
                raise ServerError(f"{self.name} did not print {marker!r} within {READY_TIMEOUT:.0f} s")
        self.ready_seconds = time.monotonic() - started
        return self.ready_seconds

    def on_ready_line(self, line: str) -> None:  # noqa: B027 - optional hook, only Kefu announces URLs
        """Parse what the ready line announces (Kefu prints its URLs)."""

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait()
        self.process = None
        self.port = 0

    # ----- measurement -----

    def processes(self) -> list[psutil.Process]:
        if self.process is None:
            return []
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        total = 0.0
        for process in self.processes():
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                continue
        return total

    def cpu_wait_seconds(self) -> float:
        """Seconds the server's threads were runnable but waiting for a CPU (/proc/*/task/*/schedstat).

        On a shared machine this separates "the server was starved by other jobs" from "the server
        was idle or blocked (e.g. on fsync)" when it used less than a full core.
        """
        total_ns = 0
        for process in self.processes():
            task_dir = Path(f"/proc/{process.pid}/task")
            try:
                tasks = list(task_dir.iterdir())
            except OSError:
                continue
            for task in tasks:
                try:
                    total_ns += int((task / "schedstat").read_text().split()[1])
                except (OSError, IndexError, ValueError):
                    continue
        return total_ns / 1e9

    def rss_bytes(self) -> int:
        total = 0
        for process in self.processes():
            try:
                if process.name() == "taskset":
                    continue
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total

    # ----- connection lists -----

    @property
    def ws_host_port(self) -> tuple[str, int]:
        return HOST, self.port

    @abstractmethod
    def chat_pairs(self, pairs: int) -> list[SpecLine]:
        """2 x pairs senders, conversation partners on adjacent lines."""

    @abstractmethod
    def supervised(self, conversations: int) -> list[SpecLine]:
        """One receiver watching `conversations` conversations, then one sender per conversation."""

    @abstractmethod
    def idle(self, connections: int) -> list[SpecLine]:
        """Connections that only hold their socket open."""

    def first_connection_probe(self) -> bool:
        """True once a WebSocket handshake is answered (used by the cold-start scenario)."""
        host, port = self.ws_host_port
        try:
            with socket.create_connection((host, port), timeout=0.5) as probe:
                probe.sendall(self._probe_request().encode())
                return probe.recv(16).startswith(b"HTTP/1.1 ")
        except OSError:
            return False

    def _probe_request(self) -> str:
        return (f"GET /ws?room=probe HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


class PeerTarget(Target):
    """A minimal hub from bench/peers speaking the bench room protocol."""

    def ready_marker(self) -> str:
        return "PEER READY"

    def chat_pairs(self, pairs: int) -> list[SpecLine]:
        return [SpecLine("S", HOST, self.port, f"/ws?room=c{i}") for i in range(pairs) for _ in range(2)]

    def supervised(self, conversations: int) -> list[SpecLine]:
        lines = [SpecLine("R", HOST, self.port, "/ws?room=*")]
        return lines + [SpecLine("S", HOST, self.port, f"/ws?room=c{i}") for i in range(conversations)]

    def idle(self, connections: int) -> list[SpecLine]:
        return [SpecLine("R", HOST, self.port, f"/ws?room=i{i // 2}") for i in range(connections)]


class GoHub(PeerTarget):
    name = "go-hub"
    description = "Go gorilla/websocket chat-example hub (hub goroutine + read/write goroutine per client)"

    def prepare(self) -> None:
        build_go_hub()

    def command(self) -> tuple[list[str], dict[str, str]]:
        return [str(BUILD_DIR / "go_hub"), "-addr", f"{HOST}:{self.port}"], {}


class WebsocketsHub(PeerTarget):
    name = "websockets"
    description = "python `websockets` asyncio server hub (broadcast())"

    def command(self) -> tuple[list[str], dict[str, str]]:
        return [venv_python(), "-m", "bench.peers.websockets_hub", "--host", HOST, "--port", str(self.port)], {}


class AiohttpHub(PeerTarget):
    name = "aiohttp"
    description = "aiohttp WebSocketResponse hub (awaited send per member)"

    def command(self) -> tuple[list[str], dict[str, str]]:
        return [venv_python(), "-m", "bench.peers.aiohttp_hub", "--host", HOST, "--port", str(self.port)], {}


class EchoServer(PeerTarget):
    """Trivial picows echo server: the yardstick for the load generator's own ceiling."""

    name = "echo-picows"
    description = "picows echo server (trivial; measures the load generator)"

    def command(self) -> tuple[list[str], dict[str, str]]:
        return [venv_python(), "-m", "bench.peers.echo_picows", "--host", HOST, "--port", str(self.port)], {}


def build_go_hub() -> Path:
    """Build the Go peer offline against Debian's gorilla/websocket (GOPATH mode)."""
    binary = BUILD_DIR / "go_hub"
    source = BENCH_DIR / "peers" / "go_hub" / "main.go"
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    go = shutil.which("go")
    if not go:
        raise ServerError("`go` not found: apt-get install golang-go golang-github-gorilla-websocket-dev")
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GOPATH": os.environ.get("KEFU_BENCH_GOPATH", "/usr/share/gocode"), "GO111MODULE": "off",
           "GOCACHE": str(BUILD_DIR / "gocache")}
    subprocess.run([go, "build", "-o", str(binary), "."], cwd=source.parent, env=env, check=True)
    return binary


# ---------------------------------------------------------------- Kefu


class KefuTarget(Target):
    """The Kefu server (`kefu serve --dev`) with SQLite storage in a fresh data dir."""

    name = "kefu"
    description = "Kefu (auth, routing, SQLite storage with fsync, seq, acks after commit)"
    loadgen_args = ("--hello", "--subprotocol", "kefu.json.v1", "--origin", KEFU_ORIGIN)

    def __init__(self, cpus: str | None = SERVER_CPUS, *, workers: int | None = None,
                 sqlite_sync: str | None = None, binary: bool = False, name: str | None = None) -> None:
        super().__init__(cpus)
        self.workers = workers
        self.sqlite_sync = sqlite_sync
        if binary:
            self.loadgen_args = ("--hello", "--binary", "--subprotocol", "kefu.bin.v1", "--origin", KEFU_ORIGIN)
        if name:
            self.name = name
            self.chat_only = True
        self.data_dir: Path | None = None
        self.http_url = ""
        self.ws_url = ""
        self.site_key = ""

    @staticmethod
    def executable() -> str | None:
        candidate = Path(sys.executable).parent / "kefu"
        if candidate.exists():
            return str(candidate)
        return shutil.which("kefu")

    @classmethod
    def available(cls) -> tuple[bool, str]:
        """Whether `kefu serve` can run here (the server may not be built yet)."""
        executable = cls.executable()
        if not executable:
            return False, "the `kefu` command is not installed (make install)"
        probe = subprocess.run([executable, "serve", "--help"], capture_output=True, text=True, timeout=60,
                               check=False)
        if probe.returncode != 0:
            return False, "`kefu serve --help` failed: " + (probe.stderr.strip().splitlines() or ["?"])[-1]
        return True, ""

    def _kefu(self, *args: str) -> dict:
        assert self.data_dir is not None
        executable = self.executable()
        if not executable:
            raise ServerError("the `kefu` command is not installed")
        out = subprocess.run([executable, "--data-dir", str(self.data_dir), *args], capture_output=True,
                             text=True, timeout=120, check=False)
        if out.returncode != 0:
            raise ServerError(f"kefu {' '.join(args[:2])} failed: {out.stderr.strip()[-500:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def prepare(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="kefu-bench-"))
        site = self._kefu("site", "create", "--name", "bench", "--origin", KEFU_ORIGIN)
        self.site_key = site["key"]
        self._kefu("admin", "create", f"--site={self.site_key}", "--username", "bench-admin", "--password",
                   BENCH_PASSWORD)
        self.http_port = free_port()

    def command(self) -> tuple[list[str], dict[str, str]]:
        assert self.data_dir is not None
        argv = [self.executable() or "kefu", "--data-dir", str(self.data_dir), "serve", "--dev", "--host", HOST,
                "--http-port", str(self.http_port), "--ws-port", str(self.port)]
        if self.sqlite_sync:
            argv += ["--sqlite-sync", self.sqlite_sync]
        # The per-connection frame-rate limit (a policy: 50 frames/s by default) is lifted so it does not
        # cap the measurement; its check still runs on every frame. Peers have no limiter.
        env = {"KEFU_RATE_PER_S": "1000000", "KEFU_RATE_BURST": "1000000"}
        # Likewise the limits on anonymous use (all bench clients share one address): sessions,
        # new conversations, sockets per visitor/address/site and the per-site queue.
        env.update({name: "10000000" for name in (
            "KEFU_SESSIONS_PER_MIN", "KEFU_SITE_SESSIONS_PER_MIN", "KEFU_OPENS_PER_MIN", "KEFU_SOCKETS_PER_VISITOR",
            "KEFU_SOCKETS_PER_ADDRESS", "KEFU_SOCKETS_PER_SITE", "KEFU_MAX_QUEUE")})
        if self.workers:
            env["WORKERS"] = str(self.workers)
        return argv, env

    def ready_marker(self) -> str:
        return "KEFU READY "

    def on_ready_line(self, line: str) -> None:
        for part in line.split():
            if part.startswith("http="):
                self.http_url = part[5:].rstrip("/")
            elif part.startswith("ws="):
                self.ws_url = part[3:]

    def stop(self) -> None:
        super().stop()
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def _probe_request(self) -> str:
        # No token: an accepted connection answers 401 before any 101, which is all cold start needs.
        return (f"GET /ws HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Origin: {KEFU_ORIGIN}\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n")

    # ----- HTTP API -----

    def _post(self, path: str, body: dict, token: str | None = None) -> dict:
        headers = {"Content-Type": "application/json", "Origin": KEFU_ORIGIN}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.http_url + path, data=json.dumps(body).encode(), headers=headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise ServerError(f"POST {path} -> {error.code}: {error.read()[:300]!r}") from error

    def _login(self, username: str) -> dict:
        return self._post("/api/v1/auth/login", {"username": username, "password": BENCH_PASSWORD})

    def _create_agent(self, admin_token: str, username: str, capacity: int) -> dict:
        self._post("/api/v1/admin/agents", {"username": username, "password": BENCH_PASSWORD,
                                            "name": username, "capacity": capacity, "languages": ["en"]},
                   admin_token)
        return self._login(username)

    def _visitors(self, count: int) -> list[dict]:
        """Create `count` visitor sessions, a few HTTP calls at a time."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=8) as pool:
            return list(pool.map(self._visitor, range(count)))

    def _visitor(self, index: int) -> dict:
        return self._post("/api/v1/visitor/session", {"site": self.site_key, "name": f"visitor {index}",
                                                      "lang": "en"})

    def _line(self, role: str, token: str, conv: int) -> SpecLine:
        path = "/" + self.ws_url.split("/", 3)[3] if self.ws_url.count("/") >= 3 else "/ws"
        return SpecLine(role, HOST, self.port, f"{path}?token={token}", conv)

    # ----- connection lists -----

    def chat_pairs(self, pairs: int) -> list[SpecLine]:
        admin = self._login("bench-admin")
        agents = [self._create_agent(admin["token"], f"agent{i}", capacity=1) for i in range(pairs)]
        visitors = self._visitors(pairs)
        assignments = asyncio.run(_open_conversations(self.ws_url, agents, visitors))
        lines: list[SpecLine] = []
        for visitor, (conv, agent) in zip(visitors, assignments, strict=True):
            lines.append(self._line("S", visitor["token"], conv))
            lines.append(self._line("S", agent["token"], conv))
        return lines

    def supervised(self, conversations: int) -> list[SpecLine]:
        admin = self._login("bench-admin")
        supervisor = self._create_agent(admin["token"], "supervisor", capacity=conversations)
        visitors = self._visitors(conversations)
        assignments = asyncio.run(_open_conversations(self.ws_url, [supervisor], visitors))
        lines = [self._line("R", supervisor["token"], 0)]
        lines += [self._line("S", visitor["token"], conv)
                  for visitor, (conv, _agent) in zip(visitors, assignments, strict=True)]
        return lines

    def idle(self, connections: int) -> list[SpecLine]:
        # Sessions cost an HTTP call each; a pool of visitors, each holding several connections (tabs),
        # keeps setup short without changing what an idle socket costs the server.
        pool = self._visitors(min(connections, IDLE_VISITOR_POOL))
        return [self._line("R", pool[i % len(pool)]["token"], 0) for i in range(connections)]


IDLE_VISITOR_POOL = 500
SETUP_CONCURRENCY = 32


async def _recv_json(connection: ClientConnection, timeout: float) -> dict:
    return json.loads(await asyncio.wait_for(connection.recv(), timeout))


async def _hello(connection: ClientConnection) -> None:
    await connection.send(json.dumps({"t": "hello"}))
    while (await _recv_json(connection, 10))["t"] != "welcome":
        pass


async def _open_conversations(ws_url: str, agents: list[dict], visitors: list[dict]) -> list[tuple[int, dict]]:
    """Connect the agents, open one conversation per visitor, have its agent accept it.

    Returns (conversation id, agent) per visitor. Uses the `websockets` client: a second client
    implementation, so setup also checks that Kefu speaks the protocol to a stock client.
    """
    subprotocols = ["kefu.json.v1"]
    agent_connections = []
    for agent in agents:
        connection = await connect(f"{ws_url}?token={agent['token']}", subprotocols=subprotocols,
                                   origin=KEFU_ORIGIN, compression=None, max_size=2**20)
        await _hello(connection)
        agent_connections.append(connection)
    assigned: dict[int, asyncio.Future[int]] = {}

    async def agent_reader(index: int) -> None:
        connection = agent_connections[index]
        async for raw in connection:
            frame = json.loads(raw)
            if frame.get("t") == "conv" and frame.get("state") == "assigned":
                await connection.send(json.dumps({"t": "accept", "conv": frame["conv"]}))
                future = assigned.setdefault(frame["conv"], asyncio.get_running_loop().create_future())
                if not future.done():
                    future.set_result(index)

    readers = [asyncio.create_task(agent_reader(i)) for i in range(len(agent_connections))]
    limit = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def open_one(visitor: dict) -> tuple[int, dict]:
        async with limit, connect(f"{ws_url}?token={visitor['token']}", subprotocols=subprotocols,
                                  origin=KEFU_ORIGIN, compression=None) as connection:
            await _hello(connection)
            await connection.send(json.dumps({"t": "open", "text": "hello"}))
            while True:
                frame = await _recv_json(connection, 30)
                if frame["t"] == "conv":
                    conv = frame["conv"]
                    break
                if frame["t"] == "error":
                    raise ServerError(f"open failed: {frame}")
            future = assigned.setdefault(conv, asyncio.get_running_loop().create_future())
            try:
                agent_index = await asyncio.wait_for(future, 30)
            except TimeoutError as error:
                raise ServerError(f"conversation {conv} was not assigned to an agent within 30 s") from error
            return conv, agents[agent_index]

    try:
        results = list(await asyncio.gather(*(open_one(visitor) for visitor in visitors)))
        await asyncio.sleep(0.2)  # let the last accepts land before the agents disconnect
    finally:
        for reader in readers:
            reader.cancel()
        for connection in agent_connections:
            await connection.close()
    return results


def all_peer_targets() -> list[Target]:
    return [GoHub(), WebsocketsHub(), AiohttpHub()]


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.002) -> float | None:
    """Seconds until predicate() was true, or None on timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    return None
