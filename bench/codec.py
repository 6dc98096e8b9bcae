"""Frame codec throughput: native (`kefu.compiled`) vs the pure-Python twin vs msgpack-python.

`python -m bench.codec [--seconds-per-case S]` measures encode and decode of two realistic frames
(a `msg` with ~120 bytes of text, as the server fans out, and a client `send`), reports frames/s and
MB/s (frame bytes, header included), and writes bench/results/codec.md. The msgpack column is context
only: it packs the same body with `msgpack.packb` behind a `struct` header and validates nothing
(no depth, duplicate-key, reserved-key or float checks), so it is the "no codec of our own" baseline.
Bounded: each of the 12 cases runs for `--seconds-per-case` (default 1.5 s, ~20 s in total).
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import time
from collections.abc import Callable
from typing import Any

import msgpack
from kefu.compiled import FRAME_TYPES, decode_frame, encode_frame
from kefu.reference import codec as reference

from bench.common import machine_info, write_report

HEADER = struct.Struct("<BBHIQQ")
TYPE_NAMES = {code: name for name, code in FRAME_TYPES.items()}
FRAMES: dict[str, dict[str, Any]] = {
    "msg": {
        "t": "msg",
        "conv": 4_815_162_342,
        "seq": 108,
        "id": "01JDQ6ZK7R9W3V8Y5T2M4N6P8Q",
        "from": "visitor:7f3c2a9e",
        "kind": "text",
        "text": "Hi! I ordered the blue kettle last Tuesday (order #A-20931) and the tracking page still says "
        "'label created'. Can you check?",
        "at": 1_732_800_000_123,
    },
    "send": {
        "t": "send",
        "conv": 4_815_162_342,
        "cid": "c-9b1e4f2a",
        "text": "Thanks, that helps. Could you also change the delivery address?",
    },
}


def _msgpack_encode(frame: dict[str, Any]) -> bytes:
    body = {key: value for key, value in frame.items() if key not in ("t", "conv", "seq")}
    packed = msgpack.packb(body, use_bin_type=True) if body else b""
    flags = 0 if packed else 1
    return (
        HEADER.pack(1, FRAME_TYPES[frame["t"]], flags, len(packed), frame.get("conv", 0), frame.get("seq", 0))
        + packed
    )


def _msgpack_decode(data: bytes) -> dict[str, Any]:
    _, type_code, _, body_len, conv, seq = HEADER.unpack_from(data)
    frame: dict[str, Any] = {"t": TYPE_NAMES[type_code]}
    if conv:
        frame["conv"] = conv
    if seq:
        frame["seq"] = seq
    if body_len:
        frame.update(msgpack.unpackb(data[24:], raw=False))
    return frame


IMPLEMENTATIONS: dict[str, tuple[Callable[[dict[str, Any]], bytes], Callable[[bytes], dict[str, Any]]]] = {
    "native": (encode_frame, decode_frame),
    "msgpack + struct": (_msgpack_encode, _msgpack_decode),
    "reference (pure Python)": (reference.encode_frame, reference.decode_frame),
}


def _rate(operation: Callable[[Any], Any], argument: Any, seconds: float) -> float:
    """Best-of-3 operations per second, each round sized to about a third of `seconds`."""
    batch = 1
    while True:  # grow the batch until one batch takes ≥ 20 ms, so timer overhead is negligible
        started = time.perf_counter()
        for _ in range(batch):
            operation(argument)
        elapsed = time.perf_counter() - started
        if elapsed >= 0.02:
            break
        batch *= 4
    best = batch / elapsed
    deadline = time.perf_counter() + seconds
    for _ in range(3):
        if time.perf_counter() >= deadline:
            break
        rounds = max(1, int(best * seconds / 3 / batch))
        started = time.perf_counter()
        for _ in range(rounds * batch):
            operation(argument)
        best = max(best, rounds * batch / (time.perf_counter() - started))
    return best


def _tool_version(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds-per-case", type=float, default=1.5)
    args = parser.parse_args()

    for name, frame in FRAMES.items():  # the three must agree before their speed means anything
        encoded = encode_frame(frame)
        assert encoded == reference.encode_frame(frame) == _msgpack_encode(frame), name
        assert decode_frame(encoded) == reference.decode_frame(encoded) == _msgpack_decode(encoded) == frame

    results: dict[tuple[str, str, str], float] = {}
    total = len(FRAMES) * len(IMPLEMENTATIONS) * 2
    step = 0
    for frame_name, frame in FRAMES.items():
        encoded = encode_frame(frame)
        for implementation, (encode, decode) in IMPLEMENTATIONS.items():
            for operation, function, argument in (("encode", encode, frame), ("decode", decode, encoded)):
                step += 1
                print(f"[{step}/{total}] {frame_name} {operation} {implementation} ...", end=" ", flush=True)
                rate = _rate(function, argument, args.seconds_per_case)
                results[(frame_name, operation, implementation)] = rate
                print(f"{rate:,.0f} frames/s")

    info = machine_info()
    lines = [
        "# Frame codec (`kefu.bin.v1`) throughput",
        "",
        (
            "Command: `python -m bench.codec` (best of 3 rounds, "
            f"{args.seconds_per_case:g} s per case). Frames/s on one core; MB/s counts whole frames "
            "(24-byte header + body). `msgpack + struct` packs the same body with msgpack-python and "
            "validates nothing: it is context, not a like-for-like competitor."
        ),
        "",
        f"- CPU: {info['cpu_model']} ({info['cores']} cores), {info['memory_gib']} GiB, Linux {info['kernel']}",
        f"- Python {info['python']}, {_tool_version(['rustc', '--version'])}, "
        + ", ".join(f"{package} {version}" for package, version in info["versions"].items()),  # type: ignore[attr-defined]
        f"- Date (UTC): {info['date_utc']}; load average at the end of the run: "
        + " / ".join(f"{load:.2f}" for load in os.getloadavg())
        + " (rates are noisy when this exceeds the core count)",
        "",
    ]
    for frame_name, frame in FRAMES.items():
        size = len(encode_frame(frame))
        lines += [
            f"## `{frame_name}` frame ({size} bytes)",
            "",
            "| operation | implementation | frames/s | MB/s | native is × faster |",
            "|---|---|---:|---:|---:|",
        ]
        for operation in ("encode", "decode"):
            native_rate = results[(frame_name, operation, "native")]
            for implementation in IMPLEMENTATIONS:
                rate = results[(frame_name, operation, implementation)]
                lines.append(
                    f"| {operation} | {implementation} | {rate:,.0f} | {rate * size / 1e6:,.1f} | "
                    f"{native_rate / rate:,.2f} |"
                )
        lines.append("")
    path = write_report("codec", "\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
