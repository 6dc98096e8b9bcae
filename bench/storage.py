"""Storage micro-benchmark: durable (acknowledged) appends per second and append latency.

    python -m bench.storage [--smoke | --quick | --full | --seconds S] [--pg-dsn postgresql://…]

For SQLite synchronous=FULL, SQLite synchronous=NORMAL and PostgreSQL (synchronous_commit=on), with 1,
64 and 1024 concurrent appenders over 100 conversations, each appender loops: append, wait for the
ack, append again. An ack means committed (group commit: one fsync per batch). SQLite rows:
- `SqliteStorage.append_message`: the server's path, one asyncio future per message, written by the
  native journal (native/journal);
- the native journal driven directly (`Journal.submit` + `drain` on its eventfd, no future per
  message), Python still calling `submit` per message;
- the native journal fed from Rust, the way the native data plane feeds it: `Journal.bench_closed_loop`
  (native/journal/src/closed_loop.rs, a driver compiled into the extension for benchmarks only) runs
  the closed-loop appenders in Rust on one thread that polls its completion eventfd, drains each
  batch and submits every appender's next record (built like the data plane's sink builds it), with
  no Python per message; storage stays open around it, so its checkpointer thread runs as in the
  server, and the journal is storage's own (one writer per file, as the data plane uses it);
- the pure-Python group-commit writer this replaced (a Python thread running the reference twin's
  statements, fed by MpmcQueue), measured in the same run for comparison;
- one transaction (one fsync) per message, the way a naive server writes.
PostgreSQL rows: `PostgresStorage.append_message` (a future per message, group commit), and the native
data plane's path, record tuples carried in batches by `append_records` (one round trip per batch).
Runs on uvloop like the server. Writes bench/results/storage.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sqlite3
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path

import asyncpg
import uvloop
from kefu.compiled import Journal, MpmcQueue, QueueClosed, QueueEmpty
from kefu.reference.journal import ReferenceJournal
from kefu.storage import AppendResult, NewMessage, Storage
from kefu.storage.postgres import PostgresStorage
from kefu.storage.sqlite import SqliteStorage

from bench.common import machine_info, write_report

CONVERSATIONS = 100
CONCURRENCY_LEVELS = (1, 64, 1024)
JOURNAL_CONCURRENCY_LEVELS = (64, 1024, 4096)
NATIVE_CONCURRENCY_LEVELS = (1024, 4096, 16384)
# Chat-shaped load for the journal fed from Rust: every appender in a conversation of its own, as when
# each visitor of a busy site writes into their own chat.
SPREAD_CONVERSATIONS = 10_000
TEXT = "a customer-service message of typical length, about eighty characters long. 你好"

Append = Callable[[NewMessage], Awaitable[AppendResult]]


class Measurement:
    def __init__(self, label: str, concurrency: int, acked: int, seconds: float, latencies_ns: list[int],
                 cpu_seconds: float, writer_cpu_seconds: float | None = None):
        self.label = label
        self.concurrency = concurrency
        self.acked = acked
        self.seconds = seconds
        # CPU time of this whole process (event loop, writer threads) per acked message: unlike msg/s it
        # hardly depends on how much of the CPUs other jobs took during the run.
        self.cpu_us = cpu_seconds / acked * 1e6 if acked else float("nan")
        # The journal's writer thread alone: one core can write at most 1e6 / writer_us messages a second.
        self.writer_us = (writer_cpu_seconds / acked * 1e6 if acked and writer_cpu_seconds is not None
                          else float("nan"))
        latencies_ns.sort()
        self.p50_ms = latencies_ns[len(latencies_ns) // 2] / 1e6 if latencies_ns else float("nan")
        self.p99_ms = latencies_ns[int(len(latencies_ns) * 0.99)] / 1e6 if latencies_ns else float("nan")

    def show(self) -> None:
        print(f"  {self.label:<42} c={self.concurrency:<5} {self.rate:>10,.0f} acked/s  p50 {self.p50_ms:7.2f} ms"
              f"  p99 {self.p99_ms:7.2f} ms  cpu {self.cpu_us:6.1f} us/msg  writer {self.writer_us:5.1f} us/msg",
              flush=True)

    @property
    def rate(self) -> float:
        return self.acked / self.seconds


async def seed(storage: Storage) -> list[tuple[int, str]]:
    site = await storage.create_site("bench", ())
    conversations = []
    for _ in range(CONVERSATIONS):
        visitor = await storage.upsert_visitor(site.id, None, name=None, lang=None, geo=None, tags=())
        conv, _ = await storage.open_conversation(site.id, visitor.id)
        conversations.append((conv.id, visitor.id))
    return conversations


def settle_disk() -> None:
    """Write back what earlier rows left dirty in the page cache before a row starts: otherwise their
    files' writeback lands in this row's fsyncs and the rows measured late pay for the early ones."""
    os.sync()


async def drive(append: Append, conversations: list[tuple[int, str]], concurrency: int, seconds: float,
                label: str) -> Measurement:
    """`concurrency` closed-loop appenders for `seconds` (after a short warm-up that is not counted)."""
    latencies: list[int] = []
    acked = 0
    measuring = False
    stop = False

    async def appender(worker: int) -> None:
        nonlocal acked
        conv, sender = conversations[worker % len(conversations)]
        n = 0
        while not stop:
            n += 1
            started = time.perf_counter_ns()
            await append(NewMessage(conv, f"w{worker}-{n}", sender, "visitor", None, TEXT))
            if measuring:
                latencies.append(time.perf_counter_ns() - started)
                acked += 1

    settle_disk()
    tasks = [asyncio.create_task(appender(worker)) for worker in range(concurrency)]
    await asyncio.sleep(min(0.5, seconds / 4))
    measuring = True
    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.sleep(seconds)
    measuring = False
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    stop = True
    await asyncio.gather(*tasks)
    result = Measurement(label, concurrency, acked, elapsed, latencies, cpu)
    result.show()
    return result


class OneTransactionPerAppend:
    """The comparison: same schema and statements, but every append is its own transaction and fsync
    (what a server without group commit does), run on one worker thread off the event loop."""

    def __init__(self, path: Path):
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA synchronous = FULL")
        self._lock = threading.Lock()

    def _append_blocking(self, msg: NewMessage) -> AppendResult:
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            seq = cur.execute("UPDATE conversations SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq",
                              (msg.conv,)).fetchall()[0][0]
            ts = time.time()
            cur.execute(
                "INSERT INTO messages(conv, seq, cmid, sender_id, sender_role, sender_name, body, kind, meta, ts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, '{}', ?)",
                (msg.conv, seq, msg.cmid, msg.sender_id, msg.sender_role, msg.sender_name, msg.text, msg.kind, ts))
            cur.execute("COMMIT")
            return AppendResult(seq, ts, True)

    async def append(self, msg: NewMessage) -> AppendResult:
        return await asyncio.get_running_loop().run_in_executor(None, self._append_blocking, msg)

    def close(self) -> None:
        self._conn.close()


class PythonGroupCommit:
    """The writer the journal replaced, for the same-run comparison: one Python thread takes every
    pending append from MpmcQueue, writes them in one transaction with the reference twin's statements
    (kefu.reference.journal) and wakes the event loop once per batch."""

    def __init__(self, path: Path, synchronous: str):
        self._journal = ReferenceJournal(path, synchronous)
        self._queue = MpmcQueue(65_536)
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="bench-python-writer", daemon=True)
        self._thread.start()

    def append(self, msg: NewMessage) -> asyncio.Future[AppendResult]:
        future: asyncio.Future[AppendResult] = self._loop.create_future()
        record = (0, msg.conv, msg.cmid, msg.sender_id, msg.sender_role, msg.sender_name, msg.text, msg.kind, "{}",
                  None)
        if not self._queue.try_put((record, future)):
            raise RuntimeError("bench writer queue full")
        return future

    def _run(self) -> None:
        while True:
            try:
                items = self._queue.get_many(4096, 1.0)
            except QueueEmpty:
                continue
            except QueueClosed:
                return
            outcomes = self._journal.append_batch([record for record, _ in items])
            self._loop.call_soon_threadsafe(_settle_python_batch, [future for _, future in items], outcomes)

    def close(self) -> None:
        self._queue.close()
        self._thread.join()
        self._journal.close()


def _settle_python_batch(futures: list[asyncio.Future[AppendResult]], outcomes: list[tuple]) -> None:
    for future, (_, _, seq, ts, duplicate, _, _) in zip(futures, outcomes):
        future.set_result(AppendResult(seq, ts, not duplicate))


async def drive_journal(journal: Journal, conversations: list[tuple[int, str]], concurrency: int,
                        seconds: float, label: str) -> Measurement:
    """`concurrency` closed-loop appenders on the journal itself: each outcome (drained once per batch
    when the eventfd fires) immediately submits that appender's next message. No future per message."""
    loop = asyncio.get_running_loop()
    started_ns = [0] * concurrency
    sent = [0] * concurrency
    latencies: list[int] = []
    counters = {"acked": 0}
    state = {"measuring": False, "stop": False}

    def submit(worker: int) -> None:
        conv, sender = conversations[worker % len(conversations)]
        sent[worker] += 1
        started_ns[worker] = time.perf_counter_ns()
        journal.submit(sent[worker] * concurrency + worker, conv, f"w{worker}-{sent[worker]}", sender, "visitor",
                       None, TEXT, "text", "{}")

    def on_outcomes() -> None:
        now = time.perf_counter_ns()
        for token, _, _, _, _, error, detail in journal.drain():
            if error is not None:
                raise RuntimeError(f"journal failed: {error} {detail}")
            worker = token % concurrency
            if state["measuring"]:
                latencies.append(now - started_ns[worker])
                counters["acked"] += 1
            if not state["stop"]:
                submit(worker)

    settle_disk()
    loop.add_reader(journal.completion_fd, on_outcomes)
    try:
        for worker in range(concurrency):
            submit(worker)
        await asyncio.sleep(min(0.5, seconds / 4))
        state["measuring"] = True
        started, cpu_started, writer_started = time.perf_counter(), time.process_time(), journal.writer_cpu
        await asyncio.sleep(seconds)
        state["measuring"] = False
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        writer_cpu = journal.writer_cpu - writer_started
        state["stop"] = True
        while journal.in_flight:
            await asyncio.sleep(0.01)
    finally:
        loop.remove_reader(journal.completion_fd)
    journal.drain()
    result = Measurement(label, concurrency, counters["acked"], elapsed, latencies, cpu, writer_cpu)
    result.show()
    return result


