"""What every scenario shares: the run profiles, one measured load run, system-wide CPU accounting.

A measured run samples the server's process-tree CPU, the client's CPU (from kefuload) and the
whole machine's busy time over the same window; what is left over is other processes' load
("other cores"), reported next to every number because the project's machines are shared.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.loadgen.driver import CLIENT_CPUS, LoadResult, SpecLine, run_loadgen
from bench.scenarios.targets import Target

# Sizes of message text in bytes, cycled: short chat lines dominate, with the occasional paragraph
# (docs/protocol.md allows up to 8 KiB).
CHAT_SIZES = "24,60,120,60,300,40,90,800"


@dataclass(frozen=True)
class Profile:
    """How big and how long each scenario runs."""

    name: str
    pairs: int
    rates: tuple[int, ...]
    warmup: float
    duration: float
    drain: float
    saturation_window: int
    # A second closed-loop run with this many messages in flight per connection (0: none): with one in
    # flight a durable server is bounded by its commit latency; with more, by its CPU.
    deep_window: int
    supervised: int
    supervised_rates: tuple[int, ...]
    idle_connections: int
    storm_connections: int
    cold_start_runs: int
    ceiling_connections: int
    kefu_two_core_rates: tuple[int, ...]


PROFILES = {
    "smoke": Profile("smoke", pairs=4, rates=(200,), warmup=0.2, duration=1.0, drain=1.0, saturation_window=1,
                     deep_window=0, supervised=10, supervised_rates=(200,), idle_connections=50, storm_connections=50,
                     cold_start_runs=1, ceiling_connections=10, kefu_two_core_rates=()),
    "quick": Profile("quick", pairs=100, rates=(1_000, 5_000, 10_000), warmup=1.0, duration=4.0, drain=3.0,
                     saturation_window=1, deep_window=8, supervised=200, supervised_rates=(2_000,),
                     idle_connections=10_000, storm_connections=10_000, cold_start_runs=3,
                     ceiling_connections=100, kefu_two_core_rates=(10_000,)),
    "full": Profile("full", pairs=500, rates=(1_000, 2_000, 5_000, 10_000, 20_000, 40_000), warmup=2.0,
                    duration=10.0, drain=5.0, saturation_window=1, deep_window=8, supervised=200,
                    supervised_rates=(2_000, 10_000), idle_connections=100_000, storm_connections=50_000,
                    cold_start_runs=5, ceiling_connections=100, kefu_two_core_rates=(5_000, 10_000, 20_000)),
}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def machine_busy_seconds() -> float:
    """CPU seconds all processes spent on every core since boot (from /proc/stat)."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class Measured:
    """One load run against one target, with the CPU it cost everybody."""

    load: LoadResult
    wall_seconds: float
    server_cpu_seconds: float
    other_cpu_seconds: float
    server_rss_bytes: int
    server_wait_seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def server_cores(self) -> float:
        return self.server_cpu_seconds / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def server_wait_cores(self) -> float:
        """Average number of server threads runnable but not running (starved of CPU)."""
        return self.server_wait_seconds / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def client_cores(self) -> float:
        return self.load.counters.get("client_cpu_seconds", 0.0) / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def other_cores(self) -> float:
        return max(0.0, self.other_cpu_seconds / self.wall_seconds) if self.wall_seconds else 0.0


def measured_run(target: Target, lines: Sequence[SpecLine], mode: str, args: Sequence[str], *,
                 rate: float | None = None, client_cpus: str | None = CLIENT_CPUS,
                 on_connected: Callable[[], None] | None = None, stop_after_connected: bool = False,
                 timeout: float = 900.0) -> Measured:
    """Run kefuload against `target`, sampling CPU from the moment every client is connected."""
    samples: dict[str, float] = {}

    def connected(_events: list[dict]) -> None:
        if on_connected:
            on_connected()
        samples["server"] = target.cpu_seconds()
        samples["server_wait"] = target.cpu_wait_seconds()
        samples["busy"] = machine_busy_seconds()
        samples["wall"] = time.monotonic()

    load = run_loadgen(lines, mode, [*target.loadgen_args, *args], rate=rate, on_connected=connected,
                       stop_after_connected=stop_after_connected, timeout=timeout, log=log,
                       client_cpus=client_cpus)
    wall = time.monotonic() - samples.get("wall", time.monotonic())
    server = target.cpu_seconds() - samples.get("server", 0.0)
    server_wait = target.cpu_wait_seconds() - samples.get("server_wait", 0.0)
    busy = machine_busy_seconds() - samples.get("busy", 0.0)
    other = busy - server - load.counters.get("client_cpu_seconds", 0.0)
    return Measured(load=load, wall_seconds=wall, server_cpu_seconds=server, other_cpu_seconds=other,
                    server_rss_bytes=target.rss_bytes(), server_wait_seconds=server_wait)


def latency_columns(prefix: str, summary: dict[str, float | None]) -> dict[str, float | None]:
    return {f"{prefix}_{key}": summary[key] for key in ("p50", "p99", "p999", "max")}


def loadgen_health(load: LoadResult) -> dict[str, float]:
    """How late the client itself sent (it must not be the bottleneck) and what went wrong."""
    lag = load.send_lag.summary_us()
    return {
        "send_lag_p99_us": lag["p99"] or 0.0,
        "connect_failed": load.counters.get("connect_failed", 0),
        "closed_by_server": load.counters.get("closed_by_peer", 0),
        "server_errors": load.counters.get("errors", 0),
    }
