"""RoutingEngine scenarios with an injected clock; every scenario runs on the native kernel and on
the numpy reference twin."""

from __future__ import annotations

import json

import pytest
from kefu.compiled import score_agents
from kefu.reference.routing import score_agents_numpy
from kefu.routing import (
    AgentProfile,
    Assign,
    Queued,
    QueuePosition,
    Rejected,
    RouteRequest,
    RoutingConfig,
    RoutingEngine,
    Weights,
)

SITE = 1
SHANGHAI = (31.2304, 121.4737)
BEIJING = (39.9042, 116.4074)


@pytest.fixture(params=["native", "numpy"])
def make_engine(request):
    scorer = score_agents if request.param == "native" else score_agents_numpy

    def make(**config) -> RoutingEngine:
        return RoutingEngine(RoutingConfig(**config), scorer=scorer)

    return make


def agent(agent_id: str, **fields) -> AgentProfile:
    defaults = {"site_id": SITE, "skills": {"billing": 1.0}, "capacity": 2, "languages": ("en",),
                "geo": SHANGHAI, "deescalation": 0.5}
    return AgentProfile(agent_id, **{**defaults, **fields})


def conv(conv_id: int, **fields) -> RouteRequest:
    return RouteRequest(conv_id, fields.pop("site_id", SITE), **fields)


def test_scored_assignment_prefers_skill_then_geo(make_engine) -> None:
    engine = make_engine()
    engine.agent_online(agent("near-partial", skills={"billing": 1.0}), 0.0)
    engine.agent_online(agent("far-exact", skills={"billing/refund": 1.0}, geo=BEIJING), 0.0)
    outcome = engine.conversation_opened(conv(1, skill_path="billing/refund", visitor_geo=SHANGHAI), 1.0)
    assert isinstance(outcome, Assign) and outcome.agent_id == "far-exact"
    top = {row[0]: row for row in outcome.decision.top}
    assert "near-partial" not in top  # ring 0 requires the exact skill
    assert top["far-exact"][4] == pytest.approx(1.0)  # skill
    assert top["far-exact"][2] == pytest.approx(1 / 6)  # geo: Shanghai and Beijing share "w"


def test_least_loaded_then_longest_idle_then_registration_order(make_engine) -> None:
    # Load and fairness weights off, so the scores tie and only the tie-break order decides.
    engine = make_engine(weights=Weights(load=0.0, fairness=0.0))
    for name in ("a", "b", "c"):
        engine.agent_online(agent(name, capacity=4), 0.0)
    # Equal scores everywhere: registration order (lowest index) decides the first one.
    assert engine.conversation_opened(conv(1), 10.0).agent_id == "a"
    # "a" now has load 1/4; "b" and "c" are idle since registration at 0: lower index wins.
    assert engine.conversation_opened(conv(2), 20.0).agent_id == "b"
    # "c" has the lowest load ratio.
    assert engine.conversation_opened(conv(3), 30.0).agent_id == "c"
    engine.conversation_closed(1, 40.0)
    engine.conversation_closed(3, 40.0)
    # a and c both at 0 load; a was assigned at 10, c at 30: a has been idle longer.
    assert engine.conversation_opened(conv(4), 50.0).agent_id == "a"


def test_fairness_term_spreads_work_between_equal_agents(make_engine) -> None:
    engine = make_engine()
    engine.agent_online(agent("a", capacity=10), 0.0)
    engine.agent_online(agent("b", capacity=10), 0.0)
    chosen = [engine.conversation_opened(conv(i), 600.0 + i).agent_id for i in range(6)]
    assert chosen.count("a") == 3 and chosen.count("b") == 3


def test_capacity_is_respected_and_queue_reports_positions(make_engine) -> None:
    engine = make_engine()
    engine.agent_online(agent("solo", capacity=2), 0.0)
    assert isinstance(engine.conversation_opened(conv(1), 1.0), Assign)
    assert isinstance(engine.conversation_opened(conv(2), 2.0), Assign)
    third = engine.conversation_opened(conv(3), 3.0)
    fourth = engine.conversation_opened(conv(4), 4.0)
    assert isinstance(third, Queued) and third.position == 1
    assert isinstance(fourth, Queued) and fourth.position == 2
    assert third.decision.to_dict()["excluded"]["counts"] == {"at_capacity": 1}
    assert engine.agent_load("solo") == (2, 2)
    urgent = engine.conversation_opened(conv(5, priority=5), 5.0)
    assert isinstance(urgent, Queued) and urgent.position == 1
    assert engine.queue_position(3) == (2, pytest.approx(2 * 180 / 2))
    assert engine.queue_position(4)[0] == 3


