"""Helpers for worker tests: a `kefu serve --workers 2` whose workers each listen on their own port
(test mode), so a test decides which worker holds which connection."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from kefu_client import ServerProcess

WORKERS = 2
BASE_ENV = {"WORKERS": str(WORKERS), "KEFU_TEST_DISTINCT_WORKER_PORTS": "1",
            "KEFU_RATE_PER_S": "100000", "KEFU_RATE_BURST": "100000", "KEFU_REPLAY_LIMIT": "100000"}


def free_port_run(count: int) -> int:
    """A port p with p .. p+count-1 all free now."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        try:
            held = []
            for port in range(base, base + count):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError("no run of free ports")


class WorkersServer(ServerProcess):
    def worker_urls(self) -> list[str]:
        for line in self.output:
            if line.startswith("KEFU WORKERS "):
                return re.findall(r"ws=(\S+)", line)
        raise AssertionError("no KEFU WORKERS line:\n" + "".join(self.output))

    def worker_pids(self) -> dict[int, int]:
        """Live worker processes of this server by index (from /proc: children of the supervisor)."""
        assert self.proc is not None
        found = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == self.proc.pid and b"kefu.workers.worker" in cmdline:
                index = next(int(a.split(b"=")[1]) for a in cmdline if a.startswith(b"--index="))
                found[index] = int(entry)
        return found


def start_workers_server(data_dir: Path, *, ws_port: int = 0, http_port: int = 0, **env: str) -> WorkersServer:
    server = WorkersServer(data_dir, env={**BASE_ENV, **env}, ws_port=ws_port or free_port_run(WORKERS),
                           http_port=http_port)
    server.start()
    return server


def on_worker(session: dict, url: str) -> dict:
    """The same session, pinned to one worker's port."""
    return {**session, "ws_url": url}
