# cython: language_level=3
"""The per-connection WebSocket hot path of Kefu, over picows' C-level API.

A `Connection` is one accepted WebSocket. picows calls its `on_ws_frame` through a C vtable for
every frame; the connection reassembles fragments under a size bound, applies the per-connection
rate limit, decodes the frame (JSON text for ``kefu.json.v1``, the native binary codec for
``kefu.bin.v1``) into a dict and hands it to the hub (Python policy) with ``hub.on_frame(conn, frame)``.

Sending goes the other way: the hub encodes a frame once per format and calls `send_to_all` (one C
loop over the subscribers) or `Connection.send_frame`. Writes are bounded per connection: once the
transport asks us to pause, at most ``max_pending_bytes`` more may be queued, then the slow consumer
is closed (4001). Nothing is ever buffered without limit, and no frame larger than
``max_outgoing_size`` is written.

Why frames are copied into a `bytearray` before sending: picows writes the WebSocket header into the
``HEADROOM`` bytes *in front of* the payload it is given (send_reuse_external_*), so the payload must
live in memory we own and may overwrite. An immutable ``bytes`` object has its length and cached hash
there (writing into it corrupted both: a 64 KiB frame announced 9.2e18 bytes). picows' own copying
``send`` is not used either: for payloads over 8 KiB it queues a view of its reusable header buffer,
which a later send on the same socket overwrites while the socket is backed up. `send_to_all` copies
each encoding once and reuses that buffer for every subscriber (the header is the same for all).

The data plane (issue 11): when `attach_dataplane` has handed over the native data plane's C vtable,
every complete frame of a greeted connection first goes to it, as a pointer and a length, with the
connection's slot number. It takes `send` and `typing` (and answers them later, in native code), or
declines, and then the frame takes the path above to the hub. What it wants written comes back as
deliveries (slot list + both encodings, each after HEADROOM spare bytes it owns) that
`_write_deliveries` hands to the transports: no Python object is made per frame on that path.
Within one batch the frames for a connection are gathered (headers included) and written with one
write when the batch ends (`Connection._queue_ptr`): a sender's ack, its own message echo and its
partner's message in the same batch cost one syscall, not three (`python -m bench.workers --workers 1`
on this 2-core VM: 30.5 → 21.3 µs of server CPU per message at 8 in flight per connection).

This module imports no other Kefu module: the binary codec and the JSON encoder are injected with
`configure()` by `kefu.compiled`, the one place that wires compiled modules together.
"""