def test_queue_drains_by_priority_then_age_when_capacity_frees(make_engine) -> None:
    engine = make_engine()
    engine.conversation_opened(conv(1), 1.0)
    engine.conversation_opened(conv(2), 2.0)
    engine.conversation_opened(conv(3, priority=1), 3.0)
    assert engine.queue_position(3)[0] == 1
    assert engine.queue_position(1)[1] is None  # nobody online: no ETA
    outcomes = engine.agent_online(agent("x", capacity=2), 10.0)
    assert [(o.conv_id, o.agent_id) for o in outcomes] == [(3, "x"), (1, "x")]
    assert all(o.decision.reason == "dequeued" for o in outcomes)
    assert engine.conversation_closed(3, 70.0)[0].conv_id == 2
    assert engine.queue_position(2) is None


def test_accept_timeout_reroutes_and_excludes_the_silent_agent(make_engine) -> None:
    engine = make_engine(accept_timeout_s=30.0)
    engine.agent_online(agent("slow", geo=SHANGHAI), 0.0)
    engine.agent_online(agent("other", geo=BEIJING), 0.0)
    first = engine.conversation_opened(conv(1, visitor_geo=SHANGHAI), 100.0)
    assert first.agent_id == "slow"
    assert engine.tick(129.0) == []
    outcomes = engine.tick(130.0)
    assert len(outcomes) == 1
    moved = outcomes[0]
    assert isinstance(moved, Assign) and moved.agent_id == "other" and moved.previous_agent == "slow"
    assert moved.decision.reason == "reroute:accept_timeout"
    assert moved.decision.to_dict()["excluded"]["counts"] == {"excluded": 1}
    assert engine.agent_load("slow") == (0, 2)
    assert not engine.conversation_accepted(1, "slow", 131.0)  # stale accept is ignored
    assert engine.conversation_accepted(1, "other", 131.0)
    assert engine.tick(1000.0) == []  # accepted: no more timeouts


def test_accept_timeout_with_nobody_else_queues(make_engine) -> None:
    engine = make_engine(accept_timeout_s=10.0)
    engine.agent_online(agent("only"), 0.0)
    engine.conversation_opened(conv(1), 0.0)
    (outcome,) = engine.tick(10.0)
    assert isinstance(outcome, Queued) and outcome.previous_agent == "only"
    assert outcome.decision.reason == "reroute:accept_timeout>queued:no_eligible_agent"


def test_agent_offline_reroutes_offers_and_optionally_active_chats(make_engine) -> None:
    for reroute_active in (False, True):
        engine = make_engine(reroute_active_on_offline=reroute_active)
        engine.agent_online(agent("leaving", geo=SHANGHAI), 0.0)
        engine.agent_online(agent("staying", geo=BEIJING), 0.0)
        engine.conversation_opened(conv(1, visitor_geo=SHANGHAI), 1.0)
        engine.conversation_opened(conv(2, visitor_geo=SHANGHAI), 2.0)
        assert engine.assigned_agent(1) == engine.assigned_agent(2) == "leaving"
        engine.conversation_accepted(1, "leaving", 3.0)
        outcomes = engine.agent_offline("leaving", 4.0)
        moved = {o.conv_id: o for o in outcomes}
        assert moved[2].agent_id == "staying"
        assert moved[2].decision.reason == "reroute:agent_offline"
        assert (1 in moved) is reroute_active
        assert engine.assigned_agent(1) == ("staying" if reroute_active else "leaving")


def test_returning_visitor_gets_the_sticky_agent_within_the_window(make_engine) -> None:
    engine = make_engine(sticky_window_s=3600.0)
    engine.agent_online(agent("remembered", geo=BEIJING), 0.0)
    engine.agent_online(agent("better-geo", geo=SHANGHAI), 0.0)
    first = engine.conversation_opened(conv(1, visitor_id="v1", preferred_agent="remembered"), 1.0)
    assert first.agent_id == "remembered" and first.decision.reason == "preferred"
    engine.conversation_closed(1, 100.0)
    again = engine.conversation_opened(conv(2, visitor_id="v1", visitor_geo=SHANGHAI), 200.0)
    assert again.agent_id == "remembered" and again.decision.reason == "sticky"
    engine.conversation_closed(2, 300.0)
    later = engine.conversation_opened(conv(3, visitor_id="v1", visitor_geo=SHANGHAI), 300.0 + 3601.0)
    assert later.agent_id == "better-geo" and later.decision.reason == "scored"


