//! The tables the control plane writes and the data plane reads (seam 2's `TableUpdate`).
//!
//! A row exists only because Python decided it: a connection row after `hello` was answered, a
//! grant after Python subscribed that connection (which it does only after its own access check),
//! a conversation row with the state Python stored. The data plane says "yes" only from these rows.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

/// A principal's role (`kefu.auth.Role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Visitor,
    Agent,
    Admin,
}

impl Role {
    pub fn from_name(name: &str) -> Option<Role> {
        match name {
            "visitor" => Some(Role::Visitor),
            "agent" => Some(Role::Agent),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Role::Visitor => "visitor",
            Role::Agent => "agent",
            Role::Admin => "admin",
        }
    }
}

/// Who is on a connection (from its token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalRow {
    pub id: String,
    pub role: Role,
    pub name: Option<String>,
}

/// A conversation's state (`kefu.storage.base.CONVERSATION_STATES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvState {
    Queued,
    Assigned,
    Transferred,
    Closed,
}

impl ConvState {
    pub fn from_name(name: &str) -> Option<ConvState> {
        match name {
            "queued" => Some(ConvState::Queued),
            "assigned" => Some(ConvState::Assigned),
            "transferred" => Some(ConvState::Transferred),
            "closed" => Some(ConvState::Closed),
            _ => None,
        }
    }
}

/// A decision of the control plane, applied with [`crate::DataPlane::apply`].
#[derive(Debug, Clone, PartialEq)]
pub enum TableUpdate {
    /// `slot` is a greeted connection of `principal`, speaking `kefu.bin.v1` when `binary`.
    Connection {
        slot: u32,
        principal: PrincipalRow,
        binary: bool,
    },
    /// The connection is gone: its grants go with it.
    ConnectionGone {
        slot: u32,
    },
    /// A conversation's state and agent; `last_seq` raises the fan-out watermark.
    Conversation {
        conv: u64,
        state: ConvState,
        agent: Option<String>,
        last_seq: u64,
    },
    /// Forget a conversation (closed and idle): later frames for it go to Python.
    ConversationGone {
        conv: u64,
    },
    /// `slot` is subscribed to `conv` (live delivery) and may send, type and read there.
    Grant {
        slot: u32,
        conv: u64,
    },
    Revoke {
        slot: u32,
        conv: u64,
    },
    /// `participant`'s stored read watermark in `conv` is at least `seq` (the control plane wrote
    /// it): from now on the data plane relays and raises that participant's marks itself.
    ReadMark {
        conv: u64,
        participant: String,
        seq: u64,
    },
    /// `slot` already has every `msg` of `conv` up to `seq` (its replay, read from storage, sent
    /// them): later deliveries skip those seqs for it. A message committed before the replay read it
    /// may reach the data plane only after the grant; without this it would arrive twice.
    CaughtUp {
        slot: u32,
        conv: u64,
        seq: u64,
    },
    /// While Python replays history to a resuming connection, live frames of `conv` are also
    /// handed to it (to buffer), as the hub's `replay_buffers` did.
    Replaying {
        conv: u64,
        on: bool,
    },
}

#[derive(Debug)]
pub(crate) struct ConnRow {
    pub principal: Rc<PrincipalRow>,
    pub binary: bool,
    /// Bumped when a slot is reused, so a late outcome never acks a stranger.
    pub generation: u32,
    /// conv → monotonic time of the last forwarded `typing on`.
    pub typing_sent: HashMap<u64, f64>,
}

#[derive(Debug)]
pub(crate) struct ConvRow {
    pub state: ConvState,
    pub agent: Option<String>,
    /// Subscribed (granted) slots, in grant order.
    pub subscribers: Vec<u32>,
    /// Highest seq written to subscribers.
    pub fanned_seq: u64,
    /// Committed messages that arrived ahead of a gap, by seq.
    pub pending: BTreeMap<u64, crate::plane::PendingMessage>,
    pub replaying: bool,
    /// (slot, seq): that subscriber already has the messages up to seq (see `CaughtUp`); an entry
    /// goes once the fan-out passes its seq.
    pub caught_up: Vec<(u32, u64)>,
    /// (participant, read watermark) of the participants whose stored mark the data plane knows
    /// (`ReadMark`); it relays and raises only these, the first `read` of anyone else goes to Python.
    pub read_marks: Vec<(String, u64)>,
}

impl ConvRow {
    pub fn new(state: ConvState, agent: Option<String>, last_seq: u64) -> Self {
        ConvRow {
            state,
            agent,
            subscribers: Vec::new(),
            fanned_seq: last_seq,
            pending: BTreeMap::new(),
            replaying: false,
            caught_up: Vec::new(),
            read_marks: Vec::new(),
        }
    }
}
