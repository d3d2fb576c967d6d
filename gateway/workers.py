"""`server.workers` above 1: worker processes sharing the port (SO_REUSEPORT) and the store.

The parent serves nothing itself: it starts the workers, forwards SIGTERM and SIGINT so each
drains, restarts a worker that dies unexpectedly, and exits 0 once all have drained. Workers
never run one job twice: every claim in the shared store is a compare-and-set.

A worker whose parent is gone (killed with -9, say) drains and exits as on SIGTERM, as
gunicorn's workers do, so no orphan keeps serving on the port with the old configuration.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

log = logging.getLogger("gateway.workers")
RESTART_DELAY = 1.0
PARENT_ENV = "GATEWAY_SUPERVISOR"  # the supervisor's pid, as its workers were started with
PARENT_CHECK_S = 0.5
SIGNALS = {signal.SIGTERM, signal.SIGINT}


class Supervisor:
    def __init__(self, command: Sequence[str], count: int) -> None:
        self._command = list(command)
        self._count = count
        self._stopping = False
        self._workers: list[subprocess.Popen[bytes]] = []

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        self._workers = [self._spawn() for _ in range(self._count)]
        while not self._stopping:
            for i, worker in enumerate(self._workers):
                if worker.poll() is not None and not self._stopping:
                    log.error(
                        "worker died",
                        extra={
                            "event": "worker_died",
                            "pid": worker.pid,
                            "code": worker.returncode,
                        },
                    )
                    time.sleep(RESTART_DELAY)
                    self._workers[i] = self._spawn()
            time.sleep(0.2)
        codes = [worker.wait() for worker in self._workers]
        log.info("workers stopped", extra={"event": "workers_stopped", "codes": codes})
        return 0 if all(code == 0 for code in codes) else 1

    def _spawn(self) -> subprocess.Popen[bytes]:
        # A worker starts with SIGTERM and SIGINT held (the mask survives exec), so one sent
        # while it is still starting waits for its handlers instead of killing it: it drains.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            env = {**os.environ, PARENT_ENV: str(os.getpid())}
            worker = subprocess.Popen(self._command, env=env)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        log.info("worker started", extra={"event": "worker_started", "pid": worker.pid})
        return worker

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True
        for worker in self._workers:
            if worker.poll() is None:
                worker.send_signal(signum)


def worker_command(config_path: str, host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--config",
        config_path,
        "--host",
        host,
        "--port",
        str(port),
        "--worker",
    ]


def release_signals() -> None:
    """Let in the SIGTERM and SIGINT a worker was started holding, once its handlers are set;
    one that came meanwhile is handled now."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


async def until_orphaned() -> None:
    """Return once this worker's supervisor has gone; never, if it was not started by one."""
    parent = os.environ.get(PARENT_ENV)
    if parent is None:
        await asyncio.Event().wait()
        return
    while os.getppid() == int(parent):
        await asyncio.sleep(PARENT_CHECK_S)
    log.error("supervisor gone", extra={"event": "supervisor_gone", "parent": int(parent)})
