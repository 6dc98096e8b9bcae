"""Issue 8, item 1: revocation revokes. Agent tokens carry a generation that disabling, a role
change, a password change and logout bump; every HTTP request, every upgrade and every hello checks
it against the agent's current state."""

from __future__ import annotations

import uuid

import pytest
from kefu_client import Api, Client
from test_delivery import agent_session
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus


async def upgrade_status(login: dict) -> int:
    try:
        ws = await connect(f"{login['ws_url']}?token={login['token']}", open_timeout=5)
    except InvalidStatus as error:
        return error.response.status_code
    await ws.close()
    return 101


async def patch(api: Api, token: str, agent_id: str, **body) -> int:
    status, _ = await api.request("PATCH", f"/api/v1/admin/agents/{agent_id}", token=token, body=body)
    return status


async def test_demoted_admin_token_loses_admin_rights(api: Api) -> None:
    admin = await api.admin()
    second = await agent_session(api, role="admin")
    status, _ = await api.request("GET", "/api/v1/admin/agents", token=second["token"])
    assert status == 200
    assert await patch(api, admin["token"], second["agent_id"], role="agent") == 200
    status, _ = await api.request("GET", "/api/v1/admin/agents", token=second["token"])
    assert status == 401
    status, _ = await api.request("POST", "/api/v1/admin/agents", token=second["token"],
                                  body={"username": f"x{uuid.uuid4().hex[:6]}", "password": "password1",
                                        "role": "admin"})
    assert status == 401
    assert await patch(api, second["token"], second["agent_id"], role="admin") == 401
    assert await upgrade_status(second) == 401
    # Logging in again gives a token with the current role.
    fresh = await api.login(second["username"], "password-" + second["username"])
    assert fresh["role"] == "agent"
    status, _ = await api.request("GET", "/api/v1/admin/agents", token=fresh["token"])
    assert status == 403


async def test_disabled_admin_cannot_reenable_itself_or_disable_others(api: Api) -> None:
    admin = await api.admin()
    rogue = await agent_session(api, role="admin")
    assert await patch(api, admin["token"], rogue["agent_id"], disabled=True) == 200
    assert await patch(api, rogue["token"], rogue["agent_id"], disabled=False) == 401
    assert await patch(api, rogue["token"], admin["agent_id"], disabled=True) == 401
    status, _ = await api.request("GET", "/api/v1/admin/agents", token=admin["token"])
    assert status == 200


async def test_disabled_agent_cannot_read_reconnect_or_be_routed(api: Api) -> None:
    admin = await api.admin()
    skill = f"sec/{uuid.uuid4().hex[:8]}"
    login = await agent_session(api, skills={skill: 1.0})
    agent = await Client.connect(login)
    visitor = await Client.connect(await api.visitor())
    await visitor.send({"t": "open", "text": "hi", "tags": [skill]})
    conv = (await agent.expect("conv"))["conv"]
    status, _ = await api.request("GET", f"/api/v1/conversations/{conv}/messages", token=login["token"])
    assert status == 200
    assert await patch(api, admin["token"], login["agent_id"], disabled=True) == 200
    with pytest.raises(ConnectionClosed) as closed:
        await agent.expect("never", timeout=5)
    assert closed.value.rcvd.code == 1008
    status, _ = await api.request("GET", f"/api/v1/conversations/{conv}/messages", token=login["token"])
    assert status == 401
    assert await upgrade_status(login) == 401  # within the offline grace: still refused
    # A new visitor asking for that agent's skill is not routed to it.
    newcomer = await Client.connect(await api.visitor())
    await newcomer.send({"t": "open", "text": "hello?", "tags": [skill]})
    state = await newcomer.expect("conv")
    assert state["state"] == "queued" and state.get("agent") != login["agent_id"]


async def test_password_change_revokes_old_tokens(api: Api) -> None:
    admin = await api.admin()
    login = await agent_session(api)
    agent = await Client.connect(login)
    assert await patch(api, admin["token"], login["agent_id"], password="a-new-password") == 200
    with pytest.raises(ConnectionClosed):
        await agent.expect("never", timeout=5)
    status, _ = await api.request("GET", "/api/v1/conversations/1/messages", token=login["token"])
    assert status == 401
    assert await upgrade_status(login) == 401
    fresh = await api.login(login["username"], "a-new-password")
    again = await Client.connect(fresh)
    assert again.welcome["who"]["id"] == login["agent_id"]


async def test_logout_revokes_every_token_of_the_agent(api: Api) -> None:
    login = await agent_session(api)
    other_device = await api.login(login["username"], "password-" + login["username"])
    agent = await Client.connect(login)
    status, _ = await api.request("POST", "/api/v1/auth/logout", token=other_device["token"])
    assert status == 204
    with pytest.raises(ConnectionClosed) as closed:
        await agent.expect("never", timeout=5)
    assert closed.value.rcvd.code == 1008
    for token in (login["token"], other_device["token"]):
        status, _ = await api.request("POST", "/api/v1/auth/logout", token=token)
        assert status == 401
    assert await upgrade_status(login) == 401
    visitor = await api.visitor()
    status, _ = await api.request("POST", "/api/v1/auth/logout", token=visitor["token"])
    assert status == 403


async def test_revocation_survives_a_restart_and_hello_checks_storage(tmp_path_factory) -> None:
    """After a restart the process has no cached agent state: the upgrade of a revoked token is let
    through (the handshake cannot wait on the database), and `hello` closes it with 1008."""
    from sec_tools import start

    proc = start(tmp_path_factory)
    try:
        api = Api(proc)
        admin = await api.admin()
        login = await agent_session(api)
        assert await patch(api, admin["token"], login["agent_id"], password="another-password") == 200
        proc.stop()
        proc.start()
        ws = await connect(f"{login['ws_url']}?token={login['token']}", open_timeout=5,
                           subprotocols=["kefu.json.v1"])
        await ws.send('{"t":"hello"}')
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frame = await ws.recv()
                assert '"welcome"' not in frame
        assert closed.value.rcvd.code == 1008
        status, _ = await api.request("GET", "/api/v1/admin/agents", token=login["token"])
        assert status == 401
        fresh = await api.login(login["username"], "another-password")
        assert (await Client.connect(fresh)).welcome["who"]["id"] == login["agent_id"]
    finally:
        proc.stop()
