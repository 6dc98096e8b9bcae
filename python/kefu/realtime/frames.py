"""Validation of client frames (docs/protocol.md, "client → server").

Every check raises `ProtocolError(code, message)`; the hub turns it into an `error` frame that names
the offending frame type or cmid in `ref`, and the connection stays up.

The rule behind the checks: whatever is acknowledged must be storable by both databases and
encodable in both wire formats, for every subscriber, forever. So strings are valid UTF-8 without
U+0000 (PostgreSQL refuses it; JSON's "\\ud800" escape yields a lone surrogate, which is not UTF-8),
integers fit msgpack's range [-2^63, 2^64), floats are finite, and `meta` has depth and size bounds
that keep a `msg` frame far below the encoders' 64 KiB frame limit. These are plain functions and
constants so a native send path can mirror them.
"""

from __future__ import annotations

import json
from typing import Any

MAX_CONV_ID = (1 << 53) - 1  # JSON numbers must stay exact integers
MESSAGE_KINDS = frozenset({"text", "image", "file"})
MAX_TAGS = 20
MAX_TAG_LEN = 64
MAX_META_DEPTH = 4
MAX_META_KEYS = 32
MAX_META_BYTES = 4096  # `meta` as compact JSON (UTF-8); its msgpack form is never much larger
WIRE_INT_MIN = -(1 << 63)  # msgpack int64 …
WIRE_INT_MAX = (1 << 64) - 1  # … and uint64; JSON carries any integer
MAX_REF_LEN = 64