def test_sticky_agent_at_capacity_falls_back_to_scoring(make_engine) -> None:
    engine = make_engine()
    engine.agent_online(agent("busy", capacity=1), 0.0)
    engine.agent_online(agent("free"), 0.0)
    engine.conversation_opened(conv(1, preferred_agent="busy"), 1.0)
    outcome = engine.conversation_opened(conv(2, preferred_agent="busy"), 2.0)
    assert outcome.agent_id == "free" and outcome.decision.reason == "scored"


def test_transfer_to_agent_and_to_skill(make_engine) -> None:
    engine = make_engine()
    engine.agent_online(agent("first", skills={"billing": 1.0}), 0.0)
    engine.agent_online(agent("expert", skills={"tech/network": 0.9}), 0.0)
    engine.agent_online(agent("offline-one"), 0.0)
    engine.agent_offline("offline-one", 0.0)
    engine.conversation_opened(conv(1, skill_path="billing"), 1.0)
    assert engine.assigned_agent(1) == "first"

    refused = engine.transfer(1, 2.0, to_agent="offline-one")
    assert isinstance(refused, Rejected) and refused.reason == "transfer_target_unavailable:not_online"
    assert engine.assigned_agent(1) == "first"
    assert isinstance(engine.transfer(1, 2.0, to_agent="nobody"), Rejected)

    to_skill = engine.transfer(1, 3.0, to_skill="tech/network")
    assert isinstance(to_skill, Assign) and to_skill.agent_id == "expert"
    assert to_skill.previous_agent == "first" and to_skill.decision.reason == "transfer"
    assert engine.agent_load("first") == (0, 2)

    forged = engine.transfer(1, 4.0, to_agent="first", from_agent="first")  # "expert" holds it now
    assert isinstance(forged, Rejected) and forged.reason == "not_assigned_to_sender"
    back = engine.transfer(1, 4.0, to_agent="first", from_agent="expert")
    assert isinstance(back, Assign) and back.agent_id == "first" and back.previous_agent == "expert"


def test_escalation_moves_an_angry_visitor_to_a_strong_deescalator_once(make_engine) -> None:
    engine = make_engine()
    engine.agent_online(agent("calm-expert", deescalation=0.95, geo=BEIJING), 0.0)
    engine.agent_online(agent("novice", deescalation=0.1, geo=SHANGHAI), 0.0)
    engine.conversation_opened(conv(1, visitor_geo=SHANGHAI, p_neg=0.0), 1.0)
    assert engine.assigned_agent(1) == "novice"
    assert engine.sentiment_changed(1, 0.5, 2.0) == []  # below the angry threshold
    (moved,) = engine.sentiment_changed(1, 0.9, 3.0)
    assert moved.agent_id == "calm-expert" and moved.previous_agent == "novice"
    assert moved.decision.reason == "escalation"
    assert engine.sentiment_changed(1, 0.99, 4.0) == []  # escalates once


def test_escalation_threshold_says_when_a_mood_alert_is_worth_raising(make_engine) -> None:
    engine = make_engine()
    engine.agent_online(agent("calm-expert", deescalation=0.95, geo=BEIJING), 0.0)
    engine.agent_online(agent("novice", deescalation=0.1, geo=SHANGHAI), 0.0)
    engine.conversation_opened(conv(1, visitor_geo=SHANGHAI, p_neg=0.0), 1.0)
    assert engine.escalation_threshold(99) is None  # unknown conversation
    assert engine.escalation_threshold(1) == engine.site_config(SITE).angry_threshold
    assert engine.conversation_ids(SITE) == [1] and engine.conversation_ids(SITE + 1) == []
    engine.set_site_config(SITE, {"angry_threshold": 0.8})
    assert engine.escalation_threshold(1) == 0.8
    engine.sentiment_changed(1, 0.9, 2.0)
    assert engine.escalation_threshold(1) is None  # escalated once: never again
    engine.set_site_config(SITE, {"escalation": False})
    engine.conversation_opened(conv(2, visitor_geo=SHANGHAI), 3.0)
    assert engine.escalation_threshold(2) is None