cimport cython
from cpython.bytearray cimport (
    PyByteArray_AS_STRING,
    PyByteArray_FromStringAndSize,
    PyByteArray_GET_SIZE,
    PyByteArray_Resize,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcpy
from posix.time cimport CLOCK_MONOTONIC, CLOCK_REALTIME, clock_gettime, timespec
from picows.picows cimport WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

import time

# Injected by configure(): the native codec and JSON functions, and the codec's error class.
cdef object _decode_binary = None
cdef object _encode_binary = None
cdef object _json_loads = None
cdef object _json_dumps = None
cdef object _FrameError = None
cdef object _monotonic = time.monotonic

# Application close codes (4000 + n), documented in docs/protocol.md.
CLOSE_SLOW_CONSUMER = 4001
CLOSE_RATE_LIMITED = 4002
CLOSE_IDLE = 4003
CLOSE_REVOKED = 1008
# Bytes picows needs in front of a payload (its send_reuse_external_bytearray minimum; a server-side
# header takes at most 2 + 8).
cdef enum:
    _HEADROOM = 14
HEADROOM = _HEADROOM


# --- the native data plane (kefu._native.DataPlane's capsule; layout = its DataPlaneVtable) -------

ctypedef int (*dp_handle_t)(void*, uint32_t, const char*, size_t, int, double, double) noexcept nogil
ctypedef size_t (*dp_take_t)(void*) noexcept nogil
ctypedef void (*dp_get_t)(void*, size_t, const uint32_t**, size_t*, char**, size_t*, char**, size_t*) noexcept nogil
ctypedef void (*dp_clear_t)(void*) noexcept nogil
ctypedef size_t (*dp_queued_t)(void*) noexcept nogil

ctypedef struct DataPlaneVtable:
    void* ctx
    dp_handle_t handle
    dp_take_t take
    dp_get_t get
    dp_clear_t clear
    dp_queued_t queued

cdef DataPlaneVtable* _dp = NULL
cdef object _dp_owner = None      # keeps the DataPlane (the vtable's ctx) and its capsule alive
cdef object _dp_flush = None      # Python: carry queued records to storage (once per batch)
cdef object _call_soon = None
cdef bint _dp_flush_scheduled = False
cdef bint _dp_writing = False
# slot → Connection (None when free): the data plane names connections by slot.
cdef list _slots = []
cdef list _free_slots = []


cdef inline double _clock(int clock_id) noexcept:
    cdef timespec ts
    clock_gettime(clock_id, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


def attach_dataplane(owner, capsule, bytes capsule_name, flush, call_soon):
    """Route frames through the native data plane: `capsule` holds its vtable (named
    `capsule_name`), `owner` is kept alive with it; `flush()` is scheduled with `call_soon` once
    per batch of frames that queued records for a Python-side writer."""
    global _dp, _dp_owner, _dp_flush, _call_soon, _dp_flush_scheduled
    cdef DataPlaneVtable* vtable = <DataPlaneVtable*>PyCapsule_GetPointer(capsule, capsule_name)
    _dp_owner = (owner, capsule, capsule_name)
    _dp_flush = flush
    _call_soon = call_soon
    _dp_flush_scheduled = False
    _dp = vtable


def detach_dataplane():
    """Back to the Python path for every frame (shutdown, tests)."""
    global _dp, _dp_owner, _dp_flush, _call_soon
    _dp = NULL
    _dp_owner = _dp_flush = _call_soon = None


def write_deliveries():
    """Write what the data plane produced outside a frame (after commits were reported to it)."""
    if _dp != NULL:
        _write_deliveries()


cdef int _write_deliveries() except -1:
    # Not re-entrant: the slot pointers point into the data plane's reading buffer, which another
    # `take` could move. A nested call (a callback of a send) leaves its deliveries for the next one.
    global _dp_writing
    if _dp_writing:
        return 0
    # Held locally: a detach during a send's callback must not free the data plane under the loop.
    cdef DataPlaneVtable* dp = _dp
    owner = _dp_owner
    _dp_writing = True
    try:
        _write_taken(dp, dp.take(dp.ctx))
    finally:
        _dp_writing = False
    return 0


cdef int _write_taken(DataPlaneVtable* dp, size_t count) except -1:
    cdef size_t i, k, slot_count, json_len, binary_len
    cdef const uint32_t* slots
    cdef char* json_ptr
    cdef char* binary_ptr
    try:
        for i in range(count):
            dp.get(dp.ctx, i, &slots, &slot_count, &json_ptr, &json_len, &binary_ptr, &binary_len)
            for k in range(slot_count):
                _queue_for_slot(slots[k], -1, json_ptr, json_len, binary_ptr, binary_len)
    finally:
        dp.clear(dp.ctx)
        _flush_queued()
    return 0


cdef int _after_dataplane() except -1:
    global _dp_flush_scheduled
    _write_deliveries()
    if not _dp_flush_scheduled and _dp.queued(_dp.ctx) > 0:
        _dp_flush_scheduled = True
        _call_soon(_run_flush)
    return 0


def _run_flush():
    global _dp_flush_scheduled
    _dp_flush_scheduled = False
    if _dp_flush is not None:
        _dp_flush()


def write_ring_records(list records, Py_ssize_t start):
    """Write the delivery records (`D`, kefu_shmring::records) of `records[start:]` to their
    connections, stopping at the first record of another kind; returns its index (or the length).
    Used by gateway workers: the control process's data plane fans out, the worker only writes."""
    cdef Py_ssize_t index, count = len(records)
    cdef bytes record
    try:
        for index in range(start, count):
            record = <bytes>records[index]
            if PyBytes_GET_SIZE(record) == 0 or PyBytes_AS_STRING(record)[0] != b'D':
                return index
            _write_delivery_record(PyBytes_AS_STRING(record), PyBytes_GET_SIZE(record))
        return count
    finally:
        _flush_queued()


cdef inline uint32_t _u32_at(const char* data) noexcept:
    cdef uint32_t value
    memcpy(&value, data, 4)  # little-endian on every platform Kefu builds for (x86_64, aarch64)
    return value


cdef int _write_delivery_record(const char* data, Py_ssize_t size) except -1:
    # Layout: tag, 3 reserved, targets u32, json_len u32, binary_len u32, targets × (slot, serial), json, binary.
    if size < 16:
        return 0
    cdef Py_ssize_t targets = _u32_at(data + 4), json_len = _u32_at(data + 8), binary_len = _u32_at(data + 12)
    cdef Py_ssize_t json_at = 16 + targets * 8
    if json_at + json_len + binary_len != size:
        return 0  # not one of ours; never read past the record
    cdef Py_ssize_t k
    for k in range(targets):
        _queue_for_slot(_u32_at(data + 16 + k * 8), _u32_at(data + 20 + k * 8),
                        data + json_at, json_len, data + json_at + json_len, binary_len)
    return 0


cdef int _queue_for_slot(uint32_t slot, int64_t serial, const char* json_ptr, Py_ssize_t json_len,
                         const char* binary_ptr, Py_ssize_t binary_len) except -1:
    """Queue the encoding the connection in `slot` speaks (a length of 0: that format is absent).
    With `serial` >= 0, only if the slot still holds that connection (it may have left and the slot
    been reused)."""
    if slot >= <size_t>len(_slots):
        return 0
    entry = _slots[slot]
    if entry is None:
        return 0
    cdef Connection conn = <Connection>entry
    if serial >= 0 and conn.serial != serial:
        return 0
    if conn.binary:
        if binary_len:
            conn._queue_ptr(binary_ptr, binary_len)
    elif json_len:
        conn._queue_ptr(json_ptr, json_len)
    return 0


# Connections with frames queued during the current batch (see Connection._queue_ptr).
cdef list _queued = []
# Queued bytes for one connection that are written without waiting for the end of the batch.
cdef enum:
    _QUEUE_FLUSH_BYTES = 16384


cdef int _flush_queued() except -1:
    """One write per connection for everything the batch queued for it, in the order queued."""
    global _queued
    if not _queued:
        return 0
    cdef list queued = _queued
    _queued = []
    cdef Connection conn
    for conn in queued:
        conn._flush_queue()
    return 0



cpdef dict decode_client_frame(bytes payload, bint binary):
    """A client frame's payload as the hub takes it (a dict with a string `t`), or FrameError(code,
    message) for the error frame. The one decoder of the Python path: this gateway's, and the control
    process's for the frames workers forward (kefu.workers.control)."""
    if binary:
        frame = _decode_binary(payload)  # raises FrameError itself
    else:
        try:
            # Decoded here, strictly: json.loads(bytes) would also accept UTF-16 and UTF-32.
            frame = _json_loads(payload.decode("utf-8"))
        except (ValueError, RecursionError):
            raise _FrameError("bad_frame", "not valid UTF-8 JSON") from None
        if type(frame) is not dict:
            raise _FrameError("bad_frame", "a frame is a JSON object")
    if type(frame.get("t")) is not str:
        raise _FrameError("bad_frame", "missing frame type 't'")
    return frame


def configure(decode_binary, encode_binary, json_loads, json_dumps, frame_error):
    """Inject the codec: ``decode_binary(bytes) -> dict`` raising ``frame_error(code, msg)`` on bad
    input, ``encode_binary(dict) -> bytes``, ``json_loads(str) -> object`` (given strictly decoded UTF-8) and
    ``json_dumps(dict) -> bytes``."""
    global _decode_binary, _encode_binary, _json_loads, _json_dumps, _FrameError
    _decode_binary = decode_binary
    _encode_binary = encode_binary
    _json_loads = json_loads
    _json_dumps = json_dumps
    _FrameError = frame_error


@cython.final
cdef class Limits:
    """Per-connection bounds, shared by all connections of a server."""

    cdef readonly Py_ssize_t max_message_size
    cdef readonly Py_ssize_t max_pending_bytes
    cdef readonly double rate_per_s
    cdef readonly double burst
    cdef readonly int max_rate_violations
    cdef readonly Py_ssize_t max_outgoing_size

    def __init__(self, Py_ssize_t max_message_size=65536, Py_ssize_t max_pending_bytes=1 << 20,
                 double rate_per_s=50.0, double burst=100.0, int max_rate_violations=50,
                 Py_ssize_t max_outgoing_size=256 * 1024):
        if (max_message_size <= 0 or max_pending_bytes <= 0 or rate_per_s <= 0 or burst < 1
                or max_outgoing_size <= 0):
            raise ValueError("limits must be positive")
        self.max_message_size = max_message_size
        self.max_outgoing_size = max_outgoing_size
        self.max_pending_bytes = max_pending_bytes
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_rate_violations = max_rate_violations


cdef class Connection(WSListener):
    """One WebSocket connection: identity (set from the token before the upgrade), wire format,
    reassembly, rate limit and bounded sending. Policy lives in the hub."""

    cdef readonly object hub
    cdef readonly object principal
    cdef readonly bint binary
    cdef readonly WSTransport transport
    cdef readonly Limits limits
    cdef readonly bint closed
    # Hub-owned state: subscribed conversation ids and whatever else the hub keeps per connection.
    cdef public object subscriptions
    cdef public object state
    cdef public double last_rx
    cdef public bint ping_outstanding
    cdef public double ping_sent_at

    cdef bytearray _fragments
    cdef WSMsgType _fragment_type
    cdef double _tokens
    cdef double _refilled_at
    cdef int _rate_violations
    cdef bint _paused
    cdef Py_ssize_t _pending_bytes
    cdef readonly uint64_t frames_in
    cdef readonly uint64_t frames_out
    cdef readonly uint64_t frames_refused
    # Frames (headers included) waiting for the end of the batch, or None: see _queue_ptr.
    cdef bytearray _out
    # Index in the gateway's slot table while connected (the data plane's name for it), else -1.
    cdef readonly int slot
    # Set by a gateway worker: tells this connection from an earlier one that held the same slot
    # (delivery records name both; a stale one is skipped).
    cdef public unsigned int serial

    def __init__(self, hub, principal, bint binary, Limits limits):
        self.hub = hub
        self.principal = principal
        self.binary = binary
        self.limits = limits
        self.subscriptions = set()
        self.state = None
        self._fragments = None
        self.slot = -1
        self._tokens = limits.burst
        self._refilled_at = _clock(CLOCK_MONOTONIC)
        self.last_rx = self._refilled_at

    @property
    def paused(self):
        return self._paused

    # --- picows callbacks ---------------------------------------------------------------------

    cpdef on_ws_connected(self, WSTransport transport):
        self.transport = transport
        if _free_slots:
            self.slot = _free_slots.pop()
            _slots[self.slot] = self
        else:
            self.slot = len(_slots)
            _slots.append(self)
        self.hub.on_connected(self)

    cpdef on_ws_disconnected(self, WSTransport transport):
        self.closed = True
        self._fragments = None
        try:
            self.hub.on_disconnected(self)
        finally:
            if self.slot >= 0:
                _slots[self.slot] = None
                _free_slots.append(self.slot)
                self.slot = -1

    cpdef pause_writing(self):
        self._paused = True
        self._pending_bytes = 0

    cpdef resume_writing(self):
        self._paused = False
        self._pending_bytes = 0

    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame):
        cdef WSMsgType msg_type = frame.msg_type
        if self.closed:
            # Closed by us (revoked, protocol error, slow consumer): frames the client had already
            # sent, still in the read buffer, are not acted upon.
            return
        self.last_rx = _clock(CLOCK_MONOTONIC)
        self.ping_outstanding = False
        if msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
            return
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            # No extension is negotiated (RFC 6455 §5.2): a reserved bit is a protocol error.
            self.close(WSCloseCode.PROTOCOL_ERROR, b"reserved bits set without an extension")
            return
        if msg_type == WSMsgType.PING or msg_type == WSMsgType.PONG:
            return  # picows answers pings; any frame counts as liveness
        if msg_type != WSMsgType.CONTINUATION and self._fragments is not None:
            # RFC 6455 §5.4: a new data message may not start inside a fragmented one.
            self.close(WSCloseCode.PROTOCOL_ERROR, b"new message inside a fragmented one")
            return
        if msg_type == WSMsgType.CONTINUATION:
            if self._fragments is None:
                self.close(WSCloseCode.PROTOCOL_ERROR, b"continuation without a start")
                return
            if len(self._fragments) + frame.payload_size > self.limits.max_message_size:
                self.close(WSCloseCode.MESSAGE_TOO_BIG, b"message too big")
                return
            self._fragments += frame.get_payload_as_memoryview()
            if not frame.fin:
                return
            payload = bytes(self._fragments)
            msg_type = self._fragment_type
            self._fragments = None
        elif not frame.fin:
            if frame.payload_size > self.limits.max_message_size:
                self.close(WSCloseCode.MESSAGE_TOO_BIG, b"message too big")
                return
            self._fragments = bytearray(frame.get_payload_as_memoryview())
            self._fragment_type = msg_type
            return
        else:
            if frame.payload_size > self.limits.max_message_size:
                self.close(WSCloseCode.MESSAGE_TOO_BIG, b"message too big")
                return
            payload = frame.get_payload_as_bytes()
        self._on_message(msg_type, payload)

    # --- receiving ------------------------------------------------------------------------------

    cdef inline bint _take_token(self):
        cdef double now = self.last_rx
        cdef double tokens = self._tokens + (now - self._refilled_at) * self.limits.rate_per_s
        self._refilled_at = now
        if tokens > self.limits.burst:
            tokens = self.limits.burst
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True

    cdef _on_message(self, WSMsgType msg_type, bytes payload):
        self.frames_in += 1
        if not self._take_token():
            self._rate_violations += 1
            if self._rate_violations > self.limits.max_rate_violations:
                self.close(CLOSE_RATE_LIMITED, b"rate limit exceeded")
            else:
                self.send_error("rate_limited", "too many frames; slow down", None)
            return
        self._rate_violations = 0
        if _dp != NULL and self.slot >= 0 and msg_type == (WSMsgType.BINARY if self.binary else WSMsgType.TEXT):
            if _dp.handle(_dp.ctx, <uint32_t>self.slot, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload),
                          self.binary, _clock(CLOCK_REALTIME), self.last_rx):
                _after_dataplane()
                return
        if msg_type != (WSMsgType.BINARY if self.binary else WSMsgType.TEXT):
            self.send_error("bad_frame", "kefu.bin.v1 carries binary frames only" if self.binary
                            else "kefu.json.v1 carries text frames only", None)
            return
        try:
            frame = decode_client_frame(payload, self.binary)
        except _FrameError as exc:
            self.send_error(exc.args[0], exc.args[1], None)
            return
        self.hub.on_frame(self, frame)

    # --- sending --------------------------------------------------------------------------------

    cdef inline bint _send_framed(self, bytearray framed):
        """Queue one encoded frame held after `HEADROOM` spare bytes; close the connection instead
        of buffering past the bound."""
        if framed is None:
            return False
        return self._send_ptr(PyByteArray_AS_STRING(framed) + _HEADROOM, PyByteArray_GET_SIZE(framed) - _HEADROOM)

    cdef bint _admit(self, Py_ssize_t size):
        """May a frame of `size` bytes be written now? Closes the connection instead of buffering
        past the bound (slow consumer) or sending an oversized frame."""
        if self.closed or self.transport is None:
            return False
        if size > self.limits.max_outgoing_size:
            # Inputs are capped so that this cannot happen; if it does, say so rather than leave
            # a silent gap in the client's stream.
            self.frames_refused += 1
            self.hub.on_frame_refused(self, size)
            self.close(WSCloseCode.MESSAGE_TOO_BIG, b"a frame for you exceeded the server's limit")
            return False
        if self._paused:
            self._pending_bytes += size
            if self._pending_bytes > self.limits.max_pending_bytes:
                self.hub.on_slow_consumer(self)
                self.close(CLOSE_SLOW_CONSUMER, b"slow consumer", graceful=False)
                return False
        return True

    cdef bint _send_ptr(self, char* payload, Py_ssize_t size):
        """Queue `size` bytes at `payload`, which has `HEADROOM` writable bytes in front of it."""
        if not self._admit(size):
            return False
        self.transport.send_reuse_external_buffer(
            WSMsgType.BINARY if self.binary else WSMsgType.TEXT, payload, size)
        self.frames_out += 1
        return True

    cdef bint _queue_ptr(self, const char* payload, Py_ssize_t size):
        """Like `_send_ptr`, but the frame waits (header included) until the batch ends; then each
        connection gets ONE write for all its frames (an ack and the message echo, the partner's
        message, ...) instead of one syscall per frame. Order per connection is the order queued; the
        caller flushes with `_flush_queued` before anything else can write to the socket."""
        if not self._admit(size):
            return False
        if self._out is None:
            self._out = bytearray()
            _queued.append(self)
        cdef unsigned char header[10]
        cdef Py_ssize_t header_size = _frame_header(header, 0x82 if self.binary else 0x81, size)
        cdef Py_ssize_t at = PyByteArray_GET_SIZE(self._out)
        PyByteArray_Resize(self._out, at + header_size + size)
        memcpy(PyByteArray_AS_STRING(self._out) + at, header, header_size)
        memcpy(PyByteArray_AS_STRING(self._out) + at + header_size, payload, size)
        self.frames_out += 1
        if at + header_size + size >= _QUEUE_FLUSH_BYTES:
            # A big batch for one connection goes out in pieces, so that a socket that stopped
            # draining pauses us early and the slow-consumer bound above still counts what follows.
            self._flush_queue()
        return True

    cdef int _flush_queue(self) except -1:
        cdef bytearray out = self._out
        self._out = None
        if out is None or self.closed or self.transport is None:
            return 0
        if self.transport.is_close_frame_sent or self.transport.is_disconnected:
            return 0
        # Complete server frames (unmasked, no extension negotiated): written as bytes, as picows'
        # own writes are; the transport sends at once or buffers and pauses us like any other write.
        self.transport.underlying_transport.write(out)
        return 0

    def send_encoded(self, bytes json_payload, bytes binary_payload):
        """Send a frame already encoded in both formats; picks the one this connection speaks."""
        return self._send_framed(_with_headroom(binary_payload if self.binary else json_payload))

    def send_frame(self, dict frame):
        """Encode `frame` in this connection's format and send it. A frame that cannot be encoded
        (a bug upstream: inputs are validated at the door) becomes an `error` frame, not a 1011."""
        try:
            payload = _encode_binary(frame) if self.binary else _json_dumps(frame)
        except Exception:
            self.hub.on_frame_refused(self, -1)
            payload = _encode_binary(_UNENCODABLE) if self.binary else _json_dumps(_UNENCODABLE)
        return self._send_framed(_with_headroom(payload))

    def send_error(self, str code, str message, ref):
        frame = {"t": "error", "code": code, "msg": message}
        if ref is not None:
            frame["ref"] = ref
        return self.send_frame(frame)

    def send_ping(self):
        """Ask the peer for a sign of life; any frame it sends clears `ping_outstanding`."""
        if not self.closed and self.transport is not None:
            self.ping_outstanding = True
            self.ping_sent_at = _monotonic()
            self.transport.send_ping()

    def close(self, int code=1000, bytes reason=b"", bint graceful=True):
        """Send a close frame and disconnect. With graceful=False the socket is aborted at once
        (used for slow consumers, whose buffers may never drain)."""
        if self.closed or self.transport is None:
            return
        self.closed = True
        self.transport.send_close(<WSCloseCode>code, reason)
        self.transport.disconnect(graceful)


