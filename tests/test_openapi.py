"""The OpenAPI 3.1 document, and schemathesis fuzzing a live gateway against it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import config_text
from tests.fakes import FakeUpstream
from tests.processes import GatewayProcess


async def test_document_describes_the_gateway_endpoints(gateway: Any) -> None:
    response = await gateway.get("/_gateway/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {
        "/_gateway/jobs/{id}",
        "/_gateway/jobs/{id}/status",
        "/_gateway/healthz",
        "/_gateway/readyz",
        "/_gateway/metrics",
        "/_gateway/openapi.json",
    }
    assert set(document["paths"]["/_gateway/jobs/{id}"]) == {"get", "head", "delete"}


async def test_own_paths_are_never_forwarded(gateway: Any, upstream: FakeUpstream) -> None:
    wrong = await gateway.post("/_gateway/healthz")
    assert wrong.status == 405 and wrong.headers["Allow"] == "GET, HEAD"
    assert (await gateway.put("/_gateway/jobs/abc")).headers["Allow"] == "DELETE, GET, HEAD"
    assert (await gateway.get("/_gateway/elsewhere")).status == 404
    assert upstream.seen == []


async def test_schemathesis_finds_nothing_against_a_live_gateway(
    tmp_path: Path, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(upstream.url, str(tmp_path / "gateway.db")))
    gateway = await GatewayProcess(["serve", "--config", str(path)], tmp_path / "log").start()
    try:
        async with http.post(gateway.url + "/async/x") as response:  # some real state
            assert response.status == 202
        command = [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{gateway.url}/_gateway/openapi.json",
            "--checks",
            "all",
            "--max-examples",
            "40",
            "--no-color",
        ]
        result = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, text=True, timeout=240, cwd=tmp_path
        )
        assert result.returncode == 0, result.stdout[-4000:]
    finally:
        gateway.kill()
