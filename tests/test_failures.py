"""Retries, backpressure and retention, in process against the real fake upstream."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.jobs import NewJob, new_id
from gateway.store import open_store
from tests.conftest import settled, wait_for
from tests.fakes import FakeUpstream
from tests.stores import peek


async def test_idempotent_job_retries_503_honouring_retry_after(
    gateway: Any, upstream: FakeUpstream
) -> None:
    started = time.monotonic()
    location = (await gateway.get("/async/flaky?fail=1")).headers["Location"]
    done = await settled(gateway, location)
    assert done.status == 200 and await done.text() == "ok after 1"
    assert time.monotonic() - started >= 1.0  # Retry-After: 1 beat the 10ms backoff
    view = await gateway.get("/" + location.split("/", 3)[3] + "/status")
    assert (await view.json())["attempts"] == 2


async def test_tries_run_out_on_an_answer_and_the_job_completes_with_it(
    gateway_for: Any, make_config: Any, upstream: FakeUpstream
) -> None:
    client = await gateway_for(make_config(upstream={"retry": "{attempts: 2, backoff: 10ms}"}))
    location = (await client.get("/async/status/502")).headers["Location"]
    done = await settled(client, location)
    assert done.status == 502 and done.headers["X-Gateway-Job-Status"] == "completed"
    assert await done.text() == "status 502"
    assert len(upstream.seen) == 2


async def test_post_answered_503_is_not_sent_again(gateway: Any, upstream: FakeUpstream) -> None:
    location = (await gateway.post("/async/flaky?fail=5", data=b"once")).headers["Location"]
    done = await settled(gateway, location)
    assert done.status == 503 and done.headers["X-Gateway-Job-Status"] == "completed"
    assert len(upstream.seen) == 1


async def test_post_reset_after_sending_fails_without_a_second_try(
    gateway: Any, upstream: FakeUpstream
) -> None:
    location = (await gateway.post("/async/reset", data=b"x")).headers["Location"]
    done = await settled(gateway, location)
    assert done.status == 502
    assert (await done.json())["cause"] == "reset"
    assert len(upstream.seen) == 1


async def test_an_answer_cut_short_is_never_stored_as_the_answer(
    gateway: Any, upstream: FakeUpstream
) -> None:
    location = (await gateway.post("/async/short?declared=100&sent=10", data=b"x")).headers[
        "Location"
    ]
    done = await settled(gateway, location)
    assert done.status == 502 and done.headers["X-Gateway-Job-Status"] == "failed"
    assert (await done.json())["cause"] == "bad_answer"
    assert len(upstream.seen) == 1


async def test_get_reset_is_tried_again(gateway: Any, upstream: FakeUpstream) -> None:
    location = (await gateway.get("/async/reset")).headers["Location"]
    done = await settled(gateway, location)
    assert done.status == 502 and (await done.json())["attempts"] == 3
    assert len(upstream.seen) == 3


async def test_max_queued_answers_503_with_retry_after(
    gateway_for: Any, make_config: Any, upstream: FakeUpstream
) -> None:
    upstream.gate.clear()
    client = await gateway_for(
        make_config(upstream={"max_in_flight": "1"}, extra="jobs: {max_queued: 2}")
    )
    first = await client.post("/async/a?hold=1")
    await wait_for(lambda: len(upstream.seen) == 1)  # running: not counted as waiting
    assert first.status == 202
    for _ in range(2):
        assert (await client.post("/async/b?hold=1")).status == 202
    refused = await client.post("/async/c?hold=1")
    assert refused.status == 503
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["Content-Type"] == "application/problem+json"
    upstream.gate.set()
    await settled(client, first.headers["Location"])


async def test_finished_jobs_expire_and_are_swept(gateway_for: Any, make_config: Any) -> None:
    config = make_config(extra="jobs: {retention: 300ms}")
    client = await gateway_for(config)
    location = (await client.get("/async/x")).headers["Location"]
    done = await settled(client, location)
    assert done.status == 200
    path = "/" + location.split("/", 3)[3]

    async def gone() -> bool:
        return bool((await client.get(path)).status == 404)

    await wait_for(gone, timeout=5)

    async def swept() -> bool:
        counts = [
            await peek(config.storage, f"SELECT count(*) FROM {t}") for t in ("jobs", "bodies")
        ]
        return counts == [[(0,)], [(0,)]]

    await wait_for(swept, timeout=5)


@pytest.mark.sqlite_only  # a lease ends on its caller's clock here; on PostgreSQL a heartbeat's
async def test_a_lapsed_lease_of_another_host_is_taken_over(
    gateway_for: Any, make_config: Any, upstream: FakeUpstream
) -> None:
    config = make_config(extra="jobs: {bind_headers: []}")
    store = await open_store(config.storage)
    job = NewJob(
        id=new_id(time.time()),
        route="/async",
        upstream="legacy",
        method="GET",
        target="/async/lost",
        headers=(),
        created_at=time.time(),
        retry_on_interrupt=True,
    )
    await store.accept(job, _empty())
    now = time.time()
    assert await store.claim("legacy", "elsewhere:1:dead", now - 60, now - 30)  # lapsed
    await store.close()
    client = await gateway_for(config)
    done = await settled(client, f"http://x/_gateway/jobs/{job.id}")
    assert done.status == 200
    assert [s.path_qs for s in upstream.seen] == ["/async/lost"]
    view = await (await client.get(f"/_gateway/jobs/{job.id}/status")).json()
    assert view["attempts"] == 2


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""