cdef inline Py_ssize_t _frame_header(unsigned char* header, unsigned char first, Py_ssize_t size) noexcept:
    """A server-to-client WebSocket frame header (RFC 6455 §5.2: FIN + opcode, unmasked length)."""
    header[0] = first
    if size < 126:
        header[1] = <unsigned char>size
        return 2
    if size < 65536:
        header[1] = 126
        header[2] = <unsigned char>(size >> 8)
        header[3] = <unsigned char>size
        return 4
    header[1] = 127
    cdef int i
    for i in range(8):
        header[2 + i] = <unsigned char>(size >> (56 - 8 * i))
    return 10


_UNENCODABLE = {"t": "error", "code": "internal", "msg": "a frame for you could not be encoded"}


cdef bytearray _with_headroom(bytes payload):
    """`payload` copied after `HEADROOM` spare bytes, where picows writes the frame header."""
    if payload is None:
        return None
    cdef Py_ssize_t size = PyBytes_GET_SIZE(payload)
    cdef bytearray framed = PyByteArray_FromStringAndSize(NULL, size + _HEADROOM)
    memcpy(PyByteArray_AS_STRING(framed) + _HEADROOM, PyBytes_AS_STRING(payload), size)
    return framed


def send_to_all(connections, bytes json_payload, bytes binary_payload):
    """Fan one frame out to many connections: each gets the encoding of its own subprotocol.
    `binary_payload` may be None when no subscriber speaks kefu.bin.v1. Returns the count sent.
    Each encoding is copied once; every send rewrites the same header in front of it."""
    cdef Connection conn
    cdef Py_ssize_t sent = 0
    cdef bytearray json_framed = None
    cdef bytearray binary_framed = None
    for conn in connections:
        if conn.binary:
            if binary_framed is None:
                binary_framed = _with_headroom(binary_payload)
            if conn._send_framed(binary_framed):
                sent += 1
        else:
            if json_framed is None:
                json_framed = _with_headroom(json_payload)
            if conn._send_framed(json_framed):
                sent += 1
    return sent
