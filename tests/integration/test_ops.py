"""Operations on a real `kefu serve`: TLS (https + wss, SIGHUP reload), JSON logs without bodies or
tokens, graceful shutdown, backup/restore, the Prometheus exposition."""

from __future__ import annotations

import asyncio
import json
import signal
import ssl
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
from conftest import start_server
from kefu_client import Api, Client, ServerProcess
from prometheus_client.parser import text_string_to_metric_families
from test_delivery import assigned_pair


def make_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 made with the openssl CLI; `name` goes into the CN so
    two certificates can be told apart."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "fullchain.pem", directory / "privkey.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


def kefu(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "kefu.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ, **env), timeout=60)


async def read_history(session: dict[str, Any], conv: int) -> list[str]:
    client = await Client.connect(session, resume={conv: 0})
    texts: list[str] = []
    while True:
        frame = await client.recv()
        if frame["t"] == "msg" and frame["conv"] == conv:
            texts.append(frame["text"])
        if frame["t"] == "replayed" and frame["conv"] == conv:
            await client.close()
            return texts


# --- TLS ---------------------------------------------------------------------------------------------

def _peer_common_name(port: int, trust: ssl.SSLContext) -> str:
    import socket

    with socket.create_connection(("127.0.0.1", port)) as raw, \
            trust.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        subject = dict(item[0] for item in tls.getpeercert()["subject"])
        return subject["commonName"]


@pytest.mark.parametrize("workers", ["1", "2"])
async def test_tls_serves_https_and_wss_and_reloads_on_sighup(tmp_path, tmp_path_factory, workers: str) -> None:
    """With --workers 2 the gateway workers hold the wss sockets: each loads the pair and re-reads it
    when the control process forwards SIGHUP."""
    certs = tmp_path / "certs"
    make_certificate(certs, "kefu-test-first")
    # The image's way: no TLS_CERT, a mounted directory holding a certbot-style pair.
    proc = start_server(tmp_path_factory, KEFU_TLS_DIR=str(certs), WORKERS=workers)
    try:
        assert "http=https://" in "".join(proc.output)
        trust = ssl.create_default_context(cafile=str(certs / "fullchain.pem"))
        base = f"https://127.0.0.1:{proc.http_port}"
        async with aiohttp.ClientSession() as http:
            async with http.post(base + "/api/v1/visitor/session", json={"site": proc.site_key}, ssl=trust) as reply:
                assert reply.status == 200
                session = await reply.json()
            # Plain http on the TLS port gets no API answer.
            with pytest.raises(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{proc.http_port}/healthz") as plain:
                    await plain.read()
        assert session["ws_url"].startswith("wss://127.0.0.1:")
        ws = await websockets.connect(f"{session['ws_url']}?token={session['token']}", ssl=trust,
                                      subprotocols=["kefu.json.v1"], ping_interval=None)
        await ws.send(json.dumps({"t": "hello"}))
        assert json.loads(await ws.recv())["t"] == "welcome"
        assert _peer_common_name(proc.ws_port, trust) == "kefu-test-first"

        # Renewal: new files, SIGHUP; new connections get the new certificate, the open one stays up.
        make_certificate(certs, "kefu-test-renewed")
        renewed_trust = ssl.create_default_context(cafile=str(certs / "fullchain.pem"))
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGHUP)
        for _ in range(50):
            try:
                if _peer_common_name(proc.ws_port, renewed_trust) == "kefu-test-renewed":
                    break
            except ssl.SSLError:
                pass  # still the first certificate
            await asyncio.sleep(0.1)
        assert _peer_common_name(proc.ws_port, renewed_trust) == "kefu-test-renewed"
        assert _peer_common_name(proc.http_port, renewed_trust) == "kefu-test-renewed"
        await ws.send(json.dumps({"t": "ping"}))
        assert json.loads(await ws.recv())["t"] == "pong"
        # The image's HEALTHCHECK finds TLS the same way the server did.
        health = kefu("health", KEFU_TLS_DIR=str(certs), KEFU_HTTP_PORT=str(proc.http_port))
        assert health.returncode == 0, health.stderr

        # A broken pair on SIGHUP is refused; the renewed certificate keeps serving.
        (certs / "privkey.pem").write_text("not a key")
        proc.proc.send_signal(signal.SIGHUP)
        await asyncio.sleep(0.5)
        assert _peer_common_name(proc.ws_port, renewed_trust) == "kefu-test-renewed"
        await ws.close()
    finally:
        proc.stop()
    assert "TLS reload refused" in "".join(proc.output)


async def test_plain_server_never_advertises_wss(api: Api) -> None:
    session = await api.visitor()
    assert session["ws_url"].startswith("ws://")


def test_health_command(server: ServerProcess) -> None:
    assert kefu("health", KEFU_HTTP_PORT=str(server.http_port)).returncode == 0
    down = kefu("health", KEFU_HTTP_PORT=str(server.ws_port))  # not the API: no /healthz answer there
    assert down.returncode == 1 and "kefu health" in down.stderr


# --- logs --------------------------------------------------------------------------------------------

async def test_json_logs_carry_no_message_bodies_or_tokens(tmp_path_factory) -> None:
    proc = ServerProcess(tmp_path_factory.mktemp("kefu-logs"), env={"KEFU_RATE_PER_S": "2000"},
                         args=["--log-level", "DEBUG", "--log-format", "json"]).start()
    body = f"private-body-{uuid.uuid4().hex}"
    try:
        api = Api(proc)
        visitor, agent, conv, agent_login = await assigned_pair(api)
        await visitor.send({"t": "send", "conv": conv, "cmid": "c1", "text": body})
        await visitor.expect("ack", cmid="c1")
        assert (await agent.expect("msg", conv=conv, text=body))["text"] == body
        # A refused upgrade with a token-shaped string in the URL, and a bad login with a password.
        with pytest.raises(websockets.InvalidStatus):
            await websockets.connect(f"ws://127.0.0.1:{proc.ws_port}/ws?token=forged-{body}")
        status, _ = await api.request("POST", "/api/v1/auth/login", body={"username": "x", "password": body})
        assert status == 401
        tokens = [agent_login["token"], (await api.admin())["token"]]
    finally:
        proc.stop()
    output = "".join(proc.output)
    assert body not in output
    for token in tokens:
        assert token not in output
    records = [json.loads(line) for line in proc.output if line.startswith("{")]
    assert {"ready", "stopped"} <= {r["msg"] for r in records}
    assert all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    assert any(r["level"] == "debug" for r in records), "DEBUG level was not applied"


# --- graceful shutdown -------------------------------------------------------------------------------

async def test_sigterm_closes_with_1001_and_keeps_acked_messages(tmp_path_factory) -> None:
    proc = start_server(tmp_path_factory, KEFU_RATE_PER_S="2000", KEFU_RATE_BURST="2000")
    api = Api(proc)
    visitor, agent, conv, _ = await assigned_pair(api)
    for index in range(20):
        await visitor.send({"t": "send", "conv": conv, "cmid": f"m{index}", "text": f"before stop {index}"})
    await visitor.expect("ack", cmid="m19")
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGTERM)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await visitor.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert "reconnect" in closed.value.rcvd.reason
    assert proc.proc.wait(15) == 0

    restarted = ServerProcess(proc.data_dir, http_port=proc.http_port, ws_port=proc.ws_port).start()
    restarted.site_key = proc.site_key
    try:
        session = await Api(restarted).visitor(visitor.welcome["who"]["id"])
        texts = await read_history(session, conv)
        assert [t for t in texts if t.startswith("before stop")] == [f"before stop {i}" for i in range(20)]
    finally:
        restarted.stop()
    await agent.close()


