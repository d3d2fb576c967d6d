"""`async-gateway demo`: the gateway on its embedded default in front of a bundled slow backend.

The backend is a real aiohttp server on 127.0.0.1 that takes `?seconds=N` to answer slowly;
the gateway serves async routes under /slow (and /flaky, whose upstream times out after 3 s),
proxies everything else, and serves the operator console; a trickle of demo jobs keeps it moving.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import socket

import aiohttp
from aiohttp import web

from gateway.app import serve
from gateway.config import Admin, Config, Retry, Route, Server, Storage, Upstream

TRAFFIC_EVERY = 1.5  # seconds between two demo jobs


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


def demo_config(backend_url: str, port: int, db: str, admin_port: int | None = None) -> Config:
    flaky = Upstream(
        name="flaky", url=backend_url, timeout=3.0, max_in_flight=2, retry=Retry(attempts=1)
    )
    return Config(
        server=Server(host="127.0.0.1", port=port, shutdown_grace=5.0),
        storage=Storage(path=db),
        upstreams={
            "demo": Upstream(name="demo", url=backend_url, timeout=300.0, max_in_flight=4),
            "flaky": flaky,
        },
        routes=(
            Route(path="/slow", upstream="demo", mode="async"),
            Route(path="/flaky", upstream="flaky", mode="async"),
            Route(path="/", upstream="demo", mode="proxy"),
        ),
        admin=Admin(host="127.0.0.1", port=admin_port),
    )


BURST = 6  # now and then this many at once, more than `demo` runs together: a queue forms


async def traffic(base: str, every: float = TRAFFIC_EVERY) -> None:
    """A job now and then, a few slow ones, some that time out, and a burst that has to wait
    its turn, for the console to show."""
    rng = random.Random()
    async with aiohttp.ClientSession() as session:
        for n in itertools.count():
            path = "/flaky/report" if n % 6 == 5 else "/slow/report"
            for k in range(BURST if n % 10 == 1 else 1):
                url = f"{base}{path}?seconds={rng.uniform(1, 9):.1f}&demo={n}.{k}"
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.post(url, data=b"demo"):
                        pass
            await asyncio.sleep(every)


def instructions(port: int, admin_port: int | None = None) -> str:
    base = f"http://127.0.0.1:{port}"
    console = (
        [
            f"Operator console: http://127.0.0.1:{admin_port}/  (demo jobs arrive on their own)",
            "",
        ]
        if admin_port is not None
        else []
    )
    return "\n".join(
        [
            "",
            f"async-gateway demo: gateway on {base}, slow backend behind it.",
            "",
            *console,
            "Try:",
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


async def run(port: int, db: str, admin_port: int | None = None, busy: bool = True) -> None:
    runner = web.AppRunner(backend(), access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    print(json.dumps({"event": "demo_backend", "url": url}))
    if admin_port is not None:
        console = f"http://127.0.0.1:{admin_port}/"
        print(json.dumps({"event": "demo_console", "url": console}))
    print(instructions(port, admin_port), flush=True)
    feeding = (
        asyncio.create_task(traffic(f"http://127.0.0.1:{port}"), name="demo-traffic")
        if busy
        else None
    )
    try:
        await serve(demo_config(url, port, db, admin_port), "127.0.0.1", port)
    finally:
        if feeding is not None:
            feeding.cancel()
            await asyncio.gather(feeding, return_exceptions=True)
        await runner.cleanup()
