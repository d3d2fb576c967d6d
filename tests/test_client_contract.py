"""The client contract: Prefer wait and respond-async, long-poll, cancel and forget."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.conftest import settled, wait_for
from tests.fakes import BINARY, FakeUpstream

HOLD_ROUTES = """
  - {path: /async, upstream: legacy, mode: async, max_wait: 3s}
  - {path: /waits, upstream: legacy, mode: async, wait: 2s}
"""


def path_of(location: str) -> str:
    return "/" + location.split("/", 3)[3]


async def test_prefer_wait_returns_the_answer_when_it_comes_in_time(gateway: Any) -> None:
    response = await gateway.post("/async/binary", headers={"Prefer": "wait=5"})
    assert response.status == 201
    assert await response.read() == BINARY
    assert response.headers["Preference-Applied"] == "wait=5"
    assert "Prefer" in response.headers.getall("Vary")
    assert response.headers["X-Gateway-Job-Status"] == "completed"


async def test_prefer_wait_falls_back_to_202_capped_by_max_wait(
    gateway_for: Any, make_config: Any, upstream: FakeUpstream
) -> None:
    client = await gateway_for(make_config(routes=HOLD_ROUTES))
    upstream.gate.clear()
    started = time.monotonic()
    response = await client.post("/async/x?hold=1", headers={"Prefer": "wait=100"})
    assert 2.5 < time.monotonic() - started < 10  # held for max_wait (3s), not 100s
    assert response.status == 202
    assert response.headers["Preference-Applied"] == "wait=3"
    upstream.gate.set()
    assert (await settled(client, response.headers["Location"])).status == 200


async def test_route_wait_and_respond_async(
    gateway_for: Any, make_config: Any, upstream: FakeUpstream
) -> None:
    client = await gateway_for(make_config(routes=HOLD_ROUTES))
    direct = await client.get("/waits/binary")
    assert direct.status == 201  # the route waits 2s by default; the upstream is fast
    assert "Preference-Applied" not in direct.headers
    upstream.gate.clear()
    started = time.monotonic()
    forced = await client.get("/waits/binary?hold=1", headers={"Prefer": "respond-async"})
    assert time.monotonic() - started < 1.5
    assert forced.status == 202
    assert forced.headers["Preference-Applied"] == "respond-async"
    assert "Prefer" in forced.headers["Vary"]
    upstream.gate.set()


async def test_long_poll_wakes_when_the_job_ends(gateway: Any, upstream: FakeUpstream) -> None:
    upstream.gate.clear()
    location = (await gateway.post("/async/binary?hold=1")).headers["Location"]

    async def open_gate_soon() -> None:
        await wait_for(lambda: len(upstream.seen) == 1)
        await asyncio.sleep(0.3)
        upstream.gate.set()

    opener = asyncio.create_task(open_gate_soon())
    started = time.monotonic()
    response = await gateway.get(path_of(location), headers={"Prefer": "wait=30"})
    await opener
    assert response.status == 201 and await response.read() == BINARY
    assert time.monotonic() - started < 5  # woken by the end, not by the 30s wait
    assert response.headers["Preference-Applied"] == "wait=30"


async def test_long_poll_times_out_with_the_pending_202(
    gateway_for: Any, make_config: Any, upstream: FakeUpstream
) -> None:
    client = await gateway_for(make_config(routes=HOLD_ROUTES))
    upstream.gate.clear()
    location = (await client.post("/async/x?hold=1")).headers["Location"]
    response = await client.get(path_of(location), headers={"Prefer": "wait=1"})
    assert response.status == 202
    assert response.headers["Preference-Applied"] == "wait=1"
    assert response.headers["X-Gateway-Job-Status"] in ("queued", "running")
    upstream.gate.set()


async def test_delete_cancels_a_running_job_and_aborts_its_call(
    gateway: Any, upstream: FakeUpstream
) -> None:
    upstream.gate.clear()
    location = (await gateway.post("/async/x?hold=1", data=b"body")).headers["Location"]
    await wait_for(lambda: upstream.in_flight == 1)
    response = await gateway.delete(path_of(location))
    assert response.status == 204
    await wait_for(lambda: upstream.in_flight == 0)  # the call in flight was cut off
    canceled = await gateway.get(path_of(location))
    assert canceled.status == 409
    assert canceled.headers["X-Gateway-Job-Status"] == "canceled"
    assert canceled.headers["Content-Type"] == "application/problem+json"
    view = await (await gateway.get(path_of(location) + "/status")).json()
    assert view["status"] == "canceled"
    upstream.gate.set()


async def test_delete_forgets_a_finished_job(gateway: Any) -> None:
    location = (await gateway.post("/async/x")).headers["Location"]
    await settled(gateway, location)
    assert (await gateway.delete(path_of(location))).status == 204
    assert (await gateway.get(path_of(location))).status == 404
    assert (await gateway.delete(path_of(location))).status == 404


async def test_delete_needs_the_same_credentials(gateway: Any, upstream: FakeUpstream) -> None:
    upstream.gate.clear()
    response = await gateway.post("/async/x?hold=1", headers={"Authorization": "Bearer a"})
    path = path_of(response.headers["Location"])
    assert (await gateway.delete(path, headers={"Authorization": "Bearer b"})).status == 404
    assert (await gateway.delete(path, headers={"Authorization": "Bearer a"})).status == 204
    upstream.gate.set()


async def test_idempotency_key_repeat_returns_the_first_job(
    gateway: Any, upstream: FakeUpstream
) -> None:
    upstream.gate.clear()
    key = {"Idempotency-Key": "order-1", "Authorization": "Bearer a"}
    first = await gateway.post("/async/x?hold=1", data=b"same", headers=key)
    again = await gateway.post("/async/x?hold=1", data=b"same", headers=key)
    assert first.status == again.status == 202
    assert first.headers["Location"] == again.headers["Location"]
    upstream.gate.set()
    await settled(gateway, first.headers["Location"], headers={"Authorization": "Bearer a"})
    replay = await gateway.post("/async/x?hold=1", data=b"same", headers=key)
    assert replay.status == 200  # once completed, a repeat gets the replay
    assert replay.headers["X-Gateway-Job-Id"] == first.headers["Location"].rsplit("/", 1)[1]
    assert len(upstream.seen) == 1  # forwarded once


async def test_idempotency_key_with_another_request_is_422(gateway: Any) -> None:
    key = {"Idempotency-Key": "k"}
    assert (await gateway.post("/async/x", data=b"one", headers=key)).status == 202
    for method, path, body in [
        ("POST", "/async/x", b"two"),
        ("PUT", "/async/x", b"one"),
        ("POST", "/async/y", b"one"),
    ]:
        response = await gateway.request(method, path, data=body, headers=key)
        assert response.status == 422
        assert response.headers["Content-Type"] == "application/problem+json"


async def test_idempotency_keys_are_per_credentials(gateway: Any, upstream: FakeUpstream) -> None:
    for who in ("a", "b"):
        headers = {"Idempotency-Key": "k", "Authorization": f"Bearer {who}"}
        assert (await gateway.post("/async/x", data=b"1", headers=headers)).status == 202
    await wait_for(lambda: len(upstream.seen) == 2)


async def test_concurrent_repeats_make_one_job(gateway: Any, upstream: FakeUpstream) -> None:
    upstream.gate.clear()
    key = {"Idempotency-Key": "burst"}
    responses = await asyncio.gather(
        *(gateway.post("/async/x?hold=1", data=b"b", headers=key) for _ in range(20))
    )
    assert {r.headers["Location"] for r in responses} == {responses[0].headers["Location"]}
    upstream.gate.set()
    await settled(gateway, responses[0].headers["Location"])
    assert len(upstream.seen) == 1