# --- backup / restore --------------------------------------------------------------------------------

async def test_backup_while_running_then_restore(tmp_path, tmp_path_factory) -> None:
    proc = start_server(tmp_path_factory)
    data = str(proc.data_dir)
    try:
        api = Api(proc)
        visitor, _agent, conv, _ = await assigned_pair(api)
        await visitor.send({"t": "send", "conv": conv, "cmid": "kept", "text": "in the backup"})
        await visitor.expect("ack", cmid="kept")
        made = kefu("--data-dir", data, "backup", str(tmp_path / "snapshot.db"))
        assert made.returncode == 0, made.stderr
        assert json.loads(made.stdout)["bytes"] > 0
        await visitor.send({"t": "send", "conv": conv, "cmid": "lost", "text": "after the backup"})
        await visitor.expect("ack", cmid="lost")
        busy = kefu("--data-dir", data, "restore", str(tmp_path / "snapshot.db"))
        assert busy.returncode == 1 and "kefu serve running" in busy.stderr
    finally:
        proc.stop()
    not_a_backup = tmp_path / "garbage.db"
    not_a_backup.write_bytes(b"definitely not sqlite" * 100)
    refused = kefu("--data-dir", data, "restore", str(not_a_backup))
    assert refused.returncode == 1 and "not a usable SQLite database" in refused.stderr

    restored = kefu("--data-dir", data, "restore", str(tmp_path / "snapshot.db"))
    assert restored.returncode == 0, restored.stderr
    assert Path(json.loads(restored.stdout)["previous"]).exists()

    again = ServerProcess(proc.data_dir, http_port=proc.http_port, ws_port=proc.ws_port).start()
    again.site_key = proc.site_key
    try:
        session = await Api(again).visitor(visitor.welcome["who"]["id"])
        texts = await read_history(session, conv)
        assert "in the backup" in texts and "after the backup" not in texts
    finally:
        again.stop()


def test_backup_refuses_postgres(tmp_path) -> None:
    result = kefu("--data-dir", str(tmp_path), "--db", "postgresql://u@127.0.0.1:1/x", "backup", str(tmp_path))
    assert result.returncode == 2 and "pg_dump" in result.stderr


# --- metrics -----------------------------------------------------------------------------------------

async def test_metrics_exposition_parses_and_counts_the_traffic(api: Api) -> None:
    visitor, _agent, conv, _ = await assigned_pair(api)
    await visitor.send({"t": "send", "conv": conv, "cmid": "metric", "text": "count me"})
    await visitor.expect("ack", cmid="metric")
    status, text = await api.request("GET", "/metrics")
    assert status == 200
    samples = {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples
               if not s.labels or s.labels.get("le") is None}
    for name in ("kefu_connections", "kefu_agents_online", "kefu_queue_length", "kefu_start_seconds"):
        assert name in samples, name
    assert samples["kefu_connections_total"] >= 2
    assert samples["kefu_messages_acked_total"] >= 1
    for histogram in ("kefu_ack_latency_seconds", "kefu_fanout_latency_seconds", "kefu_routing_latency_seconds",
                      "kefu_storage_batch_size", "kefu_storage_commit_seconds"):
        assert samples[f"{histogram}_count"] >= 1, histogram
