"""The native lock-free `MpmcQueue` against its pure-Python twin (kefu.reference.queue).

Every test runs against both implementations: semantics (FIFO, capacity, timeouts, close, None as an
item), real-thread stress (exactly-once delivery, per-producer order seen by each consumer), and
that a blocked call lets other Python threads run and can be interrupted by Ctrl-C.
"""

from __future__ import annotations

import gc
import signal
import threading
import time
import weakref
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kefu import compiled
from kefu.reference import queue as reference

IMPLEMENTATIONS = {
    "native": SimpleNamespace(
        MpmcQueue=compiled.MpmcQueue,
        QueueFull=compiled.QueueFull,
        QueueEmpty=compiled.QueueEmpty,
        QueueClosed=compiled.QueueClosed,
    ),
    "reference": reference,
}
#: Long enough that a test never fails on a slow machine, short enough that a hang is visible.
JOIN_TIMEOUT = 30.0


@pytest.fixture(params=list(IMPLEMENTATIONS), name="impl")
def fixture_impl(request: pytest.FixtureRequest) -> SimpleNamespace:
    return IMPLEMENTATIONS[request.param]


def start_thread(target: Any, *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def join_all(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
        assert not thread.is_alive(), "a worker thread is stuck"


# --- single-thread semantics ----------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [1, 2, 3, 8, 100])
def test_fifo_and_exact_capacity(impl: SimpleNamespace, capacity: int) -> None:
    queue = impl.MpmcQueue(capacity)
    assert queue.capacity == capacity
    for lap in range(3):
        for index in range(capacity):
            assert queue.try_put((lap, index)) is True
        assert queue.try_put("one too many") is False
        assert len(queue) == capacity
        assert [queue.get(timeout=0) for _ in range(capacity)] == [(lap, index) for index in range(capacity)]
        assert len(queue) == 0


@pytest.mark.parametrize("capacity", [0, -1, 2**24 + 1])
def test_capacity_out_of_range_is_refused(impl: SimpleNamespace, capacity: int) -> None:
    with pytest.raises(ValueError, match="capacity"):
        impl.MpmcQueue(capacity)


def test_items_keep_their_identity(impl: SimpleNamespace) -> None:
    queue = impl.MpmcQueue(4)
    item = {"payload": [1, 2, 3]}
    queue.put(item)
    assert queue.get() is item


def test_none_is_an_ordinary_item(impl: SimpleNamespace) -> None:
    queue = impl.MpmcQueue(4)
    missing = object()
    assert queue.try_get() is None
    assert queue.try_get(missing) is missing
    assert queue.try_put(None)
    queue.put(None)
    assert queue.try_get(missing) is None
    assert queue.get(timeout=0) is None
    assert queue.try_get(missing) is missing


def test_timeouts_raise_full_and_empty(impl: SimpleNamespace) -> None:
    queue = impl.MpmcQueue(1)
    with pytest.raises(impl.QueueEmpty):
        queue.get(timeout=0)
    with pytest.raises(impl.QueueEmpty):
        queue.get(timeout=0.05)
    with pytest.raises(impl.QueueEmpty):
        queue.get_many(5, timeout=0.05)
    queue.put("only")
    with pytest.raises(impl.QueueFull):
        queue.put("more", timeout=0)
    with pytest.raises(impl.QueueFull):
        queue.put("more", timeout=0.05)
    assert queue.get() == "only"


@pytest.mark.parametrize("timeout", [-1.0, float("nan")])
def test_invalid_timeout_is_refused(impl: SimpleNamespace, timeout: float) -> None:
    queue = impl.MpmcQueue(1)
    with pytest.raises(ValueError, match="timeout"):
        queue.get(timeout=timeout)
    with pytest.raises(ValueError, match="timeout"):
        queue.put("x", timeout=timeout)


def test_get_many_takes_what_is_there_up_to_max(impl: SimpleNamespace) -> None:
    queue = impl.MpmcQueue(10)
    for item in range(7):
        queue.put(item)
    assert queue.get_many(3) == [0, 1, 2]
    assert queue.get_many(10, timeout=0) == [3, 4, 5, 6]
    for max_items in (0, -1):
        with pytest.raises(ValueError, match="max_items"):
            queue.get_many(max_items)


def test_get_many_waits_for_the_first_item(impl: SimpleNamespace) -> None:
    queue = impl.MpmcQueue(4)
    batches: list[list[object]] = []
    batch_writer = start_thread(lambda: batches.append(queue.get_many(8, timeout=JOIN_TIMEOUT)))
    time.sleep(0.05)  # usually lets it block first; the result is the same either way
    queue.put("late")
    join_all([batch_writer])
    assert batches == [["late"]]


def test_dropping_the_queue_releases_its_items(impl: SimpleNamespace) -> None:
    class Payload:
        pass

    queue = impl.MpmcQueue(4)
    payload = Payload()
    alive = weakref.ref(payload)
    queue.put(payload)
    del payload, queue
    gc.collect()
    assert alive() is None


# One single-thread operation: (name, argument). Outcomes are compared between the implementations.
OPERATIONS = st.one_of(
    st.tuples(st.just("try_put"), st.integers(0, 99)),
    st.tuples(st.just("put_nowait"), st.integers(0, 99)),
    st.tuples(st.just("try_get"), st.none()),
    st.tuples(st.just("get_nowait"), st.none()),
    st.tuples(st.just("get_many"), st.integers(1, 5)),
    st.tuples(st.just("len"), st.none()),
    st.tuples(st.just("close"), st.none()),
)


def _apply(impl: SimpleNamespace, queue: Any, operation: str, argument: Any) -> object:
    """Runs one operation and returns what it returned or the name of what it raised."""
    try:
        match operation:
            case "try_put":
                return queue.try_put(argument)
            case "put_nowait":
                return queue.put(argument, timeout=0)
            case "try_get":
                return queue.try_get("nothing")
            case "get_nowait":
                return queue.get(timeout=0)
            case "get_many":
                return queue.get_many(argument, timeout=0)
            case "len":
                return len(queue)
            case _:
                return queue.close()
    except (impl.QueueFull, impl.QueueEmpty, impl.QueueClosed) as error:
        return type(error).__name__


@given(capacity=st.integers(1, 4), operations=st.lists(OPERATIONS, max_size=40))
def test_native_matches_reference_on_any_operation_sequence(
    capacity: int, operations: list[tuple[str, Any]]
) -> None:
    native, twin = IMPLEMENTATIONS["native"], IMPLEMENTATIONS["reference"]
    native_queue, twin_queue = native.MpmcQueue(capacity), twin.MpmcQueue(capacity)
    for operation, argument in operations:
        assert _apply(native, native_queue, operation, argument) == _apply(twin, twin_queue, operation, argument), (
            f"{operation}({argument!r}) differs"
        )


# --- close ----------------------------------------------------------------------------------------


def test_close_refuses_puts_and_drains_gets(impl: SimpleNamespace) -> None:
    queue = impl.MpmcQueue(4)
    queue.put("a")
    queue.put("b")
    queue.put("c")
    assert not queue.closed
    queue.close()
    queue.close()  # idempotent
    assert queue.closed
    with pytest.raises(impl.QueueClosed):
        queue.put("late")
    with pytest.raises(impl.QueueClosed):
        queue.try_put("late")
    assert queue.get() == "a"
    assert queue.try_get() == "b"
    assert queue.get_many(10) == ["c"]
    with pytest.raises(impl.QueueClosed):
        queue.get()
    with pytest.raises(impl.QueueClosed):
        queue.try_get()
    with pytest.raises(impl.QueueClosed):
        queue.get_many(10, timeout=1)


@pytest.mark.parametrize("call", ["get", "get_many"])
def test_close_wakes_blocked_getters(impl: SimpleNamespace, call: str) -> None:
    queue = impl.MpmcQueue(2)
    outcomes: list[type[BaseException]] = []

    def blocked_getter() -> None:
        try:
            getattr(queue, call)(*([4] if call == "get_many" else []), timeout=JOIN_TIMEOUT)
        except (impl.QueueClosed, impl.QueueEmpty, impl.QueueFull) as error:
            outcomes.append(type(error))

    getters = [start_thread(blocked_getter) for _ in range(3)]
    time.sleep(0.1)  # let them block; the test holds either way
    queue.close()
    join_all(getters)
    assert outcomes == [impl.QueueClosed] * 3


def test_close_wakes_blocked_putters(impl: SimpleNamespace) -> None:
    queue = impl.MpmcQueue(1)
    queue.put("occupant")
    outcomes: list[type[BaseException]] = []

    def blocked_putter() -> None:
        try:
            queue.put("waiting", timeout=JOIN_TIMEOUT)
        except (impl.QueueClosed, impl.QueueEmpty, impl.QueueFull) as error:
            outcomes.append(type(error))

    putters = [start_thread(blocked_putter) for _ in range(3)]
    time.sleep(0.1)
    queue.close()
    join_all(putters)
    assert outcomes == [impl.QueueClosed] * 3
    assert queue.get() == "occupant"


def test_blocked_put_proceeds_when_space_frees(impl: SimpleNamespace) -> None:
    queue = impl.MpmcQueue(1)
    queue.put("first")
    putter = start_thread(queue.put, "second", JOIN_TIMEOUT)
    assert queue.get(timeout=JOIN_TIMEOUT) == "first"
    assert queue.get(timeout=JOIN_TIMEOUT) == "second"
    join_all([putter])


# --- threads --------------------------------------------------------------------------------------


@pytest.mark.parametrize("capacity", [1, 2, 64])
def test_threaded_exactly_once_and_per_producer_order(impl: SimpleNamespace, capacity: int) -> None:
    producers, consumers = 4, 4
    items_per_producer = 20_000 if capacity == 64 else 2_000
    queue = impl.MpmcQueue(capacity)
    received: list[list[tuple[int, int]]] = [[] for _ in range(consumers)]

    def produce(producer: int) -> None:
        for counter in range(items_per_producer):
            queue.put((producer, counter))

    def consume(consumer: int) -> None:
        seen = received[consumer]
        try:
            while True:
                seen.extend(queue.get_many(64) if consumer % 2 else [queue.get()])
        except impl.QueueClosed:
            pass

    consumer_threads = [start_thread(consume, index) for index in range(consumers)]
    join_all([start_thread(produce, index) for index in range(producers)])
    queue.close()
    join_all(consumer_threads)

    delivered: list[tuple[int, int]] = []
    for seen in received:
        last_counter = dict.fromkeys(range(producers), -1)
        for producer, counter in seen:
            assert counter > last_counter[producer], "a consumer saw one producer's items out of order"
            last_counter[producer] = counter
        delivered.extend(seen)
    assert sorted(delivered) == [(p, c) for p in range(producers) for c in range(items_per_producer)]


def test_blocked_get_releases_the_gil(impl: SimpleNamespace) -> None:
    queue = impl.MpmcQueue(1)
    about_to_block = threading.Event()
    got: list[object] = []

    def waiter() -> None:
        about_to_block.set()
        got.append(queue.get(timeout=JOIN_TIMEOUT))

    waiting = start_thread(waiter)
    assert about_to_block.wait(JOIN_TIMEOUT)
    time.sleep(0.1)  # let it enter `get`
    # Pure-Python work in this thread: impossible while the waiter holds the GIL, which it would until
    # its timeout, after which it would no longer be alive.
    progress = sum(1 for _ in range(200_000))
    assert progress == 200_000
    assert waiting.is_alive(), "the waiter returned before any item was put"
    queue.put("wake up")
    join_all([waiting])
    assert got == ["wake up"]


def test_ctrl_c_interrupts_a_blocked_get(impl: SimpleNamespace) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run only in the main thread")
    queue = impl.MpmcQueue(1)
    main_thread = threading.main_thread().ident
    assert main_thread is not None
    # A shell may start CI in the background with SIGINT ignored; install Python's default handler.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.2, signal.pthread_kill, (main_thread, signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            queue.get(timeout=JOIN_TIMEOUT)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
