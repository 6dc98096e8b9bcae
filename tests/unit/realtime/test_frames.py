"""Validation of client frames."""

import pytest
from kefu.realtime import frames as F
from kefu.realtime.frames import ProtocolError


def code_of(call) -> str:
    with pytest.raises(ProtocolError) as error:
        call()
    return error.value.code


def test_conv_and_seq() -> None:
    assert F.conv_id({"conv": 5}) == 5
    for bad in (0, -1, 2**53, "5", 5.0, True, None):
        assert code_of(lambda: F.conv_id({"conv": bad})) == "bad_frame"
    assert F.seq_number({"seq": 0}) == 0
    assert code_of(lambda: F.seq_number({"seq": -1})) == "bad_frame"


def test_text_limits_count_utf8_bytes() -> None:
    assert F.text({"text": "é" * 4096}, 8192, required=True) == "é" * 4096
    assert code_of(lambda: F.text({"text": "é" * 4097}, 8192, required=True)) == "too_large"
    assert code_of(lambda: F.text({"text": "\ud800"}, 8192, required=True)) == "bad_frame"
    assert code_of(lambda: F.text({}, 8192, required=True)) == "bad_frame"
    assert F.text({}, 8192, required=False) is None


def test_cmid_kind_tags() -> None:
    assert F.cmid({"cmid": "x" * 64}, 64) == "x" * 64
    assert code_of(lambda: F.cmid({"cmid": "x" * 65}, 64)) == "bad_frame"
    assert code_of(lambda: F.cmid({"cmid": ""}, 64)) == "bad_frame"
    assert F.kind({}) == "text" and F.kind({"kind": "image"}) == "image"
    assert code_of(lambda: F.kind({"kind": "script"})) == "bad_frame"
    assert F.tags({"tags": ["billing/refund"]}) == ("billing/refund",)
    assert code_of(lambda: F.tags({"tags": ["x"] * 21})) == "bad_frame"


def test_meta_is_bounded_json() -> None:
    assert F.meta({"meta": {"a": [1, 2.5, None, {"b": "c"}]}}) == {"a": [1, 2.5, None, {"b": "c"}]}
    assert code_of(lambda: F.meta({"meta": {"a": {"b": {"c": {"d": {}}}}}})) == "bad_frame"
    assert code_of(lambda: F.meta({"meta": {str(i): i for i in range(33)}})) == "bad_frame"
    assert code_of(lambda: F.meta({"meta": {"x": float("nan")}})) == "bad_frame"
    assert code_of(lambda: F.meta({"meta": {"x": b"bytes"}})) == "bad_frame"
    assert code_of(lambda: F.meta({"meta": [1]})) == "bad_frame"


def test_resume_map() -> None:
    assert F.resume_map({"resume": {"12": 5, 13: 0}}) == {12: 5, 13: 0}
    assert F.resume_map({}) == {}
    for bad in ({"x": 1}, {"0": 1}, {"1": -1}, {"1": "2"}, [1]):
        assert code_of(lambda: F.resume_map({"resume": bad})) == "bad_frame"
