"""Type stubs for the compiled `kefu._native` module (native/src). Import it only via `kefu.compiled`."""

import os
from collections.abc import Sequence
from typing import Any, final

import numpy as np
from numpy.typing import NDArray

__version__: str

# --- frame codec ---

class FrameError(ValueError):
    """A refused kefu.bin.v1 frame. `args == (code, message)`.

    `code` is the protocol error code: `"too_large"` when the frame (declared by its header or actually
    received, or being encoded) exceeds `max_frame_size`, `"bad_frame"` for everything else.
    """

    @property
    def code(self) -> str:
        """`"bad_frame"` or `"too_large"`."""

    @property
    def message(self) -> str:
        """What exactly was wrong (for logs; not part of the protocol)."""

@final
class FrameLimits:
    """Immutable bounds applied by `decode_frame` and `encode_frame` (the same value for both).

    `max_frame_size` counts the 24-byte header (must be 24..=24 + 2**32 - 1); `max_depth` counts the body
    map as 1 (must be 1..=32); `max_container_len` bounds items per array / entries per map;
    `max_str_len` bounds str, bin and key lengths in bytes. Invalid values raise `ValueError`.
    """

    def __new__(
        cls,
        max_frame_size: int = 65536,
        max_depth: int = 8,
        max_container_len: int = 1024,
        max_str_len: int = 65536,
    ) -> FrameLimits: ...
    @property
    def max_frame_size(self) -> int: ...
    @property
    def max_depth(self) -> int: ...
    @property
    def max_container_len(self) -> int: ...
    @property
    def max_str_len(self) -> int: ...
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

FRAME_TYPES: dict[str, int]
"""Frame type name (the `"t"` value) → header type code, 1..16."""

HEADER_SIZE: int
"""Size of the fixed little-endian frame header: 24."""

def decode_frame(data: bytes | bytearray | memoryview, limits: FrameLimits | None = None) -> dict[str, Any]:
    """Decode one whole binary frame into `{"t": name, "conv"?: int, "seq"?: int, **fields}`.

    `conv` / `seq` come from the header and are present only when non-zero. Values are None, bool,
    int, float (finite), str, bytes, list and dict (str keys). Raises `FrameError` for any malformed or
    oversized frame, `TypeError` if `data` is not bytes, bytearray or a buffer of
    unsigned bytes (format B or c). Never allocates from a declared length
    before checking it against the bytes present and `limits`.
    """

def encode_frame(frame: dict[str, Any], limits: FrameLimits | None = None) -> bytes:
    """Encode `{"t": name, "conv"?: int, "seq"?: int, **fields}` into canonical kefu.bin.v1 bytes.

    `conv`/`seq` (ints in 0..2**64) go to the header; all other keys form the body map (no body when
    there are none). Canonical msgpack: smallest int/str/bin/array/map forms, float64, dict order kept;
    tuples and bytearrays are accepted as arrays / bin. Raises `TypeError` for a value of a type outside
    the model (or a non-str key), `FrameError("bad_frame")` for an unknown `"t"`, out-of-range ints,
    NaN/±Inf, lone surrogates or limit violations, and `FrameError("too_large")` past `max_frame_size`.
    Whatever it returns, `decode_frame` accepts under the same limits.
    """

# --- MPMC queue ---

class QueueFull(Exception):
    """Raised by `MpmcQueue.put` when no space freed up before the timeout."""

class QueueEmpty(Exception):
    """Raised by `MpmcQueue.get`/`get_many` when no item arrived before the timeout."""

class QueueClosed(Exception):
    """Raised when putting into a closed `MpmcQueue`, or getting from one that is closed and drained."""