class ProtocolError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored and sent (U+0000, lone surrogate), or None when it can."""
    if "\x00" in value:
        return "contains U+0000"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid Unicode (lone surrogate)"
    return None


def clean_string(value: str, field: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise ProtocolError("bad_frame", f"'{field}' {problem}")
    return value


def error_ref(frame: dict[str, Any], known_types: Any) -> str | None:
    """What an `error` frame may echo in `ref`: the frame's cmid, else its type when it is one of
    ours; never an arbitrary client string (it could not be encoded, or bloat the answer)."""
    cmid = frame.get("cmid")
    if type(cmid) is str and 0 < len(cmid) <= MAX_REF_LEN and text_problem(cmid) is None:
        return cmid
    kind = frame.get("t")
    return kind if kind in known_types else None


def ping_number(frame: dict[str, Any]) -> int | None:
    """`ping.n` when it is an integer both formats can carry back in `pong`, else None."""
    value = frame.get("n")
    return value if type(value) is int and WIRE_INT_MIN <= value <= WIRE_INT_MAX else None


def conv_id(frame: dict[str, Any]) -> int:
    value = frame.get("conv")
    if type(value) is not int or not 0 < value <= MAX_CONV_ID:
        raise ProtocolError("bad_frame", "'conv' must be a positive integer")
    return value


def seq_number(frame: dict[str, Any], field: str = "seq") -> int:
    value = frame.get(field)
    if type(value) is not int or not 0 <= value <= MAX_CONV_ID:
        raise ProtocolError("bad_frame", f"'{field}' must be a non-negative integer")
    return value


def cmid(frame: dict[str, Any], max_len: int) -> str:
    value = frame.get("cmid")
    if type(value) is not str or not value or len(value) > max_len:
        raise ProtocolError("bad_frame", f"'cmid' must be a non-empty string of at most {max_len} characters")
    return clean_string(value, "cmid")


def text(frame: dict[str, Any], max_bytes: int, *, required: bool) -> str | None:
    value = frame.get("text")
    if value is None and not required:
        return None
    if type(value) is not str:
        raise ProtocolError("bad_frame", "'text' must be a string")
    if len(value) * 4 > max_bytes and len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ProtocolError("too_large", f"'text' is longer than {max_bytes} bytes of UTF-8")
    return clean_string(value, "text")


def kind(frame: dict[str, Any]) -> str:
    value = frame.get("kind", "text")
    if value not in MESSAGE_KINDS:
        raise ProtocolError("bad_frame", "'kind' must be one of text, image, file")
    return value


def meta(frame: dict[str, Any]) -> dict[str, Any]:
    value = frame.get("meta")
    if value is None:
        return {}
    if type(value) is not dict:
        raise ProtocolError("bad_frame", "'meta' must be an object")
    _check_meta(value, 1)
    # Bounded input (a frame is at most 64 KiB), so measuring by encoding is cheap and exact.
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_META_BYTES:
        raise ProtocolError("too_large", f"'meta' is {size} bytes as JSON; the limit is {MAX_META_BYTES}")
    return value


def _check_meta(value: Any, depth: int) -> None:
    if depth > MAX_META_DEPTH:
        raise ProtocolError("bad_frame", f"'meta' nests deeper than {MAX_META_DEPTH} levels")
    if type(value) is dict:
        if len(value) > MAX_META_KEYS:
            raise ProtocolError("bad_frame", f"'meta' objects hold at most {MAX_META_KEYS} keys")
        for key, item in value.items():
            if type(key) is not str:
                raise ProtocolError("bad_frame", "'meta' keys must be strings")
            clean_string(key, "meta")
            _check_meta(item, depth + 1)
    elif type(value) is list:
        if len(value) > MAX_META_KEYS:
            raise ProtocolError("bad_frame", f"'meta' lists hold at most {MAX_META_KEYS} items")
        for item in value:
            _check_meta(item, depth + 1)
    elif type(value) is str:
        clean_string(value, "meta")
    elif type(value) is int:
        if not WIRE_INT_MIN <= value <= WIRE_INT_MAX:
            raise ProtocolError("bad_frame", "'meta' integers must lie in [-2^63, 2^64)")
    elif type(value) is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise ProtocolError("bad_frame", "'meta' numbers must be finite")
    elif value is not None and type(value) is not bool:
        raise ProtocolError("bad_frame", "'meta' holds only JSON values")


def tags(frame: dict[str, Any]) -> tuple[str, ...]:
    value = frame.get("tags")
    if value is None:
        return ()
    if type(value) is not list or len(value) > MAX_TAGS:
        raise ProtocolError("bad_frame", f"'tags' must be a list of at most {MAX_TAGS} strings")
    for tag in value:
        if type(tag) is not str or not tag or len(tag) > MAX_TAG_LEN:
            raise ProtocolError("bad_frame", f"each tag is a non-empty string of at most {MAX_TAG_LEN} characters")
        clean_string(tag, "tags")
    return tuple(value)


def flag(frame: dict[str, Any], field: str) -> bool:
    value = frame.get(field)
    if type(value) is not bool:
        raise ProtocolError("bad_frame", f"'{field}' must be true or false")
    return value


def resume_map(frame: dict[str, Any]) -> dict[int, int]:
    """`hello.resume`: {conv: last_seq}; keys are decimal strings in JSON (and msgpack), ints allowed."""
    value = frame.get("resume")
    if value is None:
        return {}
    if type(value) is not dict or len(value) > 1000:
        raise ProtocolError("bad_frame", "'resume' must map at most 1000 conversations to last seqs")
    result: dict[int, int] = {}
    for key, last in value.items():
        try:
            conv = int(key)
        except (TypeError, ValueError):
            raise ProtocolError("bad_frame", "'resume' keys are conversation ids") from None
        if not 0 < conv <= MAX_CONV_ID or type(last) is not int or not 0 <= last <= MAX_CONV_ID:
            raise ProtocolError("bad_frame", "'resume' maps conversation ids to non-negative seqs")
        result[conv] = last
    return result


def name_field(frame: dict[str, Any], field: str, max_len: int = 128) -> str | None:
    """An optional short identifier (`to_agent`, `to_skill`): non-empty, bounded, clean."""
    value = frame.get(field)
    if value is None:
        return None
    if type(value) is not str or not value or len(value) > max_len:
        raise ProtocolError("bad_frame", f"'{field}' must be a non-empty string of at most {max_len} characters")
    return clean_string(value, field)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# JSON frames: NaN and ±Infinity are not JSON (Python's json accepts them by default).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
decode_json_text = _DECODER.decode
