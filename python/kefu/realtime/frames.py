"""Validation of client frames (docs/protocol.md, "client → server").

Every check raises `ProtocolError(code, message)`; the hub turns it into an `error` frame that names
the offending frame type or cmid in `ref`, and the connection stays up.
"""

from __future__ import annotations

from typing import Any

MAX_CONV_ID = (1 << 53) - 1  # JSON numbers must stay exact integers
MESSAGE_KINDS = frozenset({"text", "image", "file"})
MAX_TAGS = 20
MAX_TAG_LEN = 64
MAX_META_DEPTH = 4
MAX_META_KEYS = 32


class ProtocolError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


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
    return value


def text(frame: dict[str, Any], max_bytes: int, *, required: bool) -> str | None:
    value = frame.get("text")
    if value is None and not required:
        return None
    if type(value) is not str:
        raise ProtocolError("bad_frame", "'text' must be a string")
    if len(value) * 4 > max_bytes and len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        raise ProtocolError("too_large", f"'text' is longer than {max_bytes} bytes of UTF-8")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ProtocolError("bad_frame", "'text' is not valid Unicode (lone surrogate)") from None
    return value


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
            _check_meta(item, depth + 1)
    elif type(value) is list:
        if len(value) > MAX_META_KEYS:
            raise ProtocolError("bad_frame", f"'meta' lists hold at most {MAX_META_KEYS} items")
        for item in value:
            _check_meta(item, depth + 1)
    elif type(value) is float:
        if value != value or value in (float("inf"), float("-inf")):
            raise ProtocolError("bad_frame", "'meta' numbers must be finite")
    elif value is not None and type(value) not in (str, int, bool):
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
