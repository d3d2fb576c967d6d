"""A raw-socket upstream for client tests: it answers with whatever bytes a test scripts and
records every byte it was sent, connection by connection."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "RawUpstream"], Awaitable[None]]


@dataclass
class RawUpstream:
    script: Script
    host: str = "127.0.0.1"
    received: list[bytearray] = field(default_factory=list)  # one per connection
    requests: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.script(_Recording(reader, self), writer, self)  # type: ignore[arg-type]
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def head(self, reader: asyncio.StreamReader) -> bytes:
        """The next request's head (counted), or b"" once the client closed."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return b""
        self.requests += 1
        return head


class _Recording:
    """A StreamReader that keeps a copy of every byte read through it."""

    def __init__(self, reader: asyncio.StreamReader, upstream: RawUpstream) -> None:
        self._reader = reader
        self._seen = bytearray()
        upstream.received.append(self._seen)

    async def readuntil(self, separator: bytes) -> bytes:
        data = await self._reader.readuntil(separator)
        self._seen += data
        return data

    async def readexactly(self, n: int) -> bytes:
        data = await self._reader.readexactly(n)
        self._seen += data
        return data

    async def read(self, n: int = -1) -> bytes:
        data = await self._reader.read(n)
        self._seen += data
        return data


def answer(status: str = "200 OK", body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n%b\r\n%b" % (
        status.encode(),
        len(body),
        extra,
        body,
    )


def keep_answering(reply: bytes) -> Script:
    """Answer every request on a connection with `reply`, keeping the connection open."""

    async def script(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: RawUpstream
    ) -> None:
        while await up.head(reader):
            writer.write(reply)
            await writer.drain()

    return script


def once(reply: bytes, close: bool = True) -> Script:
    """Answer one request with `reply`, then close (or hold) the connection."""

    async def script(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: RawUpstream
    ) -> None:
        if await up.head(reader):
            writer.write(reply)
            await writer.drain()
        if not close:
            await asyncio.Event().wait()

    return script
