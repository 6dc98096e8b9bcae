"""The native routing scorer against its two pure-Python twins on random agent populations.

Values are drawn from small sets so that exact score ties are common and the tie-break order
(higher score, lower load ratio, longer idle, lower index) is exercised, not just the argmax.
"""

from __future__ import annotations

import numpy as np
import pytest
from kefu.compiled import ROUTING_EXCLUSION_REASONS
from kefu.compiled import score_agents as native_score_agents
from kefu.reference.routing import EXCLUSION_REASON_COUNT, score_agents_naive, score_agents_numpy
from kefu.routing.table import EXCLUSION_REASONS

IMPLEMENTATIONS = {
    "native": native_score_agents,
    "numpy": score_agents_numpy,
    "naive": score_agents_naive,
}
SKILL_NODES = 40  # a 3-level tree: 4 tops x 3 mids x 2 leaves = 4 + 12 + 24 nodes
GEO_PRECISION = 6


def _skill_tree() -> list[list[int]]:
    """Paths (as node-id lists) of every node of the synthetic tree."""
    paths: list[list[int]] = []
    next_id = 0
    for _top in range(4):
        top_id, next_id = next_id, next_id + 1
        paths.append([top_id])
        for _mid in range(3):
            mid_id, next_id = next_id, next_id + 1
            paths.append([top_id, mid_id])
            for _leaf in range(2):
                paths.append([top_id, mid_id, next_id])
                next_id += 1
    assert next_id == SKILL_NODES
    return paths


PATHS = _skill_tree()