def test_routing_reads_the_current_mood_through_mood_of(make_engine) -> None:
    """With the native mood pipe the engine hears alerts only; later decisions read moods live."""
    engine = make_engine()
    engine.set_site_config(SITE, {"escalation": False})
    engine.agent_online(agent("novice", deescalation=0.1), 0.0)
    engine.agent_online(agent("calm-expert", deescalation=0.95), 0.0)
    engine.mood_of = {1: 1.0}.get
    engine.conversation_opened(conv(1, p_neg=0.0), 1.0)
    assert engine.assigned_agent(1) == "calm-expert", "the live mood, not the request's p_neg, was scored"
    engine.mood_of = {}.get  # no mood known: the request's own p_neg counts
    engine.conversation_opened(conv(2, p_neg=1.0), 2.0)
    assert engine.assigned_agent(2) == "calm-expert"
    engine.conversation_opened(conv(3, p_neg=0.0), 3.0)
    assert engine.assigned_agent(3) == "novice"


def test_escalation_can_be_disabled_per_site(make_engine) -> None:
    engine = make_engine()
    engine.set_site_config(SITE, {"escalation": False})
    engine.agent_online(agent("calm", deescalation=0.95), 0.0)
    engine.agent_online(agent("novice", deescalation=0.1), 0.0)
    engine.conversation_opened(conv(1, preferred_agent="novice"), 1.0)
    assert engine.sentiment_changed(1, 0.95, 2.0) == []


def test_ring_relaxation_accepts_ancestor_skill_after_waiting(make_engine) -> None:
    engine = make_engine()
    # The only exact holder is busy: worth waiting for, so the timed schedule applies.
    engine.agent_online(agent("specialist", skills={"billing/refund/card": 1.0}, capacity=1), 0.0)
    engine.conversation_opened(conv(99, skill_path="billing/refund/card"), 0.0)
    engine.conversation_accepted(99, "specialist", 0.0)
    engine.agent_online(agent("generalist", skills={"billing": 0.8}), 0.0)
    waiting = engine.conversation_opened(conv(1, skill_path="billing/refund/card"), 0.0)
    assert isinstance(waiting, Queued) and waiting.decision.ring == 0
    assert waiting.decision.to_dict()["excluded"]["counts"] == {"at_capacity": 1, "skill": 1}
    assert "relaxed" not in waiting.decision.to_dict()
    assert [o for o in engine.tick(29.0) if isinstance(o, Assign)] == []
    (assigned,) = [o for o in engine.tick(30.0) if isinstance(o, Assign)]
    assert assigned.agent_id == "generalist" and assigned.decision.ring == 1
    assert assigned.decision.top[0][4] == pytest.approx(0.8 / 3)  # partial credit
    assert assigned.decision.relaxed_from is None  # relaxed by the clock, not at once


def test_topic_nobody_online_holds_relaxes_at_once_to_an_idle_agent(make_engine) -> None:
    engine = make_engine()
    engine.agent_online(agent("sales-only", skills={"sales": 1.0}), 0.0)
    outcome = engine.conversation_opened(conv(1, skill_path="billing"), 5.0)
    assert isinstance(outcome, Assign) and outcome.agent_id == "sales-only"
    why = outcome.decision.to_dict()
    assert (why["reason"], why["ring"]) == ("scored", 2)
    assert why["relaxed"] == {"from_ring": 0, "to_ring": 2, "because": "no_online_agent_with_skill"}


def test_relaxation_stops_at_the_first_ring_someone_online_meets(make_engine) -> None:
    engine = make_engine()
    engine.agent_online(agent("anyone", skills={"sales": 1.0}), 0.0)
    engine.agent_online(agent("ancestor", skills={"billing": 0.6}), 0.0)
    outcome = engine.conversation_opened(conv(1, skill_path="billing/refund"), 1.0)
    assert isinstance(outcome, Assign) and outcome.agent_id == "ancestor"
    assert (outcome.decision.ring, outcome.decision.relaxed_from) == (1, 0)
    assert [row[0] for row in outcome.decision.top] == ["ancestor"]  # ring 1 still needs an ancestor


