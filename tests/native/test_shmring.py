"""The native shared-memory ring (`ShmRing`, native/shmring) against its pure-Python twin
(kefu.reference.shmring): the same records give the same results, each reads what the other wrote in
the same mapping, and the native ring carries records between real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kefu import compiled
from kefu.reference import shmring as reference

IMPLEMENTATIONS = {"native": compiled.ShmRing, "reference": reference.ShmRing}


@pytest.fixture(params=list(IMPLEMENTATIONS), name="ring_type")
def fixture_ring_type(request: pytest.FixtureRequest) -> type:
    return IMPLEMENTATIONS[request.param]


def test_geometry_is_checked(ring_type: type) -> None:
    for cells, cell_size in ((3, 64), (1 << 25, 64), (64, 8), (64, 100)):
        with pytest.raises(ValueError):
            ring_type.create(cells, cell_size)
    ring = ring_type.create(64, 64)
    assert (ring.cells, ring.cell_size, ring.max_record) == (64, 64, 64 * 64 - 4)


def test_full_and_too_large(ring_type: type) -> None:
    ring = ring_type.create(8, 16)
    assert all(ring.push(b"x" * 12) for _ in range(8))  # one cell each with the length prefix
    assert ring.push(b"y") is False
    with pytest.raises(ValueError):
        ring.push(b"z" * 200)
    assert ring.used_cells == 8
    assert ring.drain(100) == [b"x" * 12] * 8
    assert ring.push(b"y") is True and ring.drain(1) == [b"y"]
    assert ring.abandoned == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=40), st.integers(min_value=1, max_value=16))
def test_native_and_reference_agree_on_any_record_sequence(records: list[bytes], batch: int) -> None:
    """Same pushes, same drains: same accepted records, same refusals, same output, across wraps."""
    native, twin = compiled.ShmRing.create(32, 32), reference.ShmRing.create(32, 32)
    out_native, out_twin = [], []
    for n, record in enumerate(records):
        assert native.push(record) == twin.push(record)
        if n % 3 == 2:
            out_native += native.drain(batch)
            out_twin += twin.drain(batch)
    out_native += native.drain(1000)
    out_twin += twin.drain(1000)
    assert out_native == out_twin


@pytest.mark.parametrize("writer,reader", [("native", "reference"), ("reference", "native")])
def test_each_reads_what_the_other_wrote_in_the_same_mapping(writer: str, reader: str) -> None:
    made = IMPLEMENTATIONS[writer].create(16, 16)
    opened = IMPLEMENTATIONS[reader].open(made.fd)
    for round_ in range(20):  # many laps of the 16 cells: stamps of later laps must agree too
        records = [bytes([round_]) * size for size in (0, 5, 12, 13, 40)]
        assert all(made.push(r) for r in records)
        assert opened.drain(100) == records
        assert opened.push(b"back") and made.drain(1) == [b"back"]


def test_open_refuses_what_is_not_a_ring(tmp_path) -> None:
    path = tmp_path / "junk"
    path.write_bytes(b"\0" * 65536)
    fd = os.open(path, os.O_RDWR)
    try:
        for ring_type in IMPLEMENTATIONS.values():
            with pytest.raises(OSError):
                ring_type.open(fd)
    finally:
        os.close(fd)


CHILD = """
import os, sys
from kefu import compiled
ring = compiled.ShmRing.open(int(sys.argv[1]))
me = int(sys.argv[2])
for n in range(int(sys.argv[3])):
    record = b"%d:%d:" % (me, n) + b"z" * (n % 97)
    while not ring.push(record):
        pass
"""


def test_records_cross_real_processes_once_and_in_each_producers_order() -> None:
    ring = compiled.ShmRing.create(256, 64)
    per_child = 3000
    children = [subprocess.Popen([sys.executable, "-c", CHILD, str(ring.fd), str(i), str(per_child)],
                                 pass_fds=(ring.fd,)) for i in range(3)]
    expected = [0, 0, 0]
    deadline = time.monotonic() + 60
    while sum(expected) < 3 * per_child:
        assert time.monotonic() < deadline, f"stalled at {expected}"
        ring.wait(0.2)  # sleeps on the futex; producers wake it
        for record in ring.drain(512):
            me, n, tail = record.split(b":", 2)
            assert int(n) == expected[int(me)] and tail == b"z" * (int(n) % 97)
            expected[int(me)] += 1
    assert [child.wait(30) for child in children] == [0, 0, 0]
    assert ring.drain(10) == [] and ring.abandoned == 0


def test_wait_returns_at_once_when_a_record_is_there_and_times_out_otherwise(ring_type: type) -> None:
    ring = ring_type.create(16, 16)
    started = time.monotonic()
    ring.wait(0.05)
    assert time.monotonic() - started >= 0.04
    ring.push(b"ready")
    started = time.monotonic()
    ring.wait(5)
    assert time.monotonic() - started < 1
    with pytest.raises(ValueError):
        ring.wait(-1)
