"""server.idle_timeout over raw sockets: a connection that sends nothing, or stalls in its head or
its body, is closed; one that keeps sending is not."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.rawhttp import RawUpstream, closed_within, read_answer

IDLE = 0.5
MARGIN = 3.0  # the close comes at IDLE after the last byte; the margin only absorbs a slow machine


@pytest.fixture
async def idle_gateway(gateway_for: Any, make_config: Any) -> Any:
    return await gateway_for(make_config(server=f"{{max_body: 1MB, idle_timeout: {IDLE}s}}"))


@pytest.fixture
async def connection(
    idle_gateway: Any,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", idle_gateway.server.port)
    yield reader, writer
    writer.close()


async def drip(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    """Send `data` a byte at a time, `every` seconds apart, until the peer closes."""
    try:
        for byte in data:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(every)
    except ConnectionError:
        pass


async def test_a_connection_that_sends_nothing_is_closed(connection: Any) -> None:
    reader, _ = connection
    started = time.monotonic()
    assert await closed_within(reader, MARGIN) == b""
    assert time.monotonic() - started >= IDLE * 0.9


async def test_a_head_that_trickles_in_is_closed_though_bytes_keep_coming(connection: Any) -> None:
    reader, writer = connection
    head = b"GET /_gateway/healthz HTTP/1.1\r\nHost: h\r\nX-Slow: " + b"a" * 1000
    dripping = asyncio.ensure_future(drip(writer, head, IDLE / 5))
    try:
        assert await closed_within(reader, MARGIN) == b""
    finally:
        dripping.cancel()


async def test_a_body_that_stops_is_closed(connection: Any, upstream: Any) -> None:
    reader, writer = connection
    writer.write(b"POST /async/x HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nabc")
    await closed_within(reader, MARGIN)
    assert upstream.seen == []


async def test_a_chunked_body_that_stops_is_closed(connection: Any) -> None:
    reader, writer = connection
    writer.write(
        b"POST /plain HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
    )
    await closed_within(reader, MARGIN)


async def test_a_slow_body_that_keeps_coming_is_served(connection: Any) -> None:
    reader, writer = connection
    writer.write(b"POST /async/x HTTP/1.1\r\nHost: h\r\nContent-Length: 8\r\n\r\n")
    await drip(writer, b"12345678", IDLE / 3)  # 8 x IDLE/3: longer than IDLE in all
    answer = await asyncio.wait_for(read_answer(reader), 10)
    assert answer.status == 202


async def test_an_idle_keep_alive_connection_is_closed_after_its_answer(connection: Any) -> None:
    reader, writer = connection
    writer.write(b"GET /_gateway/healthz HTTP/1.1\r\nHost: h\r\n\r\n")
    answer = await asyncio.wait_for(read_answer(reader), 10)
    assert answer.status == 200
    await closed_within(reader, MARGIN)


async def test_a_client_that_reads_nothing_of_a_large_answer_is_closed(
    gateway_for: Any, make_config: Any, caplog: Any
) -> None:
    big = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % BIG + b"x" * BIG
    async with RawUpstream(big).running() as raw:
        config = make_config(url=raw.url, server=f"{{max_body: 1MB, idle_timeout: {IDLE}s}}")
        gateway = await gateway_for(config)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gateway.server.port))
        with sock:
            sock.send(b"GET /plain HTTP/1.1\r\nHost: h\r\n\r\n")  # and nothing read after
            server = gateway.server.runner.server
            await wait_for(lambda: server.connections, MARGIN)
            await wait_for(lambda: not server.connections, MARGIN + IDLE)
    closed = [r for r in caplog.records if getattr(r, "event", None) == "idle_closed"]
    assert [getattr(r, "stage", None) for r in closed] == ["answer"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


BIG = 32 * 1024 * 1024  # more than the kernel's socket buffers hold
