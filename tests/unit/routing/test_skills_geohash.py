"""Skill trie paths and partial credit, and geohash known values."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kefu.routing import geohash
from kefu.routing.skills import MISSING_NODE, SkillTrie, build_skill_index, parse_skill_path


def test_trie_interns_each_prefix_once_and_resolves_missing_leaves() -> None:
    trie = SkillTrie()
    card = trie.intern("billing/refund/card")
    assert trie.intern(" Billing/Refund/CARD/ ") == card
    billing, refund = trie.resolve("billing/refund")
    assert (trie.depth(billing), trie.depth(refund), trie.depth(card)) == (1, 2, 3)
    assert trie.path(card) == "billing/refund/card"
    assert trie.resolve("billing/refund/paypal") == [billing, refund, MISSING_NODE]
    assert trie.resolve("shipping/late") == [MISSING_NODE, MISSING_NODE]
    assert len(trie) == 3


@pytest.mark.parametrize("bad", ["", "/", "a//b", "/".join(["x"] * 9), "a/" + "b" * 65, "a/\x00"])
def test_malformed_skill_paths_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_skill_path(bad)


def test_skill_index_is_csc_sorted_by_node_then_agent() -> None:
    indptr, agents, proficiency = build_skill_index({2: {0: 0.5, 1: 1.0}, 0: {1: 0.25}}, node_count=3)
    assert indptr.tolist() == [0, 1, 3, 3]
    assert agents.tolist() == [2, 0, 2]
    assert proficiency.tolist() == [0.5, 0.25, 1.0]


@pytest.mark.parametrize(
    ("lat", "lon", "precision", "expected"),
    [
        (57.64911, 10.40744, 11, "u4pruydqqvj"),  # the Wikipedia example
        (42.6, -5.6, 5, "ezs42"),
        (39.9042, 116.4074, 6, "wx4g0b"),  # Beijing
        (-33.8688, 151.2093, 7, "r3gx2f7"),  # Sydney
    ],
)
def test_geohash_known_values(lat: float, lon: float, precision: int, expected: str) -> None:
    assert geohash.encode(lat, lon, precision) == expected
    assert geohash.int_to_str(geohash.str_to_int(expected), precision) == expected
    decoded_lat, decoded_lon = geohash.decode(expected)
    assert geohash.encode(decoded_lat, decoded_lon, precision) == expected
    assert abs(decoded_lat - lat) < 0.01 and abs(decoded_lon - lon) < 0.01


def test_vectorised_encoder_matches_scalar() -> None:
    rng = np.random.default_rng(7)
    lat, lon = rng.uniform(-90, 90, 500), rng.uniform(-180, 180, 500)
    lat[:2], lon[:2] = (90.0, -90.0), (180.0, -180.0)  # the edges clamp into the last cell
    for precision in (1, 6, 12):
        codes = geohash.encode_int_array(lat, lon, precision)
        assert [int(c) for c in codes] == [geohash.encode_int(a, b, precision) for a, b in zip(lat, lon)]


def test_common_prefix_counts_characters() -> None:
    shanghai = geohash.encode_int(31.2304, 121.4737, 6)
    nearby = geohash.encode_int(31.2404, 121.4837, 6)
    beijing = geohash.encode_int(39.9042, 116.4074, 6)
    assert geohash.common_prefix_chars(shanghai, shanghai, 6) == 6
    assert 3 <= geohash.common_prefix_chars(shanghai, nearby, 6) < 6
    assert geohash.common_prefix_chars(shanghai, beijing, 6) == 1  # both start with "w"
    with pytest.raises(ValueError):
        geohash.encode_int(float("nan"), 0.0)
    with pytest.raises(ValueError):
        geohash.str_to_int("ai")  # "a" and "i" are not geohash characters


latitudes = st.floats(min_value=-90, max_value=90, allow_nan=False)
longitudes = st.floats(min_value=-180, max_value=180, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(latitudes, longitudes, latitudes, longitudes, st.integers(min_value=1, max_value=12))
def test_integer_prefix_count_equals_string_prefix_length(
    lat_a: float, lon_a: float, lat_b: float, lon_b: float, precision: int
) -> None:
    a, b = geohash.encode(lat_a, lon_a, precision), geohash.encode(lat_b, lon_b, precision)
    shared = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), precision)
    code_a, code_b = geohash.str_to_int(a), geohash.str_to_int(b)
    assert geohash.common_prefix_chars(code_a, code_b, precision) == shared
    assert geohash.encode(*geohash.decode(a), precision) == a
