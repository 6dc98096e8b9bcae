//! Python binding of `kefu-dataplane`: the control plane's handle on the native data plane.
//!
//! Python (the hub) writes the tables. Records go to one of two sinks: the native journal
//! (native/journal, SQLite from Rust: `use_journal` with storage's own journal, then `pump` once per
//! eventfd wake-up), or a batch that Python carries to its own writer (`take_records` → storage →
//! `on_outcomes`; the PostgreSQL path). The per-frame path does not
//! come through here: [`DataPlane::capsule`] hands the Cython gateway a C vtable
//! ([`DataPlaneVtable`], layout mirrored in engine/src/kefu_engine/dataplane.pxd) whose functions
//! run a frame through the data plane and expose the resulting deliveries as raw pointers, with no
//! Python object made per frame.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Arc;

use kefu_codec::FrameLimits;
use kefu_dataplane::encode::HEADROOM;
use kefu_dataplane::latency::{LatencyHistogram, LATENCY_BOUNDS};
use kefu_dataplane::plane::{Committed, Stats};
use kefu_dataplane::sink::{AppendRecord, DurableSink, SinkError};
use kefu_dataplane::{
    ConvState, DataPlane as Plane, Delivery, Handled, Kind, Limits, Outcome, PrincipalRow, Role,
    Status, TableUpdate,
};
use kefu_journal::{AppendError, Completions, Journal, SubmitError};
use kefu_mood::MoodPipe;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyCapsule, PyDict};

use crate::mood::PyMoodPipe;

/// Name of the capsule; the gateway checks it before trusting the pointer.
pub(crate) const CAPSULE_NAME: &CStr = c"kefu._native.DataPlane.vtable";

/// `handle`'s answers, as the gateway sees them.
pub(crate) const HANDLED_DECLINED: c_int = 0;
pub(crate) const HANDLED_TAKEN: c_int = 1;

/// `(slots, json, binary | None)` as Python sees a delivery.
type PyDelivery<'py> = (Vec<u32>, Bound<'py, PyBytes>, Option<Bound<'py, PyBytes>>);

/// A record owned until Python takes the batch (the sink of the PostgreSQL/interim path).
type QueuedRecord = (
    u64,
    u64,
    String,
    &'static str,
    Option<String>,
    String,
    &'static str,
    String,
    Option<String>,
    f64,
);

/// Seam 1 for a Python-side writer: records wait here until `take_records` hands them over as one
/// list per batch; at most `capacity` wait (then `SinkError::Full`: backpressure, not buffering).
pub(crate) struct BatchSink {
    queued: RefCell<Vec<QueuedRecord>>,
    capacity: usize,
    closed: RefCell<bool>,
}

impl DurableSink for BatchSink {
    fn submit(&self, record: &AppendRecord<'_>) -> Result<(), SinkError> {
        if *self.closed.borrow() {
            return Err(SinkError::Closed);
        }
        let mut queued = self.queued.borrow_mut();
        if queued.len() >= self.capacity {
            return Err(SinkError::Full);
        }
        queued.push((
            record.token,
            record.conv,
            record.sender_id.to_owned(),
            record.sender_role.name(),
            record.sender_name.map(str::to_owned),
            record.cmid.to_owned(),
            record.kind.name(),
            record.text.to_owned(),
            record.meta_json.map(str::to_owned),
            record.ts,
        ));
        Ok(())
    }
}

/// Seam 1 for the native journal: records go Rust to Rust (copied once into the journal's owned
/// record), outcomes come back on our own completion queue. The journal is storage's (shared); the
/// data plane closing only stops its own submissions.
pub(crate) struct JournalSink {
    journal: Arc<Journal>,
    completions: Arc<Completions>,
    closed: Cell<bool>,
}

