"""HTTP/1.1 as bytes on a socket: a client that sends exactly what a test writes, and an
upstream that answers exactly what a test gives it. For input no well-behaved library sends."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

TIMEOUT = 10.0


@dataclass
class Answer:
    status: int
    head: bytes  # the status line and header block, without the blank line
    body: bytes

    def headers(self) -> list[tuple[bytes, bytes]]:
        lines = self.head.split(b"\r\n")[1:]
        return [(n.strip(), v.strip()) for n, _, v in (line.partition(b":") for line in lines)]

    def header(self, name: str) -> bytes | None:
        wanted = name.lower().encode()
        return next((v for n, v in self.headers() if n.lower() == wanted), None)

    def json(self) -> Any:
        return json.loads(self.body)


async def exchange(port: int, data: bytes, timeout: float = TIMEOUT) -> Answer:
    """Send `data` on a new connection and read one answer (to its length, or to EOF)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(read_answer(reader), timeout)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def read_answer(reader: asyncio.StreamReader) -> Answer:
    head = (await reader.readuntil(b"\r\n\r\n"))[:-4]
    while head.startswith(b"HTTP/1.1 100"):  # an interim answer: the real one follows
        head = (await reader.readuntil(b"\r\n\r\n"))[:-4]
    status = int(head.split(b" ", 2)[1])
    answer = Answer(status, head, b"")
    length = answer.header("Content-Length")
    if length is not None:
        answer.body = await reader.readexactly(int(length))
    elif answer.header("Transfer-Encoding") is None:
        answer.body = await reader.read()
    else:
        answer.body = await _chunked(reader)
    return answer


async def _chunked(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return body
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def closed_within(
    reader: asyncio.StreamReader, timeout: float
) -> bytes:  # what came before the close
    """Read until the peer closes; AssertionError if it has not within `timeout`."""
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    except TimeoutError:
        raise AssertionError(f"connection still open after {timeout}s") from None


@dataclass
class RawUpstream:
    """An upstream that answers every request with the bytes of `answer`, and keeps each
    request's bytes as they came."""

    answer: bytes
    requests: list[bytes] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            self.requests.append(head + await reader.readexactly(length))
            writer.write(self.answer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RawUpstream]:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self._server.close()
            await self._server.wait_closed()
