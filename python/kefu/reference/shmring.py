"""Reference twin of `kefu._native.ShmRing`: the same memory layout and record protocol, in Python.

It maps the same memfd layout (header page, stamps, owners, cells) and follows the same claim →
commit → release steps, but makes them atomic with a process-local lock instead of CAS, and waits by
polling instead of a futex. So it is right for one process at a time, and it can read what the native
ring wrote and the other way round: tests/native/test_shmring.py runs both on the same records and
cross-reads the same mapping.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time

__all__ = ["ShmRing"]

MAGIC = 0x4B45_4655_524E_4731
MAX_CELLS = 1 << 24
MIN_CELL_SIZE, MAX_CELL_SIZE = 16, 1 << 16
LEN_PREFIX = 4
STATE_BITS, CELLS_BITS = 2, 20
POS_SHIFT = STATE_BITS + CELLS_BITS
POS_MASK = (1 << (64 - POS_SHIFT)) - 1
MAX_RECORD_CELLS = (1 << CELLS_BITS) - 1
FREE, CLAIMED, COMMITTED = 0, 1, 2
HEADER_SIZE = 256
# Header field offsets (the native `#[repr(C)] Header`).
CELLS_AT, CELL_SIZE_AT, TOTAL_AT, TAIL_AT, HEAD_AT, ABANDONED_AT = 8, 16, 24, 64, 128, 136
PAGE = mmap.PAGESIZE


def _stamp(position: int, cells: int, state: int) -> int:
    return ((position & POS_MASK) << POS_SHIFT) | (cells << STATE_BITS) | state


def _layout(cells: int, cell_size: int) -> tuple[int, int, int, int]:
    def page_up(n: int) -> int:
        return -(-n // PAGE) * PAGE

    stamps = page_up(HEADER_SIZE)
    owners = stamps + cells * 8
    data = page_up(owners + cells * 4)
    return stamps, owners, data, page_up(data + cells * cell_size)


class ShmRing:
    def __init__(self, fd: int, *, owns_fd: bool) -> None:
        self._fd = fd
        self._owns_fd = owns_fd
        self._lock = threading.Lock()
        size = os.fstat(fd).st_size
        if size < PAGE:
            raise OSError("not a ring: too small")
        self._map = mmap.mmap(fd, size)
        magic, cells, cell_size, total = struct.unpack_from("<QQQQ", self._map, 0)
        if (magic != MAGIC or cells & (cells - 1) or not 2 <= cells <= MAX_CELLS or cell_size & (cell_size - 1)
                or not MIN_CELL_SIZE <= cell_size <= MAX_CELL_SIZE or _layout(cells, cell_size)[3] != total
                or total > size):
            self._map.close()
            raise OSError("not a ring of this layout version")
        self.cells, self.cell_size = cells, cell_size
        self._stamps, self._owners, self._data, _ = _layout(cells, cell_size)

    @staticmethod
    def create(cells: int, cell_size: int) -> ShmRing:
        if cells & (cells - 1) or not 2 <= cells <= MAX_CELLS:
            raise ValueError("cells must be a power of two in 2..=2^24")
        if cell_size & (cell_size - 1) or not MIN_CELL_SIZE <= cell_size <= MAX_CELL_SIZE:
            raise ValueError("cell_size must be a power of two in 16..=65536")
        fd = os.memfd_create("kefu-ring", os.MFD_CLOEXEC)
        total = _layout(cells, cell_size)[3]
        os.ftruncate(fd, total)
        with mmap.mmap(fd, total) as view:
            stamps = _layout(cells, cell_size)[0]
            for cell in range(cells):
                struct.pack_into("<Q", view, stamps + 8 * cell, _stamp(cell, 0, FREE))
            struct.pack_into("<QQQ", view, CELLS_AT, cells, cell_size, total)
            struct.pack_into("<Q", view, 0, MAGIC)
        return ShmRing(fd, owns_fd=True)

    @staticmethod
    def open(fd: int) -> ShmRing:
        return ShmRing(os.dup(fd), owns_fd=True)

    def __del__(self) -> None:
        if self._owns_fd:
            os.close(self._fd)

    # --- words -------------------------------------------------------------------------------------
    def _get(self, offset: int) -> int:
        return struct.unpack_from("<Q", self._map, offset)[0]

    def _put(self, offset: int, value: int) -> None:
        struct.pack_into("<Q", self._map, offset, value)

    def _stamp_at(self, position: int) -> int:
        return self._stamps + 8 * (position & (self.cells - 1))

    def _owner_at(self, position: int) -> int:
        return self._owners + 4 * (position & (self.cells - 1))

    def _copy_in(self, position: int, offset: int, data: bytes) -> None:
        ring_bytes = self.cells * self.cell_size
        start = ((position & (self.cells - 1)) * self.cell_size + offset) % ring_bytes
        first = min(len(data), ring_bytes - start)
        self._map[self._data + start:self._data + start + first] = data[:first]
        self._map[self._data:self._data + len(data) - first] = data[first:]

    def _copy_out(self, position: int, offset: int, length: int) -> bytes:
        ring_bytes = self.cells * self.cell_size
        start = ((position & (self.cells - 1)) * self.cell_size + offset) % ring_bytes
        first = min(length, ring_bytes - start)
        return (self._map[self._data + start:self._data + start + first]
                + self._map[self._data:self._data + length - first])

    # --- API ---------------------------------------------------------------------------------------
    @property
    def fd(self) -> int:
        return self._fd

    @property
    def max_record(self) -> int:
        return min(self.cells, MAX_RECORD_CELLS) * self.cell_size - LEN_PREFIX

    @property
    def abandoned(self) -> int:
        return self._get(ABANDONED_AT)

    @property
    def used_cells(self) -> int:
        return max(0, self._get(TAIL_AT) - self._get(HEAD_AT))

    def push(self, record: bytes) -> bool:
        if len(record) > self.max_record:
            raise ValueError(f"record of {len(record)} bytes exceeds the ring's {self.max_record} byte maximum")
        k = -(-(len(record) + LEN_PREFIX) // self.cell_size)
        with self._lock:
            tail, head = self._get(TAIL_AT), self._get(HEAD_AT)
            if tail + k > head + self.cells:
                return False
            if self._get(self._stamp_at(tail)) != _stamp(tail, 0, FREE):
                raise RuntimeError("ring stamp out of step (another process writing concurrently?)")
            self._put(self._stamp_at(tail), _stamp(tail, k, CLAIMED))
            struct.pack_into("<I", self._map, self._owner_at(tail), os.getpid())
            self._put(TAIL_AT, tail + k)
            self._copy_in(tail, 0, struct.pack("<I", len(record)) + record)
            self._put(self._stamp_at(tail), _stamp(tail, k, COMMITTED))
            return True

    def drain(self, max_records: int) -> list[bytes]:
        records: list[bytes] = []
        with self._lock:
            while len(records) < max_records:
                head = self._get(HEAD_AT)
                seen = self._get(self._stamp_at(head))
                if seen >> POS_SHIFT != head & POS_MASK or seen & 3 != COMMITTED:
                    break
                k = (seen >> STATE_BITS) & MAX_RECORD_CELLS
                (length,) = struct.unpack("<I", self._copy_out(head, 0, LEN_PREFIX))
                length = min(length, k * self.cell_size - LEN_PREFIX)
                records.append(self._copy_out(head, LEN_PREFIX, length))
                for at in range(head, head + k):
                    struct.pack_into("<I", self._map, self._owner_at(at), 0)
                    self._put(self._stamp_at(at), _stamp(at + self.cells, 0, FREE))
                self._put(HEAD_AT, head + k)
        return records

    def wait(self, timeout: float) -> None:
        if not timeout >= 0:
            raise ValueError("timeout must be >= 0")
        deadline = time.monotonic() + min(timeout, 1.0)
        while time.monotonic() < deadline:
            head = self._get(HEAD_AT)
            seen = self._get(self._stamp_at(head))
            if seen >> POS_SHIFT == head & POS_MASK and seen & 3 == COMMITTED:
                return
            time.sleep(0.001)