impl DurableSink for JournalSink {
    fn submit(&self, record: &AppendRecord<'_>) -> Result<(), SinkError> {
        if self.closed.get() {
            return Err(SinkError::Closed);
        }
        let role = match record.sender_role {
            Role::Visitor => kefu_journal::Role::Visitor,
            Role::Agent => kefu_journal::Role::Agent,
            Role::Admin => kefu_journal::Role::Admin,
        };
        let texts = kefu_journal::RecordTexts {
            sender_id: record.sender_id,
            sender_name: record.sender_name,
            cmid: record.cmid,
            kind: record.kind.name(),
            text: record.text,
            meta: record.meta_json.unwrap_or("{}"),
        };
        let conv = i64::try_from(record.conv).map_err(|_| SinkError::Closed)?;
        // ts None: the commit's time, as every other stored message.
        let owned = kefu_journal::AppendRecord::new(conv, role, texts, None, record.token);
        self.journal
            .submit_to(owned, &self.completions)
            .map_err(|error| match error {
                SubmitError::Full(_) => SinkError::Full,
                SubmitError::Closed(_) => SinkError::Closed,
            })
    }
}

pub(crate) enum Sink {
    Batch(BatchSink),
    Journal(JournalSink),
}

impl DurableSink for Sink {
    fn submit(&self, record: &AppendRecord<'_>) -> Result<(), SinkError> {
        match self {
            Sink::Batch(sink) => sink.submit(record),
            Sink::Journal(sink) => sink.submit(record),
        }
    }
}

impl Inner {
    fn hand_visitor_texts(&mut self) {
        if let Some(pipe) = &self.mood {
            let texts = self.plane.take_visitor_texts();
            if !texts.is_empty() {
                pipe.submit(texts.convs, texts.ends, texts.text);
            }
        }
    }
}

impl Sink {
    fn batch(&self) -> Option<&BatchSink> {
        match self {
            Sink::Batch(sink) => Some(sink),
            Sink::Journal(_) => None,
        }
    }
}

pub(crate) struct Inner {
    pub(crate) plane: Plane<Sink>,
    /// Where visitors' texts go after each batch of outcomes (`use_mood`).
    mood: Option<Arc<MoodPipe>>,
    /// The deliveries the gateway is reading through the vtable (kept until `clear`).
    reading: Vec<Delivery>,
}

/// The C view of the data plane, for the Cython gateway. `#[repr(C)]`: its layout is the contract.
#[repr(C)]
pub struct DataPlaneVtable {
    pub(crate) ctx: *mut c_void,
    /// Run one complete frame of connection `slot`: 1 taken (maybe with deliveries), 0 declined.
    pub(crate) handle:
        unsafe extern "C" fn(*mut c_void, u32, *const c_char, usize, c_int, f64, f64) -> c_int,
    /// Move the pending deliveries into the reading buffer; returns how many there are.
    pub(crate) take: unsafe extern "C" fn(*mut c_void) -> usize,
    /// Delivery `i` of the reading buffer: its slots and its two encodings (length 0: absent).
    /// Each payload pointer has `HEADROOM` writable bytes in front of it for the WebSocket header.
    #[allow(clippy::type_complexity)]
    pub(crate) get: unsafe extern "C" fn(
        *mut c_void,
        usize,
        *mut *const u32,
        *mut usize,
        *mut *mut c_char,
        *mut usize,
        *mut *mut c_char,
        *mut usize,
    ),
    /// Free the reading buffer.
    pub(crate) clear: unsafe extern "C" fn(*mut c_void),
    /// Records waiting for the Python-side writer, plus read marks to store (so the gateway
    /// schedules one flush).
    pub(crate) queued: unsafe extern "C" fn(*mut c_void) -> usize,
}

// SAFETY: the vtable is only ever used on the thread that owns the (unsendable) DataPlane.
unsafe impl Send for DataPlaneVtable {}

/// The state behind a vtable's `ctx` (this data plane's `Inner`, or a `RingForwarder`'s).
///
/// # Safety
/// `ctx` is the boxed `RefCell<T>` of a live owner (the gateway keeps a reference to it).
pub(crate) unsafe fn ctx_cell<'a, T>(ctx: *mut c_void) -> &'a RefCell<T> {
    &*(ctx as *const RefCell<T>)
}

