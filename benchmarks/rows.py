"""One function per benchmark row; each starts what it needs and prints its line."""

from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from benchmarks.run import (
    POST_1KB,
    ROOT,
    TICKS,
    commit_p99,
    commits,
    cpu_ticks,
    ended,
    floor,
    gateway,
    interleave,
    nginx,
    post,
    wait_done,
    wrk,
)
from gateway.units import cores

MIB = 1024 * 1024
RATE = 1000  # a moderate fixed load: about a fifth of what the gateway accepts at saturation
PACED_CONNECTIONS = 32


@dataclass
class Context:
    seconds: int
    connections: int
    pairs: int
    workdir: Path
    upstream: str
    noop: str
    upstream_port: int
    noop_pid: int
    baseline: Path | None = None


def accept(c: Context) -> None:
    floor_db = str(c.workdir / "accept-floor.db")
    with gateway(c.upstream, c.workdir) as gw, floor("accept-floor", floor_db) as (fl, fl_pid):
        pid = pid_listening(gw)
        post(gw + "/accept/hold")  # holds the upstream's one slot: the rest stay queued
        interleave(
            "durable accept, 1 KB POST -> 202 (vs no-op 202; floor: aiohttp + synced group commit)",
            c.pairs,
            lambda: wrk(c.noop + "/accept", c.seconds, c.connections, POST_1KB, pid=c.noop_pid),
            lambda: wrk(gw + "/accept/x", c.seconds, c.connections, POST_1KB, pid=pid),
            floor=lambda: wrk(fl + "/accept", c.seconds, c.connections, POST_1KB, pid=fl_pid),
        )

        def paced() -> dict[str, float]:  # with what the disk's commits took meanwhile
            before = commits(gw)
            figures = wrk(gw + "/accept/x", c.seconds, PACED_CONNECTIONS, POST_1KB, RATE, pid)
            return figures | commit_p99(before, commits(gw))

        interleave(
            f"durable accept p99 at {RATE}/s (vs no-op's; floor's)",
            c.pairs,
            lambda: wrk(
                c.noop + "/accept", c.seconds, PACED_CONNECTIONS, POST_1KB, RATE, c.noop_pid
            ),
            paced,
            key="p99_ms",
            floor=lambda: wrk(fl + "/accept", c.seconds, PACED_CONNECTIONS, POST_1KB, RATE, fl_pid),
        )


def poll(c: Context) -> None:
    with gateway(c.upstream, c.workdir) as gw:
        post(gw + "/accept/hold")  # holds the upstream's one slot: the next job stays queued
        status_url = post(gw + "/accept/pending")  # stays queued behind it
        _status("status poll of a pending job (vs no-op)", c, gw, status_url)


def replay(c: Context) -> None:
    with gateway(c.upstream, c.workdir) as gw:
        status_url = post(gw + "/e2e/small")
        wait_done(status_url)
        _status("replay of a completed job, small body (vs no-op)", c, gw, status_url)


def _status(name: str, c: Context, gw: str, status_url: str) -> None:
    pid = pid_listening(gw)
    interleave(
        name,
        c.pairs,
        lambda: wrk(c.noop + "/status", c.seconds, c.connections, pid=c.noop_pid),
        lambda: wrk(status_url, c.seconds, c.connections, pid=pid),
    )


def proxy(c: Context) -> None:
    with (
        gateway(c.upstream, c.workdir) as gw,
        nginx(c.upstream_port, c.workdir) as (ng, ng_pid),
        floor("proxy-floor", c.upstream) as (fl, fl_pid),
    ):
        pid = pid_listening(gw)
        interleave(
            "proxy route pass-through (vs nginx, 1 worker; floor: aiohttp server + client)",
            c.pairs,
            lambda: wrk(ng + "/proxy/fast", c.seconds, c.connections, pid=ng_pid),
            lambda: wrk(gw + "/proxy/fast", c.seconds, c.connections, pid=pid),
            floor=lambda: wrk(fl + "/proxy/fast", c.seconds, c.connections, pid=fl_pid),
        )
        interleave(
            f"proxy route p99 at {RATE}/s (vs nginx's; floor's)",
            c.pairs,
            lambda: wrk(ng + "/proxy/fast", c.seconds, PACED_CONNECTIONS, rate=RATE, pid=ng_pid),
            lambda: wrk(gw + "/proxy/fast", c.seconds, PACED_CONNECTIONS, rate=RATE, pid=pid),
            key="p99_ms",
            floor=lambda: wrk(
                fl + "/proxy/fast", c.seconds, PACED_CONNECTIONS, rate=RATE, pid=fl_pid
            ),
        )


