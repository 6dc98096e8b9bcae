"""Message buses: how one server process tells the others about events it produced.

Today: `LocalBus` (a single process). Planned implementations of the same interface: a shared-memory
ring between worker processes on one host, and Redis pub/sub between hosts. A bus is only a hint:
ordering and gap filling come from storage by `seq`, so a lost bus event delays, never loses, a message.
"""

from kefu.bus.base import Bus, BusEvent
from kefu.bus.local import LocalBus

__all__ = ["Bus", "BusEvent", "LocalBus", "open_bus"]


def open_bus(redis_url: str | None) -> Bus:
    if redis_url:
        raise NotImplementedError("the Redis bus arrives with the multi-host issue; unset REDIS_URL")
    return LocalBus()
