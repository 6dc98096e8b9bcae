"""Supervisor fan-in: one agent watching many conversations; every visitor message in every one
of them must reach that single connection (the issue's "broadcast fan-out" scenario).

Run alone: python -m bench.scenarios.supervisor --quick
"""

from __future__ import annotations

from bench.report import ScenarioReport
from bench.scenarios.chat import _row
from bench.scenarios.measure import CHAT_SIZES, Profile, log, measured_run
from bench.scenarios.targets import Target

NAME = "supervisor"

METHOD = """\
One receiving connection watches {conversations:,} conversations (Kefu: one agent with capacity
{conversations:,} to whom every conversation was routed and who accepted them all; peers: a
member of room "*", which receives every room's messages). Each conversation's visitor sends; the
total offered rate is fixed (open loop, scheduled send times, warm-up {warmup:g} s, measured
{duration:g} s). `delivery` is the time until the supervisor's socket has the message, `ack` the
time until the sender's acknowledgement. Server on core 0, load generator on core 1.
"""

COLUMNS = [
    ("target", "server", "str"), ("offered", "offered msg/s", "int"), ("achieved", "acked msg/s", "int"),
    ("deliveries_per_s", "delivered to supervisor /s", "int"), ("ack_p99", "ack p99 ms", "us"),
    ("delivery_p50", "delivery p50 ms", "us"), ("delivery_p99", "delivery p99 ms", "us"),
    ("delivery_max", "delivery max ms", "us"), ("missing", "missing", "int"),
    ("server_cores", "server cores", "f2"), ("server_wait_cores", "server starved (cores)", "f2"),
    ("server_us_per_msg", "server CPU µs/msg", "f1"), ("other_cores", "other cores", "f2"),
]


def run(profile: Profile, targets: list[Target]) -> ScenarioReport:
    report = ScenarioReport(NAME, "Supervisor: one connection watching many conversations",
                            METHOD.format(conversations=profile.supervised, warmup=profile.warmup,
                                          duration=profile.duration))
    rows: list[dict] = []
    args = ["--sizes", CHAT_SIZES, "--warmup", str(profile.warmup), "--duration", str(profile.duration),
            "--drain", str(profile.drain), "--quiet"]
    for target in targets:
        if target.chat_only:
            continue
        log(f"[supervisor] {target.name}: starting, {profile.supervised:,} conversations")
        target.start()
        try:
            lines = target.supervised(profile.supervised)
            for rate in profile.supervised_rates:
                log(f"[supervisor] {target.name}: {rate:,} msg/s offered")
                rows.append(_row(target, measured_run(target, lines, "rate", args, rate=rate), rate))
        finally:
            target.stop()
    report.sections.append(("Fan-in to one supervisor connection", rows, COLUMNS))
    report.notes.append("200 conversations: Kefu's `hello` subscribes an agent to at most 200 open conversations "
                        "(the storage listing's default limit), so a supervisor of more conversations would miss "
                        "live messages after a reconnect; measured with 1,000 it received 20 % of them.")
    report.rows = rows
    return report


if __name__ == "__main__":
    import sys

    from bench.run import main

    sys.exit(main(default_only=NAME))
