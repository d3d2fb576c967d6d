"""A real fake upstream: an aiohttp server on 127.0.0.1, port 0, that records what it receives."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from dataclasses import dataclass, field

from aiohttp import web

BINARY = bytes(range(256)) * 64 + b"\x00\r\n\xff"
GZIPPED = gzip.compress(b"compressed once by the upstream " * 100, mtime=0)


_NAMES = frozenset({"binary", "status", "redirect", "gzip", "big", "reset", "short", "flaky"})


@dataclass
class Seen:
    method: str
    path_qs: str
    headers: list[tuple[str, str]]
    body: bytes


@dataclass
class FakeUpstream:
    seen: list[Seen] = field(default_factory=list)
    in_flight: int = 0
    peak: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self, port: int = 0) -> FakeUpstream:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=0.1, handler_cancellation=True
        )
        await self._runner.setup()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.gate.set()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        self.seen.append(Seen(request.method, request.path_qs, headers, body))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            return await self._answer(request, body)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request, body: bytes) -> web.StreamResponse:
        segments = request.path.strip("/").split("/")
        name = next((s for s in segments if s in _NAMES), "echo")
        if "hold" in request.query:  # wait until the test opens the gate
            await self.gate.wait()
        if "sleep" in request.query:
            await asyncio.sleep(float(request.query["sleep"]))
        answer = getattr(self, f"_{name}")
        return await answer(request, segments, body)  # type: ignore[no-any-return]

    async def _binary(self, request: web.Request, *_: object) -> web.StreamResponse:
        response = web.Response(status=201, body=BINARY, content_type="application/x-thing")
        response.headers.add("X-Custom", "one")
        response.headers.add("Set-Cookie", "a=1; Path=/")
        response.headers.add("Set-Cookie", "b=2; Path=/")
        response.headers.add("X-Custom", "two")
        return response

    async def _status(self, request: web.Request, segments: list[str], _: bytes) -> web.Response:
        code = int(segments[segments.index("status") + 1])
        return web.Response(status=code, text=f"status {code}")

    async def _flaky(self, request: web.Request, *_: object) -> web.Response:
        """503 with Retry-After for the first `fail` calls of a path, then 200."""
        earlier = sum(1 for s in self.seen if s.path_qs == request.path_qs) - 1
        if earlier < int(request.query["fail"]):
            return web.Response(status=503, text="busy", headers={"Retry-After": "1"})
        return web.Response(text=f"ok after {earlier}")

    async def _redirect(self, *_: object) -> web.Response:
        return web.Response(status=302, headers={"Location": "/elsewhere"})

    async def _gzip(self, *_: object) -> web.Response:
        headers = {"Content-Encoding": "gzip", "Content-Type": "text/plain"}
        return web.Response(body=GZIPPED, headers=headers)

    async def _big(self, request: web.Request, *_: object) -> web.StreamResponse:
        return await self._stream(request, int(request.query.get("bytes", "0")))

    async def _reset(self, request: web.Request, *_: object) -> web.Response:
        assert request.transport is not None
        request.transport.abort()
        return web.Response()

    async def _short(self, request: web.Request, *_: object) -> web.StreamResponse:
        """Declares `declared` bytes, sends `sent`, and cuts the connection."""
        response = web.StreamResponse()
        response.content_length = int(request.query["declared"])
        await response.prepare(request)
        await response.write(b"x" * int(request.query["sent"]))
        assert request.transport is not None
        request.transport.abort()
        return response

    async def _echo(self, request: web.Request, _: list[str], body: bytes) -> web.Response:
        echo = {
            "method": request.method,
            "path_qs": request.path_qs,
            "size": len(body),
            "job": request.headers.get("X-Gateway-Job-Id"),
        }
        return web.Response(text=json.dumps(echo), content_type="application/json")

    async def _stream(self, request: web.Request, size: int) -> web.StreamResponse:
        """A body of `size` bytes sent in 1 MiB writes, never held whole."""
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        block = bytes(range(256)) * 4096
        sent = 0
        while sent < size:
            piece = block[: min(len(block), size - sent)]
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
        return response

    def last(self) -> Seen:
        return self.seen[-1]


def header_values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for n, v in headers if n.lower() == name.lower()]
