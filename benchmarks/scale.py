"""The rows about scale: a million jobs stored, and ten thousand clients long-polling."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import urllib.request
from pathlib import Path

from benchmarks.rows import PACED_CONNECTIONS, RATE, Context, pid_listening, rss_kib
from benchmarks.run import POST_1KB, gateway, interleave, post, wrk
from gateway.jobs import new_id
from gateway.store.sqlite import schema

ANSWER = json.dumps([200, "OK", [["Content-Type", "application/json"]], 12])
WAITERS = 10_000


def stored(c: Context) -> None:
    """Accept and status p99 at a fixed load, 1,000,000 jobs stored against 1,000."""
    small, big = c.workdir / "small.db", c.workdir / "big.db"
    fill(small, 1_000)
    started = time.monotonic()
    fill(big, 1_000_000)
    print(json.dumps({"filled": 1_000_000, "seconds": round(time.monotonic() - started, 1)}))
    with (
        gateway(c.upstream, c.workdir, db=small) as few,
        gateway(c.upstream, c.workdir, db=big) as many,
    ):
        targets = {}
        for gw in (few, many):
            post(gw + "/accept/hold")
            targets[gw] = {"accept": gw + "/accept/x", "status": post(gw + "/accept/pending")}
        for what, script in (("accept", POST_1KB), ("status", None)):
            interleave(
                f"{what} p99 at {RATE}/s, 1,000,000 jobs stored (vs 1,000 stored)",
                c.pairs,
                lambda: wrk(targets[few][what], c.seconds, PACED_CONNECTIONS, script, RATE),  # noqa: B023
                lambda: wrk(targets[many][what], c.seconds, PACED_CONNECTIONS, script, RATE),  # noqa: B023
                key="p99_ms",
            )


def fill(db: Path, count: int) -> None:
    """`count` completed jobs, each with a small stored answer, as the gateway keeps them."""
    now = time.time()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    schema.create(conn)
    conn.execute("BEGIN")
    ids = [new_id(now - 86_400 + i * 86_400 / count) for i in range(count)]  # over a day
    conn.executemany(
        "INSERT INTO jobs (id, route, upstream, status, method, target, retry_on_interrupt,"
        " created_at, started_at, finished_at, attempts, expires_at, answer)"
        " VALUES (?, '/e2e', 'fast', 'completed', 'POST', '/e2e/x', 0, ?, ?, ?, 1, ?, ?)",
        ((job_id, now, now, now, now + 86_400, ANSWER) for job_id in ids),
    )
    conn.executemany(
        "INSERT INTO bodies VALUES (?, 1, 0, ?)", ((job_id, b'{"ok": true}') for job_id in ids)
    )
    conn.execute("COMMIT")
    conn.close()


def longpoll(c: Context) -> None:
    """CPU of the gateway while 10,000 clients wait on a pending job that does not end,
    against the same gateway idle; then how long the one ending takes to answer them all."""
    with gateway(c.upstream, c.workdir) as gw:
        pid = pid_listening(gw)
        post(gw + "/accept/hold")
        status_url = post(gw + "/accept/pending")
        idle = _cpu_percent(pid, c.seconds)
        row = asyncio.run(_wait_on(status_url, pid, c.seconds))
        print(json.dumps({"row": f"{WAITERS} clients long-polling", "idle_cpu_pct": idle, **row}))


async def _wait_on(status_url: str, pid: int, seconds: int) -> dict[str, float]:
    host, port = status_url.split("/")[2].split(":")
    path = "/" + status_url.split("/", 3)[3]
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nPrefer: wait=60\r\n\r\n".encode()
    gate = asyncio.Semaphore(100)  # connect a hundred at a time: the listen backlog is 128

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with gate:
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(request)
            return reader, writer  # a writer let go of closes its connection

    clients = await asyncio.gather(*(connect() for _ in range(WAITERS)))
    await asyncio.sleep(1.0)  # every request read and waiting
    rss = round(rss_kib(pid) / 1024, 1)
    waiting = await asyncio.to_thread(_cpu_percent, pid, seconds)
    ended = time.monotonic()
    await asyncio.to_thread(_cancel, status_url)
    lines = await asyncio.gather(*(reader.readline() for reader, _ in clients))
    for _, writer in clients:
        writer.close()
    return {
        "waiting_cpu_pct": waiting,
        "waiting_rss_mib": rss,
        "answered": sum(1 for line in lines if line.startswith(b"HTTP/1.1 409")),
        "all_answered_s": round(time.monotonic() - ended, 2),
    }


def _cancel(status_url: str) -> None:
    with urllib.request.urlopen(urllib.request.Request(status_url, method="DELETE"), timeout=30):
        pass


def _cpu_percent(pid: int, seconds: float) -> float:
    """The share of one core `pid` used over the next `seconds`."""
    before = _cpu_ticks(pid)
    time.sleep(seconds)
    return round(100.0 * (_cpu_ticks(pid) - before) / 100 / seconds, 2)  # 100 ticks a second


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime
