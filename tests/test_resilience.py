"""Nothing lost, nothing stuck: real processes, kill -9, SIGTERM, two processes, a storage fault."""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import config_text, final, wait_for
from tests.fakes import FakeUpstream, header_values
from tests.processes import GatewayProcess


def config_file(tmp_path: Path, fake: FakeUpstream, storage: str, **kwargs: Any) -> list[str]:
    path = tmp_path / "gateway.yaml"
    path.write_text(config_text(fake.url, storage, **kwargs))
    return ["serve", "--config", str(path)]


def job_ids_seen(upstream: FakeUpstream) -> Counter[str]:
    return Counter(v for s in upstream.seen for v in header_values(s.headers, "X-Gateway-Job-Id"))


async def test_kill_9_mid_load_loses_no_accepted_job(
    tmp_path: Path, upstream: FakeUpstream, http: aiohttp.ClientSession, storage: str
) -> None:
    args = config_file(tmp_path, upstream, storage, upstream={"max_in_flight": "4"})
    first = await GatewayProcess(args, tmp_path / "log").start()
    accepted: dict[str, str] = {}  # job id → method

    async def send(i: int) -> None:
        method = "GET" if i % 2 else "POST"
        try:
            async with http.request(method, f"{first.url}/async/n{i}?sleep=0.05") as response:
                if response.status == 202:
                    accepted[(await response.json())["id"]] = method
        except aiohttp.ClientError:
            pass  # cut off by the kill: never acknowledged, so nothing was promised

    sending = asyncio.gather(*(send(i) for i in range(100)))
    await wait_for(lambda: len(upstream.seen) >= 10)
    first.kill()
    await sending
    assert len(accepted) >= 5  # some 202s were still on the wire when the process died
    second = await GatewayProcess(args, tmp_path / "log").start()
    try:
        unknown: set[str] = set()  # POSTs cut off mid-call: sent or not, nobody knows
        for job_id, method in accepted.items():
            status, state, body = await final(http, f"{second.url}/_gateway/jobs/{job_id}")
            if state == "failed":  # only a POST cut off mid-call may end so
                assert method == "POST" and json.loads(body)["cause"] == "interrupted"
                unknown.add(job_id)
            else:
                assert (status, state) == (200, "completed")
        seen = job_ids_seen(upstream)
        assert set(accepted) - unknown <= set(seen)  # every other job reached the upstream
        posts = [i for i, m in accepted.items() if m == "POST"]
        assert all(seen.get(i, 0) <= 1 for i in posts)  # never twice
        assert all(seen[i] == 1 for i in posts if i not in unknown)
    finally:
        second.kill()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_signal_drains_then_settles_calls_by_on_interrupt(
    tmp_path: Path, upstream: FakeUpstream, http: aiohttp.ClientSession, sig: int, storage: str
) -> None:
    args = config_file(tmp_path, upstream, storage, server="{shutdown_grace: 1s}")
    upstream.gate.clear()
    gateway = await GatewayProcess(args, tmp_path / "log").start()
    urls = {}
    for method in ("GET", "POST"):
        async with http.request(method, f"{gateway.url}/async/held?hold=1") as response:
            urls[method] = response.headers["Location"]
    await wait_for(lambda: len(upstream.seen) == 2)
    gateway.signal(sig)

    async def draining() -> bool:
        async with http.get(gateway.url + "/_gateway/readyz") as response:
            return response.status == 503

    await wait_for(draining)
    async with http.post(gateway.url + "/async/new") as response:
        assert response.status == 503 and int(response.headers["Retry-After"]) >= 1
    async with http.get(urls["GET"]) as response:
        assert response.status == 202  # status URLs keep answering while draining
    assert await gateway.wait_exit() == 0
    upstream.gate.set()
    restarted = await GatewayProcess(args, tmp_path / "log", port=gateway.port).start()
    try:
        status, state, _ = await final(http, urls["GET"])
        assert (status, state) == (200, "completed")
        status, state, body = await final(http, urls["POST"])
        assert (status, state) == (502, "failed")
        assert json.loads(body)["cause"] == "interrupted"
        assert len(upstream.seen) == 3  # the GET was sent again, the POST was not
    finally:
        restarted.kill()


