"""The native kefu.bin.v1 codec against its pure-Python twin, the msgpack library and the attack corpus.

Both implementations must agree exactly: same decoded dicts (compared type-strictly, since
`1 == 1.0 == True` in Python), byte-identical encodings, and the same exception type and error code
for every refused input. The two decoders report the first problem met in the same front-to-back order
(documented in kefu.reference.codec), so even inputs with several defects get the same code.
"""

from __future__ import annotations

import array
import math
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kefu import compiled
from kefu.reference import codec as reference

IMPLEMENTATIONS = {
    "native": SimpleNamespace(
        FrameError=compiled.FrameError,
        FrameLimits=compiled.FrameLimits,
        decode_frame=compiled.decode_frame,
        encode_frame=compiled.encode_frame,
        FRAME_TYPES=compiled.FRAME_TYPES,
        HEADER_SIZE=compiled.HEADER_SIZE,
    ),
    "reference": reference,
}
CORPUS_DIR = Path(__file__).parent / "corpus" / "codec"
HEADER = struct.Struct("<BBHIQQ")
RESERVED_KEYS = {"t", "conv", "seq"}


@pytest.fixture(params=list(IMPLEMENTATIONS), name="codec")
def codec_fixture(request: pytest.FixtureRequest) -> Any:
    return IMPLEMENTATIONS[request.param]


def strict(value: Any) -> Any:
    """A type-strict image of a value, so that True, 1 and 1.0 compare different."""
    if isinstance(value, dict):
        return ("dict", [(key, strict(item)) for key, item in value.items()])
    if isinstance(value, list | tuple):
        return ("list", [strict(item) for item in value])
    return (type(value).__name__, value)


def outcome(function: Any, *args: Any) -> Any:
    """("ok", strict result) or ("error", exception type name, code-or-None)."""
    try:
        return ("ok", strict(function(*args)))
    except (TypeError, ValueError) as error:
        return (
            "error",
            "FrameError" if hasattr(error, "code") else type(error).__name__,
            getattr(error, "code", None),
        )


def both(function_name: str, *args: Any, limits: dict[str, int] | None = None) -> Any:
    """Run `function_name` on both implementations, assert they agree, return the shared outcome."""
    results = {}
    for name, codec in IMPLEMENTATIONS.items():
        call_args = args if limits is None else (*args, codec.FrameLimits(**limits))
        results[name] = outcome(getattr(codec, function_name), *call_args)
    assert results["native"] == results["reference"], results
    return results["native"]


def frame_bytes(body: bytes, type_code: int = 6, conv: int = 0, seq: int = 0) -> bytes:
    return HEADER.pack(1, type_code, 0 if body else 1, len(body), conv, seq) + body


def corpus_cases() -> list[tuple[str, str, bytes]]:
    cases = []
    for path in sorted(CORPUS_DIR.glob("*.hex")):
        case, code = path.name.removesuffix(".hex").rsplit(".", 1)
        hex_text = "".join(line for line in path.read_text().splitlines() if not line.startswith("#"))
        cases.append((case, code, bytes.fromhex(hex_text)))
    return cases


CORPUS = corpus_cases()
SAMPLE = {
    "t": "msg",
    "conv": 42,
    "seq": 7,
    "id": "m-01HZX",
    "text": "Hello, I need help with my order #1234 — it has not arrived yet. 谢谢!",
    "at": 1_700_000_000.25,
    "attachments": [{"name": "photo.png", "size": 70_000, "data": b"\x89PNG"}],
    "flags": [None, True, False, -1, -33, -129, -40_000, -(2**63), 2**64 - 1, 2**63],
}


# --- API surface -------------------------------------------------------------------------------------


def test_constants_match(codec: Any) -> None:
    assert codec.HEADER_SIZE == 24
    assert codec.FRAME_TYPES == reference.FRAME_TYPES
    assert sorted(codec.FRAME_TYPES.values()) == list(range(1, 17))
    assert codec.FRAME_TYPES["msg"] == 6 and codec.FRAME_TYPES["pong"] == 16


