"""Registers the `bench` marker: `pytest -m "not bench"` deselects the bench smoke test."""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "bench: runs the bench suite's smoke profile (about a minute)")
