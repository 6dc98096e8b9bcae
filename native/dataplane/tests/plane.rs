//! The data plane against the in-memory sink: the delivery rules of docs/protocol.md.

use kefu_codec::FrameLimits;
use kefu_dataplane::plane::Committed;
use kefu_dataplane::{
    ConvState, DataPlane, Delivery, Handled, Kind, Limits, MemorySink, Outcome, PrincipalRow, Role,
    Status, TableUpdate,
};

const VISITOR: u32 = 0;
const AGENT: u32 = 1;
const CONV: u64 = 5;

fn principal(id: &str, role: Role) -> PrincipalRow {
    PrincipalRow {
        id: id.into(),
        role,
        name: None,
    }
}

fn plane(agent_binary: bool) -> DataPlane<MemorySink> {
    let mut plane = DataPlane::new(
        MemorySink::default(),
        Limits::default(),
        FrameLimits::default(),
        1.0,
        true,
    );
    plane.apply(TableUpdate::Connection {
        slot: VISITOR,
        principal: principal("v_1", Role::Visitor),
        binary: false,
    });
    plane.apply(TableUpdate::Connection {
        slot: AGENT,
        principal: principal("a_1", Role::Agent),
        binary: agent_binary,
    });
    plane.apply(TableUpdate::Conversation {
        conv: CONV,
        state: ConvState::Assigned,
        agent: Some("a_1".into()),
        last_seq: 0,
    });
    plane.apply(TableUpdate::Grant {
        slot: VISITOR,
        conv: CONV,
    });
    plane.apply(TableUpdate::Grant {
        slot: AGENT,
        conv: CONV,
    });
    plane
}

fn send(cmid: &str) -> Vec<u8> {
    format!(r#"{{"t":"send","conv":{CONV},"cmid":"{cmid}","text":"hello {cmid}"}}"#).into_bytes()
}

/// A stored text message of `CONV` with cmid `c{seq}`, as another writer would hand it over.
fn committed(seq: u64, sender: PrincipalRow) -> Committed {
    Committed {
        conv: CONV,
        seq,
        ts: 1.0,
        sender,
        cmid: format!("c{seq}"),
        kind: Kind::Text,
        text: "x".into(),
        meta_json: None,
    }
}

fn json_of(delivery: &Delivery) -> serde_json::Value {
    serde_json::from_slice(delivery.frame.json_payload()).unwrap()
}

#[test]
fn ack_after_commit_then_msg_to_every_subscriber() {
    let mut plane = plane(true);
    assert_eq!(
        plane.handle(VISITOR, &send("c1"), false, 100.0, 1.0),
        Handled::Submitted
    );
    assert!(
        plane.take_deliveries().is_empty(),
        "nothing before the commit"
    );
    let outcomes = plane.sink().commit();
    plane.on_outcomes(&outcomes);
    let out = plane.take_deliveries();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].slots, [VISITOR]);
    assert_eq!(
        json_of(&out[0]),
        serde_json::json!({"t":"ack","cmid":"c1","conv":5,"seq":1,"ts":100.0})
    );
    assert_eq!(out[1].slots, [VISITOR, AGENT]);
    let msg = json_of(&out[1]);
    assert_eq!(msg["seq"], 1);
    assert_eq!(
        msg["from"],
        serde_json::json!({"id":"v_1","role":"visitor"})
    );
    assert!(
        out[1].frame.binary.is_some(),
        "the agent speaks kefu.bin.v1"
    );
    let texts = plane.take_visitor_texts();
    assert_eq!(texts.iter().collect::<Vec<_>>(), vec![(CONV, "hello c1")]);
    assert!(plane.take_visitor_texts().is_empty(), "taken once");
    let stored = plane.sink().stored();
    assert_eq!((stored[0].0.text.as_str(), stored[0].1), ("hello c1", 1));
}

