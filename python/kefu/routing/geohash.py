"""GeoHash encoding as integers, so that routing can compare locations with one XOR.

A geohash of `precision` characters is `5 * precision` bits that interleave longitude and latitude
bits, longitude first (the most significant bit). Kefu keeps it as that integer (not the base-32
string): two locations share `k` leading characters exactly when the top `5k` bits of their
integers agree, which the routing kernel counts from the XOR's leading zeros.

Cells are computed by quantising, `floor((lon + 180) / 360 * 2**bits)`, rather than by repeated
bisection; both give the standard geohash (see the known values in the tests), and quantising
vectorises, so the scalar and the numpy encoders here produce identical integers.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

BASE32 = "0123456789bcdefghjkmnpqrstuvwxyz"
_DECODE = {char: value for value, char in enumerate(BASE32)}
MAX_PRECISION = 12

_SPREAD_MASKS = (
    (16, 0x0000FFFF0000FFFF),
    (8, 0x00FF00FF00FF00FF),
    (4, 0x0F0F0F0F0F0F0F0F),
    (2, 0x3333333333333333),
    (1, 0x5555555555555555),
)


def _bit_split(precision: int) -> tuple[int, int]:
    """(longitude bits, latitude bits) of a geohash with `precision` characters."""
    if not 1 <= precision <= MAX_PRECISION:
        raise ValueError(f"geohash precision must be 1..{MAX_PRECISION}, got {precision}")
    bits = 5 * precision
    return (bits + 1) // 2, bits // 2


def _spread(value: int) -> int:
    """Moves bit i of a 32-bit value to bit 2i."""
    value &= 0xFFFFFFFF
    for shift, mask in _SPREAD_MASKS:
        value = (value | (value << shift)) & mask
    return value


_COMPACT_MASKS = (
    (1, 0x3333333333333333),
    (2, 0x0F0F0F0F0F0F0F0F),
    (4, 0x00FF00FF00FF00FF),
    (8, 0x0000FFFF0000FFFF),
    (16, 0x00000000FFFFFFFF),
)


def _compact(value: int) -> int:
    """Inverse of `_spread`: keeps the even bits and packs them together."""
    value &= 0x5555555555555555
    for shift, mask in _COMPACT_MASKS:
        value = (value | (value >> shift)) & mask
    return value


def _quantise(value: float, low: float, span: float, bits: int) -> int:
    cells = 1 << bits
    cell = math.floor((value - low) / span * cells)
    return min(max(cell, 0), cells - 1)


def _interleave(lon_cell: int, lat_cell: int, precision: int) -> int:
    if (5 * precision) % 2 == 0:
        return (_spread(lon_cell) << 1) | _spread(lat_cell)
    return _spread(lon_cell) | (_spread(lat_cell) << 1)


def encode_int(lat: float, lon: float, precision: int = 6) -> int:
    """Geohash of a point as an integer of `5 * precision` bits."""
    if not (math.isfinite(lat) and math.isfinite(lon)) or abs(lat) > 90 or abs(lon) > 180:
        raise ValueError(f"not a coordinate: ({lat!r}, {lon!r})")
    lon_bits, lat_bits = _bit_split(precision)
    lon_cell = _quantise(lon, -180.0, 360.0, lon_bits)
    lat_cell = _quantise(lat, -90.0, 180.0, lat_bits)
    return _interleave(lon_cell, lat_cell, precision)


def encode(lat: float, lon: float, precision: int = 6) -> str:
    """Geohash of a point as the usual base-32 string."""
    return int_to_str(encode_int(lat, lon, precision), precision)


def int_to_str(code: int, precision: int) -> str:
    """Base-32 spelling of an integer geohash."""
    _bit_split(precision)
    return "".join(BASE32[(code >> (5 * (precision - 1 - i))) & 31] for i in range(precision))


def str_to_int(geohash: str) -> int:
    """Integer form of a base-32 geohash (any precision up to 12)."""
    if not 1 <= len(geohash) <= MAX_PRECISION:
        raise ValueError(f"geohash length must be 1..{MAX_PRECISION}")
    code = 0
    for char in geohash.lower():
        value = _DECODE.get(char)
        if value is None:
            raise ValueError(f"not a geohash character: {char!r}")
        code = (code << 5) | value
    return code


def decode(geohash: str) -> tuple[float, float]:
    """Centre (lat, lon) of a geohash cell."""
    precision = len(geohash)
    code = str_to_int(geohash)
    lon_bits, lat_bits = _bit_split(precision)
    if (5 * precision) % 2 == 0:
        lon_cell, lat_cell = _compact(code >> 1), _compact(code)
    else:
        lon_cell, lat_cell = _compact(code), _compact(code >> 1)
    lat = -90.0 + (lat_cell + 0.5) * 180.0 / (1 << lat_bits)
    lon = -180.0 + (lon_cell + 0.5) * 360.0 / (1 << lon_bits)
    return lat, lon


def _spread_array(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    values = values & np.uint64(0xFFFFFFFF)
    for shift, mask in _SPREAD_MASKS:
        values = (values | (values << np.uint64(shift))) & np.uint64(mask)
    return values


def encode_int_array(
    lat: npt.ArrayLike, lon: npt.ArrayLike, precision: int = 6
) -> npt.NDArray[np.uint64]:
    """Vectorised `encode_int` (same integers); NaN or out-of-range points raise ValueError."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    if not (np.all(np.abs(lat) <= 90) and np.all(np.abs(lon) <= 180)):
        raise ValueError("coordinates out of range or NaN")
    lon_bits, lat_bits = _bit_split(precision)
    lon_cell = np.clip(np.floor((lon - -180.0) / 360.0 * float(1 << lon_bits)), 0, (1 << lon_bits) - 1)
    lat_cell = np.clip(np.floor((lat - -90.0) / 180.0 * float(1 << lat_bits)), 0, (1 << lat_bits) - 1)
    lon_spread = _spread_array(lon_cell.astype(np.uint64))
    lat_spread = _spread_array(lat_cell.astype(np.uint64))
    if (5 * precision) % 2 == 0:
        return (lon_spread << np.uint64(1)) | lat_spread
    return lon_spread | (lat_spread << np.uint64(1))


def common_prefix_chars(a: int, b: int, precision: int) -> int:
    """Leading characters two integer geohashes of `precision` characters share."""
    return max(5 * precision - (a ^ b).bit_length(), 0) // 5
