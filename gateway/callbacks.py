"""Signed callbacks (Standard Webhooks) told when a job ends, delivered from storage.

What is owed is written in the transaction that ends the job, so it survives any restart; a
delivery that fails is tried again with backoff under the same `webhook-id`, and never changes
the job's result.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from standardwebhooks.webhooks import Webhook
from yarl import URL

from gateway import jobs
from gateway.config import Config, Retry
from gateway.endings import Endings, until
from gateway.errors import StorageError
from gateway.jobs import Callback
from gateway.metrics import Metrics
from gateway.store import Store

log = logging.getLogger("gateway.callbacks")
MAX_ATTEMPTS = 8
TIMEOUT = 10.0  # one delivery
HOLD = 60.0  # a delivery under way is held this long; a process dying mid-way leaves it due
IDLE_POLL = 5.0  # how often an idle deliverer looks for callbacks owed by other processes
CONCURRENCY = 16
BACKOFF = Retry(attempts=MAX_ATTEMPTS, backoff=2.0, max_backoff=300.0)


def well_formed(url: str) -> bool:
    """Whether `url` is an absolute http(s) URL with a host and a port from 1 to 65535, in
    printable ASCII: what both urllib and the delivering client (yarl) read alike."""
    if not url.isascii() or any(c <= " " or c == "\x7f" for c in url):
        return False
    try:
        parts = urlsplit(url)
        port = parts.port
        URL(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and port != 0


def allowed(url: str, allow_hosts: tuple[str, ...]) -> bool:
    """Whether a client may name `url` in X-Callback-Url: http(s), to a listed host[:port]."""
    if not well_formed(url):
        return False
    parts = urlsplit(url)
    assert parts.hostname is not None
    host = parts.hostname.lower()
    names = {host, f"{host}:{parts.port}"} if parts.port else {host}
    return any(entry.lower() in names for entry in allow_hosts)


class Deliverer:
    def __init__(
        self,
        config: Config,
        store: Store,
        session: aiohttp.ClientSession,
        endings: Endings,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._metrics = metrics
        self._store = store
        self._session = session
        self._wake = asyncio.Event()
        endings.subscribe(self._wake.set)
        self._clock = clock
        secret = config.callbacks.secret
        self._signer = Webhook(str(secret)) if secret else None
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._rng = random.Random()

    def start(self) -> None:
        self._own(asyncio.create_task(self._run(), name="callbacks"))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _own(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        while True:
            await self._slots.acquire()
            now = self._clock()
            try:
                owed = await self._store.due_callback(now, now + HOLD)
            except StorageError:
                owed = None
            if owed is None:
                self._slots.release()
                await until(self._wake, IDLE_POLL)
                self._wake.clear()
                continue
            task = asyncio.create_task(self._deliver(owed), name=f"callback:{owed.webhook_id}")
            task.add_done_callback(lambda _: self._slots.release())
            self._own(task)

    async def _deliver(self, owed: Callback) -> None:
        try:
            job = await self._store.get(owed.job_id, self._clock())
            if job is None:  # forgotten or expired: nothing left to tell
                await self._store.callback_done(owed.webhook_id)
                return
            status = await self._post(owed, json.dumps(jobs.summary(job)))
            await self._settle(owed, status)
        except StorageError as e:
            log.error(
                "callback not recorded",
                extra={
                    "event": "callback_unrecorded",
                    "webhook_id": owed.webhook_id,
                    "error": str(e),
                },
            )

    async def _post(self, owed: Callback, payload: str) -> int | None:
        now = self._clock()
        headers = {
            "Content-Type": "application/json",
            "webhook-id": owed.webhook_id,
            "webhook-timestamp": str(int(now)),
            "webhook-attempt": str(owed.attempts),
        }
        if self._signer is not None:
            stamp = datetime.fromtimestamp(int(now), UTC)
            headers["webhook-signature"] = self._signer.sign(owed.webhook_id, stamp, payload)
        try:
            async with self._session.post(
                owed.url,
                data=payload.encode(),
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=TIMEOUT),
            ) as response:
                return response.status
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None

    async def _settle(self, owed: Callback, status: int | None) -> None:
        fields = {
            "webhook_id": owed.webhook_id,
            "job_id": owed.job_id,
            "attempt": owed.attempts,
            "status": status,
        }
        if status is not None and 200 <= status < 300:
            await self._store.callback_done(owed.webhook_id)
            self._metrics.callbacks.labels("delivered").inc()
            log.info("callback delivered", extra={"event": "callback_delivered", **fields})
        elif owed.attempts >= MAX_ATTEMPTS:
            await self._store.callback_done(owed.webhook_id)
            self._metrics.callbacks.labels("given_up").inc()
            log.warning("callback given up", extra={"event": "callback_given_up", **fields})
        else:
            delay = jobs.backoff(owed.attempts, BACKOFF, self._rng)
            await self._store.callback_later(owed.webhook_id, self._clock() + delay)
            asyncio.get_running_loop().call_later(delay, self._wake.set)
            self._metrics.callbacks.labels("failed").inc()
            log.info("callback retry", extra={"event": "callback_retry", "delay": delay, **fields})
