"""The one module that imports Kefu's compiled extensions.

Everything else in Kefu reaches native code through the names below: `kefu._native` (Rust, PyO3,
built by maturin from native/) and `kefu_engine` (Cython over picows, built from engine/).
Each native kernel has a pure-Python reference twin under `kefu.reference`; tests compare them.
A missing build raises ImportError here: Kefu never falls back to the slow twin silently.
"""

from __future__ import annotations

from collections.abc import Callable
from json import dumps as _json_dumps
from typing import Any

from kefu_engine import gateway as _gateway

from kefu import _native
from kefu.realtime.frames import decode_json_text as _decode_json_text

NATIVE_VERSION: str = _native.__version__

# --- frame codec (native/codec) -------------------------------------------------------------------

# kefu.bin.v1 frames: 24-byte header + bounded msgpack body. Twin: kefu.reference.codec.
FrameError = _native.FrameError
FrameLimits = _native.FrameLimits
decode_frame = _native.decode_frame
encode_frame = _native.encode_frame
FRAME_TYPES: dict[str, int] = _native.FRAME_TYPES
HEADER_SIZE: int = _native.HEADER_SIZE

# --- lock-free MPMC queue (native/queue) ----------------------------------------------------------

MpmcQueue = _native.MpmcQueue
QueueFull = _native.QueueFull
QueueEmpty = _native.QueueEmpty
QueueClosed = _native.QueueClosed

# --- shared-memory ring between processes (native/shmring) ---------------------------------------

# Many producers, one consumer; workers <-> control process. Twin: kefu.reference.shmring.
ShmRing = _native.ShmRing
# The hot path over the rings (native/src/worker_ring.rs; record layouts: kefu.workers.wire, its twin):
# a worker forwards raw frames up, the control process's router feeds them to its data plane and
# writes the deliveries down as one record per worker.
RingForwarder = _native.RingForwarder
WorkerRouter = _native.WorkerRouter

# --- durable message writer (native/journal) ----------------------------------------------------

# SQLite group commit from Rust; completions once per batch on an eventfd. Twin: kefu.reference.journal.
Journal = _native.Journal
JournalFull = _native.JournalFull
JournalClosed = _native.JournalClosed

# --- routing scorer (native/routing) --------------------------------------------------------------

score_agents = _native.score_agents
ROUTING_EXCLUSION_REASONS: int = _native.ROUTING_EXCLUSION_REASONS

# --- sentiment featuriser (native/textfeat) -------------------------------------------------------

FEATURIZER_VERSION: str = _native.FEATURIZER_VERSION
Featurizer = _native.Featurizer
featurize = _native.featurize
featurize_batch = _native.featurize_batch
# The sentiment model's linear graph, the per-conversation mood and its alerts, on a thread the data
# plane feeds once per batch (native/mood). Twin: kefu.sentiment.SentimentModel + MoodTracker.
MoodPipe = _native.MoodPipe

# --- data plane (native/dataplane) ----------------------------------------------------------------

# send/typing from the socket to the sink and back to the sockets, without Python per frame.
# Twin: the hub's own send/typing handlers (KEFU_DATAPLANE=python); tests compare both.
DataPlane = _native.DataPlane
DATAPLANE_CAPSULE: str = _native.DATAPLANE_CAPSULE
DATAPLANE_LATENCY_BOUNDS: list[float] = _native.DATAPLANE_LATENCY_BOUNDS  # == kefu.metrics.LATENCY_BUCKETS

# --- WebSocket gateway (engine/) ------------------------------------------------------------------

Connection = _gateway.Connection
GatewayLimits = _gateway.Limits
send_to_all = _gateway.send_to_all
detach_dataplane = _gateway.detach_dataplane
write_deliveries = _gateway.write_deliveries
write_ring_records = _gateway.write_ring_records
# The Python path's frame decoder (the gateway's, also used by the control process of --workers).
decode_client_frame = _gateway.decode_client_frame


def attach_dataplane(plane: DataPlane, flush: Callable[[], None], call_soon: Callable[..., Any]) -> None:
    """Hand `plane`'s C vtable to the gateway: from now on it sees every frame first."""
    _gateway.attach_dataplane(plane, plane.capsule(), DATAPLANE_CAPSULE.encode(), flush, call_soon)


def attach_forwarder(forwarder: RingForwarder, call_soon: Callable[..., Any]) -> None:
    """In a gateway worker: every frame of a bound connection goes up the ingress ring untouched."""
    _gateway.attach_dataplane(forwarder, forwarder.capsule(), DATAPLANE_CAPSULE.encode(), lambda: None, call_soon)
CLOSE_SLOW_CONSUMER: int = _gateway.CLOSE_SLOW_CONSUMER
CLOSE_RATE_LIMITED: int = _gateway.CLOSE_RATE_LIMITED
CLOSE_IDLE: int = _gateway.CLOSE_IDLE
CLOSE_REVOKED: int = _gateway.CLOSE_REVOKED


def encode_json(frame: dict) -> bytes:
    """A `kefu.json.v1` frame: compact UTF-8 JSON (non-ASCII kept as is: Chinese text stays small)."""
    return _json_dumps(frame, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


# The gateway decodes binary frames with the native codec; wiring happens here, at import, once.
_gateway.configure(decode_frame, encode_frame, _decode_json_text, encode_json, FrameError)
