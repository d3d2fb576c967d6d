"""Every Store backend as a fixture, for the contract suites: `store` (memory, SQLite,
PostgreSQL), `store_pair` (two instances on one database, as two processes or replicas), and
`postgres` (the session's throwaway server) with `postgres_url` (a fresh database on it).

Imported by conftest.py; another test file takes the fixtures by name. `peek` reads a
gateway's database from outside, as another process would, whichever the backend.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import secrets
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from gateway.config import Storage
from gateway.store import Store
from gateway.store.memory import MemoryStore
from gateway.store.postgres import PostgresStore
from gateway.store.sqlite import SQLiteStore
from tests.postgres import Server

BACKENDS = ["memory", "sqlite", "postgres"]


async def peek(storage: Storage, query: str, *args: object) -> list[tuple[object, ...]]:
    """The rows of one query (`?` for parameters) on a new connection of its own."""
    if storage.url is None:
        with contextlib.closing(sqlite3.connect(storage.path)) as db:
            return [tuple(row) for row in db.execute(query, args).fetchall()]
    n = itertools.count(1)
    c = await asyncpg.connect(storage.url)
    try:
        rows = await c.fetch(re.sub(r"\?", lambda _: f"${next(n)}", query), *args)
    finally:
        await c.close()
    return [tuple(row) for row in rows]


@pytest.fixture(scope="session")
def postgres() -> Iterator[Server]:
    """One server for the session; tests that cannot have one fail in CI and skip elsewhere."""
    server = Server()
    try:
        server.start()
    except Exception as e:
        server.destroy()
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL cannot start: {e}")
        pytest.skip(f"PostgreSQL cannot start: {e}")
    yield server
    server.destroy()


SPARE: list[str] = []  # databases earlier tests are done with, to be emptied and used again
# Every gateway table emptied (a database whose schema was never made is left as it is); a
# lock still held by what a test left behind gives the database up instead of waiting.
EMPTIED = """SET lock_timeout = '2s'; DO $$ BEGIN IF to_regclass('jobs') IS NOT NULL THEN
TRUNCATE jobs, bodies, idempotency, callbacks, replicas RESTART IDENTITY; END IF; END $$"""


@pytest.fixture
def postgres_url(postgres: Server) -> Iterator[str]:
    """A database of its own, empty, the URL naming it: one an earlier test is done with,
    emptied now (its gateways are closed by now; TRUNCATE costs less than CREATE DATABASE,
    test after test), or a new one."""
    name = None
    while SPARE and name is None:
        name = SPARE.pop()
        try:
            postgres.psql(EMPTIED, name)
        except subprocess.CalledProcessError:
            name = None  # still in use: left alone
    if name is None:
        name = "t_" + secrets.token_hex(6)
        postgres.psql(f"CREATE DATABASE {name}")
    yield postgres.url(name)
    SPARE.append(name)


def _maker(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[], Store]:
    """A function that makes another instance on the same database each time it is called."""
    if kind == "memory":
        first = MemoryStore()
        made = iter([first])
        return lambda: next(made, None) or MemoryStore(first)
    if kind == "sqlite":
        path = str(tmp_path / "store.db")
        return lambda: SQLiteStore(path)
    url: str = request.getfixturevalue("postgres_url")
    return lambda: PostgresStore(url)


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened = _maker(request.param, tmp_path, request)()
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture(params=BACKENDS)
async def store_pair(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Store, Store]]:
    make = _maker(request.param, tmp_path, request)
    one, two = make(), make()
    await one.open()
    await two.open()
    yield one, two
    await two.close()
    await one.close()
