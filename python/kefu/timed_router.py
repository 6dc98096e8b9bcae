"""The routing engine with each decision timed into kefu_routing_latency_seconds.

A subclass rather than timing calls inside the hub: the hub calls the router from many places, and the
engine stays free of metrics.
"""

from __future__ import annotations

import time
from typing import Any

from kefu.metrics import Histogram
from kefu.routing import RoutingConfig, RoutingEngine


class TimedRoutingEngine(RoutingEngine):
    def __init__(self, config: RoutingConfig, histogram: Histogram) -> None:
        super().__init__(config)
        self._histogram = histogram

    def _timed(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            self._histogram.observe(time.perf_counter() - started)

    def conversation_opened(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed(super().conversation_opened, *args, **kwargs)

    def conversation_closed(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed(super().conversation_closed, *args, **kwargs)

    def agent_online(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed(super().agent_online, *args, **kwargs)

    def agent_offline(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed(super().agent_offline, *args, **kwargs)

    def transfer(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed(super().transfer, *args, **kwargs)

    def sentiment_changed(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed(super().sentiment_changed, *args, **kwargs)

    def tick(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed(super().tick, *args, **kwargs)
