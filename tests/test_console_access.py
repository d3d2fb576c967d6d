"""Who may use the console and what its answers carry: 401 without credentials, the session
cookie and Bearer tokens, same-origin POSTs and CSRF tokens, the security headers on every
answer, and hostile input in every header the console reads."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from gateway.console.access import COOKIE
from gateway.handlers import RUNTIME
from tests.conftest import MakeConfig, wait_for
from tests.console import (
    BEARER,
    JSON,
    TOKEN,
    Pair,
    pair_for,
    signed_in,
)
from tests.fakes import FakeUpstream
from tests.rawhttp import exchange

PAGES = ["/", "/jobs", "/jobs/unknown", "/jobs/retry", "/events", "/events?job=x", "/nowhere"]
PAGES += ["/static/console.js", "/static/console.css", "/static/favicon.svg"]


@pytest.mark.parametrize("path", PAGES)
async def test_every_page_is_401_without_credentials(pair: Pair, path: str) -> None:
    for headers in ({}, {"Accept": "application/json"}, {"Authorization": "Bearer wrong"}):
        response = await pair.console.get(path, headers=headers)
        assert response.status == 401, path
    response = await pair.console.get(path, headers={"Accept": "application/json"})
    assert response.content_type == "application/problem+json"
    assert response.headers["WWW-Authenticate"] == "Bearer"
    for post in ("/jobs/x/retry", "/jobs/retry", "/logout"):
        assert (await pair.console.post(post)).status == 401


async def test_the_sign_in_page_loads_nothing_before_sign_in(pair: Pair) -> None:
    for path in ("/login", "/"):
        page = await pair.console.get(path)
        assert page.status in (200, 401) and "/static/" not in await page.text()
    await signed_in(pair)
    assert "/static/console.js" in await (await pair.console.get("/")).text()
    assert (await pair.console.get("/static/console.js")).status == 200


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
    issued, nonce, signature = value.split(".")
    for forged in (f"9999999999.{nonce}.{signature}", f"{issued}.{nonce}x.{signature}"):
        assert (await pair.console.get("/", cookies={COOKIE: forged})).status == 401
    pair.console.session.cookie_jar.update_cookies({COOKIE: value})
    again = await pair.console.post(  # signed in already, from the sign-in page
        "/login", data={"token": TOKEN}, headers={"Sec-Fetch-Site": "same-origin"}
    )
    assert again.status == 200, await again.text()
    assert pair.console.session.cookie_jar.filter_cookies(pair.console.make_url("/"))[
        COOKIE
    ].value not in ("", value)  # every sign-in its own session


async def test_sessions_follow_the_store_key(pair: Pair) -> None:
    """Keys come from the store's key as it is now: one that arrives late (a database down at
    start) is taken, and the sessions made before it end."""
    await signed_in(pair)
    assert (await pair.console.get("/")).status == 200
    pair.gateway.app[RUNTIME].key = b"another store key"
    assert (await pair.console.get("/")).status == 401
    await signed_in(pair)
    assert (await pair.console.get("/")).status == 200


async def test_no_token_or_cookie_value_is_ever_logged(
    pair: Pair, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wr0ng-t0ken-guess"
    await pair.console.post("/login", data={"token": wrong})
    await signed_in(pair)
    [cookie] = [c.value for c in pair.console.session.cookie_jar if c.key == COOKIE]
    await pair.console.get("/jobs", headers={"Cookie": f"{COOKIE}={cookie}x"})
    await pair.console.get("/", headers=BEARER)
    await pair.console.post("/jobs/retry", headers={**BEARER, "Origin": "http://evil.example"})
    logged = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "sign_in" in logged
    for secret in (TOKEN, wrong, cookie):
        assert secret not in logged


async def test_bearer_works_for_scripts(pair: Pair) -> None:
    response = await pair.console.get("/", headers=JSON)
    assert response.status == 200 and response.content_type == "application/json"
    body = await response.json()
    assert body["ready"] is True and body["draining"] is False
    assert [u["upstream"] for u in body["upstreams"]] == ["legacy"]


def assert_protected(response: Any) -> None:
    csp = response.headers["Content-Security-Policy"]
    policy = dict(d.strip().partition(" ")[::2] for d in csp.split(";"))
    assert policy["default-src"] == "'none'" and policy["frame-ancestors"] == "'none'", csp
    for own in ("script-src", "style-src", "connect-src"):
        assert policy[own] == "'self'", csp  # own scripts, styles, connections: nothing inline
    assert set(policy.values()) <= {"'self'", "'none'"}, csp
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


async def test_an_open_console_on_loopback_needs_no_token_but_checks_forms(
    aiohttp_client: Any, make_config: MakeConfig
) -> None:
    pair = await pair_for(aiohttp_client, make_config(extra="admin: {port: 0}"))
    assert (await pair.console.get("/", headers={"Accept": "application/json"})).status == 200
    job_id = await pair.post_job("/async/reset")
    await wait_for(lambda: pair.reached(job_id, "failed"))
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


READ = ("Cookie", "Authorization", "Origin", "Host", "Sec-Fetch-Site", "Accept")
HOSTILE = {
    "a megabyte": "v" * 1_048_576,
    "CR": "same-origin\rx",
    "LF": "same-origin\nx",
    "UTF-8 text": "s\u00e1me-\u0661\u0662",
    "a missing value": "",
}
# What a POST with a valid Bearer token gets when one header is odd: a clear 4xx, or the
# answer it would get anyway (Accept and Cookie do not matter to a script).
EXPECTED = {"Cookie": 200, "Authorization": 401, "Origin": 403, "Host": 400}
EXPECTED |= {"Sec-Fetch-Site": 403, "Accept": 200}


@pytest.mark.parametrize("kind", HOSTILE)
@pytest.mark.parametrize("name", READ)
async def test_hostile_input_in_every_header_it_reads_is_a_clear_4xx(
    pair: Pair, caplog: pytest.LogCaptureFixture, name: str, kind: str
) -> None:
    caplog.set_level(logging.DEBUG)
    value = HOSTILE[kind]
    fields = {"Host": "127.0.0.1", "Authorization": f"Bearer {TOKEN}", "Content-Length": "0"}
    fields[name] = value
    head = "".join(f"{n}: {v}\r\n" for n, v in fields.items())
    assert pair.console.port is not None
    answer = await exchange(pair.console.port, f"POST /jobs/retry HTTP/1.1\r\n{head}\r\n".encode())
    if kind in ("a megabyte", "CR", "LF"):
        assert answer.status in (400, 431)
        assert answer.header("Content-Type") == b"application/problem+json"
    elif kind == "UTF-8 text" or name not in ("Accept", "Cookie", "Host"):
        assert answer.status == EXPECTED[name], answer
    else:  # an empty Host is no host; an empty Accept or Cookie is as good as none
        assert answer.status == (400 if name == "Host" else 200), answer
    for header in ("Content-Security-Policy", "Cache-Control", "X-Content-Type-Options"):
        assert answer.header(header), (header, answer.head)
    assert value[:40].encode() not in answer.body or not value
    logged = " ".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "Traceback" not in logged and all(r.exc_info is None for r in caplog.records)
    assert TOKEN not in logged and (not value or value[:40] not in logged)


BAD_BODIES = [
    ("multipart/form-data; boundary=x", b"no boundary here"),
    ("application/x-www-form-urlencoded; charset=no-such-charset", b"csrf=1"),
    ("application/x-www-form-urlencoded", b"csrf=" + b"x" * 70_000),
]


@pytest.mark.parametrize(("content_type", "body"), BAD_BODIES)
async def test_a_form_it_cannot_read_is_a_4xx(pair: Pair, content_type: str, body: bytes) -> None:
    await signed_in(pair)
    for path in ("/jobs/retry", "/login", "/logout"):
        headers = {"Content-Type": content_type, "Sec-Fetch-Site": "same-origin"}
        response = await pair.console.post(path, data=body, headers=headers)
        assert response.status in (400, 413), (path, response.status)
        assert "Traceback" not in await response.text()
        assert_protected(response)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/jobs?after=99999999999999999999999", 400),
        ("/jobs?after=%D9%A1", 400),  # a digit that is not ASCII
        ("/jobs?after=-1", 400),
        ("/nowhere", 404),
        ("/static/nope.js", 404),
    ],
)
async def test_odd_urls_are_answered_as_the_caller_reads(
    pair: Pair, path: str, status: int
) -> None:
    response = await pair.console.get(path, headers=JSON)
    assert response.status == status and response.content_type == "application/problem+json"
    page = await pair.console.get(path, headers=BEARER)
    assert page.status == status and page.content_type == "text/html"
    allow = await pair.console.request("DELETE", "/jobs", headers=JSON)
    assert allow.status == 405 and "GET" in allow.headers["Allow"]


async def test_a_bad_filter_is_refused_without_the_clients_text(pair: Pair) -> None:
    for headers in (JSON, BEARER):
        response = await pair.console.get("/jobs?status=ECHO%3Cb%3E", headers=headers)
        assert response.status == 400
        assert "ECHO" not in await response.text()


@pytest.mark.parametrize(
    "target",
    ["/jobs?prefix=" + "p" * 1_048_576, "/jobs/" + "\u0661" * 200, "/jobs?prefix=a\rb"],
)
async def test_a_hostile_target_is_a_clear_4xx(pair: Pair, target: str) -> None:
    assert pair.console.port is not None
    request = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    answer = await exchange(pair.console.port, request.encode())
    assert 400 <= answer.status < 500, answer.status
    assert answer.header("Content-Security-Policy") and answer.header("Cache-Control")
    assert b"ppppp" not in answer.body