@final
class MpmcQueue:
    """A bounded, thread-safe FIFO of Python objects (lock-free ring; native/queue).

    Non-blocking calls never take a lock. Blocking calls release the GIL, spin briefly, then sleep,
    and run signal handlers at least every 50 ms, so Ctrl-C interrupts them. Items are strong
    references the cyclic GC does not traverse: do not put a queue into itself.
    """

    def __new__(cls, capacity: int) -> MpmcQueue:
        """An empty queue holding at most `capacity` items; ValueError unless 1 <= capacity <= 2**24."""
    def try_put(self, item: object) -> bool:
        """Put `item` if there is space; return whether it was put. QueueClosed once closed."""
    def try_get(self, default: object = None) -> object:
        """The oldest item, or `default` if empty right now. QueueClosed once closed and drained."""
    def put(self, item: object, timeout: float | None = None) -> None:
        """Put `item`, waiting up to `timeout` s (None: forever). QueueFull on timeout, QueueClosed if closed."""
    def get(self, timeout: float | None = None) -> object:
        """The oldest item, waiting up to `timeout` s (None: forever).

        QueueEmpty on timeout; QueueClosed once the queue is closed and drained.
        """
    def get_many(self, max_items: int, timeout: float | None = None) -> list[object]:
        """Wait like `get` for one item, then take up to `max_items` in total without waiting again.

        Oldest first. Meant for batch consumers such as a group-commit writer thread.
        """
    def close(self) -> None:
        """Close: puts raise QueueClosed (blocked ones wake); gets drain what is left, then raise it."""
    @property
    def closed(self) -> bool:
        """Whether `close()` has been called."""
    @property
    def capacity(self) -> int:
        """The maximum number of items, as given to the constructor."""
    def __len__(self) -> int:
        """The number of items inside: a snapshot other threads may change at once."""

# --- shared-memory ring (native/shmring) ---

@final
class ShmRing:
    """A ring of byte records in a memfd shared between processes: many producers, one consumer.

    Lock-free claim/commit per record; the consumer sleeps on a futex in the mapping. A producer that
    dies mid-write is skipped once its process is gone (`abandoned` counts those).
    """

    @staticmethod
    def create(cells: int, cell_size: int) -> ShmRing:
        """A new ring of `cells` cells of `cell_size` bytes (powers of two); ValueError otherwise."""
    @staticmethod
    def open(fd: int) -> ShmRing:
        """Map the ring behind an inherited fd (duplicated; the caller keeps its own). OSError if not a ring."""
    @property
    def fd(self) -> int:
        """The memfd (close-on-exec): pass it to a child explicitly."""
    @property
    def max_record(self) -> int:
        """Largest record, in bytes."""
    @property
    def cells(self) -> int: ...
    @property
    def cell_size(self) -> int: ...
    @property
    def abandoned(self) -> int:
        """Records skipped because their producer died between claiming and committing."""
    @property
    def used_cells(self) -> int:
        """Cells claimed and not yet released (a snapshot)."""
    def push(self, record: bytes) -> bool:
        """Write one record; False when full (nothing written). ValueError when it can never fit."""
    def set_notify(self, fd: int) -> None:
        """Producer side: also write the consumer's eventfd `fd` when a push finds it asleep."""
    def prepare_sleep(self) -> bool:
        """Consumer side (event-loop waiting): announce sleep; False when a record is already there."""
    def end_sleep(self) -> None:
        """Consumer side: awake again."""
    def drain(self, max_records: int) -> list[bytes]:
        """Up to `max_records` committed records, oldest first, without waiting (the consumer only)."""
    def wait(self, timeout: float) -> None:
        """Sleep, GIL released, until a record is committed; at most `timeout` s (capped at 1 s)."""

@final
class RingForwarder:
    """In a gateway worker: the gateway's data-plane vtable that writes every frame of a bound
    connection, untouched, into the ingress ring (an `F` record; kefu.workers.wire). Declines (the
    gateway's Python path answers) only when the ring is full or the slot is not bound."""

    def __new__(cls, ring: ShmRing, worker: int, generation: int) -> RingForwarder: ...
    def capsule(self) -> Any:
        """The C vtable (capsule named DATAPLANE_CAPSULE); keep this object alive while it is used."""
    def bind(self, slot: int, serial: int) -> None:
        """Connection `serial` holds gateway slot `slot` from now on."""
    def stats(self) -> tuple[int, int]:
        """(frames forwarded, frames refused because the ring was full)."""

@final
class WorkerRouter:
    """In the control process: worker connections as data-plane slots; ingress frames into the data
    plane, its deliveries out as one `D` record per worker, control records in order beside them."""

    def __new__(cls) -> WorkerRouter: ...
    def attach(self, worker: int, generation: int, ring: ShmRing) -> None: ...
    def detach(self, worker: int) -> None: ...
    def map(self, slot: int, worker: int, worker_slot: int, serial: int) -> None: ...
    def unmap(self, slot: int) -> None: ...
    def feed(self, plane: DataPlane, records: list[bytes], start: int) -> int:
        """Run records[start:] through `plane` while they are frames it takes; the index of the first
        record Python must handle (pickled, or a declined frame), or len(records)."""
    def route(self, plane: DataPlane) -> bool:
        """Write the plane's deliveries to the rings; True when some ring is backed up."""
    def send(self, worker: int, record: bytes) -> bool:
        """Queue an encoded control record for `worker` after what waits for it; True when backed up."""
    def flush(self) -> bool:
        """Retry backed-up records; True while some remain."""
    def backed_up(self) -> bool:
        """True while some worker's records wait for room in its ring."""
    @property
    def dropped(self) -> int:
        """Frames dropped because their connection or worker was gone."""

