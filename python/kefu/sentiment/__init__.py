"""On-box sentiment: the bundled bilingual (zh + en) ONNX model and per-conversation mood smoothing.

    model = SentimentModel.load()          # bundled model, once per process
    p_neg = model.predict("退款太慢了！")    # probability the visitor is upset
    update = MoodTracker().update(conversation_id, p_neg)

Training lives in ``kefu.sentiment.train`` (dev dependencies only), with its generated chat lines in
``kefu.sentiment.chatgen``; see docs/sentiment.md.
"""

from kefu.sentiment.model import ModelError, MoodTracker, MoodUpdate, SentimentModel

__all__ = ["ModelError", "MoodTracker", "MoodUpdate", "SentimentModel"]
