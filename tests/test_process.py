"""The gateway as a real process: serve, logs, SIGTERM, kill -9 and restart, demo, memory."""

from __future__ import annotations

import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import config_text, final, wait_for
from tests.fakes import FakeUpstream
from tests.processes import GatewayProcess, free_port


def write_config(tmp_path: Path, upstream_url: str, **kwargs: Any) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(upstream_url, str(tmp_path / "gateway.db"), **kwargs))
    return path


async def test_serve_logs_json_and_drains_on_sigterm(
    tmp_path: Path, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    config = write_config(tmp_path, upstream.url)
    gateway = await GatewayProcess(["serve", "--config", str(config)], tmp_path / "log").start()
    try:
        secret = {"Authorization": "Bearer sekrit-token"}
        async with http.post(gateway.url + "/async/x", data=b"hi", headers=secret) as response:
            assert response.status == 202
            location = response.headers["Location"]
        status, state, body = await final(http, location, headers=secret)
        assert (status, state) == (200, "completed") and json.loads(body)["size"] == 2
        gateway.signal(signal.SIGTERM)
        assert await gateway.wait_exit() == 0
    finally:
        gateway.kill()
    lines = (tmp_path / "log").read_text().splitlines()
    events = [json.loads(line)["event"] for line in lines]  # every line is one JSON object
    assert events[0] == "listening" and "draining" in events and events[-1] == "stopped"
    assert "access" in events and "job_ended" in events
    text = (tmp_path / "log").read_text()
    assert "sekrit-token" not in text and '"hi"' not in text  # no credentials, no bodies


async def test_queued_jobs_survive_kill_9(
    tmp_path: Path, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    # One call at a time, held by the upstream: one job running, four queued, then kill -9.
    config = write_config(tmp_path, upstream.url, upstream={"max_in_flight": "1"})
    args = ["serve", "--config", str(config)]
    upstream.gate.clear()
    gateway = await GatewayProcess(args, tmp_path / "log").start()
    locations = []
    try:
        for i in range(5):
            async with http.post(f"{gateway.url}/async/n{i}?hold=1", data=b"x") as response:
                assert response.status == 202
                locations.append(response.headers["Location"].replace(gateway.url, "{}"))
        await wait_for(lambda: len(upstream.seen) == 1)
    finally:
        gateway.kill()
    upstream.gate.set()
    second = await GatewayProcess(args, tmp_path / "log", port=free_port()).start()
    try:
        # The POST cut off mid-call is not sent again: its outcome is unknown.
        status, _, body = await final(http, locations[0].format(second.url))
        assert status == 502 and json.loads(body)["cause"] == "interrupted"
        for location in locations[1:]:
            status, _, body = await final(http, location.format(second.url))
            assert status == 200 and json.loads(body)["path_qs"].startswith("/async/n")
        expected = [f"/async/n{i}?hold=1" for i in range(5)]
        assert sorted(s.path_qs for s in upstream.seen) == expected
    finally:
        second.kill()


async def test_demo_shows_202_then_the_replay(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    port = free_port()
    args = ["demo", "--db", str(tmp_path / "demo.db"), "--admin-port", str(free_port()), "--quiet"]
    demo = GatewayProcess(args, tmp_path / "log", port=port)
    await demo.start()
    try:
        async with http.post(demo.url + "/slow/report?seconds=0.2", data=b"hello") as response:
            assert response.status == 202
            location = response.headers["Location"]
        status, _, body = await final(http, location)
        assert status == 201
        assert json.loads(body)["received_bytes"] == 5
    finally:
        demo.kill()


MIB = 1024 * 1024


@pytest.mark.timeout(240)  # its own waits are 120 s each: 400 MiB through a shared disk
async def test_a_200_mib_body_does_not_grow_the_process_by_its_size(
    tmp_path: Path, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    size = 200 * MIB
    config = write_config(tmp_path, upstream.url, server="{max_body: 300MB}")
    gateway = await GatewayProcess(["serve", "--config", str(config)], tmp_path / "log").start()
    try:
        idle = gateway.rss_kib()

        async def body() -> AsyncIterator[bytes]:
            block = b"z" * MIB
            for _ in range(size // MIB):
                yield block

        async with http.post(f"{gateway.url}/async/big?bytes={size}", data=body()) as response:
            assert response.status == 202
            location = response.headers["Location"]
        await wait_for(lambda: len(upstream.seen) == 1, timeout=120)
        assert len(upstream.seen[0].body) == size
        upstream.seen.clear()  # the fake holds what it received; the gateway must not

        async def replayed() -> Any:
            async with http.get(location) as response:
                if response.headers["X-Gateway-Job-Status"] != "completed":
                    return None
                total = 0
                async for chunk in response.content.iter_chunked(MIB):
                    total += len(chunk)
                return total

        assert await wait_for(replayed, timeout=120) == size
        peak = gateway.rss_kib("VmHWM")
        print(f"idle {idle // 1024} MiB, peak {peak // 1024} MiB")
        assert (peak - idle) * 1024 < 32 * MIB, f"grew {(peak - idle) // 1024} MiB"
    finally:
        gateway.kill()
