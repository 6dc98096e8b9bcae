"""MPMC queue throughput: the Rust ring against crossbeam, the Python binding against queue.SimpleQueue.

    python -m bench.queue            # ~60 s: Rust 1p1c/2p2c/4p4c vs crossbeam, Python-level comparison
    python -m bench.queue --smoke    # a few seconds, tiny sizes (the test suite runs this)

Part 1 runs the cargo bench native/queue/benches/vs_crossbeam.rs (kefu ArrayRing vs
crossbeam_queue::ArrayQueue, u64 messages, same capacity and threads, median of several runs) and reads
its JSON lines. Part 2 times, in this process, kefu's MpmcQueue against the standard library's
queue.SimpleQueue (unbounded, C) and the pure-Python reference twin: single-thread put/get pairs and
1p1c/2p2c message passing with real threads. Writes bench/results/queue.md.
"""

from __future__ import annotations

import argparse
import json
import os
import queue as stdlib_queue
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kefu.compiled import MpmcQueue
from kefu.reference.queue import MpmcQueue as ReferenceMpmcQueue

from bench.common import machine_info, write_report

REPO_ROOT = Path(__file__).resolve().parent.parent
CAPACITY = 1024
QUEUES: dict[str, Callable[[], Any]] = {
    "kefu MpmcQueue": lambda: MpmcQueue(CAPACITY),
    "queue.SimpleQueue": stdlib_queue.SimpleQueue,
    "reference twin": lambda: ReferenceMpmcQueue(CAPACITY),
}
OURS = "kefu MpmcQueue"
SHAPES = (("put/get pairs, 1 thread", 0, 0), ("1p1c threads", 1, 1), ("2p2c threads", 2, 2))


@dataclass(frozen=True)
class Profile:
    rust_messages: int
    rust_runs: int
    python_messages: int
    python_runs: int


PROFILES = {
    "quick": Profile(rust_messages=4_000_000, rust_runs=9, python_messages=500_000, python_runs=3),
    "smoke": Profile(rust_messages=100_000, rust_runs=1, python_messages=2_000, python_runs=1),
}


def _tool_version(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False).stdout.strip()
    except OSError:
        return f"{command[0]}: not found"


def run_rust_bench(profile: Profile) -> list[dict[str, Any]]:
    """Runs the cargo bench (stderr streams through as progress) and returns its JSON lines."""
    if shutil.which("cargo") is None:
        print("cargo not found: skipping the Rust comparison", flush=True)
        return []
    command = [
        "cargo", "bench", "--quiet", "--manifest-path", str(REPO_ROOT / "native" / "Cargo.toml"),
        "-p", "kefu-queue", "--bench", "vs_crossbeam", "--",
        "--messages", str(profile.rust_messages), "--runs", str(profile.rust_runs), "--capacity", str(CAPACITY),
    ]
    print("[rust] " + " ".join(command[:9]) + " (compiles on first run)", flush=True)
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True, timeout=600)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def _pairs_rate(make_queue: Callable[[], Any], messages: int) -> float:
    queue = make_queue()
    put, get = queue.put, queue.get
    began = time.perf_counter()
    for item in range(messages):
        put(item)
        get()
    return messages / (time.perf_counter() - began)


