"""The gateway's own HTTP/1.1 client against raw and hostile upstreams, TLS, IPv6 and names."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trustme
from aiohttp import web

from gateway import http1
from gateway.config import Upstream
from gateway.jobs import Answer, Failure
from gateway.pool import Pool
from gateway.upstream import UpstreamFailed, exchange
from tests.conftest import wait_for
from tests.rawupstream import RawUpstream, Script, answer, keep_answering, once


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    opened = Pool()
    yield opened
    await opened.close()


@pytest.fixture
async def raw() -> AsyncIterator[Any]:
    started: list[RawUpstream] = []

    async def start(script: Script, host: str = "127.0.0.1") -> RawUpstream:
        started.append(await RawUpstream(script, host).start())
        return started[-1]

    yield start
    for upstream in started:
        await upstream.stop()


async def call(
    pool: Pool,
    url: str,
    method: str = "GET",
    headers: tuple[tuple[str, str], ...] = (),
    body: Any = None,
    timeout: float = 5.0,
) -> tuple[Answer, bytes]:
    upstream = Upstream("raw", url, connect_timeout=1.0, timeout=timeout)
    async with exchange(pool, upstream, method, "/x?q=1", headers, body) as reply:
        data = b"".join([piece async for piece in reply.body])
    return reply.answer, data


async def failure(pool: Pool, url: str, **kwargs: Any) -> Failure:
    with pytest.raises(UpstreamFailed) as caught:
        await call(pool, url, **kwargs)
    return caught.value.failure


async def test_header_bytes_travel_as_latin1_both_ways(pool: Pool, raw: Any) -> None:
    up = await raw(keep_answering(answer(extra=b"X-Up: caf\xe9 \xff\r\n")))
    got, body = await call(pool, up.url, headers=(("X-Latin1", "caf\xe9"),))
    assert b"\r\nX-Latin1: caf\xe9\r\n" in up.received[0]
    assert ("X-Up", "caf\xe9 \xff") in got.headers and body == b"ok"


async def test_a_client_header_reaches_the_upstream_as_its_bytes(
    gateway_for: Any, make_config: Any, raw: Any
) -> None:
    up = await raw(once(answer()))
    client = await gateway_for(make_config(url=up.url))
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"GET /p HTTP/1.1\r\nHost: x\r\nX-Latin1: caf\xe9\r\nConnection: close\r\n\r\n")
    assert (await reader.read()).startswith(b"HTTP/1.1 200")
    writer.close()
    assert b"\r\nX-Latin1: caf\xe9\r\n" in up.received[0]


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\rb", "a\0b"])
def test_a_request_header_with_cr_lf_or_nul_is_never_sent(value: str) -> None:
    with pytest.raises(http1.Broken) as caught:
        http1.request_head("GET", "/", "h", [("X-A", value)], False)
    assert caught.value.failure.sent is False


@pytest.mark.parametrize(
    "reply",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\nX-B: b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\r\n folded\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * (http1.HEAD_LIMIT + 1) + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-N: 1\r\n" * (http1.MAX_FIELDS + 1) + b"\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
        b"HTTP/1.1 600 Beyond\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 099 Below\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    ],
)
async def test_a_hostile_answer_is_a_bad_answer(pool: Pool, raw: Any, reply: bytes) -> None:
    up = await raw(once(reply))
    failed = await failure(pool, up.url)
    assert (failed.kind, failed.sent) == ("bad_answer", True)


async def test_no_answer_at_all_is_a_reset(pool: Pool, raw: Any) -> None:
    up = await raw(once(b""))
    failed = await failure(pool, up.url)
    assert (failed.kind, failed.sent) == ("reset", True)


@pytest.mark.parametrize(
    "reply", [b"", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nnever ends", b"HTTP/1.1 2"]
)
async def test_an_answer_that_never_ends_times_out(pool: Pool, raw: Any, reply: bytes) -> None:
    up = await raw(once(reply, close=False))
    failed = await failure(pool, up.url, timeout=0.3)
    assert (failed.kind, failed.sent) == ("timeout", True)


async def test_connecting_that_hangs_is_a_timeout_not_sent(pool: Pool) -> None:
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        queued = [socket.socket() for _ in range(3)]
        for sock in queued:  # fill the accept queue: the next SYN is dropped, not refused
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
        try:
            upstream = Upstream("raw", f"http://127.0.0.1:{port}", connect_timeout=0.2)
            with pytest.raises(UpstreamFailed) as caught:
                async with exchange(pool, upstream, "POST", "/", (), None):
                    pass
        finally:
            for sock in queued:
                sock.close()
    assert (caught.value.failure.kind, caught.value.failure.sent) == ("timeout", False)


async def test_refused_is_not_sent(pool: Pool) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    failed = await failure(pool, f"http://127.0.0.1:{port}")
    assert (failed.kind, failed.sent) == ("refused", False)


async def test_interim_answers_are_skipped(pool: Pool, raw: Any) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    up = await raw(keep_answering(interim + answer("201 Created", b"made")))
    got, body = await call(pool, up.url, method="POST", body=_pieces(b"x"))
    assert (got.status, got.reason, body) == (201, "Created", b"made")
    assert ("Link", "</a>") not in got.headers


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nETag: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",  # asked with HEAD
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",  # asked with HEAD
    ],
)
async def test_answers_without_a_body_keep_the_connection(
    pool: Pool, raw: Any, reply: bytes
) -> None:
    up = await raw(keep_answering(reply))
    for _ in range(3):
        _, body = await call(pool, up.url, method="HEAD")
        assert body == b""
    assert (len(up.received), up.requests) == (1, 3)


async def test_chunked_and_close_delimited_bodies(pool: Pool, raw: Any) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    up = await raw(keep_answering(chunked))
    assert (await call(pool, up.url))[1] == b"abcde"
    assert (await call(pool, up.url))[1] == b"abcde"
    assert len(up.received) == 1  # kept alive
    closing = await raw(once(b"HTTP/1.1 200 OK\r\n\r\nto the end"))
    assert (await call(pool, closing.url))[1] == b"to the end"


async def test_connection_close_and_extra_bytes_are_not_reused(pool: Pool, raw: Any) -> None:
    up = await raw(keep_answering(answer(extra=b"Connection: close\r\n")))
    await call(pool, up.url)
    await call(pool, up.url)
    extra = await raw(keep_answering(answer() + b"HTTP/1.1 200 OK\r\n"))
    assert (await call(pool, extra.url))[1] == b"ok"  # the answer stands
    assert (await call(pool, extra.url))[1] == b"ok"
    assert (len(up.received), len(extra.received)) == (2, 2)


async def test_a_connection_that_speaks_while_idle_is_not_reused(pool: Pool, raw: Any) -> None:
    async def script(reader: Any, writer: asyncio.StreamWriter, up: RawUpstream) -> None:
        while await up.head(reader):
            writer.write(answer())
            await writer.drain()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nunasked")

    up = await raw(script)
    assert (await call(pool, up.url))[1] == b"ok"
    await wait_for(lambda: not any(pool._idle.values()))  # dropped, whenever the bytes came
    assert (await call(pool, up.url))[1] == b"ok"
    assert len(up.received) == 2


async def test_a_reset_on_a_reused_connection_is_reported_and_not_sent_again(
    pool: Pool, raw: Any
) -> None:
    async def script(reader: Any, writer: asyncio.StreamWriter, up: RawUpstream) -> None:
        await up.head(reader)
        writer.write(answer())
        await writer.drain()
        await up.head(reader)  # the second request: read, then the line is dropped

    up = await raw(script)
    await call(pool, up.url)
    failed = await failure(pool, up.url, method="POST", body=_pieces(b"once"))
    assert (failed.kind, failed.sent) == ("reset", True)
    assert "reused keep-alive connection" in failed.detail
    assert up.requests == 2 and len(up.received) == 1


async def test_bodies_stream_both_ways_with_backpressure(pool: Pool, raw: Any) -> None:
    size = 32 * 1024 * 1024
    writers: list[Any] = []

    async def script(reader: Any, writer: asyncio.StreamWriter, up: RawUpstream) -> None:
        head = await up.head(reader)
        assert b"transfer-encoding: chunked" in head.lower()
        tail = b""
        while not tail.endswith(b"\r\n0\r\n\r\n"):
            tail = (tail + await reader.read(65536))[-16:]
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        writer.write(b"z" * size)  # all at once: what the gateway does not take stays here
        writers.append(writer.transport)
        await writer.drain()

    up = await raw(script)
    sent = _pieces(*[b"u" * 65536] * 64)
    async with exchange(pool, Upstream("raw", up.url), "POST", "/", (), sent) as reply:
        [conn] = pool._open
        await wait_for(lambda: writers and not conn._reading)  # the gateway stopped reading
        assert sum(map(len, conn.pieces)) <= http1.HIGH_WATER + 256 * 1024
        assert writers[0].get_write_buffer_size() > size // 4
        total = sum([len(piece) async for piece in reply.body])
    assert total == size
    assert len(up.received[0]) > 64 * 65536


async def test_a_body_is_sent_only_as_fast_as_the_upstream_takes_it(pool: Pool, raw: Any) -> None:
    size, piece = 256 * 1024 * 1024, 256 * 1024
    pulled = 0

    async def source() -> AsyncIterator[bytes]:
        nonlocal pulled
        for _ in range(size // piece):
            pulled += piece
            yield b"u" * piece

    up = await raw(once(b"", close=False))  # reads the head, never the body
    upstream = Upstream("raw", up.url, timeout=30)
    headers = (("Content-Length", str(size)),)
    call = asyncio.ensure_future(_drive(pool, upstream, headers, source()))
    try:
        await wait_for(lambda: pool._open and next(iter(pool._open))._paused)
        stalled_at = pulled
        await asyncio.sleep(0)  # the sender, paused, takes nothing more from its source
        assert pulled == stalled_at < size // 8
    finally:
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)


async def _drive(
    pool: Pool, upstream: Upstream, headers: tuple[tuple[str, str], ...], body: Any
) -> None:
    async with exchange(pool, upstream, "PUT", "/", headers, body):
        pass


async def test_an_answer_before_the_whole_body_is_read_and_sending_stops(
    pool: Pool, raw: Any
) -> None:
    up = await raw(keep_answering(answer("413 Content Too Large", b"no")))  # reads no body
    size = 256 * 1024 * 1024
    body = _pieces(*[b"u" * (1024 * 1024)] * (size // (1024 * 1024)))
    headers = (("Content-Length", str(size)),)
    got, data = await call(pool, up.url, method="PUT", headers=headers, body=body, timeout=30)
    assert (got.status, data) == (413, b"no")
    assert not any(pool._idle.values())  # half a request on it: never reused
    assert (await call(pool, up.url))[0].status == 413
    assert len(up.received) == 2


async def test_tls_upstream(pool: Pool, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = trustme.CA()
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(served)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"tls {request.secure} {request.host}")

    app = web.Application()
    app.router.add_get("/{tail:.*}", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=served)
    await site.start()
    try:
        port = runner.addresses[0][1]
        got, body = await call(pool, f"https://localhost:{port}")
        assert (got.status, body) == (200, f"tls True localhost:{port}".encode())
        untrusted = Pool(ssl.create_default_context())
        failed = await failure(untrusted, f"https://127.0.0.1:{port}")
        await untrusted.close()
        assert (failed.kind, failed.sent) == ("refused", False)
    finally:
        await runner.cleanup()


async def test_ipv6_and_names(pool: Pool, raw: Any) -> None:
    six = await raw(keep_answering(answer(body=b"six")), host="::1")
    assert (await call(pool, six.url))[1] == b"six"
    assert b"\r\nHost: [::1]:" in six.received[0]
    named = await raw(keep_answering(answer(body=b"named")))
    port = named.url.rsplit(":", 1)[1]
    for _ in range(2):
        assert (await call(pool, f"http://localhost:{port}"))[1] == b"named"
    assert ("localhost", int(port)) in pool._names  # looked up once, kept a while


async def _pieces(*pieces: bytes) -> AsyncIterator[bytes]:
    for piece in pieces:
        yield piece
