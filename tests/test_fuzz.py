"""A fuzz test of the HTTP surface: random and mutated requests on raw sockets against the
gateway as a real process. No answer is a 500 of its own, no log line a traceback, and it
goes on serving."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp

from tests import fuzzing
from tests.processes import GatewayProcess
from tests.rawhttp import RawUpstream
from tests.test_process import write_config

SECONDS = 8.0


async def test_fuzzed_requests_get_no_500_and_no_traceback(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with RawUpstream(fuzzing.UPSTREAM_ANSWER).running() as upstream:
        config = write_config(tmp_path, upstream.url, server="{max_body: 64KB, idle_timeout: 2s}")
        log = tmp_path / "log"
        gateway = await GatewayProcess(["serve", "--config", str(config)], log).start()
        try:
            report = await asyncio.to_thread(fuzzing.run, gateway.port, 3000, SECONDS)
            async with http.get(gateway.url + "/_gateway/healthz") as response:
                assert response.status == 200
            assert gateway.proc is not None and gateway.proc.poll() is None
        finally:
            gateway.kill()
    print(f"{report.sent} requests: {dict(report.statuses)}")
    assert report.sent > 100
    assert sum(n for status, n in report.statuses.items() if status and status < 500) > 50
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    assert not [line for line in lines if "Traceback" in line]
    events = [json.loads(line).get("event") for line in lines]  # one JSON object a line
    assert not {"handler_failed", "connection_failed"} & set(events)  # a bug's line
