"""Fixtures shared by every test folder: real databases.

PostgreSQL: one randomly named database per session on the server at KEFU_TEST_PG_DSN (dropped
afterwards), and a fresh schema in it per test that asks (`pg_schema_dsn`). Tests that need it fail
when the server is unreachable; .ci/run starts it.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def _run_apart(make_coroutine: Callable[[], Any]) -> Any:
    """Run a coroutine to completion on its own loop and thread: the session fixture below may be
    requested from inside a running test loop, where asyncio.run() is not allowed."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make_coroutine())).result()


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def pg_database_dsn() -> Iterator[str]:
    """DSN of a fresh database on the test server; dropped at the end of the session."""
    admin_dsn = os.environ.get("KEFU_TEST_PG_DSN", DEFAULT_PG_DSN)
    database = "kefu_test_" + secrets.token_hex(6)

    async def create() -> None:
        conn = await asyncpg.connect(admin_dsn, timeout=5)
        try:
            await conn.execute(f'CREATE DATABASE "{database}"')
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(admin_dsn, timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await conn.close()

    try:
        _run_apart(create)
    except (TimeoutError, OSError, asyncpg.CannotConnectNowError) as exc:
        # A test that needs a service fails when the service is missing; it never skips silently.
        pytest.fail(f"PostgreSQL at {admin_dsn} is unreachable ({exc}); set KEFU_TEST_PG_DSN or start it")
    try:
        yield _with_database(admin_dsn, database)
    finally:
        _run_apart(drop)


@pytest.fixture
def pg_schema_dsn(pg_database_dsn: str) -> str:
    """A new, empty schema in the session's test database, selected by the returned DSN's search_path
    (as an operator would): one test's own tables, whatever other tests stored."""
    schema = "t_" + secrets.token_hex(6)

    async def create() -> None:
        conn = await asyncpg.connect(pg_database_dsn, timeout=5)
        try:
            await conn.execute(f'CREATE SCHEMA "{schema}"')
        finally:
            await conn.close()

    _run_apart(create)
    return f"{pg_database_dsn}?search_path={schema}"
