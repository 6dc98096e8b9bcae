"""Issue 8, item 9: a visitor id is not a credential. A returning visitor is recognised only with the
secret issued with its id; the id alone (which agents see in `msg.from.id`) yields a new visitor."""

from __future__ import annotations

import re

from kefu_client import Api, Client


async def fresh_session(api: Api, **body) -> tuple[int, dict]:
    return await api.request("POST", "/api/v1/visitor/session", body={"site": api.server.site_key, **body})


async def test_visitor_id_alone_does_not_resume_a_visitor(api: Api) -> None:
    status, first = await fresh_session(api, name="Mei")
    assert status == 200 and re.fullmatch(r"[A-Za-z0-9_-]{43}", first["visitor_secret"])
    visitor = await Client.connect(first)
    await visitor.send({"t": "open", "text": "my card number is private"})
    conv = (await visitor.expect("conv"))["conv"]

    for attempt in ({"visitor_id": first["visitor_id"]},
                    {"visitor_id": first["visitor_id"], "visitor_secret": "A" * 43},
                    {"visitor_id": first["visitor_id"], "visitor_secret": first["visitor_secret"][:-1]}):
        status, other = await fresh_session(api, **attempt)
        assert status == 200 and other["visitor_id"] != first["visitor_id"]
        assert other["visitor_secret"] != first["visitor_secret"]
        status, _ = await api.request("GET", f"/api/v1/conversations/{conv}/messages", token=other["token"])
        assert status == 404
        impostor = await Client.connect(other)
        assert impostor.welcome["convs"] == []
        await impostor.close()

    status, again = await fresh_session(api, visitor_id=first["visitor_id"], visitor_secret=first["visitor_secret"])
    assert status == 200 and again["visitor_id"] == first["visitor_id"]
    assert again["visitor_secret"] == first["visitor_secret"]
    status, history = await api.request("GET", f"/api/v1/conversations/{conv}/messages", token=again["token"])
    assert status == 200 and history["messages"][0]["text"] == "my card number is private"
    returning = await Client.connect(again)
    assert [c["conv"] for c in returning.welcome["convs"]] == [conv]
