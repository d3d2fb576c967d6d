"""Header bytes from wire to storage and back: a replay or a proxied answer carries the
upstream's bytes unchanged, and adds nothing but the gateway's own headers and framing."""

from __future__ import annotations

from typing import Any

import pytest

from gateway import headers as h
from gateway.handlers import RUNTIME
from tests.conftest import settled, wait_for
from tests.rawhttp import Answer, RawUpstream, exchange

UPSTREAM_HEAD = (
    b"HTTP/1.1 201 Cr\xe9\xe9\r\n"
    b"X-Latin1: caf\xe9\r\n"
    b"X-Utf8: caf\xc3\xa9\r\n"
    b"X-Bytes: \x80\xff\xfe\r\n"
    b"Set-Cookie: a=1\r\n"
    b"Set-Cookie: b=2\r\n"
    b"Content-Length: 2\r\n\r\n"
)
ANSWER = UPSTREAM_HEAD + b"ok"
SENT = [
    (b"X-Latin1", b"caf\xe9"),
    (b"X-Utf8", b"caf\xc3\xa9"),
    (b"X-Bytes", b"\x80\xff\xfe"),
    (b"Set-Cookie", b"a=1"),
    (b"Set-Cookie", b"b=2"),
    (b"Content-Length", b"2"),
]


def path_of(location: str) -> str:
    return "/" + location.split("/", 3)[3]


async def replayed(gateway_for: Any, make_config: Any, upstream_answer: bytes) -> Answer:
    """The replay, as bytes, of an async job whose upstream answered `upstream_answer`."""
    async with RawUpstream(upstream_answer).running() as raw:
        gateway = await gateway_for(make_config(url=raw.url))
        location = (await gateway.get("/async/x")).headers["Location"]
        await settled(gateway, location)
        head = f"GET {path_of(location)} HTTP/1.1\r\nHost: h\r\n\r\n".encode()
        return await exchange(gateway.server.port, head)


async def test_a_replay_carries_the_upstream_header_bytes_unchanged(
    gateway_for: Any, make_config: Any
) -> None:
    answer = await replayed(gateway_for, make_config, ANSWER)
    assert answer.head.split(b"\r\n")[0] == b"HTTP/1.1 201 Cr\xe9\xe9"
    assert answer.body == b"ok"
    got = answer.headers()
    assert [pair for pair in got if pair[0] not in OWN] == SENT
    assert {n for n, _ in got} - {n for n, _ in SENT} <= OWN
    assert answer.header("Content-Type") is None  # the upstream sent none
    assert answer.header("Date") is None and answer.header("Server") is None


OWN = {b"X-Gateway-Job-Id", b"X-Gateway-Job-Status", b"Cache-Control", b"Connection"}


async def test_storage_keeps_the_upstream_header_bytes(gateway_for: Any, make_config: Any) -> None:
    async with RawUpstream(ANSWER).running() as raw:
        gateway = await gateway_for(make_config(url=raw.url))
        location = (await gateway.get("/async/x")).headers["Location"]
        await settled(gateway, location)
    rt = gateway.server.app[RUNTIME]
    job = await rt.store.get(location.rsplit("/", 1)[1], rt.now())
    assert job.answer is not None
    stored = [(h.encode(n), h.encode(v)) for n, v in job.answer.headers]
    assert stored == SENT
    assert h.encode(job.answer.reason) == b"Cr\xe9\xe9"


async def test_a_proxied_answer_carries_the_upstream_header_bytes_unchanged(
    gateway_for: Any, make_config: Any
) -> None:
    async with RawUpstream(ANSWER).running() as raw:
        gateway = await gateway_for(make_config(url=raw.url))
        answer = await exchange(gateway.server.port, b"GET /plain HTTP/1.1\r\nHost: h\r\n\r\n")
    assert answer.status == 201 and answer.body == b"ok"
    assert [pair for pair in answer.headers() if pair[0] not in OWN] == SENT
    assert answer.header("Content-Type") is None


async def test_a_replay_of_an_answer_without_a_body_adds_no_content_type(
    gateway_for: Any, make_config: Any
) -> None:
    empty = b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n"
    answer = await replayed(gateway_for, make_config, empty)
    names = {n.lower() for n, _ in answer.headers()}
    assert names == {b"x-a", b"content-length"} | {n.lower() for n in OWN} - {b"connection"}


@pytest.mark.parametrize("path", [b"/plain", b"/async/x"])
async def test_a_clients_header_bytes_reach_the_upstream_unchanged(
    gateway_for: Any, make_config: Any, path: bytes
) -> None:
    sent = b"X-Utf8: caf\xc3\xa9\r\nX-Latin1: caf\xe9\r\nX-Bytes: \x80\xff\r\n"
    async with RawUpstream(ANSWER).running() as raw:
        gateway = await gateway_for(make_config(url=raw.url))
        head = b"GET " + path + b" HTTP/1.1\r\nHost: h\r\n" + sent + b"\r\n"
        await exchange(gateway.server.port, head)
        await wait_for(lambda: raw.requests)
    assert b"\r\n" + sent in raw.requests[0]
