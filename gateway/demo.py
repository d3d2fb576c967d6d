"""`async-gateway demo`: the gateway on its embedded default in front of a bundled slow backend.

The backend is a real aiohttp server on 127.0.0.1 that takes `?seconds=N` to answer slowly;
the gateway serves async routes under /slow and proxies everything else.
"""

from __future__ import annotations

import asyncio
import json
import socket

from aiohttp import web

from gateway.app import serve
from gateway.config import Config, Route, Server, Storage, Upstream


async def _slow(request: web.Request) -> web.Response:
    seconds = min(float(request.query.get("seconds", "5")), 120.0)
    body = await request.read()
    await asyncio.sleep(seconds)
    report = {
        "path": request.path_qs,
        "method": request.method,
        "waited_seconds": seconds,
        "received_bytes": len(body),
        "job_id": request.headers.get("X-Gateway-Job-Id"),
    }
    return web.json_response(report, status=201, headers={"X-Backend": "demo"})


def backend() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _slow)
    return app


def demo_config(backend_url: str, port: int, db: str) -> Config:
    return Config(
        server=Server(host="127.0.0.1", port=port, shutdown_grace=5.0),
        storage=Storage(path=db),
        upstreams={"demo": Upstream(name="demo", url=backend_url, timeout=300.0)},
        routes=(
            Route(path="/slow", upstream="demo", mode="async"),
            Route(path="/", upstream="demo", mode="proxy"),
        ),
    )


def instructions(port: int) -> str:
    base = f"http://127.0.0.1:{port}"
    return "\n".join(
        [
            "",
            f"async-gateway demo: gateway on {base}, slow backend behind it. Try:",
            "",
            "  # 1. an async route answers 202 at once, with a status URL in Location",
            f"  curl -si -X POST '{base}/slow/report?seconds=5' -d 'hello' | tee /tmp/202.txt",
            "",
            "  # 2. poll it: 202 while pending, then the backend's own 201 replayed byte for byte",
            "  status_url=$(grep -i '^location:' /tmp/202.txt | cut -d' ' -f2 | tr -d '\\r')",
            '  curl -si "$status_url"; sleep 6; curl -si "$status_url"',
            "",
            "  # 3. metadata without the body",
            '  curl -s "$status_url/status"',
            "",
            "  # 4. other paths are proxied straight through (this one waits 1 s)",
            f"  curl -si '{base}/quick?seconds=1'",
            "",
            "Ctrl-C stops both.",
            "",
        ]
    )


async def run(port: int, db: str) -> None:
    runner = web.AppRunner(backend(), access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    print(json.dumps({"event": "demo_backend", "url": url}))
    print(instructions(port), flush=True)
    try:
        await serve(demo_config(url, port, db), "127.0.0.1", port)
    finally:
        await runner.cleanup()
