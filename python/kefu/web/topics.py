"""The topics a site's visitors can pick in the widget: the skill tree its agents hold.

Derived, not configured: every skill path held by an enabled agent of the site, plus its
ancestors (an agent with ``billing/refunds`` makes ``billing`` a topic too). Each topic says
whether an online agent holds it or something under it, so the widget can mark topics nobody
answers right now. Cached per site for a few seconds: the endpoint is public and every page view
of every embedding site may call it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container, Iterable
from typing import Any

CACHE_TTL_S = 5.0
MAX_TOPICS = 200


def topic_tree(agents: Iterable[Any], online: Container[str]) -> dict[str, Any]:
    """``{"topics": [{"path", "online"}...] sorted by path, "agents_online": n}``."""
    topics: dict[str, bool] = {}
    agents_online = 0
    for agent in agents:
        if agent.disabled:
            continue
        is_online = agent.id in online
        agents_online += is_online
        for path in agent.skills:
            segments = [s for s in path.split("/") if s]
            for depth in range(1, len(segments) + 1):
                prefix = "/".join(segments[:depth])
                topics[prefix] = topics.get(prefix, False) or is_online
    listed = sorted(topics.items())[:MAX_TOPICS]
    return {"topics": [{"path": path, "online": on} for path, on in listed], "agents_online": agents_online}


class TopicCache:
    def __init__(self, list_agents: Callable[[int], Any], online: Container[str],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._list_agents = list_agents
        self._online = online
        self._clock = clock
        self._cached: dict[int, tuple[float, dict[str, Any]]] = {}

    async def for_site(self, site_id: int) -> dict[str, Any]:
        now = self._clock()
        hit = self._cached.get(site_id)
        if hit is not None and now - hit[0] < CACHE_TTL_S:
            return hit[1]
        answer = topic_tree(await self._list_agents(site_id), self._online)
        if len(self._cached) > 10_000:
            self._cached.clear()
        self._cached[site_id] = (now, answer)
        return answer
