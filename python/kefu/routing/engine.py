"""The routing engine: pure, synchronous, no I/O, with the clock passed in.

The server feeds it events and applies what comes back (store the assignment and its decision,
send frames); the engine never awaits, sleeps, reads the time or touches storage, so every
scenario is reproducible in a unit test. It is not thread-safe: one engine per event loop, owning
the routing state of the sites that loop serves. The scorer is injectable
(``RoutingEngine(config, scorer=kefu.reference.routing.score_agents_numpy)`` in tests); the
default is the native kernel.

Events → outcomes (``Outcome`` = `Assign` | `Queued` | `QueuePosition` | `Rejected`):

- ``agent_online(profile, now) -> list``: register or update the agent, mark it online, drain
  the queue.
- ``agent_updated(profile, now) -> list``: new skills/capacity/...; may drain the queue.
- ``agent_away(agent_id, now) -> list``: no new chats; un-accepted offers are re-routed.
- ``agent_offline(agent_id, now) -> list``: as away, and active chats are re-routed too when
  ``reroute_active_on_offline``.
- ``agent_removed(agent_id, now) -> list``: forget the agent (its index is reused); all its chats
  are re-routed.
- ``conversation_opened(request, now) -> Assign | Queued | Rejected``.
- ``conversation_accepted(conv_id, agent_id, now) -> bool`` (False: stale, the offer moved on).
- ``conversation_closed(conv_id, now) -> list``: frees capacity, drains the queue.
- ``transfer(conv_id, now, *, to_agent=None, to_skill=None, from_agent=None)
  -> Assign | Queued | Rejected``.
- ``sentiment_changed(conv_id, p_neg, now) -> list``: escalation to a better de-escalator.
- ``tick(now) -> list``: accept timeouts, ring relaxation, queue position/ETA updates.
- ``queue_position(conv_id) -> (position, eta_s) | None``; ``assigned_agent(conv_id)``,
  ``agent_load(agent_id)`` for inspection.

Model (docs/routing.md): sticky/preferred agent first; then the native kernel
(`kefu.compiled.score_agents`) applies the hard filters (online, site, excluded, capacity, language,
skill match of the current ring) and ranks by
``w_geo·geo + w_sent·(1 − p_neg·(1 − deesc)) + w_skill·skill + w_load·(1 − load/capacity) +
w_fair·min(idle/horizon, 1)``; when nobody passes, the conversation waits in the site's queue,
ordered by priority then age, and the ring schedule relaxes the skill requirement as it waits.

ETA of the conversation at queue position ``p`` (1-based) in a site whose online agents have
total capacity ``C`` and whose conversations last ``H`` seconds on average (EWMA of
assignment → close, default 180 s): ``eta = p · H / C`` (each of the ``C`` slots frees once per ``H``
on average); ``None`` when nobody is online.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kefu.routing import geohash
from kefu.routing.skills import SkillTrie, build_skill_index, parse_skill_path
from kefu.routing.table import (
    EXCLUSION_REASONS,
    STATUS_AWAY,
    STATUS_OFFLINE,
    STATUS_ONLINE,
    AgentTable,
)

MAX_LANGUAGES = 7  # bits 0..6 of the u8 language set; bit 7 means "a language nobody speaks"
_UNKNOWN_LANGUAGE_BIT = 0x80
MAX_PRIORITY = 1_000
_MAX_EXCLUDE = 256

Scorer = Callable[..., tuple[list[tuple[int, float, float, float, float, float, float]],
                             tuple[int, ...], list[tuple[int, int]], int]]


def _check_location(location: tuple[float, float] | None) -> None:
    if location is None:
        return
    lat, lon = location
    if not (math.isfinite(lat) and math.isfinite(lon) and abs(lat) <= 90 and abs(lon) <= 180):
        raise ValueError(f"not a (lat, lon) location: {location!r}")


def _default_scorer() -> Scorer:
    from kefu.compiled import score_agents

    return score_agents


# --- inputs -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentProfile:
    """What routing needs to know about an agent (from the admin settings and presence)."""

    agent_id: str
    site_id: int
    skills: Mapping[str, float] = field(default_factory=dict)  # path -> proficiency 0..1
    capacity: int = 4
    languages: tuple[str, ...] = ()
    geo: tuple[float, float] | None = None  # (lat, lon)
    deescalation: float = 0.5
    teams: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.agent_id or len(self.agent_id) > 128:
            raise ValueError("agent_id must be 1..128 characters")
        if not 1 <= self.capacity <= 1_000:
            raise ValueError("capacity must be 1..1000")
        if not 0.0 <= self.deescalation <= 1.0:
            raise ValueError("deescalation must be within 0..1")
        if len(self.skills) > 256:
            raise ValueError("at most 256 skills per agent")
        _check_location(self.geo)
        for path, level in self.skills.items():
            parse_skill_path(path)
            if not 0.0 <= level <= 1.0:
                raise ValueError(f"proficiency of {path!r} must be within 0..1")


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """A conversation to place."""

    conv_id: int
    site_id: int
    skill_path: str | None = None
    lang: str | None = None
    visitor_geo: tuple[float, float] | None = None
    p_neg: float = 0.0
    priority: int = 0
    preferred_agent: str | None = None
    exclude: frozenset[str] = frozenset()
    visitor_id: str | None = None  # remembered for sticky routing of returning visitors

    def __post_init__(self) -> None:
        if not 0.0 <= self.p_neg <= 1.0:
            raise ValueError("p_neg must be within 0..1")
        if not -MAX_PRIORITY <= self.priority <= MAX_PRIORITY:
            raise ValueError(f"priority must be within ±{MAX_PRIORITY}")
        if self.skill_path is not None:
            parse_skill_path(self.skill_path)
        if len(self.exclude) > _MAX_EXCLUDE:
            raise ValueError(f"at most {_MAX_EXCLUDE} excluded agents")
        _check_location(self.visitor_geo)
        if self.visitor_id is not None and not 0 < len(self.visitor_id) <= 256:
            raise ValueError("visitor_id must be 1..256 characters")


@dataclass(frozen=True, slots=True)
class Weights:
    """Factor weights: geo/sentiment/skill from the seed article, small load and fairness terms."""

    geo: float = 0.3
    sentiment: float = 0.2
    skill: float = 0.5
    load: float = 0.1
    fairness: float = 0.05

    def as_tuple(self) -> tuple[float, float, float, float, float]:
        return (self.geo, self.sentiment, self.skill, self.load, self.fairness)


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """Every routing knob; per-site overrides via `RoutingEngine.set_site_config`."""

    weights: Weights = Weights()
    fairness_horizon_s: float = 600.0
    # Skill factor for every agent when the conversation asks for no skill: a constant, so it
    # shifts every score equally and ranking falls to geo, sentiment, load and fairness.
    no_skill_value: float = 1.0
    geo_precision: int = 6
    accept_timeout_s: float = 30.0
    sticky_window_s: float = 86_400.0
    # (seconds waited, min skill match): ring 0 exact skill, ring 1 any ancestor, ring 2 anyone.
    ring_schedule: tuple[tuple[float, float], ...] = ((0.0, 1.0), (30.0, 0.01), (90.0, 0.0))
    angry_threshold: float = 0.7
    escalation: bool = True
    escalate_below_deesc: float = 0.5
    escalation_min_deesc: float = 0.7
    escalation_min_skill_match: float = 0.01
    max_queue: int = 10_000
    reroute_active_on_offline: bool = False
    top_k: int = 5
    excluded_sample: int = 8
    default_handle_time_s: float = 180.0
    handle_time_alpha: float = 0.2
    drain_scan_limit: int = 64
    eta_report_delta_s: float = 10.0
    sticky_memory: int = 100_000

    def __post_init__(self) -> None:
        if not all(math.isfinite(w) and w >= 0 for w in self.weights.as_tuple()):
            raise ValueError("weights must be finite and non-negative")
        if not self.ring_schedule or self.ring_schedule[0][0] != 0.0:
            raise ValueError("ring_schedule must start at 0 s")
        waits = [wait for wait, _ in self.ring_schedule]
        if waits != sorted(waits):
            raise ValueError("ring_schedule must be ordered by wait time")
        if not 1 <= self.top_k <= 64:
            raise ValueError("top_k must be 1..64")
        positive = ("fairness_horizon_s", "accept_timeout_s", "default_handle_time_s", "max_queue")
        for name in positive:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if not 0.0 < self.handle_time_alpha <= 1.0:
            raise ValueError("handle_time_alpha must be within (0, 1]")
        if not 1 <= self.geo_precision <= geohash.MAX_PRECISION:
            raise ValueError("geo_precision must be 1..12")

    def ring_at(self, waited_s: float) -> int:
        """Ring reached after waiting `waited_s` seconds."""
        return bisect.bisect_right([wait for wait, _ in self.ring_schedule], waited_s) - 1


# Settings fixed for the whole engine (they shape stored state, not one decision).
_ENGINE_WIDE = frozenset({"geo_precision", "sticky_memory"})


# --- outputs ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """Why a conversation went where it went; `to_dict()` is stored and shown to the agent."""

    conv_id: int
    agent_id: str | None
    reason: str
    ring: int
    weights: Weights
    top: tuple[tuple[str, float, float, float, float, float, float], ...]
    excluded_counts: Mapping[str, int]
    excluded_sample: tuple[tuple[str, str], ...]
    eligible: int
    kernel_us: float
    total_us: float
    relaxed_from: int | None = None  # ring skipped from at once: no online agent met its skill

    def to_dict(self) -> dict[str, Any]:
        relaxed = {} if self.relaxed_from is None else {"relaxed": {
            "from_ring": self.relaxed_from, "to_ring": self.ring, "because": "no_online_agent_with_skill"}}
        return {
            "conv": self.conv_id,
            "agent": self.agent_id,
            "reason": self.reason,
            "ring": self.ring,
            "weights": dict(zip(("geo", "sent", "skill", "load", "fair"), self.weights.as_tuple())),
            "top": [
                {"agent": agent, "score": round(score, 4), "geo": round(geo, 4), "sent": round(sent, 4),
                 "skill": round(skill, 4), "load": round(load, 4), "fair": round(fair, 4)}
                for agent, score, geo, sent, skill, load, fair in self.top
            ],
            "excluded": {
                "counts": {reason: count for reason, count in self.excluded_counts.items() if count},
                "sample": [list(pair) for pair in self.excluded_sample],
            },
            "eligible": self.eligible,
            "us": {"kernel": round(self.kernel_us, 1), "total": round(self.total_us, 1)},
            **relaxed,
        }


@dataclass(frozen=True, slots=True)
class Assign:
    """Offer `conv_id` to `agent_id` (it counts against the agent's capacity until closed, or
    until the offer times out unaccepted). `previous_agent` lost the conversation, if any."""

    conv_id: int
    agent_id: str
    decision: RoutingDecision
    previous_agent: str | None = None


@dataclass(frozen=True, slots=True)
class Queued:
    """`conv_id` waits at `position` (1-based) of its site's queue."""

    conv_id: int
    position: int
    eta_s: float | None
    decision: RoutingDecision
    previous_agent: str | None = None


