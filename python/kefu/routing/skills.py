"""Skill tree: tag paths such as ``billing/refund/card`` interned into a trie of node ids, and the
CSC index (node → agents holding that exact skill, with proficiency) that the routing kernel reads.

A request for ``billing/refund/card`` resolves to the ids of ``billing``, ``billing/refund`` and
``billing/refund/card``; the kernel gives an agent holding an ancestor ``depth(s)/depth(q)`` of
its proficiency as partial credit. Paths are hostile input (admin API, plugins): they are bounded
in depth and segment length and normalised (trimmed, case-folded).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt

MAX_SKILL_DEPTH = 8
MAX_SEGMENT_CHARS = 64
MISSING_NODE = -1


def parse_skill_path(path: str) -> tuple[str, ...]:
    """Normalised segments of a skill path; ValueError when empty, too deep or malformed."""
    if not isinstance(path, str) or len(path) > MAX_SKILL_DEPTH * (MAX_SEGMENT_CHARS + 1):
        raise ValueError("skill path must be a short string")
    segments = tuple(segment.strip().casefold() for segment in path.strip().strip("/").split("/"))
    if not segments or len(segments) > MAX_SKILL_DEPTH:
        raise ValueError(f"skill path depth must be 1..{MAX_SKILL_DEPTH}: {path!r}")
    for segment in segments:
        if not segment or len(segment) > MAX_SEGMENT_CHARS or not segment.isprintable():
            raise ValueError(f"malformed skill path segment in {path!r}")
    return segments


class SkillTrie:
    """Interns skill paths into dense node ids (0, 1, 2, ...) in order of first appearance."""

    __slots__ = ("_children", "_depth", "_parent", "_segment")

    def __init__(self) -> None:
        # Index 0 of `_children` is the root; node id n lives at index n + 1.
        self._children: list[dict[str, int]] = [{}]
        self._parent: list[int] = []
        self._segment: list[str] = []
        self._depth: list[int] = []

    def __len__(self) -> int:
        return len(self._parent)

    def intern(self, path: str) -> int:
        """Node id of `path`, creating the missing nodes along it."""
        slot = 0
        node = MISSING_NODE
        for depth, segment in enumerate(parse_skill_path(path), start=1):
            child = self._children[slot].get(segment)
            if child is None:
                child = len(self._parent)
                self._children[slot][segment] = child
                self._children.append({})
                self._parent.append(node)
                self._segment.append(segment)
                self._depth.append(depth)
            node = child
            slot = node + 1
        return node

    def resolve(self, path: str) -> list[int]:
        """Node ids from depth 1 down to `path`; `MISSING_NODE` for segments nobody holds yet.

        The list always has the requested depth, so partial credit is computed against the depth
        asked for, not the depth that happens to exist.
        """
        segments = parse_skill_path(path)
        ids = [MISSING_NODE] * len(segments)
        slot = 0
        for level, segment in enumerate(segments):
            child = self._children[slot].get(segment)
            if child is None:
                break
            ids[level] = child
            slot = child + 1
        return ids

    def depth(self, node: int) -> int:
        """Depth of a node (1 for a top-level skill)."""
        return self._depth[node]

    def path(self, node: int) -> str:
        """The normalised path of a node."""
        segments = []
        while node != MISSING_NODE:
            segments.append(self._segment[node])
            node = self._parent[node]
        return "/".join(reversed(segments))


def build_skill_index(
    agent_skills: Mapping[int, Mapping[int, float]] | Iterable[tuple[int, Mapping[int, float]]],
    node_count: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """CSC arrays ``(indptr, agents, proficiency)`` from ``{agent index: {node id: proficiency}}``.

    Within a node's column agents are sorted by index, which keeps the index deterministic.
    """
    items = agent_skills.items() if isinstance(agent_skills, Mapping) else agent_skills
    nodes: list[int] = []
    agents: list[int] = []
    proficiency: list[float] = []
    for agent, skills in items:
        for node, level in skills.items():
            nodes.append(node)
            agents.append(agent)
            proficiency.append(level)
    node_array = np.asarray(nodes, dtype=np.int64)
    agent_array = np.asarray(agents, dtype=np.int32)
    order = np.lexsort((agent_array, node_array))
    counts = np.bincount(node_array, minlength=node_count) if nodes else np.zeros(node_count, np.int64)
    indptr = np.zeros(node_count + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return (
        indptr,
        np.ascontiguousarray(agent_array[order]),
        np.ascontiguousarray(np.asarray(proficiency, dtype=np.float32)[order]),
    )
