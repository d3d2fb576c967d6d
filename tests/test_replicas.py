"""Several replicas on one PostgreSQL as real processes, one test per clause of the contract's
"Several replicas on PostgreSQL": they act as one gateway, whatever dies or goes away."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import final, wait_for
from tests.postgres import Server
from tests.processes import GatewayProcess

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


@dataclass
class Backend:
    """An upstream that records what it was sent, in order, and how many calls overlapped;
    `?hold` waits for `gate`, `?ms=N` takes N ms."""

    started: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)  # callbacks received: webhook-id
    in_flight: dict[str, int] = field(default_factory=dict)  # per first path segment
    most: dict[str, int] = field(default_factory=dict)
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    runner: web.AppRunner | None = None

    async def start(self) -> Backend:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self.runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(self.runner, sock).start()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self

    async def _handle(self, request: web.Request) -> web.Response:
        if request.path == "/hook":
            self.hooks.append(request.headers["webhook-id"])
            return web.Response(status=204)
        await request.read()  # as any upstream does before it answers
        self.started.append(f"{request.method} {request.path_qs}")
        lane = request.path.split("/")[1]
        self.in_flight[lane] = self.in_flight.get(lane, 0) + 1
        self.most[lane] = max(self.most.get(lane, 0), self.in_flight[lane])
        try:
            if "hold" in request.query:
                await self.gate.wait()
            await asyncio.sleep(int(request.query.get("ms", "0")) / 1000)
            return web.Response(body=b"done:" + request.path_qs.encode())
        finally:
            self.in_flight[lane] -= 1


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    fake = await Backend().start()
    yield fake
    assert fake.runner is not None
    await fake.runner.cleanup()


def replica_config(tmp_path: Path, url: str, backend: Backend) -> Path:
    """Three upstreams on the one backend: `legacy` (16 calls at once), `serial` (1), `pair`
    (2), each behind an async route of its name that owes a callback."""
    path = tmp_path / "replica.yaml"
    upstreams = "".join(
        f"  {name}: {{url: '{backend.url}', timeout: 10s, max_in_flight: {n},"
        " retry: {backoff: 10ms, max_backoff: 50ms}}\n"
        for name, n in (("legacy", 16), ("serial", 1), ("pair", 2))
    )
    routes = "".join(
        f"  - {{path: /{route}, upstream: {name}, mode: async, callback: '{backend.url}/hook'}}\n"
        for route, name in (("async", "legacy"), ("serial", "serial"), ("pair", "pair"))
    )
    path.write_text(
        f"server: {{workers: 1}}\nstorage: {{url: '{url}'}}\nupstreams:\n{upstreams}"
        f"routes:\n{routes}  - {{path: /, upstream: legacy, mode: proxy}}\n"
        f"callbacks: {{secret: '{SECRET}'}}\n"
    )
    return path


class Replicas:
    def __init__(self, tmp_path: Path, config: Path) -> None:
        self.tmp_path, self.config = tmp_path, config
        self.all: list[GatewayProcess] = []

    async def start(self, config: Path | None = None) -> GatewayProcess:
        log = self.tmp_path / f"replica{len(self.all)}.log"
        process = GatewayProcess(["serve", "--config", str(config or self.config)], log)
        self.all.append(process)
        return await process.start()

    def stop(self) -> None:
        for process in self.all:
            process.kill()


@pytest.fixture
async def replicas(tmp_path: Path, postgres_url: str, backend: Backend) -> AsyncIterator[Replicas]:
    started = Replicas(tmp_path, replica_config(tmp_path, postgres_url, backend))
    yield started
    started.stop()


async def post(http: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, str]:
    async with http.post(url, data=b"body", **kw) as response:
        await response.read()
        return response.status, response.headers.get("Location", "")


def on(replica: GatewayProcess, location: str) -> str:
    """The same status URL, asked of another replica."""
    return replica.url + "/" + location.split("/", 3)[3]


async def test_each_replica_answers_every_job_with_the_same_binding(
    replicas: Replicas, backend: Backend, http: aiohttp.ClientSession
) -> None:
    backend.gate.set()
    one, two = await replicas.start(), await replicas.start()
    me = {"Authorization": "Bearer mine"}
    status, location = await post(http, one.url + "/async/a?ms=10", headers=me)
    assert status == 202
    code, state, body = await final(http, on(two, location), headers=me)
    assert (code, state, body) == (200, "completed", b"done:/async/a?ms=10")
    async with http.get(on(two, location) + "/status", headers=me) as response:
        assert response.status == 200 and (await response.json())["status"] == "completed"
    async with http.get(on(two, location), headers={"Authorization": "Bearer other"}) as response:
        assert response.status == 404  # bound to the credentials it was sent with
    async with http.delete(on(two, location), headers=me) as response:
        assert response.status in (200, 204)
    async with http.get(on(one, location), headers=me) as response:
        assert response.status == 404
    assert (await post(http, two.url + "/async/b", headers=me))[0] == 202
    command = [sys.executable, "-m", "gateway", "jobs", "list", "--json"]
    listed = subprocess.run(  # the jobs commands, from any host: here, a third process
        [*command, "--config", str(replicas.config)], capture_output=True, text=True, timeout=30
    )
    assert [job["path"] for job in json.loads(listed.stdout)] == ["/async/b"]


async def test_a_long_poll_is_answered_within_a_second_of_the_end_on_another_replica(
    replicas: Replicas, backend: Backend, http: aiohttp.ClientSession
) -> None:
    one = await replicas.start()
    status, location = await post(http, one.url + "/async/held?hold=1")
    assert status == 202
    await wait_for(lambda: backend.started)  # running on the first replica
    two = await replicas.start()
    waiting = asyncio.ensure_future(
        http.get(
            on(two, location), headers={"Prefer": "wait=20"}, timeout=aiohttp.ClientTimeout(30)
        )
    )
    await asyncio.sleep(0.3)  # the long-poll is in place on the second replica
    backend.gate.set()
    ended = time.monotonic()
    async with await waiting as response:
        assert response.headers["X-Gateway-Job-Status"] == "completed"
        assert await response.read() == b"done:/async/held?hold=1"
    assert time.monotonic() - ended < 1.0


async def test_repeats_of_one_idempotency_key_on_two_replicas_make_one_job(
    replicas: Replicas, backend: Backend, http: aiohttp.ClientSession
) -> None:
    backend.gate.set()
    one, two = await replicas.start(), await replicas.start()
    for key in ("k1", "k2", "k3"):
        sent = [
            post(http, replica.url + "/async/idem?ms=200", headers={"Idempotency-Key": key})
            for replica in (one, two, one, two)
        ]
        locations = {location.rsplit("/", 1)[1] for status, location in await asyncio.gather(*sent)}
        assert len(locations) == 1
    await wait_for(lambda: len(backend.started) >= 3)
    await asyncio.sleep(0.5)
    assert backend.started.count("POST /async/idem?ms=200") == 3


async def test_max_in_flight_arrival_order_and_callbacks_across_three_replicas(
    replicas: Replicas, backend: Backend, http: aiohttp.ClientSession
) -> None:
    backend.gate.set()
    trio = [await replicas.start() for _ in range(3)]
    serial = [f"/serial/s{i:02}?ms=20" for i in range(12)]
    pair = [f"/pair/p{i:02}?ms=60" for i in range(12)]
    locations = []
    for i, path in enumerate(serial + pair):  # one after another: the order is known
        status, location = await post(http, trio[i % 3].url + path)
        assert status == 202
        locations.append(location)
    for i, location in enumerate(locations):
        assert (await final(http, on(trio[(i + 1) % 3], location)))[1] == "completed"
    assert backend.most == {"serial": 1, "pair": 2}  # all three replicas together
    assert [s for s in backend.started if s.startswith("POST /serial")] == [
        f"POST {path}" for path in serial
    ]  # each upstream's jobs start in the order they were accepted
    await wait_for(lambda: len(backend.hooks) >= len(locations))
    await asyncio.sleep(1.0)  # a second delivery of any would come within this
    assert len(backend.hooks) == len(set(backend.hooks)) == len(locations)  # each once


async def test_a_replica_killed_mid_call_loses_its_jobs_to_another_within_30_s(
    replicas: Replicas, backend: Backend, http: aiohttp.ClientSession
) -> None:
    doomed = await replicas.start()
    _, get_location = await get(http, doomed.url + "/async/read?hold=1")
    _, post_location = await post(http, doomed.url + "/async/write?hold=1")
    await wait_for(lambda: len(backend.started) == 2)  # both calls under way on `doomed`
    survivor = await replicas.start()
    doomed.kill()  # kill -9
    killed = time.monotonic()
    backend.gate.set()
    get_end = await final(http, on(survivor, get_location), timeout=35)
    post_end = await final(http, on(survivor, post_location), timeout=35)
    assert time.monotonic() - killed < 30
    assert get_end[:2] == (200, "completed")  # an idempotent GET: sent again, finished elsewhere
    assert post_end[1] == "failed"  # a POST: its outcome unknown, never sent twice
    async with http.get(on(survivor, post_location) + "/status") as response:
        assert (await response.json())["failure"]["kind"] == "interrupted"
    assert backend.started.count("POST /async/write?hold=1") == 1
    assert backend.started.count("GET /async/read?hold=1") == 2


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with http.get(url) as response:
        await response.read()
        return response.status, response.headers.get("Location", "")


async def test_the_database_stopped_under_load_loses_nothing_accepted(
    replicas: Replicas, backend: Backend, http: aiohttp.ClientSession, postgres: Server
) -> None:
    backend.gate.set()
    one, two = await replicas.start(), await replicas.start()
    accepted: list[str] = []
    refused: list[int] = []
    stop = asyncio.Event()

    async def load(replica: GatewayProcess) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                status, location = await post(http, f"{replica.url}/async/load{replica.port}-{n}")
            except aiohttp.ClientError:
                continue
            (accepted.append(location) if status == 202 else refused.append(status))
            await asyncio.sleep(0.01)

    loaders = [asyncio.ensure_future(load(r)) for r in (one, two)]
    try:
        await wait_for(lambda: len(accepted) >= 20)
        postgres.stop("immediate")
        try:
            await wait_for(lambda: refused, timeout=10)
            await outage_answers(http, one, accepted[0])
            late = await GatewayProcess(["serve", "--config", str(replicas.config)],
                                        replicas.tmp_path / "late.log").start()  # fmt: skip
            replicas.all.append(late)
            await outage_answers(http, late, accepted[0])  # started with no database: the same
        finally:
            postgres.resume()
        count = len(accepted)
        await wait_for(lambda: len(accepted) >= count + 20, timeout=20)  # resumed, no restart
    finally:
        stop.set()
        await asyncio.gather(*loaders)
    assert set(refused) == {503}

    async def ready() -> bool:
        async with http.get(late.url + "/_gateway/readyz") as response:
            return response.status == 200

    await wait_for(ready)  # the late replica too, once it has the key its peers bind with
    ends = []
    for location in accepted:  # every 202 was a stored job: each one ends, on any replica
        code, state, body = await final(http, on(late, location))
        if state == "failed":  # its call was cut by the outage mid-send: outcome unknown
            assert code == 502 and json.loads(body)["cause"] == "interrupted", body
        ends.append(state)
    assert set(ends) <= {"completed", "failed"} and ends.count("completed") >= len(ends) - 4
    posts = [s for s in backend.started if s.startswith("POST /async/load")]
    assert len(posts) == len(set(posts))  # none sent twice
    for replica in replicas.all:  # the outage in a line or two, not one a second per lane
        log = replica.log.read_text()
        assert "Traceback" not in log and "claim_failed" not in log
        assert 1 <= log.count('"storage_unavailable"') <= 2


async def outage_answers(
    http: aiohttp.ClientSession, replica: GatewayProcess, location: str
) -> None:
    """What the contract says a replica answers while its database cannot be reached."""
    async with http.get(replica.url + "/_gateway/readyz") as response:
        assert response.status == 503
    async with http.post(replica.url + "/async/during", data=b"x") as response:
        assert response.status == 503 and "Retry-After" in response.headers
    async with http.get(on(replica, location)) as response:
        assert response.status == 503
        assert response.headers["Content-Type"].startswith("application/problem+json")
    async with http.get(replica.url + "/proxied?ms=1") as response:
        assert response.status == 200 and await response.read() == b"done:/proxied?ms=1"


async def test_workers_share_the_database_too(
    replicas: Replicas, backend: Backend, http: aiohttp.ClientSession
) -> None:
    backend.gate.set()
    config = replicas.config
    config.write_text(config.read_text().replace("workers: 1", "workers: 2"))
    gateway = await replicas.start()
    sent = [await post(http, f"{gateway.url}/async/w{i}") for i in range(6)]
    for _, location in sent:
        assert (await final(http, location))[:2] == (200, "completed")
    assert sorted(backend.started) == sorted(f"POST /async/w{i}" for i in range(6))
    assert "Traceback" not in (replicas.tmp_path / "replica0.log").read_text()
