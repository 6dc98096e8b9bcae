"""Issue 9 item 4, end to end: a topic no online agent holds goes to an idle agent at once."""

from __future__ import annotations

from conftest import start_server
from kefu_client import Api, Client
from test_delivery import agent_session


async def test_topic_nobody_online_holds_is_not_left_waiting(tmp_path_factory) -> None:
    proc = start_server(tmp_path_factory)  # its own server: other tests' idle agents must not interfere
    try:
        api = Api(proc)
        login = await agent_session(api, skills={"sales": 1.0})
        agent = await Client.connect(login)
        visitor = await Client.connect(await api.visitor())
        await visitor.send({"t": "open", "text": "my invoice is wrong", "tags": ["billing"]})
        # The ring schedule alone would keep the visitor queued for 90 s (ring 2: anyone).
        offered = await agent.expect("conv", state="assigned", timeout=5)
        assert offered["why"]["ring"] == 2
        assert offered["why"]["relaxed"] == {"from_ring": 0, "to_ring": 2, "because": "no_online_agent_with_skill"}
        first = await visitor.expect("conv", conv=offered["conv"])
        assert first["state"] == "assigned"  # never queued
        status, body = await api.request("GET", f"/api/v1/conversations/{offered['conv']}/routing",
                                          token=login["token"])
        assert status == 200 and body["decisions"][-1]["relaxed"]["to_ring"] == 2

        # A holder that is only busy is waited for: the next billing visitor queues.
        holder_login = await agent_session(api, skills={"billing": 1.0}, capacity=1)
        holder = await Client.connect(holder_login)
        second = await Client.connect(await api.visitor())
        await second.send({"t": "open", "tags": ["billing"]})
        await holder.expect("conv", state="assigned", timeout=5)
        third = await Client.connect(await api.visitor())
        await third.send({"t": "open", "tags": ["billing"]})
        assert (await third.expect("conv"))["state"] == "queued"
    finally:
        proc.stop()