@dataclass(frozen=True, slots=True)
class QueuePosition:
    """A waiting conversation's position or ETA changed (tell the visitor)."""

    conv_id: int
    position: int
    eta_s: float | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """Nothing changed: queue full, unknown or unavailable transfer target, ..."""

    conv_id: int
    reason: str
    decision: RoutingDecision | None = None


Outcome = Assign | Queued | QueuePosition | Rejected


# --- state ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Conversation:
    request: RouteRequest
    opened_at: float
    ring_started_at: float
    p_neg: float
    state: str = "new"  # "queued" | "offered" | "active"
    agent_index: int = -1
    assigned_at: float = 0.0
    declined: set[str] = field(default_factory=set)  # let an offer time out or transferred away
    ring: int = 0
    queue_key: tuple[int, float, int] | None = None
    escalated: bool = False
    reported: tuple[int, float | None] | None = None
    relaxed_from: int | None = None  # the ring it skipped from because no online agent held the skill


@dataclass(slots=True)
class _Agent:
    profile: AgentProfile
    index: int
    conversations: set[int] = field(default_factory=set)


@dataclass(slots=True)
class _KernelResult:
    top: list[tuple[int, float, float, float, float, float, float]]
    counts: tuple[int, ...]
    sample: list[tuple[int, int]]
    eligible: int
    kernel_us: float


