//! Visitor mood without Python per message.
//!
//! The bundled sentiment model is linear (docs/sentiment.md, "Graph"): hashed n-gram ids gather rows
//! of one fp16 table, the rows are summed, divided by `sqrt(n)`, biased and soft-maxed. onnxruntime
//! runs that graph for the control plane (`kefu.sentiment.SentimentModel`, the reference); here the
//! same arithmetic runs in Rust on the weights read out of the same file ([`LinearScorer`]), so the
//! data plane can score every visitor message on its own thread ([`MoodPipe`]).
//!
//! [`Tracker`] is the per-conversation EWMA with the hysteresis "angry" flag of
//! `kefu.sentiment.MoodTracker`, plus *alerts*: the control plane arms a conversation with a threshold
//! (its site's escalation threshold) and hears about it once, when the mood reaches it. So Python
//! runs per conversation that may need escalating, never per message.

mod linear;
mod pipe;
mod tracker;

pub use linear::{f16_to_f32, LinearScorer, ScorerError};
pub use pipe::{Alert, MoodPipe, PipeStats};
pub use tracker::{Tracker, TrackerConfig, TrackerError, Update};
