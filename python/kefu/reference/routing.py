"""Pure-Python twins of the routing scorer kernel (native/routing, `kefu.compiled.score_agents`).

Two implementations with the native signature and results:

- `score_agents_naive`: a plain per-agent Python loop, the obvious implementation and the
  baseline the benchmark compares against;
- `score_agents_numpy`: the same filters and formulas vectorised with numpy over the candidate
  list (the maintained-eligible-list design of docs/design.md "Routing").

Both perform the kernel's floating-point operations in the kernel's order, in float64, so scores
are bit-identical and tie-breaks agree (higher score, lower load ratio, longer idle, lower index).
Return value: ``(top, excluded_counts, excluded_sample, eligible)`` with ``top`` a list of
``(index, score, geo, sent, skill, load, fair)`` best first, ``excluded_counts`` a list of 6
counts by reason code (0 not online, 1 other site, 2 excluded, 3 at capacity, 4 language,
5 skill) and ``excluded_sample`` the first ``(index, reason_code)`` pairs in candidate order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

STATUS_ONLINE = 1
EXCLUSION_REASON_COUNT = 6
MAX_TOP_K = 64

RankedRow = tuple[int, float, float, float, float, float, float]
ScoreResult = tuple[list[RankedRow], list[int], list[tuple[int, int]], int]

# bit_length(x) for uint64 x is the number of powers of two <= x.
_POWERS_OF_TWO = np.left_shift(np.uint64(1), np.arange(64, dtype=np.uint64))


def _check(p_neg: float, fairness_horizon_s: float, top_k: int, geo_precision: int) -> None:
    if not 0.0 <= p_neg <= 1.0:
        raise ValueError("p_neg must be within 0..1")
    if not fairness_horizon_s > 0.0:
        raise ValueError("fairness_horizon_s must be positive")
    if not 1 <= top_k <= MAX_TOP_K:
        raise ValueError(f"top_k {top_k} not in 1..={MAX_TOP_K}")
    if not 1 <= geo_precision <= 12:
        raise ValueError(f"geohash precision {geo_precision} not in 1..=12")


def _skill_scatter(
    skill_indptr: npt.NDArray[np.int64],
    skill_agents: npt.NDArray[np.int32],
    skill_proficiency: npt.NDArray[np.float32],
    skill_path: Sequence[int],
) -> tuple[dict[int, float], dict[int, int]]:
    credit: dict[int, float] = {}
    depth: dict[int, int] = {}
    query_depth = len(skill_path)
    for level, node in enumerate(skill_path, start=1):
        if node < 0:
            continue
        if node + 1 >= len(skill_indptr):
            raise ValueError(f"skill node {node} out of range")
        ratio = level / query_depth
        for position in range(int(skill_indptr[node]), int(skill_indptr[node + 1])):
            agent = int(skill_agents[position])
            value = ratio * float(skill_proficiency[position])
            if value > credit.get(agent, 0.0):
                credit[agent] = value
            if level > depth.get(agent, 0):
                depth[agent] = level
    return credit, depth


def score_agents_naive(
    candidates: npt.NDArray[np.int32],
    geohash: npt.NDArray[np.uint64],
    geo_valid: npt.NDArray[np.uint8],
    deesc: npt.NDArray[np.float32],
    lang: npt.NDArray[np.uint8],
    load: npt.NDArray[np.uint16],
    capacity: npt.NDArray[np.uint16],
    status: npt.NDArray[np.uint8],
    last_assigned: npt.NDArray[np.float64],
    site: npt.NDArray[np.int32],
    skill_indptr: npt.NDArray[np.int64],
    skill_agents: npt.NDArray[np.int32],
    skill_proficiency: npt.NDArray[np.float32],
    scratch_credit: npt.NDArray[np.float64],
    scratch_depth: npt.NDArray[np.uint8],
    *,
    site_id: int,
    lang_bits: int,
    visitor_geohash: int | None,
    geo_precision: int,
    p_neg: float,
    skill_path: Sequence[int],
    no_skill_value: float,
    min_skill_match: float,
    excluded: Sequence[int],
    now: float,
    fairness_horizon_s: float,
    weights: tuple[float, float, float, float, float],
    top_k: int,
    excluded_sample: int,
) -> ScoreResult:
    """Per-agent Python loop; the scratch arrays are accepted for signature parity and unused."""
    _check(p_neg, fairness_horizon_s, top_k, geo_precision)
    w_geo, w_sent, w_skill, w_load, w_fair = weights
    credit, depth = _skill_scatter(skill_indptr, skill_agents, skill_proficiency, skill_path)
    query_depth = len(skill_path)
    excluded_set = set(excluded)
    counts = [0] * EXCLUSION_REASON_COUNT
    sample: list[tuple[int, int]] = []
    ranked: list[tuple[tuple[float, float, float, int], RankedRow]] = []
    bits = 5 * geo_precision
    for candidate in candidates.tolist():
        agent_load = int(load[candidate])
        agent_capacity = int(capacity[candidate])
        if status[candidate] != STATUS_ONLINE:
            reason = 0
        elif site_id >= 0 and site[candidate] != site_id:
            reason = 1
        elif candidate in excluded_set:
            reason = 2
        elif agent_load >= agent_capacity:
            reason = 3
        elif lang_bits and not (int(lang[candidate]) & lang_bits):
            reason = 4
        elif query_depth and depth.get(candidate, 0) / query_depth < min_skill_match:
            reason = 5
        else:
            reason = -1
        if reason >= 0:
            counts[reason] += 1
            if len(sample) < excluded_sample:
                sample.append((candidate, reason))
            continue
        if visitor_geohash is not None and geo_valid[candidate]:
            differing = (visitor_geohash ^ int(geohash[candidate])).bit_length()
            geo = (max(bits - differing, 0) // 5) / geo_precision
        else:
            geo = 0.0
        sent = 1.0 - p_neg * (1.0 - float(deesc[candidate]))
        skill = credit.get(candidate, 0.0) if query_depth else no_skill_value
        load_term = 1.0 - agent_load / agent_capacity
        idle_since = float(last_assigned[candidate])
        fair = min(max((now - idle_since) / fairness_horizon_s, 0.0), 1.0)
        score = w_geo * geo + w_sent * sent + w_skill * skill + w_load * load_term + w_fair * fair
        key = (-score, agent_load / agent_capacity, idle_since, candidate)
        ranked.append((key, (candidate, score, geo, sent, skill, load_term, fair)))
    ranked.sort(key=lambda item: item[0])
    eligible = len(ranked)
    return [row for _, row in ranked[:top_k]], counts, sample, eligible


def score_agents_numpy(
    candidates: npt.NDArray[np.int32],
    geohash: npt.NDArray[np.uint64],
    geo_valid: npt.NDArray[np.uint8],
    deesc: npt.NDArray[np.float32],
    lang: npt.NDArray[np.uint8],
    load: npt.NDArray[np.uint16],
    capacity: npt.NDArray[np.uint16],
    status: npt.NDArray[np.uint8],
    last_assigned: npt.NDArray[np.float64],
    site: npt.NDArray[np.int32],
    skill_indptr: npt.NDArray[np.int64],
    skill_agents: npt.NDArray[np.int32],
    skill_proficiency: npt.NDArray[np.float32],
    scratch_credit: npt.NDArray[np.float64],
    scratch_depth: npt.NDArray[np.uint8],
    *,
    site_id: int,
    lang_bits: int,
    visitor_geohash: int | None,
    geo_precision: int,
    p_neg: float,
    skill_path: Sequence[int],
    no_skill_value: float,
    min_skill_match: float,
    excluded: Sequence[int],
    now: float,
    fairness_horizon_s: float,
    weights: tuple[float, float, float, float, float],
    top_k: int,
    excluded_sample: int,
) -> ScoreResult:
    """Vectorised numpy version; uses the scratch arrays like the kernel and leaves them zeroed."""
    _check(p_neg, fairness_horizon_s, top_k, geo_precision)
    w_geo, w_sent, w_skill, w_load, w_fair = weights
    query_depth = len(skill_path)
    touched: list[npt.NDArray[np.int32]] = []
    for level, node in enumerate(skill_path, start=1):
        if node < 0:
            continue
        if node + 1 >= len(skill_indptr):
            raise ValueError(f"skill node {node} out of range")
        span = slice(int(skill_indptr[node]), int(skill_indptr[node + 1]))
        holders = skill_agents[span]
        credit = (level / query_depth) * skill_proficiency[span].astype(np.float64)
        np.maximum.at(scratch_credit, holders, credit)
        np.maximum.at(scratch_depth, holders, np.uint8(level))
        touched.append(holders)
    try:
        agent_load = load[candidates]
        agent_capacity = capacity[candidates]
        failing = [
            status[candidates] != STATUS_ONLINE,
            (site[candidates] != site_id) if site_id >= 0 else None,
            np.isin(candidates, np.asarray(excluded, dtype=np.int32)) if len(excluded) else None,
            agent_load >= agent_capacity,
            ((lang[candidates] & np.uint8(lang_bits)) == 0) if lang_bits else None,
            (scratch_depth[candidates] / query_depth < min_skill_match) if query_depth else None,
        ]
        reason_codes = np.full(len(candidates), -1, dtype=np.int8)
        remaining = np.ones(len(candidates), dtype=bool)
        counts = [0] * EXCLUSION_REASON_COUNT
        for code, mask in enumerate(failing):
            if mask is None:
                continue
            hit = remaining & mask
            counts[code] = int(np.count_nonzero(hit))
            reason_codes[hit] = code
            remaining &= ~mask
        sample_positions = np.flatnonzero(reason_codes >= 0)[:excluded_sample]
        sample = [(int(candidates[p]), int(reason_codes[p])) for p in sample_positions]

        chosen = candidates[remaining]
        if visitor_geohash is not None:
            differing = np.searchsorted(
                _POWERS_OF_TWO, geohash[chosen] ^ np.uint64(visitor_geohash), side="right"
            )
            common = np.maximum(5 * geo_precision - differing, 0) // 5
            geo = np.where(geo_valid[chosen] != 0, common / geo_precision, 0.0)
        else:
            geo = np.zeros(len(chosen))
        sent = 1.0 - p_neg * (1.0 - deesc[chosen].astype(np.float64))
        skill = scratch_credit[chosen] if query_depth else np.full(len(chosen), no_skill_value)
        chosen_load = agent_load[remaining].astype(np.float64)
        chosen_capacity = agent_capacity[remaining].astype(np.float64)
        load_term = 1.0 - chosen_load / chosen_capacity
        idle_since = last_assigned[chosen]
        fair = np.clip((now - idle_since) / fairness_horizon_s, 0.0, 1.0)
        score = w_geo * geo + w_sent * sent + w_skill * skill + w_load * load_term + w_fair * fair
    finally:
        for holders in touched:
            scratch_credit[holders] = 0.0
            scratch_depth[holders] = 0

    if len(chosen) > top_k:
        # Keep every agent tied with the k-th best score, then order those exactly.
        kth_best = np.partition(-score, top_k - 1)[top_k - 1]
        keep = np.flatnonzero(-score <= kth_best)
    else:
        keep = np.arange(len(chosen))
    order = keep[
        np.lexsort((chosen[keep], idle_since[keep], chosen_load[keep] / chosen_capacity[keep], -score[keep]))
    ][:top_k]
    top = [
        (int(chosen[i]), float(score[i]), float(geo[i]), float(sent[i]), float(skill[i]),
         float(load_term[i]), float(fair[i]))
        for i in order
    ]
    return top, counts, sample, len(chosen)
