"""Pure-Python twin of the `kefu.bin.v1` frame codec (native/codec, bound in native/src/codec.rs).

Slow and obvious on purpose: tests run it next to the native codec and require the same decoded dicts,
byte-identical encodings and the same error codes. It hand-writes the msgpack subset instead of using
the `msgpack` library so that nothing is shared with what it checks.

Frame layout: a 24-byte little-endian header (`u8 version = 1, u8 type, u16 flags, u32 body_len,
u64 conv, u64 seq`) then, unless flags bit 0 marks the body empty, one msgpack map of exactly
`body_len` bytes. A Python frame is `{"t": name, "conv"?: int, "seq"?: int, **fields}`; conv/seq sit in
the header and appear on decode only when non-zero.

Values: None, bool, int (i64 or u64 range), finite float, str (valid UTF-8), bytes (bytearray accepted
on encode), list (tuple accepted on encode), dict with str keys. Anything else is refused: a Python type
outside the model raises `TypeError`; any other problem raises `FrameError(code, message)` with code
`"too_large"` for a frame over `max_frame_size` and `"bad_frame"` otherwise.

`decode_frame` takes bytes, bytearray or any buffer of unsigned bytes (format "B" or "c", e.g. a
memoryview); any other object raises `TypeError`.

Check order (shared with the native codec so both report the same code):
- decode header: buffer over max → too_large; shorter than the header; version ≠ 1; 24 + body_len over
  max → too_large; unknown type; reserved flags; empty-body flag ≠ (body_len == 0); body_len ≠ bytes
  present. Then the body, front to back; every body error is bad_frame.
- encode: frame not a dict → TypeError; "t"; conv; seq; then entries in dict order, each checked for
  type, value model, limits, and finally room under max_frame_size (checked before every write).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

__all__ = ["FRAME_TYPES", "HEADER_SIZE", "FrameError", "FrameLimits", "decode_frame", "encode_frame"]

HEADER_SIZE = 24
VERSION = 1
FLAG_EMPTY_BODY = 1
MAX_DEPTH_CEILING = 32

FRAME_TYPES: dict[str, int] = {
    "hello": 1,
    "welcome": 2,
    "open": 3,
    "send": 4,
    "ack": 5,
    "msg": 6,
    "replayed": 7,
    "conv": 8,
    "typing": 9,
    "read": 10,
    "accept": 11,
    "transfer": 12,
    "close": 13,
    "error": 14,
    "ping": 15,
    "pong": 16,
}
_TYPE_NAMES = {code: name for name, code in FRAME_TYPES.items()}
_RESERVED_KEYS = frozenset({"t", "conv", "seq"})
_HEADER = struct.Struct("<BBHIQQ")


class FrameError(ValueError):
    """A refused frame: `args == (code, message)`; `code` is `"bad_frame"` or `"too_large"`."""

    @property
    def code(self) -> str:
        return self.args[0]

    @property
    def message(self) -> str:
        return self.args[1]


def _bad(message: str) -> FrameError:
    return FrameError("bad_frame", message)


@dataclass(frozen=True, slots=True)
class FrameLimits:
    """Bounds for one frame; the same value governs decode and encode."""

    max_frame_size: int = 65536
    max_depth: int = 8
    max_container_len: int = 1024
    max_str_len: int = 65536

    def __post_init__(self) -> None:
        for name in ("max_frame_size", "max_depth", "max_container_len", "max_str_len"):
            value = getattr(self, name)
            if not isinstance(value, int):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        largest_frame = HEADER_SIZE + 0xFFFFFFFF
        if not HEADER_SIZE <= self.max_frame_size <= largest_frame:
            raise ValueError(f"max_frame_size must be in {HEADER_SIZE}..={largest_frame}")
        if not 1 <= self.max_depth <= MAX_DEPTH_CEILING:
            raise ValueError(f"max_depth must be in 1..={MAX_DEPTH_CEILING}")


_DEFAULT_LIMITS = FrameLimits()


# --- decode ------------------------------------------------------------------------------------------


def decode_frame(data: bytes | bytearray | memoryview, limits: FrameLimits | None = None) -> dict[str, Any]:
    """Decode one whole frame into `{"t": name, "conv"?, "seq"?, **fields}`."""
    limits = limits or _DEFAULT_LIMITS
    view = memoryview(data)
    if view.format.lstrip("@=<>!") not in ("B", "c"):
        raise TypeError(f"data must be a buffer of bytes (format B or c), not format {view.format!r}")
    if view.nbytes > limits.max_frame_size:
        raise FrameError("too_large", f"frame is {view.nbytes} bytes, limit is {limits.max_frame_size}")
    data = view.tobytes()
    if len(data) < HEADER_SIZE:
        raise _bad(f"truncated header: {len(data)} of {HEADER_SIZE} bytes")
    version, type_code, flags, body_len, conv, seq = _HEADER.unpack_from(data)
    if version != VERSION:
        raise _bad(f"unsupported version {version}")
    if HEADER_SIZE + body_len > limits.max_frame_size:
        raise FrameError("too_large", f"header declares a {HEADER_SIZE + body_len}-byte frame")
    if type_code not in _TYPE_NAMES:
        raise _bad(f"unknown frame type {type_code}")
    if flags & ~FLAG_EMPTY_BODY:
        raise _bad(f"reserved flag bits set: {flags:#06x}")
    if bool(flags & FLAG_EMPTY_BODY) != (body_len == 0):
        raise _bad("empty-body flag disagrees with body length")
    if HEADER_SIZE + body_len != len(data):
        raise _bad(f"header declares a {body_len}-byte body, {len(data) - HEADER_SIZE} bytes follow")

    frame: dict[str, Any] = {"t": _TYPE_NAMES[type_code]}
    if conv:
        frame["conv"] = conv
    if seq:
        frame["seq"] = seq
    if body_len == 0:
        return frame
    reader = _Reader(data, HEADER_SIZE, limits)
    marker = reader.byte()
    if 0x80 <= marker <= 0x8F:
        count = marker & 0x0F
    elif marker == 0xDE:
        count = reader.uint(2)
    elif marker == 0xDF:
        count = reader.uint(4)
    else:
        raise _bad(f"body must be a map, found marker {marker:#04x}")
    reader.check_map_len(count)
    for _ in range(count):
        key = reader.key()
        if key in _RESERVED_KEYS:
            raise _bad(f"body key {key!r} belongs in the header")
        value = reader.value(2)
        if key in frame:
            raise _bad(f"duplicate key {key!r}")
        frame[key] = value
    if reader.pos != len(data):
        raise _bad(f"{len(data) - reader.pos} trailing bytes after the body map")
    return frame


class _Reader:
    """A cursor over the frame; `value(depth)` reads one value whose containers sit at `depth`."""

    def __init__(self, data: bytes, pos: int, limits: FrameLimits) -> None:
        self.data = data
        self.pos = pos
        self.limits = limits

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, size: int) -> bytes:
        if size > self.remaining():
            raise _bad("truncated body")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def sint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big", signed=True)

    def check_array_len(self, count: int) -> None:
        if count > self.limits.max_container_len:
            raise _bad(f"array of {count} items, limit is {self.limits.max_container_len}")
        if count > self.remaining():  # every item takes at least one byte
            raise _bad(f"array declares {count} items, {self.remaining()} bytes remain")

    def check_map_len(self, count: int) -> None:
        if count > self.limits.max_container_len:
            raise _bad(f"map of {count} entries, limit is {self.limits.max_container_len}")
        if count > self.remaining() // 2:  # every entry takes at least two bytes
            raise _bad(f"map declares {count} entries, {self.remaining()} bytes remain")

    def check_depth(self, depth: int) -> None:
        if depth > self.limits.max_depth:
            raise _bad(f"nesting deeper than {self.limits.max_depth}")

    def payload(self, size: int, what: str) -> bytes:
        if size > self.limits.max_str_len:
            raise _bad(f"{what} of {size} bytes, limit is {self.limits.max_str_len}")
        return self.take(size)

    def text(self, size: int) -> str:
        try:
            return self.payload(size, "str").decode("utf-8")
        except UnicodeDecodeError:
            raise _bad("str is not valid UTF-8") from None

    def key(self) -> str:
        marker = self.byte()
        if 0xA0 <= marker <= 0xBF:
            return self.text(marker & 0x1F)
        if 0xD9 <= marker <= 0xDB:
            return self.text(self.uint(1 << (marker - 0xD9)))
        raise _bad(f"map key must be a str, found marker {marker:#04x}")

    def finite(self, number: float) -> float:
        if not math.isfinite(number):
            raise _bad("float is NaN or infinite")
        return number

    def value(self, depth: int) -> Any:
        marker = self.byte()
        if marker <= 0x7F:
            return marker
        if marker >= 0xE0:
            return marker - 0x100
        if marker <= 0x8F:
            return self.map(marker & 0x0F, depth)
        if marker <= 0x9F:
            return self.array(marker & 0x0F, depth)
        if marker <= 0xBF:
            return self.text(marker & 0x1F)
        if marker == 0xC0:
            return None
        if marker == 0xC2:
            return False
        if marker == 0xC3:
            return True
        if 0xC4 <= marker <= 0xC6:
            return self.payload(self.uint(1 << (marker - 0xC4)), "bin")
        if marker == 0xCA:
            return self.finite(struct.unpack(">f", self.take(4))[0])
        if marker == 0xCB:
            return self.finite(struct.unpack(">d", self.take(8))[0])
        if 0xCC <= marker <= 0xCF:
            return self.uint(1 << (marker - 0xCC))
        if 0xD0 <= marker <= 0xD3:
            return self.sint(1 << (marker - 0xD0))
        if 0xD9 <= marker <= 0xDB:
            return self.text(self.uint(1 << (marker - 0xD9)))
        if marker in (0xDC, 0xDD):
            return self.array(self.uint(2 if marker == 0xDC else 4), depth)
        if marker in (0xDE, 0xDF):
            return self.map(self.uint(2 if marker == 0xDE else 4), depth)
        if marker == 0xC1:
            raise _bad("marker 0xc1 is never used in msgpack")
        raise _bad("msgpack ext types are not accepted")  # 0xc7..0xc9, 0xd4..0xd8

    def array(self, count: int, depth: int) -> list[Any]:
        self.check_depth(depth)
        self.check_array_len(count)
        return [self.value(depth + 1) for _ in range(count)]

    def map(self, count: int, depth: int) -> dict[str, Any]:
        self.check_depth(depth)
        self.check_map_len(count)
        result: dict[str, Any] = {}
        for _ in range(count):
            key = self.key()
            value = self.value(depth + 1)
            if key in result:
                raise _bad(f"duplicate key {key!r}")
            result[key] = value
        return result


# --- encode ------------------------------------------------------------------------------------------


def encode_frame(frame: dict[str, Any], limits: FrameLimits | None = None) -> bytes:
    """Encode a frame dict into canonical bytes (smallest int/str/bin/array/map forms, float64)."""
    limits = limits or _DEFAULT_LIMITS
    if not isinstance(frame, dict):
        raise TypeError(f"frame must be a dict, not {type(frame).__name__}")
    if "t" not in frame:
        raise _bad('frame has no "t"')
    type_name = frame["t"]
    if not isinstance(type_name, str) or type_name not in FRAME_TYPES:
        raise _bad(f"unknown frame type {type_name!r}")
    conv = _header_number(frame, "conv")
    seq = _header_number(frame, "seq")
    field_count = len(frame) - 1 - ("conv" in frame) - ("seq" in frame)
    writer = _Writer(limits)
    if field_count:
        writer.container(field_count, 1, 0x80, 0xDE, "map")
    for key, value in frame.items():
        key_text = _key_text(key)
        if key_text in _RESERVED_KEYS:
            continue
        writer.text(key_text)
        writer.value(value, 2)
    body = bytes(writer.out[HEADER_SIZE:])
    flags = 0 if body else FLAG_EMPTY_BODY
    header = _HEADER.pack(VERSION, FRAME_TYPES[type_name], flags, len(body), conv, seq)
    return header + body


def _header_number(frame: dict[str, Any], key: str) -> int:
    if key not in frame:
        return 0
    number = frame[key]
    if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < 2**64:
        raise _bad(f"{key} must be an int in 0..2**64")
    return number


def _key_text(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"map keys must be str, not {type(key).__name__}")
    return key


class _Writer:
    def __init__(self, limits: FrameLimits) -> None:
        self.limits = limits
        self.out = bytearray(HEADER_SIZE)

    def put(self, chunk: bytes) -> None:
        if len(self.out) + len(chunk) > self.limits.max_frame_size:
            raise FrameError("too_large", f"encoded frame exceeds {self.limits.max_frame_size} bytes")
        self.out += chunk

    def length_prefixed(
        self, size: int, fix: tuple[int, int] | None, marker8: int | None, marker16: int
    ) -> bytes:
        if fix is not None and size < fix[1]:
            return bytes([fix[0] | size])
        if marker8 is not None and size <= 0xFF:
            return bytes([marker8, size])
        if size <= 0xFFFF:
            return bytes([marker16]) + size.to_bytes(2, "big")
        return bytes([marker16 + 1]) + (size & 0xFFFFFFFF).to_bytes(4, "big")

    def payload_len(self, size: int, what: str) -> None:
        if size > self.limits.max_str_len:
            raise _bad(f"{what} of {size} bytes, limit is {self.limits.max_str_len}")

    def text(self, text: str) -> None:
        try:
            encoded = text.encode("utf-8")
        except UnicodeEncodeError:
            raise _bad("str is not valid UTF-8 (lone surrogate)") from None
        self.payload_len(len(encoded), "str")
        self.put(self.length_prefixed(len(encoded), (0xA0, 32), 0xD9, 0xDA) + encoded)

    def binary(self, data: bytes) -> None:
        self.payload_len(len(data), "bin")
        self.put(self.length_prefixed(len(data), None, 0xC4, 0xC5) + data)

    def container(self, count: int, depth: int, fix_base: int, marker16: int, what: str) -> None:
        if depth > self.limits.max_depth:
            raise _bad(f"nesting deeper than {self.limits.max_depth}")
        if count > self.limits.max_container_len:
            raise _bad(f"{what} of {count} items, limit is {self.limits.max_container_len}")
        self.put(self.length_prefixed(count, (fix_base, 16), None, marker16))

    def integer(self, number: int) -> None:
        if number >= 0:
            if number <= 0x7F:
                self.put(bytes([number]))
            elif number < 2**64:
                width = next(size for size in (1, 2, 4, 8) if number < 1 << (8 * size))
                self.put(bytes([0xCC + (1, 2, 4, 8).index(width)]) + number.to_bytes(width, "big"))
            else:
                raise _bad("int outside the i64/u64 range")
        elif number >= -32:
            self.put(bytes([number + 0x100]))
        elif number >= -(2**63):
            width = next(size for size in (1, 2, 4, 8) if number >= -(1 << (8 * size - 1)))
            self.put(bytes([0xD0 + (1, 2, 4, 8).index(width)]) + number.to_bytes(width, "big", signed=True))
        else:
            raise _bad("int outside the i64/u64 range")

    def value(self, value: Any, depth: int) -> None:
        if isinstance(value, str):
            self.text(value)
        elif value is None:
            self.put(b"\xc0")
        elif isinstance(value, bool):
            self.put(b"\xc3" if value else b"\xc2")
        elif isinstance(value, int):
            self.integer(value)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise _bad("float is NaN or infinite")
            self.put(b"\xcb" + struct.pack(">d", value))
        elif isinstance(value, dict):
            self.container(len(value), depth, 0x80, 0xDE, "map")
            for key, item in value.items():
                self.text(_key_text(key))
                self.value(item, depth + 1)
        elif isinstance(value, (list, tuple)):
            self.container(len(value), depth, 0x90, 0xDC, "array")
            for item in value:
                self.value(item, depth + 1)
        elif isinstance(value, (bytes, bytearray)):
            self.binary(bytes(value))
        else:
            raise TypeError(f"cannot encode a {type(value).__name__} in a frame")
