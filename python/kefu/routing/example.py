"""The worked example of docs/routing.md: `python -m kefu.routing.example` prints its inputs and
the decision records the engine produces (timings vary from run to run; everything else is fixed).
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


def main() -> None:
    for agent in AGENTS:
        print(agent)
    print(REQUEST)
    print(LATER)
    for decision in run():
        print(json.dumps(decision, ensure_ascii=False))


if __name__ == "__main__":
    main()
