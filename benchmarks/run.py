"""Benchmarks: the gateway against references run in the same run, interleaved, median ratios.

    python benchmarks/run.py [--seconds 5] [--pairs 3] [--connections 64] [--only accept,...]

Needs wrk and nginx (Debian: apt-get install wrk nginx-light). Everything listens on 127.0.0.1
and every load is bounded in time. Prints one line per row: the median of the per-pair ratios,
with the raw figures of each pair.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
POST_1KB = HERE / "post_1kb.lua"
ROWS = (
    "accept",
    "poll",
    "replay",
    "proxy",
    "e2e",
    "workers",
    "memory",
    "stored",
    "longpoll",
    "baseline",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextmanager
def process(command: list[str], port: int, **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
    try:
        wait_port(port)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()


def server(kind: str) -> tuple[list[str], int]:
    port = free_port()
    return [sys.executable, str(HERE / "servers.py"), kind, str(port)], port


GATEWAY_CONFIG = """
server: {{max_body: 1GB, workers: {workers}, shutdown_grace: 1s}}
storage: {{path: {db}}}
jobs: {{max_queued: 100000000, bind_headers: []}}
upstreams:
  held: {{url: "{upstream}", max_in_flight: 1, timeout: 1h}}
  fast: {{url: "{upstream}", max_in_flight: 64}}
routes:
  - {{path: /accept, upstream: held, mode: async}}
  - {{path: /e2e, upstream: fast, mode: async}}
  - {{path: /proxy, upstream: fast, mode: proxy}}
"""


@contextmanager
def gateway(
    upstream_url: str,
    workdir: Path,
    workers: int | str = 1,
    db: Path | None = None,
    root: Path = ROOT,
) -> Iterator[str]:
    """A gateway serving GATEWAY_CONFIG, from this checkout or another one's `root`."""
    port = free_port()
    db = db or workdir / f"gateway-{port}.db"
    config = workdir / f"gateway-{port}.yaml"
    config.write_text(GATEWAY_CONFIG.format(workers=workers, db=db, upstream=upstream_url))
    command = [
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
    ]
    with process(command, port, cwd=root):
        time.sleep(0.5 if workers == 1 else 1.5)  # every worker up
        yield f"http://127.0.0.1:{port}"


@contextmanager
def floor(kind: str, argument: str) -> Iterator[tuple[str, int]]:
    """One of servers.py's floors: its URL and pid."""
    command, port = server(kind)
    with process([*command, argument], port) as proc:
        yield f"http://127.0.0.1:{port}", proc.pid


def worker_of(pid: int) -> int:
    """nginx's one worker process, the child of its master `pid`."""
    for _ in range(100):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.05)
    return pid