class RoutingEngine:
    """Event-in, outcome-out routing state machine. See the module docstring."""

    def __init__(self, config: RoutingConfig | None = None, *, scorer: Scorer | None = None) -> None:
        self.config = config or RoutingConfig()
        self._site_configs: dict[int, RoutingConfig] = {}
        self._score = scorer or _default_scorer()
        self._table = AgentTable()
        self._agents: dict[str, _Agent] = {}
        self._agent_ids: list[str | None] = []  # index -> agent id
        self._registered_per_site: dict[int, int] = {}
        self._free_slots: dict[int, int] = {}
        self._online_capacity: dict[int, int] = {}
        self._skills = SkillTrie()
        self._agent_skills: dict[int, dict[int, float]] = {}
        self._skill_index: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._resolved_paths: dict[str, list[int]] = {}  # valid while the trie does not grow
        self._resolved_trie_size = 0
        self._languages: dict[str, int] = {}
        self._conversations: dict[int, _Conversation] = {}
        self._queues: dict[int, list[tuple[int, float, int, int]]] = {}
        self._queue_seq = 0
        self._offered: dict[int, None] = {}  # conv ids awaiting acceptance, oldest first
        self._handle_time: dict[int, float] = {}
        self._last_agent: OrderedDict[str, tuple[str, float]] = OrderedDict()
        # Where a conversation's current mood lives when it is not pushed here per message (the
        # native mood pipe: the hub hears only alerts). None: the last `sentiment_changed` value.
        self.mood_of: Callable[[int], float | None] | None = None

    # --- configuration --------------------------------------------------------------------------

    def set_site_config(self, site_id: int, overrides: Mapping[str, Any]) -> None:
        """Per-site overrides of `RoutingConfig` fields; ``weights`` may be a partial dict."""
        values: dict[str, Any] = {}
        for key, value in overrides.items():
            if key in _ENGINE_WIDE or key not in RoutingConfig.__dataclass_fields__:
                raise ValueError(f"not a per-site routing setting: {key!r}")
            if key == "weights" and isinstance(value, Mapping):
                value = dataclasses.replace(self.config.weights, **value)
            values[key] = value
        self._site_configs[site_id] = dataclasses.replace(self.config, **values)

    def site_config(self, site_id: int) -> RoutingConfig:
        return self._site_configs.get(site_id, self.config)

    # --- agent events ---------------------------------------------------------------------------

    def agent_online(self, profile: AgentProfile, now: float, *,
                     holding: Sequence[RouteRequest] = ()) -> list[Outcome]:
        """The agent is available. `holding`: conversations assigned to it before this engine knew
        them (a server restart); they count against its capacity before the queue drains."""
        is_new = profile.agent_id not in self._agents
        agent = self._upsert(profile)
        if is_new:
            # Idle time (the fairness term) counts from registration, not from the clock's epoch.
            self._table.last_assigned[agent.index] = now
        self._set_status(agent, STATUS_ONLINE)
        for request in holding:
            if request.conv_id not in self._conversations:
                self._adopt(request, agent, now)
        return self._drain(profile.site_id, now)

    def agent_updated(self, profile: AgentProfile, now: float) -> list[Outcome]:
        agent = self._agents.get(profile.agent_id)
        if agent is None:
            raise KeyError(profile.agent_id)
        old_site = agent.profile.site_id
        status = int(self._table.status[agent.index])
        self._set_status(agent, STATUS_OFFLINE)
        self._upsert(profile)
        self._set_status(agent, status)
        outcomes = self._drain(profile.site_id, now) if status == STATUS_ONLINE else []
        if old_site != profile.site_id:
            outcomes += self._reroute_all(agent, now, "reroute:agent_moved", active_too=True)
        return outcomes

    def agent_away(self, agent_id: str, now: float) -> list[Outcome]:
        agent = self._require_agent(agent_id)
        self._set_status(agent, STATUS_AWAY)
        return self._reroute_all(agent, now, "reroute:agent_away", active_too=False)

    def agent_unreachable(self, agent_id: str) -> None:
        """The agent's last connection dropped (the reconnect grace runs): it keeps its conversations
        and pending offers, but nothing new is offered to an agent nobody can reach. `agent_online`
        when it reconnects, `agent_offline` when the grace ends."""
        self._set_status(self._require_agent(agent_id), STATUS_AWAY)

    def agent_offline(self, agent_id: str, now: float) -> list[Outcome]:
        agent = self._require_agent(agent_id)
        self._set_status(agent, STATUS_OFFLINE)
        active_too = self.site_config(agent.profile.site_id).reroute_active_on_offline
        return self._reroute_all(agent, now, "reroute:agent_offline", active_too=active_too)

    def agent_removed(self, agent_id: str, now: float) -> list[Outcome]:
        agent = self._require_agent(agent_id)
        self._set_status(agent, STATUS_OFFLINE)
        outcomes = self._reroute_all(agent, now, "reroute:agent_removed", active_too=True)
        site = agent.profile.site_id
        self._registered_per_site[site] -= 1
        self._agent_skills.pop(agent.index, None)
        self._skill_index = None
        self._table.release(agent.index)
        self._agent_ids[agent.index] = None
        del self._agents[agent_id]
        return outcomes

    # --- conversation events --------------------------------------------------------------------

    def conversation_opened(self, request: RouteRequest, now: float) -> Outcome:
        if request.conv_id in self._conversations:
            raise ValueError(f"conversation {request.conv_id} is already routed")
        conversation = _Conversation(request=request, opened_at=now, ring_started_at=now, p_neg=request.p_neg)
        self._conversations[request.conv_id] = conversation
        outcome = self._route(conversation, now, "scored", allow_sticky=True)
        if isinstance(outcome, Rejected):
            del self._conversations[request.conv_id]
        return outcome

    def conversation_accepted(self, conv_id: int, agent_id: str, now: float) -> bool:
        conversation = self._conversations.get(conv_id)
        if conversation is None or conversation.state != "offered":
            return False
        if self._agent_ids[conversation.agent_index] != agent_id:
            return False
        conversation.state = "active"
        self._offered.pop(conv_id, None)
        return True

    def conversation_closed(self, conv_id: int, now: float) -> list[Outcome]:
        conversation = self._conversations.pop(conv_id, None)
        if conversation is None:
            return []
        site = conversation.request.site_id
        if conversation.state == "queued":
            self._dequeue(conversation)
            return []
        if conversation.agent_index < 0:
            return []
        config = self.site_config(site)
        handled = max(now - conversation.assigned_at, 0.0)
        previous = self._handle_time.get(site, config.default_handle_time_s)
        self._handle_time[site] = previous + config.handle_time_alpha * (handled - previous)
        agent_id = self._release(conversation)
        if conversation.request.visitor_id is not None and agent_id is not None:
            self._remember(conversation.request.visitor_id, agent_id, now)
        return self._drain(site, now)

    def transfer(
        self,
        conv_id: int,
        now: float,
        *,
        to_agent: str | None = None,
        to_skill: str | None = None,
        from_agent: str | None = None,
    ) -> Outcome:
        """Moves a conversation to a named agent, or re-routes it to a skill (or, with neither,
        to the best other agent). The current agent is excluded from the re-route. With
        `from_agent`, the transfer only happens if that agent currently holds the conversation
        (a stale or forged request from another agent is rejected)."""
        conversation = self._conversations.get(conv_id)
        if conversation is None:
            return Rejected(conv_id, "unknown_conversation")
        if from_agent is not None and self.assigned_agent(conv_id) != from_agent:
            return Rejected(conv_id, "not_assigned_to_sender")
        if to_agent is not None and to_skill is not None:
            raise ValueError("transfer to an agent or to a skill, not both")
        started = time.perf_counter_ns()
        if to_agent is not None:
            target = self._agents.get(to_agent)
            if target is None:
                return Rejected(conv_id, "unknown_agent")
            # An explicit transfer overrides earlier declines, not the request's own exclusions.
            result = self._run_kernel(
                conversation, np.array([target.index], dtype=np.int32), now=now, min_skill_match=0.0,
                honour_declined=False,
            )
            if not result.top:
                failed = [EXCLUSION_REASONS[code] for code, count in enumerate(result.counts) if count]
                reason = failed[0] if failed else "not_online"
                decision = self._decision(
                    conversation, None, f"transfer_unavailable:{reason}", result, started
                )
                return Rejected(conv_id, f"transfer_target_unavailable:{reason}", decision)
            previous = self._release(conversation)
            decision = self._decision(conversation, to_agent, "transfer", result, started)
            return self._assign(conversation, target, decision, now, previous)
        if to_skill is not None:
            conversation.request = dataclasses.replace(conversation.request, skill_path=to_skill)
            conversation.ring_started_at = now
            conversation.ring = 0
            conversation.relaxed_from = None
        current = self._agent_ids[conversation.agent_index] if conversation.agent_index >= 0 else None
        if current is not None:
            conversation.declined.add(current)
        if conversation.state == "queued":
            self._dequeue(conversation)
        previous = self._release(conversation)
        return self._route(conversation, now, "transfer", previous_agent=previous)

    def sentiment_changed(self, conv_id: int, p_neg: float, now: float) -> list[Outcome]:
        """Records the visitor's current mood; escalates an assigned conversation once when the
        mood turns bad and the agent is a weak de-escalator, if a strong one is free."""
        if not 0.0 <= p_neg <= 1.0:
            raise ValueError("p_neg must be within 0..1")
        conversation = self._conversations.get(conv_id)
        if conversation is None:
            return []
        conversation.p_neg = p_neg
        config = self.site_config(conversation.request.site_id)
        if (
            not config.escalation
            or conversation.escalated
            or conversation.agent_index < 0
            or p_neg < config.angry_threshold
            or self._table.deesc[conversation.agent_index] >= config.escalate_below_deesc
        ):
            return []
        started = time.perf_counter_ns()
        candidates = self._table.candidates(conversation.request.site_id)
        strong = candidates[self._table.deesc[candidates] >= config.escalation_min_deesc]
        current = self._agent_ids[conversation.agent_index]
        result = self._run_kernel(
            conversation, strong, now=now, min_skill_match=config.escalation_min_skill_match,
            excluded=(current,),
        )
        if not result.top:
            return []
        target = self._agents[self._agent_ids[result.top[0][0]]]  # type: ignore[index]
        previous = self._release(conversation)
        conversation.escalated = True
        decision = self._decision(conversation, target.profile.agent_id, "escalation", result, started)
        return [self._assign(conversation, target, decision, now, previous)]

    def escalation_threshold(self, conv_id: int) -> float | None:
        """The mood at which `sentiment_changed` could escalate this conversation (its site's
        `angry_threshold`), or None when it never will: unknown, already escalated, or escalation
        off for its site. The native mood pipe alerts at this threshold instead of reporting every
        message's mood."""
        conversation = self._conversations.get(conv_id)
        if conversation is None or conversation.escalated:
            return None
        config = self.site_config(conversation.request.site_id)
        return config.angry_threshold if config.escalation else None

    def conversation_ids(self, site_id: int) -> list[int]:
        """The open conversations of a site this engine routes (e.g. to re-arm mood alerts after its
        configuration changed)."""
        return [conv_id for conv_id, conversation in self._conversations.items()
                if conversation.request.site_id == site_id]

    def _p_neg(self, conversation: _Conversation) -> float:
        if self.mood_of is not None:
            mood = self.mood_of(conversation.request.conv_id)
            if mood is not None:
                return min(max(mood, 0.0), 1.0)
        return conversation.p_neg

    def tick(self, now: float) -> list[Outcome]:
        """Accept timeouts, ring relaxation, and queue position/ETA updates."""
        outcomes: list[Outcome] = []
        timed_out_sites: set[int] = set()
        for conv_id in list(self._offered):
            conversation = self._conversations[conv_id]
            config = self.site_config(conversation.request.site_id)
            if now - conversation.assigned_at < config.accept_timeout_s:
                continue
            agent_id = self._agent_ids[conversation.agent_index]
            if agent_id is not None:
                conversation.declined.add(agent_id)
            previous = self._release(conversation)
            outcomes.append(self._route(conversation, now, "reroute:accept_timeout", previous_agent=previous))
            timed_out_sites.add(conversation.request.site_id)
        for site, queue in list(self._queues.items()):
            config = self.site_config(site)
            # A timed-out offer freed a slot that other waiting conversations may take.
            relaxed = site in timed_out_sites
            held_rings: dict[tuple[str | None, str | None], int] = {}  # per skill and language, this tick
            for *_, conv_id in list(queue):
                conversation = self._conversations[conv_id]
                ring = config.ring_at(now - conversation.ring_started_at)
                if ring > conversation.ring:
                    conversation.ring = ring
                    relaxed = True
                # The agents who held the skill may have gone since it was queued.
                relaxed |= self._relax_to_held_ring(conversation, config, held_rings)
            if relaxed:
                outcomes += self._drain(site, now)
            for position, (*_, conv_id) in enumerate(queue, start=1):
                conversation = self._conversations[conv_id]
                eta = self._eta(site, position)
                last = conversation.reported
                if last is None or last[0] != position or _eta_moved(last[1], eta, config.eta_report_delta_s):
                    conversation.reported = (position, eta)
                    outcomes.append(QueuePosition(conv_id, position, eta))
        return outcomes

    def queued_count(self) -> int:
        """Conversations waiting in any site's queue (the kefu_queue_length gauge)."""
        return sum(len(queue) for queue in self._queues.values())

    def queue_position(self, conv_id: int) -> tuple[int, float | None] | None:
        conversation = self._conversations.get(conv_id)
        if conversation is None or conversation.queue_key is None:
            return None
        site = conversation.request.site_id
        position = bisect.bisect_left(self._queues[site], (*conversation.queue_key, conv_id)) + 1
        return position, self._eta(site, position)

    def agent_load(self, agent_id: str) -> tuple[int, int]:
        """(load, capacity) of an agent."""
        agent = self._require_agent(agent_id)
        return int(self._table.load[agent.index]), int(self._table.capacity[agent.index])

    def assigned_agent(self, conv_id: int) -> str | None:
        conversation = self._conversations.get(conv_id)
        if conversation is None or conversation.agent_index < 0:
            return None
        return self._agent_ids[conversation.agent_index]

    # --- routing core ---------------------------------------------------------------------------

    def _route(
        self,
        conversation: _Conversation,
        now: float,
        reason: str,
        *,
        allow_sticky: bool = False,
        previous_agent: str | None = None,
        enqueue: bool = True,
    ) -> Outcome:
        started = time.perf_counter_ns()
        request = conversation.request
        config = self.site_config(request.site_id)
        if allow_sticky:
            for sticky_reason, agent_id in self._sticky_candidates(request, config, now):
                agent = self._agents.get(agent_id)
                if agent is None or agent_id in request.exclude:
                    continue
                result = self._run_kernel(
                    conversation, np.array([agent.index], dtype=np.int32), now=now, min_skill_match=0.0
                )
                if result.top:
                    decision = self._decision(conversation, agent_id, sticky_reason, result, started)
                    return self._assign(conversation, agent, decision, now, previous_agent)
        min_match = config.ring_schedule[conversation.ring][1]
        result = self._run_kernel(
            conversation, self._table.candidates(request.site_id), now=now, min_skill_match=min_match
        )
        if not result.top and self._relax_to_held_ring(conversation, config):
            result = self._run_kernel(
                conversation, self._table.candidates(request.site_id), now=now,
                min_skill_match=config.ring_schedule[conversation.ring][1],
            )
        if result.top:
            agent_id = self._agent_ids[result.top[0][0]]
            assert agent_id is not None
            decision = self._decision(conversation, agent_id, reason, result, started)
            return self._assign(conversation, self._agents[agent_id], decision, now, previous_agent)
        if not enqueue:
            return Rejected(request.conv_id, "no_eligible_agent")
        queue_reason = "queued:no_agent_online" if not self._table.candidates(request.site_id).size else (
            "queued:no_eligible_agent"
        )
        if reason != "scored":
            queue_reason = f"{reason}>{queue_reason}"
        decision = self._decision(conversation, None, queue_reason, result, started)
        if conversation.state != "queued":
            queue = self._queues.setdefault(request.site_id, [])
            if len(queue) >= config.max_queue:
                return Rejected(request.conv_id, "queue_full", decision)
            self._queue_seq += 1
            conversation.queue_key = (-request.priority, conversation.opened_at, self._queue_seq)
            bisect.insort(queue, (*conversation.queue_key, request.conv_id))
            conversation.state = "queued"
        position, eta = self.queue_position(request.conv_id)  # type: ignore[misc]
        conversation.reported = (position, eta)
        return Queued(request.conv_id, position, eta, decision, previous_agent)

    def _sticky_candidates(
        self, request: RouteRequest, config: RoutingConfig, now: float
    ) -> Iterable[tuple[str, str]]:
        if request.preferred_agent is not None:
            yield "preferred", request.preferred_agent
        if request.visitor_id is not None:
            remembered = self._last_agent.get(request.visitor_id)
            if remembered is not None and now - remembered[1] <= config.sticky_window_s:
                yield "sticky", remembered[0]

    def _relax_to_held_ring(
        self,
        conversation: _Conversation,
        config: RoutingConfig,
        memo: dict[tuple[str | None, str | None], int] | None = None,
    ) -> bool:
        """Skips the rings whose skill requirement no online agent can meet, at once: waiting
        for them cannot help while other agents may sit idle. Load is ignored on purpose: a busy
        agent who holds the skill is worth the timed wait. Returns whether the ring moved."""
        request = conversation.request
        if request.skill_path is None or conversation.ring + 1 >= len(config.ring_schedule):
            return False
        memo_key = (request.skill_path, request.lang)
        personal = bool(request.exclude or conversation.declined)
        held = memo.get(memo_key) if memo is not None and not personal else None
        if held is None:
            held = self._best_held_match(conversation)
            if memo is not None and not personal:
                memo[memo_key] = held
        if held < 0:
            return False  # nobody eligible is online at all: the timed schedule is all there is
        ring = conversation.ring
        while ring + 1 < len(config.ring_schedule) and held < config.ring_schedule[ring][1]:
            ring += 1
        if ring == conversation.ring:
            return False
        if conversation.relaxed_from is None:
            conversation.relaxed_from = conversation.ring
        conversation.ring = ring
        return True

    def _best_held_match(self, conversation: _Conversation) -> float:
        """The best skill match (deepest level of the requested path held, over its depth) among
        online agents of the site that no hard filter but skill and load excludes; -1 when there
        are none."""
        request = conversation.request
        table = self._table
        candidates = table.candidates(request.site_id)
        excluded = [self._agents[agent_id].index for agent_id in (*request.exclude, *conversation.declined)
                    if agent_id in self._agents]
        if excluded:
            candidates = candidates[~np.isin(candidates, excluded)]
        if request.lang:
            lang_bits = self._language_bits((request.lang,))
            candidates = candidates[(table.lang[candidates] & lang_bits) != 0]
        if not candidates.size:
            return -1.0
        path = self._resolve_skill(request.skill_path) if request.skill_path else []
        if not path:
            return 1.0
        indptr, holders, _ = self._skill_columns()
        for level in range(len(path), 0, -1):
            node = path[level - 1]
            if 0 <= node < len(indptr) - 1 and np.isin(holders[indptr[node]:indptr[node + 1]], candidates).any():
                return level / len(path)
        return 0.0

    def _run_kernel(
        self,
        conversation: _Conversation,
        candidates: np.ndarray,
        *,
        now: float,
        min_skill_match: float,
        excluded: Iterable[str | None] = (),
        honour_declined: bool = True,
    ) -> _KernelResult:
        request = conversation.request
        config = self.site_config(request.site_id)
        declined = conversation.declined if honour_declined else ()
        excluded_ids = [
            self._agents[agent_id].index
            for agent_id in (*request.exclude, *declined, *excluded)
            if agent_id is not None and agent_id in self._agents
        ]
        skill_path = self._resolve_skill(request.skill_path) if request.skill_path else []
        indptr, holders, proficiency = self._skill_columns()
        scratch_credit, scratch_depth = self._table.scratch()
        visitor_geohash = (
            geohash.encode_int(*request.visitor_geo, config.geo_precision)
            if request.visitor_geo is not None else None
        )
        started = time.perf_counter_ns()
        top, counts, sample, eligible = self._score(
            candidates,
            *self._table.kernel_columns(),
            indptr,
            holders,
            proficiency,
            scratch_credit,
            scratch_depth,
            site_id=request.site_id,
            lang_bits=self._language_bits((request.lang,)) if request.lang else 0,
            visitor_geohash=visitor_geohash,
            geo_precision=config.geo_precision,
            p_neg=self._p_neg(conversation),
            skill_path=skill_path,
            no_skill_value=config.no_skill_value,
            min_skill_match=min_skill_match,
            excluded=excluded_ids,
            now=now,
            fairness_horizon_s=config.fairness_horizon_s,
            weights=config.weights.as_tuple(),
            top_k=config.top_k,
            excluded_sample=config.excluded_sample,
        )
        kernel_us = (time.perf_counter_ns() - started) / 1000
        return _KernelResult(top, tuple(counts), sample, eligible, kernel_us)

    def _decision(
        self,
        conversation: _Conversation,
        agent_id: str | None,
        reason: str,
        result: _KernelResult,
        started_ns: int,
    ) -> RoutingDecision:
        site = conversation.request.site_id
        counts = dict(zip(EXCLUSION_REASONS, result.counts))
        # Agents that are away or offline are not in the scanned online list; count them here.
        offline = self._registered_per_site.get(site, 0) - len(self._table.online.get(site, ()))
        counts["not_online"] += max(offline, 0)
        ids = self._agent_ids
        return RoutingDecision(
            conv_id=conversation.request.conv_id,
            agent_id=agent_id,
            reason=reason,
            ring=conversation.ring,
            weights=self.site_config(site).weights,
            top=tuple((ids[index] or "?", *values) for index, *values in result.top),  # type: ignore[misc]
            excluded_counts=counts,
            excluded_sample=tuple(
                (ids[index] or "?", EXCLUSION_REASONS[code]) for index, code in result.sample
            ),
            eligible=result.eligible,
            kernel_us=result.kernel_us,
            total_us=(time.perf_counter_ns() - started_ns) / 1000,
            relaxed_from=conversation.relaxed_from,
        )

    def _assign(
        self,
        conversation: _Conversation,
        agent: _Agent,
        decision: RoutingDecision,
        now: float,
        previous_agent: str | None,
    ) -> Assign:
        if conversation.state == "queued":
            self._dequeue(conversation)
        index = agent.index
        site = agent.profile.site_id
        self._free_slots[site] -= self._slots(index)
        self._table.load[index] += 1
        self._free_slots[site] += self._slots(index)
        self._table.last_assigned[index] = now
        agent.conversations.add(conversation.request.conv_id)
        conversation.agent_index = index
        conversation.assigned_at = now
        conversation.state = "offered"
        conversation.reported = None
        self._offered[conversation.request.conv_id] = None
        if conversation.request.visitor_id is not None:
            self._remember(conversation.request.visitor_id, agent.profile.agent_id, now)
        return Assign(conversation.request.conv_id, agent.profile.agent_id, decision, previous_agent)

    def _adopt(self, request: RouteRequest, agent: _Agent, now: float) -> None:
        """Take over an assignment made elsewhere (before a restart) as an accepted one."""
        conversation = _Conversation(request=request, opened_at=now, ring_started_at=now, p_neg=request.p_neg)
        self._conversations[request.conv_id] = conversation
        index = agent.index
        site = agent.profile.site_id
        self._free_slots[site] -= self._slots(index)
        self._table.load[index] += 1
        self._free_slots[site] += self._slots(index)
        agent.conversations.add(request.conv_id)
        conversation.agent_index = index
        conversation.assigned_at = now
        conversation.state = "active"

    def _release(self, conversation: _Conversation) -> str | None:
        """Takes the conversation off its agent; returns that agent's id."""
        index = conversation.agent_index
        self._offered.pop(conversation.request.conv_id, None)
        if index < 0:
            return None
        agent_id = self._agent_ids[index]
        if agent_id is not None:
            agent = self._agents[agent_id]
            site = agent.profile.site_id
            self._free_slots[site] -= self._slots(index)
            self._table.load[index] -= 1
            self._free_slots[site] += self._slots(index)
            agent.conversations.discard(conversation.request.conv_id)
        conversation.agent_index = -1
        conversation.state = "new"
        return agent_id

    def _drain(self, site: int, now: float) -> list[Outcome]:
        """Offers queued conversations, in priority-then-age order, to whoever has room now."""
        queue = self._queues.get(site)
        if not queue:
            return []
        outcomes: list[Outcome] = []
        limit = self.site_config(site).drain_scan_limit
        for *_, conv_id in list(queue[:limit]):
            if self._free_slots.get(site, 0) <= 0:
                break
            conversation = self._conversations[conv_id]
            outcome = self._route(conversation, now, "dequeued", enqueue=False)
            if isinstance(outcome, Assign):
                outcomes.append(outcome)
        return outcomes

    def _reroute_all(self, agent: _Agent, now: float, reason: str, *, active_too: bool) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for conv_id in sorted(agent.conversations):
            conversation = self._conversations[conv_id]
            if conversation.state == "active" and not active_too:
                continue
            previous = self._release(conversation)
            outcomes.append(self._route(conversation, now, reason, previous_agent=previous))
        return outcomes

    def _dequeue(self, conversation: _Conversation) -> None:
        if conversation.queue_key is None:
            return
        queue = self._queues[conversation.request.site_id]
        entry = (*conversation.queue_key, conversation.request.conv_id)
        position = bisect.bisect_left(queue, entry)
        if position < len(queue) and queue[position] == entry:
            del queue[position]
        conversation.queue_key = None
        conversation.state = "new"

    def _eta(self, site: int, position: int) -> float | None:
        capacity = self._online_capacity.get(site, 0)
        if capacity <= 0:
            return None
        handle_time = self._handle_time.get(site, self.site_config(site).default_handle_time_s)
        return round(position * handle_time / capacity, 1)

    def _remember(self, visitor_id: str, agent_id: str, now: float) -> None:
        self._last_agent[visitor_id] = (agent_id, now)
        self._last_agent.move_to_end(visitor_id)
        while len(self._last_agent) > self.config.sticky_memory:
            self._last_agent.popitem(last=False)

    # --- agent state ----------------------------------------------------------------------------

    def _require_agent(self, agent_id: str) -> _Agent:
        agent = self._agents.get(agent_id)
        if agent is None:
            raise KeyError(agent_id)
        return agent

    def _slots(self, index: int) -> int:
        """Free capacity an agent contributes to its site (0 unless online)."""
        if self._table.status[index] != STATUS_ONLINE:
            return 0
        return max(int(self._table.capacity[index]) - int(self._table.load[index]), 0)

    def _set_status(self, agent: _Agent, status: int) -> None:
        index = agent.index
        site = agent.profile.site_id
        was_online = self._table.status[index] == STATUS_ONLINE
        self._free_slots[site] = self._free_slots.get(site, 0) - self._slots(index)
        self._table.set_status(index, status)
        self._free_slots[site] += self._slots(index)
        capacity = int(self._table.capacity[index])
        if was_online and status != STATUS_ONLINE:
            self._online_capacity[site] -= capacity
        elif status == STATUS_ONLINE and not was_online:
            self._online_capacity[site] = self._online_capacity.get(site, 0) + capacity

    def _upsert(self, profile: AgentProfile) -> _Agent:
        """Writes a profile into the columns (the agent must be offline in the table or new)."""
        agent = self._agents.get(profile.agent_id)
        if agent is None:
            index = self._table.allocate()
            if index == len(self._agent_ids):
                self._agent_ids.append(profile.agent_id)
            else:
                self._agent_ids[index] = profile.agent_id
            agent = _Agent(profile, index)
            self._agents[profile.agent_id] = agent
            self._count_registration(profile.site_id)
        else:
            if self._table.status[agent.index] == STATUS_ONLINE:
                self._set_status(agent, STATUS_OFFLINE)
            if agent.profile.site_id != profile.site_id:
                self._registered_per_site[agent.profile.site_id] -= 1
                self._count_registration(profile.site_id)
            agent.profile = profile
        config = self.config
        table = self._table
        index = agent.index
        if profile.geo is not None:
            table.geohash[index] = geohash.encode_int(*profile.geo, config.geo_precision)
            table.geo_valid[index] = 1
        else:
            table.geohash[index] = 0
            table.geo_valid[index] = 0
        table.deesc[index] = profile.deescalation
        table.lang[index] = self._language_bits(profile.languages, register=True)
        table.capacity[index] = profile.capacity
        table.site[index] = profile.site_id
        skills = {self._skills.intern(path): float(level) for path, level in profile.skills.items()}
        if self._agent_skills.get(index) != skills:
            self._agent_skills[index] = skills
            self._skill_index = None
        return agent

    def _resolve_skill(self, path: str) -> list[int]:
        if self._resolved_trie_size != len(self._skills) or len(self._resolved_paths) > 4096:
            self._resolved_paths.clear()
            self._resolved_trie_size = len(self._skills)
        resolved = self._resolved_paths.get(path)
        if resolved is None:
            resolved = self._resolved_paths[path] = self._skills.resolve(path)
        return resolved

    def _count_registration(self, site: int) -> None:
        self._registered_per_site[site] = self._registered_per_site.get(site, 0) + 1

    def _skill_columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Rebuilt lazily after skill edits, at most once per burst of agent events.
        if self._skill_index is None:
            self._skill_index = build_skill_index(self._agent_skills, len(self._skills))
        return self._skill_index

    def _language_bits(self, languages: Iterable[str | None], *, register: bool = False) -> int:
        bits = 0
        for language in languages:
            if not language:
                continue
            code = language.strip().lower().split("-")[0].split("_")[0][:16]
            bit = self._languages.get(code)
            if bit is None:
                if not register:
                    bits |= _UNKNOWN_LANGUAGE_BIT
                    continue
                if len(self._languages) >= MAX_LANGUAGES:
                    raise ValueError(f"at most {MAX_LANGUAGES} distinct agent languages are supported")
                bit = 1 << len(self._languages)
                self._languages[code] = bit
            bits |= bit
        return bits


def _eta_moved(previous: float | None, current: float | None, delta: float) -> bool:
    if previous is None or current is None:
        return previous is not current
    return abs(previous - current) >= delta
