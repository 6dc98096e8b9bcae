"""Cold start: process exec to the first accepted WebSocket connection (Kefu: model loaded).

Run alone: python -m bench.scenarios.coldstart --quick
"""

from __future__ import annotations

import statistics
import time

from bench.report import ScenarioReport
from bench.scenarios.measure import Profile, log
from bench.scenarios.targets import KefuTarget, Target

NAME = "coldstart"

METHOD = """\
Each server is started {runs} time(s) from a fresh process (Kefu: a fresh data directory prepared
beforehand, so database creation is not counted; the sentiment model is loaded before Kefu says
ready). A probe thread connects to the WebSocket port every 2 ms from the moment of `exec` and
sends an upgrade request; the first HTTP answer (101 for peers; 401 for Kefu, whose WebSocket
port needs a token) is the first accepted connection. `ready line` is when the server printed
that it is ready. Median over the runs, min–max in brackets.
"""

COLUMNS = [
    ("target", "server", "str"), ("runs", "runs", "int"),
    ("first_connection", "exec → first accepted connection (s)", "str"),
    ("ready_line", "exec → ready line (s)", "str"),
]


def _spread(values: list[float]) -> str:
    if not values:
        return "–"
    return f"{statistics.median(values):.3f} [{min(values):.3f}–{max(values):.3f}]"


def run(profile: Profile, targets: list[Target]) -> ScenarioReport:
    report = ScenarioReport(NAME, "Cold start", METHOD.format(runs=profile.cold_start_runs))
    rows: list[dict] = []
    for target in targets:
        if target.chat_only:
            continue
        firsts: list[float] = []
        readies: list[float] = []
        for attempt in range(profile.cold_start_runs):
            log(f"[coldstart] {target.name}: run {attempt + 1}/{profile.cold_start_runs}")
            try:
                readies.append(target.start(probe_first_connection=True))
                # The ready line may come before the probe's first success: give the probe time.
                for _ in range(1000):
                    if target.first_connection_seconds is not None:
                        break
                    time.sleep(0.005)
                first = target.first_connection_seconds
                if first is not None:
                    firsts.append(first)
            finally:
                target.stop()
        rows.append({"target": target.name, "runs": profile.cold_start_runs,
                     "first_connection": _spread(firsts), "ready_line": _spread(readies),
                     "first_connection_median": statistics.median(firsts) if firsts else None,
                     "is_kefu": isinstance(target, KefuTarget)})
    report.sections.append(("Process start to first accepted connection", rows, COLUMNS))
    report.rows = rows
    return report


if __name__ == "__main__":
    import sys

    from bench.run import main

    sys.exit(main(default_only=NAME))