@pytest.mark.sqlite_only  # one file, two processes (test_replicas: replicas on PostgreSQL)
async def test_two_processes_share_one_store_and_never_run_a_job_twice(
    tmp_path: Path, upstream: FakeUpstream, http: aiohttp.ClientSession, storage: str
) -> None:
    args = config_file(tmp_path, upstream, storage)
    a = await GatewayProcess(args, tmp_path / "a.log").start()
    b = await GatewayProcess(args, tmp_path / "b.log").start()
    try:

        async def send(i: int) -> str:
            base = (a, b)[i % 2].url
            async with http.post(f"{base}/async/n{i}", data=b"x") as response:
                assert response.status == 202, await response.text()
                return str(response.headers["Location"])

        locations = await asyncio.gather(*(send(i) for i in range(60)))
        for location in locations:
            assert (await final(http, location))[1] == "completed"
        seen = job_ids_seen(upstream)
        assert len(seen) == 60 and set(seen.values()) == {1}

        # A job held by a process that dies is taken over by the other.
        upstream.gate.clear()
        async with http.get(f"{a.url}/async/held?hold=1") as response:
            location = response.headers["Location"]
        await wait_for(lambda: len(upstream.seen) == 61)
        with sqlite3.connect(tmp_path / "gateway.db") as db:
            (owner,) = db.execute("SELECT owner FROM jobs WHERE status = 'running'").fetchone()
        holder, other = (a, b) if owner.split(":")[1] == str(a.proc.pid) else (b, a)  # type: ignore[union-attr]
        holder.kill()
        upstream.gate.set()
        status, state, _ = await final(http, location.replace(a.url, other.url), timeout=40)
        assert (status, state) == (200, "completed")
    finally:
        a.kill()
        b.kill()


@pytest.mark.sqlite_only  # a full disk under the SQLite file (test_replicas: PostgreSQL stopped)
async def test_storage_fault_gives_503_never_202_and_recovers(
    tmp_path: Path, upstream: FakeUpstream, http: aiohttp.ClientSession, storage: str
) -> None:
    args = config_file(tmp_path, upstream, storage)
    gateway = await GatewayProcess(args, tmp_path / "log").start()
    assert gateway.proc is not None
    try:
        async with http.post(gateway.url + "/async/before", data=b"x") as response:
            assert response.status == 202
            before = response.headers["Location"]
        assert (await final(http, before))[1] == "completed"
        # A real fault: the process may no longer grow any file (EFBIG, as on a full disk).
        soft, hard = resource.prlimit(gateway.proc.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(gateway.proc.pid, resource.RLIMIT_FSIZE, (1, hard))
        for _ in range(5):
            async with http.post(gateway.url + "/async/during", data=b"y" * 5000) as response:
                assert response.status == 503
                assert int(response.headers["Retry-After"]) >= 1
                assert response.headers["Content-Type"] == "application/problem+json"
        async with http.get(before) as response:
            assert response.status == 200  # reads still answer
        resource.prlimit(gateway.proc.pid, resource.RLIMIT_FSIZE, (soft, hard))
        async with http.post(gateway.url + "/async/after", data=b"z") as response:
            assert response.status == 202
            after = response.headers["Location"]
        assert (await final(http, after))[1] == "completed"
    finally:
        gateway.kill()
    assert all(b"during" not in s.path_qs.encode() for s in upstream.seen)
    assert os.path.exists(tmp_path / "gateway.db")


@pytest.mark.sqlite_only  # its bodies removed from the SQLite file underneath
async def test_a_stored_answer_that_cannot_be_read_is_a_503_not_a_500(
    gateway: Any, tmp_path: Path
) -> None:
    location = (await gateway.get("/async/binary")).headers["Location"]
    path = "/" + location.split("/", 3)[3]
    await wait_for(lambda: _completed(tmp_path / "gateway.db"))
    with sqlite3.connect(tmp_path / "gateway.db") as db:  # a real fault: the bodies are gone
        db.execute("DROP TABLE bodies")
    response = await gateway.get(path)
    assert response.status == 503
    assert response.headers["Content-Type"] == "application/problem+json"
    assert int(response.headers["Retry-After"]) >= 1
    head = await gateway.head(path)  # a HEAD reads no body: the head is still there
    assert head.status == 201


def _completed(db_path: Path) -> bool:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT 1 FROM jobs WHERE status = 'completed'").fetchone() is not None


@pytest.mark.sqlite_only  # its pieces removed from the SQLite file underneath
async def test_an_answer_removed_mid_replay_cuts_the_connection_with_one_log_line(
    gateway: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The job is forgotten or swept while its answer streams: the replay must not end short
    as if whole (the client would wait for the rest), nor log a traceback."""
    size = 24 * 1024 * 1024
    location = (await gateway.get(f"/async/big?bytes={size}")).headers["Location"]
    path = "/" + location.split("/", 3)[3]
    await wait_for(lambda: _completed(tmp_path / "gateway.db"))
    response = await gateway.get(path)  # the head is out; the client reads no further yet
    assert response.status == 200 and response.content_length == size
    with sqlite3.connect(tmp_path / "gateway.db") as db:  # pieces past 12 MiB go away
        db.execute("DELETE FROM bodies WHERE n >= 48")
    async with asyncio.timeout(10):
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    cut = [r for r in caplog.records if getattr(r, "event", None) == "replay_cut"]
    assert len(cut) == 1 and cut[0].levelname == "WARNING"
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]