def test_no_relaxation_when_nobody_is_online_or_the_holder_is_only_busy(make_engine) -> None:
    engine = make_engine()
    nobody = engine.conversation_opened(conv(1, skill_path="billing"), 0.0)
    assert isinstance(nobody, Queued) and nobody.decision.ring == 0 and nobody.decision.relaxed_from is None
    # An agent without the skill comes online: the waiting conversation goes to it at once.
    (assigned,) = [o for o in engine.agent_online(agent("sales", skills={"sales": 1.0}), 3.0)
                   if isinstance(o, Assign)]
    assert (assigned.conv_id, assigned.agent_id, assigned.decision.relaxed_from) == (1, "sales", 0)
    engine.agent_online(agent("biller", skills={"billing": 1.0}, capacity=1), 4.0)
    engine.conversation_opened(conv(2, skill_path="billing"), 5.0)  # biller is now full
    engine.conversation_accepted(1, "sales", 5.0)
    engine.conversation_accepted(2, "biller", 5.0)
    busy = engine.conversation_opened(conv(3, skill_path="billing"), 6.0)
    assert isinstance(busy, Queued) and busy.decision.ring == 0  # sales sits idle, yet biller is worth it
    assert [o for o in engine.tick(35.0) if isinstance(o, Assign)] == []  # ring 1: still billing only
    (late,) = [o for o in engine.tick(96.0) if isinstance(o, Assign)]
    assert (late.agent_id, late.decision.ring, late.decision.relaxed_from) == ("sales", 2, None)


def test_queued_conversation_relaxes_when_the_last_holder_leaves(make_engine) -> None:
    engine = make_engine()
    engine.agent_online(agent("biller", skills={"billing": 1.0}, capacity=1), 0.0)
    engine.conversation_opened(conv(1, skill_path="billing"), 1.0)
    engine.conversation_accepted(1, "biller", 1.5)
    engine.agent_online(agent("sales", skills={"sales": 1.0}), 2.0)
    waiting = engine.conversation_opened(conv(2, skill_path="billing"), 3.0)
    assert isinstance(waiting, Queued)
    assert engine.agent_away("biller", 4.0) == []  # its accepted chat stays; no new ones
    (moved,) = [o for o in engine.tick(5.0) if isinstance(o, Assign)]
    assert (moved.conv_id, moved.agent_id, moved.decision.relaxed_from) == (2, "sales", 0)


def test_relaxation_respects_language_and_exclusions(make_engine) -> None:
    engine = make_engine()
    engine.agent_online(agent("english-sales", skills={"sales": 1.0}, languages=("en",)), 0.0)
    french = engine.conversation_opened(conv(1, skill_path="billing", lang="fr"), 1.0)
    assert isinstance(french, Queued) and french.decision.ring == 0  # nobody could take it anyway
    excluded = engine.conversation_opened(conv(2, skill_path="billing", exclude=frozenset({"english-sales"})), 1.0)
    assert isinstance(excluded, Queued) and excluded.decision.relaxed_from is None


def test_tick_reports_queue_positions_only_when_they_change(make_engine) -> None:
    engine = make_engine()
    engine.agent_online(agent("a", capacity=1), 0.0)
    engine.conversation_opened(conv(1), 1.0)
    engine.conversation_opened(conv(2), 2.0)
    engine.conversation_opened(conv(3), 3.0)
    assert engine.tick(4.0) == []  # positions were reported by conversation_opened
    engine.conversation_closed(2, 5.0)  # a visitor gives up
    assert engine.tick(6.0) == [QueuePosition(3, 1, 180.0)]


def test_handle_time_ewma_drives_eta(make_engine) -> None:
    engine = make_engine(default_handle_time_s=100.0, handle_time_alpha=0.5)
    engine.agent_online(agent("a", capacity=1), 0.0)
    engine.conversation_opened(conv(1), 0.0)
    engine.conversation_opened(conv(2), 0.0)
    engine.conversation_closed(1, 300.0)  # EWMA 100 -> 200; conv 2 takes the slot
    engine.conversation_opened(conv(3), 301.0)
    assert engine.queue_position(3) == (1, 200.0)


