"""The native mood pipe against its reference (onnxruntime + MoodTracker) on the same inputs, and
the data plane's hand-over of visitor texts to it (docs/sentiment.md, "How the server uses it")."""

from __future__ import annotations

import random
import select
import time
from importlib import resources

import numpy as np
import pytest
from kefu import compiled
from kefu.sentiment import MoodTracker, SentimentModel

HOSTILE = ["", " ", "\x00", "\ud800 lone surrogate", "😡" * 300, "a" * 100_000, "NOT GOOD!!!", "不" * 2000,
           "didn't help at all", "\u202e\u200b", "0123456789" * 50]


def _eval_lines(language: str) -> list[str]:
    text = resources.files("kefu.sentiment").joinpath(f"data/chat_eval_{language}.tsv").read_text("utf-8")
    return [line.split("\t")[2] for line in text.splitlines() if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def model() -> SentimentModel:
    return SentimentModel.load()


@pytest.fixture()
def pipe(model: SentimentModel):
    pipe = model.mood_pipe()
    yield pipe
    pipe.close()


def _wait(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the mood thread did not catch up"
        time.sleep(0.005)


def test_native_scores_equal_onnxruntime_on_chat_lines_and_hostile_text(model, pipe) -> None:
    texts = _eval_lines("zh") + _eval_lines("en") + HOSTILE
    reference = model.predict_batch(texts)
    native = np.array([pipe.score(text) for text in texts], dtype=np.float32)
    assert len(texts) > 600
    # Same float32 operations in the same order; only the reduction order inside onnxruntime may differ.
    np.testing.assert_allclose(native, reference, rtol=0, atol=2e-6)
    # Not a constant: the lines span the whole range, so the comparison means something.
    assert native.min() < 0.05 and native.max() > 0.95


def test_native_tracker_equals_the_reference_tracker(pipe) -> None:
    rng = random.Random(20261129)
    reference = MoodTracker()
    for _ in range(2_000):
        conv = rng.randrange(1, 40)
        p_neg = rng.choice([rng.random(), 0.0, 1.0, 0.7, 0.5])
        expected = reference.update(conv, p_neg)
        mood, angry, turned = pipe.update(conv, p_neg)
        assert mood == pytest.approx(expected.mood, abs=1e-12)
        assert (angry, turned) == (expected.angry, expected.turned_angry)
    for conv in range(1, 40):
        assert pipe.mood(conv) == pytest.approx(reference.mood(conv), abs=1e-12)
    pipe.forget(3)
    assert pipe.mood(3) is None


def test_an_armed_conversation_alerts_once_on_the_eventfd(pipe) -> None:
    pipe.arm(7, 0.7)
    pipe.arm(8, None)
    assert pipe.submit(7, "麻烦帮我查一下订单号")
    assert pipe.submit(8, "垃圾服务，再不处理我就去投诉！")
    _wait(lambda: pipe.stats()["scored"] == 2)
    assert pipe.take_alerts() == []
    angry = ["都等了五天了还没发货，你们到底怎么回事！", "客服一直敷衍我，太让人生气了",
             "垃圾服务，再不处理我就去投诉！"]
    for text in angry:
        pipe.submit(7, text)
    ready, _, _ = select.select([pipe.fileno()], [], [], 5.0)
    assert ready, "the eventfd woke the reader"
    _wait(lambda: pipe.stats()["scored"] == 5)
    alerts = pipe.take_alerts()
    assert [conv for conv, _ in alerts] == [7] and alerts[0][1] >= 0.7
    assert alerts[0][1] == pytest.approx(pipe.mood(7))
    pipe.submit(7, "垃圾服务！！！")
    _wait(lambda: pipe.stats()["scored"] == 6)
    assert pipe.take_alerts() == [], "disarmed after firing until re-armed"
    assert pipe.stats()["alerts"] == 1 and pipe.stats()["turned_angry"] >= 1


def test_a_closed_pipe_counts_what_it_could_not_take(model) -> None:
    pipe = model.mood_pipe()
    pipe.submit(1, "hello")
    pipe.close()  # scores what was handed over first
    assert pipe.stats()["scored"] == 1
    assert not pipe.submit(1, "late")
    assert pipe.stats()["dropped"] == 1


def test_bad_tables_are_refused(model) -> None:
    with pytest.raises(ValueError):
        compiled.MoodPipe(np.zeros((16, 3), dtype=np.uint16), [0.0, 0.0, 0.0], bits=5, lexicon={})
    with pytest.raises(ValueError):
        compiled.MoodPipe(np.zeros((16, 2), dtype=np.uint16), [0.0, 0.0, 0.0], bits=4, lexicon={})
    with pytest.raises(ValueError):
        compiled.MoodPipe(np.zeros((16, 3), dtype=np.uint16), [0.0, 0.0, 0.0], bits=4, lexicon={}, alpha=0.0)


def test_the_data_plane_hands_visitor_texts_over_after_each_batch(pipe) -> None:
    plane = compiled.DataPlane(max_text_bytes=8192, max_cmid_len=64, typing_interval_s=1.0)
    plane.use_mood(pipe)
    plane.connection(1, "v_1", "visitor", None, False)
    plane.connection(2, "a_1", "agent", None, False)
    plane.conversation(40, "assigned", "a_1", 0)
    plane.grant(1, 40)
    plane.grant(2, 40)
    for slot, cmid, text in [(1, "c1", "退款太慢了！"), (2, "c2", "我来帮您查"), (1, "c3", "好的谢谢")]:
        assert plane.handle(slot, f'{{"t":"send","conv":40,"cmid":"{cmid}","text":"{text}"}}'.encode(),
                            False, time.time(), time.monotonic())
    records = plane.take_records()
    plane.on_outcomes([(record[0], 40, seq, time.time(), "created") for seq, record in enumerate(records, 1)])
    _wait(lambda: pipe.stats()["scored"] == 2)  # the agent's line is not a visitor's
    expected = MoodTracker()
    expected.update(40, pipe.score("退款太慢了！"))
    assert pipe.mood(40) == pytest.approx(expected.update(40, pipe.score("好的谢谢")).mood, abs=1e-9)