#[test]
fn retried_cmid_gets_its_seq_and_is_not_delivered_again() {
    let mut plane = plane(false);
    plane.handle(VISITOR, &send("c1"), false, 100.0, 1.0);
    let outcomes = plane.sink().commit();
    plane.on_outcomes(&outcomes);
    plane.take_deliveries();
    plane.handle(VISITOR, &send("c1"), false, 200.0, 2.0);
    let outcomes = plane.sink().commit();
    assert_eq!(outcomes[0].status, Status::Duplicate);
    plane.on_outcomes(&outcomes);
    let out = plane.take_deliveries();
    assert_eq!(out.len(), 1, "an ack only");
    assert_eq!(
        json_of(&out[0]),
        serde_json::json!({"t":"ack","cmid":"c1","conv":5,"seq":1,"ts":100.0})
    );
    assert_eq!(plane.stats.deduplicated, 1);
}

#[test]
fn messages_are_released_in_seq_order() {
    let mut plane = plane(false);
    let committed = |seq: u64| committed(seq, principal("v_1", Role::Visitor));
    plane.deliver(committed(2));
    assert!(plane.take_deliveries().is_empty(), "seq 2 waits for seq 1");
    assert_eq!(plane.stuck(), vec![(CONV, 0, 2)]);
    plane.deliver(committed(1));
    let seqs: Vec<_> = plane
        .take_deliveries()
        .iter()
        .map(|d| json_of(d)["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2]);
    plane.deliver(committed(2));
    assert!(plane.take_deliveries().is_empty(), "never twice");
}

#[test]
fn a_connection_caught_up_by_its_replay_gets_only_later_messages() {
    // A resuming connection's replay read seqs 1..=2 from storage before their outcomes reached the
    // data plane; once granted, it must not get them again (everyone else still does).
    let mut plane = plane(false);
    let committed = |seq: u64| committed(seq, principal("a_1", Role::Agent));
    plane.apply(TableUpdate::CaughtUp {
        slot: VISITOR,
        conv: CONV,
        seq: 2,
    });
    for seq in 1..=3 {
        plane.deliver(committed(seq));
    }
    let got: Vec<(u64, Vec<u32>)> = plane
        .take_deliveries()
        .iter()
        .map(|d| (json_of(d)["seq"].as_u64().unwrap(), d.slots.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (1, vec![AGENT]),
            (2, vec![AGENT]),
            (3, vec![VISITOR, AGENT])
        ]
    );
    // Caught up to a seq already fanned out: nothing to skip, nothing remembered.
    plane.apply(TableUpdate::CaughtUp {
        slot: VISITOR,
        conv: CONV,
        seq: 3,
    });
    plane.deliver(committed(4));
    assert_eq!(plane.take_deliveries()[0].slots, [VISITOR, AGENT]);
}

#[test]
fn undecided_cases_go_to_python() {
    let mut plane = plane(false);
    assert_eq!(
        plane.handle(9, &send("c1"), false, 1.0, 1.0),
        Handled::Declined,
        "no row for the slot"
    );
    let other = br#"{"t":"send","conv":6,"cmid":"a","text":"x"}"#;
    assert_eq!(
        plane.handle(VISITOR, other, false, 1.0, 1.0),
        Handled::Declined,
        "not granted"
    );
    plane.apply(TableUpdate::Revoke {
        slot: AGENT,
        conv: CONV,
    });
    assert_eq!(
        plane.handle(AGENT, &send("c1"), false, 1.0, 1.0),
        Handled::Declined,
        "revoked"
    );
    plane.apply(TableUpdate::Grant {
        slot: AGENT,
        conv: CONV,
    });
    plane.apply(TableUpdate::Conversation {
        conv: CONV,
        state: ConvState::Queued,
        agent: None,
        last_seq: 0,
    });
    assert_eq!(
        plane.handle(AGENT, &send("c1"), false, 1.0, 1.0),
        Handled::Declined,
        "not accepted yet"
    );
    assert_eq!(
        plane.handle(VISITOR, &send("c1"), false, 1.0, 1.0),
        Handled::Submitted
    );
    plane.apply(TableUpdate::Conversation {
        conv: CONV,
        state: ConvState::Closed,
        agent: None,
        last_seq: 0,
    });
    assert_eq!(
        plane.handle(VISITOR, &send("c2"), false, 1.0, 1.0),
        Handled::Declined,
        "closed"
    );
    assert_eq!(
        plane.handle(VISITOR, br#"{"t":"hello"}"#, false, 1.0, 1.0),
        Handled::Declined
    );
    assert_eq!(
        plane.handle(
            VISITOR,
            br#"{"t":"read","conv":5,"seq":1}"#,
            false,
            1.0,
            1.0
        ),
        Handled::Declined
    );
}

#[test]
fn a_reused_slot_never_gets_a_strangers_ack() {
    let mut plane = plane(false);
    plane.handle(VISITOR, &send("c1"), false, 1.0, 1.0);
    plane.apply(TableUpdate::ConnectionGone { slot: VISITOR });
    plane.apply(TableUpdate::Connection {
        slot: VISITOR,
        principal: principal("v_2", Role::Visitor),
        binary: false,
    });
    let outcomes = plane.sink().commit();
    plane.on_outcomes(&outcomes);
    let out = plane.take_deliveries();
    assert_eq!(
        out.len(),
        1,
        "the msg goes to the agent, no ack to the new visitor"
    );
    assert_eq!(out[0].slots, [AGENT]);
}

#[test]
fn sink_full_is_unavailable_with_the_cmid() {
    let mut plane = plane(false);
    *plane.sink().full.borrow_mut() = true;
    assert_eq!(
        plane.handle(VISITOR, &send("c9"), false, 1.0, 1.0),
        Handled::Refused
    );
    let out = plane.take_deliveries();
    assert_eq!(json_of(&out[0])["code"], "unavailable");
    assert_eq!(json_of(&out[0])["ref"], "c9");
}

#[test]
fn not_found_and_failed_outcomes_become_errors() {
    let mut plane = plane(false);
    plane.handle(VISITOR, &send("c1"), false, 1.0, 1.0);
    plane.on_outcomes(&[Outcome {
        token: 1,
        conv: CONV,
        seq: 0,
        ts: 0.0,
        status: Status::Failed,
    }]);
    let out = plane.take_deliveries();
    assert_eq!(out.len(), 1);
    assert_eq!(json_of(&out[0])["code"], "unavailable");
}

#[test]
fn typing_skips_the_sender_and_is_rate_limited() {
    let mut plane = plane(false);
    let on = br#"{"t":"typing","conv":5,"on":true}"#;
    let off = br#"{"t":"typing","conv":5,"on":false}"#;
    assert_eq!(
        plane.handle(VISITOR, on, false, 1.0, 10.0),
        Handled::Relayed
    );
    assert_eq!(
        plane.handle(VISITOR, on, false, 1.0, 10.5),
        Handled::Dropped
    );
    assert_eq!(
        plane.handle(VISITOR, off, false, 1.0, 10.6),
        Handled::Relayed,
        "off always goes"
    );
    assert_eq!(
        plane.handle(VISITOR, on, false, 1.0, 11.7),
        Handled::Relayed
    );
    let out = plane.take_deliveries();
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|d| d.slots == [AGENT]));
    assert_eq!(
        json_of(&out[0]),
        serde_json::json!({"t":"typing","conv":5,"on":true,"from":{"id":"v_1","role":"visitor"}})
    );
}

#[test]
fn replaying_conversations_hand_live_frames_to_the_control_plane() {
    let mut plane = plane(false);
    plane.apply(TableUpdate::Replaying {
        conv: CONV,
        on: true,
    });
    plane.handle(VISITOR, &send("c1"), false, 1.0, 1.0);
    let outcomes = plane.sink().commit();
    plane.on_outcomes(&outcomes);
    let frames = plane.take_replay_frames();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0, CONV);
}

