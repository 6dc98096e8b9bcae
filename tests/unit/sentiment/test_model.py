"""The bundled sentiment model, loaded for real: wiring, batch/single agreement, version guard, mood."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import onnx
import pytest
from kefu.compiled import FEATURIZER_VERSION
from kefu.sentiment import ModelError, MoodTracker, SentimentModel

# Obvious lines only: this checks that featuriser, lexicon and graph are wired together correctly,
# not the model's accuracy (that is measured on the held-out split by `make model`).
ANGRY = [
    "太差了，我要投诉！",
    "垃圾产品，质量太差，退货！",
    "客服态度非常差，很失望",
    "This is terrible, I hate this awful service.",
    "Worst experience ever. I am so angry and disappointed.",
    "Your product is useless garbage, give me a refund!",
]
POLITE = [
    "非常好，谢谢你的帮助！",
    "质量很好，很满意，推荐",
    "客服很耐心，非常感谢",
    "Thank you so much, you were very helpful!",
    "Great service, I love it. Thanks!",
    "Wonderful, that solved my problem, thanks a lot.",
]


@pytest.fixture(scope="module")
def model() -> SentimentModel:
    return SentimentModel.load()


def test_bundled_model_matches_compiled_featurizer(model: SentimentModel) -> None:
    assert model.featurizer_version == FEATURIZER_VERSION
    assert model.classes == ("neg", "neu", "pos")


def test_load_is_cached_per_process(model: SentimentModel) -> None:
    assert SentimentModel.load() is model


@pytest.mark.parametrize("text", ANGRY)
def test_angry_lines_score_negative(model: SentimentModel, text: str) -> None:
    assert model.predict(text) > 0.5


@pytest.mark.parametrize("text", POLITE)
def test_polite_lines_score_not_negative(model: SentimentModel, text: str) -> None:
    assert model.predict(text) < 0.5


def test_batch_equals_single(model: SentimentModel) -> None:
    texts = ANGRY + POLITE + ["", "ok", "x" * 5000]
    batch = model.predict_batch(texts)
    assert batch.dtype == np.float32 and batch.shape == (len(texts),)
    singles = np.array([model.predict(text) for text in texts], dtype=np.float32)
    np.testing.assert_allclose(batch, singles, rtol=0, atol=1e-6)
    assert np.all((batch >= 0) & (batch <= 1))


def test_probabilities_sum_to_one_and_p_neg_is_first(model: SentimentModel) -> None:
    texts = ANGRY[:2] + POLITE[:2]
    probs = model.predict_proba(texts)
    assert probs.shape == (4, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs[:, 0], model.predict_batch(texts), atol=1e-7)


def test_empty_batch(model: SentimentModel) -> None:
    assert model.predict_batch([]).shape == (0,)
    assert model.predict_proba([]).shape == (0, 3)


def _bundled_onnx() -> onnx.ModelProto:
    return onnx.load_from_string(
        resources.files("kefu.sentiment").joinpath("model/sentiment.onnx").read_bytes()
    )


def test_refuses_other_featurizer_version(tmp_path) -> None:
    proto = _bundled_onnx()
    for prop in proto.metadata_props:
        if prop.key == "featurizer_version":
            prop.value = "kefu-textfeat-0/other"
    path = tmp_path / "old.onnx"
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(ModelError, match="featuriser"):
        SentimentModel.load(path)


def test_refuses_missing_metadata(tmp_path) -> None:
    proto = _bundled_onnx()
    kept = [prop for prop in proto.metadata_props if prop.key != "bits"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    path = tmp_path / "nobits.onnx"
    path.write_bytes(proto.SerializeToString())
    with pytest.raises(ModelError, match="incomplete"):
        SentimentModel.load(path)


def test_refuses_garbage_file(tmp_path) -> None:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"not a model")
    with pytest.raises(ModelError):
        SentimentModel.load(path)


def test_model_card_describes_the_bundled_file() -> None:
    import hashlib

    card_text = (
        resources.files("kefu.sentiment").joinpath("model/model_card.json").read_text(encoding="utf-8")
    )
    card = json.loads(card_text)
    model_bytes = resources.files("kefu.sentiment").joinpath("model/sentiment.onnx").read_bytes()
    assert card["sha256"] == hashlib.sha256(model_bytes).hexdigest()
    assert card["featurizer_version"] == FEATURIZER_VERSION
    assert set(card["metrics_test"]) == {"zh", "en", "generated_test", "chat_eval"}


def test_mood_first_message_sets_mood_and_can_flag() -> None:
    tracker = MoodTracker(alpha=0.5, angry_threshold=0.7)
    first = tracker.update("c1", 0.9)
    assert first.mood == pytest.approx(0.9) and first.angry and first.turned_angry
    again = tracker.update("c1", 0.9)
    assert again.angry and not again.turned_angry


def test_mood_ewma_turns_angry_once_with_hysteresis() -> None:
    tracker = MoodTracker(alpha=0.5, angry_threshold=0.7, calm_threshold=0.5)
    assert not tracker.update("c", 0.2).angry
    moods = [tracker.update("c", 1.0) for _ in range(3)]
    assert [round(update.mood, 4) for update in moods] == [0.6, 0.8, 0.9]
    assert [update.turned_angry for update in moods] == [False, True, False]
    # Dropping to 0.6 (>= calm threshold) keeps the flag: no repeated escalation near the threshold.
    hovering = tracker.update("c", 0.3)
    assert hovering.mood == pytest.approx(0.6) and hovering.angry and not hovering.turned_angry
    calm = tracker.update("c", 0.0)
    assert calm.mood == pytest.approx(0.3) and not calm.angry
    assert tracker.update("c", 1.0).mood == pytest.approx(0.65)
    assert tracker.update("c", 1.0).turned_angry


def test_mood_conversations_are_independent_and_bounded() -> None:
    tracker = MoodTracker(max_conversations=2)
    tracker.update("a", 0.9)
    tracker.update("b", 0.1)
    assert tracker.mood("a") == pytest.approx(0.9) and tracker.mood("b") == pytest.approx(0.1)
    tracker.update("c", 0.5)
    assert len(tracker) == 2 and tracker.mood("a") is None
    tracker.forget("b")
    assert tracker.mood("b") is None and len(tracker) == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alpha": 0.0},
        {"alpha": 1.5},
        {"angry_threshold": 0.4, "calm_threshold": 0.5},
        {"max_conversations": 0},
    ],
)
def test_mood_rejects_bad_settings(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        MoodTracker(**kwargs)


# Service questions and complaints in Chinese, which the review-only model could not tell apart
# (both scored p_neg > 0.9): questions must land in the neutral class now.
QUESTIONS_ZH = ["麻烦帮我查一下订单号", "请问怎么修改收货地址？", "你们周日营业吗", "这款有没有白色的？"]
COMPLAINTS_ZH = ["退款太慢了！", "等了一个星期还没发货，太过分了", "什么破客服，半天不回"]


@pytest.mark.parametrize("text", QUESTIONS_ZH)
def test_chinese_questions_are_neutral(model: SentimentModel, text: str) -> None:
    probs = model.predict_proba([text])[0]
    assert model.classes[int(probs.argmax())] == "neu" and probs[0] < 0.5


@pytest.mark.parametrize("text", COMPLAINTS_ZH)
def test_chinese_complaints_are_negative(model: SentimentModel, text: str) -> None:
    assert model.predict(text) > 0.7
