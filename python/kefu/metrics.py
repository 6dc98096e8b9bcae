"""Process metrics, exposed at /metrics in Prometheus' text format by prometheus-client.

The hot path does an integer add or a bisect per observation on plain Python objects here; the
prometheus-client collector turns them into metric families only when /metrics is scraped. That keeps
a message's cost independent of the exposition library, and the names stable: every name the server
exposed before prometheus-client (kefu_ack_latency_seconds, kefu_fanout_latency_seconds,
kefu_connections, kefu_*_total …) is exposed unchanged. The list is in docs/deployment.md.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

# Latency buckets in seconds: 50 µs … 5 s, dense where chat latency lives (sub-10 ms).
LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                   0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Storage batch sizes: one request … the native journal's default cap (16,384 records per commit).
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)


class Histogram:
    __slots__ = ("bounds", "help", "name", "native", "own_count", "own_counts", "own_total")

    def __init__(self, name: str, help_text: str, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.name = name
        self.help = help_text
        self.bounds = bounds
        self.own_counts = [0] * (len(bounds) + 1)
        self.own_total = 0.0
        self.own_count = 0
        # Observations recorded outside Python (the native data plane): () -> (bucket counts, sum).
        # Read only when the histogram is read, so the native path costs Python nothing per message.
        self.native: Callable[[], tuple[list[int], float]] | None = None

    def observe(self, value: float) -> None:
        self.own_counts[bisect.bisect_left(self.bounds, value)] += 1
        self.own_total += value
        self.own_count += 1

    def snapshot(self) -> tuple[list[int], float, int]:
        """(bucket counts, sum, count) of Python's observations plus the native ones."""
        if self.native is None:
            return list(self.own_counts), self.own_total, self.own_count
        native_counts, native_total = self.native()
        counts = [own + native for own, native in zip(self.own_counts, native_counts, strict=True)]
        return counts, self.own_total + native_total, self.own_count + sum(native_counts)

    @property
    def counts(self) -> list[int]:
        return self.snapshot()[0]

    @property
    def total(self) -> float:
        return self.snapshot()[1]

    @property
    def count(self) -> int:
        return self.snapshot()[2]

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding the q-quantile (what /admin shows as p50/p99)."""
        counts, _, count = self.snapshot()
        if not count:
            return 0.0
        rank = q * count
        seen = 0
        for index, bucket_count in enumerate(counts):
            seen += bucket_count
            if seen >= rank:
                return self.bounds[index] if index < len(self.bounds) else float("inf")
        return float("inf")

    def family(self) -> HistogramMetricFamily:
        counts, total, count = self.snapshot()
        buckets: list[tuple[str, float]] = []
        cumulative = 0
        for bound, bucket_count in zip(self.bounds, counts):
            cumulative += bucket_count
            buckets.append((repr(float(bound)), cumulative))
        buckets.append(("+Inf", count))
        return HistogramMetricFamily(self.name, self.help, buckets=buckets, sum_value=total)


# Help texts for counters the code names at the point of use (`metrics.inc("…_total")`).
COUNTER_HELP = {
    "kefu_connections_total": "WebSocket connections accepted",
    "kefu_messages_acked_total": "chat messages committed and acknowledged",
    "kefu_messages_deduplicated_total": "sends recognised as retries (same cmid) and acked again",
    "kefu_messages_scored_total": "visitor messages scored by the sentiment model",
    "kefu_conversations_turned_angry_total": "conversations whose mood crossed the negative threshold",
    "kefu_slow_consumers_closed_total": "connections closed because they did not read fast enough",
    "kefu_storage_errors_total": "storage operations that failed",
}


class Metrics:
    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.gauges: dict[str, Callable[[], float]] = {}
        # Counters kept elsewhere (native threads), read at scrape time and added to `counters`.
        self.counter_sources: dict[str, Callable[[], int]] = {}
        self.help: dict[str, str] = {}
        self.ack_latency = Histogram("kefu_ack_latency_seconds",
                                     "frame received to ack sent (includes the durable commit)")
        self.delivery_latency = Histogram("kefu_fanout_latency_seconds", "commit to frames written to every subscriber")
        self.routing_latency = Histogram("kefu_routing_latency_seconds",
                                         "one routing decision (open, tick, agent change, transfer)")
        self.storage_batch_size = Histogram("kefu_storage_batch_size",
                                            "requests committed together in one storage transaction", BATCH_BUCKETS)
        self.storage_commit = Histogram("kefu_storage_commit_seconds",
                                        "COMMIT of one storage batch, which includes its fsync")
        self.histograms = (self.ack_latency, self.delivery_latency, self.routing_latency,
                           self.storage_batch_size, self.storage_commit)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)  # type: ignore[arg-type]  # a collector is anything with collect()

    def inc(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    def count_from(self, name: str, read: Callable[[], int]) -> None:
        """Counter `name` also counts what `read()` returns (a native counter), at scrape time."""
        self.counter_sources[name] = read

    def value(self, name: str) -> int:
        """Counter `name` now, own increments plus its source."""
        source = self.counter_sources.get(name)
        return self.counters.get(name, 0) + (source() if source is not None else 0)

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.gauges[name] = read
        self.help[name] = help_text

    def storage_committed(self, batch_size: int, seconds: float) -> None:
        """Called by the storage writer (its own thread) after each COMMIT; plain adds under the GIL."""
        self.storage_batch_size.observe(batch_size)
        self.storage_commit.observe(seconds)

    def collect(self) -> Iterator[Metric]:
        for name in sorted(self.counters.keys() | self.counter_sources.keys()):
            family = CounterMetricFamily(name, COUNTER_HELP.get(name, name.replace("_", " ")))
            family.add_metric([], self.value(name))
            yield family
        for name, read in sorted(self.gauges.items()):
            yield GaugeMetricFamily(name, self.help[name], value=read())
        for histogram in self.histograms:
            yield histogram.family()

    def render(self) -> str:
        return generate_latest(self.registry).decode()