# --- durable message writer ---

_JournalOutcome = tuple[int, int, int, float, bool, str | None, str | None]
"""(token, conv, seq, ts, duplicate, error_code, error_detail): error_code is None on success, else
"unavailable" (error_detail says why), "not_found" or "conflict" (closed conversation); seq 0 then."""

class JournalFull(Exception):
    """Raised by `Journal.submit` when `max_pending` records are in flight (the disk does not keep up)."""

class JournalClosed(Exception):
    """Raised by `Journal.submit` once the journal is closed."""

@final
class Journal:
    """The durable writer of one SQLite file holding Kefu's schema (native/journal).

    `submit` never blocks; a writer thread commits everything pending as one transaction (one fsync)
    and publishes the outcomes once per batch: `completion_fd` (an eventfd) becomes readable, `drain`
    returns them. Other writers of the same file in this process hold `acquire_write_lock()` …
    `release_write_lock()` around their transactions.
    """

    def __new__(
        cls, path: str | os.PathLike[str], synchronous: str = "FULL", max_batch: int = 16384,
        max_pending: int = 65536, busy_timeout: float = 5.0,
    ) -> Journal:
        """Open and start the writer; OSError when the file or schema is unusable, ValueError for OFF."""
    def submit(
        self, token: int, conv: int, cmid: str, sender_id: str, sender_role: str, sender_name: str | None,
        text: str, kind: str, meta: str, ts: float | None = None,
    ) -> None:
        """Queue one message (`meta` is JSON text; `ts` None: commit time). JournalFull, JournalClosed,
        ValueError for an unknown role."""
    def drain(self) -> list[_JournalOutcome]:
        """Every outcome waiting, oldest first."""
    @property
    def completion_fd(self) -> int:
        """The eventfd, readable while outcomes wait; owned by the journal."""
    def acquire_write_lock(self) -> None:
        """Wait (GIL released) for the file's in-process write lock."""
    def release_write_lock(self) -> None:
        """Release the lock taken by `acquire_write_lock`."""
    def limit_pages(self, pages: int) -> None:
        """Apply `PRAGMA max_page_count = pages` to the journal's connection from the next batch on."""
    def set_commit_fault(self, fail: bool) -> None:
        """Tests: while true, every batch is rolled back as if COMMIT failed."""
    @property
    def commits(self) -> int:
        """Batches written so far."""
    @property
    def writer_cpu(self) -> float:
        """CPU seconds of the writer thread so far (updated once per batch)."""
    def take_batch_stats(self) -> list[tuple[int, float]]:
        """(records, commit_seconds) of each batch committed since the last call, whoever submitted it."""
    def bench_closed_loop(
        self, conversations: list[tuple[int, str]], appenders: int, warmup: float, seconds: float,
    ) -> dict[str, float]:
        """Benchmarks only: closed-loop appenders submitting from Rust (as the data plane does); returns
        acked, failed, seconds, cpu_seconds, writer_cpu_seconds, batches, p50_ms, p99_ms."""
    @property
    def in_flight(self) -> int:
        """Records submitted whose outcome is not published yet."""
    @property
    def closed(self) -> bool:
        """Whether `close()` was called."""
    def close(self) -> None:
        """Refuse new records, write and publish the submitted ones, stop the writer. Idempotent."""

# --- routing scorer ---

ROUTING_EXCLUSION_REASONS: int
"""Number of exclusion reason codes returned by `score_agents` (0 not online, 1 other site,
2 excluded, 3 at capacity, 4 language, 5 skill)."""

