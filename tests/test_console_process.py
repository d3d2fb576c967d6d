"""The console in a real `serve` process: from an installed wheel (not the checkout), on its own
port, and out of the way of a drain: a watching browser never holds up SIGTERM."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from tests.conftest import config_text, wait_for
from tests.fakes import FakeUpstream
from tests.processes import ROOT, GatewayProcess, free_port

TOKEN = "process-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def write_config(tmp_path: Path, upstream_url: str, admin_port: int) -> Path:
    path = tmp_path / "gateway.yaml"
    extra = f"admin: {{port: {admin_port}, token: {TOKEN}}}"
    server = "{max_body: 1MB, shutdown_grace: 3s}"
    db = str(tmp_path / "gateway.db")
    path.write_text(config_text(upstream_url, db, extra=extra, server=server))
    return path


async def test_sigterm_says_bye_to_a_watching_browser_and_exits_at_once(
    tmp_path: Path, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    admin_port = free_port()
    config = write_config(tmp_path, upstream.url, admin_port)
    gateway = await GatewayProcess(["serve", "--config", str(config)], tmp_path / "log").start()
    try:
        upstream.gate.clear()  # a call in flight: the drain gives it its 3 s of grace
        async with http.post(gateway.url + "/async/h?hold=1", data=b"x") as accepted:
            assert accepted.status == 202
        await wait_for(lambda: upstream.in_flight == 1)
        console = f"http://127.0.0.1:{admin_port}"
        async with http.get(console + "/", headers=BEARER) as page:
            assert page.status == 200
        async with http.get(gateway.url + "/", headers=BEARER) as public:
            assert "gateway_console" not in await public.text()  # never on the public port
        async with http.get(console + "/events", headers=BEARER) as stream:
            await stream.content.readuntil(b"event: snapshot")
            started = time.monotonic()
            gateway.signal(signal.SIGTERM)
            rest = await asyncio.wait_for(stream.content.read(), 10)
            assert b"event: bye" in rest
            assert time.monotonic() - started < 2  # at the drain's start, not after its grace
        assert await gateway.wait_exit(10) == 0
    finally:
        gateway.kill()


def _wheel(tmp_path: Path) -> Path:
    """The package built as a wheel from a copy of the sources, and installed in a folder."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "gateway", src / "gateway", ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist")]
    subprocess.run([*build, str(src)], check=True, capture_output=True, timeout=120)
    [wheel] = (tmp_path / "dist").glob("*.whl")
    site = tmp_path / "site"
    install = [*pip, "install", "--no-deps", "--target", str(site), str(wheel)]
    subprocess.run(install, check=True, capture_output=True, timeout=120)
    shutil.rmtree(src)
    return site


async def test_an_installed_wheel_serves_the_console(
    tmp_path: Path, upstream: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    site = _wheel(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import gateway.console; print(gateway.console.__file__)"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(site)), where.stdout
    admin_port, port = free_port(), free_port()
    config = write_config(tmp_path, upstream.url, admin_port)
    command = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
    with (tmp_path / "log").open("wb") as log:
        proc = subprocess.Popen(
            [*command, "--port", str(port)], env=env, cwd=tmp_path, stdout=log, stderr=log
        )
    try:
        console = f"http://127.0.0.1:{admin_port}"
        for _ in range(200):
            try:
                async with http.get(console + "/login") as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                assert proc.poll() is None, (tmp_path / "log").read_text()
            await asyncio.sleep(0.05)
        async with http.get(console + "/", headers=BEARER) as response:
            assert response.status == 200 and "<h1>Overview</h1>" in await response.text()
        for name in ("console.js", "console.css", "favicon.svg"):
            async with http.get(f"{console}/static/{name}", headers=BEARER) as response:
                assert response.status == 200 and len(await response.read()) > 100
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


async def test_the_demo_prints_its_console_and_keeps_it_busy(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    admin_port = free_port()
    args = ["demo", "--db", str(tmp_path / "demo.db"), "--admin-port", str(admin_port)]
    demo = await GatewayProcess(args, tmp_path / "log").start()
    try:
        console = f"http://127.0.0.1:{admin_port}/"
        assert f"Operator console: {console}" in (tmp_path / "log").read_text()

        async def jobs_seen() -> bool:
            async with http.get(console, headers={"Accept": "application/json"}) as response:
                lanes = (await response.json())["upstreams"]
            return any(lane["running"] or lane["queued"] for lane in lanes)

        await wait_for(jobs_seen, 15)  # the demo's own traffic, on a page nobody set up
    finally:
        demo.kill()
