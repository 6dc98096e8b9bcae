"""The load generator's own ceiling, against a trivial echo server.

Run alone: python -m bench.scenarios.ceiling --quick
"""

from __future__ import annotations

from bench.report import ScenarioReport
from bench.scenarios.measure import Profile, log, measured_run
from bench.scenarios.targets import EchoServer, Target

NAME = "loadgen"

METHOD = """\
kefuload (bench/loadgen/kefuload.c: one thread, epoll, masked frames with a zero key) runs on core
1 against a picows echo server on core 0 ({connections} connections, closed loop, window 1 and 8
messages in flight per connection, 64–800 byte messages). Its CPU per round trip (one send, one
receive, one latency sample) is the number that matters: 1 / that cost is the message rate one
client core can drive and time. Scenarios stay far below it or use several client processes.
"""

COLUMNS = [
    ("window", "in flight per conn", "int"), ("achieved", "round trips/s", "int"),
    ("client_cores", "client cores", "f2"), ("client_us", "client CPU µs per round trip", "f2"),
    ("ceiling", "client ceiling (round trips/s per core)", "int"), ("server_cores", "echo server cores", "f2"),
    ("send_lag_p99", "client send lag p99 ms", "us"), ("other_cores", "other cores", "f2"),
]


def run(profile: Profile, _targets: list[Target]) -> ScenarioReport:
    report = ScenarioReport(NAME, "Load generator ceiling", METHOD.format(connections=profile.ceiling_connections))
    rows: list[dict] = []
    echo = EchoServer()
    echo.start()
    try:
        lines = [echo.chat_pairs(1)[0]] * profile.ceiling_connections
        for window in (1, 8):
            log(f"[loadgen] echo ceiling, window {window}")
            measured = measured_run(echo, lines, "closed",
                                    ["--window", str(window), "--sizes", "64,200,800", "--warmup",
                                     str(profile.warmup), "--duration", str(profile.duration), "--quiet"])
            load = measured.load
            round_trips = load.counters.get("acks", 0)
            client_us = load.counters["client_cpu_seconds"] / round_trips * 1e6 if round_trips else None
            rows.append({"window": window, "achieved": load.ack.count / (load.measure_seconds or 1),
                         "client_cores": measured.client_cores, "client_us": client_us,
                         "ceiling": 1e6 / client_us if client_us else None,
                         "server_cores": measured.server_cores,
                         "send_lag_p99": load.send_lag.summary_us()["p99"], "other_cores": measured.other_cores})
    finally:
        echo.stop()
    report.sections.append(("Echo, closed loop", rows, COLUMNS))
    report.rows = rows
    return report


if __name__ == "__main__":
    import sys

    from bench.run import main

    sys.exit(main(default_only=NAME))