async def new_database(path: Path, *, seeded: bool = True) -> list[tuple[int, str]]:
    """A database file with Kefu's schema and, when `seeded`, the bench's conversations (returned)."""
    storage = SqliteStorage(path)
    await storage.open()
    try:
        return await seed(storage) if seeded else []
    finally:
        await storage.close()


def seed_many(path: Path, count: int) -> list[tuple[int, str]]:
    """`count` open conversations, one visitor each, written straight into a migrated database (the
    storage API would take a round trip per row, which is not what is measured here)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO sites(key, name, allowed_origins, routing, created_at) "
                     "VALUES ('s_bench', 'bench', '[]', '{}', 0)")
        site = conn.execute("SELECT id FROM sites WHERE key = 's_bench'").fetchone()[0]
        visitors = [f"v_bench{n}" for n in range(count)]
        conn.executemany("INSERT INTO visitors(id, site_id, tags, created_at) VALUES (?, ?, '[]', 0)",
                         [(visitor, site) for visitor in visitors])
        conn.executemany("INSERT INTO conversations(site_id, visitor_id, state, created_at, tags) "
                         "VALUES (?, ?, 'queued', 0, '[]')", [(site, visitor) for visitor in visitors])
        conn.execute("COMMIT")
        return conn.execute("SELECT id, visitor_id FROM conversations ORDER BY id").fetchall()
    finally:
        conn.close()


async def run_native(path: Path, synchronous: str, conversations: list[tuple[int, str]], concurrency: int,
                     seconds: float, label: str) -> Measurement:
    """The journal fed from Rust (as the data plane feeds it): storage open, its journal shared."""
    storage = SqliteStorage(path, synchronous=synchronous)  # type: ignore[arg-type]
    await storage.open()
    try:
        if not conversations:
            conversations = await seed(storage)
        settle_disk()
        report = await asyncio.get_running_loop().run_in_executor(
            None, storage.journal.bench_closed_loop, conversations, concurrency, min(0.5, seconds / 4), seconds)
    finally:
        await storage.close()
    if report["failed"]:
        raise RuntimeError(f"the journal failed {report['failed']} appends")
    result = Measurement(label, concurrency, int(report["acked"]), report["seconds"], [], report["cpu_seconds"],
                         report["writer_cpu_seconds"])
    result.p50_ms, result.p99_ms = report["p50_ms"], report["p99_ms"]
    result.show()
    return result


async def bench_journal_native(synchronous: str, seconds: float, workdir: Path) -> list[Measurement]:
    results = []
    for concurrency in NATIVE_CONCURRENCY_LEVELS:
        path = workdir / f"bench-native-{synchronous}-{concurrency}.db"
        results.append(await run_native(path, synchronous, [], concurrency, seconds,
                                        f"SQLite {synchronous}, native journal fed from Rust"))
    path = workdir / f"bench-native-spread-{synchronous}.db"
    await new_database(path, seeded=False)
    conversations = seed_many(path, SPREAD_CONVERSATIONS)
    results.append(await run_native(
        path, synchronous, conversations, SPREAD_CONVERSATIONS, seconds,
        f"SQLite {synchronous}, native journal fed from Rust, one conversation per appender"))
    return results


async def bench_journal(synchronous: str, seconds: float, workdir: Path) -> list[Measurement]:
    results = []
    for concurrency in JOURNAL_CONCURRENCY_LEVELS:
        path = workdir / f"bench-journal-{synchronous}-{concurrency}.db"
        conversations = await new_database(path)
        journal = Journal(path, synchronous)
        try:
            results.append(await drive_journal(journal, conversations, concurrency, seconds,
                                               f"SQLite {synchronous}, native journal direct"))
        finally:
            journal.close()
    return results


async def bench_python_writer(seconds: float, workdir: Path) -> list[Measurement]:
    results = []
    for concurrency in (64, 1024):
        path = workdir / f"bench-python-writer-{concurrency}.db"
        conversations = await new_database(path)
        writer = PythonGroupCommit(path, "FULL")
        try:
            results.append(await drive(writer.append, conversations, concurrency, seconds,
                                       "SQLite FULL, pure-Python writer (before)"))
        finally:
            writer.close()
    return results


async def bench_sqlite(synchronous: str, seconds: float, workdir: Path) -> list[Measurement]:
    results = []
    for concurrency in CONCURRENCY_LEVELS:
        path = workdir / f"bench-{synchronous}-{concurrency}.db"
        storage = SqliteStorage(path, synchronous=synchronous)  # type: ignore[arg-type]
        await storage.open()
        try:
            conversations = await seed(storage)
            results.append(await drive(storage.append_message, conversations, concurrency, seconds,
                                       f"SQLite {synchronous}, SqliteStorage (journal)"))
        finally:
            await storage.close()
    return results


async def bench_baseline(seconds: float, workdir: Path) -> Measurement:
    path = workdir / "bench-baseline.db"
    storage = SqliteStorage(path)  # creates the schema and the rows to write into
    await storage.open()
    conversations = await seed(storage)
    await storage.close()
    naive = OneTransactionPerAppend(path)
    try:
        return await drive(naive.append, conversations, 64, seconds, "SQLite FULL, one transaction per append")
    finally:
        naive.close()


async def drive_records(storage: Storage, conversations: list[tuple[int, str]], concurrency: int, seconds: float,
                        label: str) -> Measurement:
    """The native data plane's PostgreSQL path: `concurrency` appenders with one message in flight
    each, carried as record tuples by one batch loop (`Storage.append_records`, as
    `NativeDataPlane.flush` does); every appender is ready again when its batch returns, so each
    batch holds one record per appender."""
    latencies: list[int] = []
    sent = [0] * concurrency
    state = {"acked": 0, "measuring": False, "stop": False}

    async def batches() -> None:
        while not state["stop"]:
            records = []
            for worker in range(concurrency):
                conv, sender = conversations[worker % len(conversations)]
                sent[worker] += 1
                records.append((worker, conv, sender, "visitor", None, f"w{worker}-{sent[worker]}", "text", TEXT,
                                None, 0.0))
            started = time.perf_counter_ns()
            outcomes = await storage.append_records(records)
            failed = [outcome for outcome in outcomes if outcome[4] != "created"]
            if failed:
                raise RuntimeError(f"{len(failed)} appends failed, e.g. {failed[0]}")
            if state["measuring"]:
                latencies.extend([time.perf_counter_ns() - started] * len(outcomes))
                state["acked"] += len(outcomes)

    settle_disk()
    task = asyncio.create_task(batches())
    await asyncio.sleep(min(0.5, seconds / 4))
    state["measuring"] = True
    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.sleep(seconds)
    state["measuring"] = False
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    state["stop"] = True
    await task
    result = Measurement(label, concurrency, int(state["acked"]), elapsed, latencies, cpu)
    result.show()
    return result


async def bench_postgres(dsn: str, seconds: float) -> tuple[list[Measurement], str]:
    schema = "kefu_bench_" + secrets.token_hex(4)
    admin = await asyncpg.connect(dsn)
    version = await admin.fetchval("SHOW server_version")
    await admin.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in dsn else "?"
    results = []
    try:
        for concurrency in CONCURRENCY_LEVELS:
            storage = PostgresStorage(f"{dsn}{separator}search_path={schema}")
            await storage.open()
            try:
                conversations = await seed(storage)
                results.append(await drive(storage.append_message, conversations, concurrency, seconds,
                                           "PostgreSQL sync_commit=on, group commit"))
            finally:
                await storage.close()
            await admin.execute(f'DROP SCHEMA "{schema}" CASCADE; CREATE SCHEMA "{schema}"')
        for concurrency in CONCURRENCY_LEVELS[1:]:
            storage = PostgresStorage(f"{dsn}{separator}search_path={schema}")
            await storage.open()
            try:
                conversations = await seed(storage)
                results.append(await drive_records(storage, conversations, concurrency, seconds,
                                                   "PostgreSQL sync_commit=on, data plane batches"))
            finally:
                await storage.close()
            await admin.execute(f'DROP SCHEMA "{schema}" CASCADE; CREATE SCHEMA "{schema}"')
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()
    return results, version


def load_average() -> str:
    """The 1-minute load average: other work on the machine skews every number, so say how much."""
    try:
        with open("/proc/loadavg", encoding="ascii") as loadavg:
            return loadavg.read().split()[0]
    except OSError:
        return "unknown"


def report(results: list[Measurement], baseline: Measurement, pg_version: str | None, pg_note: str,
           seconds: float, loads: tuple[str, str]) -> str:
    info = machine_info()
    versions = dict(info["versions"])  # type: ignore[arg-type]
    versions["sqlite"] = sqlite3.sqlite_version
    versions["asyncpg"] = metadata.version("asyncpg")
    if pg_version:
        versions["postgresql"] = pg_version
    group_commit_64 = next(r for r in results if r.label.startswith("SQLite FULL") and r.concurrency == 64)
    lines = [
        "# Storage: durable appends",
        "",
        (
            "`python -m bench.storage` — closed-loop appenders (append, wait for the ack, repeat) over "
            f"{CONVERSATIONS} conversations, {seconds:g} s per row after a warm-up. An ack means the batch "
            "holding the message is committed (SQLite WAL; PostgreSQL with synchronous_commit=on), so every "
            "acked message survives kill -9 (and with SQLite FULL / PostgreSQL, power loss)."
        ),
        "",
        (
            f"Machine: {info['cpu_model']}, {info['cores']} cores, {info['memory_gib']} GiB, "
            f"Linux {info['kernel']}, Python {info['python']}, measured {info['date_utc']} UTC. Database files "
            "on the machine's local disk (tempfile directory); PostgreSQL on the same machine over TCP loopback. "
            f"1-minute load average at start / end: {loads[0]} / {loads[1]} (on {info['cores']} cores; "
            "anything above ~1 means other jobs shared the CPUs and the numbers are lower bounds)."
        ),
        "",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in sorted(versions.items())),
        "",
        "| store | appenders | acked msg/s | p50 append (ms) | p99 append (ms) | process CPU per ack (µs) "
        "| journal writer CPU per ack (µs) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in [*results, baseline]:
        writer = "" if r.writer_us != r.writer_us else f"{r.writer_us:.1f}"  # NaN: not a direct journal row
        lines.append(f"| {r.label} | {r.concurrency} | {r.rate:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
                     f"| {r.cpu_us:.1f} | {writer} |")
    lines += [
        "",
        (
            f"Group commit vs one transaction per append (SQLite FULL, 64 appenders): "
            f"**{group_commit_64.rate / baseline.rate:.1f}x** the acked throughput "
            f"({group_commit_64.rate:,.0f} vs {baseline.rate:,.0f} msg/s)."
        ),
    ]
    python_writer = max((r for r in results if "pure-Python writer" in r.label), key=lambda r: r.rate)
    journal_storage = max((r for r in results if r.label == "SQLite FULL, SqliteStorage (journal)"),
                          key=lambda r: r.rate)
    journal_direct = max((r for r in results if r.label == "SQLite FULL, native journal direct"),
                         key=lambda r: r.rate)
    lines += [
        "",
        (
            "Native journal vs the pure-Python writer it replaced, same run, SQLite FULL, best row of each: "
            f"SqliteStorage on the journal **{journal_storage.rate / python_writer.rate:.1f}x** "
            f"({journal_storage.rate:,.0f} vs {python_writer.rate:,.0f} msg/s), the journal driven directly "
            f"**{journal_direct.rate / python_writer.rate:.1f}x** ({journal_direct.rate:,.0f} msg/s at "
            f"{journal_direct.concurrency} appenders)."
        ),
    ]
    native = max((r for r in results if r.label == "SQLite FULL, native journal fed from Rust"),
                 key=lambda r: r.rate)
    lines += [
        "",
        (
            f"The journal fed from Rust (the data plane's way), SQLite FULL: **{native.rate:,.0f}** acked msg/s "
            f"at {native.concurrency} appenders (target 150,000), p50 {native.p50_ms:.1f} ms, p99 "
            f"{native.p99_ms:.1f} ms; its writer thread spent {native.writer_us:.1f} µs of CPU per message, "
            f"so its CPU alone would allow ~{1e6 / native.writer_us:,.0f} msg/s on a core of its own."
        ),
    ]
    spread = next((r for r in results if r.label.startswith("SQLite FULL") and "one conversation per" in r.label),
                  None)
    if spread is not None:
        lines += [
            "",
            (
                f"Chat-shaped load (each of {spread.concurrency:,} appenders in a conversation of its own): "
                f"**{spread.rate:,.0f}** acked msg/s, writer {spread.writer_us:.1f} µs per message (CPU alone: "
                f"~{1e6 / spread.writer_us:,.0f} msg/s per core). Messages of different conversations share no "
                "b-tree page (the table is clustered by (conv, seq), the idempotency index by (conv, sender, "
                "cmid)), so each one makes its batch write about two 4 KiB WAL frames; with 100 conversations "
                "the messages of a batch share their conversation's pages."
            ),
        ]
    if pg_note:
        lines += ["", pg_note]
    lines += [
        "",
        (
            "Latency is measured by the appender (from the call to the resolved ack) and includes waiting "
            "for the batch in progress; with 1024 appenders it is mostly queueing (Little's law: "
            "appenders / throughput)."
        ),
        "",
        (
            "Process CPU per ack is the CPU time of the benchmark process (event loop, writer threads, "
            "checkpointer) during the measured seconds divided by the acked messages; for PostgreSQL the "
            "server's own CPU is not in it. 1,000,000 / that number is what one fully available core "
            "would ack per second for that row's work in this process. Journal writer CPU per ack is "
            "the journal thread's own CPU time (SQLite, the kernel's WAL writes and fsync work, "
            "publishing outcomes; `Journal.writer_cpu`) over the acked messages: the writer is one "
            "thread, so 1,000,000 / that number bounds the rows that drive the journal directly."
        ),
        "",
        (
            "\"Fed from Rust\" rows: `Journal.bench_closed_loop` (native/journal/src/closed_loop.rs) runs "
            "the appenders in Rust on one thread, as the native data plane does: it sleeps in poll(2) on "
            "its own completion eventfd, drains each batch and submits each appender's next record "
            "(owned strings copied as the data plane's sink copies them). SqliteStorage stays open around "
            "it and it drives storage's own journal, so the checkpointer thread runs as in the server."
        ),
    ]
    return "\n".join(lines)


async def main(seconds: float, pg_dsn: str) -> None:
    load_at_start = load_average()
    results: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="kefu-bench-storage-") as workdir:
        for synchronous in ("FULL", "NORMAL"):
            print(f"SQLite synchronous={synchronous}", flush=True)
            results += await bench_sqlite(synchronous, seconds, Path(workdir))
            results += await bench_journal(synchronous, seconds, Path(workdir))
            results += await bench_journal_native(synchronous, seconds, Path(workdir))
        print("the pure-Python writer the journal replaced", flush=True)
        results += await bench_python_writer(seconds, Path(workdir))
        print("comparison", flush=True)
        baseline = await bench_baseline(seconds, Path(workdir))
    pg_version, pg_note = None, ""
    print("PostgreSQL", flush=True)
    try:
        pg_results, pg_version = await bench_postgres(pg_dsn, seconds)
        results += pg_results
    except (OSError, asyncpg.PostgresError) as exc:
        pg_note = f"PostgreSQL at {pg_dsn} was not measured: {exc}"
        print("  " + pg_note, flush=True)
    markdown = report(results, baseline, pg_version, pg_note, seconds, (load_at_start, load_average()))
    path = write_report("storage", markdown)
    print(f"wrote {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    profile = parser.add_mutually_exclusive_group()
    profile.add_argument("--smoke", action="store_const", dest="seconds", const=0.3,
                         help="0.3 s per row: checks that it runs (~10 s)")
    profile.add_argument("--quick", action="store_const", dest="seconds", const=2.0,
                         help="2 s per row, the default (~30 s)")
    profile.add_argument("--full", action="store_const", dest="seconds", const=6.0, help="6 s per row (~75 s)")
    profile.add_argument("--seconds", type=float, dest="seconds", help="measured seconds per row")
    parser.add_argument("--pg-dsn", default=os.environ.get("KEFU_TEST_PG_DSN",
                                                           "postgresql://postgres@127.0.0.1:5432/test"))
    parser.set_defaults(seconds=2.0)
    arguments = parser.parse_args()
    uvloop.run(main(arguments.seconds, arguments.pg_dsn))