def test_language_and_site_filters(make_engine) -> None:
    engine = make_engine()
    engine.agent_online(agent("en-only", languages=("en",)), 0.0)
    engine.agent_online(agent("zh", languages=("zh-CN",)), 0.0)
    engine.agent_online(agent("other-site", site_id=2, languages=("zh",)), 0.0)
    assert engine.conversation_opened(conv(1, lang="zh"), 1.0).agent_id == "zh"
    unknown = engine.conversation_opened(conv(2, lang="fr"), 1.0)
    assert isinstance(unknown, Queued)
    assert unknown.decision.to_dict()["excluded"]["counts"] == {"language": 2}


def test_removed_agent_index_is_reused_and_its_chats_rerouted(make_engine) -> None:
    engine = make_engine()
    engine.agent_online(agent("a"), 0.0)
    engine.agent_online(agent("b"), 0.0)
    engine.conversation_opened(conv(1, preferred_agent="a"), 1.0)
    (moved,) = engine.agent_removed("a", 2.0)
    assert moved.agent_id == "b" and moved.decision.reason == "reroute:agent_removed"
    engine.agent_online(agent("c", skills={"tech": 1.0}), 3.0)
    assert engine.conversation_opened(conv(2, skill_path="tech"), 4.0).agent_id == "c"
    with pytest.raises(KeyError):
        engine.agent_offline("a", 5.0)


def test_per_site_weights_override(make_engine) -> None:
    engine = make_engine()
    engine.set_site_config(SITE, {"weights": {"geo": 0.0}})
    engine.agent_online(agent("a", geo=SHANGHAI), 0.0)
    outcome = engine.conversation_opened(conv(1, visitor_geo=SHANGHAI), 1.0)
    assert outcome.decision.to_dict()["weights"]["geo"] == 0.0
    assert outcome.decision.top[0][1] == pytest.approx(
        0.2 * outcome.decision.top[0][3] + 0.5 * 1.0 + 0.1 * 1.0 + 0.05 * outcome.decision.top[0][6]
    )
    with pytest.raises(ValueError):
        engine.set_site_config(SITE, {"geo_precision": 5})
    with pytest.raises(ValueError):
        engine.set_site_config(SITE, {"no_such_knob": 1})


def test_explanation_dict_is_complete_and_compact(make_engine) -> None:
    engine = make_engine()
    for i in range(40):
        engine.agent_online(agent(f"agent-with-a-longish-identifier-{i:03d}", capacity=1,
                                  languages=("en",) if i % 3 else ("zh",)), 0.0)
    for i in range(10):
        engine.conversation_opened(conv(i, lang="en"), 1.0)
    engine.agent_offline("agent-with-a-longish-identifier-039", 1.0)
    outcome = engine.conversation_opened(conv(99, lang="en", skill_path="billing", visitor_geo=SHANGHAI,
                                              p_neg=0.6), 2.0)
    decision = outcome.decision.to_dict()
    assert decision["reason"] == "scored" and decision["agent"] == outcome.agent_id
    assert set(decision["weights"]) == {"geo", "sent", "skill", "load", "fair"}
    assert len(decision["top"]) == 5
    assert set(decision["top"][0]) == {"agent", "score", "geo", "sent", "skill", "load", "fair"}
    counts = decision["excluded"]["counts"]
    assert counts == {"language": 13, "at_capacity": 10, "not_online": 1}
    assert len(decision["excluded"]["sample"]) == 8
    assert {reason for _, reason in decision["excluded"]["sample"]} <= {"language", "at_capacity"}
    assert set(decision["us"]) == {"kernel", "total"}
    assert len(json.dumps(decision)) <= 2048


def test_hostile_requests_are_refused() -> None:
    with pytest.raises(ValueError):
        RouteRequest(1, SITE, p_neg=1.5)
    with pytest.raises(ValueError):
        RouteRequest(1, SITE, skill_path="/".join(["deep"] * 20))
    with pytest.raises(ValueError):
        RouteRequest(1, SITE, priority=10**9)
    with pytest.raises(ValueError):
        RouteRequest(1, SITE, visitor_geo=(float("nan"), 0.0))
    with pytest.raises(ValueError):
        AgentProfile("a", SITE, geo=(91.0, 0.0))
    with pytest.raises(ValueError):
        AgentProfile("a", SITE, capacity=0)
    engine = RoutingEngine()
    engine.conversation_opened(conv(1), 0.0)
    with pytest.raises(ValueError):
        engine.conversation_opened(conv(1), 0.0)


