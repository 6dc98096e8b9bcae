//! The data plane: frames in, records to the sink, commits back, frames out.
//!
//! Single-threaded by design (it lives on the event loop's thread, like the connections it
//! serves); it never blocks and never calls back: the caller drains [`DataPlane::take_deliveries`]
//! after each call and writes them to the transports.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Instant;

use kefu_codec::{FrameError, FrameLimits};
use serde_json::{Map, Value};

use crate::encode::{self, Encoded, Message};
use crate::latency::LatencyHistogram;
use crate::parse::{self, ClientFrame, Kind, Limits, SendFrame};
use crate::sink::{AppendRecord, DurableSink, Outcome, Status};
use crate::tables::{ConnRow, ConvRow, ConvState, PrincipalRow, Role, TableUpdate};

/// Conversations per connection whose last typing-on time is remembered (hub.MAX_TYPING_ENTRIES).
const MAX_TYPING_ENTRIES: usize = 256;

/// What became of one client frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Not handled: give the frame to the Python control plane.
    Declined,
    /// A `send` went to the sink; its ack follows the commit.
    Submitted,
    /// The sink refused it (full or closed): an `unavailable` error was queued for the sender.
    Refused,
    /// A `typing` was relayed.
    Relayed,
    /// A `typing on` inside the rate interval: dropped silently, as the hub does.
    Dropped,
}

/// One encoded frame for a set of connection slots (each gets its own wire format).
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub slots: Vec<u32>,
    pub frame: Encoded,
}

/// A message stored by someone else (the control plane's `open` text, another worker), to fan out.
#[derive(Debug, Clone, PartialEq)]
pub struct Committed {
    pub conv: u64,
    pub seq: u64,
    pub ts: f64,
    pub sender: PrincipalRow,
    pub cmid: String,
    pub kind: Kind,
    pub text: String,
    pub meta_json: Option<String>,
}

/// Counters for /metrics (read by the control plane, not per message).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub submitted: u64,
    pub acked: u64,
    pub deduplicated: u64,
    pub failed: u64,
    pub declined: u64,
    pub delivered: u64,
    /// `typing` and `read` frames relayed.
    pub relayed: u64,
}

/// A message between commit and release: owned, because it may wait for a gap to fill.
#[derive(Debug)]
pub(crate) struct PendingMessage {
    sender: Rc<PrincipalRow>,
    cmid: Box<str>,
    kind: Kind,
    text: Box<str>,
    meta: Option<(Map<String, Value>, String)>,
    ts: f64,
}

/// Visitors' new messages of a batch in one buffer (one allocation per batch, not per message):
/// text `i` is `text[ends[i - 1]..ends[i]]` (from 0 for the first) and belongs to `convs[i]`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct VisitorTexts {
    pub convs: Vec<u64>,
    pub ends: Vec<u32>,
    pub text: String,
}

impl VisitorTexts {
    pub fn push(&mut self, conv: u64, text: &str) {
        // Texts are bounded by `Limits::max_text_bytes`; a batch past 4 GiB is cut, not wrapped.
        let Ok(end) = u32::try_from(self.text.len() + text.len()) else {
            return;
        };
        self.text.push_str(text);
        self.convs.push(conv);
        self.ends.push(end);
    }

    pub fn len(&self) -> usize {
        self.convs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.convs.is_empty()
    }

    /// `(conv, text)` pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &str)> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        self.convs
            .iter()
            .zip(starts.zip(&self.ends))
            .map(|(&conv, (start, &end))| (conv, &self.text[start as usize..end as usize]))
    }
}

/// A submitted `send` waiting for its outcome.
#[derive(Debug)]
struct InFlight {
    slot: u32,
    /// When the frame arrived (ack latency runs from here to the ack).
    received: Instant,
    generation: u32,
    message: PendingMessage,
}

