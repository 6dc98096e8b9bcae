"""Connect storm: N clients connected, all dropped at once, all reconnect: time until every one
is back (Kefu: including `hello` → `welcome`).

Run alone: python -m bench.scenarios.storm --quick
"""

from __future__ import annotations

from bench.report import ScenarioReport
from bench.scenarios.idle import SINGLE_PROCESS_LIMIT
from bench.scenarios.measure import Profile, log, measured_run
from bench.scenarios.targets import KefuTarget, Target

NAME = "storm"
IN_FLIGHT = 500

METHOD = """\
{connections:,} clients connect, then all of them close their sockets at the same moment, wait
1 s, and reconnect with up to {in_flight} handshakes in flight per client process (a fleet of
browsers coming back after a server restart or a network blip). Measured: wall time until every
client is connected again and the per-connection handshake latency (TCP connect to the 101, or
to `welcome` for Kefu). Server on core 0, load generator on core 1.
"""

COLUMNS = [
    ("target", "server", "str"), ("connections", "clients", "int"), ("reconnected", "reconnected", "int"),
    ("reconnect_seconds", "time to all reconnected (s)", "f2"), ("rate", "handshakes/s", "int"),
    ("ratio_vs_go", "vs go-hub", "ratio"), ("p50", "handshake p50 ms", "us"), ("p99", "handshake p99 ms", "us"),
    ("max", "handshake max ms", "us"), ("other_cores", "other cores", "f2"),
]


def run(profile: Profile, targets: list[Target]) -> ScenarioReport:
    report = ScenarioReport(NAME, "Connect storm: everyone reconnects at once",
                            METHOD.format(connections=profile.storm_connections, in_flight=IN_FLIGHT))
    rows: list[dict] = []
    for target in targets:
        if target.chat_only:
            continue
        connections = profile.storm_connections
        if not isinstance(target, KefuTarget):
            connections = min(connections, SINGLE_PROCESS_LIMIT)
        elif connections > SINGLE_PROCESS_LIMIT and not target.workers:
            target.workers = -(-connections // 16_000)
        log(f"[storm] {target.name}: {connections:,} clients")
        target.start()
        try:
            lines = target.idle(connections)
            measured = measured_run(target, lines, "storm",
                                    ["--inflight", str(IN_FLIGHT), "--sources", "8", "--pause", "1"])
            load = measured.load
            handshake = load.connect.summary_us()
            reconnected = load.counters.get("reconnected", 0)
            rows.append({
                "target": target.name, "connections": connections, "reconnected": reconnected,
                "reconnect_seconds": load.reconnect_seconds,
                "rate": reconnected / load.reconnect_seconds if load.reconnect_seconds > 0 else None,
                "p50": handshake["p50"], "p99": handshake["p99"], "max": handshake["max"],
                "other_cores": measured.other_cores,
            })
        finally:
            target.stop()
    go = next((row for row in rows if row["target"] == "go-hub"), None)
    for row in rows:
        row["ratio_vs_go"] = row["rate"] / go["rate"] if go and go.get("rate") and row.get("rate") else None
    report.sections.append(("Reconnect storm", rows, COLUMNS))
    report.rows = rows
    return report


if __name__ == "__main__":
    import sys

    from bench.run import main

    sys.exit(main(default_only=NAME))
