//! Python bindings for the `kefu-routing` kernel: one call scores one conversation against a
//! shard's candidate agents held in numpy arrays owned by Python (`kefu.routing`).

use kefu_routing::{
    score_candidates, AgentColumns, RoutingError, ScoreRequest, SkillIndex, SkillScratch, Weights,
    EXCLUSION_REASONS,
};
use numpy::{PyReadonlyArray1, PyReadwriteArray1};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// One ranked candidate: (agent index, score, geo, sentiment fit, skill, load term, fairness term).
type RankedRow = (i32, f64, f64, f64, f64, f64, f64);

/// `(top, excluded_counts, excluded_sample, eligible)` as returned to Python.
type ScoreResult = (
    Vec<RankedRow>,
    [u32; EXCLUSION_REASONS],
    Vec<(i32, u8)>,
    u32,
);

fn routing_error(error: RoutingError) -> PyErr {
    PyValueError::new_err(error.to_string())
}

fn contiguous<'a, T: numpy::Element>(
    array: &'a PyReadonlyArray1<'_, T>,
    name: &str,
) -> PyResult<&'a [T]> {
    array
        .as_slice()
        .map_err(|_| PyValueError::new_err(format!("{name} must be a contiguous 1-D array")))
}

/// Scores one conversation against `candidates` (agent indices into the columns).
///
/// Returns `(top, excluded_counts, excluded_sample, eligible)`: `top` is a list of
/// `(index, score, geo, sent, skill, load, fair)` best first; `excluded_counts` a list of 6
/// counts indexed by reason code (0 not online, 1 other site, 2 excluded, 3 at capacity,
/// 4 language, 5 skill);
/// `excluded_sample` a list of `(index, reason_code)`; `eligible` the number that passed every
/// filter. The scratch arrays must be all zeros and are left all zeros. The GIL is released during
/// the scan.
#[pyfunction]
#[pyo3(signature = (
    candidates, geohash, geo_valid, deesc, lang, load, capacity, status, last_assigned, site,
    skill_indptr, skill_agents, skill_proficiency, scratch_credit, scratch_depth, *,
    site_id, lang_bits, visitor_geohash, geo_precision, p_neg, skill_path, no_skill_value,
    min_skill_match, excluded, now, fairness_horizon_s, weights, top_k, excluded_sample
))]
#[allow(clippy::too_many_arguments)]
fn score_agents(
    py: Python<'_>,
    candidates: PyReadonlyArray1<'_, i32>,
    geohash: PyReadonlyArray1<'_, u64>,
    geo_valid: PyReadonlyArray1<'_, u8>,
    deesc: PyReadonlyArray1<'_, f32>,
    lang: PyReadonlyArray1<'_, u8>,
    load: PyReadonlyArray1<'_, u16>,
    capacity: PyReadonlyArray1<'_, u16>,
    status: PyReadonlyArray1<'_, u8>,
    last_assigned: PyReadonlyArray1<'_, f64>,
    site: PyReadonlyArray1<'_, i32>,
    skill_indptr: PyReadonlyArray1<'_, i64>,
    skill_agents: PyReadonlyArray1<'_, i32>,
    skill_proficiency: PyReadonlyArray1<'_, f32>,
    mut scratch_credit: PyReadwriteArray1<'_, f64>,
    mut scratch_depth: PyReadwriteArray1<'_, u8>,
    site_id: i32,
    lang_bits: u8,
    visitor_geohash: Option<u64>,
    geo_precision: u8,
    p_neg: f64,
    skill_path: Vec<i32>,
    no_skill_value: f64,
    min_skill_match: f64,
    mut excluded: Vec<i32>,
    now: f64,
    fairness_horizon_s: f64,
    weights: (f64, f64, f64, f64, f64),
    top_k: usize,
    excluded_sample: usize,
) -> PyResult<ScoreResult> {
    if !(0.0..=1.0).contains(&p_neg) {
        return Err(PyValueError::new_err("p_neg must be within 0..1"));
    }
    if !(fairness_horizon_s.is_finite() && fairness_horizon_s > 0.0 && now.is_finite()) {
        return Err(PyValueError::new_err(
            "now must be finite and fairness_horizon_s positive",
        ));
    }
    let (w_geo, w_sent, w_skill, w_load, w_fair) = weights;
    let weights = Weights {
        geo: w_geo,
        sentiment: w_sent,
        skill: w_skill,
        load: w_load,
        fairness: w_fair,
    };
    if ![
        w_geo,
        w_sent,
        w_skill,
        w_load,
        w_fair,
        no_skill_value,
        min_skill_match,
    ]
    .iter()
    .all(|w| w.is_finite())
    {
        return Err(PyValueError::new_err(
            "weights and thresholds must be finite",
        ));
    }
    excluded.sort_unstable();
    let agents = AgentColumns {
        geohash: contiguous(&geohash, "geohash")?,
        geo_valid: contiguous(&geo_valid, "geo_valid")?,
        deesc: contiguous(&deesc, "deesc")?,
        lang: contiguous(&lang, "lang")?,
        load: contiguous(&load, "load")?,
        capacity: contiguous(&capacity, "capacity")?,
        status: contiguous(&status, "status")?,
        last_assigned: contiguous(&last_assigned, "last_assigned")?,
        site: contiguous(&site, "site")?,
    };
    let skills = SkillIndex {
        indptr: contiguous(&skill_indptr, "skill_indptr")?,
        agents: contiguous(&skill_agents, "skill_agents")?,
        proficiency: contiguous(&skill_proficiency, "skill_proficiency")?,
    };
    let candidates = contiguous(&candidates, "candidates")?;
    let mut scratch = SkillScratch {
        credit: scratch_credit
            .as_slice_mut()
            .map_err(|_| PyValueError::new_err("scratch_credit must be a contiguous 1-D array"))?,
        depth: scratch_depth
            .as_slice_mut()
            .map_err(|_| PyValueError::new_err("scratch_depth must be a contiguous 1-D array"))?,
    };
    let request = ScoreRequest {
        site: site_id,
        lang_bits,
        visitor_geohash,
        geo_precision,
        p_neg,
        skill_path: &skill_path,
        no_skill_value,
        min_skill_match,
        excluded: &excluded,
        now,
        fairness_horizon_s,
        top_k,
        excluded_sample,
    };
    // The numpy borrows above stay held while the scan runs without the GIL: no other Rust borrow
    // can write these arrays meanwhile (a second call sharing the scratch fails to borrow it), and
    // Python cannot resize an array that is referenced. Plain Python writes from another thread
    // would still race; the engine that owns the arrays is single-threaded.
    let outcome = py
        .detach(|| {
            score_candidates(
                &agents,
                &skills,
                &mut scratch,
                candidates,
                &request,
                &weights,
            )
        })
        .map_err(routing_error)?;
    let top = outcome
        .top
        .iter()
        .map(|c| {
            let [geo, sent, skill, load, fair] = c.factors;
            (c.index, c.score, geo, sent, skill, load, fair)
        })
        .collect();
    let sample = outcome
        .excluded_sample
        .iter()
        .map(|&(index, reason)| (index, reason as u8))
        .collect();
    Ok((top, outcome.excluded_counts, sample, outcome.eligible))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(score_agents, m)?)?;
    m.add("ROUTING_EXCLUSION_REASONS", EXCLUSION_REASONS)?;
    Ok(())
}
