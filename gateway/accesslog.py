"""The access log: one JSON line per request, written in batches.

A line is formatted when its request ends and written with the others at most FLUSH_S later,
as nginx's `access_log ... flush=` does: a line costs a few microseconds instead of a pass
through `logging` and a write of its own. What is left is written when the server stops; a
kill -9 loses at most the last FLUSH_S of access lines, never a job. The line has the fields
and shape of every other log line (`cli.JsonFormatter`).

Workers share one stderr, often a pipe, and a pipe keeps a write whole only up to PIPE_BUF
bytes: a batch is written in runs of whole lines no longer than that, so two workers' lines
never cut into each other.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import time
from typing import TextIO

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from gateway import encoding
from gateway.jobs import utc_second

FLUSH_S = 0.05
MAX_LINES = 1024
LOGGER = "gateway.access"


class AccessLines:
    """Access lines waiting to be written to one stream."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._lines: list[str] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tail = f'Z","level":"info","logger":"{LOGGER}","pid":{os.getpid()},'

    def add(self, method: str, path: str, status: int, duration_s: float, remote: str) -> None:
        now = time.time()
        second = int(now)
        quoted = encoding.dumps_text
        self._lines.append(
            f'{{"ts":"{utc_second(second)}.{int((now - second) * 1000):03d}{self._tail}'
            f'"message":"request","event":"access","method":{quoted(method)},'
            f'"path":{quoted(path)},"status":{status},'
            f'"duration_ms":{round(duration_s * 1000, 2)},"remote":{quoted(remote)}}}'
        )
        if len(self._lines) >= MAX_LINES:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_S, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        runs = whole_runs(self._lines)
        self._lines.clear()
        try:
            for run in runs:
                self._stream.write(run)
                self._stream.flush()
        except (OSError, ValueError):  # a full disk or a closed pipe costs log lines, not requests
            pass


def whole_runs(lines: list[str], limit: int = select.PIPE_BUF) -> list[str]:
    """`lines`, newline-ended, joined into runs of at most `limit` bytes (a longer line alone)."""
    runs: list[str] = []
    run: list[str] = []
    size = 0
    for line in lines:
        length = len(line.encode()) + 1
        if run and size + length > limit:
            runs.append("".join(run))
            run, size = [], 0
        run.append(line + "\n")
        size += length
    if run:
        runs.append("".join(run))
    return runs


def logger_class(lines: AccessLines) -> type[AbstractAccessLogger]:
    """The class aiohttp instantiates for each connection, writing to `lines`."""
    enabled = logging.getLogger(LOGGER).isEnabledFor(logging.INFO)

    class AccessLog(AbstractAccessLogger):
        """Method, path, status, duration and peer; never a header value."""

        @property
        def enabled(self) -> bool:
            return enabled

        def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
            lines.add(request.method, request.path, response.status, time, request.remote or "")

    return AccessLog
