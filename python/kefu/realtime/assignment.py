"""What the hub asks of a router, and the outcomes it applies.

The hub owns I/O (storage, frames); a router owns the decision. The interface is events in,
outcomes out, with the clock passed in, so any router is a pure object that tests drive directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class AgentInfo:
    agent_id: str
    site_id: int
    name: str
    capacity: int
    skills: dict[str, float] = field(default_factory=dict)
    languages: tuple[str, ...] = ()
    geo: tuple[float, float] | None = None
    teams: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteRequest:
    conv_id: int
    site_id: int
    visitor_id: str
    skill_path: str | None = None
    lang: str | None = None
    visitor_geo: tuple[float, float] | None = None
    p_neg: float = 0.0
    priority: int = 0
    preferred_agent: str | None = None  # the returning visitor's last agent
    exclude: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Assigned:
    conv_id: int
    agent_id: str
    reason: str  # "scored", "sticky", "transfer", "reroute:…", "queue" …
    decision: dict[str, Any]  # explainable: factor scores, exclusions; shown as `why`


@dataclass(frozen=True, slots=True)
class Queued:
    conv_id: int
    position: int
    eta_s: float
    reason: str
    decision: dict[str, Any]


Outcome = Assigned | Queued


class Router(Protocol):
    """The routing engine as the hub sees it. Every method is synchronous and does no I/O."""

    def agent_online(self, agent: AgentInfo, now: float) -> list[Outcome]: ...
    def agent_offline(self, agent_id: str, now: float) -> list[Outcome]: ...
    def conversation_opened(self, request: RouteRequest, now: float) -> Outcome: ...
    def conversation_accepted(self, conv_id: int, agent_id: str, now: float) -> None: ...
    def conversation_closed(self, conv_id: int, now: float) -> list[Outcome]: ...
    def transfer(self, conv_id: int, now: float, *, to_agent: str | None = None,
                 to_skill: str | None = None, from_agent: str | None = None) -> Outcome: ...
    def sentiment_changed(self, conv_id: int, p_neg: float, now: float) -> list[Outcome]: ...
    def tick(self, now: float) -> list[Outcome]: ...
    def queue_position(self, conv_id: int) -> tuple[int, float] | None: ...
