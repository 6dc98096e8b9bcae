"""Issue 8, item 5: anonymous visitors are limited per client address and per site: sessions, new
conversations, sockets (per visitor token, per address, per site) and the per-site queue."""

from __future__ import annotations

from kefu_client import Api, Client
from sec_tools import start
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus


async def session(api: Api, address: str) -> tuple[int, dict]:
    return await api.request("POST", "/api/v1/visitor/session", body={"site": api.server.site_key},
                             headers={"X-Forwarded-For": address})


async def upgrade(session_: dict):
    try:
        return await connect(f"{session_['ws_url']}?token={session_['token']}", open_timeout=5)
    except InvalidStatus as error:
        return error.response.status_code


async def test_sessions_per_address_and_per_site(tmp_path_factory) -> None:
    proc = start(tmp_path_factory, KEFU_TRUSTED_PROXIES="127.0.0.1", KEFU_SESSIONS_PER_MIN="5",
                 KEFU_SITE_SESSIONS_PER_MIN="8")
    try:
        api = Api(proc)
        statuses = [(await session(api, "198.51.100.1"))[0] for _ in range(7)]
        assert statuses == [200] * 5 + [429] * 2
        status, answer = await session(api, "198.51.100.1")
        assert status == 429 and answer["error"] == "rate_limited"
        # Another address is not affected by the first one's limit, until the site's own limit.
        statuses = [(await session(api, f"203.0.113.{i}"))[0] for i in range(5)]
        assert statuses == [200, 200, 200, 429, 429]  # 5 + 3 = the site's 8 per minute
    finally:
        proc.stop()


async def test_new_conversations_per_address_and_the_site_queue_cap(tmp_path_factory) -> None:
    proc = start(tmp_path_factory, KEFU_TRUSTED_PROXIES="127.0.0.1", KEFU_OPENS_PER_MIN="3", KEFU_MAX_QUEUE="4",
                 KEFU_RATE_PER_S="2000", KEFU_RATE_BURST="2000")
    try:
        api = Api(proc)
        codes = []
        for i in range(5):
            _, data = await session(api, "198.51.100.2")
            client = await Client.connect(data)
            await client.send({"t": "open", "text": f"spam {i}"})
            frame = await client.expect("conv") if i < 3 else await client.expect("error")
            codes.append(frame.get("state") or frame.get("code"))
        assert codes == ["queued"] * 3 + ["rate_limited"] * 2
        # No agent is online: the site's queue holds 4; the fifth conversation is refused honestly.
        answers = []
        for i in range(2):
            _, data = await session(api, f"203.0.113.{i}")
            client = await Client.connect(data)
            await client.send({"t": "open", "text": "real visitor"})
            first = await client.expect("conv")
            answers.append(first["state"])
            if first["state"] == "closed":
                assert (await client.expect("error"))["code"] == "unavailable"
        assert answers == ["queued", "closed"]
    finally:
        proc.stop()


async def test_sockets_per_visitor_token(tmp_path_factory) -> None:
    proc = start(tmp_path_factory, KEFU_SOCKETS_PER_VISITOR="3", KEFU_SOCKETS_PER_ADDRESS="5")
    try:
        api = Api(proc)
        first = await api.visitor()
        sockets = [await upgrade(first) for _ in range(3)]
        assert all(not isinstance(s, int) for s in sockets)
        assert await upgrade(first) == 429
        await sockets[0].close()
        await sockets[0].wait_closed()
        for _ in range(50):  # the server notices the close
            replacement = await upgrade(first)
            if not isinstance(replacement, int):
                break
        assert not isinstance(replacement, int)
        # Per address: a second visitor from the same address gets the 2 sockets left of 5.
        second = await api.visitor()
        more = [await upgrade(second) for _ in range(3)]
        assert [isinstance(s, int) for s in more] == [False, False, True] and more[2] == 429
        for ws in [*sockets[1:], replacement, *more[:2]]:
            await ws.close()
    finally:
        proc.stop()