pub struct DataPlane<S: DurableSink> {
    sink: S,
    limits: Limits,
    frame_limits: FrameLimits,
    typing_interval_s: f64,
    score_visitors: bool,
    conns: Vec<Option<ConnRow>>,
    generations: Vec<u32>,
    convs: HashMap<u64, ConvRow>,
    /// Conversations holding messages behind a gap (so `stuck` never scans every conversation).
    waiting: HashSet<u64>,
    in_flight: HashMap<u64, InFlight>,
    next_token: u64,
    deliveries: Vec<Delivery>,
    replay_frames: Vec<(u64, Vec<u8>)>,
    visitor_texts: VisitorTexts,
    /// Read watermarks raised here, for the control plane to store (write-behind, once per batch):
    /// `(conv, participant, seq)`.
    read_marks: Vec<(u64, String, u64)>,
    pub stats: Stats,
    /// Frame received → ack queued for writing (after the durable commit).
    pub ack_latency: LatencyHistogram,
    /// Commit → msg frames written to every subscriber ([`Self::frames_written`]).
    pub fanout_latency: LatencyHistogram,
    /// Messages released since the last [`Self::frames_written`], and when the first was committed.
    unwritten: Option<(Instant, u64)>,
}

impl<S: DurableSink> DataPlane<S> {
    /// `score_visitors`: collect visitors' new message texts for mood scoring ([`Self::take_visitor_texts`]).
    pub fn new(
        sink: S,
        limits: Limits,
        frame_limits: FrameLimits,
        typing_interval_s: f64,
        score_visitors: bool,
    ) -> Self {
        DataPlane {
            sink,
            limits,
            frame_limits,
            typing_interval_s,
            score_visitors,
            conns: Vec::new(),
            generations: Vec::new(),
            convs: HashMap::new(),
            waiting: HashSet::new(),
            in_flight: HashMap::new(),
            next_token: 1,
            deliveries: Vec::new(),
            replay_frames: Vec::new(),
            visitor_texts: VisitorTexts::default(),
            read_marks: Vec::new(),
            stats: Stats::default(),
            ack_latency: LatencyHistogram::default(),
            fanout_latency: LatencyHistogram::default(),
            unwritten: None,
        }
    }

