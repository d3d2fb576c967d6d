"""The embedded default Store: one SQLite file in WAL mode, every write on disk before it returns.

Writes go through the single group-commit Writer and reads through the Reader's connections,
so a replay streams its body piece by piece while writes go on. The writer syncs the WAL after
each transaction, outside SQLite's write lock, and a job that ended is shown only once that is on
disk (`durability.py`). SQL lives here and in `statements.py`, nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable, Collection
from typing import Any

from gateway import encoding
from gateway.errors import StorageError
from gateway.jobs import (
    FINAL,
    Answer,
    Callback,
    Failure,
    Job,
    NewJob,
    Status,
    Whole,
    as_queued,
    digest_of,
    fingerprint,
)
from gateway.store import OnCommit, Part
from gateway.store.rows import job_of
from gateway.store.sqlite import console_sql, schema
from gateway.store.sqlite import statements as sql
from gateway.store.sqlite.durability import Durability
from gateway.store.sqlite.reader import Reader
from gateway.store.sqlite.writer import Writer
from gateway.store.views import Filter, JobRow, Lane

BUSY_TIMEOUT_MS = 5000
SCRUB_EVERY = 20.0  # deleted requests leave the files within a minute, with tries to spare
SCRUB_WAIT = 0.1  # how long a scrub waits for readers before it tries again next time
MIN_FREE = 8 * 1024**2  # less room than this on the disk: not ready (see ping)
NO_CAP = 2**62  # a claim's cap when the caller sets none


def _connect(path: str) -> sqlite3.Connection:
    """The writer's connection: WAL, synced by the writer itself (`synchronous=NORMAL` leaves
    the sync to it), and the schema brought up to date."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA journal_size_limit = 67108864")
    # Deleted rows (a finished job's request: credentials and body) are overwritten with zeros
    # in their pages and in the free list, not merely unlinked; `_scrub` clears the WAL.
    conn.execute("PRAGMA secure_delete = ON")
    schema.create(conn)
    return conn


