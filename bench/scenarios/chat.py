"""Chat: visitors and agents in pairs, realistic message sizes; latency at fixed offered rates
(open loop) and the saturation rate (closed loop).

Run alone: python -m bench.scenarios.chat --quick
"""

from __future__ import annotations

import time

from bench.report import ScenarioReport
from bench.scenarios.measure import (
    CHAT_SIZES,
    Measured,
    Profile,
    latency_columns,
    loadgen_health,
    log,
    measured_run,
)
from bench.scenarios.targets import Target

NAME = "chat"

METHOD = """\
Pairs of connections share a conversation (Kefu: a visitor and the agent it was routed to, who
accepted it; peers: two members of one room). Both sides send. Message text sizes cycle through
{sizes} bytes. The server runs on core 0, the load generator on core 1 (`taskset`), unless a row
says otherwise.

- **Fixed offered rates (open loop).** Send times follow a fixed schedule (rate/s spread
  round-robin over all senders) whatever the server does; latency = receive time − *scheduled*
  send time, so a stalled server shows up as latency, not as fewer samples (no coordinated
  omission). `ack` = time to the sender's acknowledgement (Kefu: after the durable SQLite commit;
  peers: the hub's copy back to the sender), `delivery` = time to the partner's copy. Warm-up
  {warmup:g} s, measured {duration:g} s; messages not answered within the {drain:g} s drain are
  `missing`. `client send lag` = how late the load generator sent against its schedule (small
  means the client kept up).
- **Saturation (closed loop).** Every connection keeps {window} message(s) in flight and sends
  the next when its ack arrives; achieved acks/s over {duration:g} s is the saturation rate. A
  second run keeps {deep} in flight per connection (quick and full profiles): with one in flight a
  server that acks after an fsync is bounded by its commit latency, with more by its CPU; each row
  is compared with the Go hub's row of the same depth.
- CPU: server process tree and client from the kernel's accounting over the run; `other cores` is
  everything else on the machine during the run (the project's machines are shared; rows with
  other load above ~0.1 core are noisy). `server starved` = average number of server threads that
  were runnable but waiting for a CPU (schedstat): other jobs, or the server's own threads
  competing for its one pinned core; low while `server cores` < 1 means the server was idle or
  blocked (e.g. on fsync).
"""

RATE_COLUMNS = [
    ("target", "server", "str"), ("offered", "offered msg/s", "int"), ("achieved", "acked msg/s", "int"),
    ("ack_p50", "ack p50 ms", "us"), ("ack_p99", "ack p99 ms", "us"), ("ack_p999", "ack p99.9 ms", "us"),
    ("delivery_p50", "delivery p50 ms", "us"), ("delivery_p99", "delivery p99 ms", "us"),
    ("delivery_p999", "delivery p99.9 ms", "us"), ("missing", "missing", "int"),
    ("server_cores", "server cores", "f2"), ("server_wait_cores", "server starved (cores)", "f2"),
    ("server_us_per_msg", "server CPU µs/msg", "f1"), ("client_cores", "client cores", "f2"),
    ("send_lag_p99_us", "client send lag p99 ms", "us"), ("other_cores", "other cores", "f2"),
]

SATURATION_COLUMNS = [
    ("target", "server", "str"), ("in_flight", "in flight", "int"), ("achieved", "acked msg/s", "int"),
    ("per_core", "acked msg/s per server core", "int"), ("ratio_vs_go", "vs go-hub (per core)", "ratio"),
    ("ack_p50", "ack p50 ms", "us"), ("ack_p99", "ack p99 ms", "us"), ("delivery_p99", "delivery p99 ms", "us"),
    ("server_cores", "server cores", "f2"), ("server_wait_cores", "server starved (cores)", "f2"),
    ("server_us_per_msg", "server CPU µs/msg", "f1"), ("client_cores", "client cores", "f2"),
    ("other_cores", "other cores", "f2"),
]


def _row(target: Target, measured: Measured, offered: float | None, label: str | None = None) -> dict:
    load = measured.load
    ack = load.ack.summary_us()
    delivery = load.delivery.summary_us()
    seconds = load.measure_seconds or 1.0
    sent = load.counters.get("sent", 0)
    row = {
        "target": label or target.name,
        "offered": offered,
        "achieved": ack["count"] / seconds,
        "deliveries_per_s": delivery["count"] / seconds,
        "missing": max(0, load.counters.get("sent_measured", 0) - ack["count"])
        + max(0, load.counters.get("sent_measured", 0) - delivery["count"]),
        "server_cores": measured.server_cores,
        "server_wait_cores": measured.server_wait_cores,
        "server_us_per_msg": measured.server_cpu_seconds / sent * 1e6 if sent else None,
        "client_cores": measured.client_cores,
        "other_cores": measured.other_cores,
        "server_processes": len([p for p in target.processes() if p.name() != "taskset"]),
        **latency_columns("ack", ack),
        **latency_columns("delivery", delivery),
        **loadgen_health(load),
    }
    return row


