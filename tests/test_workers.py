"""server.workers: several processes share the port and the store, and drain together."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import config_text, final, wait_for
from tests.fakes import FakeUpstream, header_values
from tests.processes import ROOT, GatewayProcess

pytestmark = pytest.mark.sqlite_only  # workers sharing one SQLite file on one machine


def events(log: Path, name: str) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == name]


async def two_workers(
    tmp_path: Path, upstream: FakeUpstream, **keys: str
) -> tuple[GatewayProcess, Path]:
    """A gateway with `workers: 2` (`keys` set on its upstream), both listening; and its log."""
    path = tmp_path / "gateway.yaml"
    db = str(tmp_path / "gateway.db")
    path.write_text(config_text(upstream.url, db, upstream=keys, server="{workers: 2}"))
    log = tmp_path / "log"
    gateway = await GatewayProcess(["serve", "--config", str(path)], log).start()
    try:
        await wait_for(lambda: len(events(log, "listening")) == 2)
    except AssertionError:
        gateway.kill()
        raise
    return gateway, log


async def completed(gateway: GatewayProcess, paths: list[str]) -> None:
    """POST each path, each on a new connection (so both workers take some), and wait until
    every job has completed."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def send(path: str) -> str:
            async with http.post(gateway.url + path, data=b"w") as response:
                assert response.status == 202
                return str(response.headers["Location"])

        for location in await asyncio.gather(*(send(path) for path in paths)):
            assert (await final(http, location, timeout=30))[1] == "completed"


async def test_two_workers_share_the_port_and_the_store(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    gateway, log = await two_workers(tmp_path, upstream)
    try:
        await completed(gateway, [f"/async/n{i}" for i in range(40)])
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
    gateway, log = await two_workers(tmp_path, upstream)
    try:
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
    gateway, _ = await two_workers(tmp_path, upstream, max_in_flight="2")
    try:
        await completed(gateway, [f"/async/s{i}?sleep=0.2" for i in range(12)])
        assert upstream.peak == 2  # each worker may run 2, but both together never more
    finally:
        gateway.signal(signal.SIGTERM)
        await gateway.wait_exit()


async def test_a_sigterm_while_workers_start_drains_them_all(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    """The supervisor forwards a SIGTERM to workers that may still be importing: each must
    drain and exit 0, not die of the signal before its handlers are in place."""
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(upstream.url, str(tmp_path / "g.db"), server="{workers: 2}"))
    log = tmp_path / "log"
    gateway = GatewayProcess(["serve", "--config", str(path)], log)
    with log.open("ab") as out:
        gateway.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", *gateway.args, "--port", str(gateway.port)],
            cwd=ROOT,
            stdout=out,
            stderr=out,
        )
    try:
        await wait_for(lambda: len(events(log, "worker_started")) == 2)
        gateway.signal(signal.SIGTERM)  # the workers are not listening yet
        assert await gateway.wait_exit() == 0, log.read_text()
        assert events(log, "workers_stopped")[0]["codes"] == [0, 0]
    finally:
        gateway.kill()
