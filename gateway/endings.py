"""Wakes clients waiting for a job to end (Prefer: wait), with no polling of storage.

A waiter registers before it reads the job's state, so an end that lands between the read and
the wait is never missed. Jobs ended by another process wake a waiter here only if the store
hears of it (`Store.on_end`: PostgreSQL does); otherwise the waiter answers when its wait runs
out, with the state it then reads.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

_NEVER = asyncio.Event()  # never set: what a request that does not wait is given


class Endings:
    def __init__(self) -> None:
        self._events: dict[str, tuple[asyncio.Event, int]] = {}
        self._listeners: list[Callable[[], None]] = []

    @contextlib.asynccontextmanager
    async def watch(self, job_id: str) -> AsyncIterator[asyncio.Event]:
        event, count = self._events.get(job_id, (asyncio.Event(), 0))
        self._events[job_id] = (event, count + 1)
        try:
            yield event
        finally:
            event, count = self._events[job_id]
            if count == 1:
                del self._events[job_id]
            else:
                self._events[job_id] = (event, count - 1)

    def watch_if(
        self, job_id: str, wait: float
    ) -> contextlib.AbstractAsyncContextManager[asyncio.Event]:
        """`watch`, for a request that will wait for its job's end; one that will not (most
        202s) skips the registration and gets an event that never fires."""
        if wait > 0:
            return self.watch(job_id)
        return contextlib.nullcontext(_NEVER)

    def subscribe(self, listener: Callable[[], None]) -> None:
        """Call `listener` at every end, waited for or not."""
        self._listeners.append(listener)

    def ended(self, job_id: str) -> None:
        for listener in self._listeners:
            listener()
        if job_id in self._events:
            self._events[job_id][0].set()

    def watched(self) -> list[str]:
        """The jobs a client here waits on."""
        return list(self._events)

    @property
    def waiting(self) -> int:
        return sum(count for _, count in self._events.values())


async def until(event: asyncio.Event, timeout: float) -> bool:
    """Wait for `event` at most `timeout` seconds; whether it fired."""
    if timeout <= 0:
        return event.is_set()
    # Not wait_for: on Python 3.11 it can swallow a cancel that lands as the event fires.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()
    return event.is_set()
