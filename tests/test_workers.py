"""server.workers: several processes share the port and the store, and drain together."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
from collections import Counter
from pathlib import Path

import aiohttp

from tests.conftest import config_text, final, wait_for
from tests.fakes import FakeUpstream, header_values
from tests.processes import GatewayProcess


def events(log: Path, name: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == name]


async def test_two_workers_share_the_port_and_the_store(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(upstream.url, str(tmp_path / "gateway.db"), server="{workers: 2}"))
    log = tmp_path / "log"
    gateway = await GatewayProcess(["serve", "--config", str(path)], log).start()
    try:
        await wait_for(lambda: len(events(log, "listening")) == 2)
        connector = aiohttp.TCPConnector(force_close=True)  # a new connection each time
        async with aiohttp.ClientSession(connector=connector) as http:

            async def send(i: int) -> str:
                async with http.post(f"{gateway.url}/async/n{i}", data=b"w") as response:
                    assert response.status == 202
                    return str(response.headers["Location"])

            locations = await asyncio.gather(*(send(i) for i in range(40)))
            for location in locations:
                assert (await final(http, location))[1] == "completed"
        seen = Counter(
            v for s in upstream.seen for v in header_values(s.headers, "X-Gateway-Job-Id")
        )
        assert len(seen) == 40 and set(seen.values()) == {1}

        def accepted() -> list[dict[str, object]]:
            lines = [e for e in events(log, "access") if e["method"] == "POST"]
            return lines if len(lines) == 40 else []

        # access lines are written in batches, a moment after their requests
        accepted_by = {e["pid"] for e in await wait_for(accepted)}
        assert len(accepted_by) == 2  # both workers took requests on the one port
        gateway.signal(signal.SIGTERM)
        assert await gateway.wait_exit() == 0
        assert len(events(log, "stopped")) == 2
    finally:
        gateway.kill()


async def test_workers_drain_and_exit_when_the_supervisor_is_killed(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(upstream.url, str(tmp_path / "gateway.db"), server="{workers: 2}"))
    log = tmp_path / "log"
    gateway = await GatewayProcess(["serve", "--config", str(path)], log).start()
    try:
        await wait_for(lambda: len(events(log, "listening")) == 2)
        workers = [int(str(e["pid"])) for e in events(log, "worker_started")]
        gateway.kill()  # SIGKILL: the supervisor cannot forward anything
        await wait_for(lambda: len(events(log, "stopped")) == 2)
        await wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in workers))
        assert len(events(log, "supervisor_gone")) == 2
        with socket.socket() as sock:  # no orphan holds the port
            assert sock.connect_ex(("127.0.0.1", gateway.port)) != 0
    finally:
        for pid in [int(str(e["pid"])) for e in events(log, "worker_started")]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def test_max_in_flight_holds_across_workers(tmp_path: Path, upstream: FakeUpstream) -> None:
    path = tmp_path / "gateway.yaml"
    db = str(tmp_path / "gateway.db")
    limited = {"max_in_flight": "2"}
    path.write_text(config_text(upstream.url, db, upstream=limited, server="{workers: 2}"))
    log = tmp_path / "log"
    gateway = await GatewayProcess(["serve", "--config", str(path)], log).start()
    try:
        await wait_for(lambda: len(events(log, "listening")) == 2)
        connector = aiohttp.TCPConnector(force_close=True)  # spread over both workers
        async with aiohttp.ClientSession(connector=connector) as http:

            async def send(i: int) -> str:
                async with http.post(f"{gateway.url}/async/s{i}?sleep=0.2") as response:
                    assert response.status == 202
                    return str(response.headers["Location"])

            locations = await asyncio.gather(*(send(i) for i in range(12)))
            for location in locations:
                assert (await final(http, location, timeout=30))[1] == "completed"
        assert upstream.peak == 2  # each worker may run 2, but both together never more
    finally:
        gateway.signal(signal.SIGTERM)
        await gateway.wait_exit()
