"""The native data plane (kefu._native.DataPlane) against its reference twins.

- Parsing: `kefu.reference.dataplane.parse_client_frame` is the hub's own validation path. On the
  corpus (tests/native/corpus/dataplane_frames.jsonl) and on generated frames, whatever the data
  plane takes must be accepted by the reference with the same values; whatever the reference refuses
  the data plane must decline (so Python answers it). Corpus rows marked "taken" must be taken: a
  data plane that declined everything would pass the first two rules and fail this one.
- Encoding: `ack`/`msg`/`typing` frames must be byte-identical to what the hub builds and encodes
  (`kefu.compiled.encode_json` / `encode_frame` of the same dict).
- Delivery rules with a scripted writer: ack only from an outcome, retried cmid not re-delivered,
  seq order, slot reuse.
"""

from __future__ import annotations

import bisect
import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kefu import compiled
from kefu.metrics import LATENCY_BUCKETS, Histogram
from kefu.realtime.hub import _message_frame
from kefu.reference import codec as reference_codec
from kefu.reference.dataplane import parse_client_frame

CORPUS = Path(__file__).parent / "corpus" / "dataplane_frames.jsonl"
CONV = 7
VISITOR, AGENT = 0, 1


class Plane:
    """A data plane with one visitor (JSON) and one agent (binary) granted on conversation CONV."""

    def __init__(self) -> None:
        self.plane = compiled.DataPlane(max_text_bytes=8192, max_cmid_len=64, typing_interval_s=1.0)
        self.plane.connection(VISITOR, "v_1", "visitor", "Ann", False)
        self.plane.connection(AGENT, "a_1", "agent", None, True)
        self.plane.conversation(CONV, "assigned", "a_1", 0)
        self.plane.grant(VISITOR, CONV)
        self.plane.grant(AGENT, CONV)
        self.clock = 0.0

    def parse(self, payload: bytes, binary: bool) -> tuple[Any, ...] | None:
        """What the data plane took, in the reference's shape; None when it declined."""
        self.clock += 10.0  # never inside the typing interval
        slot = AGENT if binary else VISITOR
        if not self.plane.handle(slot, payload, binary, 1.0, self.clock):
            assert not self.plane.take_records() and not self.plane.take_deliveries()
            return None
        records = self.plane.take_records()
        if records:
            (_, conv, _, _, _, cmid, kind, text, meta_json, _), = records
            return ("send", conv, cmid, text, kind, meta_json)
        (_slots, payload_json, _), = self.plane.take_deliveries()
        typing = json.loads(payload_json)
        return ("typing", typing["conv"], typing["on"])


def _same(native: tuple[Any, ...], ref: tuple[Any, ...] | None) -> bool:
    if ref is None or native[0] != ref[0]:
        return False
    if native[0] != "send":
        return native == ref
    if native[:5] != ref[:5]:
        return False
    # meta_json: the same value (Python writes floats as repr, Rust as ryu: "1e+16" vs "1e16").
    return (native[-1] is None) == (ref[-1] is None) and (
        native[-1] is None or json.loads(native[-1]) == json.loads(ref[-1]))


def _corpus() -> list[dict[str, Any]]:
    return [json.loads(line) for line in CORPUS.read_text().splitlines()]


@pytest.mark.parametrize("row", _corpus(), ids=lambda row: row["why"])
def test_corpus(row: dict[str, Any]) -> None:
    payload = row["frame"].encode("utf-8", "surrogatepass")
    native = Plane().parse(payload, False)
    ref = parse_client_frame(payload, False)
    assert (native is not None) == (row["expect"] == "taken"), row["why"]
    if native is not None:
        assert _same(native, ref), (native, ref)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**65), max_value=2**65)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=4), children, max_size=5),
    max_leaves=12,
)
send_frames = st.fixed_dictionaries(
    {"t": st.sampled_from(["send", "send", "typing", "read", "hello"])},
    optional={
        "conv": st.sampled_from([CONV, 0, -1, 2**53, 1.5, True, "7", None]),
        "cmid": st.text(max_size=70) | st.integers(),
        "text": st.text(max_size=40) | st.none() | st.integers(),
        "kind": st.sampled_from(["text", "image", "file", "video", None]),
        "meta": json_values,
        "on": st.booleans() | st.integers(0, 1),
        "seq": st.integers(-1, 3),
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame=send_frames)
def test_generated_json_frames_agree(frame: dict[str, Any]) -> None:
    payload = json.dumps(frame).encode()  # NaN/Infinity and \udXXX escapes come out as hostile JSON
    native = Plane().parse(payload, False)
    ref = parse_client_frame(payload, False)
    if native is not None:
        assert _same(native, ref), (frame, native, ref)


binary_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8) | st.binary(max_size=4),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cmid=st.text(max_size=70) | st.binary(max_size=3), text=st.text(max_size=40) | st.binary(max_size=3),
       meta=binary_values, kind=st.sampled_from(["text", "file", "video"]), conv=st.sampled_from([CONV, 2**53]))
