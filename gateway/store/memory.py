"""An in-memory Store: the reference implementation of the protocol, for tests and embedding.

Nothing survives the process; every verb keeps the same compare-and-set rules as SQLite.
"""

from __future__ import annotations

import dataclasses
import itertools
import secrets
from collections.abc import AsyncIterator, Callable, Collection, Iterator

from gateway.errors import IdempotencyConflict
from gateway.jobs import (
    FINAL,
    PENDING,
    Answer,
    Callback,
    Failure,
    Job,
    NewJob,
    Status,
    Whole,
    as_queued,
    digest_of,
    new_webhook_id,
)
from gateway.store import Part, views
from gateway.store.views import OUTCOMES, Filter, JobRow, Lane


@dataclasses.dataclass
class _Row:
    job: Job
    seq: int
    owner: str | None = None
    lease_until: float = 0.0
    not_before: float = 0.0
    expires_at: float | None = None
    bodies: dict[Part, list[bytes]] = dataclasses.field(default_factory=dict)


class MemoryStore:
    def __init__(self, twin: MemoryStore | None = None) -> None:
        """With `twin`, another instance on the same data, as two processes on one database."""
        self._rows: dict[str, _Row] = twin._rows if twin else {}
        self._seqs: Iterator[int] = twin._seqs if twin else itertools.count(1)
        self._key: bytes = twin._key if twin else secrets.token_bytes(32)
        # idempotency key → (job id, fingerprint); webhook id → (callback, next_at)
        self._keys: dict[str, tuple[str, str]] = twin._keys if twin else {}
        self._callbacks: dict[str, tuple[Callback, float]] = twin._callbacks if twin else {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        return None  # memory can always be read and written

    def on_end(self, ended: Callable[[str], None], watched: Callable[[], Collection[str]]) -> None:
        """Ends made by other processes are not heard of: their waiters read at their timeout."""

    async def key(self) -> bytes:
        return self._key

    async def accept(self, job: NewJob, body: AsyncIterator[bytes]) -> Job:
        if isinstance(body, Whole):
            chunks = [body.data] if body.data else []
        else:
            chunks = [chunk async for chunk in body]
        digest = digest_of(job, chunks)
        earlier = self._keys.get(job.idempotency_key) if job.idempotency_key else None
        if earlier is not None and await self.get(earlier[0], job.created_at) is not None:
            if earlier[1] != digest:
                raise IdempotencyConflict("the key was used for another request")
            return self._rows[earlier[0]].job
        if job.idempotency_key:
            self._keys[job.idempotency_key] = (job.id, digest)
        stored = as_queued(job, sum(map(len, chunks)))
        self._rows[job.id] = _Row(stored, next(self._seqs), bodies={Part.REQUEST: chunks})
        return stored

    async def get(self, job_id: str, now: float, *, request: bool = False) -> Job | None:
        row = self._rows.get(job_id)
        if row is None or (row.expires_at is not None and row.expires_at <= now):
            return None
        return row.job if request else dataclasses.replace(row.job, request_headers=None)

    async def claim_many(
        self,
        upstream: str,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        cap: int | None = None,
    ) -> list[Job]:
        if cap is not None:
            running = sum(
                1
                for r in self._rows.values()
                if r.job.upstream == upstream and r.job.status == Status.RUNNING
            )
            limit = min(limit, cap - running)
        taken: list[Job] = []
        while len(taken) < limit and (job := await self.claim(upstream, owner, now, lease_until)):
            taken.append(job)
        return taken

    async def claim(self, upstream: str, owner: str, now: float, lease_until: float) -> Job | None:
        due = [
            r
            for r in self._rows.values()
            if r.job.upstream == upstream and r.job.status == Status.QUEUED and r.not_before <= now
        ]
        if not due:
            return None
        row = min(due, key=lambda r: r.seq)
        row.owner, row.lease_until = owner, lease_until
        row.bodies.pop(Part.ANSWER, None)
        row.job = dataclasses.replace(
            row.job, status=Status.RUNNING, attempts=row.job.attempts + 1, started_at=now
        )
        return row.job

    async def body(self, job_id: str, part: Part) -> AsyncIterator[bytes]:
        row = self._rows.get(job_id)
        for chunk in list(row.bodies.get(part, [])) if row else []:
            yield chunk

    def _held(self, job_id: str, owner: str) -> _Row | None:
        row = self._rows.get(job_id)
        if row is None or row.job.status != Status.RUNNING or row.owner != owner:
            return None
        return row

    async def complete(
        self,
        job_id: str,
        owner: str,
        answer: Answer,
        body: AsyncIterator[bytes],
        now: float,
        expires_at: float,
    ) -> bool:
        chunks = [chunk async for chunk in body]
        row = self._held(job_id, owner)
        if row is None:
            return False
        row.bodies = {Part.ANSWER: chunks}
        answer = dataclasses.replace(answer, size=sum(map(len, chunks)))
        self._finish(row, Status.COMPLETED, now, expires_at, answer=answer, request_headers=None)
        return True

    async def fail(
        self, job_id: str, owner: str, failure: Failure, now: float, expires_at: float
    ) -> bool:
        row = self._held(job_id, owner)
        if row is None:
            return False
        self._finish(row, Status.FAILED, now, expires_at, failure=failure)
        return True

    def _finish(
        self, row: _Row, status: Status, now: float, expires_at: float, **changes: object
    ) -> None:
        row.job = dataclasses.replace(row.job, status=status, finished_at=now, **changes)  # type: ignore[arg-type]
        row.owner, row.expires_at = None, expires_at
        if row.job.callback:
            owed = Callback(new_webhook_id(), row.job.id, row.job.callback, 0)
            self._callbacks[owed.webhook_id] = (owed, now)

    async def due_callback(self, now: float, lease_until: float) -> Callback | None:
        due = [(at, c) for c, at in self._callbacks.values() if at <= now]
        if not due:
            return None
        _, owed = min(due, key=lambda pair: pair[0])
        owed = dataclasses.replace(owed, attempts=owed.attempts + 1)
        self._callbacks[owed.webhook_id] = (owed, lease_until)
        return owed

    async def callback_done(self, webhook_id: str) -> None:
        self._callbacks.pop(webhook_id, None)

    async def callback_later(self, webhook_id: str, next_at: float) -> None:
        if webhook_id in self._callbacks:
            self._callbacks[webhook_id] = (self._callbacks[webhook_id][0], next_at)

    async def requeue(self, job_id: str, owner: str, not_before: float) -> bool:
        row = self._held(job_id, owner)
        if row is None:
            return False
        row.job = dataclasses.replace(row.job, status=Status.QUEUED)
        row.owner, row.not_before = None, not_before
        return True

    async def cancel(self, job_id: str, now: float, expires_at: float) -> bool:
        row = self._rows.get(job_id)
        if row is None or row.job.status not in PENDING:
            return False
        row.bodies = {}
        self._finish(row, Status.CANCELED, now, expires_at, request_headers=None)
        return True

    async def forget(self, job_id: str) -> bool:
        row = self._rows.get(job_id)
        if row is None or row.job.status not in FINAL:
            return False
        del self._rows[job_id]
        return True

    async def retry(self, job_id: str) -> bool:
        row = self._rows.get(job_id)
        if row is None or row.job.status != Status.FAILED:
            return False
        row.job = dataclasses.replace(
            row.job, status=Status.QUEUED, attempts=0, failure=None, finished_at=None
        )
        row.expires_at, row.not_before = None, 0.0
        return True

    async def list_jobs(self, status: str | None, route: str | None, limit: int) -> list[Job]:
        rows = sorted(self._rows.values(), key=lambda r: -r.seq)
        return [
            r.job
            for r in rows
            if r.job.status != Status.RECEIVING
            and (status is None or r.job.status == status)
            and (route is None or r.job.route == route)
        ][:limit]

    async def purge_finished(self, before: float) -> int:
        gone = [
            job_id
            for job_id, r in self._rows.items()
            if r.job.status in FINAL and (r.job.finished_at or 0) < before
        ]
        for job_id in gone:
            del self._rows[job_id]
        return len(gone)

    async def renew(self, owner: str, job_ids: Collection[str], lease_until: float) -> None:
        for job_id in job_ids:
            row = self._held(job_id, owner)
            if row is not None:
                row.lease_until = lease_until

    async def running(self) -> list[Job]:
        return [
            dataclasses.replace(r.job, owner=r.owner, lease_until=r.lease_until)
            for r in self._rows.values()
            if r.job.status == Status.RUNNING
        ]

    async def steal(self, job: Job, owner: str, lease_until: float) -> bool:
        row = self._held(job.id, job.owner or "")
        if row is None or row.lease_until != job.lease_until:
            return False
        row.owner, row.lease_until = owner, lease_until
        return True

    async def queued_by_upstream(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self._rows.values():
            if row.job.status == Status.QUEUED:
                counts[row.job.upstream] = counts.get(row.job.upstream, 0) + 1
        return counts

    async def queued(self, at_most: int) -> int:
        return min(at_most, sum(1 for r in self._rows.values() if r.job.status == Status.QUEUED))

    async def purge(self, now: float, stale_before: float) -> int:
        gone = [
            job_id
            for job_id, r in self._rows.items()
            if (r.job.status in FINAL and r.expires_at is not None and r.expires_at <= now)
            or (r.job.status == Status.RECEIVING and r.job.created_at < stale_before)
        ]
        for job_id in gone:
            del self._rows[job_id]
        return len(gone)

    # -- the console's reads --------------------------------------------------------

    async def lanes(self, upstreams: Collection[str], since: float, at_most: int) -> list[Lane]:
        return [self._lane(name, since, at_most) for name in upstreams]

    def _lane(self, upstream: str, since: float, at_most: int) -> Lane:
        jobs = [r.job for r in self._rows.values() if r.job.upstream == upstream]
        queued = [j for j in jobs if j.status == Status.QUEUED]
        ended = {
            str(outcome): sum(
                1 for j in jobs if j.status == outcome and (j.finished_at or 0) >= since
            )
            for outcome in OUTCOMES
        }
        return Lane(
            upstream=upstream,
            queued=min(at_most, len(queued)),
            running=sum(1 for j in jobs if j.status == Status.RUNNING),
            oldest_queued_at=min((j.created_at for j in queued), default=None),
            ended={k: min(at_most, n) for k, n in ended.items()},
            failed=min(at_most, sum(1 for j in jobs if j.status == Status.FAILED)),
        )

    def _matching(self, where: Filter) -> list[_Row]:
        rows = sorted(self._rows.values(), key=lambda r: -r.seq)
        return [r for r in rows if where.matches(r.job)]

    async def find_jobs(self, where: Filter, after: str | None, limit: int) -> list[JobRow]:
        before = int(after) if after else None
        found = [r for r in self._matching(where) if before is None or r.seq < before]
        return [views.row(str(r.seq), r.job) for r in found[:limit]]

    async def find_job(self, job_id: str, now: float) -> JobRow | None:
        job = await self.get(job_id, now)
        return None if job is None else views.row(str(self._rows[job_id].seq), job)

    async def count_jobs(self, where: Filter, at_most: int) -> int:
        return min(at_most, len(self._matching(where)))

    async def retry_failed(self, where: Filter, ended_before: float, batch: int) -> int:
        if where.status not in (None, Status.FAILED):
            return 0
        found = [
            r.job.id
            for r in self._matching(where)
            if r.job.status == Status.FAILED and (r.job.finished_at or 0) < ended_before
        ]
        return sum([await self.retry(job_id) for job_id in found])
