"""Process metrics in Prometheus text format: counters, gauges and latency histograms.

Kept dependency-free and cheap: the hot path does an integer add or a bisect per observation.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

# Latency buckets in seconds: 50 µs … 5 s, dense where chat latency lives (sub-10 ms).
LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                   0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    __slots__ = ("bounds", "count", "counts", "help", "name", "total")

    def __init__(self, name: str, help_text: str, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.name = name
        self.help = help_text
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding the q-quantile (what /admin shows as p50/p99)."""
        if not self.count:
            return 0.0
        rank = q * self.count
        seen = 0
        for index, bucket_count in enumerate(self.counts):
            seen += bucket_count
            if seen >= rank:
                return self.bounds[index] if index < len(self.bounds) else float("inf")
        return float("inf")

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for bound, bucket_count in zip(self.bounds, self.counts):
            cumulative += bucket_count
            lines.append(f'{self.name}_bucket{{le="{bound}"}} {cumulative}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{self.name}_sum {self.total}")
        lines.append(f"{self.name}_count {self.count}")
        return lines


class Metrics:
    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.gauges: dict[str, Callable[[], float]] = {}
        self.help: dict[str, str] = {}
        self.ack_latency = Histogram("kefu_ack_latency_seconds",
                                     "frame received to ack sent (includes the durable commit)")
        self.delivery_latency = Histogram("kefu_fanout_latency_seconds", "commit to frames written to every subscriber")

    def inc(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    def gauge(self, name: str, help_text: str, read: Callable[[], float]) -> None:
        self.gauges[name] = read
        self.help[name] = help_text

    def render(self) -> str:
        lines: list[str] = []
        for name in sorted(self.counters):
            lines += [f"# TYPE {name} counter", f"{name} {self.counters[name]}"]
        for name, read in sorted(self.gauges.items()):
            lines += [f"# HELP {name} {self.help[name]}", f"# TYPE {name} gauge", f"{name} {read()}"]
        lines += self.ack_latency.render()
        lines += self.delivery_latency.render()
        return "\n".join(lines) + "\n"
