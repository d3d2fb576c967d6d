"""The operator console over HTTP: pages and JSON, actions, live streams, and what it never
shows; the gateway and the console each a real aiohttp server on port 0 (`tests/console.py`)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.config import Config
from gateway.console.pages import CONSOLE
from gateway.console.server import create_console
from gateway.handlers import RUNTIME
from gateway.jobs import Status
from tests.conftest import MakeConfig, settled, wait_for
from tests.console import (
    BEARER,
    CANARY,
    JSON,
    TOKEN,
    Pair,
    pair_for,
    signed_in,
)
from tests.fakes import FakeUpstream


async def test_actions_follow_the_state_and_are_logged(
    pair: Pair, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.console")
    upstream.gate.clear()
    held = await pair.post_job("/async/h?hold=1")
    await wait_for(lambda: upstream.in_flight == 1)
    failed = await pair.post_job("/async/reset")
    await wait_for(lambda: pair.reached(failed, "failed"))
    assert (await pair.view(failed))["actions"] == ["retry", "forget"]
    assert (await pair.view(held))["actions"] == ["cancel"]
    # cancel aborts the call in flight, as the public DELETE does
    response = await pair.console.post(f"/jobs/{held}/cancel", headers=JSON)
    assert response.status == 200 and (await response.json())["done"] is True
    await wait_for(lambda: upstream.in_flight == 0)
    assert await pair.state(held) == "canceled"
    response = await pair.console.post(f"/jobs/{held}/retry", headers=JSON)
    assert response.status == 409
    # retry a failed job: it runs again (and fails again)
    tries = len(upstream.seen)
    assert (await pair.console.post(f"/jobs/{failed}/retry", headers=JSON)).status == 200
    await wait_for(lambda: len(upstream.seen) > tries)
    await wait_for(lambda: pair.reached(failed, "failed"))
    response = await pair.console.post(f"/jobs/{failed}/forget", headers=JSON)
    assert response.status == 200
    assert (await pair.console.get(f"/jobs/{failed}", headers=JSON)).status == 404
    lines = [r for r in caplog.records if getattr(r, "event", "") == "admin_action"]
    done = [(r.action, r.job_id, r.count) for r in lines]  # type: ignore[attr-defined]
    assert done == [
        ("cancel", held, 1),
        ("retry", held, 0),
        ("retry", failed, 1),
        ("forget", failed, 1),
    ]


async def test_bulk_retry_states_the_count_then_retries_in_batches(
    pair: Pair, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.console")
    ids = [await pair.post_job("/async/reset") for _ in range(3)]
    for job_id in ids:
        await wait_for(lambda: pair.reached(job_id, "failed"))  # noqa: B023
    confirm = await pair.console.get("/jobs/retry?status=failed", headers=JSON)
    assert (await confirm.json())["count"] == 3
    csrf = await signed_in(pair)
    page = await (await pair.console.get("/jobs/retry?status=failed&route=/async")).text()
    assert re.search(r"Retry <strong>3</strong> failed jobs", page), page
    assert (await pair.console.get("/jobs/retry?status=queued")).status == 400
    tries = len(upstream.seen)
    response = await pair.console.post(
        "/jobs/retry", data={"csrf": csrf, "status": "failed", "route": "/async"}
    )
    assert response.status == 200 and "3 failed jobs queued again" in await response.text()
    await wait_for(lambda: len(upstream.seen) >= tries + 3)
    [line] = [r for r in caplog.records if getattr(r, "action", "") == "bulk_retry"]
    assert line.filter == {"status": "failed", "route": "/async"}  # type: ignore[attr-defined]
    assert line.count == 3  # type: ignore[attr-defined]


async def test_the_jobs_list_pages_by_key_50_at_a_time(pair: Pair) -> None:
    rt = pair.gateway.app[RUNTIME]
    rt.dispatcher._claiming = False  # keep them queued: only the list is under test
    ids = [await pair.post_job(f"/async/n{n}?hold=1") for n in range(60)]
    # a claim already under way when claiming stopped may have taken the oldest few
    ids = [job_id for job_id in ids if job_id not in rt.dispatcher._calls]
    first = await (await pair.console.get("/jobs?status=queued", headers=JSON)).json()
    assert [j["id"] for j in first["jobs"]] == ids[::-1][:50]
    page = await (await pair.console.get("/jobs?status=queued", headers=BEARER)).text()
    assert f'href="/jobs?status=queued&amp;after={first["next"]}"' in page
    await pair.post_job("/async/late?hold=1")
    later = await pair.console.get(f"/jobs?status=queued&after={first['next']}", headers=JSON)
    second = await later.json()
    # a claim under way when claiming stopped takes the oldest and may land only now
    older = [i for i in ids[::-1][50:] if await _status(rt, i) == Status.QUEUED]
    assert [j["id"] for j in second["jobs"]] == older and second["next"] is None
    for bad in (
        "status=nope",
        "status=receiving",
        "prefix=/a?b=1",
        "after=x",
        "upstream=" + "u" * 300,
    ):
        assert (await pair.console.get(f"/jobs?{bad}", headers=JSON)).status == 400, bad


async def _status(rt: Any, job_id: str) -> Status | None:
    job = await rt.store.get(job_id, rt.now())
    return job.status if job else None


async def test_a_canary_in_body_credentials_query_and_answer_headers_never_shows(
    aiohttp_client: Any, make_config: MakeConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.console")

    async def leaky(request: web.Request) -> web.Response:
        await request.read()
        if request.path.endswith("/cut"):  # no answer at all: the job fails
            assert request.transport is not None
            request.transport.close()
        headers = {"X-Secret": CANARY, "Set-Cookie": f"s={CANARY}", "Location": f"/{CANARY}"}
        return web.Response(
            text=f"body {CANARY}",
            headers=headers,
            reason=f"Fine {CANARY}",
            content_type="text/plain",
        )

    backend = web.Application()
    backend.router.add_route("*", "/{tail:.*}", leaky)
    server = await aiohttp_client(backend)
    config = make_config(
        url=str(server.make_url("")).rstrip("/"), extra=f"admin: {{port: 0, token: {TOKEN}}}"
    )
    pair = await pair_for(aiohttp_client, config)
    secret = {"Authorization": f"Bearer {CANARY}", "X-Api-Key": CANARY}
    done = await pair.post_job(f"/async/a?key={CANARY}&n=1", body=CANARY.encode(), headers=secret)
    cut = await pair.post_job(f"/async/cut?key={CANARY}", body=CANARY.encode(), headers=secret)
    await settled(pair.gateway, f"http://x/_gateway/jobs/{done}", headers=secret)
    await wait_for(lambda: pair.reached(cut, "failed"))
    rt = pair.gateway.app[RUNTIME]
    rt.dispatcher._claiming = False
    waiting = await pair.post_job(f"/async/b?key={CANARY}", body=CANARY.encode(), headers=secret)
    seen = []
    paths = ["/", "/jobs", f"/jobs/{done}", f"/jobs/{waiting}", f"/jobs/{cut}", "/jobs/retry"]
    paths += ["/jobs?status=completed", "/jobs?prefix=/async", f"/jobs?prefix={done[:12]}"]
    paths += ["/jobs?route=/async&upstream=legacy", "/jobs/retry?status=failed&route=/async"]
    for path in paths:
        for headers in (BEARER, JSON):
            response = await pair.console.get(path, headers=headers)
            assert response.status == 200, path
            seen.append(await response.text())
    view = await pair.view(done)
    assert view["query_names"] == ["key", "n"] and view["response"]["status"] == 200
    names = [h["name"] for h in view["response"]["headers"]]
    assert "X-Secret" in names and "Set-Cookie" in names
    assert (await pair.view(cut))["failure"]["kind"] == "reset"
    for job_id in (done, waiting, cut, None):
        query = f"?job={job_id}" if job_id else ""
        async with pair.console.get("/events" + query, headers=BEARER) as stream:
            seen.append((await stream.content.readuntil(b"\n\n")).decode())
            seen.append((await stream.content.readuntil(b"\n\n")).decode())
    retried = await pair.console.post(f"/jobs/{cut}/retry", headers=JSON)
    seen += [await retried.text(), *(f"{r.getMessage()} {vars(r)}" for r in caplog.records)]
    assert all(CANARY not in text for text in seen)
    assert sum("event: snapshot" in text for text in seen) == 4


async def test_one_snapshot_task_feeds_every_viewer_and_stops_with_the_last(pair: Pair) -> None:
    hub = pair.console.app[CONSOLE].hub
    job_id = await pair.post_job("/async/a")
    assert not hub.running

    async def watch(query: str, events: int) -> list[str]:
        async with pair.console.get("/events" + query, headers=BEARER) as stream:
            got = [(await stream.content.readuntil(b"\n\n")).decode() for _ in range(events)]
        return got

    def snapshot_tasks() -> int:
        return sum(t.get_name() == "console-snapshots" for t in asyncio.all_tasks())

    async def count_tasks() -> int:
        await wait_for(lambda: len(hub._watchers) == 3)
        return snapshot_tasks()

    viewers = [watch("", 6), watch("", 6), watch(f"?job={job_id}", 6)]
    started = hub.snapshots
    results, tasks = await asyncio.gather(asyncio.gather(*viewers), count_tasks())
    assert tasks == 1  # one task for three viewers
    assert hub.snapshots - started <= 10  # about 5 ticks for 3 viewers, not 15
    overview = json.loads(results[0][-1].split("data: ", 1)[1])
    assert overview["legacy.queued"] == "0" and overview["ready"] == "ready"
    jobs = json.loads(results[2][-1].split("data: ", 1)[1])
    assert jobs["job.status"] == "completed" and jobs["job.response"] == "200"
    await wait_for(lambda: not hub.running)
    idle = hub.snapshots
    await asyncio.sleep(0.2)  # nothing is watching: no snapshot is taken
    assert hub.snapshots == idle and snapshot_tasks() == 0


async def test_the_figures_follow_the_queue(pair: Pair, upstream: FakeUpstream) -> None:
    upstream.gate.clear()
    async with pair.console.get("/events", headers=BEARER) as stream:

        async def figures() -> dict[str, str]:
            event = (await stream.content.readuntil(b"\n\n")).decode()
            return dict(json.loads(event.split("data: ", 1)[1])) if "data: " in event else {}

        async def running(n: str) -> bool:
            return (await figures()).get("legacy.running") == n

        await pair.post_job("/async/a?hold=1")
        await wait_for(lambda: running("1"))
        upstream.gate.set()
        await wait_for(lambda: running("0"))
        assert (await figures())["legacy.ended.completed"] == "1"


async def test_streams_say_bye_on_shutdown(aiohttp_client: Any, admin_config: Config) -> None:
    gateway = await aiohttp_client(create_app(admin_config))
    console_app = create_console(gateway.app[RUNTIME], tick=0.05)
    runner = web.AppRunner(console_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    async with gateway.session.get(f"http://127.0.0.1:{port}/events", headers=BEARER) as stream:
        await stream.content.readuntil(b"event: snapshot")
        closing = asyncio.ensure_future(runner.cleanup())
        rest = await asyncio.wait_for(stream.content.read(), 5)
    await asyncio.wait_for(closing, 5)
    assert b"event: bye" in rest
    assert not console_app[CONSOLE].hub.running


async def test_a_quiet_stream_sends_keepalives(
    aiohttp_client: Any, admin_config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.console import live

    monkeypatch.setattr(live, "KEEPALIVE", 0.05)
    gateway = await aiohttp_client(create_app(admin_config))
    console = await aiohttp_client(create_console(gateway.app[RUNTIME], tick=60))
    async with console.get("/events", headers=BEARER) as stream:
        assert b"event: snapshot" in await stream.content.readuntil(b"event: snapshot")
        await stream.content.readuntil(b"\n\n")
        assert await stream.content.readuntil(b"\n\n") == b": keepalive\n\n"


async def test_a_stream_outlives_the_idle_timeout(
    aiohttp_client: Any, make_config: MakeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream sends nothing for longer than server.idle_timeout and is not cut as idle."""
    from gateway.console import live

    monkeypatch.setattr(live, "KEEPALIVE", 0.6)
    extra = f"admin: {{port: 0, token: {TOKEN}}}"
    config = make_config(extra=extra, server="{max_body: 1MB, idle_timeout: 0.2s}")
    pair = await pair_for(aiohttp_client, config, tick=60)
    async with pair.console.get("/events", headers=BEARER) as stream:
        await stream.content.readuntil(b"event: snapshot")
        await stream.content.readuntil(b"\n\n")
        assert await stream.content.readuntil(b"\n\n") == b": keepalive\n\n"
