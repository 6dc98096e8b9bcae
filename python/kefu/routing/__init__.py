"""Conversation routing: filters → score → relax, over agent state kept as numpy columns.

`RoutingEngine` (kefu.routing.engine) is the pure, synchronous policy the server calls; the
per-request scoring pass is the native kernel `kefu.compiled.score_agents`. See docs/routing.md.
"""

from kefu.routing.engine import (
    AgentProfile,
    Assign,
    Outcome,
    Queued,
    QueuePosition,
    Rejected,
    RouteRequest,
    RoutingConfig,
    RoutingDecision,
    RoutingEngine,
    Weights,
)

__all__ = [
    "AgentProfile",
    "Assign",
    "Outcome",
    "QueuePosition",
    "Queued",
    "Rejected",
    "RouteRequest",
    "RoutingConfig",
    "RoutingDecision",
    "RoutingEngine",
    "Weights",
]