def run(profile: Profile, targets: list[Target]) -> ScenarioReport:
    report = ScenarioReport(NAME, "Chat pairs: latency at fixed rates and saturation",
                            METHOD.format(sizes=CHAT_SIZES.replace(",", ", "), warmup=profile.warmup,
                                          duration=profile.duration, drain=profile.drain,
                                          window=profile.saturation_window, deep=profile.deep_window))
    rate_rows: list[dict] = []
    saturation_rows: list[dict] = []
    common = ["--sizes", CHAT_SIZES, "--warmup", str(profile.warmup), "--duration", str(profile.duration),
              "--drain", str(profile.drain), "--quiet"]
    for target in targets:
        two_core = target.cpus is None
        rates = profile.kefu_two_core_rates if two_core else profile.rates
        if two_core and not rates:
            continue
        log(f"[chat] {target.name}: starting, {profile.pairs} pairs")
        target.start()
        try:
            setup_started = time.monotonic()
            lines = target.chat_pairs(profile.pairs)
            log(f"[chat] {target.name}: set up in {time.monotonic() - setup_started:.1f} s")
            client_cpus = None if two_core else "1"
            for rate in rates:
                log(f"[chat] {target.name}: {rate:,} msg/s offered")
                measured = measured_run(target, lines, "rate", common, rate=rate, client_cpus=client_cpus)
                rate_rows.append(_row(target, measured, rate))
            windows = (profile.saturation_window, profile.deep_window) if profile.deep_window else (
                profile.saturation_window,)
            for window in windows if not two_core else ():
                log(f"[chat] {target.name}: saturation (closed loop, {window} in flight per connection)")
                measured = measured_run(target, lines, "closed", [*common, "--window", str(window)])
                row = _row(target, measured, None)
                row["window"] = window
                row["in_flight"] = len(lines) * window
                row["per_core"] = row["achieved"] / max(measured.server_cores, 0.05)
                saturation_rows.append(row)
        finally:
            target.stop()
    two_core_processes = {row["server_processes"] for row in rate_rows if row["target"] == "kefu-2c"}
    if two_core_processes == {1}:
        report.notes.append("kefu-2c ran as ONE server process (WORKERS is not acted on yet), so it could use "
                            "at most one core for Python work; the 2-core target needs worker processes.")
    go = {row["window"]: row for row in saturation_rows if row["target"] == "go-hub"}
    for row in saturation_rows:
        peer = go.get(row["window"])
        row["ratio_vs_go"] = row["per_core"] / peer["per_core"] if peer and peer["per_core"] else None
    report.sections.append(("Latency at fixed offered rates (open loop)", rate_rows, RATE_COLUMNS))
    report.sections.append(("Saturation (closed loop)", saturation_rows, SATURATION_COLUMNS))
    # "saturation" is the one-in-flight run the summary has always compared; "saturation_deep" the other.
    report.rows = [{"kind": "rate", **row} for row in rate_rows] + [
        {"kind": "saturation" if row["window"] == profile.saturation_window else "saturation_deep", **row}
        for row in saturation_rows]
    report.notes.append("Kefu does more per message than any peer: token auth at connect, JSON decode and "
                        "validation, a durable SQLite commit (fsync, group commit) before the ack, a "
                        "per-conversation seq. The peers only relay bytes.")
    report.notes.append("Kefu's per-connection frame-rate limit (50 frames/s by default, a policy) is lifted "
                        "for the bench (KEFU_RATE_PER_S) so it does not cap the measurement; the check still runs.")
    report.notes.append("`kefu-bin` rows: Kefu with the binary subprotocol kefu.bin.v1 (24-byte header + msgpack) "
                        "instead of JSON; same server, same scenario.")
    report.notes.append("`kefu-sync-normal` rows (only with `--targets ...,kefu-sync-normal`): SQLite "
                        "synchronous=NORMAL, i.e. no fsync per commit — shows what durability costs.")
    report.notes.append("`kefu-2c` rows: Kefu unpinned on both cores (WORKERS=2) with the load generator "
                        "sharing them — the docs/design.md target 'p99 < 10 ms at 10k msg/s on 2 cores'.")
    return report


if __name__ == "__main__":
    import sys

    from bench.run import main

    sys.exit(main(default_only=NAME))
