"""Worker processes on this machine: Kefu with 1 and with 2 gateway workers, both unpinned on all
cores with the load generator sharing them (like the `kefu-2c` chat rows): delivery latency at a
fixed offered rate (open loop) and the saturation rate (closed loop). Prints one table.

    python -m bench.workers [--rate 10000] [--pairs 100] [--duration 4] [--sqlite-sync NORMAL]
"""

from __future__ import annotations

import argparse
import json

from bench.scenarios.chat import _row
from bench.scenarios.measure import CHAT_SIZES, log, measured_run
from bench.scenarios.targets import KefuTarget


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=10_000)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--sqlite-sync", choices=("FULL", "NORMAL"), help="NORMAL: no fsync per commit")
    args = parser.parse_args()
    common = ["--sizes", CHAT_SIZES, "--warmup", "1", "--duration", str(args.duration), "--drain", "3", "--quiet"]
    rows = []
    for workers in (int(n) for n in args.workers.split(",")):
        target = KefuTarget(cpus=None, workers=workers, sqlite_sync=args.sqlite_sync, name=f"kefu-{workers}w")
        target.start()
        try:
            lines = target.chat_pairs(args.pairs)
            log(f"[workers] {target.name}: {args.rate:,} msg/s offered")
            rows.append(_row(target, measured_run(target, lines, "rate", common, rate=args.rate, client_cpus=None),
                             args.rate))
            log(f"[workers] {target.name}: saturation (closed loop)")
            rows.append(_row(target, measured_run(target, lines, "closed", [*common, "--window", "1"],
                                                  client_cpus=None), None))
        finally:
            target.stop()
    keys = ("target", "offered", "achieved", "delivery_p50", "delivery_p99", "ack_p99", "missing", "server_cores",
            "server_us_per_msg", "client_cores", "server_processes")
    for row in rows:
        print(json.dumps({key: row.get(key) for key in keys}))


if __name__ == "__main__":
    main()
