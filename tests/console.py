"""The console's test stack: a gateway and its console, each a real aiohttp server on port 0, the
console on the gateway's own protocol shell as `serve` runs it; fixtures for its tests."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.web import BaseRunner

from gateway.app import create_app
from gateway.config import Config
from gateway.console import server
from gateway.handlers import RUNTIME

TOKEN = "t0ken-for-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**BEARER, "Accept": "application/json"}
CANARY = "CANARY-7f3a"


@dataclass
class Pair:
    gateway: TestClient[Any, Any]
    console: TestClient[Any, Any]

    async def post_job(self, path: str, body: bytes = b"x", **kw: Any) -> str:
        response = await self.gateway.post(path, data=body, **kw)
        assert response.status == 202, await response.text()
        return str((await response.json())["id"])

    async def view(self, job_id: str) -> dict[str, Any]:
        response = await self.console.get(f"/jobs/{job_id}", headers=JSON)
        assert response.status == 200
        return dict(await response.json())

    async def state(self, job_id: str) -> str:
        return str((await self.view(job_id))["status"])

    async def reached(self, job_id: str, status: str) -> bool:
        return await self.state(job_id) == status

    def csrf(self, html: str) -> str:
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
        assert found, html
        return found.group(1)


class ConsoleServer(TestServer):
    """aiohttp's test server on the console's runner, the one its Listener opens."""

    def __init__(self, app: web.Application, idle_timeout: float) -> None:
        super().__init__(app)
        self.idle_timeout = idle_timeout

    async def _make_runner(self, **kwargs: Any) -> BaseRunner:
        return server.runner(self.app, self.idle_timeout)


async def pair_for(aiohttp_client: Any, config: Config, tick: float = 0.05) -> Pair:
    gateway = await aiohttp_client(create_app(config))
    app = server.create_console(gateway.app[RUNTIME], tick=tick)
    console = await aiohttp_client(ConsoleServer(app, config.server.idle_timeout))
    return Pair(gateway, console)


@pytest.fixture
def admin_config(make_config: Callable[..., Config]) -> Config:
    return make_config(extra=f"admin: {{port: 0, token: {TOKEN}}}")


@pytest.fixture
async def pair(aiohttp_client: Any, admin_config: Config) -> Pair:
    return await pair_for(aiohttp_client, admin_config)


async def signed_in(pair: Pair) -> str:
    """Sign the console client in; the CSRF token of its session."""
    response = await pair.console.post("/login", data={"token": TOKEN}, allow_redirects=False)
    assert response.status == 303
    page = await pair.console.get("/")
    return pair.csrf(await page.text())
