"""Fixtures: a real `kefu serve --workers 2` (see workers_client.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "integration"))

from workers_client import WorkersServer, start_workers_server


@pytest.fixture(scope="module")
def workers_server(tmp_path_factory: pytest.TempPathFactory):
    server: WorkersServer = start_workers_server(tmp_path_factory.mktemp("kefu-workers"))
    yield server
    server.stop()
