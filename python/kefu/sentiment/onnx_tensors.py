"""Read a model's initializer tensors straight from the ONNX file (protobuf wire format).

The run time has onnxruntime, which does not expose initializers, and not the `onnx` package (a
training-only dependency). The native mood scorer needs the bundled model's weight table and bias,
so this walks the few protobuf fields involved: ModelProto.graph (7) → GraphProto.initializer (5) →
TensorProto dims (1), data_type (2), name (8), raw_data (9). Field numbers are from onnx.proto
(https://github.com/onnx/onnx/blob/main/onnx/onnx.proto). Everything else is skipped by its length.
"""

from __future__ import annotations

import numpy as np

# TensorProto.DataType values this reader converts.
_DTYPES = {1: np.float32, 7: np.int64, 10: np.float16}
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class TensorFormatError(ValueError):
    """The file is not the protobuf this reader expects."""


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise TensorFormatError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(data: memoryview):
    """(field number, wire type, value) of one message; LEN values are memoryviews."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(data, pos)
        elif wire == _LEN:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise TensorFormatError("field runs past the end of its message")
            value, pos = data[pos:pos + length], pos + length
        elif wire == _I64:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == _I32:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise TensorFormatError(f"unsupported wire type {wire}")
        yield number, wire, value


def _tensor(message: memoryview) -> tuple[str, np.ndarray]:
    name, dims, dtype, raw = "", [], None, None
    for number, wire, value in _fields(message):
        if number == 1 and wire == _VARINT:
            dims.append(value)
        elif number == 1 and wire == _LEN:  # packed dims
            pos = 0
            while pos < len(value):
                dim, pos = _varint(value, pos)
                dims.append(dim)
        elif number == 2:
            dtype = _DTYPES.get(value)
        elif number == 8:
            name = bytes(value).decode()
        elif number == 9:
            raw = value
    if dtype is None or raw is None:
        raise TensorFormatError(f"initializer {name!r}: only raw float32/float16/int64 data is read")
    array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
    count = int(np.prod(dims)) if dims else 1
    if array.size != count:
        raise TensorFormatError(f"initializer {name!r}: {array.size} values for shape {dims}")
    return name, array.reshape(dims).astype(dtype)


def initializers(model_bytes: bytes) -> dict[str, np.ndarray]:
    """Every initializer of the model's main graph, by name (copies, native byte order)."""
    found: dict[str, np.ndarray] = {}
    for number, wire, graph in _fields(memoryview(model_bytes)):
        if number == 7 and wire == _LEN:
            for field, kind, value in _fields(graph):
                if field == 5 and kind == _LEN:
                    name, array = _tensor(value)
                    found[name] = array
    return found