/// # Safety
/// As [`ctx_cell`], for a `DataPlane`.
unsafe fn inner<'a>(ctx: *mut c_void) -> &'a RefCell<Inner> {
    ctx_cell(ctx)
}

unsafe extern "C" fn vt_handle(
    ctx: *mut c_void,
    slot: u32,
    data: *const c_char,
    len: usize,
    binary: c_int,
    now_wall: f64,
    now_mono: f64,
) -> c_int {
    let payload = std::slice::from_raw_parts(data.cast::<u8>(), len);
    let Ok(mut inner) = inner(ctx).try_borrow_mut() else {
        return HANDLED_DECLINED; // re-entered: let Python handle it, never alias
    };
    let handled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        inner
            .plane
            .handle(slot, payload, binary != 0, now_wall, now_mono)
    }));
    match handled {
        Ok(Handled::Declined) | Err(_) => HANDLED_DECLINED,
        Ok(_) => HANDLED_TAKEN,
    }
}

unsafe extern "C" fn vt_take(ctx: *mut c_void) -> usize {
    let Ok(mut inner) = inner(ctx).try_borrow_mut() else {
        return 0;
    };
    let taken = inner.plane.take_deliveries();
    inner.reading.extend(taken);
    inner.reading.len()
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn vt_get(
    ctx: *mut c_void,
    index: usize,
    slots: *mut *const u32,
    slot_count: *mut usize,
    json: *mut *mut c_char,
    json_len: *mut usize,
    binary: *mut *mut c_char,
    binary_len: *mut usize,
) {
    let Ok(mut inner) = inner(ctx).try_borrow_mut() else {
        *slot_count = 0;
        return;
    };
    let Some(delivery) = inner.reading.get_mut(index) else {
        *slot_count = 0;
        *json_len = 0;
        *binary_len = 0;
        return;
    };
    // The buffers live in `reading` until `clear`; the gateway copies them into the transports first.
    *slots = delivery.slots.as_ptr();
    *slot_count = delivery.slots.len();
    let (ptr, len) = after_headroom(delivery.frame.json.as_mut_slice());
    *json = ptr;
    *json_len = len;
    let (ptr, len) = delivery
        .frame
        .binary
        .as_mut()
        .map_or((std::ptr::null_mut(), 0), |b| after_headroom(b));
    *binary = ptr;
    *binary_len = len;
}

/// The payload of an encoded frame (after its headroom) as a writable pointer and length.
fn after_headroom(frame: &mut [u8]) -> (*mut c_char, usize) {
    if frame.len() <= HEADROOM {
        return (std::ptr::null_mut(), 0);
    }
    (
        frame[HEADROOM..].as_mut_ptr().cast(),
        frame.len() - HEADROOM,
    )
}

unsafe extern "C" fn vt_clear(ctx: *mut c_void) {
    if let Ok(mut inner) = inner(ctx).try_borrow_mut() {
        inner.reading.clear();
        inner.plane.frames_written();
    }
}

/// What waits for Python's once-per-batch `flush`: records for a Python-side writer, and read marks
/// to store (the gateway schedules one flush when this is non-zero).
unsafe extern "C" fn vt_queued(ctx: *mut c_void) -> usize {
    inner(ctx).try_borrow().map_or(0, |inner| {
        let records = inner
            .plane
            .sink()
            .batch()
            .map_or(0, |sink| sink.queued.borrow().len());
        records + inner.plane.read_marks_waiting()
    })
}

/// The native data plane (one per event loop; not shareable across threads).
#[pyclass(module = "kefu._native", unsendable)]
pub struct DataPlane {
    // Boxed: the vtable's ctx points at it, so it must not move while the object lives.
    pub(crate) inner: Box<RefCell<Inner>>,
}

fn borrow_error<E>(_: E) -> PyErr {
    PyRuntimeError::new_err("DataPlane is busy (re-entered)")
}

fn role(name: &str) -> PyResult<Role> {
    Role::from_name(name).ok_or_else(|| PyValueError::new_err(format!("unknown role {name:?}")))
}

fn kind(name: &str) -> PyResult<Kind> {
    Kind::from_name(name).ok_or_else(|| PyValueError::new_err(format!("unknown kind {name:?}")))
}

impl DataPlane {
    fn apply(&self, update: TableUpdate) -> PyResult<()> {
        self.inner
            .try_borrow_mut()
            .map_err(borrow_error)?
            .plane
            .apply(update);
        Ok(())
    }
}

#[pymethods]
impl DataPlane {
    #[new]
    #[pyo3(signature = (*, max_text_bytes, max_cmid_len, typing_interval_s, max_queued = 65536))]
    fn new(
        max_text_bytes: usize,
        max_cmid_len: usize,
        typing_interval_s: f64,
        max_queued: usize,
    ) -> Self {
        let sink = BatchSink {
            queued: RefCell::new(Vec::new()),
            capacity: max_queued,
            closed: RefCell::new(false),
        };
        let limits = Limits {
            max_text_bytes,
            max_cmid_len,
        };
        let plane = Plane::new(
            Sink::Batch(sink),
            limits,
            FrameLimits::default(),
            typing_interval_s,
            false,
        );
        DataPlane {
            inner: Box::new(RefCell::new(Inner {
                plane,
                mood: None,
                reading: Vec::new(),
            })),
        }
    }

    /// The C vtable for the gateway (a capsule named `kefu._native.DataPlane.vtable`). The caller
    /// must keep this DataPlane alive as long as it uses the capsule.
    fn capsule<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        let vtable = DataPlaneVtable {
            ctx: std::ptr::from_ref::<RefCell<Inner>>(&self.inner)
                .cast_mut()
                .cast(),
            handle: vt_handle,
            take: vt_take,
            get: vt_get,
            clear: vt_clear,
            queued: vt_queued,
        };
        PyCapsule::new_with_value(py, vtable, CAPSULE_NAME)
    }

    // --- tables (seam 2) ------------------------------------------------------------------------

    #[pyo3(signature = (slot, principal_id, role_name, name, binary))]
    fn connection(
        &self,
        slot: u32,
        principal_id: String,
        role_name: &str,
        name: Option<String>,
        binary: bool,
    ) -> PyResult<()> {
        let principal = PrincipalRow {
            id: principal_id,
            role: role(role_name)?,
            name,
        };
        self.apply(TableUpdate::Connection {
            slot,
            principal,
            binary,
        })
    }

    fn connection_gone(&self, slot: u32) -> PyResult<()> {
        self.apply(TableUpdate::ConnectionGone { slot })
    }

    #[pyo3(signature = (conv, state, agent, last_seq))]
    fn conversation(
        &self,
        conv: u64,
        state: &str,
        agent: Option<String>,
        last_seq: u64,
    ) -> PyResult<()> {
        let state = ConvState::from_name(state)
            .ok_or_else(|| PyValueError::new_err(format!("unknown state {state:?}")))?;
        self.apply(TableUpdate::Conversation {
            conv,
            state,
            agent,
            last_seq,
        })
    }

    fn conversation_gone(&self, conv: u64) -> PyResult<()> {
        self.apply(TableUpdate::ConversationGone { conv })
    }

    fn grant(&self, slot: u32, conv: u64) -> PyResult<()> {
        self.apply(TableUpdate::Grant { slot, conv })
    }

    fn revoke(&self, slot: u32, conv: u64) -> PyResult<()> {
        self.apply(TableUpdate::Revoke { slot, conv })
    }

    /// `slot` already has every `msg` of `conv` up to `seq` (its replay sent them).
    fn caught_up(&self, slot: u32, conv: u64, seq: u64) -> PyResult<()> {
        self.apply(TableUpdate::CaughtUp { slot, conv, seq })
    }

    fn replaying(&self, conv: u64, on: bool) -> PyResult<()> {
        self.apply(TableUpdate::Replaying { conv, on })
    }

    /// `participant`'s stored read mark in `conv` is at least `seq`: the data plane relays and
    /// raises that participant's later `read` frames itself.
    fn read_mark(&self, conv: u64, participant: String, seq: u64) -> PyResult<()> {
        self.apply(TableUpdate::ReadMark {
            conv,
            participant,
            seq,
        })
    }

    /// Read marks the data plane raised since the last call: `[(conv, participant, seq)]`, to store.
    fn take_read_marks(&self) -> PyResult<Vec<(u64, String, u64)>> {
        Ok(self
            .inner
            .try_borrow_mut()
            .map_err(borrow_error)?
            .plane
            .take_read_marks())
    }

    /// The highest seq fanned out live, or None when the plane has no row for `conv`.
    fn fanned_seq(&self, conv: u64) -> PyResult<Option<u64>> {
        Ok(self
            .inner
            .try_borrow()
            .map_err(borrow_error)?
            .plane
            .fanned_seq(conv))
    }

    /// `(conv, fanned_seq, first_waiting_seq)` for conversations held behind a gap.
    fn stuck(&self) -> PyResult<Vec<(u64, u64, u64)>> {
        Ok(self.inner.try_borrow().map_err(borrow_error)?.plane.stuck())
    }

    // --- frames (tests and the twin use this; the gateway uses the capsule) ---------------------

    /// Run one frame: True when the data plane took it, False when Python must handle it.
    fn handle(
        &self,
        slot: u32,
        payload: &[u8],
        binary: bool,
        now_wall: f64,
        now_mono: f64,
    ) -> PyResult<bool> {
        let mut inner = self.inner.try_borrow_mut().map_err(borrow_error)?;
        Ok(inner
            .plane
            .handle(slot, payload, binary, now_wall, now_mono)
            != Handled::Declined)
    }

    /// Pending deliveries as `[(slots, json, binary | None)]` (tests; the gateway reads them in C).
    fn take_deliveries<'py>(&self, py: Python<'py>) -> PyResult<Vec<PyDelivery<'py>>> {
        let mut inner = self.inner.try_borrow_mut().map_err(borrow_error)?;
        let taken = inner
            .plane
            .take_deliveries()
            .into_iter()
            .map(|d| {
                let binary = d.frame.binary_payload().map(|b| PyBytes::new(py, b));
                (d.slots, PyBytes::new(py, d.frame.json_payload()), binary)
            })
            .collect();
        inner.plane.frames_written(); // handed to the caller, which writes them
        Ok(taken)
    }

    // --- the Python-side writer (seam 1, once per batch) ----------------------------------------

    /// The records queued since the last call:
    /// `[(token, conv, sender_id, sender_role, sender_name, cmid, kind, text, meta_json, ts)]`.
    fn take_records(&self) -> PyResult<Vec<QueuedRecord>> {
        let inner = self.inner.try_borrow().map_err(borrow_error)?;
        Ok(inner
            .plane
            .sink()
            .batch()
            .map(|sink| std::mem::take(&mut *sink.queued.borrow_mut()))
            .unwrap_or_default())
    }

    /// Write through `journal` (the storage's `kefu._native.Journal`) from now on: one journal thread
    /// and one SQLite connection write every message of the file. The data plane's outcomes come
    /// back on its own completion queue (the journal routes each outcome to its submitter's queue),
    /// so storage's futures and the data plane's tokens never mix. Returns that queue's eventfd to
    /// watch (`loop.add_reader`); call `pump` when it is readable.
    fn use_journal(&self, journal: &Bound<'_, PyAny>) -> PyResult<i32> {
        let journal = crate::journal::journal_arc(journal)?;
        let completions = journal
            .new_completions()
            .map_err(|error| PyOSError::new_err(error.to_string()))?;
        let fd = completions.fd();
        let sink = Sink::Journal(JournalSink {
            journal,
            completions,
            closed: Cell::new(false),
        });
        let mut inner = self.inner.try_borrow_mut().map_err(borrow_error)?;
        if inner
            .plane
            .sink()
            .batch()
            .is_some_and(|batch| !batch.queued.borrow().is_empty())
        {
            return Err(PyRuntimeError::new_err(
                "records are queued for the Python writer",
            ));
        }
        inner
            .plane
            .replace_sink(sink)
            .map_err(|_| PyRuntimeError::new_err("sends are in flight"))?;
        Ok(fd)
    }

    /// Drain the journal's outcomes into the data plane (acks, msg fan-out); the caller then writes
    /// the deliveries. Returns (acked, deduplicated, failed) of this drain.
    fn pump(&self) -> PyResult<(usize, usize, usize)> {
        let mut inner = self.inner.try_borrow_mut().map_err(borrow_error)?;
        let Sink::Journal(sink) = inner.plane.sink() else {
            return Ok((0, 0, 0));
        };
        let mut drained = Vec::new();
        sink.completions.drain(&mut drained);
        let (mut acked, mut deduplicated, mut failed) = (0, 0, 0);
        let outcomes: Vec<Outcome> = drained
            .into_iter()
            .map(|outcome| {
                let (seq, ts, status) = match outcome.result {
                    Ok(appended) if appended.duplicate => {
                        (appended.seq, appended.ts, Status::Duplicate)
                    }
                    Ok(appended) => (appended.seq, appended.ts, Status::Created),
                    Err(AppendError::NotFound) => (0, 0.0, Status::NotFound),
                    Err(AppendError::Conflict) => (0, 0.0, Status::Conflict),
                    Err(AppendError::Unavailable(_)) => (0, 0.0, Status::Failed),
                };
                match status {
                    Status::Created => acked += 1,
                    Status::Duplicate => {
                        acked += 1;
                        deduplicated += 1;
                    }
                    _ => failed += 1,
                }
                Outcome {
                    token: outcome.token,
                    conv: u64::try_from(outcome.conv).unwrap_or(0),
                    seq: u64::try_from(seq).unwrap_or(0),
                    ts,
                    status,
                }
            })
            .collect();
        inner.plane.on_outcomes(&outcomes);
        inner.hand_visitor_texts();
        Ok((acked, deduplicated, failed))
    }

    /// Outcomes of a batch: `[(token, conv, seq, ts, status)]`, status one of "created",
    /// "duplicate", "not_found", "conflict", "failed".
    fn on_outcomes(&self, outcomes: Vec<(u64, u64, u64, f64, String)>) -> PyResult<()> {
        let outcomes = outcomes
            .into_iter()
            .map(|(token, conv, seq, ts, status)| {
                let status = match status.as_str() {
                    "created" => Status::Created,
                    "duplicate" => Status::Duplicate,
                    "not_found" => Status::NotFound,
                    "conflict" => Status::Conflict,
                    "failed" => Status::Failed,
                    other => {
                        return Err(PyValueError::new_err(format!("unknown status {other:?}")))
                    }
                };
                Ok(Outcome {
                    token,
                    conv,
                    seq,
                    ts,
                    status,
                })
            })
            .collect::<PyResult<Vec<_>>>()?;
        let mut inner = self.inner.try_borrow_mut().map_err(borrow_error)?;
        inner.plane.on_outcomes(&outcomes);
        inner.hand_visitor_texts();
        Ok(())
    }

    /// Fan out a message stored by the control plane (or another worker), in seq order.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (conv, seq, ts, sender_id, sender_role, sender_name, cmid, kind_name, text, meta_json))]
    fn deliver(
        &self,
        conv: u64,
        seq: u64,
        ts: f64,
        sender_id: String,
        sender_role: &str,
        sender_name: Option<String>,
        cmid: String,
        kind_name: &str,
        text: String,
        meta_json: Option<String>,
    ) -> PyResult<()> {
        let committed = Committed {
            conv,
            seq,
            ts,
            sender: PrincipalRow {
                id: sender_id,
                role: role(sender_role)?,
                name: sender_name,
            },
            cmid,
            kind: kind(kind_name)?,
            text,
            meta_json,
        };
        self.inner
            .try_borrow_mut()
            .map_err(borrow_error)?
            .plane
            .deliver(committed);
        Ok(())
    }

    /// Live JSON frames of conversations with a connection replaying: `[(conv, json)]`.
    fn take_replay_frames<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<Vec<(u64, Bound<'py, PyBytes>)>> {
        let mut inner = self.inner.try_borrow_mut().map_err(borrow_error)?;
        Ok(inner
            .plane
            .take_replay_frames()
            .into_iter()
            .map(|(conv, json)| (conv, PyBytes::new(py, &json)))
            .collect())
    }

    /// Score visitors' new messages on `pipe`'s thread: after each batch of outcomes the batch's
    /// visitor texts go to it in one hand-over (no Python per message).
    fn use_mood(&self, pipe: &PyMoodPipe) -> PyResult<()> {
        let mut inner = self.inner.try_borrow_mut().map_err(borrow_error)?;
        inner.mood = Some(Arc::clone(&pipe.pipe));
        inner.plane.set_score_visitors(true);
        Ok(())
    }

    /// Refuse new records from now on (shutdown): sends get `unavailable`. What was submitted is
    /// still written (the journal belongs to storage and stays open); `pump` delivers those outcomes
    /// until `stats()["in_flight"]` is 0.
    fn close(&self) -> PyResult<()> {
        let inner = self.inner.try_borrow().map_err(borrow_error)?;
        match inner.plane.sink() {
            Sink::Batch(sink) => *sink.closed.borrow_mut() = true,
            Sink::Journal(sink) => sink.closed.set(true),
        }
        Ok(())
    }

    /// Latency recorded natively, per histogram ("ack", "fanout"): (bucket counts, not cumulative,
    /// one more than `LATENCY_BOUNDS`; sum of seconds). The bounds are `kefu.metrics.LATENCY_BUCKETS`.
    fn latency_histograms(&self) -> PyResult<HashMap<&'static str, (Vec<u64>, f64)>> {
        let inner = self.inner.try_borrow().map_err(borrow_error)?;
        let plane = &inner.plane;
        let read = |histogram: &LatencyHistogram| (histogram.counts.to_vec(), histogram.sum);
        Ok(HashMap::from([
            ("ack", read(&plane.ack_latency)),
            ("fanout", read(&plane.fanout_latency)),
        ]))
    }

    /// Counters: submitted, acked, deduplicated, failed, declined, delivered, relayed, in_flight.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let inner = self.inner.try_borrow().map_err(borrow_error)?;
        let Stats {
            submitted,
            acked,
            deduplicated,
            failed,
            declined,
            delivered,
            relayed,
        } = inner.plane.stats;
        let dict = PyDict::new(py);
        for (key, value) in [
            ("submitted", submitted),
            ("acked", acked),
            ("deduplicated", deduplicated),
            ("failed", failed),
            ("declined", declined),
            ("delivered", delivered),
            ("relayed", relayed),
            ("in_flight", inner.plane.in_flight() as u64),
        ] {
            dict.set_item(key, value)?;
        }
        Ok(dict)
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<DataPlane>()?;
    m.add("DATAPLANE_CAPSULE", CAPSULE_NAME.to_str().expect("ASCII"))?;
    m.add("DATAPLANE_HEADROOM", HEADROOM)?;
    m.add("DATAPLANE_LATENCY_BOUNDS", LATENCY_BOUNDS.to_vec())?;
    Ok(())
}
