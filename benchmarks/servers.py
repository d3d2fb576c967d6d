"""The servers benchmarks run beside the gateway, each an aiohttp app on uvloop, 127.0.0.1 only.

python benchmarks/servers.py upstream PORT   the backend: /fast, /hold, /big?bytes=N
python benchmarks/servers.py noop PORT       the reference: answers every request with the
                                             gateway's 202, doing nothing else
python benchmarks/servers.py accept-floor PORT DB   the least a durable accept needs: the body
                                             read, inserted in a group commit that is
                                             fdatasync'd, then the same 202
python benchmarks/servers.py proxy-floor PORT URL   the least a pass-through needs on aiohttp:
                                             aiohttp's client to URL, the answer sent back
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import sqlite3
import sys
import threading
from collections.abc import AsyncIterator

import aiohttp
import uvloop
from aiohttp import web

ACCEPTED = json.dumps(
    {
        "id": "gBqjB1OEJcVjjL9OHPyb2A",
        "status": "queued",
        "status_url": "http://127.0.0.1:8080/_gateway/jobs/gBqjB1OEJcVjjL9OHPyb2A",
        "created_at": "2026-11-23T10:42:06.337Z",
    }
).encode()
HEADERS = {
    "Location": "http://127.0.0.1:8080/_gateway/jobs/gBqjB1OEJcVjjL9OHPyb2A",
    "Retry-After": "2",
    "Cache-Control": "no-store",
    "Vary": "Prefer",
    "X-Gateway-Job-Status": "queued",
    "Content-Type": "application/json",
}
BLOCK = bytes(range(256)) * 4096


async def noop(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=202, body=ACCEPTED, headers=HEADERS)


async def upstream(request: web.Request) -> web.StreamResponse:
    await request.read()
    if request.path.endswith("/hold"):
        await asyncio.sleep(3600)
    if request.path.endswith("/big"):
        size = int(request.query["bytes"])
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        for start in range(0, size, len(BLOCK)):
            await response.write(BLOCK[: min(len(BLOCK), size - start)])
        await response.write_eof()
        return response
    return web.Response(text='{"ok": true}', content_type="application/json")


class GroupCommit:
    """One writer thread: every body waiting goes into one transaction, synced before any of
    their 202s (the gateway's promise, without the gateway)."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS bodies (id INTEGER PRIMARY KEY, body BLOB)")
        self._wal = path + "-wal"
        self._waiting: queue.SimpleQueue[tuple[bytes, asyncio.Future[None]]] = queue.SimpleQueue()
        threading.Thread(target=self._run, daemon=True).start()

    def insert(self, body: bytes) -> asyncio.Future[None]:
        done = asyncio.get_running_loop().create_future()
        self._waiting.put((body, done))
        return done

    def _run(self) -> None:
        while True:
            batch = [self._waiting.get()]
            while not self._waiting.empty():
                batch.append(self._waiting.get_nowait())
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO bodies (body) VALUES (?)", [(b,) for b, _ in batch])
            self._db.execute("COMMIT")
            fd = os.open(self._wal, os.O_RDONLY)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
            loop = batch[0][1].get_loop()
            loop.call_soon_threadsafe(_settle, [done for _, done in batch])


def _settle(waiting: list[asyncio.Future[None]]) -> None:
    for done in waiting:
        if not done.done():
            done.set_result(None)


def accept_floor(path: str) -> web.Application:
    app = web.Application(client_max_size=1024**3)
    commits = GroupCommit(path)

    async def accept(request: web.Request) -> web.Response:
        await commits.insert(await request.read())
        return web.Response(status=202, body=ACCEPTED, headers=HEADERS)

    app.router.add_route("*", "/{tail:.*}", accept)
    return app


def proxy_floor(url: str) -> web.Application:
    app = web.Application(client_max_size=1024**3)
    session: list[aiohttp.ClientSession] = []

    async def opened(app: web.Application) -> AsyncIterator[None]:
        session.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
        yield
        await session[0].close()

    async def forward(request: web.Request) -> web.Response:
        async with session[0].request(
            request.method, url + request.raw_path, data=await request.read() or None
        ) as answer:
            body = await answer.read()
            headers = {"Content-Type": answer.headers.get("Content-Type", "")}
            return web.Response(status=answer.status, body=body, headers=headers)

    app.cleanup_ctx.append(opened)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "accept-floor":
        app = accept_floor(sys.argv[3])
    elif kind == "proxy-floor":
        app = proxy_floor(sys.argv[3])
    else:
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", noop if kind == "noop" else upstream)
    web.run_app(
        app, host="127.0.0.1", port=port, access_log=None, print=None, loop=uvloop.new_event_loop()
    )


if __name__ == "__main__":
    main()