def test_frame_error_shape(codec: Any) -> None:
    assert issubclass(codec.FrameError, ValueError)
    with pytest.raises(codec.FrameError) as caught:
        codec.decode_frame(b"\x01")
    error = caught.value
    assert error.args == (error.code, error.message)
    assert error.code == "bad_frame" and "header" in error.message
    made = codec.FrameError("too_large", "why")
    assert (made.code, made.message) == ("too_large", "why")


def test_frame_limits(codec: Any) -> None:
    limits = codec.FrameLimits()
    assert (limits.max_frame_size, limits.max_depth, limits.max_container_len, limits.max_str_len) == (
        65536,
        8,
        1024,
        65536,
    )
    assert repr(limits) == repr(reference.FrameLimits())
    assert codec.FrameLimits(max_depth=3) == codec.FrameLimits(65536, 3)
    assert hash(codec.FrameLimits()) == hash(codec.FrameLimits())
    with pytest.raises(AttributeError):
        limits.max_depth = 9
    for bad in ({"max_depth": 0}, {"max_depth": 33}, {"max_frame_size": 23}, {"max_str_len": -1}):
        with pytest.raises(ValueError):
            codec.FrameLimits(**bad)


def test_decode_rejects_non_bytes(codec: Any) -> None:
    for data in ("not bytes", 24, None, array.array("i", [0] * 6)):
        with pytest.raises(TypeError):
            codec.decode_frame(data)
    assert codec.decode_frame(array.array("B", HEADER.pack(1, 15, 1, 0, 0, 0))) == {"t": "ping"}


# --- round trips and canonical encoding --------------------------------------------------------------


def test_sample_round_trip_is_identical_across_implementations() -> None:
    encoded = both("encode_frame", SAMPLE)
    native_bytes = compiled.encode_frame(SAMPLE)
    assert native_bytes == reference.encode_frame(SAMPLE)
    body = {key: value for key, value in SAMPLE.items() if key not in RESERVED_KEYS}
    assert native_bytes[24:] == msgpack.packb(body, use_bin_type=True)
    assert HEADER.unpack_from(native_bytes) == (1, 6, 0, len(native_bytes) - 24, 42, 7)
    assert encoded[0] == "ok"
    decoded = both("decode_frame", native_bytes)
    assert decoded == ("ok", strict(SAMPLE))


def test_empty_body_and_zero_header_fields(codec: Any) -> None:
    encoded = codec.encode_frame({"t": "ping", "conv": 0})
    assert encoded == HEADER.pack(1, 15, 1, 0, 0, 0)
    assert codec.decode_frame(encoded) == {"t": "ping"}
    assert codec.decode_frame(HEADER.pack(1, 8, 1, 0, 2**64 - 1, 5)) == {
        "t": "conv",
        "conv": 2**64 - 1,
        "seq": 5,
    }


def test_decode_accepts_every_bytes_like(codec: Any) -> None:
    encoded = codec.encode_frame(SAMPLE)
    for data in (encoded, bytearray(encoded), memoryview(encoded), memoryview(b"xx" + encoded)[2:]):
        assert strict(codec.decode_frame(data)) == strict(SAMPLE)


def test_encode_accepts_tuple_and_bytearray_as_array_and_bin(codec: Any) -> None:
    encoded = codec.encode_frame({"t": "send", "a": (1, 2), "b": bytearray(b"xy")})
    assert codec.decode_frame(encoded) == {"t": "send", "a": [1, 2], "b": b"xy"}


def test_non_canonical_input_decodes_to_the_same_values() -> None:
    # map16 body, uint64-encoded 5, float32 1.5, str16 "hi", bin32 b"z"
    body = bytes.fromhex("de0004a161cf0000000000000005a162ca3fc00000a163da00026869a164c600000001" + "7a")
    outcome_both = both("decode_frame", frame_bytes(body))
    assert outcome_both == ("ok", strict({"t": "msg", "a": 5, "b": 1.5, "c": "hi", "d": b"z"}))


