"""Hostile and careless input over HTTP: never a 500 of the gateway's own, always a clean answer."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tests.conftest import settled, wait_for
from tests.fakes import FakeUpstream, header_values
from tests.rawhttp import RawUpstream, exchange, read_answer

NOT_DIGITS = ["²", "٣", "+5", "1_0", "0x1", "-1", "", "1.5"]


@pytest.mark.parametrize("value", NOT_DIGITS)
async def test_prefer_wait_that_is_not_ascii_digits_is_ignored(gateway: Any, value: str) -> None:
    response = await gateway.post("/async/x", data=b"a", headers={"Prefer": f"wait={value}"})
    assert response.status == 202
    assert "Preference-Applied" not in response.headers
    polled = await gateway.get(
        "/" + response.headers["Location"].split("/", 3)[3], headers={"Prefer": f"wait={value}"}
    )
    assert polled.status in (200, 202)
    assert "Preference-Applied" not in polled.headers


async def test_thousands_of_digits_in_prefer_wait_is_capped(gateway: Any) -> None:
    response = await gateway.get("/async/x", headers={"Prefer": "wait=" + "9" * 4400})
    assert response.status == 200  # the fake upstream answers at once
    assert response.headers["Preference-Applied"] == "wait=60"


@pytest.mark.parametrize("value", [b"\xc2\xb2", b"\xd9\xa3", b"+1", b"1_0"])
async def test_an_upstream_retry_after_that_is_not_digits_is_ignored(
    gateway_for: Any, make_config: Any, value: bytes
) -> None:
    busy = b"HTTP/1.1 503 Busy\r\nRetry-After: " + value + b"\r\nContent-Length: 4\r\n\r\nbusy"
    async with RawUpstream(busy).running() as raw:
        gateway = await gateway_for(make_config(url=raw.url))
        response = await gateway.get("/async/x")
        replay = await settled(gateway, response.headers["Location"])
        assert replay.status == 503
        assert replay.headers["X-Gateway-Job-Status"] == "completed"
        assert await replay.read() == b"busy"
        assert len(raw.requests) == 3  # retried by the backoff, the hint ignored


@pytest.mark.parametrize(
    "url",
    [
        "http://h:99999/",
        "http://h:abc/",
        "http://[::1",
        "http://h:0/",
        "http:///nohost",
        "ftp://h/",
        "http://h/ x",
    ],
)
async def test_a_malformed_x_callback_url_is_a_400_problem(gateway: Any, url: str) -> None:
    response = await gateway.post("/async/x", data=b"a", headers={"X-Callback-Url": url})
    assert response.status == 400
    assert response.content_type == "application/problem+json"
    assert (await response.json())["title"] == "Bad X-Callback-Url"


async def test_two_x_callback_urls_are_a_400_problem(gateway: Any) -> None:
    head = (
        b"POST /async/x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n"
        b"X-Callback-Url: http://a/\r\nX-Callback-Url: http://b/\r\n\r\n"
    )
    answer = await exchange(gateway.server.port, head)
    assert answer.status == 400
    assert answer.header("Content-Type") == b"application/problem+json"


@pytest.mark.parametrize(
    "key",
    [b"", b'""', b"x" * 256, b"caf\xe9", b"caf\xc3\xa9", b'"a"b"', b"a\\b"],
)
async def test_a_malformed_idempotency_key_is_a_400_problem(gateway: Any, key: bytes) -> None:
    head = b"POST /async/x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nIdempotency-Key: "
    answer = await exchange(gateway.server.port, head + key + b"\r\n\r\n")
    assert answer.status == 400
    assert answer.header("Content-Type") == b"application/problem+json"
    assert answer.json()["title"] == "Bad Idempotency-Key"


async def test_two_idempotency_keys_are_a_400_problem(gateway: Any) -> None:
    head = (
        b"POST /async/x HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n"
        b"Idempotency-Key: a\r\nIdempotency-Key: b\r\n\r\n"
    )
    assert (await exchange(gateway.server.port, head)).status == 400


@pytest.mark.parametrize("key", ["8e03978e-40d5-43e8-bc93-6894a57f9324", '"quoted key"'])
async def test_a_well_formed_idempotency_key_still_makes_one_job(gateway: Any, key: str) -> None:
    first = await gateway.post("/async/x", data=b"a", headers={"Idempotency-Key": key})
    again = await gateway.post("/async/x", data=b"a", headers={"Idempotency-Key": key})
    assert first.status == 202
    assert again.headers.get("Location") in (first.headers["Location"], None)


# -- malformed HTTP: refused as problem+json, the bytes never echoed, one warning line ----------

MALFORMED = [
    (b"GARBAGE-MARKER\r\n\r\n", 400),
    (b"GET /MARKER HTTP/9.9\r\nHost: h\r\n\r\n", 400),
    (b"GET  HTTP/1.1\r\nHost: h\r\nX-MARKER: empty target\r\n\r\n", 400),
    (b"GET /MARKER\xff HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-MARKER: a\x01b\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX MARKER: a\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\n X-MARKER: folded\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nX-MARKER: no host\r\n\r\n", 400),
    (
        b"POST /async/MARKER HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        b"POST /async/MARKER HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        400,
    ),
    (b"POST /async/MARKER HTTP/1.1\r\nHost: h\r\nContent-Length: \xc2\xb2\r\n\r\n", 400),
    (b"POST /async/MARKER HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"POST /async/MARKER HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-MARKER: " + b"a" * 9000 + b"\r\n\r\n", 431),
    (b"GET /MARKER" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X-MARKER: a\r\n" * 200 + b"\r\n", 431),
    (b"OPTIONS * HTTP/1.1\r\nHost: MARKER\r\n\r\n", 501),
    (b"CONNECT MARKER:443 HTTP/1.1\r\nHost: MARKER:443\r\n\r\n", 501),
    (b"CONNECT /async/x HTTP/1.1\r\nHost: h\r\nExpect: \x80MARKER\xff\r\n\r\n", 501),
    (b"POST /async/x HTTP/1.1\r\nHost: h\r\nExpect: MARKER-continue\r\n\r\n", 417),
    (b"GET /_gateway/healthz HTTP/1.1\r\nHost: h\r\nExpect: \x80MARKER\r\n\r\n", 417),
]


@pytest.mark.parametrize(("data", "status"), MALFORMED)
async def test_malformed_http_is_a_problem_that_echoes_nothing(
    gateway: Any, caplog: pytest.LogCaptureFixture, data: bytes, status: int
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = await exchange(gateway.server.port, data)
    assert answer.status == status
    assert answer.header("Content-Type") == b"application/problem+json"
    assert answer.json()["status"] == status
    assert b"MARKER" not in answer.head + answer.body
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert all(r.exc_info is None for r in caplog.records)
    assert "MARKER" not in caplog.text


async def test_the_gateway_serves_the_next_connection_after_malformed_http(gateway: Any) -> None:
    for data, _ in MALFORMED:
        await exchange(gateway.server.port, data)
    assert (await gateway.get("/_gateway/healthz")).status == 200


# -- the request target and Host -----------------------------------------------------------------


async def test_an_absolute_form_request_is_served_as_its_origin_form(
    gateway: Any, upstream: FakeUpstream
) -> None:
    port = gateway.server.port
    head = (
        f"POST http://127.0.0.1:{port}/async/x?q=1 HTTP/1.1\r\nHost: elsewhere.example\r\n"
        "Content-Length: 2\r\n\r\nhi"
    ).encode()
    answer = await exchange(port, head)
    assert answer.status == 202
    location = (answer.header("Location") or b"").decode()
    assert location.startswith(f"http://127.0.0.1:{port}/_gateway/jobs/")
    replay = await settled(gateway, location)
    assert replay.status == 200
    assert (await replay.json())["path_qs"] == "/async/x?q=1"
    assert upstream.last().path_qs == "/async/x?q=1"
    assert header_values(upstream.last().headers, "X-Forwarded-Host") == [f"127.0.0.1:{port}"]


async def test_an_absolute_form_request_on_a_proxy_route_is_proxied(
    gateway: Any, upstream: FakeUpstream
) -> None:
    port = gateway.server.port
    head = f"GET http://127.0.0.1:{port}/plain?z=2 HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    answer = await exchange(port, head)
    assert answer.status == 200
    assert answer.json()["path_qs"] == "/plain?z=2"


@pytest.mark.parametrize(
    "host",
    [
        b"evil.example:80 junk",
        b"user@host",
        b"host#frag",
        b"host/x?y",
        b"",
        b"host:99999",
        b"h\xc3\xa9st",
        b"[::1",
    ],
)
async def test_an_invalid_host_is_a_400_and_never_reaches_a_location(
    gateway: Any, upstream: FakeUpstream, host: bytes
) -> None:
    head = b"POST /async/x HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: 0\r\n\r\n"
    answer = await exchange(gateway.server.port, head)
    assert answer.status == 400
    assert answer.header("Content-Type") == b"application/problem+json"
    assert answer.header("Location") is None
    assert upstream.seen == []


async def test_several_host_headers_are_a_400(gateway: Any) -> None:
    head = b"POST /async/x HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 0\r\n\r\n"
    assert (await exchange(gateway.server.port, head)).status == 400


@pytest.mark.parametrize("host", ["gw.example:8443", "[::1]:8080", "10.1.2.3", "a-b.example"])
async def test_a_valid_host_with_its_port_makes_the_location(gateway: Any, host: str) -> None:
    head = f"POST /async/x HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n".encode()
    answer = await exchange(gateway.server.port, head)
    assert answer.status == 202
    assert (answer.header("Location") or b"").startswith(f"http://{host}/_gateway/jobs/".encode())


# -- Expect: 100-continue --------------------------------------------------------------------


async def test_expect_continue_over_max_body_gets_413_without_100(gateway: Any) -> None:
    head = (
        b"POST /async/x HTTP/1.1\r\nHost: h\r\nContent-Length: 2000000\r\n"
        b"Expect: 100-continue\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.server.port)
    try:
        writer.write(head)
        first = await asyncio.wait_for(reader.readuntil(b"\r\n"), 10)
        assert first.startswith(b"HTTP/1.1 413 "), first
    finally:
        writer.close()


async def test_expect_continue_within_max_body_gets_100_then_202(gateway: Any) -> None:
    head = b"POST /async/x HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.server.port)
    try:
        writer.write(head)
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert first.startswith(b"HTTP/1.1 100 ")
        writer.write(b"hi")
        answer = await asyncio.wait_for(read_answer(reader), 10)
        assert answer.status == 202
    finally:
        writer.close()


@pytest.mark.parametrize("path", [b"/async/x", b"/plain"])
@pytest.mark.parametrize("later", [b"zz\r\n", b"5\r\nabc\r\n0\r\n\r\n", b"3\r\nabcXX"])
async def test_a_chunked_body_that_breaks_midway_is_a_400(
    gateway: Any, caplog: pytest.LogCaptureFixture, path: bytes, later: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.server.port)
    try:
        writer.write(
            b"POST " + path + b" HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        writer.write(b"3\r\nabc\r\n")
        await writer.drain()
        # The bad chunk comes once the handler is reading the body, not with the head.
        await wait_for(lambda: in_progress(gateway))
        writer.write(later)
        answer = await asyncio.wait_for(read_answer(reader), 10)
    finally:
        writer.close()
    assert answer.status == 400
    assert answer.header("Content-Type") == b"application/problem+json"
    assert [r.levelno for r in caplog.records if r.levelno >= logging.WARNING] == [logging.WARNING]
    assert all(r.exc_info is None for r in caplog.records)


def in_progress(gateway: Any) -> bool:
    connections = gateway.server.runner.server.connections
    return any(c._current_request is not None for c in connections)


ONLY_ASYNC = "\n  - {path: /async, upstream: legacy, mode: async}\n"


@pytest.mark.parametrize(
    ("method", "target"),
    [
        (b"PROPFIND", b"/quoted-7f3a"),  # no route at all
        (b"PROPFIND", b"/_gateway/jobs/quoted-7f3a/status"),  # the gateway's path, a wrong method
        (b"GET", b"/_gateway/quoted-7f3a%00"),  # the gateway's namespace, no endpoint
        (b"DELETE", b"/_gateway/quoted-7f3a/../readyz"),
    ],
)
async def test_a_404_or_405_quotes_nothing_of_the_request(
    gateway_for: Any, make_config: Any, method: bytes, target: bytes
) -> None:
    gateway = await gateway_for(make_config(routes=ONLY_ASYNC))
    head = method + b" " + target + b" HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
    answer = await exchange(gateway.server.port, head)
    assert answer.status in (404, 405)
    assert answer.header("Content-Type") == b"application/problem+json"
    assert b"quoted-7f3a" not in answer.body and method not in answer.body.upper()


async def test_a_head_jobs_answer_polled_with_get_is_framed_as_what_is_sent(gateway: Any) -> None:
    accepted = await gateway.head("/async/x", headers={"Prefer": "respond-async"})
    path = "/" + accepted.headers["Location"].split("/", 3)[3]

    async def completed() -> bool:
        view = await (await gateway.get(path + "/status")).json()
        return bool(view["status"] == "completed")

    await wait_for(completed)
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.server.port)
    try:  # two requests at once: the first answer's framing must end where the second begins
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n"
            "GET /_gateway/healthz HTTP/1.1\r\nHost: h\r\n\r\n".encode()
        )
        replay = await asyncio.wait_for(read_answer(reader), 10)
        healthz = await asyncio.wait_for(read_answer(reader), 10)
    finally:
        writer.close()
    assert replay.status == 200 and replay.header("Content-Length") == b"0"
    assert healthz.status == 200 and healthz.json() == {"status": "ok"}
