"""Fixtures for the security regression tests: a real `kefu serve` on loopback ports (as in
tests/integration), whose client helpers these tests share."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "integration"))

from kefu_client import Api, ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    proc = ServerProcess(tmp_path_factory.mktemp("kefu-sec"),
                         env={"KEFU_RATE_PER_S": "2000", "KEFU_RATE_BURST": "2000"}).start()
    yield proc
    proc.stop()


@pytest.fixture
def api(server: ServerProcess) -> Api:
    return Api(server)
