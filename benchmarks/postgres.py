"""PostgreSQL rows: the PostgreSQL store beside the SQLite store in one run, replicas on one
database, a long-poll woken across replicas, and the takeover after a kill -9.

    python -m benchmarks.postgres [--seconds 5] [--pairs 3] [--connections 64] [--only ...]

Starts its own PostgreSQL (tests/postgres.py: initdb and pg_ctl, a unix socket under /tmp) with
fsync and synchronous_commit on, so a 202 waits for the database's own sync, as the SQLite
store's waits for its. Needs wrk. Prints one JSON line per row, as benchmarks/run.py does; CPU
per request is given for the gateway and for PostgreSQL (all its processes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import aiohttp

from benchmarks.run import (
    POST_1KB,
    ROOT,
    TICKS,
    cpu_ticks,
    ended,
    free_port,
    interleave,
    post,
    process,
    server,
    wrk,
)
from tests.postgres import Server

ROWS = ("accept", "e2e", "replicas", "longpoll", "takeover")
CONFIG = """
server: {{max_body: 1GB, workers: 1, shutdown_grace: 1s}}
storage: {storage}
jobs: {{max_queued: 100000000, bind_headers: []}}
upstreams:
  held: {{url: "{upstream}", max_in_flight: 1, timeout: 1h}}
  fast: {{url: "{upstream}", max_in_flight: 64}}
  slow: {{url: "{slow}", max_in_flight: 64, timeout: 1h}}
routes:
  - {{path: /accept, upstream: held, mode: async}}
  - {{path: /e2e, upstream: fast, mode: async}}
  - {{path: /slow, upstream: slow, mode: async}}
"""
SLOW = """
import asyncio, sys
from aiohttp import web
seen = set()
async def handle(request):
    first = request.path_qs not in seen
    seen.add(request.path_qs)
    if first:
        await asyncio.sleep(int(request.query.get("ms", "0")) / 1000)
    return web.Response(body=b"slow")
app = web.Application()
app.router.add_route("*", "/{tail:.*}", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, pg: Server, upstream: str) -> None:
        self.args, self.workdir, self.pg, self.upstream = args, workdir, pg, upstream
        self.slow = ""
        self.databases = 0

    @contextmanager
    def gateway(self, url: str | None = None, port: int | None = None) -> Iterator[str]:
        """A gateway on PostgreSQL (`url`) or, without, on a SQLite file of its own."""
        port = port or free_port()
        storage = f"{{url: '{url}'}}" if url else f"{{path: {self.workdir}/g-{port}.db}}"
        config = self.workdir / f"g-{port}.yaml"
        config.write_text(CONFIG.format(storage=storage, upstream=self.upstream, slow=self.slow))
        command = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
        with process([*command, "--port", str(port)], port, cwd=ROOT):
            time.sleep(0.5)
            yield f"http://127.0.0.1:{port}"

    def database(self) -> str:
        self.databases += 1
        name = f"bench{self.databases}"
        self.pg.psql(f"CREATE DATABASE {name}")
        return self.pg.url(name)

    def pg_ticks(self) -> int:
        """CPU time of every PostgreSQL process so far, in clock ticks."""
        found = subprocess.run(["pgrep", "-u", "postgres"], capture_output=True, text=True)
        total = 0
        for pid in found.stdout.split():
            with suppress(FileNotFoundError, ProcessLookupError):
                total += cpu_ticks(int(pid))
        return total

    def load(self, url: str, pid: int | None = None, connections: int = 0) -> dict[str, float]:
        """wrk's figures with PostgreSQL's CPU per request beside the gateway's."""
        a = self.args
        spent = self.pg_ticks()
        figures = wrk(url, a.seconds, connections or a.connections, POST_1KB, pid=pid)
        requests = figures["rps"] * a.seconds
        figures["pg_cpu_us"] = round((self.pg_ticks() - spent) / TICKS * 1e6 / max(requests, 1), 1)
        return figures


def pid_of(url: str) -> int:
    out = subprocess.run(
        ["ss", "-ltnpH", f"sport = :{url.rsplit(':', 1)[1]}"], capture_output=True, text=True
    ).stdout
    return int(out.split("pid=")[1].split(",")[0])


def accept(b: Bench) -> None:
    with b.gateway() as lite, b.gateway(b.database()) as pg:
        for gw in (lite, pg):
            post(gw + "/accept/hold")  # holds the upstream's one slot: the rest stay queued
        row = interleave(
            "durable accept on PostgreSQL, 1 KB POST -> 202 (vs the SQLite store's)",
            b.args.pairs,
            lambda: b.load(lite + "/accept/x", pid_of(lite)),
            lambda: b.load(pg + "/accept/x", pid_of(pg)),
        )
        _pg_cpu(row)


def _pg_cpu(row: dict[str, object]) -> None:
    pairs = row["pairs"]
    assert isinstance(pairs, list)
    print(
        json.dumps(
            {
                "row": f"{row['row']}: PostgreSQL's CPU per request",
                "pg_cpu_us": statistics.median(p["gateway"]["pg_cpu_us"] for p in pairs),
            }
        ),
        flush=True,
    )


