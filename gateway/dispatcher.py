"""Bounded background execution per upstream: claims, tries, retries, drain.

The dispatcher owns every task it starts, bounds each upstream to `max_in_flight`, takes jobs in
order of arrival, and ends every job it claims in a recorded state, even on an unexpected error;
its leases are kept by `leases.Housekeeping`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

from gateway import jobs
from gateway.config import Config, Retry, Upstream
from gateway.endings import Endings, until
from gateway.errors import StorageError
from gateway.headers import JOB_ID
from gateway.jobs import Again, Complete, Decision, Fail, Failure, Job
from gateway.leases import LEASE, Housekeeping, new_owner
from gateway.metrics import Metrics
from gateway.store import Part, Store
from gateway.upstream import Pool, UpstreamFailed, exchange

log = logging.getLogger("gateway.dispatcher")
POLL = 1.0  # how often an idle lane looks for work queued by other processes
BACKLOG_TTL = 0.25  # how stale the count behind max_queued may be
CLAIM_BATCH = 64  # at most this many jobs claimed in one transaction


class Dispatcher:
    def __init__(
        self,
        config: Config,
        store: Store,
        pool: Pool,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        lease: float = LEASE,
    ) -> None:
        self._config = config
        self._metrics = metrics
        self._store = store
        self._pool = pool
        self._clock = clock
        self._lease = lease
        self._rng = random.Random()
        self.owner = new_owner()
        self._wake = {name: asyncio.Event() for name in config.upstreams}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._calls: dict[str, asyncio.Task[Any]] = {}
        self.housekeeping = Housekeeping(
            store,
            self.owner,
            lease,
            config.jobs.retention,
            clock,
            self._calls.keys,
            self._interrupted,
        )
        self._claiming = True
        self._backlog, self._backlog_at = 0, -BACKLOG_TTL
        self.endings = Endings()

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        for upstream in self._config.upstreams.values():
            self._spawn(self._lane(upstream), f"lane:{upstream.name}")
        self._spawn(self.housekeeping.run(), "housekeeping")

    def notify(self, upstream: str) -> None:
        """A job for `upstream` was just stored."""
        self._backlog += 1
        self._wake[upstream].set()

    async def backlog(self) -> int:
        """Jobs waiting, for backpressure: read from storage at most every BACKLOG_TTL and
        kept up by this process's accepts and claims in between, so an accept rarely pays
        for the read."""
        clock = time.monotonic()
        if clock - self._backlog_at >= BACKLOG_TTL:
            self._backlog_at = clock  # one count at a time: the others use the last figure
            self._backlog = await self._store.queued(self._config.jobs.max_queued)
        return self._backlog

    def abort(self, job_id: str) -> None:
        """Cut off the call of a job canceled by a client, if this process is making it."""
        task = self._calls.get(job_id)
        if task is not None:
            task.cancel()
        self.endings.ended(job_id)

    @property
    def in_flight(self) -> int:
        return len(self._calls)

    async def drain(self, grace: float) -> None:
        """Start no new call, give those in flight `grace` seconds, then settle the rest."""
        self._claiming = False
        for event in self._wake.values():
            event.set()
        calls = set(self._calls.values())
        if calls:
            await asyncio.wait(calls, timeout=grace)
        for task in calls:
            task.cancel()
        await asyncio.gather(*calls, return_exceptions=True)

    async def stop(self) -> None:
        await self.drain(0)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- claiming ----------------------------------------------------------------

    async def _lane(self, upstream: Upstream) -> None:
        slots = asyncio.Semaphore(upstream.max_in_flight)
        wake = self._wake[upstream.name]
        while True:
            await slots.acquire()
            free = 1
            while free < CLAIM_BATCH and not slots.locked():  # take every free slot at once
                await slots.acquire()
                free += 1
            wake.clear()
            taken = await self._claim(upstream, free) if self._claiming else []
            for _ in range(free - len(taken)):
                slots.release()
            if not taken:
                await until(wake, POLL)
                continue
            for job in taken:
                task = self._spawn(self._run(upstream, job), f"job:{job.id}")
                self._calls[job.id] = task
                task.add_done_callback(functools.partial(self._release, job.id, slots, wake))

    def _release(
        self, job_id: str, slots: asyncio.Semaphore, wake: asyncio.Event, _: object
    ) -> None:
        """A call is over: its slot is free, here and in the upstream's cap across processes."""
        self._calls.pop(job_id, None)
        slots.release()
        wake.set()

    async def _claim(self, upstream: Upstream, limit: int) -> list[Job]:
        now = self._clock()
        try:
            taken = await self._store.claim_many(
                upstream.name, self.owner, now, now + self._lease, limit, upstream.max_in_flight
            )
            self._backlog -= len(taken)
            return taken
        except StorageError as e:
            log.error("claim failed", extra={"event": "claim_failed", "error": str(e)})
            return []

    # -- one job -----------------------------------------------------------------

    async def _run(self, upstream: Upstream, job: Job) -> None:
        try:
            await self._try(upstream, job)
        except asyncio.CancelledError:
            await self._interrupted(job)
            raise
        except StorageError as e:
            # Nothing can be recorded now; the lease lapses and recovery settles the job.
            log.error(
                "job not recorded",
                extra={"event": "job_unrecorded", "job_id": job.id, "error": str(e)},
            )
        except Exception as e:
            log.exception("job crashed", extra={"event": "job_crashed", "job_id": job.id})
            failure = Failure("internal", f"the gateway failed: {type(e).__name__}", sent=True)
            with contextlib.suppress(StorageError):
                await self._end(job, Fail(failure))

    async def _try(self, upstream: Upstream, job: Job) -> None:
        started = self._clock()
        in_flight = self._metrics.in_flight.labels(upstream.name)
        in_flight.inc()
        try:
            decision = await self._exchange(upstream, job, started)
        finally:
            in_flight.dec()
            latency = self._metrics.upstream_latency.labels(upstream.name)
            latency.observe(self._clock() - started)
        if decision is not None:
            await self._end(job, decision)

    async def _exchange(self, upstream: Upstream, job: Job, started: float) -> Decision | None:
        """One try; None once an answer is stored, else what follows it."""
        headers = [*(job.request_headers or ()), (JOB_ID, job.id)]
        body = None
        if job.request_size:
            headers.append(("Content-Length", str(job.request_size)))
            body = self._store.body(job.id, Part.REQUEST)
        try:
            async with exchange(
                self._pool, upstream, job.method, job.target, tuple(headers), body
            ) as reply:
                decision = jobs.after_try(job, reply.answer, upstream.retry, started, self._rng)
                if not isinstance(decision, Complete):
                    return decision
                done = self._clock()
                kept = await self._store.complete(
                    job.id, self.owner, reply.answer, reply.body, done, self._expiry(done)
                )
        except UpstreamFailed as e:
            return jobs.after_try(job, e.failure, upstream.retry, started, self._rng)
        if kept:
            self._ended(job, "completed", started, status=reply.answer.status)
        else:  # canceled meanwhile, or the lease was lost to another process
            log.warning("answer discarded", extra={"event": "answer_discarded", "job_id": job.id})
        return None

    async def _end(self, job: Job, decision: jobs.Decision) -> None:
        now = self._clock()
        if isinstance(decision, Again):
            await self._store.requeue(job.id, self.owner, now + decision.delay)
            self._metrics.retries.labels(job.upstream).inc()
            if job.upstream in self._wake:
                asyncio.get_running_loop().call_later(decision.delay, self._wake[job.upstream].set)
            log.info(
                "job retry",
                extra={
                    "event": "job_retry",
                    "job_id": job.id,
                    "attempt": job.attempts,
                    "delay": decision.delay,
                },
            )
        elif isinstance(decision, Fail):
            failure = decision.failure
            if await self._store.fail(job.id, self.owner, failure, now, self._expiry(now)):
                self._ended(job, "failed", now, failure=failure.kind)

    async def _interrupted(self, job: Job) -> None:
        """A call cut off by drain: settled by the same rule as a crash."""
        upstream = self._config.upstreams.get(job.upstream)
        failed = jobs.on_restart(job, upstream.retry if upstream else Retry())
        try:
            await self._end(job, failed if failed is not None else Again(0.0))
        except StorageError as e:
            log.error(
                "cannot settle job",
                extra={"event": "settle_failed", "job_id": job.id, "error": str(e)},
            )

    def _expiry(self, now: float) -> float:
        return now + self._config.jobs.retention

    def _ended(self, job: Job, outcome: str, since: float, **fields: object) -> None:
        self.endings.ended(job.id)
        self._metrics.ended.labels(job.route, outcome).inc()
        self._log_end(job, outcome, since, **fields)

    def _log_end(self, job: Job, outcome: str, since: float, **fields: object) -> None:
        log.info(
            "job ended",
            extra={
                "event": "job_ended",
                "job_id": job.id,
                "route": job.route,
                "upstream": job.upstream,
                "outcome": outcome,
                "attempts": job.attempts,
                "duration_ms": round((self._clock() - since) * 1000, 1),
                **fields,
            },
        )