def test_many_distinct_keys_decode_correctly() -> None:
    # The native decoder reuses key strings through a small per-thread cache: exercise misses,
    # evictions, slot collisions and long (uncached) keys, then the same keys again as hits.
    for _ in range(2):
        for start in range(0, 3000, 100):
            frame = {
                "t": "send",
                **{f"k{index}" + "x" * (index % 40): index for index in range(start, start + 100)},
            }
            assert compiled.decode_frame(compiled.encode_frame(frame)) == frame


def test_decoding_from_several_threads() -> None:
    frames = [
        {"t": "msg", "seq": worker + 1, f"field{worker}": "x" * worker, "text": "hi"} for worker in range(4)
    ]

    def work(frame: dict[str, Any]) -> bool:
        encoded = compiled.encode_frame(frame)
        return all(compiled.decode_frame(encoded) == frame for _ in range(2000))

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(work, frames))


# --- refusals ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "code", "data"), CORPUS, ids=[case for case, _, _ in CORPUS])
def test_corpus_case_is_refused_with_its_code(case: str, code: str, data: bytes) -> None:
    assert both("decode_frame", data) == ("error", "FrameError", code)
    assert outcome(compiled.decode_frame, bytearray(data)) == ("error", "FrameError", code)


def test_corpus_is_complete() -> None:
    names = {case for case, _, _ in CORPUS}
    for required in (
        "array32-4g-in-map",
        "str32-4g",
        "nesting-10000-fixarray",
        "chained-array16",
        "truncated-header",
        "body-shorter-than-declared",
        "body-len-4g",
        "unknown-type-17",
        "version-2",
        "reserved-flag-bit1",
        "ext-fixext1",
        "float64-nan",
        "float64-inf",
        "duplicate-key-body",
        "non-string-key-int",
        "invalid-utf8-value",
    ):
        assert required in names
    assert (CORPUS_DIR / "README.md").exists()


def test_hostile_lengths_are_refused_even_with_generous_limits() -> None:
    generous = {
        "max_frame_size": 1 << 20,
        "max_depth": 32,
        "max_container_len": 1 << 30,
        "max_str_len": 1 << 30,
    }
    for case, _, data in CORPUS:
        if case in {
            "array32-4g-in-map",
            "str32-4g",
            "bin32-4g",
            "map32-4g",
            "chained-array16",
            "nesting-10000-fixarray",
        }:
            assert both("decode_frame", data, limits=generous) == ("error", "FrameError", "bad_frame")


def test_oversized_buffer_is_too_large_before_anything_else() -> None:
    assert both("decode_frame", b"\x00" * 65537) == ("error", "FrameError", "too_large")
    assert outcome(compiled.decode_frame, memoryview(b"\x00" * 65537)) == ("error", "FrameError", "too_large")


def _nested(depth: int) -> bytes:
    return frame_bytes(b"\x81\xa1a" + b"\x91" * (depth - 1) + b"\xc0")


def _nested_value(depth: int) -> Any:
    value: Any = None
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("max_depth", [1, 2, 8])
def test_depth_limit_at_and_past_the_limit(max_depth: int) -> None:
    limits = {"max_depth": max_depth}
    assert both("decode_frame", _nested(max_depth), limits=limits)[0] == "ok"
    assert both("decode_frame", _nested(max_depth + 1), limits=limits) == ("error", "FrameError", "bad_frame")
    assert both("encode_frame", {"t": "send", "a": _nested_value(max_depth)}, limits=limits)[0] == "ok"
    refused = both("encode_frame", {"t": "send", "a": _nested_value(max_depth + 1)}, limits=limits)
    assert refused == ("error", "FrameError", "bad_frame")


def test_self_referential_value_is_refused_by_depth() -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert both("encode_frame", {"t": "send", "a": loop}) == ("error", "FrameError", "bad_frame")


