"""Records on the rings between the control process and the gateway workers.

Two binary records carry the hot path (layouts in native/shmring/src/records.rs; the functions here
are their pure-Python twin, and tests/workers/test_wire.py holds both to the same bytes):

  F  worker → control: one complete client frame as received, with the connection's name on its
     worker (slot and serial) and the receive clocks. The control process's data plane runs it
     (native), or declines it and the hub handles it (Python).
  D  control → one worker: one encoded frame (JSON and/or kefu.bin.v1) and the (slot, serial) of
     each connection on that worker that gets it.

Everything else is one pickled tuple whose first item names its kind (a pickle starts with 0x80, so
the first byte tells the kinds apart). Pickle is safe here because only Kefu's own processes write
the rings (memfds shared with our children, never with a client); clients' bytes travel inside the
records as plain values, never as pickles.

worker → control (ingress, one ring for all workers; each record says which worker incarnation):
  ("up", worker, generation, pid)                     a worker (re)started: send it the site table
  ("conn", worker, generation, conn_id, principal, binary, slot)
  ("frame", worker, generation, conn_id, frame)        a decoded frame the forwarder could not take
  ("gone", worker, generation, conn_id)
  ("slow", worker, generation, conn_id)               closed as a slow consumer
control → one worker (its delivery ring):
  ("send", conn_ids, json_payload, binary_payload)     binary_payload None when nobody speaks binary
  ("close", conn_id, code, reason, graceful)
  ("sites", {site_id: allowed_origins})                for the origin check before the upgrade
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass
from typing import Any

PROTOCOL = pickle.HIGHEST_PROTOCOL

FRAME_TAG = b"F"
DELIVERY_TAG = b"D"
_FRAME_HEADER = struct.Struct("<cBHIIIdd")  # tag, binary, worker, generation, slot, serial, wall, mono
_DELIVERY_HEADER = struct.Struct("<c3xIII")  # tag, targets, json_len, binary_len


def encode(*record: Any) -> bytes:
    return pickle.dumps(record, PROTOCOL)


def decode(data: bytes) -> tuple[Any, ...]:
    record = pickle.loads(data)  # written only by our own processes (module docstring)
    if type(record) is not tuple or not record:
        raise ValueError("not a ring record")
    return record


@dataclass(frozen=True)
class FrameRecord:
    binary: bool
    worker: int
    generation: int
    slot: int
    serial: int
    now_wall: float
    now_mono: float
    payload: bytes


def encode_frame_record(record: FrameRecord) -> bytes:
    return _FRAME_HEADER.pack(FRAME_TAG, int(record.binary), record.worker, record.generation, record.slot,
                              record.serial, record.now_wall, record.now_mono) + record.payload


def decode_frame_record(data: bytes) -> FrameRecord | None:
    """The frame record in `data`, or None when it is not one."""
    if len(data) < _FRAME_HEADER.size or data[:1] != FRAME_TAG or data[1] > 1:
        return None
    _tag, binary, worker, generation, slot, serial, wall, mono = _FRAME_HEADER.unpack_from(data)
    return FrameRecord(bool(binary), worker, generation, slot, serial, wall, mono, data[_FRAME_HEADER.size:])


def encode_delivery_record(targets: list[tuple[int, int]], json_payload: bytes, binary_payload: bytes) -> bytes:
    parts = [_DELIVERY_HEADER.pack(DELIVERY_TAG, len(targets), len(json_payload), len(binary_payload))]
    parts.extend(struct.pack("<II", slot, serial) for slot, serial in targets)
    parts += [json_payload, binary_payload]
    return b"".join(parts)


def decode_delivery_record(data: bytes) -> tuple[list[tuple[int, int]], bytes, bytes] | None:
    """(targets, json, binary) of a delivery record, or None when `data` is not a well-formed one."""
    if len(data) < _DELIVERY_HEADER.size or data[:1] != DELIVERY_TAG:
        return None
    _tag, count, json_len, binary_len = _DELIVERY_HEADER.unpack_from(data)
    json_at = _DELIVERY_HEADER.size + 8 * count
    if json_at + json_len + binary_len != len(data):
        return None
    targets = [struct.unpack_from("<II", data, _DELIVERY_HEADER.size + 8 * i) for i in range(count)]
    return targets, data[json_at:json_at + json_len], data[json_at + json_len:]