def test_generated_binary_sends_agree(cmid: Any, text: Any, meta: Any, kind: str, conv: int) -> None:
    try:
        payload = reference_codec.encode_frame({"t": "send", "conv": conv, "cmid": cmid, "text": text,
                                                "kind": kind, "meta": meta})
    except reference_codec.FrameError:
        return
    native = Plane().parse(payload, True)
    ref = parse_client_frame(payload, True)
    if native is not None:
        assert _same(native, ref), (native, ref)
    if ref is None:
        assert native is None


def test_frames_are_byte_identical_to_the_hubs() -> None:
    plane = Plane()
    plane.plane.conversation(CONV, "assigned", "a_1", 8)  # seqs 1–8 went out before
    meta = {"order": 42, "items": [1, 2.5, None, True, "你好"], "nested": {"k": "v\n\"q\""}}
    frame = {"t": "send", "conv": CONV, "cmid": "c\t1", "text": "订单\u0001 \"x\"", "kind": "image", "meta": meta}
    assert plane.plane.handle(VISITOR, json.dumps(frame).encode(), False, 1.0, 1.0)
    (token, *_), = plane.plane.take_records()
    ts = 1764400000.123456
    plane.plane.on_outcomes([(token, CONV, 9, ts, "created")])
    (ack_slots, ack_json, ack_bin), (msg_slots, msg_json, msg_bin) = plane.plane.take_deliveries()
    assert ack_slots == [VISITOR] and ack_bin is None
    assert ack_json == compiled.encode_json({"t": "ack", "cmid": "c\t1", "conv": CONV, "seq": 9, "ts": ts})
    expected = _message_frame(CONV, 9, "c\t1", "v_1", "visitor", "Ann", frame["text"], "image", meta, ts)
    assert msg_slots == [VISITOR, AGENT]
    assert msg_json == compiled.encode_json(expected)
    assert msg_bin == compiled.encode_frame(expected)
    # Typing, to the agent only (never back to the sender), binary there.
    assert plane.plane.handle(VISITOR, b'{"t":"typing","conv":7,"on":true}', False, 1.0, 100.0)
    (slots, typing_json, typing_bin), = plane.plane.take_deliveries()
    typing = {"t": "typing", "conv": CONV, "on": True, "from": {"id": "v_1", "role": "visitor", "name": "Ann"}}
    assert slots == [AGENT]
    assert typing_json == compiled.encode_json(typing) and typing_bin == compiled.encode_frame(typing)


def test_delivery_rules_with_a_scripted_writer() -> None:
    plane = Plane().plane
    send = b'{"t":"send","conv":7,"cmid":"a","text":"x"}'
    assert plane.handle(VISITOR, send, False, 1.0, 1.0)
    assert plane.take_deliveries() == [], "no ack before the commit"
    (token, *_), = plane.take_records()
    plane.on_outcomes([(token, CONV, 2, 5.0, "created")])
    assert [json.loads(j)["t"] for _, j, _ in plane.take_deliveries()] == ["ack"], "seq 2 waits for seq 1"
    assert plane.stuck() == [(CONV, 0, 2)]
    plane.deliver(CONV, 1, 4.0, "a_1", "agent", None, "first", "text", "hello", None)
    assert [json.loads(j)["seq"] for _, j, _ in plane.take_deliveries()] == [1, 2]
    assert plane.fanned_seq(CONV) == 2
    # A retried cmid: acked with its seq, delivered to nobody.
    assert plane.handle(VISITOR, send, False, 1.0, 2.0)
    (token, *_), = plane.take_records()
    plane.on_outcomes([(token, CONV, 2, 5.0, "duplicate")])
    (slots, ack, _), = plane.take_deliveries()
    assert slots == [VISITOR] and json.loads(ack)["seq"] == 2
    # The sender left and its slot was reused: the outcome is not acked to the newcomer.
    assert plane.handle(VISITOR, b'{"t":"send","conv":7,"cmid":"b","text":"y"}', False, 1.0, 3.0)
    (token, *_), = plane.take_records()
    plane.connection_gone(VISITOR)
    plane.connection(VISITOR, "v_2", "visitor", None, False)
    plane.on_outcomes([(token, CONV, 3, 6.0, "created")])
    (slots, _, msg), = plane.take_deliveries()
    assert slots == [AGENT] and msg is not None
    stats = plane.stats()
    assert (stats["submitted"], stats["acked"], stats["deduplicated"], stats["in_flight"]) == (3, 3, 1, 0)


