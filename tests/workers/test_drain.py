"""SIGTERM with --workers 2: every client gets close code 1001 (come back later), the supervisor and
its workers exit cleanly, and what was acknowledged before is there after a restart."""

from __future__ import annotations

import asyncio
import signal

from kefu_client import Api, Client
from test_cross_worker import pinned_pair
from websockets.exceptions import ConnectionClosed
from workers_client import on_worker, start_workers_server


async def closed_with(client: Client) -> int | None:
    try:
        while True:
            await client.recv(15)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


async def test_sigterm_drains_with_1001_and_keeps_acknowledged_messages(tmp_path_factory) -> None:
    server = start_workers_server(tmp_path_factory.mktemp("kefu-drain"))
    api = Api(server)
    first, second = server.worker_urls()
    visitor, agent, conv, _ = await pinned_pair(api, agent_url=first, visitor_url=second)
    await visitor.send({"t": "send", "conv": conv, "cmid": "before-drain", "text": "still here after?"})
    seq = (await visitor.expect("ack", cmid="before-drain"))["seq"]
    workers = server.worker_pids()
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    codes = await asyncio.gather(closed_with(visitor), closed_with(agent))
    assert codes == [1001, 1001]
    assert server.proc.wait(20) == 0
    for pid in workers.values():
        assert not _alive(pid), "a worker outlived the drain"

    restarted = start_workers_server(server.data_dir, ws_port=server.ws_port, http_port=server.http_port)
    restarted.site_key, restarted.admin_password = server.site_key, server.admin_password
    try:
        api = Api(restarted)
        session = await api.visitor(visitor.welcome["who"]["id"])
        again = await Client.connect(on_worker(session, restarted.worker_urls()[0]), resume={conv: 0})
        assert (await again.expect("msg", conv=conv, cmid="before-drain"))["seq"] == seq
    finally:
        restarted.stop()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