def score_agents(
    candidates: NDArray[np.int32],
    geohash: NDArray[np.uint64],
    geo_valid: NDArray[np.uint8],
    deesc: NDArray[np.float32],
    lang: NDArray[np.uint8],
    load: NDArray[np.uint16],
    capacity: NDArray[np.uint16],
    status: NDArray[np.uint8],
    last_assigned: NDArray[np.float64],
    site: NDArray[np.int32],
    skill_indptr: NDArray[np.int64],
    skill_agents: NDArray[np.int32],
    skill_proficiency: NDArray[np.float32],
    scratch_credit: NDArray[np.float64],
    scratch_depth: NDArray[np.uint8],
    *,
    site_id: int,
    lang_bits: int,
    visitor_geohash: int | None,
    geo_precision: int,
    p_neg: float,
    skill_path: Sequence[int],
    no_skill_value: float,
    min_skill_match: float,
    excluded: Sequence[int],
    now: float,
    fairness_horizon_s: float,
    weights: tuple[float, float, float, float, float],
    top_k: int,
    excluded_sample: int,
) -> tuple[
    list[tuple[int, float, float, float, float, float, float]],
    list[int],
    list[tuple[int, int]],
    int,
]:
    """Scores one conversation against `candidates` (indices into the agent columns) in one native
    pass with the GIL released.

    Filters (first failing one is the reason counted): status online, `site == site_id` (when
    `site_id >= 0`), not in `excluded`, `load < capacity`, `lang & lang_bits` (when `lang_bits`),
    skill match depth ratio >= `min_skill_match` (when `skill_path`). Score =
    w·(geo, sent, skill, load, fair) with the formulas of kefu.reference.routing. Returns
    `(top, excluded_counts, excluded_sample, eligible)`; `top` rows are
    `(index, score, geo, sent, skill, load, fair)`, best first (ties: lower load ratio, older
    `last_assigned`, lower index). The scratch arrays must be zero and are left zero; a concurrent
    call sharing them raises TypeError ("already borrowed") instead of racing.
    Raises ValueError on inconsistent arrays or out-of-range indices.
    """

# --- sentiment featuriser ---

FEATURIZER_VERSION: str
"""Version of the featuriser contract (docs/sentiment.md); models record it and the runtime checks it."""

@final
class Featurizer:
    """Text -> sorted unique hashed n-gram ids (the sentiment model's input); immutable, thread-safe.

    `lexicon` maps `[a-z0-9']+` tokens to integer buckets (VADER valence, rounded); each token found
    adds the id of its bucket. Raises ValueError unless 1 <= bits <= 30.
    """

    def __new__(cls, bits: int = ..., lexicon: dict[str, int] | None = None) -> Featurizer: ...  # bits: 18
    @property
    def bits(self) -> int:
        """Hash width: ids are in [0, 2**bits)."""
    @property
    def lexicon_size(self) -> int:
        """Number of lexicon entries."""
    def featurize(self, text: str) -> NDArray[np.int64]:
        """Sorted unique int64 ids of one text (at most 512; never empty)."""
    def featurize_batch(self, texts: list[str]) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """ids int64 (B, L) and mask float32 (B, L), rows padded with id 0 / mask 0; releases the GIL."""

def featurize(text: str, bits: int = ...) -> NDArray[np.int64]:
    """Sorted unique int64 ids of one text, without a lexicon."""

