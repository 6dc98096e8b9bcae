"""The native data plane against its reference twin (the Python hub path): the same frame sequence
against a server with KEFU_DATAPLANE=native and one with KEFU_DATAPLANE=python; every client must
receive the same frames (up to ids and timestamps, which differ between two servers by nature)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from typing import Any

import pytest
from conftest import start_server
from kefu_client import Api, Client
from test_delivery import assigned_pair

# Hostile or odd `send`s: each must get the same answer from both paths (most are declined by the
# native parser and answered by Python; some are taken natively and must match exactly).
HOSTILE_SENDS: list[dict[str, Any]] = [
    {"t": "send", "conv": 0, "cmid": "h1", "text": "x"},
    {"t": "send", "conv": "CONV", "cmid": "", "text": "x"},
    {"t": "send", "conv": "CONV", "cmid": "c" * 65, "text": "x"},
    {"t": "send", "conv": "CONV", "cmid": "é" * 64, "text": "64 characters, 128 bytes"},
    {"t": "send", "conv": "CONV", "cmid": "h2", "text": "x" * 8193},
    {"t": "send", "conv": "CONV", "cmid": "h3", "text": "é" * 4096},
    {"t": "send", "conv": "CONV", "cmid": "h4", "text": "nul \x00 inside"},
    {"t": "send", "conv": "CONV", "cmid": "h5", "text": "x", "kind": "video"},
    {"t": "send", "conv": "CONV", "cmid": "h6", "text": "x", "kind": None},
    {"t": "send", "conv": "CONV", "cmid": "h7", "text": "x", "meta": {"a": {"b": {"c": {"d": 1}}}}},
    {"t": "send", "conv": "CONV", "cmid": "h8", "text": "x", "meta": {"a": {"b": {"c": 1}}, "l": [1, 2.5, None]}},
    {"t": "send", "conv": "CONV", "cmid": "h9", "text": "x", "meta": {"k": "y" * 5000}},
    {"t": "send", "conv": "CONV", "cmid": "h10", "text": "x", "meta": {f"k{i}": i for i in range(33)}},
    {"t": "send", "conv": "CONV", "cmid": "h11", "text": "x", "meta": []},
    {"t": "send", "conv": "CONV", "cmid": "h12", "text": 5},
    {"t": "send", "conv": "CONV", "cmid": "h13"},
    {"t": "send", "conv": 999_999_999, "cmid": "h14", "text": "not yours"},
    {"t": "send", "conv": True, "cmid": "h15", "text": "x"},
    {"t": "send", "conv": "CONV", "cmid": "h16", "text": "x", "meta": {"n": 2**64}},
    {"t": "send", "conv": "CONV", "cmid": "h17", "text": "image", "kind": "image", "meta": {"url": "https://e.x/1.png"}},
]
# Raw JSON texts that a dict cannot express (JSON-only).
HOSTILE_TEXTS = [
    '{"t":"send","conv":CONV,"cmid":"r1","text":"x","junk":NaN}',
    '{"t":"send","conv":CONV,"conv":CONV,"cmid":"r2","text":"last key wins"}',
    '{"t":"send","conv":CONV,"cmid":"r3","text":"\\ud800"}',
    '{"t":"send","conv":CONV,"cmid":"r4","text":"x","meta":{"k":"\\\\u0000"}}',
    '{"t":"send","conv":CONV,"cmid":"r5","text":"x"} trailing',
    '{"t":"send","conv":CONV.0,"cmid":"r6","text":"x"}',
    '[{"t":"send"}]',
]


def _normalise(frame: dict[str, Any], names: dict[Any, str]) -> dict[str, Any]:
    """Replace what legitimately differs between two servers (ids, timestamps) by stable names."""
    def name(value: Any) -> str:
        return names.setdefault(value, f"#{len(names)}")

    out = dict(frame)
    for key in ("conv", "agent", "agent_name"):
        if key in out and not isinstance(out[key], bool):
            out[key] = name(out[key])
    if "ts" in out:
        out["ts"] = "TS"
    if "from" in out:
        out["from"] = {key: name(value) if key in ("id", "name") else value for key, value in out["from"].items()}
    out.pop("why", None)  # routing scores: same decision, float noise is not the point here
    return out


async def _scenario(api: Api, binary_agent: bool) -> list[list[Any]]:
    visitor, agent, conv, _ = await assigned_pair(api, binary_agent=binary_agent)
    names: dict[Any, str] = {}
    transcript: list[list[Any]] = []

    async def step(client: Client, frame: dict[str, Any] | str, *, barrier: bool = True) -> None:
        """Send `frame`, then wait until both clients saw everything it caused: a sentinel `send`
        from the visitor is acked and delivered after the frames before it (one connection's frames
        are handled in order and commits are FIFO), so no timing window decides the transcript."""
        if isinstance(frame, str):
            await client.ws.send(frame.replace("CONV", str(conv)))
        else:
            await client.send({k: conv if v == "CONV" else v for k, v in frame.items()})
        if barrier:
            sync = f"sync-{len(transcript)}"
            await visitor.send({"t": "send", "conv": conv, "cmid": sync, "text": "barrier"})
            await visitor.expect("ack", cmid=sync, timeout=20)
            await agent.expect("msg", cmid=sync, timeout=20)
        received = [[_normalise(f, names) for f in await c.quiet(0.1 if barrier else 1.0)
                     if not str(f.get("cmid", "")).startswith("sync-")] for c in (visitor, agent)]
        transcript.append([frame if isinstance(frame, str) else json.dumps(frame)[:80], received])

    await visitor.quiet(0.3)
    await agent.quiet(0.3)
    await step(visitor, {"t": "send", "conv": "CONV", "cmid": "v1", "text": "订单还没到", "meta": {"order": 42}})
    await step(visitor, {"t": "send", "conv": "CONV", "cmid": "v1", "text": "retry of v1"})
    await step(agent, {"t": "send", "conv": "CONV", "cmid": "a1", "text": "Let me check.", "kind": "text"})
    await step(visitor, {"t": "typing", "conv": "CONV", "on": True})
    await step(visitor, {"t": "typing", "conv": "CONV", "on": True})  # within the interval: dropped
    await step(visitor, {"t": "typing", "conv": "CONV", "on": False})
    await step(agent, {"t": "typing", "conv": 999_999_999, "on": True})
    await step(visitor, {"t": "read", "conv": "CONV", "seq": 3})  # the first: Python stores it
    await step(visitor, {"t": "read", "conv": "CONV", "seq": 2})  # never lowered (native: the plane knows 3)
    await step(visitor, {"t": "read", "conv": "CONV", "seq": 99})  # past the last message: bad_frame
    await step(agent, {"t": "read", "conv": "CONV", "seq": 3})
    await step(agent, {"t": "read", "conv": "CONV", "seq": 3})
    for frame in HOSTILE_SENDS:
        await step(visitor, frame)
    for text in HOSTILE_TEXTS:
        await step(visitor, text)
    await step(agent, {"t": "close", "conv": "CONV"}, barrier=False)
    await step(visitor, {"t": "send", "conv": "CONV", "cmid": "late", "text": "after close"}, barrier=False)
    for client in (visitor, agent):
        await client.close()
    return transcript


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory):
    limits = {"KEFU_RATE_PER_S": "2000", "KEFU_RATE_BURST": "2000", "KEFU_SENTIMENT": "0"}
    procs = {mode: start_server(tmp_path_factory, KEFU_DATAPLANE=mode, **limits) for mode in ("native", "python")}
    yield procs
    for proc in procs.values():
        proc.stop()


@pytest.mark.parametrize("binary_agent", [False, True])
async def test_native_and_python_paths_send_the_same_frames(servers, binary_agent: bool) -> None:
    native = await _scenario(Api(servers["native"]), binary_agent)
    python = await _scenario(Api(servers["python"]), binary_agent)
    assert len(native) == len(python)
    for (sent, got_native), (_, got_python) in zip(native, python, strict=True):
        assert got_native == got_python, f"after {sent}"


async def test_native_path_takes_the_common_frames(servers) -> None:
    """The data plane really runs: its counters move for send and typing on the native server only."""
    api = Api(servers["native"])
    visitor, agent, conv, _ = await assigned_pair(api)
    await agent.quiet(0.3)
    before = await _dataplane_metrics(api)
    for i in range(5):
        await visitor.send({"t": "send", "conv": conv, "cmid": f"n{i}", "text": f"native {i}"})
        await visitor.expect("ack")
    await visitor.send({"t": "typing", "conv": conv, "on": True})
    msgs = [await agent.expect("msg", conv=conv, seq=seq) for seq in range(2, 7)]
    assert [m["text"] for m in msgs] == [f"native {i}" for i in range(5)]
    await agent.expect("typing", conv=conv)
    after = await _dataplane_metrics(api)
    assert after["kefu_dataplane_submitted"] - before["kefu_dataplane_submitted"] == 5
    assert after["kefu_dataplane_relayed"] - before["kefu_dataplane_relayed"] == 1
    for client in (visitor, agent):
        await client.close()


async def test_read_marks_after_the_first_stay_native_and_are_stored(servers) -> None:
    """The first `read` of a participant goes through Python (which stores it and tells the data
    plane); later ones are relayed by the data plane and stored behind it, one write per batch."""
    server = servers["native"]
    api = Api(server)
    visitor, agent, conv, login = await assigned_pair(api)
    for i in range(3):
        await visitor.send({"t": "send", "conv": conv, "cmid": f"r{i}", "text": f"to read {i}"})
        await visitor.expect("ack", cmid=f"r{i}")
    await agent.expect("msg", conv=conv, seq=4)
    await agent.send({"t": "read", "conv": conv, "seq": 1})
    assert (await visitor.expect("read", conv=conv))["seq"] == 1
    before = await _dataplane_metrics(api)
    await agent.send({"t": "read", "conv": conv, "seq": 3})
    assert (await visitor.expect("read", conv=conv))["seq"] == 3
    await agent.send({"t": "read", "conv": conv, "seq": 2})
    assert (await visitor.expect("read", conv=conv))["seq"] == 3  # never lowered
    after = await _dataplane_metrics(api)
    assert after["kefu_dataplane_relayed"] - before["kefu_dataplane_relayed"] == 2
    assert after["kefu_dataplane_declined"] == before["kefu_dataplane_declined"]
    (database,) = server.data_dir.glob("*.db")
    deadline = time.monotonic() + 5
    while True:  # stored write-behind: read the file itself, as a restarted server would
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
            row = db.execute("SELECT seq FROM read_marks WHERE conv = ? AND participant_id = ?",
                             (conv, login["agent_id"])).fetchone()
        if row == (3,) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert row == (3,)
    for client in (visitor, agent):
        await client.close()


async def _dataplane_metrics(api: Api) -> dict[str, float]:
    status, text = await api.request("GET", "/metrics")
    assert status == 200
    values = {}
    for line in text.splitlines():
        if line.startswith("kefu_dataplane_"):
            name, value = line.split()
            values[name] = float(value)
    return values
