"""Hostile and careless input over HTTP: never a 500 of the gateway's own, always a clean answer."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import settled
from tests.rawhttp import RawUpstream, exchange

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
