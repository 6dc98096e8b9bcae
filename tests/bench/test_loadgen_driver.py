"""The driver's merging of per-process results: exact bucket sums, pairs never split."""

from __future__ import annotations

from bench.loadgen.driver import Histogram, LoadResult, SpecLine, _chunks


def test_histograms_from_several_processes_merge_bucket_by_bucket() -> None:
    merged = Histogram()
    merged.merge({"count": 3, "min": 100, "max": 1000, "sum": 1300.0, "buckets": [[100, 2], [1000, 1]]})
    merged.merge({"count": 2, "min": 50, "max": 1000, "sum": 1050.0, "buckets": [[50, 1], [1000, 1]]})
    assert merged.count == 5
    assert merged.min == 50 and merged.max == 1000
    assert merged.buckets == {50: 1, 100: 2, 1000: 2}
    assert merged.percentile(0.2) == 50
    assert merged.percentile(0.5) == 100
    assert merged.percentile(0.99) == 1000
    summary = merged.summary_us()
    assert summary["p50"] == 0.1 and summary["max"] == 1.0 and summary["mean"] == 0.47


def test_empty_histogram_has_no_percentiles() -> None:
    empty = Histogram()
    empty.merge({"count": 0, "min": 0, "max": 0, "sum": 0, "buckets": []})
    assert empty.percentile(0.99) is None
    assert empty.summary_us()["p99"] is None


def test_load_results_add_counters_and_keep_the_longest_phase() -> None:
    merged = LoadResult()
    merged.add({"sent": 10, "acks": 9, "connect_seconds": 1.5, "ack": {"count": 1, "min": 5, "max": 5, "sum": 5,
                                                                         "buckets": [[5, 1]]}})
    merged.add({"sent": 5, "acks": 5, "connect_seconds": 0.5})
    assert merged.processes == 2
    assert merged.counters["sent"] == 15 and merged.counters["acks"] == 14
    assert merged.connect_seconds == 1.5
    assert merged.ack.count == 1


def test_chunks_keep_conversation_pairs_in_one_process() -> None:
    lines = [SpecLine("S", "127.0.0.1", 1, f"/ws?room={i // 2}") for i in range(10)]
    chunks = _chunks(lines, 3)
    assert sum(len(chunk) for chunk in chunks) == 10
    for chunk in chunks:
        rooms = [line.path for line in chunk]
        for room in set(rooms):
            assert rooms.count(room) == 2, "a pair was split across processes"