def _population(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    agents_skills: list[tuple[int, int, float]] = []
    for agent in range(n):
        for node in rng.choice(SKILL_NODES, size=int(rng.integers(0, 4)), replace=False):
            agents_skills.append((int(node), agent, float(rng.choice([0.2, 0.5, 1.0]))))
    agents_skills.sort()
    counts = np.bincount([node for node, _, _ in agents_skills], minlength=SKILL_NODES)
    indptr = np.zeros(SKILL_NODES + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    capacity = rng.integers(1, 4, n).astype(np.uint16)
    # A handful of nearby cells so that geohash prefixes are shared at various lengths.
    cells = rng.integers(0, 1 << 30, 6, dtype=np.uint64)
    geohash = cells[rng.integers(0, len(cells), n)] ^ rng.choice(
        np.array([0, 1, 1 << 7, 1 << 16, 1 << 28], dtype=np.uint64), n
    )
    return {
        "geohash": geohash.astype(np.uint64),
        "geo_valid": (rng.random(n) < 0.9).astype(np.uint8),
        "deesc": rng.choice(np.array([0.0, 0.3, 0.9], dtype=np.float32), n),
        "lang": rng.integers(1, 4, n).astype(np.uint8),
        "load": np.minimum(rng.integers(0, 4, n), capacity).astype(np.uint16),
        "capacity": capacity,
        "status": rng.choice(np.array([0, 1, 1, 1, 2], dtype=np.uint8), n),
        "last_assigned": rng.choice(np.array([0.0, 100.0, 900.0, 990.0]), n),
        "site": rng.choice(np.array([1, 1, 1, 2], dtype=np.int32), n),
        "skill_indptr": indptr,
        "skill_agents": np.array([a for _, a, _ in agents_skills], dtype=np.int32),
        "skill_proficiency": np.array([p for _, _, p in agents_skills], dtype=np.float32),
        "scratch_credit": np.zeros(n, dtype=np.float64),
        "scratch_depth": np.zeros(n, dtype=np.uint8),
    }


def _request(rng: np.random.Generator, n: int, population: dict[str, np.ndarray]) -> dict[str, object]:
    skill_path = PATHS[int(rng.integers(len(PATHS)))] if rng.random() < 0.8 else []
    if skill_path and rng.random() < 0.2:
        skill_path = [*skill_path[:-1], -1]  # a leaf nobody holds yet
    return {
        "site_id": int(rng.choice([-1, 1, 2])),
        "lang_bits": int(rng.choice([0, 1, 2])),
        "visitor_geohash": None if rng.random() < 0.2 else int(population["geohash"][rng.integers(n)]),
        "geo_precision": GEO_PRECISION,
        "p_neg": float(rng.choice([0.0, 0.5, 0.95])),
        "skill_path": skill_path,
        "no_skill_value": 1.0,
        "min_skill_match": float(rng.choice([0.0, 0.01, 1.0])),
        "excluded": sorted({int(x) for x in rng.integers(0, n, int(rng.integers(0, 4)))}),
        "now": 1000.0,
        "fairness_horizon_s": 600.0,
        "weights": (0.3, 0.2, 0.5, float(rng.choice([0.0, 0.1])), float(rng.choice([0.0, 0.05]))),
        "top_k": int(rng.choice([1, 5, 10])),
        "excluded_sample": 8,
    }


def _call(impl, population: dict[str, np.ndarray], candidates: np.ndarray, request: dict[str, object]):
    columns = [
        population[name]
        for name in (
            "geohash", "geo_valid", "deesc", "lang", "load", "capacity", "status", "last_assigned",
            "site", "skill_indptr", "skill_agents", "skill_proficiency", "scratch_credit", "scratch_depth",
        )
    ]
    return impl(candidates, *columns, **request)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("n", [1, 7, 300])
def test_native_matches_both_references(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed * 1000 + n)
    population = _population(rng, n)
    for _ in range(10):
        request = _request(rng, n, population)
        # Candidates in a shuffled order, as a maintained eligible list with swap-removal would be.
        candidates = rng.permutation(n).astype(np.int32)
        results = {
            name: _call(impl, population, candidates, request) for name, impl in IMPLEMENTATIONS.items()
        }
        native_top, native_counts, native_sample, native_eligible = results["native"]
        for name in ("numpy", "naive"):
            top, counts, sample, eligible = results[name]
            assert native_counts == counts, name
            assert native_sample == sample, name
            assert native_eligible == eligible, name
            assert [row[0] for row in native_top] == [row[0] for row in top], name
            np.testing.assert_allclose(np.array(native_top).reshape(-1, 7), np.array(top).reshape(-1, 7),
                                       rtol=0, atol=1e-12)
        assert not population["scratch_credit"].any() and not population["scratch_depth"].any()


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_partial_credit_for_ancestors_and_zero_for_unrelated(name: str) -> None:
    population = _population(np.random.default_rng(0), 3)
    population.update(
        status=np.ones(3, np.uint8), site=np.ones(3, np.int32), load=np.zeros(3, np.uint16),
        capacity=np.full(3, 2, np.uint16),
        # node 0 = top, node 1 = top/mid, node 2 = top/mid/leaf: agent 0 holds top at 0.9, agent 1
        # holds the leaf at 0.6, agent 2 holds another top-level node.
        skill_indptr=np.array([0, 1, 1, 2, 3], dtype=np.int64),
        skill_agents=np.array([0, 1, 2], dtype=np.int32),
        skill_proficiency=np.array([0.9, 0.6, 1.0], dtype=np.float32),
    )
    request = _request(np.random.default_rng(1), 3, population)
    request.update(skill_path=[0, 1, 2], min_skill_match=0.0, site_id=-1, lang_bits=0, excluded=[], top_k=3)
    top, *_ = _call(IMPLEMENTATIONS[name], population, np.arange(3, dtype=np.int32), request)
    skill = {row[0]: row[4] for row in top}
    assert skill[0] == pytest.approx(0.9 / 3, abs=1e-7)
    assert skill[1] == pytest.approx(0.6, abs=1e-7)
    assert skill[2] == 0.0


@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_hostile_inputs_raise_value_error(name: str) -> None:
    population = _population(np.random.default_rng(2), 4)
    request = _request(np.random.default_rng(3), 4, population)
    with pytest.raises((ValueError, IndexError)):
        _call(IMPLEMENTATIONS[name], population, np.array([0, 99], dtype=np.int32), request)
    request.update(skill_path=[SKILL_NODES + 5])
    with pytest.raises(ValueError):
        _call(IMPLEMENTATIONS[name], population, np.arange(4, dtype=np.int32), request)
    request.update(skill_path=[], p_neg=1.5)
    with pytest.raises(ValueError):
        _call(IMPLEMENTATIONS[name], population, np.arange(4, dtype=np.int32), request)


def test_native_rejects_inconsistent_columns_without_crashing() -> None:
    population = _population(np.random.default_rng(4), 5)
    population["load"] = population["load"][:3]
    request = _request(np.random.default_rng(5), 5, population)
    with pytest.raises(ValueError):
        _call(native_score_agents, population, np.arange(3, dtype=np.int32), request)
    population = _population(np.random.default_rng(4), 5)
    population.update(
        skill_indptr=np.array([0, 1] + [1] * (SKILL_NODES - 1), dtype=np.int64),
        skill_agents=np.array([1000], dtype=np.int32),
        skill_proficiency=np.array([1.0], dtype=np.float32),
    )
    request.update(skill_path=[0], p_neg=0.0)
    with pytest.raises(ValueError):
        _call(native_score_agents, population, np.arange(5, dtype=np.int32), request)
    assert not population["scratch_credit"].any()


def test_reason_codes_agree_between_kernel_twins_and_engine() -> None:
    assert ROUTING_EXCLUSION_REASONS == EXCLUSION_REASON_COUNT == len(EXCLUSION_REASONS)


def test_native_refuses_a_scratch_array_aliasing_an_input() -> None:
    # The scan runs without the GIL while holding numpy borrows; an aliased (or concurrently shared)
    # scratch must be refused, not written while it is being read.
    population = _population(np.random.default_rng(6), 8)
    population["scratch_credit"] = population["last_assigned"]
    request = _request(np.random.default_rng(7), 8, population)
    with pytest.raises(TypeError, match="already borrowed"):
        _call(native_score_agents, population, np.arange(8, dtype=np.int32), request)
