"""`async-gateway jobs list|show|retry|purge`, run as real commands while the gateway serves."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp

from tests.conftest import config_text, final
from tests.fakes import FakeUpstream
from tests.processes import ROOT, GatewayProcess, free_port


async def jobs_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "gateway", "jobs", *args, "--config", str(config)]
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=30, cwd=ROOT
    )


async def test_jobs_commands_while_the_gateway_serves(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    port = free_port()  # nothing listens there yet: every try is refused
    config = tmp_path / "gateway.yaml"
    config.write_text(config_text(f"http://127.0.0.1:{port}", str(tmp_path / "gateway.db")))
    gateway = await GatewayProcess(["serve", "--config", str(config)], tmp_path / "log").start()
    upstream: FakeUpstream | None = None
    try:
        async with http.post(gateway.url + "/async/report", data=b"dead letter") as response:
            location = response.headers["Location"]
            job_id = (await response.json())["id"]
        assert (await final(http, location))[:2] == (502, "failed")

        listed = await jobs_cli(config, "list", "--status", "failed", "--json")
        assert listed.returncode == 0, listed.stderr
        [entry] = json.loads(listed.stdout)
        assert {"id", "status", "method", "path", "created_at"} <= set(entry)
        assert (entry["id"], entry["status"], entry["method"]) == (job_id, "failed", "POST")
        table = await jobs_cli(config, "list", "--route", "/async")
        assert table.stdout.splitlines()[0].split()[:3] == ["ID", "STATUS", "TRIES"]
        assert job_id in table.stdout
        assert (
            await jobs_cli(config, "list", "--status", "completed", "--json")
        ).stdout.strip() == "[]"

        shown = await jobs_cli(config, "show", job_id)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["failure"]["kind"] == "refused"

        upstream = await FakeUpstream().start(port)  # the backend is back
        retried = await jobs_cli(config, "retry", job_id)
        assert retried.returncode == 0, retried.stderr
        status, state, _ = await final(http, location)
        assert (status, state) == (200, "completed")
        assert upstream.seen[0].body == b"dead letter"  # the kept request, sent again
        again = await jobs_cli(config, "retry", job_id)
        assert again.returncode == 1 and "not failed" in again.stderr

        kept = await jobs_cli(config, "purge", "--older-than", "1h")
        assert "purged 0" in kept.stdout
        purged = await jobs_cli(config, "purge", "--older-than", "0s")
        assert "purged 1" in purged.stdout
        async with http.get(location) as response:
            assert response.status == 404
        missing = await jobs_cli(config, "show", job_id)
        assert missing.returncode == 1
    finally:
        gateway.kill()
        if upstream is not None:
            await upstream.stop()


def test_bad_duration_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "jobs", "purge", "--older-than", "soon"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert result.returncode == 2 and "not a duration" in result.stderr
