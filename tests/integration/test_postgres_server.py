"""The whole server on PostgreSQL (DB_URL): delivery, retry, and kill -9 + restart + resume."""

from __future__ import annotations

import pytest
from kefu_client import Api, Client, ServerProcess
from test_delivery import assigned_pair

pytestmark = pytest.mark.postgres


async def test_server_on_postgres_keeps_every_acked_message(tmp_path_factory, pg_database_dsn: str) -> None:
    env = {"DB_URL": pg_database_dsn, "KEFU_RATE_PER_S": "10000", "KEFU_RATE_BURST": "10000"}
    proc = ServerProcess(tmp_path_factory.mktemp("kefu-pg"), env=env).start()
    api = Api(proc)
    visitor, _agent, conv, agent_login = await assigned_pair(api, binary_visitor=True)
    acked = {}
    for i in range(50):
        await visitor.send({"t": "send", "conv": conv, "cmid": f"pg{i}", "text": f"message {i}"})
    for _ in range(50):
        ack = await visitor.expect("ack")
        acked[ack["cmid"]] = ack["seq"]
    assert sorted(acked.values()) == list(range(2, 52))
    await visitor.send({"t": "send", "conv": conv, "cmid": "pg0", "text": "retry"})
    assert (await visitor.expect("ack", cmid="pg0"))["seq"] == acked["pg0"]
    proc.kill()

    restarted = ServerProcess(proc.data_dir, env=env, http_port=proc.http_port, ws_port=proc.ws_port).start()
    restarted.site_key, restarted.admin_password = proc.site_key, proc.admin_password
    try:
        api = Api(restarted)
        fresh = await api.login(agent_login["username"], "password-" + agent_login["username"])
        back = await Client.connect(fresh, resume={conv: 0})
        seen = {}
        while True:
            frame = await back.recv()
            if frame["t"] == "replayed":
                break
            if frame["t"] == "msg":
                seen[frame["cmid"]] = frame["seq"]
        assert frame["last_seq"] == 51 and all(seen[c] == s for c, s in acked.items())
    finally:
        restarted.stop()
