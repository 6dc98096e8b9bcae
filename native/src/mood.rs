//! Python bindings for `kefu-mood`: the sentiment model's linear graph, the mood tracker and the
//! thread the data plane feeds (docs/sentiment.md, "How the server uses it").

use std::collections::HashMap;
use std::sync::Arc;

use kefu_mood::{LinearScorer, MoodPipe as Pipe, Tracker, TrackerConfig, Update};
use kefu_textfeat::Featurizer;
use numpy::PyReadonlyArray2;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

/// Scores visitors' messages off the event loop and keeps each conversation's mood.
///
/// Built from the weights of the bundled ONNX model (`kefu.sentiment.SentimentModel.linear_weights`);
/// the data plane hands it each batch's visitor texts (`DataPlane.use_mood`).
#[pyclass(module = "kefu._native", name = "MoodPipe", frozen)]
pub(crate) struct PyMoodPipe {
    pub(crate) pipe: Arc<Pipe>,
}

fn update_tuple(update: Update) -> (f64, bool, bool) {
    (update.mood, update.angry, update.turned_angry)
}

#[pymethods]
impl PyMoodPipe {
    #[new]
    #[pyo3(signature = (weights, bias, *, bits, lexicon, neg_class = 0, alpha = 0.4,
                        angry_threshold = 0.7, calm_threshold = 0.5, max_conversations = 100_000,
                        backlog_batches = 1024))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        weights: PyReadonlyArray2<'_, u16>,
        bias: Vec<f32>,
        bits: u32,
        lexicon: HashMap<String, i64>,
        neg_class: usize,
        alpha: f64,
        angry_threshold: f64,
        calm_threshold: f64,
        max_conversations: usize,
        backlog_batches: usize,
    ) -> PyResult<Self> {
        let invalid = |error: String| PyValueError::new_err(error);
        let featurizer = Featurizer::new(bits, lexicon).map_err(|e| invalid(e.to_string()))?;
        let table = weights.as_array();
        if table.ncols() != bias.len() {
            return Err(invalid(format!(
                "weights have {} columns for {} classes",
                table.ncols(),
                bias.len()
            )));
        }
        let weights: Vec<u16> = table.iter().copied().collect();
        let scorer = LinearScorer::new(featurizer, weights, bias, neg_class)
            .map_err(|e| invalid(e.to_string()))?;
        let tracker = Tracker::new(TrackerConfig {
            alpha,
            angry_threshold,
            calm_threshold,
            max_conversations,
        })
        .map_err(|e| invalid(e.to_string()))?;
        let pipe = Pipe::start(scorer, tracker, backlog_batches)
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(Self {
            pipe: Arc::new(pipe),
        })
    }

    /// `p_neg` of one text, computed here (no thread hop).
    fn score(&self, text: &Bound<'_, PyString>) -> f32 {
        self.pipe.score(&text.to_string_lossy())
    }

    /// Score `text` and fold it into the mood of `conv` now: `(mood, angry, turned_angry)`.
    fn observe(&self, conv: u64, text: &Bound<'_, PyString>) -> (f64, bool, bool) {
        update_tuple(self.pipe.observe(conv, &text.to_string_lossy()))
    }

    /// Fold a `p_neg` into the mood of `conv`: `(mood, angry, turned_angry)`.
    fn update(&self, conv: u64, p_neg: f64) -> (f64, bool, bool) {
        update_tuple(self.pipe.update(conv, p_neg))
    }

    /// Queue one message for the thread (a message the data plane did not carry).
    fn submit(&self, conv: u64, text: &Bound<'_, PyString>) -> bool {
        let text = text.to_string_lossy().into_owned();
        let Ok(end) = u32::try_from(text.len()) else {
            return false;
        };
        self.pipe.submit(vec![conv], vec![end], text)
    }

    /// Alert once (see `take_alerts`) when the mood of `conv` reaches `threshold`; None disarms.
    #[pyo3(signature = (conv, threshold))]
    fn arm(&self, conv: u64, threshold: Option<f64>) {
        self.pipe.arm(conv, threshold);
    }

    fn mood(&self, conv: u64) -> Option<f64> {
        self.pipe.mood(conv)
    }

    fn forget(&self, conv: u64) {
        self.pipe.forget(conv);
    }

    /// An eventfd, readable while alerts may be waiting.
    fn fileno(&self) -> i32 {
        self.pipe.fd()
    }

    /// `[(conv, mood)]` whose mood reached their armed threshold since the last call.
    fn take_alerts(&self) -> Vec<(u64, f64)> {
        self.pipe
            .take_alerts()
            .into_iter()
            .map(|alert| (alert.conv, alert.mood))
            .collect()
    }

    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let stats = self.pipe.stats();
        let dict = PyDict::new(py);
        dict.set_item("scored", stats.scored)?;
        dict.set_item("dropped", stats.dropped)?;
        dict.set_item("turned_angry", stats.turned_angry)?;
        dict.set_item("alerts", stats.alerts)?;
        dict.set_item("conversations", stats.conversations)?;
        dict.set_item("backlog", stats.backlog)?;
        Ok(dict)
    }

    /// Score what was handed over, then stop the thread (waits for it, without the GIL).
    fn close(&self, py: Python<'_>) {
        py.detach(|| self.pipe.close());
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyMoodPipe>()?;
    Ok(())
}
