"""kill -9 the server under load, restart it: every acknowledged message is stored and delivered."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from kefu_client import Api, Client, ServerProcess
from test_delivery import assigned_pair
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.slow

PAIRS = 4
IN_FLIGHT = 16  # unacknowledged sends per visitor
ENV = {"KEFU_RATE_PER_S": "100000", "KEFU_RATE_BURST": "100000", "KEFU_REPLAY_LIMIT": "100000"}


async def flood(visitor: Client, conv: int, acked: dict[str, int], sent: set[str]) -> None:
    """Send as fast as acks allow (IN_FLIGHT outstanding) until the connection dies."""
    counter = itertools.count()
    outstanding = 0
    try:
        while True:
            while outstanding < IN_FLIGHT:
                cmid = f"c{next(counter)}"
                sent.add(cmid)
                await visitor.send({"t": "send", "conv": conv, "cmid": cmid, "text": f"payload {cmid} " + "z" * 80})
                outstanding += 1
            frame = await visitor.recv(10)
            if frame["t"] == "ack":
                acked[frame["cmid"]] = frame["seq"]
                outstanding -= 1
    except (ConnectionClosed, OSError, TimeoutError):
        return


async def read_all(client: Client, conv: int) -> dict[int, dict]:
    """Replay frames of `conv` until `replayed`, keyed by seq (duplicates would overwrite: check count)."""
    frames = []
    while True:
        frame = await client.recv(10)
        if frame["t"] == "replayed" and frame["conv"] == conv:
            break
        if frame["t"] == "msg" and frame["conv"] == conv:
            frames.append(frame)
    by_seq = {f["seq"]: f for f in frames}
    assert len(by_seq) == len(frames), "a replayed seq was delivered twice"
    return by_seq


async def test_kill_9_under_load_loses_no_acknowledged_message(tmp_path_factory) -> None:
    proc = ServerProcess(tmp_path_factory.mktemp("kefu-crash"), env=ENV).start()
    api = Api(proc)
    pairs = [await assigned_pair(api) for _ in range(PAIRS)]
    acked: list[dict[str, int]] = [{} for _ in pairs]
    sent: list[set[str]] = [set() for _ in pairs]
    floods = [asyncio.create_task(flood(v, conv, acked[i], sent[i])) for i, (v, _, conv, _) in enumerate(pairs)]
    while sum(len(a) for a in acked) < 400:
        await asyncio.sleep(0.05)
    proc.kill()
    await asyncio.wait_for(asyncio.gather(*floods), 20)
    total_acked = sum(len(a) for a in acked)
    assert total_acked >= 400

    restarted = ServerProcess(proc.data_dir, env=ENV, http_port=proc.http_port, ws_port=proc.ws_port)
    restarted.start()
    restarted.site_key, restarted.admin_password = proc.site_key, proc.admin_password
    try:
        api = Api(restarted)
        for index, (visitor, _agent, conv, agent_login) in enumerate(pairs):
            fresh_agent = await api.login(agent_login["username"], "password-" + agent_login["username"])
            agent_again = await Client.connect(fresh_agent, resume={conv: 0})
            visitor_again = await Client.connect(await api.visitor(visitor.welcome["who"]["id"]), resume={conv: 0})
            for client in (agent_again, visitor_again):
                delivered = await read_all(client, conv)
                assert sorted(delivered) == list(range(1, len(delivered) + 1)), "gap in seqs after restart"
                by_cmid = {f["cmid"]: seq for seq, f in delivered.items()}
                for cmid, seq in acked[index].items():
                    assert by_cmid.get(cmid) == seq, f"acked {cmid}→{seq} missing after kill -9"
                # Anything stored but not acked was sent by the client: no message from nowhere.
                assert set(by_cmid) - {f"open-{conv}"} <= sent[index]
            # A retry of an acked cmid after the crash returns the original seq.
            some_cmid, some_seq = next(iter(acked[index].items()))
            await visitor_again.send({"t": "send", "conv": conv, "cmid": some_cmid, "text": "retry"})
            assert (await visitor_again.expect("ack", cmid=some_cmid))["seq"] == some_seq
    finally:
        restarted.stop()
