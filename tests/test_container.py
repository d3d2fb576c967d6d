"""The Dockerfile: linted in CI (hadolint); here its entry command runs as written."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import final
from tests.fakes import FakeUpstream
from tests.processes import ROOT, free_port

pytestmark = pytest.mark.sqlite_only  # the image keeps its SQLite file on a volume

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instruction(name: str) -> str:
    """The last stage's instruction, continuation lines joined."""
    text = DOCKERFILE.replace("\\\n", " ")
    matches = re.findall(rf"^{name}\s+(.*)$", text, re.MULTILINE)
    assert matches, f"no {name} in the Dockerfile"
    return str(matches[-1])


def exec_form(name: str) -> list[str]:
    value = instruction(name)
    if name == "HEALTHCHECK":
        value = value.split("CMD", 1)[1]
    return list(json.loads(value))


def image_env() -> dict[str, str]:
    return dict(re.findall(r"(\w+)=(\S+)", instruction("ENV")))


def test_image_is_built_for_a_sidecar() -> None:
    assert instruction("USER") != "root" and instruction("USER") != "0"
    assert "/data" in instruction("VOLUME")
    assert instruction("STOPSIGNAL") == "SIGTERM"
    assert instruction("EXPOSE") == "8080"
    assert image_env()["GATEWAY_CONFIG"] == "/etc/async-gateway/sidecar.yaml"
    assert "COPY config /etc/async-gateway" in DOCKERFILE


async def test_entry_command_serves_the_sidecar_config_and_passes_its_healthcheck(
    tmp_path: Path, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    env = {
        **os.environ,
        **image_env(),
        # What the image's COPY and VOLUME provide, pointed at this checkout and a temp dir.
        "GATEWAY_CONFIG": str(ROOT / "config" / "sidecar.yaml"),
        "GATEWAY_DB": str(tmp_path / "gateway.db"),
        "GATEWAY_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "UPSTREAM_URL": upstream.url,
    }
    bin_dir = Path(sys.executable).parent
    command = exec_form("ENTRYPOINT") + exec_form("CMD")
    command[0] = str(bin_dir / command[0])
    with (tmp_path / "log").open("wb") as log:
        proc = subprocess.Popen(command, env=env, cwd=tmp_path, stdout=log, stderr=log)
    try:
        health = exec_form("HEALTHCHECK")
        health[0] = sys.executable
        for _ in range(100):
            if subprocess.run(health, env=env, capture_output=True, timeout=10).returncode == 0:
                break
            assert proc.poll() is None, (tmp_path / "log").read_text()
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the HEALTHCHECK never passed")
        async with http.post(f"http://127.0.0.1:{port}/work", data=b"x") as response:
            assert response.status == 202
            location = response.headers["Location"]
        assert (await final(http, location))[:2] == (200, "completed")
        os.kill(proc.pid, getattr(signal, instruction("STOPSIGNAL")))
        assert proc.wait(timeout=40) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
