"""The servers benchmarks run beside the gateway, each an aiohttp app on uvloop, 127.0.0.1 only.

python benchmarks/servers.py upstream PORT   the backend: /fast, /hold, /big?bytes=N
python benchmarks/servers.py noop PORT       the reference: answers every request with the
                                             gateway's 202, doing nothing else
"""

from __future__ import annotations

import asyncio
import json
import sys

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


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/{tail:.*}", noop if kind == "noop" else upstream)
    web.run_app(
        app, host="127.0.0.1", port=port, access_log=None, print=None, loop=uvloop.new_event_loop()
    )


if __name__ == "__main__":
    main()