def test_latency_is_recorded_natively_in_the_metrics_buckets() -> None:
    assert tuple(compiled.DATAPLANE_LATENCY_BOUNDS) == LATENCY_BUCKETS
    plane = Plane().plane
    empty = plane.latency_histograms()
    assert empty == {"ack": ([0] * (len(LATENCY_BUCKETS) + 1), 0.0), "fanout": ([0] * (len(LATENCY_BUCKETS) + 1), 0.0)}
    for seq, cmid in ((1, "a"), (2, "b")):
        assert plane.handle(VISITOR, b'{"t":"send","conv":7,"cmid":"%s","text":"x"}' % cmid.encode(), False, 1.0, 1.0)
        (token, *_), = plane.take_records()
        time.sleep(0.002)  # the ack latency includes the commit: at least this long
        plane.on_outcomes([(token, CONV, seq, 5.0, "created")])
    assert len(plane.take_deliveries()) == 4  # two acks, two msgs (the deliveries are written now)
    ack_counts, ack_sum = plane.latency_histograms()["ack"]
    fanout_counts, fanout_sum = plane.latency_histograms()["fanout"]
    assert sum(ack_counts) == 2 and ack_sum >= 0.004
    assert sum(ack_counts[:bisect.bisect_left(LATENCY_BUCKETS, 0.002)]) == 0, "below the commit time"
    assert sum(fanout_counts) == 2 and fanout_sum >= 0.0

    # The process histogram adds them to Python's own observations when it is read.
    histogram = Histogram("h", "h")
    histogram.observe(0.0001)
    histogram.native = lambda: plane.latency_histograms()["ack"]
    assert histogram.count == 3 and histogram.total == pytest.approx(0.0001 + ack_sum)
    assert histogram.counts[1] == 1 + ack_counts[1]


def test_refusals_go_back_to_python() -> None:
    plane = Plane().plane
    other = b'{"t":"send","conv":8,"cmid":"a","text":"x"}'
    assert not plane.handle(VISITOR, other, False, 1.0, 1.0), "no grant on conversation 8"
    assert not plane.handle(5, b'{"t":"send","conv":7,"cmid":"a","text":"x"}', False, 1.0, 1.0), "no such slot"
    plane.conversation(CONV, "closed", "a_1", 0)
    assert not plane.handle(VISITOR, b'{"t":"send","conv":7,"cmid":"a","text":"x"}', False, 1.0, 1.0)
    plane.close()
    plane.conversation(CONV, "assigned", "a_1", 0)
    assert plane.handle(VISITOR, b'{"t":"send","conv":7,"cmid":"a","text":"x"}', False, 1.0, 1.0)
    (_slots, error, _), = plane.take_deliveries()
    assert json.loads(error) == {"t": "error", "code": "unavailable",
                                 "msg": "storage unavailable; nothing was stored, retry later", "ref": "a"}
    with pytest.raises(ValueError):
        plane.conversation(CONV, "sleeping", None, 0)


async def test_sends_are_stored_through_the_native_journal(tmp_path: Path) -> None:
    """The real sink: records go Rust to Rust into the journal, the eventfd fires once the batch is
    committed, `pump` acks and fans out, and storage reads the rows back (seq, text, meta, retry)."""
    import select

    from kefu.storage.sqlite import SqliteStorage

    storage = SqliteStorage(tmp_path / "kefu.db")
    await storage.open()
    try:
        from journal_plane import plane_on_journal

        plane, fd, conv, _visitor = await plane_on_journal(storage)
        for cmid in ("m1", "m2", "m1"):
            frame = {"t": "send", "conv": conv.id, "cmid": cmid, "text": f"text {cmid}", "meta": {"n": 1}}
            assert plane.handle(VISITOR, json.dumps(frame).encode(), False, 1.0, 1.0)
        assert plane.take_records() == [], "nothing for a Python writer"
        acked = 0
        while acked < 3:
            assert select.select([fd], [], [], 10)[0], "the journal never signalled"
            acked += plane.pump()[0]
        frames = [json.loads(payload) for _, payload, _ in plane.take_deliveries()]
        assert [(f["t"], f["seq"]) for f in frames] == [("ack", 1), ("msg", 1), ("ack", 2), ("msg", 2), ("ack", 1)]
        stored = await storage.messages_after(conv.id, 0, 10)
        assert [(m.seq, m.cmid, m.text, m.meta) for m in stored] == [(1, "m1", "text m1", {"n": 1}),
                                                                     (2, "m2", "text m2", {"n": 1})]
        plane.close()
        plane.close()  # idempotent
        assert plane.handle(VISITOR, json.dumps({"t": "send", "conv": conv.id, "cmid": "m3", "text": "x"}).encode(),
                            False, 1.0, 1.0)
        (_, error, _), = plane.take_deliveries()
        assert json.loads(error)["code"] == "unavailable", "a closed data plane refuses, nothing is stored"
        assert not storage.journal.closed, "the journal is storage's: the data plane does not close it"
    finally:
        await storage.close()
