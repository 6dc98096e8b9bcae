"""Pure-Python twin of the data plane's frame parser (native/dataplane `parse`).

It is the hub's own path, spelled out: the gateway's decoding (strict UTF-8 JSON without NaN, or the
binary codec) and `kefu.realtime.frames`' checks in the order `Hub._on_send` / `_on_typing` apply
them, plus `check_storable_message`'s. The native parser may *decline* a frame this one accepts
(Python then handles it), but never the reverse, and what both accept must read the same:
tests/native/test_dataplane.py holds them to that on the corpus.
"""

from __future__ import annotations

import json
from typing import Any

from kefu.realtime import frames as F
from kefu.reference.codec import FrameError, decode_frame

# ("send", conv, cmid, text, kind, meta_json | None) | ("typing", conv, on) | ("read", conv, seq)
Parsed = tuple[Any, ...]


def parse_client_frame(payload: bytes, binary: bool, *, max_text_bytes: int = 8192,
                       max_cmid_len: int = 64) -> Parsed | None:
    """What the hub would act on for `payload`, or None when it would answer with an error (or the
    frame is not one of send/typing/read)."""
    try:
        frame = decode_frame(payload) if binary else F.decode_json_text(payload.decode("utf-8"))
    except (FrameError, ValueError, RecursionError):
        return None
    if type(frame) is not dict or type(frame.get("t")) is not str:
        return None
    try:
        kind = frame["t"]
        conv = F.conv_id(frame)
        if kind == "typing":
            return ("typing", conv, F.flag(frame, "on"))
        if kind == "read":
            return ("read", conv, F.seq_number(frame))
        if kind != "send":
            return None
        cmid = F.cmid(frame, max_cmid_len)
        text = F.text(frame, max_text_bytes, required=True) or ""
        message_kind = F.kind(frame)
        meta = F.meta(frame)
    except (F.ProtocolError, TypeError):  # TypeError: an unhashable `kind` ([] in a frozenset)
        return None
    meta_json = json.dumps(meta, ensure_ascii=False, separators=(",", ":"), allow_nan=False) if meta else None
    if meta_json is not None and "\\u0000" in meta_json:  # check_storable_message
        return None
    return ("send", conv, cmid, text, message_kind, meta_json)
