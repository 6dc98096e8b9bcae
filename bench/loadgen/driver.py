"""Build and drive `kefuload` (the C load generator) from Python, over several processes.

One process may hold at most ~20,000 descriptors on the project's machines, so connection lists
are split into chunks of `MAX_CONNS_PER_PROCESS`, one `kefuload` per chunk; the processes connect,
report, then start their schedules at the same CLOCK_MONOTONIC instant, and their HDR-style
histograms are merged bucket by bucket (exact, not an average of percentiles).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
BUILD_DIR = BENCH_DIR / "build"
LOADGEN_SOURCE = Path(__file__).resolve().parent / "kefuload.c"
LOADGEN_BINARY = BUILD_DIR / "kefuload"
MAX_CONNS_PER_PROCESS = 18_000
CLIENT_CPUS = "1"


def build_loadgen() -> Path:
    """Compile kefuload with the system C compiler when the binary is missing or stale."""
    if LOADGEN_BINARY.exists() and LOADGEN_BINARY.stat().st_mtime >= LOADGEN_SOURCE.stat().st_mtime:
        return LOADGEN_BINARY
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not compiler:
        raise RuntimeError("no C compiler (cc/gcc) found: the load generator is built from source")
    subprocess.run([compiler, "-O2", "-Wall", "-o", str(LOADGEN_BINARY), str(LOADGEN_SOURCE)], check=True)
    return LOADGEN_BINARY


def pin_prefix(cpus: str | None) -> list[str]:
    """`taskset -c CPUS` when taskset exists and the machine has more than one core."""
    if cpus is None or (os.cpu_count() or 1) < 2 or not shutil.which("taskset"):
        return []
    return ["taskset", "-c", cpus]


@dataclass(frozen=True)
class SpecLine:
    """One connection: `role` is "S" (sends) or "R" (only receives)."""

    role: str
    host: str
    port: int
    path: str
    conv: int = 0

    def render(self) -> str:
        return f"{self.role} {self.host} {self.port} {self.path} {self.conv}\n"


class Histogram:
    """Merged log-linear latency histogram (values in ns), as kefuload writes them."""

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.min = 0
        self.max = 0
        self.sum = 0.0

    def merge(self, data: dict) -> None:
        if not data or not data.get("count"):
            return
        self.min = data["min"] if self.count == 0 else min(self.min, data["min"])
        self.max = max(self.max, data["max"])
        self.count += data["count"]
        self.sum += data["sum"]
        for lower_bound, count in data["buckets"]:
            self.buckets[lower_bound] = self.buckets.get(lower_bound, 0) + count

    def percentile(self, q: float) -> float | None:
        """Value (ns) at quantile q in [0, 1]: the bucket's lower bound, within 1.6 %."""
        if self.count == 0:
            return None
        target = max(1, int(q * self.count + 0.999999))
        seen = 0
        for lower_bound in sorted(self.buckets):
            seen += self.buckets[lower_bound]
            if seen >= target:
                return float(min(max(lower_bound, self.min), self.max))
        return float(self.max)

    def summary_us(self) -> dict[str, float | None]:
        """p50/p99/p99.9/max/mean in microseconds (None when empty)."""

        def us(value: float | None) -> float | None:
            return None if value is None else value / 1000.0

        return {
            "count": self.count,
            "p50": us(self.percentile(0.50)),
            "p90": us(self.percentile(0.90)),
            "p99": us(self.percentile(0.99)),
            "p999": us(self.percentile(0.999)),
            "max": us(float(self.max) if self.count else None),
            "mean": us(self.sum / self.count if self.count else None),
        }


@dataclass
class LoadResult:
    """Everything the load generator processes reported, merged."""

    processes: int = 0
    counters: dict[str, float] = field(default_factory=dict)
    ack: Histogram = field(default_factory=Histogram)
    delivery: Histogram = field(default_factory=Histogram)
    connect: Histogram = field(default_factory=Histogram)
    send_lag: Histogram = field(default_factory=Histogram)
    connect_seconds: float = 0.0
    reconnect_seconds: float = 0.0
    measure_seconds: float = 0.0

    def add(self, result: dict) -> None:
        self.processes += 1
        for key in ("conns", "senders", "open_at_end", "connect_failed", "handshake_rejected", "closed_by_peer",
                    "errors", "sent", "sent_measured", "acks", "deliveries", "other_messages", "bytes_in",
                    "bytes_out", "client_cpu_seconds", "reconnected"):
            self.counters[key] = self.counters.get(key, 0) + result.get(key, 0)
        self.ack.merge(result.get("ack", {}))
        self.delivery.merge(result.get("delivery", {}))
        self.connect.merge(result.get("connect", {}))
        self.send_lag.merge(result.get("send_lag", {}))
        self.connect_seconds = max(self.connect_seconds, result.get("connect_seconds", 0.0))
        self.reconnect_seconds = max(self.reconnect_seconds, result.get("reconnect_seconds", 0.0))
        self.measure_seconds = max(self.measure_seconds, result.get("measure_seconds", 0.0))