def _threaded_rate(make_queue: Callable[[], Any], producers: int, consumers: int, messages: int) -> float:
    queue = make_queue()
    per_producer = messages // producers
    per_consumer = per_producer * producers // consumers
    start = threading.Barrier(producers + consumers + 1)

    def produce() -> None:
        put = queue.put
        start.wait()
        for item in range(per_producer):
            put(item)

    def consume() -> None:
        get = queue.get
        start.wait()
        for _ in range(per_consumer):
            get()

    threads = [threading.Thread(target=produce) for _ in range(producers)]
    threads += [threading.Thread(target=consume) for _ in range(consumers)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return per_consumer * consumers / (time.perf_counter() - began)


def run_python_bench(profile: Profile) -> dict[tuple[str, str], float]:
    """Median messages/s per (shape, queue); runs of different queues are interleaved."""
    rates: dict[tuple[str, str], list[float]] = {}
    for shape, producers, consumers in SHAPES:
        for run in range(profile.python_runs):
            for name, make_queue in QUEUES.items():
                print(f"[python] {shape}: {name} run {run + 1}/{profile.python_runs} ...", end=" ", flush=True)
                if producers == 0:
                    rate = _pairs_rate(make_queue, profile.python_messages)
                else:
                    rate = _threaded_rate(make_queue, producers, consumers, profile.python_messages)
                rates.setdefault((shape, name), []).append(rate)
                print(f"{rate:,.0f}/s", flush=True)
    return {key: statistics.median(samples) for key, samples in rates.items()}


def render(profile_name: str, profile: Profile, rust: list[dict[str, Any]],
           python: dict[tuple[str, str], float], load_before: tuple[float, float, float]) -> str:
    info = machine_info()
    versions = ", ".join(f"{package} {version}" for package, version in info["versions"].items())  # type: ignore[attr-defined]
    lines = [
        "# MPMC queue throughput",
        "",
        (
            f"Command: `python -m bench.queue{' --smoke' if profile_name == 'smoke' else ''}`. "
            "A message is one put (push) and one get (pop); rates are medians over runs interleaved between "
            f"the queues compared. Capacity {CAPACITY} for every bounded queue."
        ),
        "",
        f"- CPU: {info['cpu_model']} ({info['cores']} cores), {info['memory_gib']} GiB, Linux {info['kernel']}",
        f"- Python {info['python']}, {_tool_version(['rustc', '--version'])}, {versions}",
        f"- Date (UTC): {info['date_utc']}; load average before the run: "
        + " / ".join(f"{load:.2f}" for load in load_before)
        + f" (1/5/15 min, {info['cores']} cores: above that, other work shared the CPUs)",
        "",
        "## Rust: kefu `ArrayRing<u64>` vs `crossbeam_queue::ArrayQueue<u64>`",
        "",
    ]
    if rust:
        lines += [
            (
                f"`cargo bench -p kefu-queue --bench vs_crossbeam -- --messages {profile.rust_messages} "
                f"--runs {profile.rust_runs}`; waiting threads yield. With more threads than cores (2p2c and "
                "4p4c on a 2-core machine) the numbers mostly measure the scheduler, and run-to-run spread is "
                "wide (see the JSON lines the bench prints): read ratios near 1 as parity."
            ),
            "",
            "| threads | kefu ArrayRing msg/s | crossbeam ArrayQueue msg/s | ours / crossbeam |",
            "|---|---:|---:|---:|",
        ]
        by_shape: dict[tuple[int, int], dict[str, float]] = {}
        for row in rust:
            by_shape.setdefault((row["producers"], row["consumers"]), {})[row["queue"]] = row["median_ops_per_s"]
        for (producers, consumers), medians in by_shape.items():
            ours, theirs = medians["kefu ArrayRing"], medians["crossbeam ArrayQueue"]
            lines.append(f"| {producers}p{consumers}c | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.2f} |")
    else:
        lines.append("Not run: cargo was not available.")
    lines += [
        "",
        "## Python: kefu `MpmcQueue` vs `queue.SimpleQueue` vs the reference twin",
        "",
        (
            f"{profile.python_messages:,} messages per run, blocking `put`/`get`, median of {profile.python_runs}. "
            "`queue.SimpleQueue` is unbounded (never waits for space) and written in C; the twin is "
            "`threading.Condition` + `deque`."
        ),
        "",
        "| workload | " + " | ".join(f"{name} msg/s" for name in QUEUES) + " | ours / SimpleQueue | ours / twin |",
        "|---|" + "---:|" * (len(QUEUES) + 2),
    ]
    for shape, _, _ in SHAPES:
        rates = [python[(shape, name)] for name in QUEUES]
        ours = python[(shape, OURS)]
        lines.append(
            f"| {shape} | " + " | ".join(f"{rate:,.0f}" for rate in rates)
            + f" | {ours / python[(shape, 'queue.SimpleQueue')]:.2f} | {ours / python[(shape, 'reference twin')]:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--quick", action="store_true", help="the default profile (~60 s)")
    args = parser.parse_args(argv)
    profile_name = "smoke" if args.smoke else "quick"
    profile = PROFILES[profile_name]
    began = time.monotonic()
    load_before = os.getloadavg()
    rust = run_rust_bench(profile)
    python = run_python_bench(profile)
    path = write_report("queue", render(profile_name, profile, rust, python, load_before))
    print(f"wrote {path} in {time.monotonic() - began:.0f} s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
