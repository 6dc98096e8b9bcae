"""The interim router: assign to the least-loaded online agent of the site, else queue (FIFO).

It exists until the routing engine (kefu.routing) is wired in; it implements the same `Router`
interface so the swap touches no hub code. Ties go to the agent idle the longest.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from kefu.realtime.assignment import AgentInfo, Assigned, Outcome, Queued, RouteRequest

DEFAULT_HANDLE_TIME_S = 180.0


@dataclass(slots=True)
class _AgentState:
    info: AgentInfo
    convs: set[int] = field(default_factory=set)
    last_assigned: float = 0.0


class LeastLoadedRouter:
    def __init__(self) -> None:
        self._agents: dict[str, _AgentState] = {}
        self._assignment: dict[int, str] = {}
        self._queue: OrderedDict[int, RouteRequest] = OrderedDict()

    # --- events -------------------------------------------------------------------------------------
    def agent_online(self, agent: AgentInfo, now: float) -> list[Outcome]:
        state = self._agents.get(agent.agent_id)
        if state is None:
            state = self._agents[agent.agent_id] = _AgentState(agent)
            state.convs = {c for c, a in self._assignment.items() if a == agent.agent_id}
        else:
            state.info = agent
        return self._drain(now)

    def agent_offline(self, agent_id: str, now: float) -> list[Outcome]:
        self._agents.pop(agent_id, None)
        return []

    def conversation_opened(self, request: RouteRequest, now: float) -> Outcome:
        self._queue.pop(request.conv_id, None)
        agent = self._pick(request)
        if agent is None:
            self._queue[request.conv_id] = request
            position, eta = self.queue_position(request.conv_id) or (1, DEFAULT_HANDLE_TIME_S)
            return Queued(request.conv_id, position, eta, "queued:no_eligible_agent",
                          self._decision(request, None, "queued:no_eligible_agent"))
        return self._assign(request, agent, now, "least_loaded")

    def conversation_accepted(self, conv_id: int, agent_id: str, now: float) -> None:
        return None

    def conversation_closed(self, conv_id: int, now: float) -> list[Outcome]:
        self._queue.pop(conv_id, None)
        agent_id = self._assignment.pop(conv_id, None)
        if agent_id in self._agents:
            self._agents[agent_id].convs.discard(conv_id)
        return self._drain(now)

    def transfer(self, conv_id: int, now: float, *, to_agent: str | None = None,
                 to_skill: str | None = None, from_agent: str | None = None) -> Outcome:
        previous = self._assignment.pop(conv_id, None)
        if previous in self._agents:
            self._agents[previous].convs.discard(conv_id)
        site_id = self._agents[previous].info.site_id if previous in self._agents else 0
        request = RouteRequest(conv_id=conv_id, site_id=site_id, visitor_id="", skill_path=to_skill,
                               preferred_agent=to_agent, exclude=frozenset({previous} if previous else ()))
        if to_agent is not None and to_agent in self._agents:
            return self._assign(request, self._agents[to_agent], now, "transfer")
        return self.conversation_opened(request, now)

    def sentiment_changed(self, conv_id: int, p_neg: float, now: float) -> list[Outcome]:
        return []

    def tick(self, now: float) -> list[Outcome]:
        return self._drain(now)

    def queue_position(self, conv_id: int) -> tuple[int, float] | None:
        for position, queued in enumerate(self._queue, start=1):
            if queued == conv_id:
                free = sum(max(a.info.capacity - len(a.convs), 0) for a in self._agents.values())
                return position, DEFAULT_HANDLE_TIME_S * position / max(free, 1)
        return None

    # --- internals ----------------------------------------------------------------------------------
    def _pick(self, request: RouteRequest) -> _AgentState | None:
        best: _AgentState | None = None
        for agent_id, state in self._agents.items():
            if state.info.site_id != request.site_id or agent_id in request.exclude:
                continue
            if len(state.convs) >= state.info.capacity:
                continue
            if request.preferred_agent == agent_id:
                return state
            key = (len(state.convs) / state.info.capacity, state.last_assigned)
            if best is None or key < (len(best.convs) / best.info.capacity, best.last_assigned):
                best = state
        return best

    def _assign(self, request: RouteRequest, state: _AgentState, now: float, reason: str) -> Assigned:
        state.convs.add(request.conv_id)
        state.last_assigned = now
        self._assignment[request.conv_id] = state.info.agent_id
        return Assigned(request.conv_id, state.info.agent_id, reason,
                        self._decision(request, state, reason))

    def _drain(self, now: float) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for conv_id, request in list(self._queue.items()):
            agent = self._pick(request)
            if agent is not None:
                del self._queue[conv_id]
                outcomes.append(self._assign(request, agent, now, "queue"))
        return outcomes

    def _decision(self, request: RouteRequest, chosen: _AgentState | None, reason: str) -> dict:
        return {
            "router": "least_loaded",
            "reason": reason,
            "agent": chosen.info.agent_id if chosen else None,
            "candidates": [
                {"agent": a.info.agent_id, "load": len(a.convs), "capacity": a.info.capacity}
                for a in self._agents.values() if a.info.site_id == request.site_id
            ][:10],
        }
