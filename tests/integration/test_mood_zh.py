"""Chinese moods steer routing like English ones, through a real `kefu serve` and the bundled model.

Both tests put a normal agent (best skill, weak de-escalator) and a de-escalator online before the
visitor writes, so escalation is always possible: the polite conversation stays with the normal agent
because the model scores its questions calm, not because nobody could take it over.
"""

from __future__ import annotations

import uuid

from kefu_client import Api, Client
from test_delivery import agent_session


async def _normal_and_deescalator(api: Api) -> tuple[str, dict, Client, dict, Client]:
    skill = f"test/{uuid.uuid4().hex[:8]}"
    normal_login = await agent_session(api, skills={skill: 1.0, "deescalation": 0.1})
    normal = await Client.connect(normal_login)
    expert_login = await agent_session(api, skills={skill: 0.9, "deescalation": 0.95})
    expert = await Client.connect(expert_login)
    return skill, normal_login, normal, expert_login, expert


async def _open_with_normal_agent(api: Api, skill: str, normal: Client, normal_login: dict) -> tuple[Client, int]:
    visitor = await Client.connect(await api.visitor())
    await visitor.send({"t": "open", "text": "您好，请问我昨天下的订单什么时候能发货？", "tags": [skill]})
    offered = await normal.expect("conv", state="assigned")
    assert offered["agent"] == normal_login["agent_id"]
    # The opening question was scored calm: the sentiment term 1 - p_neg * (1 - deesc) stays high.
    assert offered["why"]["top"][0]["sent"] > 0.8
    await normal.send({"t": "accept", "conv": offered["conv"]})
    return visitor, offered["conv"]


async def test_polite_chinese_questions_stay_with_a_normal_agent(api: Api) -> None:
    skill, normal_login, normal, _expert_login, expert = await _normal_and_deescalator(api)
    visitor, conv = await _open_with_normal_agent(api, skill, normal, normal_login)
    for i, text in enumerate(["麻烦帮我查一下物流到哪里了", "能不能改成周六送货？", "好的，谢谢你"]):
        await visitor.send({"t": "send", "conv": conv, "cmid": f"polite{i}", "text": text})
        await visitor.expect("ack", cmid=f"polite{i}")
        await normal.expect("msg", conv=conv, text=text)
    # Scoring runs off the event loop in batches; give it time to have escalated if it were going to.
    assert not [f for f in await expert.quiet(1.0) if f.get("conv") == conv]
    assert not [f for f in await visitor.quiet(0.2) if f.get("t") == "conv" and f.get("state") == "transferred"]


async def test_angry_chinese_visitor_is_escalated_to_a_de_escalator(api: Api) -> None:
    skill, normal_login, normal, expert_login, expert = await _normal_and_deescalator(api)
    visitor, conv = await _open_with_normal_agent(api, skill, normal, normal_login)
    for i, text in enumerate(["都等了五天了还没发货，你们到底怎么回事！",
                              "客服一直敷衍我，太让人生气了",
                              "垃圾服务，再不处理我就去投诉！"]):
        await visitor.send({"t": "send", "conv": conv, "cmid": f"angry{i}", "text": text})
        await visitor.expect("ack", cmid=f"angry{i}")
    offered = await expert.expect("conv", conv=conv, timeout=5)
    assert offered["why"]["reason"] == "escalation"
    assert (await visitor.expect("conv", conv=conv, state="transferred"))["agent"] == expert_login["agent_id"]
    status, body = await api.request("GET", f"/api/v1/conversations/{conv}/routing", token=expert_login["token"])
    assert status == 200 and [d["reason"] for d in body["decisions"]][-1] == "escalation"
