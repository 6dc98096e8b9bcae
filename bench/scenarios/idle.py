"""Idle connections held: server memory per connection, handshake rate, idle CPU.

Run alone: python -m bench.scenarios.idle --quick
"""

from __future__ import annotations

import functools
import time

from bench.loadgen.driver import MAX_CONNS_PER_PROCESS
from bench.report import ScenarioReport
from bench.scenarios.measure import Profile, log, measured_run
from bench.scenarios.targets import KefuTarget, Target

NAME = "idle"
SETTLE_SECONDS = 1.0
IDLE_CPU_SECONDS = 3.0
# Long enough for 100k handshakes + hello at ~1,000/s on a busy 2-core machine.
CONNECT_WINDOW_S = 150
SINGLE_PROCESS_LIMIT = 19_000  # a process may hold 20,000 descriptors on the project's machines

METHOD = """\
The load generator opens the connections ({connections:,} requested; at most 200 handshakes in
flight; source addresses spread over 127.0.1.1–127.0.1.8 because one source address has ~28k
ephemeral ports; at most {per_process:,} connections per client process), Kefu connections also
complete `hello` → `welcome`. After all are open and {settle:g} s of settling, the server's
resident memory (RSS, summed over its process tree) is compared with its RSS just after start;
kernel memory is the machine's `Slab` delta (it covers both ends of each loopback connection).
Idle server CPU is sampled over {idle_cpu:g} s with every connection open. A single-process
server can hold at most ~19,000 connections here (RLIMIT_NOFILE 20,000): peers are measured at
min(requested, 19,000); Kefu spreads connections over worker processes (WORKERS).
"""

COLUMNS = [
    ("target", "server", "str"), ("requested", "requested", "int"), ("open", "open", "int"),
    ("failed", "failed", "int"), ("rss_per_conn", "server KiB/conn", "kib"),
    ("ratio_vs_best_peer", "vs best peer", "ratio"), ("slab_per_conn", "kernel slab KiB/conn (both ends)", "kib"),
    ("connect_seconds", "time to open all (s)", "f2"), ("connect_p99", "handshake p99 ms", "us"),
    ("idle_cpu", "idle server CPU (cores)", "f3"), ("other_cores", "other cores", "f2"),
]


def slab_bytes() -> int:
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        for line in meminfo:
            if line.startswith("Slab:"):
                return int(line.split()[1]) * 1024
    return 0


def _sample_while_held(target: Target, sample: dict[str, float]) -> None:
    """With every connection open: settle, then sample memory and idle CPU."""
    time.sleep(SETTLE_SECONDS)
    sample["rss"] = target.rss_bytes()
    sample["slab"] = slab_bytes()
    before = target.cpu_seconds()
    time.sleep(IDLE_CPU_SECONDS)
    sample["idle_cpu"] = (target.cpu_seconds() - before) / IDLE_CPU_SECONDS


def run(profile: Profile, targets: list[Target]) -> ScenarioReport:
    report = ScenarioReport(NAME, "Idle connections: memory per connection",
                            METHOD.format(connections=profile.idle_connections, per_process=MAX_CONNS_PER_PROCESS,
                                          settle=SETTLE_SECONDS, idle_cpu=IDLE_CPU_SECONDS))
    rows: list[dict] = []
    for target in targets:
        if target.chat_only:
            continue
        requested = profile.idle_connections
        if not isinstance(target, KefuTarget):
            requested = min(requested, SINGLE_PROCESS_LIMIT)
        elif requested > SINGLE_PROCESS_LIMIT and not target.workers:
            target.workers = -(-requested // 16_000)
        log(f"[idle] {target.name}: {requested:,} connections")
        target.start()
        try:
            lines = target.idle(requested)
            time.sleep(0.3)
            baseline_rss = target.rss_bytes()
            baseline_slab = slab_bytes()
            sample: dict[str, float] = {}
            measured = measured_run(target, lines, "idle",
                                    ["--inflight", "200", "--sources", "8", "--hold", "600",
                                     "--connect-timeout", str(CONNECT_WINDOW_S)],
                                    on_connected=functools.partial(_sample_while_held, target, sample),
                                    stop_after_connected=True)
            open_count = measured.load.counters.get("conns", 0) - measured.load.counters.get("connect_failed", 0)
            rows.append({
                "target": target.name, "requested": requested, "open": open_count,
                "failed": measured.load.counters.get("connect_failed", 0),
                "rss_per_conn": (sample["rss"] - baseline_rss) / open_count if open_count else None,
                "slab_per_conn": (sample["slab"] - baseline_slab) / open_count if open_count else None,
                "connect_seconds": measured.load.connect_seconds,
                "connect_p99": measured.load.connect.summary_us()["p99"],
                "idle_cpu": sample["idle_cpu"], "other_cores": measured.other_cores,
                "workers": getattr(target, "workers", None),
            })
        finally:
            target.stop()
    peers = [row["rss_per_conn"] for row in rows if not row["target"].startswith("kefu") and row["rss_per_conn"]]
    best_peer = min(peers) if peers else None
    for row in rows:
        row["ratio_vs_best_peer"] = row["rss_per_conn"] / best_peer if best_peer and row["rss_per_conn"] else None
    report.sections.append(("Idle connections", rows, COLUMNS))
    report.rows = rows
    report.notes.append("RSS includes everything the server allocated for the connections (buffers, "
                        "per-connection objects, allocator slack); kernel socket memory is the separate slab column.")
    return report


if __name__ == "__main__":
    import sys

    from bench.run import main

    sys.exit(main(default_only=NAME))
