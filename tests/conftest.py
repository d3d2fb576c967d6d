"""Fixtures: a real fake upstream, configurations parsed from YAML, the app on a temp store.

`make_config`, `gateway` and `gateway_for` run each test over both stores (a SQLite file, and a
fresh database on the session's PostgreSQL); a test marked `sqlite_only` runs on the file alone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web import BaseRunner

from gateway.app import create_app
from gateway.config import Config, parse
from gateway.protocol import Runner
from gateway.store import Store
from tests.console import admin_config, pair  # noqa: F401
from tests.fakes import FakeUpstream
from tests.stores import postgres, postgres_url, store, store_pair  # noqa: F401

MakeConfig = Callable[..., Config]
STORAGES = ["sqlite", "postgres"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only: about SQLite's file or one machine; runs on the SQLite store only"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that uses `storage` (through `make_config`) runs once per store."""
    if "storage" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("sqlite_only") is not None
        metafunc.parametrize("storage", ["sqlite"] if only else STORAGES, indirect=True)


@pytest.fixture
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the gateway under test keeps its jobs: a SQLite file, or a PostgreSQL URL."""
    if request.param == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return str(tmp_path / "gateway.db")


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    fake = await FakeUpstream().start()
    yield fake
    await fake.stop()


UPSTREAM = {"timeout": "5s", "retry": "{backoff: 10ms, max_backoff: 50ms}"}
ROUTES = """
  - {path: /async, upstream: legacy, mode: async}
  - {path: /, upstream: legacy, mode: proxy}
"""


def config_text(
    upstream_url: str,
    db: str,
    extra: str = "",
    upstream: dict[str, str] | None = None,
    routes: str = ROUTES,
    server: str = "{max_body: 1MB}",
) -> str:
    """A whole configuration file; `upstream` keys replace the test defaults; `db` is a SQLite
    file or a PostgreSQL URL."""
    where = f"url: '{db}'" if "://" in db else f"path: {db}"
    keys = {"url": upstream_url, **UPSTREAM, **(upstream or {})}
    block = "".join(f"    {k}: {v}\n" for k, v in keys.items())
    return f"""
server: {server}
storage: {{{where}}}
upstreams:
  legacy:
{block}
routes:{routes}
{extra}
"""


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain client for gateways running as subprocesses."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def make_config(upstream: FakeUpstream, storage: str) -> MakeConfig:
    def make(**kwargs: Any) -> Config:
        url = kwargs.pop("url", upstream.url)
        text = config_text(url, storage, **kwargs)
        return parse(text, "test.yaml", {})

    return make


class GatewayServer(TestServer):
    """aiohttp's test server on the gateway's own protocol shell, as `serve` runs it."""

    def __init__(self, config: Config, opened: Store | None = None) -> None:
        super().__init__(create_app(config, opened))
        self.idle_timeout = config.server.idle_timeout

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return Runner(self.app, idle_timeout=self.idle_timeout, **kwargs)


@pytest.fixture
def gateway_for(aiohttp_client: Any) -> Callable[[Config], Any]:
    async def start(config: Config) -> TestClient[Any, Any]:
        return await aiohttp_client(GatewayServer(config))  # type: ignore[no-any-return]

    return start


@pytest.fixture
async def gateway(gateway_for: Any, make_config: MakeConfig) -> TestClient[Any, Any]:
    return await gateway_for(make_config())  # type: ignore[no-any-return]


async def wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll `condition` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def settled(client: TestClient[Any, Any], location: str, **kwargs: Any) -> Any:
    """GET the status URL until the job is no longer pending; return that response, read."""
    path = location.split("//", 1)[1].split("/", 1)[1]

    async def done() -> Any:
        response = await client.get("/" + path, **kwargs)
        await response.read()
        if response.headers.get("X-Gateway-Job-Status") in ("queued", "running"):
            return None
        return response

    return await wait_for(done)


async def final(http: aiohttp.ClientSession, url: str, timeout: float = 30.0, **kwargs: Any) -> Any:
    """GET a status URL until the job ends: (status code, job state, body)."""

    async def done() -> Any:
        async with http.get(url, **kwargs) as response:
            body = await response.read()
            if response.headers["X-Gateway-Job-Status"] in ("queued", "running"):
                return None
            return response.status, response.headers["X-Gateway-Job-Status"], body

    return await wait_for(done, timeout)
