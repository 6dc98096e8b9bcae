"""Run the bench suite: scenarios against Kefu and its peers, the micro-benchmark modules, a report.

    python -m bench.run --quick            # `make bench`: every scenario, small sizes (minutes)
    python -m bench.run --full             # long set: 100k idle connections, more rates (tens of minutes)
    python -m bench.run --smoke            # each scenario ~1 s with tiny sizes (the test suite runs this)
    python -m bench.run --quick --only chat,idle --targets kefu,go-hub

Writes bench/results/<scenario>.md, bench/results/latency.png and bench/results/README.md (summary
with Kefu/peer ratios and links). KEFU_BENCH_RESULTS_DIR (or --results-dir) writes elsewhere.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import common
from bench.loadgen.driver import BUILD_DIR
from bench.report import ScenarioReport, machine_section, markdown_table, plot_latency, render_scenario
from bench.scenarios import ceiling, chat, coldstart, idle, storm, supervisor
from bench.scenarios.measure import PROFILES, Profile, log
from bench.scenarios.targets import AiohttpHub, GoHub, KefuTarget, Target, WebsocketsHub

SCENARIOS: dict[str, Callable[[Profile, list[Target]], ScenarioReport]] = {
    ceiling.NAME: ceiling.run,
    chat.NAME: chat.run,
    supervisor.NAME: supervisor.run,
    idle.NAME: idle.run,
    storm.NAME: storm.run,
    coldstart.NAME: coldstart.run,
}

# Micro-benchmarks other modules own; each is `python -m bench.<name>` writing bench/results/<name>.md.
MICRO_MODULES = ("codec", "queue", "storage", "routing", "sentiment", "workers")
MICRO_TIMEOUT = {"smoke": 60, "quick": 600, "full": 1800}

TARGET_FACTORIES: dict[str, Callable[[], Target]] = {
    "kefu": lambda: KefuTarget(),
    "kefu-2c": lambda: KefuTarget(cpus=None, workers=2, name="kefu-2c"),
    "kefu-bin": lambda: KefuTarget(binary=True, name="kefu-bin"),
    "kefu-sync-normal": lambda: KefuTarget(sqlite_sync="NORMAL", name="kefu-sync-normal"),
    "go-hub": GoHub,
    "websockets": WebsocketsHub,
    "aiohttp": AiohttpHub,
}


# kefu-sync-normal (SQLite synchronous=NORMAL: no fsync per commit) is a diagnostic, run on request.
DEFAULT_TARGETS = ("kefu", "kefu-bin", "kefu-2c", "go-hub", "websockets", "aiohttp")


def make_targets(names: Sequence[str], profile: Profile) -> tuple[list[Target], list[str]]:
    """Instantiate the requested targets; Kefu is skipped with a reason when it cannot run."""
    notes: list[str] = []
    targets: list[Target] = []
    kefu_ok, kefu_reason = (True, "")
    if any(name.startswith("kefu") for name in names):
        kefu_ok, kefu_reason = KefuTarget.available()
        if not kefu_ok:
            notes.append(f"Kefu not measured: {kefu_reason}")
            log(f"[bench] Kefu not available: {kefu_reason}")
    for name in names:
        if name.startswith("kefu") and not kefu_ok:
            continue
        if name == "go-hub" and not shutil.which("go") and not (BUILD_DIR / "go_hub").exists():
            notes.append("go-hub not measured: `go` is not installed (scripts/ensure-system-packages.sh installs it)")
            continue
        if name == "kefu-2c" and not profile.kefu_two_core_rates:
            continue
        targets.append(TARGET_FACTORIES[name]())
    return targets, notes


def run_micro(name: str, profile: str, env: dict[str, str]) -> str:
    """Run `python -m bench.<name>` if it exists; a line for the summary either way."""
    if importlib.util.find_spec(f"bench.{name}") is None:
        return f"`bench.{name}`: not available (module not present)"
    help_text = subprocess.run([sys.executable, "-m", f"bench.{name}", "--help"], capture_output=True, text=True,
                               timeout=60, env=env, check=False).stdout
    args: list[str] = []
    if f"--{profile}" in help_text:
        args.append(f"--{profile}")
    elif profile == "smoke":
        return f"`bench.{name}`: skipped in the smoke run (it has no --smoke option)"
    log(f"[bench] micro-benchmark bench.{name} {' '.join(args)}")
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", f"bench.{name}", *args], env=env,
                              timeout=MICRO_TIMEOUT[profile], check=False)
    except subprocess.TimeoutExpired:
        return f"`bench.{name}`: timed out after {MICRO_TIMEOUT[profile]} s"
    if done.returncode != 0:
        return f"`bench.{name}`: failed (exit {done.returncode})"
    return f"[`bench.{name}`]({name}.md): done in {time.monotonic() - started:.0f} s"


def _ratio(kefu: float | None, peer: float | None) -> str:
    if not kefu or not peer:
        return "–"
    return f"{kefu / peer:.2f}×"


def summary_markdown(profile: Profile, reports: dict[str, ScenarioReport], micro_lines: list[str],
                     notes: list[str], command: str) -> str:
    """The README: headline numbers against docs/design.md targets and Kefu/peer ratios, with links."""
    header = (f"Generated by `{command}` (profile `{profile.name}`); do not edit by hand. "
              "How to run and what each scenario measures: [bench/README.md](../README.md).\n")
    parts = ["# Kefu bench results\n", header, machine_section()]
    parts.append("## Reports\n")
    for name, report in reports.items():
        parts.append(f"- [{report.title}]({name}.md)")
    parts.extend(f"- {line}" for line in micro_lines)
    parts.append("")
    if "chat" in reports:
        parts.append("![delivery latency vs offered load](latency.png)\n")
    parts.append("## Kefu against its peers (ratios > 1 favour Kefu unless marked)\n")
    rows = _ratio_rows(reports)
    if rows:
        parts.append(markdown_table(rows, [("metric", "metric", "str"), ("kefu", "Kefu", "str"),
                                           ("go-hub", "go-hub", "str"), ("websockets", "websockets", "str"),
                                           ("aiohttp", "aiohttp", "str")]))
        parts.append("")
    else:
        parts.append("_no Kefu rows in this run_\n")
    parts.append("## docs/design.md targets\n")
    parts.append(markdown_table(_target_rows(reports), [("target", "target", "str"), ("measured", "measured", "str"),
                                                        ("verdict", "verdict", "str")]))
    parts.append("")
    findings = _findings(reports)
    if findings:
        parts.append("## Where Kefu falls short, and why (derived from this run's numbers)\n")
        parts.extend(f"- {line}" for line in findings)
        parts.append("")
    if notes:
        parts.append("## Notes\n")
        parts.extend(f"- {note}" for note in notes)
        parts.append("")
    return "\n".join(parts)


def _by_target(rows: list[dict], **match: object) -> dict[str, dict]:
    return {row["target"]: row for row in rows if all(row.get(k) == v for k, v in match.items())}


def _ratio_rows(reports: dict[str, ScenarioReport]) -> list[dict]:
    peers = ("go-hub", "websockets", "aiohttp")
    out: list[dict] = []

    def add(metric: str, values: dict[str, float | None], fmt: Callable[[float], str], higher_is_better: bool) -> None:
        kefu = values.get("kefu")
        if kefu is None:
            return
        row = {"metric": metric, "kefu": fmt(kefu)}
        for peer in peers:
            peer_value = values.get(peer)
            if peer_value is None:
                row[peer] = "–"
                continue
            ratio = _ratio(kefu, peer_value) if higher_is_better else _ratio(peer_value, kefu)
            row[peer] = f"{fmt(peer_value)} (Kefu {ratio})"
        out.append(row)

    if "chat" in reports:
        saturation = _by_target(reports["chat"].rows, kind="saturation")
        add("saturation, acked msg/s per server core", {k: v.get("per_core") for k, v in saturation.items()},
            lambda v: f"{v:,.0f}", True)
        deep = _by_target(reports["chat"].rows, kind="saturation_deep")
        add("saturation with 8 in flight per connection, acked msg/s per server core",
            {k: v.get("per_core") for k, v in deep.items()}, lambda v: f"{v:,.0f}", True)
        add("server CPU µs/msg, 8 in flight (ratio = peer/Kefu)",
            {k: v.get("server_us_per_msg") for k, v in deep.items()}, lambda v: f"{v:.1f}", False)
        rates = [row for row in reports["chat"].rows if row.get("kind") == "rate" and row["target"] == "kefu"]
        for rate_row in rates:
            same = _by_target(reports["chat"].rows, kind="rate", offered=rate_row["offered"])
            add(f"delivery p99 at {rate_row['offered']:,} msg/s (ms; ratio = peer/Kefu)",
                {k: v.get("delivery_p99") for k, v in same.items()}, lambda v: f"{v / 1000:,.2f}", False)
            add(f"server CPU µs/msg at {rate_row['offered']:,} msg/s (ratio = peer/Kefu)",
                {k: v.get("server_us_per_msg") for k, v in same.items()}, lambda v: f"{v:.1f}", False)
    if "supervisor" in reports:
        rows = reports["supervisor"].rows
        for offered in sorted({row["offered"] for row in rows}):
            same = _by_target(rows, offered=offered)
            add(f"supervisor delivery p99 at {offered:,} msg/s (ms; ratio = peer/Kefu)",
                {k: v.get("delivery_p99") for k, v in same.items()}, lambda v: f"{v / 1000:,.2f}", False)
    if "idle" in reports:
        add("idle server memory KiB/conn (ratio = peer/Kefu)",
            {row["target"]: row.get("rss_per_conn") for row in reports["idle"].rows},
            lambda v: f"{v / 1024:.1f}", False)
    if "storm" in reports:
        add("reconnect storm handshakes/s", {row["target"]: row.get("rate") for row in reports["storm"].rows},
            lambda v: f"{v:,.0f}", True)
    if "coldstart" in reports:
        add("cold start s (ratio = peer/Kefu)",
            {row["target"]: row.get("first_connection_median") for row in reports["coldstart"].rows},
            lambda v: f"{v:.3f}", False)
    return out


def _findings(reports: dict[str, ScenarioReport]) -> list[str]:
    """Plain statements about the gaps, computed from the rows (no hand-written numbers)."""
    lines: list[str] = []
    chat_rows = reports["chat"].rows if "chat" in reports else []
    saturation = _by_target(chat_rows, kind="saturation")
    kefu, go = saturation.get("kefu"), saturation.get("go-hub")
    if kefu and go and kefu.get("server_us_per_msg") and go.get("server_us_per_msg"):
        lines.append(f"Server CPU per message at saturation: Kefu {kefu['server_us_per_msg']:.0f} µs, Go hub "
                     f"{go['server_us_per_msg']:.0f} µs ({kefu['server_us_per_msg'] / go['server_us_per_msg']:.1f}× "
                     "more): Kefu authorises, validates and stores every message and assigns its seq before the "
                     "ack; the hub copies bytes. Per-message CPU, not the transport, sets Kefu's ceiling.")
    binary = saturation.get("kefu-bin")
    if kefu and binary and kefu.get("server_us_per_msg") and binary.get("server_us_per_msg"):
        lines.append(f"Wire format: kefu.bin.v1 costs {binary['server_us_per_msg']:.0f} µs of server CPU per message "
                     f"at saturation against {kefu['server_us_per_msg']:.0f} µs for JSON: the codec is not where "
                     "the time goes." if binary["server_us_per_msg"] > 0.8 * kefu["server_us_per_msg"] else
                     f"Wire format: kefu.bin.v1 costs {binary['server_us_per_msg']:.0f} µs of server CPU per "
                     f"message at saturation against {kefu['server_us_per_msg']:.0f} µs for JSON.")
    if kefu:
        busy = kefu.get("server_cores", 0.0)
        other = kefu.get("other_cores", 0.0)
        starved = kefu.get("server_wait_cores", 0.0)
        if busy < 0.8:
            cause = ("mostly runnable but waiting for the CPU (other jobs on this shared machine, or its own "
                     "threads competing for the one pinned core)"
                     if starved > 0.5 * (1 - busy) else
                     "mostly not runnable: blocked on its commits (fsync per group commit) or idle between batches")
            lines.append(f"At saturation Kefu's process used only {busy:.2f} of its core (runnable-but-waiting "
                         f"{starved:.2f}, other processes {other:.2f} cores): {cause}.")
    two_core = [row for row in chat_rows if row["target"] == "kefu-2c" and row.get("delivery_p99")]
    for row in two_core:
        if row["delivery_p99"] >= 10_000 or row["missing"]:
            lines.append(f"2-core target: at {row['offered']:,} msg/s Kefu's delivery p99 was "
                         f"{row['delivery_p99'] / 1000:,.1f} ms with {row['server_processes']} server process(es) "
                         "(bench/results/workers.md compares one process with 2 workers at saturation).")
    idle_rows = {row["target"]: row for row in reports["idle"].rows} if "idle" in reports else {}
    if idle_rows.get("kefu", {}).get("rss_per_conn"):
        row = idle_rows["kefu"]
        if row["rss_per_conn"] >= 8 * 1024:
            lines.append(f"Idle memory: {row['rss_per_conn'] / 1024:.1f} KiB per connection against the 8 KiB "
                         "target (picows with a 1 KiB initial read buffer measured 8.9 KiB for the bare transport "
                         "before Kefu was built, docs/design.md): Kefu's per-connection objects add the rest.")
        if row["open"] < row["requested"]:
            lines.append(f"Idle connections: {row['open']:,.0f} of {row['requested']:,} opened — one process holds "
                         "at most 20,000 descriptors here; 100k needs worker processes.")
    cold = {row["target"]: row for row in reports["coldstart"].rows} if "coldstart" in reports else {}
    kefu_cold = cold.get("kefu", {}).get("first_connection_median")
    if kefu_cold and kefu_cold >= 0.5:
        lines.append(f"Cold start {kefu_cold:.2f} s against 0.5 s: interpreter start, imports (numpy, onnxruntime, "
                     "aiohttp, grpc) and model load happen before the first accept; profile with "
                     "`python -X importtime -m kefu.cli serve ...`.")
    return lines


def _target_rows(reports: dict[str, ScenarioReport]) -> list[dict]:
    rows: list[dict] = []

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else ("met" if ok else "NOT met")

    chat_rows = reports["chat"].rows if "chat" in reports else []
    saturation = _by_target(chat_rows, kind="saturation")
    kefu_sat, go_sat = saturation.get("kefu"), saturation.get("go-hub")
    ok = None if not (kefu_sat and go_sat) else kefu_sat["per_core"] > go_sat["per_core"]
    measured = (f"Kefu {kefu_sat['per_core']:,.0f} vs Go {go_sat['per_core']:,.0f} acked msg/s per core"
                if kefu_sat and go_sat else "–")
    rows.append({"target": "ahead of the Go hub per core on msg/s", "measured": measured, "verdict": verdict(ok)})
    kefu_rates = {row["offered"]: row for row in chat_rows if row.get("kind") == "rate" and row["target"] == "kefu"}
    go_rates = {row["offered"]: row for row in chat_rows if row.get("kind") == "rate" and row["target"] == "go-hub"}
    common_rates = sorted(set(kefu_rates) & set(go_rates))
    if common_rates:
        rate = common_rates[-1]
        k, g = kefu_rates[rate]["delivery_p99"], go_rates[rate]["delivery_p99"]
        rows.append({"target": "ahead of the Go hub on p99", "measured":
                     f"at {rate:,} msg/s: Kefu {k / 1000:,.2f} ms vs Go {g / 1000:,.2f} ms" if k and g else "–",
                     "verdict": verdict(k < g if k and g else None)})
    two_core = {row["offered"]: row for row in chat_rows if row["target"] == "kefu-2c"}
    if 10_000 in two_core and two_core[10_000].get("delivery_p99"):
        p99 = two_core[10_000]["delivery_p99"]
        rows.append({"target": "p99 delivery < 10 ms at 10k msg/s on 2 cores with storage",
                     "measured": f"{p99 / 1000:,.2f} ms (missing {two_core[10_000]['missing']:,.0f})",
                     "verdict": verdict(p99 < 10_000 and not two_core[10_000]["missing"])})
    else:
        rows.append({"target": "p99 delivery < 10 ms at 10k msg/s on 2 cores with storage", "measured": "–",
                     "verdict": verdict(None)})
    idle_rows = {row["target"]: row for row in reports["idle"].rows} if "idle" in reports else {}
    kefu_idle = idle_rows.get("kefu")
    if kefu_idle and kefu_idle.get("rss_per_conn"):
        rows.append({"target": "100k idle connections at < 8 KiB server memory each",
                     "measured": f"{kefu_idle['open']:,.0f} open, {kefu_idle['rss_per_conn'] / 1024:.1f} KiB/conn",
                     "verdict": verdict(kefu_idle["open"] >= 100_000 and kefu_idle["rss_per_conn"] < 8 * 1024)
                     if kefu_idle["requested"] >= 100_000 else
                     f"{'under' if kefu_idle['rss_per_conn'] < 8 * 1024 else 'OVER'} 8 KiB at "
                     f"{kefu_idle['requested']:,} (100k only in --full)"})
    else:
        rows.append({"target": "100k idle connections at < 8 KiB each", "measured": "–", "verdict": verdict(None)})
    cold = {row["target"]: row for row in reports["coldstart"].rows} if "coldstart" in reports else {}
    kefu_cold = cold.get("kefu", {}).get("first_connection_median")
    rows.append({"target": "cold start < 0.5 s (model loaded)",
                 "measured": f"{kefu_cold:.3f} s" if kefu_cold else "–",
                 "verdict": verdict(kefu_cold < 0.5 if kefu_cold else None)})
    rows.append({"target": "durable > 50k acked msg/s (SQLite, 2 cores)",
                 "measured": f"1-core saturation over WebSocket: {kefu_sat['achieved']:,.0f} acked msg/s; "
                             "storage alone: see storage.md" if kefu_sat else "see storage.md",
                 "verdict": "see storage.md" if not kefu_sat else verdict(kefu_sat["achieved"] > 50_000)})
    return rows


def main(argv: Sequence[str] | None = None, default_only: str | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="profile", action="store_const", const="quick")
    size.add_argument("--full", dest="profile", action="store_const", const="full")
    size.add_argument("--smoke", dest="profile", action="store_const", const="smoke")
    parser.add_argument("--only", default=default_only or "",
                        help="comma-separated scenarios and micro modules: " + ",".join([*SCENARIOS, *MICRO_MODULES]))
    parser.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                        help="comma-separated servers: " + ",".join(TARGET_FACTORIES))
    parser.add_argument("--results-dir", default=None, help="where reports go (default bench/results)")
    parser.add_argument("--no-micro", action="store_true", help="skip the micro-benchmark modules")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every started server is stopped by its scenario's `finally`.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(143))
    profile = PROFILES[args.profile or "quick"]
    if args.results_dir:
        os.environ["KEFU_BENCH_RESULTS_DIR"] = str(Path(args.results_dir).resolve())
        common.RESULTS_DIR = Path(os.environ["KEFU_BENCH_RESULTS_DIR"])
    results_dir = common.RESULTS_DIR
    only = [name for name in args.only.split(",") if name]
    unknown = [name for name in only if name not in SCENARIOS and name not in MICRO_MODULES]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    target_names = [name for name in args.targets.split(",") if name]
    if bad := [name for name in target_names if name not in TARGET_FACTORIES]:
        parser.error(f"unknown target(s): {', '.join(bad)}")
    command = "python -m bench.run --" + profile.name + (f" --only {args.only}" if only else "")
    started = time.monotonic()
    targets, notes = make_targets(target_names, profile)
    reports: dict[str, ScenarioReport] = {}
    failures: list[str] = []
    for name, scenario in SCENARIOS.items():
        if only and name not in only:
            continue
        log(f"[bench] scenario {name} ({profile.name})")
        try:
            report = scenario(profile, targets)
        except Exception as error:  # one broken scenario must not hide the others' results
            failures.append(f"{name}: {type(error).__name__}: {error}")
            log(f"[bench] scenario {name} FAILED: {error}")
            for target in targets:
                target.stop()
            continue
        reports[name] = report
        common.write_report(name, render_scenario(report, profile.name, command))
        if name == "chat":
            plot_latency(report.rows, results_dir / "latency.png",
                         f"Chat pairs: delivery latency vs offered load ({profile.name})")
    micro_lines: list[str] = []
    if not args.no_micro:
        env = {**os.environ, "KEFU_BENCH_RESULTS_DIR": str(results_dir)}
        for name in MICRO_MODULES:
            if only and name not in only:
                continue
            micro_lines.append(run_micro(name, profile.name, env))
    notes += [f"scenario {failure}" for failure in failures]
    notes.append(f"whole run took {time.monotonic() - started:.0f} s")
    if not only or len(reports) > 1:
        common.write_report("README", summary_markdown(profile, reports, micro_lines, notes, command))
    log(f"[bench] done in {time.monotonic() - started:.0f} s; reports in {results_dir}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
