"""Random event sequences against RoutingEngine, checking after every event that its incremental
bookkeeping agrees with a recount from scratch.

This is white-box on purpose: the engine maintains loads, free-slot and online-capacity counters,
per-site online lists and queues incrementally (never rebuilt per request), and a drift in any of
them would silently skew routing long before a scenario test noticed.
"""

from __future__ import annotations

import random

import pytest
from kefu.routing import AgentProfile, Assign, Queued, Rejected, RouteRequest, RoutingConfig, RoutingEngine
from kefu.routing.table import STATUS_ONLINE

SKILLS = ("billing", "billing/refund", "billing/refund/card", "tech", "tech/network")
AGENTS = tuple(f"agent-{i}" for i in range(6))


def _profile(rng: random.Random, agent_id: str) -> AgentProfile:
    return AgentProfile(
        agent_id,
        site_id=rng.choice((1, 1, 2)),
        skills={path: rng.choice((0.3, 1.0)) for path in rng.sample(SKILLS, rng.randint(0, 2))},
        capacity=rng.randint(1, 3),
        languages=rng.choice((("en",), ("zh",), ("en", "zh"))),
        geo=rng.choice((None, (31.2, 121.5), (39.9, 116.4))),
        deescalation=rng.choice((0.1, 0.9)),
    )


def _check(engine: RoutingEngine) -> None:
    table = engine._table
    conversations = engine._conversations
    for agent_id, agent in engine._agents.items():
        holding = {c for c, conv in conversations.items() if conv.agent_index == agent.index}
        assert agent.conversations == holding, agent_id
        assert int(table.load[agent.index]) == len(holding), agent_id
        assert engine._agent_ids[agent.index] == agent_id
        online = table.status[agent.index] == STATUS_ONLINE
        assert (agent.index in table.online.get(agent.profile.site_id, ())) == online
    for site in {a.profile.site_id for a in engine._agents.values()} | set(engine._free_slots):
        members = [a for a in engine._agents.values() if a.profile.site_id == site]
        online = [a for a in members if table.status[a.index] == STATUS_ONLINE]
        free = sum(max(int(table.capacity[a.index]) - int(table.load[a.index]), 0) for a in online)
        assert engine._free_slots.get(site, 0) == free, site
        assert engine._online_capacity.get(site, 0) == sum(int(table.capacity[a.index]) for a in online)
        online_list = table.online.get(site)
        listed = sorted(online_list.view().tolist()) if online_list is not None else []
        assert listed == sorted(a.index for a in online)
        assert engine._registered_per_site.get(site, 0) == len(members)
    queued = {c for c, conv in conversations.items() if conv.state == "queued"}
    in_queues = [entry[-1] for queue in engine._queues.values() for entry in queue]
    assert sorted(in_queues) == sorted(queued)
    for queue in engine._queues.values():
        assert queue == sorted(queue)
    for conv_id, conv in conversations.items():
        assert conv.state in {"queued", "offered", "active"}, (conv_id, conv.state)
        assert (conv.agent_index >= 0) == (conv.state != "queued")
        assert (conv_id in engine._offered) == (conv.state == "offered")
    assert not table.scratch_credit.any() and not table.scratch_depth.any()


@pytest.mark.parametrize("seed", range(25))
def test_bookkeeping_survives_random_event_sequences(seed: int) -> None:
    rng = random.Random(seed)
    engine = RoutingEngine(RoutingConfig(accept_timeout_s=20.0, reroute_active_on_offline=bool(seed % 2)))
    now = 0.0
    next_conv = 0
    for _ in range(250):
        now += rng.choice((0.0, 1.0, 7.0, 31.0))
        live = list(engine._conversations)
        known = list(engine._agents)
        event = rng.randrange(10)
        if event == 0 or not known:
            engine.agent_online(_profile(rng, rng.choice(AGENTS)), now)
        elif event == 1:
            engine.agent_offline(rng.choice(known), now)
        elif event == 2:
            engine.agent_away(rng.choice(known), now)
        elif event == 3 and rng.random() < 0.3:
            engine.agent_removed(rng.choice(known), now)
        elif event == 4:
            agent_id = rng.choice(known)
            profile = _profile(rng, agent_id)
            engine.agent_updated(profile, now)
        elif event in (5, 6):
            next_conv += 1
            request = RouteRequest(
                next_conv, rng.choice((1, 2)), skill_path=rng.choice((None, *SKILLS)),
                lang=rng.choice((None, "en", "zh", "fr")), visitor_geo=rng.choice((None, (31.2, 121.5))),
                p_neg=rng.random(), priority=rng.randint(0, 2), visitor_id=f"v{rng.randrange(5)}",
                preferred_agent=rng.choice((None, *AGENTS)),
            )
            assert isinstance(engine.conversation_opened(request, now), Assign | Queued | Rejected)
        elif event == 7 and live:
            conv_id = rng.choice(live)
            agent_id = engine.assigned_agent(conv_id)
            if agent_id is not None:
                engine.conversation_accepted(conv_id, agent_id, now)
        elif event == 8 and live:
            conv_id = rng.choice(live)
            choice = rng.randrange(4)
            if choice == 0:
                engine.transfer(conv_id, now, to_agent=rng.choice(AGENTS))
            elif choice == 1:
                engine.transfer(conv_id, now, to_skill=rng.choice(SKILLS))
            elif choice == 2:
                engine.sentiment_changed(conv_id, rng.random(), now)
            else:
                engine.conversation_closed(conv_id, now)
        else:
            engine.tick(now)
        _check(engine)
