"""Worker processes on this machine: Kefu as one process and with 2 gateway workers (plus the control
process), each unpinned on all cores with the load generator sharing them (like the `kefu-2c` chat
rows): delivery latency at a fixed offered rate (open loop) and saturation (closed loop) with 1 and
with 8 messages in flight per connection (1 is bounded by the commit latency, 8 by the CPU). Writes
bench/results/workers.md with the 2-worker / 1-process ratios.

    python -m bench.workers [--quick | --smoke] [--rate 10000] [--pairs 100] [--duration 4]
                            [--sqlite-sync NORMAL]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from bench.common import machine_info, write_report
from bench.scenarios.chat import _row
from bench.scenarios.measure import CHAT_SIZES, log, measured_run
from bench.scenarios.targets import KefuTarget

WINDOWS = (1, 8)


def measure(workers: int, args: argparse.Namespace) -> list[dict]:
    common = ["--sizes", CHAT_SIZES, "--warmup", "1", "--duration", str(args.duration), "--drain", "3", "--quiet"]
    name = "kefu-1p" if workers == 1 else f"kefu-{workers}w"
    target = KefuTarget(cpus=None, workers=workers, sqlite_sync=args.sqlite_sync, name=name)
    rows = []
    target.start()
    try:
        lines = target.chat_pairs(args.pairs)
        log(f"[workers] {name}: {args.rate:,} msg/s offered")
        row = _row(target, measured_run(target, lines, "rate", common, rate=args.rate, client_cpus=None), args.rate)
        rows.append({**row, "workers": workers, "window": None})
        for window in WINDOWS:
            log(f"[workers] {name}: saturation (closed loop, {window} in flight per connection)")
            row = _row(target, measured_run(target, lines, "closed", [*common, "--window", str(window)],
                                            client_cpus=None), None)
            rows.append({**row, "workers": workers, "window": window})
    finally:
        target.stop()
    return rows


def _ms(us: float | None) -> str:
    return "–" if us is None else f"{us / 1000:,.2f}"


def render(rows: list[dict], args: argparse.Namespace, load_before: tuple[float, float, float]) -> str:
    info = machine_info()
    one = {row["window"]: row for row in rows if row["workers"] == 1}
    lines = [
        "# Worker processes: one process against 2 gateway workers",
        "",
        f"Command: `python -m bench.workers --rate {args.rate} --pairs {args.pairs} --duration {args.duration:g}`"
        + (f" `--sqlite-sync {args.sqlite_sync}`" if args.sqlite_sync else "") + ". "
        "Kefu unpinned on both cores, the load generator sharing them; SQLite synchronous "
        f"{args.sqlite_sync or 'FULL'}. `kefu-1p` is `--workers 1` (one process: sockets, data plane, "
        "journal); `kefu-2w` is `--workers 2` (2 gateway workers holding the sockets + the control process "
        "with the data plane and the journal: docs/architecture.md, \"Worker processes\"). Both send and "
        f"receive on {args.pairs} pairs; text sizes {CHAT_SIZES}.",
        "",
        f"- CPU: {info['cpu_model']} ({info['cores']} cores), {info['memory_gib']} GiB, Linux {info['kernel']}, "
        f"Python {info['python']}",
        f"- Date (UTC): {info['date_utc']}; load average before the run: "
        + " / ".join(f"{load:.2f}" for load in load_before) + " (1/5/15 min)",
        "",
        "| server | processes | offered msg/s | in flight per conn | acked msg/s | vs 1 process | ack p99 ms | "
        "delivery p50 ms | delivery p99 ms | missing | server cores | server CPU µs/msg | client cores | "
        "other cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        base = one.get(row["window"]) if row["window"] else None  # open-loop rows achieve what is offered
        ratio = row["achieved"] / base["achieved"] if base and base["achieved"] else None
        lines.append(
            f"| {row['target']} | {row['server_processes']} | "
            f"{'closed loop' if row['offered'] is None else format(row['offered'], ',')} | {row['window'] or '–'} | "
            f"{row['achieved']:,.0f} | {'–' if ratio is None else f'{ratio:.2f}×'} | {_ms(row.get('ack_p99'))} | "
            f"{_ms(row.get('delivery_p50'))} | {_ms(row.get('delivery_p99'))} | {row['missing']:,.0f} | "
            f"{row['server_cores']:.2f} | "
            f"{'–' if row['server_us_per_msg'] is None else format(row['server_us_per_msg'], '.1f')} | "
            f"{row['client_cores']:.2f} | {row['other_cores']:.2f} |")
    lines += ["", "`other cores`: everything else on the machine during the run (this VM is shared; above ~0.1 the "
              "row is noisy). Server CPU is the whole process tree (control process, workers, journal thread)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the default profile")
    parser.add_argument("--smoke", action="store_true", help="20 pairs, 1,000 msg/s, 1 s")
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (1 = one process)")
    parser.add_argument("--sqlite-sync", choices=("FULL", "NORMAL"), help="NORMAL: no fsync per commit")
    args = parser.parse_args()
    if args.smoke:
        args.rate, args.pairs, args.duration = 1_000, 20, 1.0
    began = time.monotonic()
    load_before = os.getloadavg()
    rows = [row for workers in (int(n) for n in args.workers.split(",")) for row in measure(workers, args)]
    for row in rows:
        print(json.dumps({key: row.get(key) for key in ("target", "window", "offered", "achieved", "delivery_p99",
                                                         "missing", "server_cores", "server_us_per_msg")}))
    path = write_report("workers", render(rows, args, load_before))
    print(f"wrote {path} in {time.monotonic() - began:.0f} s", flush=True)


if __name__ == "__main__":
    main()