def test_container_limit_at_and_past_the_limit() -> None:
    limits = {"max_container_len": 20}
    for size, expected in ((20, "ok"), (21, "error")):
        array_frame = frame_bytes(b"\x81\xa1a\xdc" + size.to_bytes(2, "big") + b"\x00" * size)
        assert both("decode_frame", array_frame, limits=limits)[0] == expected
        assert both("encode_frame", {"t": "send", "a": [0] * size}, limits=limits)[0] == expected
        fields = {f"k{index}": 0 for index in range(size)}
        assert both("encode_frame", {"t": "send", **fields}, limits=limits)[0] == expected
        assert both("encode_frame", {"t": "send", "m": fields}, limits=limits)[0] == expected


def test_string_limit_at_and_past_the_limit() -> None:
    limits = {"max_str_len": 40}
    for size, expected in ((40, "ok"), (41, "error")):
        for value in ("x" * size, b"x" * size):
            assert both("encode_frame", {"t": "send", "a": value}, limits=limits)[0] == expected
        assert both("encode_frame", {"t": "send", "k" * size: 1}, limits=limits)[0] == expected
        data = frame_bytes(b"\x81\xa1a\xd9" + bytes([size]) + b"x" * size)
        assert both("decode_frame", data, limits=limits)[0] == expected
    # 40 bytes of UTF-8 is 20 two-byte characters: the limit counts bytes, not characters.
    assert both("encode_frame", {"t": "send", "a": "é" * 21}, limits=limits)[0] == "error"


def test_frame_size_limit_at_and_past_the_limit() -> None:
    overhead = 24 + 3 + 5  # header, {"a": ...}, bin32 prefix
    for total, expected in ((65536, ("ok",)), (65537, ("error", "FrameError", "too_large"))):
        payload = b"x" * (total - overhead)
        data = frame_bytes(b"\x81\xa1a\xc6" + len(payload).to_bytes(4, "big") + payload)
        assert both("decode_frame", data)[: len(expected)] == expected
        limits = {"max_str_len": 1 << 20}
        str16_overhead = 24 + 3 + 3  # the encoder picks str16 for this length
        encoded = both("encode_frame", {"t": "send", "a": "y" * (total - str16_overhead)}, limits=limits)
        assert encoded[: len(expected)] == expected
    declared = HEADER.pack(1, 6, 0, 65536 - 24 + 1, 0, 0)
    assert both("decode_frame", declared) == ("error", "FrameError", "too_large")


ENCODE_REFUSALS = [
    ([("t", "msg")], "TypeError", None),  # not a dict
    ({}, "FrameError", "bad_frame"),  # no "t"
    ({"t": "nope"}, "FrameError", "bad_frame"),
    ({"t": 6}, "FrameError", "bad_frame"),
    ({"t": "msg", "conv": -1}, "FrameError", "bad_frame"),
    ({"t": "msg", "seq": 2**64}, "FrameError", "bad_frame"),
    ({"t": "msg", "seq": True}, "FrameError", "bad_frame"),
    ({"t": "msg", "conv": "1"}, "FrameError", "bad_frame"),
    ({"t": "msg", "a": 2**64}, "FrameError", "bad_frame"),
    ({"t": "msg", "a": -(2**63) - 1}, "FrameError", "bad_frame"),
    ({"t": "msg", "a": math.nan}, "FrameError", "bad_frame"),
    ({"t": "msg", "a": -math.inf}, "FrameError", "bad_frame"),
    ({"t": "msg", "a": "\ud800"}, "FrameError", "bad_frame"),
    ({"t": "msg", "\udfff": 1}, "FrameError", "bad_frame"),
    ({"t": "msg", 1: 1}, "TypeError", None),
    ({"t": "msg", "a": {b"k": 1}}, "TypeError", None),
    ({"t": "msg", "a": {1, 2}}, "TypeError", None),
    ({"t": "msg", "a": object()}, "TypeError", None),
    ({"t": "msg", "a": memoryview(b"x")}, "TypeError", None),
    # several defects: the first one met in dict order decides
    ({"t": "msg", "a": math.nan, "b": object()}, "FrameError", "bad_frame"),
    ({"t": "msg", "a": object(), "b": math.nan}, "TypeError", None),
]


