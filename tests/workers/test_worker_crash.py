"""kill -9 under load with --workers 2: of one gateway worker (the supervisor restarts it), and of the
control process (the writer). Every acknowledged message is stored once, in order, and delivered
after the clients resume."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
from kefu_client import Api, Client
from test_crash import flood, read_all
from test_cross_worker import pinned_pair
from websockets.exceptions import ConnectionClosed
from workers_client import WorkersServer, on_worker, start_workers_server

pytestmark = pytest.mark.slow


async def connect_when_up(session: dict, url: str, **kwargs) -> Client:
    """Connect once the (restarted) worker listens."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return await Client.connect(on_worker(session, url), **kwargs)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def keep_reading(client: Client) -> None:
    """Read (into `client.seen`) so the server never takes this client for a slow consumer."""
    try:
        while True:
            await client.recv(60)
    except (ConnectionClosed, TimeoutError):
        return


def check_resumed(delivered: dict[int, dict], acked: dict[str, int], sent: set[str], conv: int) -> None:
    assert sorted(delivered) == list(range(1, len(delivered) + 1)), "gap in seqs after the crash"
    by_cmid = {f["cmid"]: seq for seq, f in delivered.items()}
    for cmid, seq in acked.items():
        assert by_cmid.get(cmid) == seq, f"acked {cmid}→{seq} missing after kill -9"
    assert set(by_cmid) - {f"open-{conv}"} <= sent, "a message nobody sent"


async def test_kill_9_of_a_worker_under_load(tmp_path_factory) -> None:
    server = start_workers_server(tmp_path_factory.mktemp("kefu-kill-worker"))
    try:
        api = Api(server)
        first, second = server.worker_urls()
        # Pair A: the visitor's socket dies with worker 1. Pair B: the agent's does, its visitor keeps sending.
        pair_a = await pinned_pair(api, agent_url=first, visitor_url=second)
        pair_b = await pinned_pair(api, agent_url=second, visitor_url=first)
        acked: list[dict[str, int]] = [{}, {}]
        sent: list[set[str]] = [set(), set()]
        reader = asyncio.create_task(keep_reading(pair_a[1]))
        floods = [asyncio.create_task(flood(pair[0], pair[2], acked[i], sent[i]))
                  for i, pair in enumerate((pair_a, pair_b))]
        while min(len(a) for a in acked) < 150:
            await asyncio.sleep(0.05)
        victim = server.worker_pids()[1]
        os.kill(victim, signal.SIGKILL)
        await asyncio.wait_for(floods[0], 20)  # pair A's visitor lost its worker
        deadline = time.monotonic() + 30
        while server.worker_pids().get(1) in (None, victim):
            assert time.monotonic() < deadline, "the supervisor did not restart worker 1"
            await asyncio.sleep(0.1)
        acked_b_at_restart = len(acked[1])
        while len(acked[1]) < acked_b_at_restart + 100:  # pair B kept going across the restart
            await asyncio.sleep(0.05)
        await pair_b[0].ws.close()
        await asyncio.wait_for(floods[1], 20)

        visitor_a, agent_a, conv_a, _ = pair_a
        _, _, conv_b, login_b = pair_b
        # Pair A: the visitor resumes on the restarted worker; the agent (worker 0) never disconnected.
        visitor_again = await connect_when_up(await api.visitor(visitor_a.welcome["who"]["id"]), second,
                                              resume={conv_a: 0})
        check_resumed(await read_all(visitor_again, conv_a), acked[0], sent[0], conv_a)
        await asyncio.sleep(1.0)
        reader.cancel()
        live = [f["seq"] for f in agent_a.seen if f.get("t") == "msg" and f["conv"] == conv_a]
        assert live == list(range(1, len(live) + 1)), "the surviving agent saw a gap or a repeat"
        assert len(live) >= len(acked[0])
        # Pair B: the agent resumes on the restarted worker and gets what arrived while it was gone.
        agent_again = await connect_when_up(login_b, second, resume={conv_b: 0})
        check_resumed(await read_all(agent_again, conv_b), acked[1], sent[1], conv_b)
        # A retried cmid after the crash is acked with its original seq.
        cmid, seq = next(iter(acked[0].items()))
        await visitor_again.send({"t": "send", "conv": conv_a, "cmid": cmid, "text": "retry"})
        assert (await visitor_again.expect("ack", cmid=cmid))["seq"] == seq
    finally:
        server.stop()


async def test_kill_9_of_the_control_process_under_load(tmp_path_factory) -> None:
    server = start_workers_server(tmp_path_factory.mktemp("kefu-kill-control"))
    api = Api(server)
    first, second = server.worker_urls()
    pairs = [await pinned_pair(api, agent_url=first, visitor_url=second),
             await pinned_pair(api, agent_url=second, visitor_url=first)]
    acked: list[dict[str, int]] = [{}, {}]
    sent: list[set[str]] = [set(), set()]
    floods = [asyncio.create_task(flood(p[0], p[2], acked[i], sent[i])) for i, p in enumerate(pairs)]
    while sum(len(a) for a in acked) < 300:
        await asyncio.sleep(0.05)
    workers = server.worker_pids()
    server.kill()  # the supervisor: control, hub, writer
    await asyncio.wait_for(asyncio.gather(*floods), 20)
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") and "Z" not in open(f"/proc/{pid}/stat").read().split(")")[1][:3]
              for pid in workers.values()):
        assert time.monotonic() < deadline, "workers outlived their control process"
        await asyncio.sleep(0.05)

    restarted: WorkersServer = start_workers_server(server.data_dir, ws_port=server.ws_port,
                                                    http_port=server.http_port)
    restarted.site_key, restarted.admin_password = server.site_key, server.admin_password
    try:
        api = Api(restarted)
        urls = restarted.worker_urls()
        for index, (visitor, _agent, conv, login) in enumerate(pairs):
            fresh_agent = await api.login(login["username"], "password-" + login["username"])
            agent_again = await connect_when_up(fresh_agent, urls[index], resume={conv: 0})
            visitor_again = await connect_when_up(await api.visitor(visitor.welcome["who"]["id"]),
                                                  urls[1 - index], resume={conv: 0})
            for client in (agent_again, visitor_again):
                check_resumed(await read_all(client, conv), acked[index], sent[index], conv)
    finally:
        restarted.stop()
