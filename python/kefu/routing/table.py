"""Agent state as a struct-of-arrays that the routing kernel scans, kept current by events.

Columns are numpy arrays indexed by a dense agent index. Indices of removed agents are reused
(lowest first, so layouts are deterministic); columns grow by doubling and are never rebuilt per
request. For every site the table also maintains the list of *online* agent indices (the shard's
candidate list), with O(1) insertion and swap-removal, so a routing call scans only agents that can
possibly be chosen.
"""

from __future__ import annotations

import heapq

import numpy as np
import numpy.typing as npt

STATUS_OFFLINE = 0
STATUS_ONLINE = 1
STATUS_AWAY = 2

# Reason codes of the kernel (index into its excluded counts), by name.
EXCLUSION_REASONS = ("not_online", "other_site", "excluded", "at_capacity", "language", "skill")

_COLUMNS: tuple[tuple[str, type[np.generic]], ...] = (
    ("geohash", np.uint64),
    ("geo_valid", np.uint8),
    ("deesc", np.float32),
    ("lang", np.uint8),
    ("load", np.uint16),
    ("capacity", np.uint16),
    ("status", np.uint8),
    ("last_assigned", np.float64),
    ("site", np.int32),
    ("scratch_credit", np.float64),
    ("scratch_depth", np.uint8),
)


class IndexList:
    """A set of agent indices stored contiguously for the kernel: O(1) add and swap-remove."""

    __slots__ = ("_buffer", "_count", "_position")

    def __init__(self) -> None:
        self._buffer = np.zeros(16, dtype=np.int32)
        self._count = 0
        self._position: dict[int, int] = {}

    def __len__(self) -> int:
        return self._count

    def __contains__(self, index: int) -> bool:
        return index in self._position

    def add(self, index: int) -> None:
        if index in self._position:
            return
        if self._count == len(self._buffer):
            self._buffer = np.concatenate([self._buffer, np.zeros_like(self._buffer)])
        self._buffer[self._count] = index
        self._position[index] = self._count
        self._count += 1

    def discard(self, index: int) -> None:
        position = self._position.pop(index, None)
        if position is None:
            return
        self._count -= 1
        last = int(self._buffer[self._count])
        if last != index:
            self._buffer[position] = last
            self._position[last] = position

    def view(self) -> npt.NDArray[np.int32]:
        """The indices as a contiguous int32 view (valid until the next add)."""
        return self._buffer[: self._count]


class AgentTable:
    """Struct-of-arrays agent columns plus per-site online lists."""

    def __init__(self, initial_capacity: int = 64) -> None:
        self._capacity = max(initial_capacity, 1)
        for name, dtype in _COLUMNS:
            setattr(self, name, np.zeros(self._capacity, dtype=dtype))
        self._high_water = 0
        self._free: list[int] = []
        self.online: dict[int, IndexList] = {}
        # Column views sized to the high-water mark, cached because every routing call needs them.
        self._views: tuple[np.ndarray, ...] | None = None

    # Column attributes, set in __init__ and replaced when the table grows.
    geohash: npt.NDArray[np.uint64]
    geo_valid: npt.NDArray[np.uint8]
    deesc: npt.NDArray[np.float32]
    lang: npt.NDArray[np.uint8]
    load: npt.NDArray[np.uint16]
    capacity: npt.NDArray[np.uint16]
    status: npt.NDArray[np.uint8]
    last_assigned: npt.NDArray[np.float64]
    site: npt.NDArray[np.int32]
    scratch_credit: npt.NDArray[np.float64]
    scratch_depth: npt.NDArray[np.uint8]

    def __len__(self) -> int:
        """Number of slots the kernel must size its view to (live and free)."""
        return self._high_water

    def allocate(self) -> int:
        """A fresh index with zeroed (offline) columns."""
        if self._free:
            return heapq.heappop(self._free)
        if self._high_water == self._capacity:
            self._grow()
        index = self._high_water
        self._high_water += 1
        self._views = None
        return index

    def release(self, index: int) -> None:
        """Returns an index for reuse; the agent must already be out of every online list."""
        for name, dtype in _COLUMNS:
            getattr(self, name)[index] = dtype(0)
        heapq.heappush(self._free, index)

    def set_status(self, index: int, status: int) -> None:
        site = int(self.site[index])
        self.status[index] = status
        if status == STATUS_ONLINE:
            self.online.setdefault(site, IndexList()).add(index)
        elif site in self.online:
            self.online[site].discard(index)

    def candidates(self, site: int) -> npt.NDArray[np.int32]:
        """Online agent indices of a site, in the order the kernel will scan them."""
        online = self.online.get(site)
        return online.view() if online is not None else np.zeros(0, dtype=np.int32)

    def kernel_columns(self) -> tuple[np.ndarray, ...]:
        """The agent columns and scratch buffers in the kernel's positional order, sized to the
        live high-water mark."""
        return self._column_views()[:9]

    def scratch(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.uint8]]:
        credit, depth = self._column_views()[9:]
        return credit, depth

    def _column_views(self) -> tuple[np.ndarray, ...]:
        if self._views is None:
            n = self._high_water
            self._views = tuple(getattr(self, name)[:n] for name, _ in _COLUMNS)
        return self._views

    def _grow(self) -> None:
        self._capacity *= 2
        for name, dtype in _COLUMNS:
            grown = np.zeros(self._capacity, dtype=dtype)
            old = getattr(self, name)
            grown[: len(old)] = old
            setattr(self, name, grown)
        self._views = None