class SQLiteStore:
    def __init__(
        self, path: str, on_commit: OnCommit | None = None, scrub_every: float = SCRUB_EVERY
    ) -> None:
        self.path = path
        self._scrub_every = scrub_every
        self._scrubber: asyncio.Task[None] | None = None
        self._deleted = False  # a request deleted since the last scrub: one is owed
        self._durability = Durability(path)
        self._writer = Writer(
            lambda: _connect(path),
            on_commit,
            path + "-writer",
            BUSY_TIMEOUT_MS / 1000,
            self._durability,
        )
        self._reader = Reader(path, BUSY_TIMEOUT_MS / 1000)

    async def open(self) -> None:
        try:
            self._durability.open()
            await self._writer.start()
            await self._reader.open()
        except (sqlite3.Error, OSError) as e:
            await self.close()
            raise StorageError(f"cannot open {self.path}: {e}") from e
        self._scrubber = asyncio.create_task(self._scrub(), name="sqlite-scrub")

    async def close(self) -> None:
        if self._scrubber is not None:
            self._scrubber.cancel()
            await asyncio.gather(self._scrubber, return_exceptions=True)
            self._scrubber = None
            if self._deleted:  # a short-lived process (jobs purge) scrubs before it goes
                with contextlib.suppress(StorageError):
                    await self._writer.checkpoint(wait=SCRUB_WAIT)
        await self._reader.close()
        await self._writer.stop()
        self._durability.close()

    async def ping(self) -> None:
        """Readable: a query answers. Writable: the file system is not read-only and has room
        (a full disk fails every accept; a test write could land in WAL space already held)."""
        await self._reader.all("SELECT 1", ())
        where = os.path.dirname(os.path.abspath(self.path))
        try:
            room = os.statvfs(where)
        except OSError as e:
            raise StorageError(f"cannot look at {where}: {e}") from e
        if room.f_flag & os.ST_RDONLY:
            raise StorageError(f"{where} is read-only")
        if room.f_bavail * room.f_frsize < MIN_FREE:
            raise StorageError(f"{where} is full: {room.f_bavail * room.f_frsize} bytes free")

    async def _scrub(self) -> None:
        """With secure_delete, the bytes of a deleted request last only in WAL frames written
        before it was deleted; a checkpoint that truncates the WAL every `scrub_every` ends
        them (one that readers hold up is tried again next time)."""
        while True:
            await asyncio.sleep(self._scrub_every)
            if not self._deleted:
                continue  # nothing deleted: the WAL holds nothing that must go
            self._deleted = False
            try:
                done = await self._writer.checkpoint(wait=SCRUB_WAIT)
            except StorageError:
                done = False
            self._deleted = self._deleted or not done

    def on_end(self, ended: Callable[[str], None], watched: Callable[[], Collection[str]]) -> None:
        """Ends made by other processes are not heard of: their waiters read at their timeout."""

    async def key(self) -> bytes:
        """A random key kept in the store, shared by every process that uses it."""

        return bytes.fromhex(
            await self._writer.run(sql.call(sql.binding_key, secrets.token_hex(32)))
        )

    # -- accepting ---------------------------------------------------------------

    async def accept(self, job: NewJob, body: AsyncIterator[bytes]) -> Job:
        if isinstance(body, Whole):  # read whole by the handler: one transaction, no iterating
            first, second = body.data, None
        else:
            first = await anext(body, b"")
            second = await anext(body, None)
        if second is None:  # the common case: the whole request in one transaction
            kept = await self._writer.run(
                sql.call(sql.enqueue, job, digest_of(job, [first]), first)
            )
            return as_queued(job, len(first)) if kept == job.id else await self._job(kept)
        digest = fingerprint(job)
        digest.update(first)
        await self._writer.run(sql.call(sql.insert, job, Status.RECEIVING, first))
        try:
            size, n = len(first), 1
            async for chunk in _chain(second, body):
                digest.update(chunk)
                await self._writer.run(sql.call(sql.put_chunk, job.id, Part.REQUEST, n, chunk))
                size, n = size + len(chunk), n + 1
            kept = await self._writer.run(sql.call(sql.enqueue, job, digest.hexdigest(), size))
        except BaseException:
            self._deleted = True
            await self._writer.run(sql.call(sql.delete, job.id))
            raise
        return as_queued(job, size) if kept == job.id else await self._job(kept)

    # -- reading -----------------------------------------------------------------

    async def get(self, job_id: str, now: float, *, request: bool = False) -> Job | None:
        row = await self._reader.one(sql.GET_WITH_REQUEST if request else sql.GET, (job_id, now))
        if not row:
            return None
        job = job_of(row)
        if job.status in FINAL and not self._durability.settled():
            try:  # its end may be committed and not yet on disk: make sure before showing it
                await asyncio.to_thread(self._durability.sync)
            except OSError as e:
                raise StorageError(f"cannot sync {self.path}: {e}") from e
        return job

    async def _job(self, job_id: str) -> Job:
        job = await self.get(job_id, 0.0)
        if job is None:
            raise StorageError(f"job {job_id} vanished")
        return job

    async def body(self, job_id: str, part: Part) -> AsyncIterator[bytes]:
        n, more = 0, True
        while more:
            row = await self._reader.one(sql.PIECE, (job_id, int(part), n))
            if row is None:
                if n:  # the piece before said this one follows
                    raise StorageError(f"job {job_id}: the body was removed while it was read")
                return
            yield bytes(row[0])
            n, more = n + 1, bool(row[1])

    async def due_callback(self, now: float, lease_until: float) -> Callback | None:
        row = await self._writer.run(sql.call(sql.fetch_one, sql.DUE_CALLBACK, (lease_until, now)))
        return Callback(*row) if row else None

    async def callback_done(self, webhook_id: str) -> None:
        await self._writer.run(sql.call(sql.execute, sql.CALLBACK_DONE, (webhook_id,)))

    async def callback_later(self, webhook_id: str, next_at: float) -> None:
        await self._writer.run(sql.call(sql.execute, sql.CALLBACK_LATER, (next_at, webhook_id)))

    async def queued_by_upstream(self) -> dict[str, int]:
        rows = await self._reader.all(sql.QUEUED_BY_UPSTREAM, ())
        return {str(upstream): int(count) for upstream, count in rows}

    async def queued(self, at_most: int) -> int:
        return min(at_most, int((await self._reader.one(sql.QUEUED, ()))[0]))

    async def running(self) -> list[Job]:
        rows = await self._reader.all(sql.RUNNING, ())
        return [job_of(r) for r in rows]

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
        args = (owner, lease_until, now, upstream, now, limit, most, upstream)
        taken = [job_of(row) for row in await self._writer.run(sql.call(sql.claim, args))]
        return sorted(taken, key=lambda job: (job.created_at, job.id))

    async def complete(
        self,
        job_id: str,
        owner: str,
        answer: Answer,
        body: AsyncIterator[bytes],
        now: float,
        expires_at: float,
    ) -> bool:
        size, n, last = 0, 0, b""
        try:
            # Each piece is written once the next has come, so the last one (for most answers
            # the only one) goes in the same transaction as the completion.
            async for chunk in body:
                if n:
                    await self._writer.run(
                        sql.call(sql.put_chunk, job_id, Part.ANSWER, n - 1, last)
                    )
                size, n, last = size + len(chunk), n + 1, chunk
        except BaseException:
            await self._writer.run(sql.call(sql.drop_part, job_id, Part.ANSWER))
            raise
        self._deleted = True  # the request, once this commits
        head = encoding.dumps_text([answer.status, answer.reason, answer.headers, size])
        piece = (n - 1, last) if n else None
        return bool(
            await self._writer.run(
                sql.call(sql.complete, job_id, owner, piece, head, now, expires_at)
            )
        )

    async def fail(
        self, job_id: str, owner: str, failure: Failure, now: float, expires_at: float
    ) -> bool:
        cause = encoding.dumps_text([failure.kind, failure.detail, failure.sent])
        return bool(
            await self._writer.run(
                sql.call(sql.finish, job_id, owner, "failed", now, expires_at, None, cause)
            )
        )

    async def requeue(self, job_id: str, owner: str, not_before: float) -> bool:
        return await self._swap(sql.REQUEUE, (not_before, job_id, owner))

    async def _swap(self, update: str, args: tuple[Any, ...]) -> bool:
        """One compare-and-set UPDATE: whether it found its row still as expected."""
        return bool(await self._writer.run(sql.call(sql.swapped, update, args)))

    async def cancel(self, job_id: str, now: float, expires_at: float) -> bool:
        self._deleted = True
        return bool(await self._writer.run(sql.call(sql.cancel, job_id, now, expires_at)))

    async def forget(self, job_id: str) -> bool:
        self._deleted = True
        return bool(await self._writer.run(sql.call(sql.forget, job_id)))

    async def retry(self, job_id: str) -> bool:
        return await self._swap(sql.RETRY, (job_id,))

    async def list_jobs(self, status: str | None, route: str | None, limit: int) -> list[Job]:
        rows = await self._reader.all(sql.LIST, (status, status, route, route, limit))
        return [job_of(r) for r in rows]

    async def purge_finished(self, before: float) -> int:
        self._deleted = True
        total = 0
        batch = sql.call(sql.delete_found, sql.FINISHED_BEFORE, (before,))
        while (deleted := await self._writer.run(batch)) > 0:
            total += deleted
        return total

    async def renew(self, owner: str, job_ids: Collection[str], lease_until: float) -> None:
        if job_ids:
            await self._writer.run(sql.call(sql.renew, owner, list(job_ids), lease_until))

    async def steal(self, job: Job, owner: str, lease_until: float) -> bool:
        return await self._swap(sql.STEAL, (owner, lease_until, job.id, job.owner, job.lease_until))

    async def purge(self, now: float, stale_before: float) -> int:
        found = sql.call(sql.delete_found, sql.EXPIRED, (now, stale_before))
        deleted = int(await self._writer.run(found))
        self._deleted = self._deleted or deleted > 0  # the sweep runs often, mostly in vain
        return deleted

    # -- the console's reads (console_sql.py) --------------------------------------

    async def lanes(self, upstreams: Collection[str], since: float, at_most: int) -> list[Lane]:
        return await console_sql.lanes(self._reader, upstreams, since, at_most)

    async def find_jobs(self, where: Filter, after: str | None, limit: int) -> list[JobRow]:
        return await console_sql.find_jobs(self._reader, where, after, limit)

    async def find_job(self, job_id: str, now: float) -> JobRow | None:
        return await console_sql.find_job(self._reader, job_id, now)

    async def count_jobs(self, where: Filter, at_most: int) -> int:
        return await console_sql.count_jobs(self._reader, where, at_most)

    async def retry_failed(self, where: Filter, ended_before: float, batch: int) -> int:
        return await console_sql.retry_failed(self._writer, where, ended_before, batch)


async def _chain(head: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    yield head
    async for chunk in rest:
        yield chunk
