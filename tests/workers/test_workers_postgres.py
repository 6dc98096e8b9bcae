"""Workers on PostgreSQL: the control process's data plane hands each ring batch to the asyncpg writer
(`NativeDataPlane.flush` after `WorkerRouter.feed`); order, retries and acks hold across workers."""

from __future__ import annotations

import pytest
from kefu_client import Api
from test_cross_worker import pinned_pair
from workers_client import start_workers_server

pytestmark = pytest.mark.postgres


async def test_cross_worker_chat_on_postgres(tmp_path_factory, pg_schema_dsn: str) -> None:
    # Its own schema: the session's database already holds another server's admin account.
    server = start_workers_server(tmp_path_factory.mktemp("kefu-workers-pg"), DB_URL=pg_schema_dsn)
    try:
        api = Api(server)
        first, second = server.worker_urls()
        visitor, agent, conv, _ = await pinned_pair(api, agent_url=first, visitor_url=second, binary_agent=True)
        for i in range(30):
            await visitor.send({"t": "send", "conv": conv, "cmid": f"p{i}", "text": f"pg {i}"})
        acks = [await visitor.expect("ack") for _ in range(30)]
        assert sorted(a["seq"] for a in acks) == list(range(2, 32))
        await visitor.send({"t": "send", "conv": conv, "cmid": "p3", "text": "pg 3"})
        assert (await visitor.expect("ack", cmid="p3"))["seq"] == next(a["seq"] for a in acks if a["cmid"] == "p3")
        seqs = [(await agent.expect("msg", conv=conv, seq=seq))["seq"] for seq in range(1, 32)]
        assert seqs == list(range(1, 32))
        for client in (visitor, agent):
            await client.close()
    finally:
        server.stop()