@pytest.mark.parametrize(("frame", "kind", "code"), ENCODE_REFUSALS)
def test_encode_refusals_agree(frame: Any, kind: str, code: str | None) -> None:
    assert both("encode_frame", frame) == ("error", kind, code)


def test_encode_too_large_wins_when_met_first() -> None:
    limits = {"max_frame_size": 64}
    assert both("encode_frame", {"t": "msg", "a": "x" * 60, "b": math.nan}, limits=limits) == (
        "error",
        "FrameError",
        "too_large",
    )
    assert both("encode_frame", {"t": "msg", "b": math.nan, "a": "x" * 60}, limits=limits) == (
        "error",
        "FrameError",
        "bad_frame",
    )


# --- generated frames --------------------------------------------------------------------------------

KEYS = st.text(max_size=8).filter(lambda key: key not in RESERVED_KEYS)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.binary(max_size=40)
)
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)
FRAMES = st.builds(
    lambda frame_type, conv, seq, fields: {
        "t": frame_type,
        **({"conv": conv} if conv else {}),
        **({"seq": seq} if seq else {}),
        **fields,
    },
    st.sampled_from(sorted(reference.FRAME_TYPES)),
    st.integers(min_value=0, max_value=2**64 - 1) | st.just(0),
    st.integers(min_value=0, max_value=2**64 - 1) | st.just(0),
    st.dictionaries(KEYS, VALUES, max_size=6),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FRAMES)
def test_generated_frames_round_trip_identically(frame: dict[str, Any]) -> None:
    encoded = compiled.encode_frame(frame)
    assert reference.encode_frame(frame) == encoded
    assert strict(compiled.decode_frame(encoded)) == strict(frame)
    assert strict(reference.decode_frame(encoded)) == strict(frame)
    body = {key: value for key, value in frame.items() if key not in RESERVED_KEYS}
    if body:
        assert msgpack.unpackb(encoded[24:], raw=False) == body
        assert msgpack.packb(body, use_bin_type=True) == encoded[24:]
    else:
        assert len(encoded) == 24


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(KEYS, VALUES, min_size=1, max_size=6))
def test_bodies_packed_by_msgpack_decode_to_the_same_fields(body: dict[str, Any]) -> None:
    packed = msgpack.packb(body, use_bin_type=True)
    decoded = both("decode_frame", frame_bytes(packed, type_code=4))
    assert decoded == ("ok", strict({"t": "send", **msgpack.unpackb(packed, raw=False)}))


MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "insert", "delete", "truncate", "fix_len"]),
        st.integers(0, 10**6),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=4,
)


def mutate(data: bytes, mutations: list[tuple[str, int, int]]) -> bytes:
    buffer = bytearray(data)
    for kind, position, byte in mutations:
        at = position % (len(buffer) + 1)
        if kind == "insert":
            buffer.insert(at, byte)
        elif kind == "truncate":
            del buffer[at:]
        elif kind == "fix_len" and len(buffer) >= 8:
            # keep body_len consistent so that the mutation reaches the body parser
            buffer[4:8] = max(len(buffer) - 24, 0).to_bytes(4, "little")
        elif buffer and at < len(buffer):
            if kind == "flip":
                buffer[at] ^= 1 << (byte % 8)
            elif kind == "set":
                buffer[at] = byte
            elif kind == "delete":
                del buffer[at]
    return bytes(buffer)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(FRAMES, MUTATIONS)
def test_mutated_frames_get_the_same_verdict(
    frame: dict[str, Any], mutations: list[tuple[str, int, int]]
) -> None:
    mutated = mutate(compiled.encode_frame(frame), mutations)
    verdict = both("decode_frame", mutated)
    if verdict[0] == "ok":
        decoded = compiled.decode_frame(mutated)
        again = compiled.encode_frame(decoded)
        assert strict(compiled.decode_frame(again)) == strict(decoded)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.integers(1, 16), st.booleans())
def test_random_bodies_get_the_same_verdict(body: bytes, type_code: int, honest_header: bool) -> None:
    data = frame_bytes(body, type_code=type_code) if honest_header else body
    both("decode_frame", data)
