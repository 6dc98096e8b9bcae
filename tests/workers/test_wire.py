"""The ring records of the hot path: the Rust layouts (native/shmring/src/records.rs, used by
RingForwarder and WorkerRouter) against their Python twin in kefu.workers.wire, on the same bytes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from kefu import compiled
from kefu.workers import wire

u32 = st.integers(0, 2**32 - 1)


@given(binary=st.booleans(), worker=st.integers(0, 2**16 - 1), generation=u32, slot=u32, serial=u32,
       wall=st.floats(allow_nan=False), mono=st.floats(allow_nan=False), payload=st.binary(max_size=300))
def test_frame_record_round_trips(binary, worker, generation, slot, serial, wall, mono, payload) -> None:
    record = wire.FrameRecord(binary, worker, generation, slot, serial, wall, mono, payload)
    data = wire.encode_frame_record(record)
    assert wire.decode_frame_record(data) == record
    assert wire.decode_frame_record(data[:31]) is None
    assert wire.decode_frame_record(wire.encode("up", 0, 1, 2)) is None


@given(targets=st.lists(st.tuples(u32, u32), max_size=20), json_payload=st.binary(max_size=200),
       binary_payload=st.binary(max_size=200))
def test_delivery_record_round_trips(targets, json_payload, binary_payload) -> None:
    data = wire.encode_delivery_record(targets, json_payload, binary_payload)
    assert wire.decode_delivery_record(data) == (targets, json_payload, binary_payload)
    assert wire.decode_delivery_record(data[:-1] if data[-1:] else data + b"x") is None


def test_the_router_writes_what_the_twin_reads_and_feeds_what_the_twin_writes() -> None:
    """Rust encodes a delivery that Python decodes, and Rust decodes a frame record Python encoded:
    a text send of a connection the router knows reaches the data plane's sink."""
    plane = compiled.DataPlane(max_text_bytes=1000, max_cmid_len=64, typing_interval_s=1.0)
    router = compiled.WorkerRouter()
    ring = compiled.ShmRing.create(256, 64)
    router.attach(1, 9, ring)
    router.map(0, 1, 17, 4242)  # data-plane slot 0 = worker 1's slot 17, serial 4242
    plane.connection(0, "v1", "visitor", None, False)
    plane.conversation(77, "assigned", "a1", 0)
    plane.grant(0, 77)
    send = b'{"t":"send","conv":77,"cmid":"c1","text":"hi"}'
    typing = b'{"t":"typing","conv":77,"on":true}'
    records = [
        wire.encode_frame_record(wire.FrameRecord(False, 1, 9, 17, 4242, 1.0, 2.0, send)),
        wire.encode_frame_record(wire.FrameRecord(False, 1, 9, 17, 999, 1.0, 2.0, send)),  # stale serial
        wire.encode_frame_record(wire.FrameRecord(False, 1, 8, 17, 4242, 1.0, 2.0, send)),  # dead worker
        wire.encode("gone", 1, 9, 4242),  # a control record: Python's turn
        wire.encode_frame_record(wire.FrameRecord(False, 1, 9, 17, 4242, 1.0, 2.0, b"{not json")),
    ]
    assert router.feed(plane, records, 0) == 3
    assert router.dropped == 2
    assert router.feed(plane, records, 4) == 4  # the data plane declines a malformed frame
    queued = plane.take_records()
    assert [(r[0] >= 0, r[1], r[2], r[5], r[7]) for r in queued] == [(True, 77, "v1", "c1", "hi")]
    # A typing relay is a delivery to everyone granted but the sender: grant a second connection.
    router.map(1, 1, 18, 5)
    plane.connection(1, "a1", "agent", "Ann", False)
    plane.grant(1, 77)
    typing_record = wire.encode_frame_record(wire.FrameRecord(False, 1, 9, 17, 4242, 1.0, 2.0, typing))
    assert router.feed(plane, [typing_record], 0) == 1
    assert router.route(plane) is False
    (delivery,) = ring.drain(10)
    targets, json_payload, binary_payload = wire.decode_delivery_record(delivery)
    assert targets == [(18, 5)] and binary_payload == b""
    assert b'"t":"typing"' in json_payload and b'"conv":77' in json_payload
    # Control records share the ring, after the deliveries, in order.
    assert router.send(1, wire.encode("sites", {})) is False
    assert wire.decode(ring.drain(10)[0]) == ("sites", {})