def jobs_per_second(c: Context, root: Path = ROOT) -> dict[str, float]:
    """A fresh gateway's jobs completed a second, POSTed for the run's length, and its CPU
    per job."""
    with gateway(c.upstream, c.workdir, root=root) as gw:
        pid = pid_listening(gw)
        started, spent = time.monotonic(), cpu_ticks(pid)
        load = wrk(gw + "/e2e/x", c.seconds, c.connections, POST_1KB)
        accepted = load["rps"] * c.seconds
        while ended(gw, "/e2e") < accepted * 0.999 and time.monotonic() - started < 300:
            time.sleep(0.2)
        done = ended(gw, "/e2e")
        return {
            "rps": done / (time.monotonic() - started),
            "accepted": accepted,
            "job_cpu_us": round((cpu_ticks(pid) - spent) / TICKS * 1e6 / max(done, 1), 1),
        }


def e2e(c: Context) -> None:
    interleave(
        "end to end: accept, forward, store, completed (jobs/s vs no-op 202s/s)",
        c.pairs,
        lambda: wrk(c.noop + "/e2e", c.seconds, c.connections, POST_1KB, pid=c.noop_pid),
        lambda: jobs_per_second(c),
    )


def baseline(c: Context) -> None:
    """This checkout against another (`--baseline DIR`), side by side: CPU per durable accept,
    per proxied request and per job end to end, as ratios of this code's to that code's."""
    if c.baseline is None:
        print(json.dumps({"row": "baseline", "skipped": "no --baseline DIR"}), flush=True)
        return
    old_root = c.baseline
    with (
        gateway(c.upstream, c.workdir, root=old_root) as old,
        gateway(c.upstream, c.workdir) as new,
    ):
        old_pid, new_pid = pid_listening(old), pid_listening(new)
        post(old + "/accept/hold")  # holds the upstream's one slot: the rest stay queued
        post(new + "/accept/hold")
        interleave(
            "durable accept CPU per request, this code (vs the baseline's)",
            c.pairs,
            lambda: wrk(old + "/accept/x", c.seconds, c.connections, POST_1KB, pid=old_pid),
            lambda: wrk(new + "/accept/x", c.seconds, c.connections, POST_1KB, pid=new_pid),
            key="cpu_us",
        )
        interleave(
            "proxy CPU per request, this code (vs the baseline's)",
            c.pairs,
            lambda: wrk(old + "/proxy/fast", c.seconds, c.connections, pid=old_pid),
            lambda: wrk(new + "/proxy/fast", c.seconds, c.connections, pid=new_pid),
            key="cpu_us",
        )
    interleave(
        "end to end CPU per job, this code (vs the baseline's)",
        c.pairs,
        lambda: jobs_per_second(c, old_root),
        lambda: jobs_per_second(c),
        key="job_cpu_us",
    )


def workers(c: Context) -> None:
    with (
        gateway(c.upstream, c.workdir, workers=1) as one,
        gateway(c.upstream, c.workdir, workers="auto") as every,
    ):
        post(one + "/accept/hold")
        post(every + "/accept/hold")
        interleave(
            f"durable accept, workers: auto ({cores()} here) (vs workers: 1)",
            c.pairs,
            lambda: wrk(one + "/accept/x", c.seconds, c.connections, POST_1KB),
            lambda: wrk(every + "/accept/x", c.seconds, c.connections, POST_1KB),
        )


def memory(c: Context) -> None:
    """Four concurrent replays of a 200 MiB body: the gateway's RSS growth over idle."""
    size = 200 * MIB
    with gateway(c.upstream, c.workdir) as gw:
        pid = pid_listening(gw)
        urls = [post(f"{gw}/e2e/big?bytes={size}") for _ in range(4)]
        for url in urls:
            wait_done(url, timeout=600)
        idle = rss_kib(pid)
        peak = [idle]
        threads = [threading.Thread(target=_drain, args=(url,)) for url in urls]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            peak.append(rss_kib(pid))
            time.sleep(0.05)
        growth = (max(peak) - idle) / 1024
        print(
            json.dumps(
                {
                    "row": "replay of a 200 MiB body, 4 at once",
                    "idle_rss_mib": round(idle / 1024, 1),
                    "growth_mib": round(growth, 1),
                    "median_sampled_mib": round(statistics.median(peak) / 1024, 1),
                }
            ),
            flush=True,
        )


def _drain(url: str) -> None:
    with urllib.request.urlopen(url, timeout=600) as response:
        while response.read(MIB):
            pass


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pid_listening(url: str) -> int:
    """The gateway process (a child of the harness) that listens at `url`'s port."""
    import subprocess

    out = subprocess.run(
        ["ss", "-ltnpH", f"sport = :{url.rsplit(':', 1)[1]}"], capture_output=True, text=True
    ).stdout
    return int(out.split("pid=")[1].split(",")[0])
