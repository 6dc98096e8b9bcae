"""The widget's topic list (kefu.web.topics)."""

from __future__ import annotations

from kefu.storage.base import Agent
from kefu.web.topics import CACHE_TTL_S, TopicCache, topic_tree


def agent(agent_id: str, skills: dict[str, float], disabled: bool = False) -> Agent:
    return Agent(agent_id, 1, agent_id, "", agent_id, "agent", (), skills, 4, (), None, disabled)


def test_tree_has_ancestors_online_marks_and_skips_disabled_agents() -> None:
    agents = [agent("a", {"billing/refund/card": 1.0, "sales": 0.5}), agent("b", {"billing": 0.7}),
              agent("gone", {"secret/project": 1.0}, disabled=True)]
    tree = topic_tree(agents, online={"b"})
    assert tree == {"agents_online": 1, "topics": [
        {"path": "billing", "online": True}, {"path": "billing/refund", "online": False},
        {"path": "billing/refund/card", "online": False}, {"path": "sales", "online": False}]}


async def test_cache_answers_from_memory_until_it_expires() -> None:
    calls: list[int] = []
    now = [0.0]

    async def list_agents(site_id: int) -> list[Agent]:
        calls.append(site_id)
        return [agent("a", {"x": 1.0})]

    cache = TopicCache(list_agents, set(), clock=lambda: now[0])
    assert (await cache.for_site(1))["topics"] == [{"path": "x", "online": False}]
    await cache.for_site(1)
    now[0] = CACHE_TTL_S + 0.1
    await cache.for_site(1)
    await cache.for_site(2)
    assert calls == [1, 1, 2]
