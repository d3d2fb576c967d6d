"""The PostgreSQL Store: replicas on any hosts share one database and act as one gateway.

Each verb is one short transaction (a body's pieces one each), never held open while bytes
move to or from a client or an upstream. The SQL is in `statements.py`, the connections and
what an outage does in `connection.py`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

from gateway import encoding
from gateway.errors import StorageError
from gateway.jobs import Answer, Callback, Failure, Job, NewJob, as_queued
from gateway.jobs import new_webhook_id as webhook_id
from gateway.store import OnCommit, Part
from gateway.store.postgres import accepting, console_sql
from gateway.store.postgres import statements as sql
from gateway.store.postgres.connection import Database
from gateway.store.postgres.schema import Connection
from gateway.store.rows import LEASE_UNTIL, job_of
from gateway.store.views import Filter, JobRow, Lane

NO_CAP = 2**62
FIRSTS = 4096  # first body pieces kept from claims for the calls about to read them, at most
PERSIST, PERSIST_PAUSE = 10.0, 0.25  # how long, how often a job's end is tried again


class PostgresStore:
    def __init__(self, url: str, on_commit: OnCommit | None = None) -> None:
        self._db = Database(url, on_commit)
        self._beats: dict[str, float] = {}  # owner → when its heartbeat was last written
        self._key_owed = False
        # job id → its request's first piece, read by the claim, for the call's first read (a
        # job that ends, goes back or is removed here drops it)
        self._firsts: dict[str, tuple[bytes, bool]] = {}

    async def open(self) -> None:
        await self._db.open()

    async def close(self) -> None:
        await self._db.close()

    def on_end(self, ended: Callable[[str], None], watched: Callable[[], Collection[str]]) -> None:
        self._db.on_end(ended, watched)

    async def ping(self) -> None:
        """Storage can be read and written now: one row written and rolled back (a standby or
        a read-only database refuses it), so nothing is left behind and nothing synced."""
        self._keyed()
        async with self._db.connection() as c:
            written = c.transaction()
            await written.start()
            try:
                await c.execute(sql.PING)
            finally:
                await written.rollback()

    async def key(self) -> bytes:
        try:
            key = await self._db.key()
        except StorageError:
            self._key_owed = True
            raise
        self._key_owed = False
        return key

    def _keyed(self) -> None:
        """A store whose key was asked for and not given yet serves no client: a status URL
        checked or a job bound with another key than the other replicas' would be wrong."""
        if self._key_owed:
            raise StorageError("PostgreSQL: the binding key is not known yet")

    # -- accepting ---------------------------------------------------------------

    async def accept(self, job: NewJob, body: AsyncIterator[bytes]) -> Job:
        self._keyed()
        kept, size = await accepting.accept(self._db, job, body)
        return as_queued(job, size) if kept == job.id else await self._job(kept)

    # -- reading -----------------------------------------------------------------

    async def get(self, job_id: str, now: float, *, request: bool = False) -> Job | None:
        self._keyed()
        async with self._db.connection() as c:
            row = await c.fetchrow(sql.GET_WITH_REQUEST if request else sql.GET, job_id, now)
        return job_of(row) if row else None

    async def _job(self, job_id: str) -> Job:
        job = await self.get(job_id, 0.0)
        if job is None:
            raise StorageError(f"job {job_id} vanished")
        return job

    async def body(self, job_id: str, part: Part) -> AsyncIterator[bytes]:
        n, more = 0, True
        first = self._firsts.pop(job_id, None) if part == Part.REQUEST else None
        if first is not None:  # read by the claim, in the same round trip
            yield first[0]
            n, more = 1, first[1]
        while more:
            async with self._db.connection() as c:  # one piece a query: nothing held between
                row = await c.fetchrow(sql.PIECE, job_id, int(part), n)
            if row is None:
                if n:
                    raise StorageError(f"job {job_id}: the body was removed while it was read")
                return
            yield bytes(row[0])
            n, more = n + 1, bool(row[1])

    async def list_jobs(self, status: str | None, route: str | None, limit: int) -> list[Job]:
        async with self._db.connection() as c:
            return [job_of(r) for r in await c.fetch(sql.LIST, status, route, limit)]

    async def queued(self, at_most: int) -> int:
        async with self._db.connection() as c:
            return int(await c.fetchval(sql.QUEUED, at_most))

    async def queued_by_upstream(self) -> dict[str, int]:
        async with self._db.connection() as c:
            rows = await c.fetch(sql.QUEUED_BY_UPSTREAM)
        return {str(upstream): int(count) for upstream, count in rows}

    async def running(self) -> list[Job]:
        """Each lease's end is given on this host's clock: now plus what the database's clock
        says is left, so no decision compares two hosts' clocks."""
        async with self._db.connection() as c:
            rows = await c.fetch(sql.RUNNING)
        here = time.time()
        jobs = []
        for row in rows:
            fields = list(row)
            fields[LEASE_UNTIL] = here + float(fields[LEASE_UNTIL])
            jobs.append(job_of(fields))
        return jobs

    # -- transitions, each a compare-and-set --------------------------------------

    async def claim(self, upstream: str, owner: str, now: float, lease_until: float) -> Job | None:
        taken = await self.claim_many(upstream, owner, now, lease_until, 1)
        return taken[0] if taken else None

    async def claim_many(
        self,
        upstream: str,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        cap: int | None = None,
    ) -> list[Job]:
        most = NO_CAP if cap is None else cap
        try:
            await self._beat(owner, lease_until - now)
            async with self._db.statement() as c:  # the lock, then the claim: one round trip
                rows = await c.fetch(sql.CLAIM, upstream, limit, most, owner, now)
        except StorageError:
            if self._db.down:  # an outage, logged once already: nothing to claim meanwhile
                return []
            raise
        if len(self._firsts) > FIRSTS:  # pieces of calls that never read them (canceled)
            self._firsts.clear()
        for row in rows:
            if row["first_piece"] is not None:
                self._firsts[row["id"]] = (bytes(row["first_piece"]), bool(row["more"]))
        return sorted((job_of(r) for r in rows), key=lambda job: (job.created_at, job.id))

    async def _beat(self, owner: str, lease: float) -> None:
        """This process's heartbeat, before a claim or a steal, if the last is getting old."""
        if time.monotonic() - self._beats.get(owner, -1e9) < lease / 3:
            return
        async with self._db.transaction() as c:
            await c.execute(sql.BEAT, owner, lease)
        self._beats[owner] = time.monotonic()

    async def renew(self, owner: str, job_ids: Collection[str], lease_until: float) -> None:
        async with self._db.transaction() as c:
            await c.execute(sql.BEAT, owner, lease_until - time.time())
            await c.execute(sql.ORPHANS, owner, list(job_ids))
        self._beats[owner] = time.monotonic()

    async def steal(self, job: Job, owner: str, lease_until: float) -> bool:
        await self._beat(owner, lease_until - time.time())
        return await self._swap(sql.STEAL, job.id, owner, job.owner, job.attempts)

    async def _swap(self, update: str, *args: Any) -> bool:
        async with self._db.transaction() as c:
            return str(await c.execute(update, *args)).endswith(" 1")

    async def complete(
        self,
        job_id: str,
        owner: str,
        answer: Answer,
        body: AsyncIterator[bytes],
        now: float,
        expires_at: float,
    ) -> bool:
        self._firsts.pop(job_id, None)
        size, n, last = 0, 0, b""
        try:
            async for chunk in body:  # the last piece goes with the completion
                if n:
                    async with self._db.transaction() as c:
                        await c.execute(sql.PUT_PIECE, job_id, Part.ANSWER, n - 1, last)
                size, n, last = size + len(chunk), n + 1, chunk
        except BaseException:
            async with self._db.transaction() as c:
                await c.execute(sql.DROP_PART, job_id, Part.ANSWER)
            raise
        head = encoding.dumps_text([answer.status, answer.reason, answer.headers, size])

        piece = (n - 1, last) if n else (None, None)

        async def record() -> bool:
            async with self._db.statement() as c:
                args = (job_id, owner, now, expires_at, head, *piece, webhook_id())
                done = bool(await c.fetch(sql.COMPLETE, *args))
            if not done and n > 1:  # the pieces stored before the last, for nothing
                async with self._db.transaction() as c:
                    await c.execute(sql.DROP_PART, job_id, Part.ANSWER)
            return done

        return await _persist(record)

    async def fail(
        self, job_id: str, owner: str, failure: Failure, now: float, expires_at: float
    ) -> bool:
        self._firsts.pop(job_id, None)
        cause = encoding.dumps_text([failure.kind, failure.detail, failure.sent])

        async def record() -> bool:
            async with self._db.transaction() as c:
                return await self._finish(c, job_id, owner, "failed", now, expires_at, None, cause)

        return await _persist(record)

    async def _finish(
        self,
        c: Connection,
        job_id: str,
        owner: str,
        status: str,
        now: float,
        expires_at: float,
        answer: str | None,
        failure: str | None = None,
    ) -> bool:
        row = await c.fetchrow(sql.FINISH, job_id, owner, status, now, expires_at, answer, failure)
        if row is None:
            return False
        await self._ended(c, job_id, row[0])
        return True

    async def _ended(self, c: Connection, job_id: str, callback: str | None) -> None:
        """In the transaction that ends the job: the callback it owes, and the word to every
        replica (delivered at commit, only if it commits)."""
        if callback is not None:
            await c.execute(sql.OWE_CALLBACK, webhook_id(), job_id, callback)
        await c.execute(sql.NOTIFY, job_id)

    async def requeue(self, job_id: str, owner: str, not_before: float) -> bool:
        self._firsts.pop(job_id, None)
        return await _persist(lambda: self._swap(sql.REQUEUE, job_id, owner, not_before))

    async def cancel(self, job_id: str, now: float, expires_at: float) -> bool:
        self._firsts.pop(job_id, None)
        async with self._db.transaction() as c:
            row = await c.fetchrow(sql.CANCEL, job_id, now, expires_at)
            if row is None:
                return False
            await c.execute("DELETE FROM bodies WHERE job_id = $1", job_id)
            await self._ended(c, job_id, row[0])
        return True

    async def forget(self, job_id: str) -> bool:
        self._firsts.pop(job_id, None)
        async with self._db.transaction() as c:
            if await c.fetchval(sql.FORGET, job_id) is None:
                return False
            await c.execute(sql.DELETE_JOB, job_id)
        return True

    async def retry(self, job_id: str) -> bool:
        return await self._swap(sql.RETRY, job_id)

    async def due_callback(self, now: float, lease_until: float) -> Callback | None:
        async with self._db.transaction() as c:
            row = await c.fetchrow(sql.DUE_CALLBACK, lease_until - now)
        return Callback(*row) if row else None

    async def callback_done(self, webhook_id: str) -> None:
        async with self._db.transaction() as c:
            await c.execute(sql.CALLBACK_DONE, webhook_id)

    async def callback_later(self, webhook_id: str, next_at: float) -> None:
        async with self._db.transaction() as c:
            await c.execute(sql.CALLBACK_LATER, webhook_id, next_at - time.time())

    async def purge_finished(self, before: float) -> int:
        total = 0
        while (deleted := await self._delete(sql.FINISHED_BEFORE, before)) > 0:
            total += deleted
        return total

    async def purge(self, now: float, stale_before: float) -> int:
        deleted = await self._delete(sql.EXPIRED, now, stale_before)
        if not deleted:
            async with self._db.transaction() as c:
                await c.execute(sql.DEAD_REPLICAS)
        return deleted

    async def _delete(self, query: str, *args: Any) -> int:
        async with self._db.transaction() as c:
            return int(str(await c.execute(query, *args)).rsplit(" ", 1)[1])

    # -- the console's reads (console_sql.py) --------------------------------------

    async def lanes(self, upstreams: Collection[str], since: float, at_most: int) -> list[Lane]:
        return await console_sql.lanes(self._db, upstreams, since, at_most)

    async def find_jobs(self, where: Filter, after: str | None, limit: int) -> list[JobRow]:
        return await console_sql.find_jobs(self._db, where, after, limit)

    async def find_job(self, job_id: str, now: float) -> JobRow | None:
        return await console_sql.find_job(self._db, job_id, now)

    async def count_jobs(self, where: Filter, at_most: int) -> int:
        return await console_sql.count_jobs(self._db, where, at_most)

    async def retry_failed(self, where: Filter, ended_before: float, batch: int) -> int:
        return await console_sql.retry_failed(self._db, where, ended_before, batch)


async def _persist(record: Callable[[], Awaitable[bool]]) -> bool:
    """The record of a call that already happened, tried again while the database is away
    (up to PERSIST seconds, within the lease): an outage of a few seconds then costs no job its
    outcome. A lease lost meanwhile makes the record a no-op, as ever."""
    deadline = time.monotonic() + PERSIST
    while True:
        try:
            return await record()
        except StorageError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(PERSIST_PAUSE)