    /// Start or stop collecting visitors' texts for mood scoring.
    pub fn set_score_visitors(&mut self, on: bool) {
        self.score_visitors = on;
        if !on {
            self.visitor_texts = VisitorTexts::default();
        }
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// Replace the sink (e.g. the native journal once storage is open); only with nothing in flight,
    /// or outcomes of the old sink would find no record.
    pub fn replace_sink(&mut self, sink: S) -> Result<S, S> {
        if self.in_flight.is_empty() {
            Ok(std::mem::replace(&mut self.sink, sink))
        } else {
            Err(sink)
        }
    }

    // --- seam 2: the control plane's decisions ------------------------------------------------

    pub fn apply(&mut self, update: TableUpdate) {
        match update {
            TableUpdate::Connection {
                slot,
                principal,
                binary,
            } => {
                let index = slot as usize;
                if self.conns.len() <= index {
                    self.conns.resize_with(index + 1, || None);
                    self.generations.resize(index + 1, 0);
                }
                self.forget_connection(slot);
                self.generations[index] = self.generations[index].wrapping_add(1);
                self.conns[index] = Some(ConnRow {
                    principal: Rc::new(principal),
                    binary,
                    generation: self.generations[index],
                    typing_sent: HashMap::new(),
                });
            }
            TableUpdate::ConnectionGone { slot } => self.forget_connection(slot),
            TableUpdate::Conversation {
                conv,
                state,
                agent,
                last_seq,
            } => {
                let row = self
                    .convs
                    .entry(conv)
                    .or_insert_with(|| ConvRow::new(state, agent.clone(), last_seq));
                row.state = state;
                row.agent = agent;
                row.fanned_seq = row.fanned_seq.max(last_seq);
            }
            TableUpdate::ConversationGone { conv } => {
                self.convs.remove(&conv);
                self.waiting.remove(&conv);
            }
            TableUpdate::Grant { slot, conv } => {
                if self.connection(slot).is_some() {
                    if let Some(row) = self.convs.get_mut(&conv) {
                        if !row.subscribers.contains(&slot) {
                            row.subscribers.push(slot);
                        }
                    }
                }
            }
            TableUpdate::Revoke { slot, conv } => {
                if let Some(row) = self.convs.get_mut(&conv) {
                    row.subscribers.retain(|s| *s != slot);
                    row.caught_up.retain(|(s, _)| *s != slot);
                }
            }
            TableUpdate::CaughtUp { slot, conv, seq } => {
                if let Some(row) = self.convs.get_mut(&conv) {
                    row.caught_up.retain(|(s, _)| *s != slot);
                    if seq > row.fanned_seq {
                        row.caught_up.push((slot, seq));
                    }
                }
            }
            TableUpdate::ReadMark {
                conv,
                participant,
                seq,
            } => {
                if let Some(row) = self.convs.get_mut(&conv) {
                    match row.read_marks.iter_mut().find(|(id, _)| *id == participant) {
                        Some(known) => known.1 = known.1.max(seq),
                        None => row.read_marks.push((participant, seq)),
                    }
                }
            }
            TableUpdate::Replaying { conv, on } => {
                if let Some(row) = self.convs.get_mut(&conv) {
                    row.replaying = on;
                }
            }
        }
    }

    fn forget_connection(&mut self, slot: u32) {
        let Some(row) = self.conns.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        // A connection is subscribed to few conversations; its typing map names the ones it used,
        // but grants can exist without typing, so scan the (small per server) subscribed rows.
        drop(row);
        for conv in self.convs.values_mut() {
            conv.subscribers.retain(|s| *s != slot);
            conv.caught_up.retain(|(s, _)| *s != slot);
        }
    }

    fn connection(&self, slot: u32) -> Option<&ConnRow> {
        self.conns.get(slot as usize).and_then(Option::as_ref)
    }

    /// The highest seq fanned out live for `conv` (the hub's `fanned_seq`), if the plane knows it.
    pub fn fanned_seq(&self, conv: u64) -> Option<u64> {
        self.convs.get(&conv).map(|row| row.fanned_seq)
    }

    /// Conversations holding committed messages behind a gap (the control plane fills them from
    /// storage with [`Self::deliver`]).
    pub fn stuck(&self) -> Vec<(u64, u64, u64)> {
        self.waiting
            .iter()
            .filter_map(|conv| {
                let row = self.convs.get(conv)?;
                let first = *row.pending.keys().next()?;
                Some((*conv, row.fanned_seq, first))
            })
            .collect()
    }

    // --- frames in ------------------------------------------------------------------------------

    /// One complete client frame from connection `slot`. `now_wall`: Unix seconds (a new message's
    /// `ts`); `now_mono`: monotonic seconds (typing rate limit).
    pub fn handle(
        &mut self,
        slot: u32,
        payload: &[u8],
        binary: bool,
        now_wall: f64,
        now_mono: f64,
    ) -> Handled {
        let frame = if binary {
            parse::parse_binary(payload, &self.limits, &self.frame_limits)
        } else {
            parse::parse_json(payload, &self.limits)
        };
        let handled = match frame {
            ClientFrame::Send(send) => self.on_send(slot, send, now_wall),
            ClientFrame::Typing { conv, on } => self.on_typing(slot, conv, on, now_mono),
            ClientFrame::Read { conv, seq } => self.on_read(slot, conv, seq),
            ClientFrame::Decline => Handled::Declined,
        };
        if handled == Handled::Declined {
            self.stats.declined += 1;
        }
        handled
    }

    /// The connection's principal if it may write to `conv` now (the hub's `_can_access` via the
    /// grant, plus `_check_sendable`); `None` sends the frame to Python, which explains the refusal.
    fn writer(&self, slot: u32, conv: u64) -> Option<(&ConnRow, &ConvRow)> {
        let conn = self.connection(slot)?;
        let row = self.convs.get(&conv)?;
        if !row.subscribers.contains(&slot) || row.state == ConvState::Closed {
            return None;
        }
        let principal = &conn.principal;
        if principal.role == Role::Agent
            && row.state == ConvState::Queued
            && row.agent.as_deref() != Some(principal.id.as_str())
        {
            return None;
        }
        Some((conn, row))
    }

    fn on_send(&mut self, slot: u32, send: SendFrame<'_>, now_wall: f64) -> Handled {
        let Some((conn, _)) = self.writer(slot, send.conv) else {
            return Handled::Declined;
        };
        let meta = send.meta;
        let token = self.next_token;
        let principal = Rc::clone(&conn.principal);
        let generation = conn.generation;
        let binary = conn.binary;
        let record = AppendRecord {
            token,
            conv: send.conv,
            sender_id: &principal.id,
            sender_role: principal.role,
            sender_name: principal.name.as_deref(),
            cmid: &send.cmid,
            kind: send.kind,
            text: &send.text,
            meta_json: meta.as_ref().map(|(_, json)| json.as_str()),
            ts: now_wall,
        };
        if self.sink.submit(&record).is_err() {
            let frame = encode::error(
                "unavailable",
                "storage unavailable; nothing was stored, retry later",
                &send.cmid,
                binary,
                &self.frame_limits,
            );
            self.queue_for_slot(slot, binary, frame);
            return Handled::Refused;
        }
        self.next_token += 1;
        self.stats.submitted += 1;
        self.in_flight.insert(
            token,
            InFlight {
                slot,
                received: Instant::now(),
                generation,
                message: PendingMessage {
                    sender: principal,
                    cmid: send.cmid.into(),
                    kind: send.kind,
                    text: send.text.into(),
                    meta,
                    ts: now_wall,
                },
            },
        );
        Handled::Submitted
    }

    fn on_typing(&mut self, slot: u32, conv: u64, on: bool, now_mono: f64) -> Handled {
        let interval = self.typing_interval_s;
        let Some(conn) = self.conns.get_mut(slot as usize).and_then(Option::as_mut) else {
            return Handled::Declined;
        };
        let Some(row) = self.convs.get(&conv) else {
            return Handled::Declined;
        };
        if !row.subscribers.contains(&slot) {
            return Handled::Declined;
        }
        let last = conn
            .typing_sent
            .get(&conv)
            .copied()
            .unwrap_or(f64::NEG_INFINITY);
        if on && now_mono - last < interval {
            return Handled::Dropped;
        }
        if conn.typing_sent.len() >= MAX_TYPING_ENTRIES && !conn.typing_sent.contains_key(&conv) {
            // The hub's bound: forget the oldest entry, so a client cannot grow this map.
            let oldest = conn
                .typing_sent
                .iter()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .map(|(c, _)| *c);
            oldest.map(|c| conn.typing_sent.remove(&c));
        }
        conn.typing_sent.insert(conv, now_mono);
        let sender = Rc::clone(&conn.principal);
        self.relay(conv, &sender, |binary, limits| {
            encode::typing(conv, on, &sender, binary, limits)
        })
    }

    /// A `read`: raise the sender's watermark (never lower it) and relay it to the other
    /// participants, as the hub's `_read` does. Declined to Python when the plane cannot be sure of
    /// the answer: no grant, a `seq` past what it fanned out (Python checks storage's `last_seq`),
    /// or a participant whose stored mark it was never told (Python reads and stores it first).
    /// The raised mark is stored write-behind ([`Self::take_read_marks`]): a `read` has no ack.
    fn on_read(&mut self, slot: u32, conv: u64, seq: u64) -> Handled {
        let Some(sender) = self.connection(slot).map(|conn| Rc::clone(&conn.principal)) else {
            return Handled::Declined;
        };
        let Some(row) = self.convs.get_mut(&conv) else {
            return Handled::Declined;
        };
        if !row.subscribers.contains(&slot) || seq > row.fanned_seq {
            return Handled::Declined;
        }
        let Some(known) = row.read_marks.iter_mut().find(|(id, _)| *id == sender.id) else {
            return Handled::Declined;
        };
        let mark = known.1.max(seq);
        if mark > known.1 {
            known.1 = mark;
            self.read_marks.push((conv, sender.id.clone(), mark));
        }
        self.relay(conv, &sender, |binary, limits| {
            encode::read(conv, mark, &sender, binary, limits)
        })
    }

    /// Relay a frame from `sender` to the other participants of `conv` (and to its replay buffer
    /// while someone replays it); `encode(any_binary, limits)` writes it once per wire format.
    fn relay(
        &mut self,
        conv: u64,
        sender: &PrincipalRow,
        encode: impl FnOnce(bool, &FrameLimits) -> Result<Encoded, FrameError>,
    ) -> Handled {
        let Some(row) = self.convs.get(&conv) else {
            return Handled::Declined;
        };
        let replaying = row.replaying;
        let targets: Vec<u32> = row
            .subscribers
            .iter()
            .copied()
            .filter(|s| {
                self.connection(*s)
                    .is_some_and(|c| c.principal.id != sender.id)
            })
            .collect();
        let any_binary = self.any_binary(&targets);
        if let Ok(frame) = encode(any_binary, &self.frame_limits) {
            if replaying {
                self.replay_frames
                    .push((conv, frame.json_payload().to_vec()));
            }
            if !targets.is_empty() {
                self.deliveries.push(Delivery {
                    slots: targets,
                    frame,
                });
            }
        }
        self.stats.relayed += 1;
        Handled::Relayed
    }

    // --- commits in -----------------------------------------------------------------------------

    /// A batch of outcomes from the sink: ack (or refuse) each sender, fan out new messages in seq order.
    pub fn on_outcomes(&mut self, outcomes: &[Outcome]) {
        for outcome in outcomes {
            let Some(flight) = self.in_flight.remove(&outcome.token) else {
                continue;
            };
            let sender_slot = self
                .connection(flight.slot)
                .filter(|conn| conn.generation == flight.generation)
                .map(|conn| conn.binary);
            let cmid = &flight.message.cmid;
            match outcome.status {
                Status::Created | Status::Duplicate => {
                    if let Some(binary) = sender_slot {
                        let frame = encode::ack(
                            cmid,
                            outcome.conv,
                            outcome.seq,
                            outcome.ts,
                            binary,
                            &self.frame_limits,
                        );
                        self.queue_for_slot(flight.slot, binary, frame);
                    }
                    self.stats.acked += 1;
                    self.ack_latency
                        .observe(flight.received.elapsed().as_secs_f64(), 1);
                }
                Status::NotFound | Status::Conflict | Status::Failed => {
                    // The hub's words for the same failures (`_on_committed`, `_check_sendable`).
                    let (code, text) = match outcome.status {
                        Status::NotFound => ("not_found", "no such conversation"),
                        Status::Conflict => ("conflict", "the conversation is closed"),
                        _ => (
                            "unavailable",
                            "storage unavailable; nothing was stored, retry later",
                        ),
                    };
                    if let Some(binary) = sender_slot {
                        let frame = encode::error(code, text, cmid, binary, &self.frame_limits);
                        self.queue_for_slot(flight.slot, binary, frame);
                    }
                    self.stats.failed += 1;
                    continue;
                }
            }
            if outcome.status == Status::Duplicate {
                self.stats.deduplicated += 1;
                continue;
            }
            let mut message = flight.message;
            message.ts = outcome.ts;
            if self.score_visitors && message.sender.role == Role::Visitor {
                self.visitor_texts.push(outcome.conv, &message.text);
            }
            self.release(outcome.conv, outcome.seq, message);
        }
    }

    /// Fan out a message stored elsewhere (same ordering rules as the data plane's own).
    pub fn deliver(&mut self, committed: Committed) {
        let meta =
            committed
                .meta_json
                .and_then(|json| match serde_json::from_str::<Value>(&json) {
                    Ok(Value::Object(map)) if !map.is_empty() => Some((map, json)),
                    _ => None,
                });
        let message = PendingMessage {
            sender: Rc::new(committed.sender),
            cmid: committed.cmid.into(),
            kind: committed.kind,
            text: committed.text.into(),
            meta,
            ts: committed.ts,
        };
        self.release(committed.conv, committed.seq, message);
    }

    /// The hub's `_release_in_order`: hold early arrivals, write runs.
    fn release(&mut self, conv: u64, seq: u64, message: PendingMessage) {
        let Some(row) = self.convs.get_mut(&conv) else {
            return; // forgotten (closed, nobody subscribed): nothing to deliver live
        };
        if seq <= row.fanned_seq {
            return;
        }
        row.pending.insert(seq, message);
        loop {
            let row = self.convs.get_mut(&conv).expect("checked above");
            let Some(message) = row.pending.remove(&(row.fanned_seq + 1)) else {
                break;
            };
            row.fanned_seq += 1;
            let mut targets = row.subscribers.clone();
            if !row.caught_up.is_empty() {
                let seq = row.fanned_seq;
                targets.retain(|slot| {
                    !row.caught_up
                        .iter()
                        .any(|&(s, upto)| s == *slot && seq <= upto)
                });
                row.caught_up.retain(|&(_, upto)| upto > seq);
            }
            let row = &self.convs[&conv];
            let replaying = row.replaying;
            let any_binary = self.any_binary(&targets);
            let view = Message {
                conv,
                seq: row.fanned_seq,
                ts: message.ts,
                sender: &message.sender,
                cmid: &message.cmid,
                kind: message.kind.name(),
                text: &message.text,
                meta: message
                    .meta
                    .as_ref()
                    .map(|(map, json)| (map, json.as_str())),
            };
            // A stored message always encodes (the limits admitted it); if not, skip, never panic.
            let Ok(frame) = encode::msg(&view, any_binary, &self.frame_limits) else {
                continue;
            };
            if replaying {
                self.replay_frames
                    .push((conv, frame.json_payload().to_vec()));
            }
            self.stats.delivered += targets.len() as u64;
            if !targets.is_empty() {
                let unwritten = self.unwritten.get_or_insert_with(|| (Instant::now(), 0));
                unwritten.1 += 1;
                self.deliveries.push(Delivery {
                    slots: targets,
                    frame,
                });
            }
        }
        if self
            .convs
            .get(&conv)
            .is_some_and(|row| !row.pending.is_empty())
        {
            self.waiting.insert(conv);
        } else {
            self.waiting.remove(&conv);
        }
    }

    fn any_binary(&self, slots: &[u32]) -> bool {
        slots
            .iter()
            .any(|s| self.connection(*s).is_some_and(|c| c.binary))
    }

    fn queue_for_slot(
        &mut self,
        slot: u32,
        binary: bool,
        frame: Result<Vec<u8>, kefu_codec::FrameError>,
    ) {
        let Ok(bytes) = frame else { return };
        let frame = if binary {
            Encoded {
                json: Vec::new(),
                binary: Some(bytes),
            }
        } else {
            Encoded {
                json: bytes,
                binary: None,
            }
        };
        self.deliveries.push(Delivery {
            slots: vec![slot],
            frame,
        });
    }

    // --- frames out -----------------------------------------------------------------------------

    /// Everything to write since the last call, in order.
    /// The transports took every delivery so far: each message released since the last call gets
    /// one fan-out observation of the batch's elapsed time (measured per batch, not per message).
    pub fn frames_written(&mut self) {
        if let Some((since, messages)) = self.unwritten.take() {
            self.fanout_latency
                .observe(since.elapsed().as_secs_f64(), messages);
        }
    }

    pub fn take_deliveries(&mut self) -> Vec<Delivery> {
        std::mem::take(&mut self.deliveries)
    }

    /// Live frames (JSON) of conversations with a connection replaying: the control plane buffers them.
    pub fn take_replay_frames(&mut self) -> Vec<(u64, Vec<u8>)> {
        std::mem::take(&mut self.replay_frames)
    }

    /// How many raised read watermarks wait for [`Self::take_read_marks`].
    pub fn read_marks_waiting(&self) -> usize {
        self.read_marks.len()
    }

    /// Read watermarks raised since the last call, `(conv, participant, seq)`, for storage.
    pub fn take_read_marks(&mut self) -> Vec<(u64, String, u64)> {
        std::mem::take(&mut self.read_marks)
    }

    /// Visitors' new messages since the last call, for mood scoring.
    pub fn take_visitor_texts(&mut self) -> VisitorTexts {
        std::mem::take(&mut self.visitor_texts)
    }

    /// Submitted sends whose outcome has not arrived.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}
