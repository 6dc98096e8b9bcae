"""One writer per database file: the native data plane submits to storage's own journal.

The journal's outcomes then have two consumers, storage's futures (by token) and the data plane's
sends; each submitter has its own completion queue, so neither sees the other's outcomes, and the
seqs of one conversation stay gap-free across both. The storage metrics see every committed batch,
including those that only the data plane wrote to.
"""

from __future__ import annotations

import asyncio
import json
import select
from pathlib import Path

from journal_plane import VISITOR, plane_on_journal
from kefu import compiled
from kefu.storage.base import NewMessage
from kefu.storage.sqlite import SqliteStorage


def journal_threads() -> int:
    """Native threads named like the journal's writer, in this process."""
    count = 0
    for comm in Path("/proc/self/task").glob("*/comm"):
        try:
            count += comm.read_text().strip() == "kefu-journal"
        except OSError:
            pass  # the thread ended meanwhile
    return count


def send(plane: compiled.DataPlane, conv: int, cmid: str) -> None:
    frame = {"t": "send", "conv": conv, "cmid": cmid, "text": f"text {cmid}"}
    assert plane.handle(VISITOR, json.dumps(frame).encode(), False, 1.0, 1.0)


def pump_until(plane: compiled.DataPlane, fd: int, acked: int, storage: SqliteStorage) -> list[dict]:
    """Pump the data plane's queue (as NativeDataPlane._pump does) until `acked` acks arrived."""
    frames: list[dict] = []
    done = 0
    while done < acked:
        assert select.select([fd], [], [], 10)[0], "the data plane's completion queue never signalled"
        storage.observe_journal_batches()
        done += plane.pump()[0]
        frames += [json.loads(payload) for _, payload, _ in plane.take_deliveries()]
    return frames


async def test_data_plane_and_storage_share_one_journal_and_get_their_own_outcomes(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "kefu.db")
    await storage.open()
    try:
        threads_before = journal_threads()
        plane, fd, conv, visitor = await plane_on_journal(storage)
        assert journal_threads() == threads_before == 1, "one journal thread writes the file"

        # Interleave both submitters while the journal waits, so their records share batches.
        storage.journal.acquire_write_lock()
        try:
            futures = []
            for n in range(20):
                send(plane, conv.id, f"dp{n}")
                futures.append(storage.submit_message(NewMessage(conv.id, f"st{n}", visitor.id, "visitor", "Ann",
                                                                 f"text st{n}")))
        finally:
            storage.journal.release_write_lock()
        frames = pump_until(plane, fd, 20, storage)
        stored_results = await asyncio.gather(*futures)

        plane_seqs = [frame["seq"] for frame in frames if frame["t"] == "ack"]
        storage_seqs = [result.seq for result in stored_results]
        assert len(plane_seqs) == 20 and all(result.created for result in stored_results)
        assert sorted(plane_seqs + storage_seqs) == list(range(1, 41)), "gap-free across both submitters"
        # The data plane fans out in seq order: storage's messages are handed to it as the hub does.
        for n, result in enumerate(stored_results):
            plane.deliver(conv.id, result.seq, result.ts, visitor.id, "visitor", "Ann", f"st{n}", "text",
                          f"text st{n}", None)
        frames += [json.loads(payload) for _, payload, _ in plane.take_deliveries()]
        assert [frame["seq"] for frame in frames if frame["t"] == "msg"] == list(range(1, 41))
        assert plane.stats()["in_flight"] == 0
        rows = await storage.messages_after(conv.id, 0, 100)
        assert {row.seq: row.cmid for row in rows} == {
            **{seq: f"dp{n}" for n, seq in enumerate(plane_seqs)},
            **{seq: f"st{n}" for n, seq in enumerate(storage_seqs)},
        }

        # A retried cmid through the data plane answers the original seq and stores nothing new.
        send(plane, conv.id, "dp3")
        (ack,) = [frame for frame in pump_until(plane, fd, 1, storage) if frame["t"] == "ack"]
        assert ack["seq"] == plane_seqs[3]
        assert len(await storage.messages_after(conv.id, 0, 100)) == 40

        # Closing the data plane stops its sends only; storage keeps writing through the journal.
        plane.close()
        assert not storage.journal.closed
        assert (await storage.append_message(NewMessage(conv.id, "after", visitor.id, "visitor", None, "x"))).seq == 41
    finally:
        await storage.close()


async def test_storage_metrics_count_batches_only_the_data_plane_wrote(tmp_path: Path) -> None:
    storage = SqliteStorage(tmp_path / "kefu.db")
    observed: list[tuple[int, float]] = []
    await storage.open()
    try:
        plane, fd, conv, _visitor = await plane_on_journal(storage, name=None)
        storage.commit_observer = lambda records, seconds: observed.append((records, seconds))
        storage.journal.acquire_write_lock()
        try:
            for n in range(30):
                send(plane, conv.id, f"m{n}")
        finally:
            storage.journal.release_write_lock()
        pump_until(plane, fd, 30, storage)
        storage.observe_journal_batches()
        assert sum(records for records, _ in observed) == 30, observed
        assert len(observed) <= 2 and all(seconds >= 0 for _, seconds in observed)
        assert storage.journal.take_batch_stats() == [], "each batch is reported once"
        plane.close()
    finally:
        await storage.close()