@contextmanager
def nginx(upstream_port: int, workdir: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
worker_processes 1; daemon off; pid {workdir}/nginx.pid; error_log {workdir}/nginx.err;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  upstream up {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{ proxy_pass http://up; proxy_http_version 1.1;
                 proxy_set_header Connection ""; }}
  }}
}}
""")
    with process(["nginx", "-c", str(conf), "-p", str(workdir)], port) as proc:
        yield f"http://127.0.0.1:{port}", worker_of(proc.pid)


def wrk(
    url: str,
    seconds: int,
    connections: int,
    script: Path | None = None,
    rate: int | None = None,
    pid: int | None = None,
) -> dict[str, float]:
    """wrk's figures: closed loop (each connection sends as soon as it has its answer), or
    paced to about `rate` requests a second in all (each connection waits about
    connections/rate seconds between requests: a fixed, moderate load, not saturation).

    Also where the time went: `busy_cores`, the machine's busy CPU in cores (wrk included), and
    with `pid`, `cpu_us`, that server's CPU time per request (user and system, all threads)."""
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url]
    if rate is not None:
        script = paced(script, connections * 1000.0 / rate)
    if script is not None:
        command[1:1] = ["-s", str(script)]
    machine, spent = machine_ticks(), cpu_ticks(pid) if pid else 0
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60).stdout
    finally:
        if rate is not None and script is not None:
            script.unlink()
    busy, total = (after - before for after, before in zip(machine_ticks(), machine, strict=True))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)\b", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    figures = {
        "rps": rps,
        "p50_ms": float(p50.group(1)) * scale[p50.group(2)] if p50 else 0.0,
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else 0.0,
        "non_2xx": float(errors.group(1)) if errors else 0.0,
        "busy_cores": round(busy / total * (os.cpu_count() or 1), 2) if total else 0.0,
    }
    if pid:
        figures["cpu_us"] = round((cpu_ticks(pid) - spent) / TICKS * 1e6 / max(requests, 1), 1)
    return figures


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int:
    """User and system time of a process, all its threads, in clock ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def machine_ticks() -> tuple[int, int]:
    """Busy and total CPU time of the whole machine, in clock ticks (time stolen by the
    hypervisor is neither)."""
    user, nice, system, idle, iowait, irq, softirq = map(
        int, Path("/proc/stat").read_text().split()[1:8]
    )
    busy = user + nice + system + irq + softirq
    return busy, busy + idle + iowait


def paced(script: Path | None, interval_ms: float) -> Path:
    """`script` (or none) with wrk's delay() hook: each connection waits `interval_ms` on
    average, drawn at random between half and one and a half of it, so that connections do not
    march in step and arrive as bursts."""
    text = script.read_text() if script is not None else ""
    fd, name = tempfile.mkstemp(suffix=".lua")
    with os.fdopen(fd, "w") as out:
        out.write(
            f"{text}\nfunction delay()\n  return {interval_ms:.3f} * (0.5 + math.random())\nend\n"
        )
    return Path(name)


def post(url: str, body: bytes = b"x") -> str:
    request = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(response.headers["Location"])


def wait_done(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=30) as response:
            if response.headers["X-Gateway-Job-Status"] == "completed":
                return
        time.sleep(0.05)
    raise RuntimeError("job did not complete")


def ended(gateway_url: str, route: str) -> float:
    sample = rf'gateway_jobs_ended_total{{outcome="completed",route="{route}"}} ([\d.e+]+)'
    match = re.search(sample, scrape(gateway_url))
    return float(match.group(1)) if match else 0.0


def scrape(gateway_url: str) -> str:
    with urllib.request.urlopen(gateway_url + "/_gateway/metrics", timeout=30) as response:
        return str(response.read().decode())


def commits(gateway_url: str) -> dict[str, float]:
    """The gateway's own count of its write transactions so far: cumulative buckets of
    gateway_storage_commit_seconds by upper bound, and the operations they grouped."""
    text = scrape(gateway_url)
    figures = {
        bound: float(count)
        for bound, count in re.findall(
            r'gateway_storage_commit_seconds_bucket\{le="([^"]+)"\} ([\d.e+]+)', text
        )
    }
    operations = re.search(r"gateway_storage_operations_total ([\d.e+]+)", text)
    figures["operations"] = float(operations.group(1)) if operations else 0.0
    return figures


def commit_p99(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """The p99 of the transactions between two `commits()` readings (interpolated within its
    bucket, as Prometheus' histogram_quantile does), and how many writes each grouped."""
    bounds = sorted((float(b), after[b] - before.get(b, 0.0)) for b in after if b[0].isdigit())
    count = after["+Inf"] - before.get("+Inf", 0.0)
    if not count:
        return {}
    rank, lower, below = 0.99 * count, 0.0, 0.0
    p99 = bounds[-1][0]
    for bound, cumulative in bounds:
        if cumulative >= rank:
            share = (rank - below) / (cumulative - below) if cumulative > below else 1.0
            p99 = lower + (bound - lower) * share
            break
        lower, below = bound, cumulative
    operations = after["operations"] - before.get("operations", 0.0)
    return {
        "commit_p99_ms": round(p99 * 1000, 2),
        "writes_per_commit": round(operations / count, 1),
    }


Measure = Callable[[], dict[str, float]]


def interleave(
    name: str,
    pairs: int,
    reference: Measure,
    gateway: Measure,
    key: str = "rps",
    floor: Measure | None = None,
) -> dict[str, object]:
    """Measure reference, floor (if any) and gateway `pairs` times, turning who goes first;
    the median of the per-pair ratios to each, and each one's median CPU per request."""
    measures = {"reference": reference, "gateway": gateway}
    if floor is not None:
        measures["floor"] = floor
    order = list(measures)
    raw: list[dict[str, dict[str, float]]] = []
    for i in range(pairs):
        turn = order[i % len(order) :] + order[: i % len(order)]
        raw.append({who: measures[who]() for who in turn})
    row: dict[str, object] = {"row": name, "metric": key}
    row["median_ratio"] = _median_ratio(raw, key, "reference")
    if floor is not None:
        row["floor_ratio"] = _median_ratio(raw, key, "floor")
    row["cpu_us"] = {
        who: statistics.median(p[who]["cpu_us"] for p in raw)
        for who in order
        if all("cpu_us" in p[who] for p in raw)
    }
    row["pairs"] = raw
    print(json.dumps(row), flush=True)
    return row


def _median_ratio(raw: list[dict[str, dict[str, float]]], key: str, to: str) -> float:
    ratios = [p["gateway"][key] / p[to][key] if p[to][key] else 0.0 for p in raw]
    return round(statistics.median(ratios), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--only", default=",".join(r for r in ROWS if r != "baseline"))
    parser.add_argument(
        "--baseline", type=Path, help="another checkout, for the `baseline` row (this vs that)"
    )
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: apt-get install wrk nginx-light")
    rows = set(args.only.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        run_rows(rows, args, Path(tmp))


def run_rows(rows: set[str], args: argparse.Namespace, workdir: Path) -> None:
    from benchmarks import rows as suite
    from benchmarks import scale

    up_command, up_port = server("upstream")
    noop_command, noop_port = server("noop")
    with process(up_command, up_port), process(noop_command, noop_port) as noop:
        context = suite.Context(
            args.seconds,
            args.connections,
            args.pairs,
            workdir,
            f"http://127.0.0.1:{up_port}",
            f"http://127.0.0.1:{noop_port}",
            up_port,
            noop.pid,
            args.baseline,
        )
        for name in ROWS:
            if name in rows:
                getattr(scale if name in ("stored", "longpoll") else suite, name)(context)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)
    main()
