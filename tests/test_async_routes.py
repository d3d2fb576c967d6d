"""Async routes end to end: durable 202, background forwarding, byte-exact replay, failures."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from typing import Any

import pytest

from tests.conftest import settled, wait_for
from tests.fakes import BINARY, GZIPPED, FakeUpstream, header_values
from tests.stores import peek

ID = re.compile(r"^[A-Za-z0-9_-]{22,}$")


async def test_202_carries_what_the_contract_lists(gateway: Any) -> None:
    response = await gateway.post("/async/report?x=1", data=b"hello")
    assert response.status == 202
    location = response.headers["Location"]
    host = response.url.host
    assert re.fullmatch(rf"http://{host}:\d+/_gateway/jobs/[A-Za-z0-9_-]+", location)
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Content-Type"].startswith("application/json")
    assert "Prefer" in response.headers["Vary"]
    assert "Operation-Location" not in response.headers
    body = await response.json()
    assert set(body) == {"id", "status", "status_url", "created_at"}
    assert body["status_url"] == location and location.endswith("/" + body["id"])
    assert body["status"] == "queued"
    assert ID.match(body["id"])
    assert datetime.fromisoformat(body["created_at"].replace("Z", "+00:00")).tzinfo is not None


async def test_202_only_after_the_request_is_in_the_database(
    gateway_for: Any, make_config: Any, upstream: FakeUpstream
) -> None:
    upstream.gate.clear()
    config = make_config()
    client = await gateway_for(config)
    response = await client.post("/async/x?hold=1", data=b"kept")
    job_id = (await response.json())["id"]
    # A second, independent connection to the database sees the committed row and its body.
    row = await peek(config.storage, "SELECT method, target FROM jobs WHERE id = ?", job_id)
    body = await peek(config.storage, "SELECT data FROM bodies WHERE job_id = ?", job_id)
    assert row == [("POST", "/async/x?hold=1")]
    assert body == [(b"kept",)]
    upstream.gate.set()


async def test_job_ids_are_unique_and_long(gateway: Any) -> None:
    ids = set()
    for _ in range(20):
        response = await gateway.post("/async/a", data=b"")
        ids.add((await response.json())["id"])
    assert len(ids) == 20
    assert all(len(i) >= 22 for i in ids)  # 22 base64url characters carry 128 bits


async def test_pending_then_replayed_byte_for_byte(gateway: Any, upstream: FakeUpstream) -> None:
    upstream.gate.clear()
    response = await gateway.post("/async/binary?hold=1", data=b"in")
    location = response.headers["Location"]
    path = "/" + location.split("/", 3)[3]
    pending = await gateway.get(path)
    assert pending.status == 202
    assert pending.headers["X-Gateway-Job-Status"] in ("queued", "running")
    assert pending.headers["Cache-Control"] == "no-store"
    assert int(pending.headers["Retry-After"]) >= 1
    assert {"id", "status", "created_at", "started_at", "attempts"} <= set(await pending.json())
    upstream.gate.set()
    done = await settled(gateway, location)
    assert done.status == 201
    assert await done.read() == BINARY
    assert done.headers["Content-Type"] == "application/x-thing"
    assert done.headers.getall("X-Custom") == ["one", "two"]
    assert done.headers.getall("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert done.headers["X-Gateway-Job-Id"] == location.rsplit("/", 1)[1]
    assert done.headers["X-Gateway-Job-Status"] == "completed"
    assert "no-store" in done.headers.getall("Cache-Control")
    assert int(done.headers["Content-Length"]) == len(BINARY)
    names = [k.lower() for k in done.headers]
    assert names.index("x-custom") < names.index("set-cookie") < names.index("content-length")


async def test_head_on_the_status_url_sends_headers_only(gateway: Any) -> None:
    location = (await gateway.post("/async/binary")).headers["Location"]
    await settled(gateway, location)
    path = "/" + location.split("/", 3)[3]
    head = await gateway.head(path)
    assert head.status == 201
    assert head.headers["Content-Length"] == str(len(BINARY))
    assert await head.read() == b""


async def test_compressed_answers_replay_as_sent(gateway: Any) -> None:
    location = (await gateway.get("/async/gzip", headers={"Accept-Encoding": "gzip"})).headers[
        "Location"
    ]
    done = await settled(gateway, location, auto_decompress=False)
    assert done.headers["Content-Encoding"] == "gzip"
    assert await done.read() == GZIPPED


async def test_large_bodies_move_in_pieces_both_ways(
    gateway_for: Any, make_config: Any, upstream: FakeUpstream
) -> None:
    client = await gateway_for(make_config())
    size = 900 * 1024  # several storage chunks; under the test's 1MB max_body
    payload = bytes(range(256)) * (size // 256)
    response = await client.post(f"/async/big?bytes={3 * 1024 * 1024 + 7}", data=payload)
    done = await settled(client, response.headers["Location"])
    assert upstream.last().body == payload
    assert upstream.last().headers.count(("Content-Length", str(size))) == 1
    body = await done.read()
    assert len(body) == 3 * 1024 * 1024 + 7
    assert body[:1024] == (bytes(range(256)) * 4)


async def test_forwarded_headers_follow_the_rules(gateway: Any, upstream: FakeUpstream) -> None:
    sent = {
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "drop me",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic x",
        "X-Forwarded-For": "203.0.113.9",
        "Via": "1.1 edge",
        "X-Gateway-Job-Id": "spoofed",
        "X-Kept": "yes",
        "Authorization": "Bearer t",
    }
    response = await gateway.post("/async/echo?q=%20a", data=b"body", headers=sent)
    job_id = (await response.json())["id"]
    await settled(gateway, response.headers["Location"], headers={"Authorization": "Bearer t"})
    seen = upstream.last()
    names = {n.lower() for n, _ in seen.headers}
    assert not names & {"x-hop", "keep-alive", "proxy-authorization"}
    assert header_values(seen.headers, "Connection") in ([], ["keep-alive"])
    assert header_values(seen.headers, "X-Forwarded-For") == ["203.0.113.9, 127.0.0.1"]
    assert header_values(seen.headers, "X-Forwarded-Proto") == ["http"]
    assert header_values(seen.headers, "X-Forwarded-Host") == [f"127.0.0.1:{gateway.port}"]
    assert header_values(seen.headers, "Via") == ["1.1 edge, 1.1 async-gateway"]
    assert header_values(seen.headers, "X-Gateway-Job-Id") == [job_id]
    assert header_values(seen.headers, "X-Kept") == ["yes"]
    assert header_values(seen.headers, "Authorization") == ["Bearer t"]
    assert seen.path_qs == "/async/echo?q=%20a"
    assert seen.body == b"body"


async def test_redirects_are_replayed_not_followed(gateway: Any, upstream: FakeUpstream) -> None:
    location = (await gateway.get("/async/redirect")).headers["Location"]
    done = await settled(gateway, location, allow_redirects=False)
    assert done.status == 302
    assert done.headers["Location"] == "/elsewhere"
    assert [s.path_qs for s in upstream.seen] == ["/async/redirect"]


async def test_upstream_error_statuses_complete_the_job(gateway: Any) -> None:
    location = (await gateway.post("/async/status/500")).headers["Location"]
    done = await settled(gateway, location)
    assert done.status == 500
    assert done.headers["X-Gateway-Job-Status"] == "completed"
    assert await done.text() == "status 500"


async def test_refused_upstream_fails_with_502_problem(gateway_for: Any, make_config: Any) -> None:
    client = await gateway_for(make_config(url="http://127.0.0.1:9"))
    location = (await client.get("/async/x")).headers["Location"]
    done = await settled(client, location)
    assert done.status == 502
    assert done.headers["Content-Type"] == "application/problem+json"
    assert done.headers["X-Gateway-Job-Status"] == "failed"
    problem = await done.json()
    assert problem["status"] == 502 and problem["attempts"] == 3 and problem["cause"] == "refused"


async def test_slow_upstream_fails_with_504_after_timeout(
    gateway_for: Any, make_config: Any
) -> None:
    client = await gateway_for(make_config(upstream={"timeout": "200ms", "retry": "{attempts: 1}"}))
    location = (await client.post("/async/x?sleep=5")).headers["Location"]
    done = await settled(client, location)
    assert done.status == 504
    problem = await done.json()
    assert problem["cause"] == "timeout" and problem["attempts"] == 1


async def test_max_in_flight_bounds_calls_in_arrival_order(
    gateway_for: Any, make_config: Any, upstream: FakeUpstream
) -> None:
    client = await gateway_for(make_config(upstream={"max_in_flight": "2"}))
    upstream.gate.clear()
    locations = []
    for i in range(6):
        response = await client.post(f"/async/n{i}?hold=1")
        locations.append(response.headers["Location"])
    await wait_for(lambda: len(upstream.seen) == 2)
    await asyncio.sleep(0.2)  # give a wrongly unbounded dispatcher the chance to overrun
    assert len(upstream.seen) == 2
    upstream.gate.set()
    for location in locations:
        await settled(client, location)
    assert upstream.peak <= 2
    assert [s.path_qs.split("?")[0] for s in upstream.seen] == [f"/async/n{i}" for i in range(6)]


async def test_status_urls_answer_only_to_the_same_credentials(gateway: Any) -> None:
    response = await gateway.post("/async/x", headers={"Authorization": "Bearer alice"})
    path = "/" + response.headers["Location"].split("/", 3)[3]
    await settled(gateway, response.headers["Location"], headers={"Authorization": "Bearer alice"})
    assert (await gateway.get(path, headers={"Authorization": "Bearer bob"})).status == 404
    assert (await gateway.get(path)).status == 404
    assert (
        await gateway.get(path + "/status", headers={"Authorization": "Bearer bob"})
    ).status == 404
    assert (await gateway.get(path, headers={"Authorization": "Bearer alice"})).status == 200


async def test_status_view_has_metadata_without_the_body(gateway: Any) -> None:
    location = (await gateway.post("/async/binary")).headers["Location"]
    await settled(gateway, location)
    view = await gateway.get("/" + location.split("/", 3)[3] + "/status")
    assert view.status == 200
    assert view.headers["Cache-Control"] == "no-store"
    body = await view.json()
    assert body["status"] == "completed"
    assert body["response"]["status"] == 201
    assert ["X-Custom", "one"] in body["response"]["headers"]
    assert "body" not in body


@pytest.mark.parametrize("path", ["/_gateway/jobs/nope", "/_gateway/jobs/nope/status"])
async def test_unknown_jobs_are_404_problems(gateway: Any, path: str) -> None:
    response = await gateway.get(path)
    assert response.status == 404
    assert response.headers["Content-Type"] == "application/problem+json"
    assert (await response.json())["status"] == 404


async def test_completed_job_forgets_its_stored_request(gateway_for: Any, make_config: Any) -> None:
    config = make_config()
    client = await gateway_for(config)
    response = await client.post("/async/x", data=b"secret", headers={"Authorization": "Bearer s"})
    job_id = (await response.json())["id"]
    await settled(client, response.headers["Location"], headers={"Authorization": "Bearer s"})
    headers = await peek(config.storage, "SELECT request_headers FROM jobs WHERE id = ?", job_id)
    parts = await peek(config.storage, "SELECT part FROM bodies WHERE job_id = ?", job_id)
    assert headers == [(None,)]
    assert parts == [(1,)]


async def test_a_reason_phrase_that_is_not_utf8_is_stored_and_replayed(
    gateway_for: Any, make_config: Any
) -> None:
    """aiohttp reads such bytes as lone surrogates; the job still completes and replays."""

    async def raw(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 Caf\xe9 \xff\r\nContent-Length: 2\r\nX-Raw: \xff\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(raw, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        client = await gateway_for(make_config(url=f"http://127.0.0.1:{port}"))
        location = (await client.get("/async/raw")).headers["Location"]
        done = await settled(client, location)
        assert done.headers["X-Gateway-Job-Status"] == "completed"
        assert done.status == 200 and await done.read() == b"ok"
        assert done.raw_headers[0] == (b"Content-Length", b"2")
    finally:
        server.close()