def _chunks(lines: Sequence[SpecLine], processes: int) -> list[Sequence[SpecLine]]:
    per_process = -(-len(lines) // processes)
    per_process += per_process % 2  # keep conversation pairs (adjacent lines) in one process
    return [lines[i:i + per_process] for i in range(0, len(lines), per_process)]


def run_loadgen(
    lines: Sequence[SpecLine],
    mode: str,
    args: Sequence[str] = (),
    *,
    rate: float | None = None,
    processes: int | None = None,
    on_connected: Callable[[list[dict]], None] | None = None,
    stop_after_connected: bool = False,
    timeout: float = 600.0,
    log: Callable[[str], None] | None = None,
    client_cpus: str | None = CLIENT_CPUS,
) -> LoadResult:
    """Run kefuload over `lines` in enough processes, start them together, merge their results.

    `rate` (total msg/s) is split over the processes in proportion to their senders.
    `on_connected` runs once every process has connected (e.g. to sample server memory); with
    `stop_after_connected` the processes are then told to stop (idle mode).
    """
    binary = build_loadgen()
    processes = max(processes or 1, -(-len(lines) // MAX_CONNS_PER_PROCESS))
    chunks = _chunks(lines, processes)
    total_senders = sum(1 for line in lines if line.role == "S") or 1
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    workdir = Path(tempfile.mkdtemp(prefix="kefuload-"))
    running: list[subprocess.Popen[str]] = []
    outputs: list[list[dict]] = []
    threads: list[threading.Thread] = []
    offset = 0
    try:
        for index, chunk in enumerate(chunks):
            spec_path = workdir / f"spec{index}.txt"
            spec_path.write_text("".join(line.render() for line in chunk), encoding="utf-8")
            command = [*pin_prefix(client_cpus), str(binary), "--spec", str(spec_path), "--mode", mode,
                       "--id-offset", str(offset), "--wait-go", *args]
            if rate is not None:
                senders = sum(1 for line in chunk if line.role == "S")
                command += ["--rate", f"{max(rate * senders / total_senders, 0.001):.3f}"]
            offset += len(chunk)
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
            running.append(process)
            events: list[dict] = []
            outputs.append(events)
            threads.append(threading.Thread(target=_read_events, args=(process, events), daemon=True))
            threads.append(threading.Thread(target=_forward_stderr, args=(process, log), daemon=True))
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + timeout
        while not all(any(e["event"] == "connected" for e in events) or process.poll() is not None
                      for events, process in zip(outputs, running, strict=True)):
            if time.monotonic() > deadline:
                raise TimeoutError("load generator did not finish connecting in time")
            time.sleep(0.02)
        connected = [next((e for e in events if e["event"] == "connected"), {}) for events in outputs]
        if on_connected:
            on_connected(connected)
        start_at = time.monotonic_ns() + 100_000_000
        for process in running:
            if process.poll() is None and process.stdin:
                try:
                    process.stdin.write(f"{start_at}\n")
                    process.stdin.flush()
                except BrokenPipeError:
                    pass
        if stop_after_connected:
            for process in running:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
        for process in running:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
        for thread in threads:
            thread.join(timeout=5)
    finally:
        for process in running:
            if process.poll() is None:
                process.kill()
                process.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    merged = LoadResult()
    for events, process in zip(outputs, running, strict=True):
        result = next((e for e in events if e["event"] == "result"), None)
        if result is None:
            raise RuntimeError(f"load generator exited with {process.returncode} without a result")
        merged.add(result)
    return merged


def _read_events(process: subprocess.Popen[str], events: list[dict]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        line = line.strip()
        if line.startswith("{"):
            events.append(json.loads(line))


def _forward_stderr(process: subprocess.Popen[str], log: Callable[[str], None]) -> None:
    assert process.stderr is not None
    for line in process.stderr:
        log("    " + line.rstrip())
