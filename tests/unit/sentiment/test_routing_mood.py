"""The Chinese mood part of the routing example (`python -m kefu.routing.example`), with the real model."""

from __future__ import annotations

from kefu.routing.example import ANGRY_FOLLOW_UPS, POLITE_FOLLOW_UPS, run_mood


def test_polite_conversation_stays_and_angry_one_is_escalated() -> None:
    rows = run_mood()
    polite = [row for row in rows if row["conv"] == 2001]
    angry = [row for row in rows if row["conv"] == 2002]
    assert len(polite) == 1 + len(POLITE_FOLLOW_UPS) and len(angry) == 1 + len(ANGRY_FOLLOW_UPS)
    # Both open with the same calm question and go to the best-skilled agent, a weak de-escalator.
    assert polite[0]["agent"] == angry[0]["agent"] == "zhao"
    assert all(row["agent"] == "zhao" and row["mood"] < 0.5 for row in polite)
    # The angry visitor's mood crosses the threshold on the third complaint (EWMA, alpha 0.4), not before.
    assert [row["agent"] for row in angry] == ["zhao", "zhao", "zhao", "wang"]
    assert angry[-1]["reason"] == "escalation" and angry[-1]["mood"] >= 0.7
    assert all(row["p_neg"] > 0.7 for row in angry[1:])
