"""Proxy routes, unmatched requests, body limits and the health endpoints."""

from __future__ import annotations

import io
import json
from typing import Any

import aiohttp
import pytest

from tests.conftest import wait_for
from tests.fakes import BINARY, FakeUpstream, header_values


async def test_proxy_passes_answers_through(gateway: Any, upstream: FakeUpstream) -> None:
    response = await gateway.post(
        "/binary", data=b"up", headers={"Connection": "X-Hop", "X-Hop": "1", "X-Keep": "2"}
    )
    assert response.status == 201
    assert await response.read() == BINARY
    assert response.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert "X-Gateway-Job-Id" not in response.headers
    seen = upstream.last()
    assert seen.body == b"up"
    assert header_values(seen.headers, "X-Hop") == []
    assert header_values(seen.headers, "X-Keep") == ["2"]
    assert header_values(seen.headers, "X-Forwarded-For") == ["127.0.0.1"]
    assert header_values(seen.headers, "Via") == ["1.1 async-gateway"]


async def test_proxy_streams_large_bodies(gateway: Any, upstream: FakeUpstream) -> None:
    size = 5 * 1024 * 1024 + 3
    response = await gateway.get(f"/big?bytes={size}")
    assert response.status == 200
    received = 0
    async for chunk in response.content.iter_chunked(65536):
        received += len(chunk)
    assert received == size


async def test_proxy_does_not_follow_redirects(gateway: Any) -> None:
    response = await gateway.get("/redirect", allow_redirects=False)
    assert response.status == 302 and response.headers["Location"] == "/elsewhere"


async def test_proxy_refused_is_502_problem(gateway_for: Any, make_config: Any) -> None:
    client = await gateway_for(make_config(url="http://127.0.0.1:9"))
    response = await client.get("/anything")
    assert response.status == 502
    assert response.headers["Content-Type"] == "application/problem+json"
    assert (await response.json())["status"] == 502


async def test_proxy_timeout_is_504_problem(gateway_for: Any, make_config: Any) -> None:
    client = await gateway_for(make_config(upstream={"timeout": "200ms"}))
    response = await client.get("/x?sleep=5")
    assert response.status == 504
    assert response.headers["Content-Type"] == "application/problem+json"


async def test_unmatched_request_is_404_problem(gateway_for: Any, make_config: Any) -> None:
    routes = "\n  - {path: /only, upstream: legacy, methods: [POST]}\n"
    client = await gateway_for(make_config(routes=routes))
    for method, path in [("GET", "/elsewhere"), ("GET", "/only"), ("POST", "/onlyX")]:
        response = await client.request(method, path)
        assert response.status == 404
        assert response.headers["Content-Type"] == "application/problem+json"
    assert (await client.post("/only/7")).status == 202


@pytest.mark.parametrize("path", ["/async/x", "/x"])
async def test_declared_body_over_max_body_is_413(
    gateway: Any, path: str, upstream: FakeUpstream
) -> None:
    response = await gateway.post(path, data=io.BytesIO(b"x" * (1024 * 1024 + 1)))
    assert response.status == 413
    assert response.headers["Content-Type"] == "application/problem+json"
    assert upstream.seen == []


@pytest.mark.parametrize("path", ["/async/x", "/x"])
async def test_streamed_body_over_max_body_is_413(
    gateway: Any, path: str, upstream: FakeUpstream
) -> None:
    async def chunks() -> Any:
        for _ in range(20):
            yield b"y" * 65536  # 1.25 MiB with no Content-Length

    response = await gateway.post(path, data=chunks())
    assert response.status == 413
    assert response.headers["Content-Type"] == "application/problem+json"
    assert upstream.seen == []  # not stored, and no whole request reached the upstream


async def test_health_and_readiness(gateway: Any) -> None:
    assert (await gateway.get("/_gateway/healthz")).status == 200
    ready = await gateway.get("/_gateway/readyz")
    assert ready.status == 200 and (await ready.json())["status"] == "ready"


async def test_streamed_body_under_max_body_passes_a_proxy_route(gateway: Any) -> None:
    small = await gateway.post("/x", data=_one_chunk())
    assert small.status == 200 and json.loads(await small.text())["size"] == 5


async def _one_chunk() -> Any:
    yield b"small"


async def test_an_answer_cut_short_before_anything_was_sent_is_a_502(gateway: Any) -> None:
    response = await gateway.get("/short?declared=100&sent=10")
    assert response.status == 502
    assert (await response.json())["detail"].startswith("the upstream's answer was not valid")


async def test_an_answer_cut_short_midway_cuts_the_client_off_too(
    gateway: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Part of the body has gone out: only a cut connection tells the client; one log line
    says why, with no traceback."""
    response = await gateway.get(f"/short?declared={3 * 1024 * 1024}&sent={1024 * 1024}")
    assert response.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    await wait_for(lambda: any(getattr(r, "event", None) == "proxy_cut" for r in caplog.records))
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]
