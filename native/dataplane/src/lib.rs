//! `kefu-dataplane`: the per-message path of Kefu in Rust, without Python (docs/architecture.md,
//! "Data plane and control plane").
//!
//! - [`parse`] turns a `kefu.json.v1` text frame or a `kefu.bin.v1` binary frame into a typed
//!   [`parse::ClientFrame`] (never a dict), applying exactly the limits of `kefu.realtime.frames`.
//!   Anything it is not sure about is [`parse::ClientFrame::Decline`]d: the Python control plane
//!   then answers it as it always did, so the two paths cannot disagree on an error.
//! - [`tables`] hold what the control plane decided: who is on each connection slot, each
//!   conversation's state and who is subscribed to it.
//! - [`sink::DurableSink`] is seam 1 (records to the durable writer); [`plane::DataPlane`]'s
//!   `on_outcomes`/`deliver`/`apply` are seam 2 (commits and table updates back in).
//! - [`encode`] writes the server frames (`ack`, `msg`, `typing`, `read`) once per wire format.

pub mod encode;
pub mod latency;
pub mod parse;
pub mod plane;
pub mod sink;
pub mod tables;

pub use latency::{LatencyHistogram, LATENCY_BOUNDS};
pub use parse::{ClientFrame, Kind, Limits, SendFrame};
pub use plane::{DataPlane, Delivery, Handled, VisitorTexts};
pub use sink::{AppendRecord, DurableSink, MemorySink, Outcome, SinkError, Status};
pub use tables::{ConvState, PrincipalRow, Role, TableUpdate};
