"""Stubs for the Cython gateway (engine/src/kefu_engine/gateway.pyx). Import it only via kefu.compiled."""

from collections.abc import Callable, Iterable
from typing import Any, final

from picows import WSListener

CLOSE_SLOW_CONSUMER: int
CLOSE_RATE_LIMITED: int
CLOSE_IDLE: int
CLOSE_REVOKED: int
HEADROOM: int

def configure(
    decode_binary: Callable[[bytes], dict[str, Any]],
    encode_binary: Callable[[dict[str, Any]], bytes],
    json_loads: Callable[[str], Any],
    json_dumps: Callable[[dict[str, Any]], bytes],
    frame_error: type[Exception],
) -> None: ...

def attach_dataplane(owner: Any, capsule: Any, capsule_name: bytes, flush: Callable[[], None],
                     call_soon: Callable[..., Any]) -> None: ...
def detach_dataplane() -> None: ...
def write_deliveries() -> None: ...
def write_ring_records(records: list[bytes], start: int) -> int: ...
def decode_client_frame(payload: bytes, binary: bool) -> dict[str, Any]: ...

@final
class Limits:
    max_message_size: int
    max_pending_bytes: int
    rate_per_s: float
    burst: float
    max_rate_violations: int
    max_outgoing_size: int
    def __init__(
        self, max_message_size: int = 65536, max_pending_bytes: int = 1 << 20,
        rate_per_s: float = 50.0, burst: float = 100.0, max_rate_violations: int = 50,
        max_outgoing_size: int = 262144,
    ) -> None: ...

class Connection(WSListener):
    hub: Any
    principal: Any
    binary: bool
    transport: Any
    limits: Limits
    closed: bool
    subscriptions: set[int]
    state: Any
    last_rx: float
    ping_outstanding: bool
    ping_sent_at: float
    frames_in: int
    frames_out: int
    frames_refused: int
    slot: int
    serial: int
    @property
    def paused(self) -> bool: ...
    def __init__(self, hub: Any, principal: Any, binary: bool, limits: Limits) -> None: ...
    def send_encoded(self, json_payload: bytes, binary_payload: bytes | None) -> bool: ...
    def send_frame(self, frame: dict[str, Any]) -> bool: ...
    def send_error(self, code: str, message: str, ref: Any) -> bool: ...
    def send_ping(self) -> None: ...
    def close(self, code: int = 1000, reason: bytes = b"", graceful: bool = True) -> None: ...

def send_to_all(connections: Iterable[Connection], json_payload: bytes, binary_payload: bytes | None) -> int: ...