def test_queue_is_bounded() -> None:
    engine = RoutingEngine(RoutingConfig(max_queue=2))
    engine.conversation_opened(conv(1), 0.0)
    engine.conversation_opened(conv(2), 0.0)
    refused = engine.conversation_opened(conv(3), 0.0)
    assert isinstance(refused, Rejected) and refused.reason == "queue_full"
    assert engine.queue_position(3) is None


def test_worked_example_of_the_docs_still_holds() -> None:
    from kefu.routing.example import run

    first, waiting, relaxed = run()
    assert (first["agent"], first["reason"], first["ring"]) == ("li", "scored", 0)
    assert (waiting["agent"], waiting["reason"]) == (None, "queued:no_eligible_agent")
    assert waiting["excluded"]["counts"] == {"at_capacity": 1, "language": 1, "skill": 2}
    assert (relaxed["agent"], relaxed["reason"], relaxed["ring"]) == ("chen", "dequeued", 1)
    assert [row["agent"] for row in relaxed["top"]] == ["chen", "wang"]
    # chen: same geohash cell, sent 1 - 0.1 * (1 - 0.2), skill 2/3 * 0.8, no load, idle 335 of 600 s.
    expected = 0.3 * 1.0 + 0.2 * 0.92 + 0.5 * 0.8 * 2 / 3 + 0.1 * 1.0 + 0.05 * 335 / 600
    assert relaxed["top"][0]["score"] == pytest.approx(expected, abs=1e-4)


def test_agent_update_raising_capacity_drains_and_new_skills_count(make_engine) -> None:
    engine = make_engine()
    engine.agent_online(agent("a", capacity=1, skills={"billing": 1.0}), 0.0)
    engine.conversation_opened(conv(1), 1.0)
    assert isinstance(engine.conversation_opened(conv(2), 2.0), Queued)
    (drained,) = engine.agent_updated(agent("a", capacity=2, skills={"tech": 1.0}), 3.0)
    assert drained.conv_id == 2 and drained.agent_id == "a"
    assert engine.agent_load("a") == (2, 2)
    engine.agent_online(agent("b", capacity=5, skills={"billing": 1.0}), 4.0)
    waiting = engine.conversation_opened(conv(3, skill_path="tech"), 5.0)
    assert isinstance(waiting, Queued)
    assert waiting.decision.to_dict()["excluded"]["counts"] == {"at_capacity": 1, "skill": 1}
    (drained,) = engine.conversation_closed(1, 6.0)
    assert (drained.conv_id, drained.agent_id) == (3, "a")
    assert drained.decision.top[0][4] == 1.0  # the new "tech" skill, exact


def test_away_agent_gets_no_new_chats_but_keeps_accepted_ones(make_engine) -> None:
    engine = make_engine()
    engine.agent_online(agent("a"), 0.0)
    engine.conversation_opened(conv(1), 1.0)
    engine.conversation_accepted(1, "a", 2.0)
    engine.conversation_opened(conv(2), 3.0)
    (moved,) = engine.agent_away("a", 4.0)
    assert isinstance(moved, Queued) and moved.conv_id == 2 and moved.previous_agent == "a"
    assert moved.decision.reason == "reroute:agent_away>queued:no_agent_online"
    assert engine.assigned_agent(1) == "a"
    assert [o.conv_id for o in engine.agent_online(agent("a"), 5.0)] == [2]


def test_conversations_held_before_a_restart_count_against_capacity() -> None:
    from kefu.routing import AgentProfile, Assign, Queued, RouteRequest, RoutingEngine

    engine = RoutingEngine()
    held = [RouteRequest(conv_id=1, site_id=1, visitor_id="v_old")]
    engine.agent_online(AgentProfile("a_1", site_id=1, capacity=2), now=0.0, holding=held)
    assert engine.agent_load("a_1") == (1, 2) and engine.assigned_agent(1) == "a_1"
    assert isinstance(engine.conversation_opened(RouteRequest(conv_id=2, site_id=1), now=1.0), Assign)
    assert isinstance(engine.conversation_opened(RouteRequest(conv_id=3, site_id=1), now=2.0), Queued)
    assert engine.conversation_closed(1, now=3.0)[0].conv_id == 3  # the held one frees a slot
    # A conversation the engine already knows is not counted twice.
    engine.agent_online(AgentProfile("a_1", site_id=1, capacity=2), now=4.0,
                        holding=[RouteRequest(conv_id=2, site_id=1)])
    assert engine.agent_load("a_1") == (2, 2)