def jobs_per_second(b: Bench, url: str | None) -> dict[str, float]:
    with b.gateway(url) as gw:
        pid = pid_of(gw)
        started, spent, pg_spent = time.monotonic(), cpu_ticks(pid), b.pg_ticks()
        accepted = wrk(gw + "/e2e/x", b.args.seconds, b.args.connections, POST_1KB)["rps"]
        accepted *= b.args.seconds
        while ended(gw, "/e2e") < accepted * 0.999 and time.monotonic() - started < 300:
            time.sleep(0.2)
        done = ended(gw, "/e2e")
        return {
            "rps": done / (time.monotonic() - started),
            "cpu_us": round((cpu_ticks(pid) - spent) / TICKS * 1e6 / max(done, 1), 1),
            "pg_cpu_us": round((b.pg_ticks() - pg_spent) / TICKS * 1e6 / max(done, 1), 1),
        }


def e2e(b: Bench) -> None:
    row = interleave(
        "end to end on PostgreSQL: accept, forward, store, completed (jobs/s vs SQLite's)",
        b.args.pairs,
        lambda: jobs_per_second(b, None),
        lambda: jobs_per_second(b, b.database()),
    )
    _pg_cpu(row)


def replicas(b: Bench) -> None:
    url = b.database()
    with b.gateway(url) as one, b.gateway(url) as two:
        post(one + "/accept/hold")
        half = max(1, b.args.connections // 2)

        def both() -> dict[str, float]:
            results: list[dict[str, float]] = []
            threads = [
                threading.Thread(target=lambda u=u: results.append(b.load(u, connections=half)))
                for u in (one + "/accept/x", two + "/accept/x")
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return {
                "rps": sum(r["rps"] for r in results),
                "p99_ms": max(r["p99_ms"] for r in results),
            }

        interleave(
            "durable accept, two replicas on one PostgreSQL (vs one replica)",
            b.args.pairs,
            lambda: b.load(one + "/accept/x"),
            both,
        )


def longpoll(b: Bench, jobs: int = 200) -> None:
    """A job run on one replica, long-polled on another: from the job's end (its upstream's
    answer, as the job's finished_at) to the answer of the other replica's long-poll."""
    url = b.database()
    with b.gateway(url) as one, b.gateway(url) as two:
        lags = asyncio.run(_longpolls(one, two, jobs))
    lags.sort()
    print(
        json.dumps(
            {
                "row": "long-poll on one replica woken by a job's end on another (ms)",
                "p50_ms": round(lags[len(lags) // 2], 1),
                "p99_ms": round(lags[int(len(lags) * 0.99) - 1], 1),
                "jobs": len(lags),
            }
        ),
        flush=True,
    )


async def _longpolls(one: str, two: str, jobs: int) -> list[float]:
    lags: list[float] = []
    async with aiohttp.ClientSession() as http:

        async def once(i: int) -> None:
            async with http.post(f"{one}/slow/lp{i}?ms=300", data=b"x") as response:
                location = response.headers["Location"]
            path = location.split("/", 3)[3]
            async with http.get(f"{two}/{path}", headers={"Prefer": "wait=30"}) as response:
                await response.read()
                answered = time.time()
            async with http.get(f"{two}/{path}/status") as response:
                finished = (await response.json())["finished_at"]
            end = time.mktime(time.strptime(finished[:19], "%Y-%m-%dT%H:%M:%S"))
            end += float("0" + finished[19:-1]) - time.timezone
            lags.append((answered - end) * 1000)

        for start in range(0, jobs, 20):
            await asyncio.gather(*(once(i) for i in range(start, start + 20)))
    return lags


def takeover(b: Bench, samples: int = 2) -> None:
    """kill -9 of the replica running a GET: until another replica has completed it."""
    figures = []
    for sample in range(samples):
        url = b.database()
        with b.gateway(url) as survivor, ExitStack() as stack:
            doomed = stack.enter_context(b.gateway(url))
            request = urllib.request.Request(f"{doomed}/slow/t{sample}?ms=3600000")
            with urllib.request.urlopen(request, timeout=30) as response:
                location = response.headers["Location"]
            time.sleep(1.0)  # claimed and under way on `doomed`
            os.kill(pid_of(doomed), 9)
            killed = time.monotonic()
            status = survivor + "/" + location.split("/", 3)[3]
            while _state(status) != "completed" and time.monotonic() - killed < 120:
                time.sleep(0.1)
            figures.append(round(time.monotonic() - killed, 1))
    print(
        json.dumps({"row": "takeover after kill -9 of a replica mid-call (s)", "seconds": figures}),
        flush=True,
    )


def _state(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        return str(response.headers["X-Gateway-Job-Status"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--only", default=",".join(ROWS))
    args = parser.parse_args()
    pg = Server({"fsync": "on", "synchronous_commit": "on"})
    pg.start()
    up_command, up_port = server("upstream")
    slow_port = free_port()
    try:
        with (
            tempfile.TemporaryDirectory() as tmp,
            process(up_command, up_port),
            process([sys.executable, "-c", SLOW, str(slow_port)], slow_port),
        ):
            bench = Bench(args, Path(tmp), pg, f"http://127.0.0.1:{up_port}")
            bench.slow = f"http://127.0.0.1:{slow_port}"
            for name in ROWS:
                if name in args.only.split(","):
                    globals()[name](bench)
    finally:
        pg.destroy()


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    main()
