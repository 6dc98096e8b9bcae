"""Fixtures: a real Kefu server process on loopback ports with a fresh SQLite data directory."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from kefu_client import Api, ServerProcess


def start_server(tmp_path_factory: pytest.TempPathFactory, **env: str) -> ServerProcess:
    return ServerProcess(tmp_path_factory.mktemp("kefu"), env=env).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    # Generous rate limits: tests send bursts on purpose; the rate-limit test starts its own server.
    proc = start_server(tmp_path_factory, KEFU_RATE_PER_S="2000", KEFU_RATE_BURST="2000")
    yield proc
    proc.stop()


@pytest.fixture
def api(server: ServerProcess) -> Api:
    return Api(server)
