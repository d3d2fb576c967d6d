"""The HTTP fuzz run at length: random and mutated requests on raw sockets against a gateway
process, new ones each run, with the same checks as the suite's tests/test_fuzz.py.

    python benchmarks/fuzz.py [--seconds 300] [--examples 1000000] [--keep DIR]

Everything listens on 127.0.0.1 and the run stops by itself. Prints one JSON line: requests
sent, answers by status, and any failure; exits 1 on a 500 of the gateway's own, a traceback,
an error-level line or a line that is not JSON in its log, or a gateway that stopped serving.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import fuzzing  # noqa: E402
from tests.conftest import config_text  # noqa: E402
from tests.processes import GatewayProcess  # noqa: E402
from tests.rawhttp import RawUpstream  # noqa: E402

BATCH = 500


def log_problems(log: Path) -> list[str]:
    problems = []
    for line in log.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        if "Traceback" in line:
            problems.append(f"traceback: {line[:300]}")
        try:
            fields = json.loads(line)
        except ValueError:
            problems.append(f"not JSON: {line[:300]}")
            continue
        if isinstance(fields, dict) and fields.get("level") in ("error", "critical"):
            problems.append(f"error line: {line[:300]}")  # nothing a client sends is one
    return problems


async def fuzz(workdir: Path, seconds: float, examples: int) -> dict[str, object]:
    async with RawUpstream(fuzzing.UPSTREAM_ANSWER).running() as upstream:
        config = workdir / "gateway.yaml"
        server = "{max_body: 64KB, idle_timeout: 2s}"
        config.write_text(config_text(upstream.url, str(workdir / "gateway.db"), server=server))
        log = workdir / "log"
        gateway = await GatewayProcess(["serve", "--config", str(config)], log).start()
        failure = None
        try:
            report = fuzzing.Report()
            deadline = time.monotonic() + seconds
            try:
                while report.sent < examples and time.monotonic() < deadline:
                    # batches of new requests: hypothesis stops at its max_examples, not a time
                    batch = await asyncio.to_thread(
                        fuzzing.run, gateway.port, BATCH, deadline - time.monotonic(), False
                    )
                    report.sent += batch.sent
                    report.statuses.update(batch.statuses)
            except AssertionError as e:
                failure = str(e)[:2000]
            with urllib.request.urlopen(gateway.url + "/_gateway/healthz", timeout=10) as r:
                serving = r.status == 200
        finally:
            gateway.kill()
    return {
        "sent": report.sent,
        "statuses": {str(k): v for k, v in sorted(report.statuses.items(), key=str)},
        "failure": failure,
        "serving": serving,
        "log_problems": log_problems(log)[:20],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--examples", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, default=None, help="keep the log and store here")
    args = parser.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = asyncio.run(fuzz(args.keep, args.seconds, args.examples))
    else:
        with tempfile.TemporaryDirectory() as workdir:
            result = asyncio.run(fuzz(Path(workdir), args.seconds, args.examples))
    print(json.dumps(result))
    ok = result["failure"] is None and result["serving"] and not result["log_problems"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