#[test]
fn binary_send_is_parsed_and_acked_in_binary() {
    let mut plane = plane(true);
    let frame = kefu_codec::value::Frame {
        frame_type: kefu_codec::FrameType::Send,
        conv: CONV,
        seq: 0,
        fields: vec![
            ("cmid", kefu_codec::Value::Str("b1")),
            ("text", kefu_codec::Value::Str("bin")),
        ],
    };
    let bytes = kefu_codec::value::encode(&frame, &FrameLimits::default()).unwrap();
    assert_eq!(
        plane.handle(AGENT, &bytes, true, 1.0, 1.0),
        Handled::Submitted
    );
    let outcomes = plane.sink().commit();
    plane.on_outcomes(&outcomes);
    let out = plane.take_deliveries();
    let ack = kefu_codec::value::decode(
        out[0].frame.binary_payload().unwrap(),
        &FrameLimits::default(),
    )
    .unwrap();
    assert_eq!(
        (ack.frame_type, ack.conv, ack.seq),
        (kefu_codec::FrameType::Ack, CONV, 1)
    );
}

#[test]
fn read_marks_are_relayed_and_raised_once_python_stored_the_first() {
    let mut plane = plane(true);
    for seq in 1..=3 {
        plane.deliver(committed(seq, principal("v_1", Role::Visitor)));
    }
    plane.take_deliveries();
    let read = |seq: u64| format!(r#"{{"t":"read","conv":{CONV},"seq":{seq}}}"#).into_bytes();
    assert_eq!(
        plane.handle(AGENT, &read(2), false, 1.0, 1.0),
        Handled::Declined,
        "the agent's stored mark is unknown: Python stores the first"
    );
    plane.apply(TableUpdate::ReadMark {
        conv: CONV,
        participant: "a_1".into(),
        seq: 2,
    });
    assert_eq!(
        plane.handle(AGENT, &read(4), false, 1.0, 1.0),
        Handled::Declined,
        "past the fanned seq: Python checks storage"
    );
    assert_eq!(
        plane.handle(AGENT, &read(1), false, 1.0, 1.0),
        Handled::Relayed
    );
    assert_eq!(
        plane.take_read_marks(),
        vec![],
        "never lowered: nothing to store"
    );
    assert_eq!(
        plane.handle(AGENT, &read(3), false, 1.0, 1.0),
        Handled::Relayed
    );
    assert_eq!(plane.take_read_marks(), vec![(CONV, "a_1".to_string(), 3)]);
    let out = plane.take_deliveries();
    assert_eq!(out.len(), 2);
    assert!(
        out.iter().all(|d| d.slots == [VISITOR]),
        "not to the reader"
    );
    let from = serde_json::json!({"id":"a_1","role":"agent"});
    assert_eq!(
        json_of(&out[0]),
        serde_json::json!({"t":"read","conv":CONV,"seq":2,"from":from})
    );
    assert_eq!(json_of(&out[1])["seq"], 3);
    assert!(out[1].frame.binary.is_none(), "the visitor speaks JSON");

    // The agent speaks kefu.bin.v1: the visitor's read reaches it with seq in the header.
    plane.apply(TableUpdate::ReadMark {
        conv: CONV,
        participant: "v_1".into(),
        seq: 0,
    });
    let frame = kefu_codec::value::Frame {
        frame_type: kefu_codec::FrameType::Read,
        conv: CONV,
        seq: 3,
        fields: vec![],
    };
    let bytes = kefu_codec::value::encode(&frame, &FrameLimits::default()).unwrap();
    assert_eq!(
        plane.handle(VISITOR, &bytes, true, 1.0, 1.0),
        Handled::Relayed
    );
    let out = plane.take_deliveries();
    let relayed = kefu_codec::value::decode(
        out[0].frame.binary_payload().unwrap(),
        &FrameLimits::default(),
    )
    .unwrap();
    assert_eq!(
        (relayed.frame_type, relayed.conv, relayed.seq),
        (kefu_codec::FrameType::Read, CONV, 3)
    );
    assert_eq!(plane.stats.relayed, 3);
}
