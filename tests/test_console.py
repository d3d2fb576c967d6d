"""The operator console over HTTP: access, headers, pages and JSON, actions, live streams, and
what it never shows; the gateway and the console each a real aiohttp server on port 0."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.config import Config
from gateway.console.access import COOKIE
from gateway.console.pages import CONSOLE
from gateway.console.server import create_console
from gateway.handlers import RUNTIME
from tests.conftest import MakeConfig, settled, wait_for
from tests.fakes import FakeUpstream

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

    def csrf(self, html: str) -> str:
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
        assert found, html
        return found.group(1)


async def pair_for(aiohttp_client: Any, config: Config) -> Pair:
    gateway = await aiohttp_client(create_app(config))
    console = await aiohttp_client(create_console(gateway.app[RUNTIME], tick=0.05))
    return Pair(gateway, console)


@pytest.fixture
def admin_config(make_config: MakeConfig) -> Config:
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


PAGES = ["/", "/jobs", "/jobs/unknown", "/jobs/retry", "/events"]


@pytest.mark.parametrize("path", PAGES)
async def test_every_page_is_401_without_credentials(pair: Pair, path: str) -> None:
    for headers in ({}, {"Accept": "application/json"}, {"Authorization": "Bearer wrong"}):
        response = await pair.console.get(path, headers=headers)
        assert response.status == 401, path
    response = await pair.console.get(path, headers={"Accept": "application/json"})
    assert response.content_type == "application/problem+json"
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert (await pair.console.post("/jobs/x/retry", headers={"Origin": "x"})).status in (401, 403)


async def test_sign_in_gives_a_strict_http_only_session(pair: Pair) -> None:
    wrong = await pair.console.post("/login", data={"token": "nope"}, allow_redirects=False)
    assert wrong.status == 401 and COOKIE not in wrong.cookies
    right = await pair.console.post("/login", data={"token": TOKEN}, allow_redirects=False)
    assert right.status == 303 and right.headers["Location"] == "/"
    cookie = right.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert TOKEN not in cookie
    assert (await pair.console.get("/")).status == 200
    value = right.cookies[COOKIE].value
    pair.console.session.cookie_jar.clear()
    tampered = value[:-1] + ("0" if value[-1] != "0" else "1")
    response = await pair.console.get("/", cookies={COOKIE: tampered})
    assert response.status == 401
    response = await pair.console.get("/", cookies={COOKIE: "9999999999." + value.split(".")[1]})
    assert response.status == 401


async def test_bearer_works_for_scripts(pair: Pair) -> None:
    response = await pair.console.get("/", headers=JSON)
    assert response.status == 200 and response.content_type == "application/json"
    body = await response.json()
    assert body["ready"] is True and body["draining"] is False
    assert [u["upstream"] for u in body["upstreams"]] == ["legacy"]


def assert_protected(response: Any) -> None:
    csp = response.headers["Content-Security-Policy"]
    for part in ("default-src 'none'", "script-src 'self'", "frame-ancestors 'none'"):
        assert part in csp, csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "*" not in csp
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


async def test_every_answer_carries_the_security_headers(pair: Pair) -> None:
    job_id = await pair.post_job("/async/a")
    paths = ["/", "/jobs", f"/jobs/{job_id}", "/jobs/retry", "/jobs/nope", "/login"]
    paths += ["/static/console.js", "/static/console.css", "/static/nope", "/elsewhere"]
    for path in paths:
        for headers in ({}, BEARER, JSON):
            response = await pair.console.get(path, headers=headers)
            assert_protected(response)
    post = await pair.console.post("/jobs/x/retry", headers={"Sec-Fetch-Site": "cross-site"})
    assert_protected(post)
    async with pair.console.get("/events", headers=BEARER) as stream:
        assert stream.content_type == "text/event-stream"
        assert_protected(stream)


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
    ],
)
async def test_a_cross_origin_post_is_403_even_when_signed_in(
    pair: Pair, headers: dict[str, str]
) -> None:
    csrf = await signed_in(pair)
    await pair.gateway.post("/async/reset")
    for path in ("/jobs/retry", "/login", "/logout"):
        response = await pair.console.post(path, data={"csrf": csrf}, headers=headers)
        assert response.status == 403, path
        response = await pair.console.post(path, headers={**headers, **BEARER})
        assert response.status == 403, path


async def test_a_browser_post_needs_the_form_csrf_token(pair: Pair, upstream: FakeUpstream) -> None:
    upstream.gate.clear()
    csrf = await signed_in(pair)
    job_id = await pair.post_job("/async/a?hold=1")
    same = {"Sec-Fetch-Site": "same-origin"}
    for data in (
        {},
        {"csrf": "0" * 64},
        {"csrf": ""},
        {"csrf": "\u00e9" * 64},
        {"csrf": "x" * 60_000},
    ):
        response = await pair.console.post(f"/jobs/{job_id}/cancel", data=data, headers=same)
        assert response.status == 403
    response = await pair.console.post(
        f"/jobs/{job_id}/cancel", data={"csrf": csrf}, headers=same, allow_redirects=False
    )
    assert response.status == 303 and response.headers["Location"] == f"/jobs/{job_id}"
    assert await pair.state(job_id) == "canceled"


async def test_actions_follow_the_state_and_are_logged(
    pair: Pair, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.console")
    upstream.gate.clear()
    held = await pair.post_job("/async/h?hold=1")
    await wait_for(lambda: upstream.in_flight == 1)
    failed = await pair.post_job("/async/reset")
    await wait_for(lambda: _is(pair, failed, "failed"))
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
    await wait_for(lambda: _is(pair, failed, "failed"))
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


async def _is(pair: Pair, job_id: str, status: str) -> bool:
    return await pair.state(job_id) == status


async def test_bulk_retry_states_the_count_then_retries_in_batches(
    pair: Pair, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.console")
    ids = [await pair.post_job("/async/reset") for _ in range(3)]
    for job_id in ids:
        await wait_for(lambda: _is(pair, job_id, "failed"))  # noqa: B023
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
    assert [j["id"] for j in second["jobs"]] == ids[::-1][50:] and second["next"] is None
    for bad in (
        "status=nope",
        "status=receiving",
        "prefix=/a?b=1",
        "after=x",
        "upstream=" + "u" * 300,
    ):
        assert (await pair.console.get(f"/jobs?{bad}", headers=JSON)).status == 400, bad


async def test_a_canary_in_body_credentials_query_and_answer_headers_never_shows(
    aiohttp_client: Any, make_config: MakeConfig
) -> None:
    async def leaky(request: web.Request) -> web.Response:
        await request.read()
        headers = {"X-Secret": CANARY, "Set-Cookie": f"s={CANARY}", "Location": f"/{CANARY}"}
        return web.Response(text=f"body {CANARY}", headers=headers, content_type="text/plain")

    backend = web.Application()
    backend.router.add_route("*", "/{tail:.*}", leaky)
    server = await aiohttp_client(backend)
    config = make_config(
        url=str(server.make_url("")).rstrip("/"), extra=f"admin: {{port: 0, token: {TOKEN}}}"
    )
    pair = await pair_for(aiohttp_client, config)
    secret = {"Authorization": f"Bearer {CANARY}", "X-Api-Key": CANARY}
    done = await pair.post_job(f"/async/a?key={CANARY}&n=1", body=CANARY.encode(), headers=secret)
    await settled(pair.gateway, f"http://x/_gateway/jobs/{done}", headers=secret)
    rt = pair.gateway.app[RUNTIME]
    rt.dispatcher._claiming = False
    waiting = await pair.post_job(f"/async/b?key={CANARY}", body=CANARY.encode(), headers=secret)
    seen = []
    for path in ["/", "/jobs", f"/jobs/{done}", f"/jobs/{waiting}", "/jobs/retry"]:
        for headers in (BEARER, JSON):
            response = await pair.console.get(path, headers=headers)
            assert response.status == 200, path
            seen.append(await response.text())
    view = await pair.view(done)
    assert view["query_names"] == ["key", "n"] and view["response"]["status"] == 200
    names = [h["name"] for h in view["response"]["headers"]]
    assert "X-Secret" in names and "Set-Cookie" in names
    for job_id in (done, waiting, None):
        query = f"?job={job_id}" if job_id else ""
        async with pair.console.get("/events" + query, headers=BEARER) as stream:
            seen.append((await stream.content.readuntil(b"\n\n")).decode())
            seen.append((await stream.content.readuntil(b"\n\n")).decode())
    assert all(CANARY not in text for text in seen)
    assert any("event: snapshot" in text for text in seen)


async def test_one_snapshot_task_feeds_every_viewer_and_stops_with_the_last(pair: Pair) -> None:
    hub = pair.console.app[CONSOLE].hub
    job_id = await pair.post_job("/async/a")
    assert not hub.running

    async def watch(query: str, events: int) -> list[str]:
        async with pair.console.get("/events" + query, headers=BEARER) as stream:
            got = [(await stream.content.readuntil(b"\n\n")).decode() for _ in range(events)]
        return got

    viewers = [watch("", 6), watch("", 6), watch(f"?job={job_id}", 6)]
    started = hub.snapshots
    results = await asyncio.gather(*viewers)
    assert hub.snapshots - started <= 10  # about 5 ticks for 3 viewers, not 15
    overview = json.loads(results[0][-1].split("data: ", 1)[1])
    assert overview["legacy.queued"] == "0" and overview["ready"] == "ready"
    jobs = json.loads(results[2][-1].split("data: ", 1)[1])
    assert jobs["job.status"] == "completed" and jobs["job.response"] == "200"
    await wait_for(lambda: not hub.running)
    idle = hub.snapshots
    await asyncio.sleep(0.2)  # nothing is watching: no snapshot is taken
    assert hub.snapshots == idle


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


async def test_an_open_console_on_loopback_needs_no_token_but_checks_forms(
    aiohttp_client: Any, make_config: MakeConfig
) -> None:
    pair = await pair_for(aiohttp_client, make_config(extra="admin: {port: 0}"))
    assert (await pair.console.get("/", headers={"Accept": "application/json"})).status == 200
    job_id = await pair.post_job("/async/reset")
    await wait_for(lambda: _is(pair, job_id, "failed"))
    browser = {"Sec-Fetch-Site": "same-origin"}
    assert (await pair.console.post(f"/jobs/{job_id}/retry", headers=browser)).status == 403
    page = await (await pair.console.get(f"/jobs/{job_id}")).text()
    response = await pair.console.post(
        f"/jobs/{job_id}/retry", data={"csrf": pair.csrf(page)}, headers=browser
    )
    assert response.status == 200
    assert (await pair.console.get("/login", allow_redirects=False)).status == 303
    port = pair.console.port
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "127.0.0.9"):
        assert (await pair.console.get("/", headers={"Host": host})).status == 200, host
    # a page elsewhere that points its own name at 127.0.0.1 (DNS rebinding) reads nothing
    for host in (f"evil.example:{port}", "evil.example", "127.0.0.1.evil.example", "[::2]:1"):
        assert (await pair.console.get("/", headers={"Host": host})).status == 403, host


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


@pytest.mark.parametrize(
    "cookie",
    [
        "",
        ".",
        "1700000000",
        "1700000000.",
        "\u0661\u0667\u0660\u0660.abc",  # digits that are not ASCII
        "\uff11\uff17\uff10\uff10.abc",
        "-1.abc",
        "1" * 40 + ".abc",
        "x" * 100_000,
        "1700000000.zz\u00e9",
        "1700000000.\ud800",
    ],
)
def test_a_malformed_session_is_no_session(cookie: str) -> None:
    from gateway.console.access import Access

    access = Access.of(TOKEN, b"k" * 32)
    assert not access.session_ok(cookie, 1_700_000_100.0)
    assert access.session_ok(access.new_session(1_700_000_000.0), 1_700_000_100.0)
    assert not access.session_ok(access.new_session(1_700_000_000.0), 1_700_000_000.0 + 13 * 3600)


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Bearer",
        "Bearer ",
        f"Basic {TOKEN}",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        "Bearer t\u00f6ken",
        "Bearer " + "x" * 100_000,
    ],
)
def test_only_the_exact_bearer_token_signs_in(authorization: str) -> None:
    from gateway.console.access import Access

    access = Access.of(TOKEN, b"k" * 32)
    assert not access.bearer_ok(authorization)
    assert access.bearer_ok(f"Bearer {TOKEN}") and access.bearer_ok(f"bearer  {TOKEN}")
    assert not Access.of("", b"k" * 32).bearer_ok("Bearer ")


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": ""},
        {"Sec-Fetch-Site": "SAME-ORIGIN"},
        {"Sec-Fetch-Site": "same-origin, cross-site"},
        {"Origin": ""},
        {"Origin": "http://127.0.0.1"},  # another port is another origin
    ],
)
async def test_odd_fetch_metadata_is_refused(pair: Pair, headers: dict[str, str]) -> None:
    response = await pair.console.post("/jobs/retry", headers={**headers, **JSON})
    assert response.status == 403
