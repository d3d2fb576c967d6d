"""Live figures over Server-Sent Events: one snapshot task per process while anyone watches.

The task reads the overview once a tick, and each watched job once, whatever the number of
viewers; it ends when the last viewer leaves. On drain every stream gets `event: bye` and ends,
so a watching browser never holds up a shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from gateway import encoding

log = logging.getLogger("gateway.console")
TICK = 1.0
KEEPALIVE = 15.0  # a comment line this often on a quiet stream, which finds viewers gone
BYE: dict[str, Any] = {}  # the one item that ends a stream
Snapshot = Callable[[set[str]], Awaitable[tuple[dict[str, str], dict[str, dict[str, str]]]]]


class Hub:
    """Watchers and the one task that feeds them. `snapshot(job ids)` returns the overview's
    live figures and those of each watched job that still exists."""

    def __init__(self, snapshot: Snapshot, tick: float = TICK) -> None:
        self._snapshot = snapshot
        self._tick = tick
        self._watchers: dict[asyncio.Queue[dict[str, Any]], str | None] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self.snapshots = 0  # how many the task took: tests count them

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str | None) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1)
        if self._closing:
            queue.put_nowait(BYE)
        self._watchers[queue] = job_id
        if not self.running and not self._closing:
            self._task = asyncio.create_task(self._run(), name="console-snapshots")
        else:
            self._wake.set()  # a new viewer sees figures at once
        try:
            yield queue
        finally:
            del self._watchers[queue]
            if not self._watchers:
                self._wake.set()

    async def _run(self) -> None:
        while self._watchers and not self._closing:
            try:
                await self._publish()
            except Exception as e:  # storage trouble: the next tick tries again; viewers wait
                extra = {"event": "console_snapshot_failed", "error": str(e) or repr(e)}
                log.warning("console_snapshot_failed", extra=extra)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._tick)

    async def _publish(self) -> None:
        watched = {job_id for job_id in self._watchers.values() if job_id is not None}
        figures, jobs = await self._snapshot(watched)
        self.snapshots += 1
        for queue, job_id in list(self._watchers.items()):
            shown = dict(figures)
            if job_id is not None:
                shown.update(jobs.get(job_id, {"job.status": "gone"}))
            _replace(queue, shown)

    async def bye(self) -> None:
        """Tell every stream to end, and stop the task."""
        self._closing = True
        for queue in self._watchers:
            _replace(queue, BYE)
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


def _replace(queue: asyncio.Queue[dict[str, Any]], item: dict[str, Any]) -> None:
    """Only the latest figures matter: a slow viewer skips the ones it did not read."""
    with contextlib.suppress(asyncio.QueueEmpty):
        queue.get_nowait()
    queue.put_nowait(item)


async def _next(queue: asyncio.Queue[dict[str, Any]]) -> dict[str, Any] | None:
    try:
        return await asyncio.wait_for(queue.get(), KEEPALIVE)
    except TimeoutError:
        return None


async def stream(request: web.Request, hub: Hub, job_id: str | None) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    try:
        await response.write(b"retry: 3000\n\n")
        async with hub.watch(job_id) as queue:
            while (item := await _next(queue)) is not BYE:
                if item is None:
                    await response.write(b": keepalive\n\n")
                    continue
                await response.write(b"event: snapshot\ndata: " + encoding.dumps(item) + b"\n\n")
            await response.write(b"event: bye\ndata: {}\n\n")
    except ConnectionResetError:  # the viewer left
        return response
    await response.write_eof()
    return response