def featurize_batch(texts: list[str], bits: int = ...) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Padded ids int64 (B, L) and mask float32 (B, L) for a list of texts, without a lexicon."""

# --- mood (native/mood; binding native/src/mood.rs) ----------------------------------------------

@final
class MoodPipe:
    """The sentiment model's linear graph in Rust on its own thread, plus each conversation's mood
    (EWMA with a hysteresis angry flag, as kefu.sentiment.MoodTracker) and alerts armed per
    conversation. Thread-safe. Build it with `SentimentModel.mood_pipe()`.

    `weights`: the model's fp16 table as uint16 bits, shape (2**bits, classes). Raises ValueError on
    a shape or setting out of range."""

    def __new__(cls, weights: NDArray[np.uint16], bias: list[float], *, bits: int, lexicon: dict[str, int],
                neg_class: int = 0, alpha: float = 0.4, angry_threshold: float = 0.7,
                calm_threshold: float = 0.5, max_conversations: int = 100000,
                backlog_batches: int = 1024) -> MoodPipe: ...
    def score(self, text: str) -> float:
        """p_neg of one text, on the calling thread."""
    def observe(self, conv: int, text: str) -> tuple[float, bool, bool]:
        """Score and fold into the mood of `conv` now: (mood, angry, turned_angry)."""
    def update(self, conv: int, p_neg: float) -> tuple[float, bool, bool]:
        """Fold a p_neg into the mood of `conv`: (mood, angry, turned_angry)."""
    def submit(self, conv: int, text: str) -> bool:
        """Queue one text for the thread; False when the backlog is full (counted as dropped)."""
    def arm(self, conv: int, threshold: float | None) -> None:
        """Alert once when the mood of `conv` reaches `threshold`; None disarms."""
    def mood(self, conv: int) -> float | None: ...
    def forget(self, conv: int) -> None: ...
    def fileno(self) -> int:
        """An eventfd, readable while alerts may be waiting."""
    def take_alerts(self) -> list[tuple[int, float]]:
        """(conv, mood) of the conversations whose armed threshold was reached since the last call."""
    def stats(self) -> dict[str, int]:
        """scored, dropped, turned_angry, alerts, conversations, backlog (batches not yet scored)."""
    def close(self) -> None:
        """Score what was handed over, then stop the thread."""

# --- data plane (native/dataplane; binding native/src/dataplane.rs) ----------------------------------

DATAPLANE_CAPSULE: str
DATAPLANE_HEADROOM: int
DATAPLANE_LATENCY_BOUNDS: list[float]

@final
class DataPlane:
    """The native data plane: typed parsing of send/typing, tables written by the hub, ack/msg
    encoding and seq-ordered fan-out. One per event loop (not shareable across threads). The
    gateway uses it through `capsule()`; the methods below are the control plane's and the tests'."""

    def __new__(cls, *, max_text_bytes: int, max_cmid_len: int, typing_interval_s: float,
                max_queued: int = 65536) -> DataPlane: ...
    def capsule(self) -> Any:
        """The C vtable for the gateway (a capsule named DATAPLANE_CAPSULE)."""
    def connection(self, slot: int, principal_id: str, role_name: str, name: str | None, binary: bool) -> None: ...
    def connection_gone(self, slot: int) -> None: ...
    def conversation(self, conv: int, state: str, agent: str | None, last_seq: int) -> None: ...
    def conversation_gone(self, conv: int) -> None: ...
    def grant(self, slot: int, conv: int) -> None: ...
    def revoke(self, slot: int, conv: int) -> None: ...
    def caught_up(self, slot: int, conv: int, seq: int) -> None:
        """`slot` already has every msg of `conv` up to `seq` (its replay sent them): skip those."""
    def replaying(self, conv: int, on: bool) -> None: ...
    def read_mark(self, conv: int, participant: str, seq: int) -> None:
        """`participant`'s stored read mark in `conv` is at least `seq`: the data plane relays and
        raises that participant's later `read` frames itself."""
    def take_read_marks(self) -> list[tuple[int, str, int]]:
        """Read marks the data plane raised since the last call: (conv, participant, seq), to store."""
    def fanned_seq(self, conv: int) -> int | None: ...
    def stuck(self) -> list[tuple[int, int, int]]: ...
    def handle(self, slot: int, payload: bytes, binary: bool, now_wall: float, now_mono: float) -> bool: ...
    def take_deliveries(self) -> list[tuple[list[int], bytes, bytes | None]]: ...
    def take_records(self) -> list[tuple[int, int, str, str, str | None, str, str, str, str | None, float]]: ...
    def use_journal(self, journal: Journal) -> int:
        """Write through storage's journal (shared, not closed by the data plane); returns the data
        plane's own completion eventfd (call `pump` when readable)."""
    def pump(self) -> tuple[int, int, int]:
        """Drain the journal's outcomes into acks and fan-out; returns (acked, deduplicated, failed)."""
    def on_outcomes(self, outcomes: list[tuple[int, int, int, float, str]]) -> None: ...
    def deliver(self, conv: int, seq: int, ts: float, sender_id: str, sender_role: str, sender_name: str | None,
                cmid: str, kind_name: str, text: str, meta_json: str | None) -> None: ...
    def take_replay_frames(self) -> list[tuple[int, bytes]]: ...
    def use_mood(self, pipe: MoodPipe) -> None:
        """After each batch of outcomes, hand the batch's visitor texts to `pipe` in one go."""
    def close(self) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def latency_histograms(self) -> dict[str, tuple[list[int], float]]:
        """Natively recorded "ack" and "fanout" latency: (bucket counts, one more than
        DATAPLANE_LATENCY_BOUNDS, not cumulative; sum of seconds)."""
