"""The worked example of docs/routing.md: `python -m kefu.routing.example` prints its inputs and
the decision records the engine produces (timings vary from run to run; everything else is fixed).

The second part, `run_mood`, scores real Chinese chat lines with the bundled sentiment model
(docs/sentiment.md) and shows the mood steering routing: a conversation of polite questions stays
with the agent it was given; one whose visitor turns angry is escalated to a de-escalator.
"""

from __future__ import annotations

import json

from kefu.routing import AgentProfile, Assign, RouteRequest, RoutingEngine

SHANGHAI = (31.2304, 121.4737)
HANGZHOU = (30.2741, 120.1551)
BEIJING = (39.9042, 116.4074)

AGENTS = (
    AgentProfile("li", 1, skills={"billing/refund/card": 0.9}, capacity=1, languages=("zh",),
                 geo=BEIJING, deescalation=0.4),
    AgentProfile("wang", 1, skills={"billing": 1.0, "tech": 0.6}, capacity=2, languages=("zh", "en"),
                 geo=SHANGHAI, deescalation=0.9),
    AgentProfile("chen", 1, skills={"billing/refund": 0.8}, capacity=1, languages=("zh",),
                 geo=HANGZHOU, deescalation=0.2),
    AgentProfile("smith", 1, skills={"billing/refund/card": 1.0}, capacity=2, languages=("en",),
                 geo=SHANGHAI, deescalation=0.7),
)
REQUEST = RouteRequest(conv_id=1001, site_id=1, skill_path="billing/refund/card", lang="zh",
                       visitor_geo=SHANGHAI, p_neg=0.8)
LATER = RouteRequest(conv_id=1002, site_id=1, skill_path="billing/refund/card", lang="zh",
                     visitor_geo=HANGZHOU, p_neg=0.1)


def run() -> list[dict[str, object]]:
    """Decision dicts: REQUEST at t=300 s goes to the only exact match (who accepts); LATER at t=305 s waits
    (that agent is full); the tick at t=335 s reaches ring 1, where ancestor skills count, and
    assigns it."""
    engine = RoutingEngine()
    for agent in AGENTS:
        engine.agent_online(agent, 0.0)
    first = engine.conversation_opened(REQUEST, 300.0)
    engine.conversation_accepted(REQUEST.conv_id, "li", 302.0)
    second = engine.conversation_opened(LATER, 305.0)
    (relaxed,) = [outcome for outcome in engine.tick(335.0) if isinstance(outcome, Assign)]
    return [first.decision.to_dict(), second.decision.to_dict(), relaxed.decision.to_dict()]


MOOD_AGENTS = (
    AgentProfile("zhao", 1, skills={"orders": 1.0}, capacity=4, languages=("zh",), geo=SHANGHAI,
                 deescalation=0.3),
    AgentProfile("wang", 1, skills={"orders": 0.8}, capacity=4, languages=("zh",), geo=SHANGHAI,
                 deescalation=0.9),
)
POLITE_OPENING = "您好，想问一下我上周买的空气净化器发货了没有？"
POLITE_FOLLOW_UPS = ("单号是多少呀，我想自己查一下", "那大概周几能送到？", "好的，麻烦你了")
ANGRY_FOLLOW_UPS = ("等了整整一周还没发货，你们到底在干什么！", "每次问都说在处理，耍我玩呢？太气人了",
                    "再不解决我就去投诉，什么垃圾商家")


def run_mood() -> list[dict[str, object]]:
    """Two Chinese conversations open with the same kind of polite question and go to zhao (best
    skill, weak de-escalator). Each visitor message is scored by the bundled model and folded into the
    conversation's mood as the server does (MoodTracker, then `sentiment_changed`); the polite one
    stays with zhao, the angry one is escalated to wang. Returns one row per message: the text, its
    p_neg, the mood after it, and the agent then holding the conversation."""
    from kefu.sentiment import MoodTracker, SentimentModel

    model = SentimentModel.load()
    moods = MoodTracker()
    engine = RoutingEngine()
    for agent in MOOD_AGENTS:
        engine.agent_online(agent, 0.0)
    rows: list[dict[str, object]] = []
    for conv_id, follow_ups in ((2001, POLITE_FOLLOW_UPS), (2002, ANGRY_FOLLOW_UPS)):
        now = 100.0 * conv_id
        p_neg = model.predict(POLITE_OPENING)
        mood = moods.update(conv_id, p_neg).mood
        request = RouteRequest(conv_id=conv_id, site_id=1, skill_path="orders", lang="zh",
                               visitor_geo=SHANGHAI, p_neg=mood)
        holder = engine.conversation_opened(request, now).decision.agent_id
        assert holder is not None, "both agents are free: the opening is always assigned"
        engine.conversation_accepted(conv_id, holder, now + 1)
        rows.append({"conv": conv_id, "text": POLITE_OPENING, "p_neg": round(p_neg, 3), "mood": round(mood, 3),
                     "agent": holder, "reason": "scored"})
        for step, text in enumerate(follow_ups, 2):
            p_neg = model.predict(text)
            mood = moods.update(conv_id, p_neg).mood
            reason = None
            for outcome in engine.sentiment_changed(conv_id, mood, now + step):
                if isinstance(outcome, Assign):
                    holder, reason = outcome.agent_id, outcome.decision.reason
            rows.append({"conv": conv_id, "text": text, "p_neg": round(p_neg, 3), "mood": round(mood, 3),
                         "agent": holder, "reason": reason})
    return rows


def main() -> None:
    for agent in AGENTS:
        print(agent)
    print(REQUEST)
    print(LATER)
    for decision in run():
        print(json.dumps(decision, ensure_ascii=False))
    print("\nMood (bundled sentiment model, Chinese):")
    for agent in MOOD_AGENTS:
        print(agent)
    for row in run_mood():
        print(json.dumps(row, ensure_ascii=False))


if __name__ == "__main__":
    main()
