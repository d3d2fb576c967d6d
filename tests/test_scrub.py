"""The embedded store on disk: a finished job's request leaves every file of the store, and
readiness turns 503 while the disk cannot take writes."""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.store.sqlite import SQLiteStore
from tests.conftest import GatewayServer, settled, wait_for
from tests.fakes import FakeUpstream

pytestmark = pytest.mark.sqlite_only  # the SQLite store's files and its disk


def holding(directory: Path, canary: bytes) -> list[str]:
    """The files under `directory` whose bytes hold `canary`."""
    return [p.name for p in directory.iterdir() if p.is_file() and canary in p.read_bytes()]


@pytest.mark.parametrize("ending", ["completed", "canceled"])
async def test_a_finished_jobs_request_leaves_every_file_of_the_store(
    aiohttp_client: Any, make_config: Any, upstream: FakeUpstream, tmp_path: Path, ending: str
) -> None:
    config = make_config()
    store = SQLiteStore(config.storage.path, scrub_every=0.2)
    gateway = await aiohttp_client(GatewayServer(config, store))
    canary = b"CANARY-" + secrets.token_hex(8).encode()
    headers = {
        "Authorization": "Bearer " + canary.decode() + "-token",
        "Cookie": "sid=" + canary.decode() + "-cookie",
        "X-Api-Key": canary.decode() + "-key",
    }
    body = (canary + b"-body ") * 30_000  # 750 KB: several stored pieces
    upstream.gate.clear()
    response = await gateway.post("/async/x?hold=1", data=io.BytesIO(body), headers=headers)
    assert response.status == 202
    location = response.headers["Location"]
    await wait_for(lambda: upstream.in_flight == 1)
    for part in (b"-token", b"-cookie", b"-key", b"-body"):  # the test can see them at all
        assert holding(tmp_path, canary + part), part
    # A checkpoint while the job waits (SQLite's own, every 1000 pages) copies its request
    # from the WAL into the database file, where only secure_delete overwrites it once deleted.
    with contextlib.closing(sqlite3.connect(config.storage.path)) as other:
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert "gateway.db" in holding(tmp_path, canary + b"-token")
    if ending == "canceled":
        canceled = await gateway.delete("/" + location.split("/", 3)[3], headers=headers)
        assert canceled.status == 204
    upstream.gate.set()
    done = await settled(gateway, location, headers=headers)
    assert done.headers["X-Gateway-Job-Status"] == ending
    await wait_for(lambda: not holding(tmp_path, canary), timeout=20)
    # the answer stays replayable
    assert (await settled(gateway, location, headers=headers)).status in (200, 409)


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `path` (root only, as CI runs): a disk that can really fill up."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk", "16m") as path:
        yield path


def fill(path: Path) -> None:
    with (path / "filler").open("wb") as out, contextlib.suppress(OSError):
        while True:
            out.write(b"\0" * 65536)


async def test_readyz_is_503_while_the_disk_is_full(
    aiohttp_client: Any, make_config: Any, disk: Path
) -> None:
    config = make_config(extra="", server="{max_body: 1MB}")
    store = SQLiteStore(str(disk / "gateway.db"))
    gateway = await aiohttp_client(GatewayServer(config, store))
    assert (await gateway.get("/_gateway/readyz")).status == 200
    fill(disk)
    full = await gateway.get("/_gateway/readyz")
    assert full.status == 503
    assert "full" in (await full.json())["error"]
    os.remove(disk / "filler")
    assert (await gateway.get("/_gateway/readyz")).status == 200
