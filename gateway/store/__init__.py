"""The Store protocol: the domain verbs every storage backend implements, and `open_store`,
the one place that picks a backend (`memory.py`, `sqlite/`, `postgres/`) for a configuration.

Every state change is a compare-and-set (`queued → running` only if still queued, `running → …`
only by the lease holder), so several workers or processes can share one store safely.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol

from gateway.jobs import Answer, Callback, Failure, Job, NewJob

if TYPE_CHECKING:
    from gateway.config import Storage
    from gateway.store.views import Filter, JobRow, Lane

CHUNK = 256 * 1024  # bodies move to and from storage in pieces of at most this size
OnCommit = Callable[[int, float], None]  # operations in one write transaction, its seconds


class Part(IntEnum):
    REQUEST = 0
    ANSWER = 1


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise StorageError unless storage can be read and written now (readyz asks this
        every few seconds: cheap, no sync, nothing left behind)."""

    def on_end(self, ended: Callable[[str], None], watched: Callable[[], Collection[str]]) -> None:
        """Call `ended(job_id)` when another process (another replica) ends a job, if this
        store hears of that; after a gap in hearing, for each job of `watched()` that ended."""

    async def key(self) -> bytes:
        """A random key kept in the store and shared by every process using it."""

    async def accept(self, job: NewJob, body: AsyncIterator[bytes]) -> Job:
        """Store the request and its body; return only once it is durable (then it is queued)."""

    async def get(self, job_id: str, now: float, *, request: bool = False) -> Job | None:
        """The job, or None if unknown or past its retention. A job shown as ended is on disk
        as ended: a power loss cannot take back what a client was shown. Its request headers
        come only with `request`: the status URL never needs them, and parsing them is most of
        a poll's reading (a claim always returns them)."""

    async def claim(self, upstream: str, owner: str, now: float, lease_until: float) -> Job | None:
        """The oldest due queued job of `upstream`, now running under `owner`'s lease."""

    async def claim_many(
        self,
        upstream: str,
        owner: str,
        now: float,
        lease_until: float,
        limit: int,
        cap: int | None = None,
    ) -> list[Job]:
        """Up to `limit` of the oldest due queued jobs, oldest first, in one step; with `cap`,
        only as many as keep the upstream's running jobs, whoever runs them, at most `cap`."""

    def body(self, job_id: str, part: Part) -> AsyncIterator[bytes]:
        """A stored body, piece by piece. A body removed while it is read (its job forgotten or
        swept meanwhile) raises StorageError rather than end short as if it were whole."""

    async def complete(
        self,
        job_id: str,
        owner: str,
        answer: Answer,
        body: AsyncIterator[bytes],
        now: float,
        expires_at: float,
    ) -> bool:
        """Store the answer and drop the request; False (answer discarded) if the lease is lost."""

    async def fail(
        self, job_id: str, owner: str, failure: Failure, now: float, expires_at: float
    ) -> bool:
        """running → failed; the request stays as a dead letter until `expires_at`."""

    async def requeue(self, job_id: str, owner: str, not_before: float) -> bool:
        """running → queued, due again at `not_before`."""

    async def cancel(self, job_id: str, now: float, expires_at: float) -> bool:
        """queued or running → canceled; the stored request is dropped."""

    async def forget(self, job_id: str) -> bool:
        """Delete a finished job and everything stored for it."""

    async def retry(self, job_id: str) -> bool:
        """failed → queued with a fresh count of tries; its kept request is sent again."""

    async def list_jobs(self, status: str | None, route: str | None, limit: int) -> list[Job]:
        """Stored jobs, newest first."""

    async def purge_finished(self, before: float) -> int:
        """Delete finished jobs that ended before `before`."""

    async def renew(self, owner: str, job_ids: Collection[str], lease_until: float) -> None:
        """Extend `owner`'s lease on these jobs (those it is really running)."""

    async def running(self) -> list[Job]:
        """Every running job, with its lease holder and the lease's end."""

    async def steal(self, job: Job, owner: str, lease_until: float) -> bool:
        """Take over a running job, only if its holder and lease are still as `job` saw them."""

    async def due_callback(self, now: float, lease_until: float) -> Callback | None:
        """The oldest callback due, held until `lease_until` and its attempt counted."""

    async def callback_done(self, webhook_id: str) -> None:
        """Delivered (or given up): forget it."""

    async def callback_later(self, webhook_id: str, next_at: float) -> None:
        """Not delivered: try again at `next_at`."""

    async def queued(self, at_most: int) -> int:
        """How many jobs wait for an upstream slot, or `at_most` if more (a store whose count
        costs what it counts may stop there)."""

    async def queued_by_upstream(self) -> dict[str, int]:
        """How many jobs wait, per upstream that has any."""

    async def purge(self, now: float, stale_before: float) -> int:
        """Delete jobs past retention and uploads abandoned before `stale_before`."""

    # -- the operator console's reads: projections without headers, bodies or bindings ------

    async def lanes(self, upstreams: Collection[str], since: float, at_most: int) -> list[Lane]:
        """Each upstream's queued and running jobs, its oldest waiting job's arrival, its jobs
        ended since `since` by outcome and its failed jobs kept; counts stop at `at_most`."""

    async def find_jobs(self, where: Filter, after: str | None, limit: int) -> list[JobRow]:
        """Jobs matching `where`, newest first, from just past the row whose key is `after`:
        paged by key, so a page stays the same while jobs arrive."""

    async def find_job(self, job_id: str, now: float) -> JobRow | None:
        """One job as the console shows it, or None as `get` would say."""

    async def count_jobs(self, where: Filter, at_most: int) -> int:
        """How many jobs match `where`, or `at_most` if that many or more."""

    async def retry_failed(self, where: Filter, ended_before: float, batch: int) -> int:
        """Every failed job matching `where` that ended before `ended_before` back to queued,
        `batch` at a time, each batch a compare-and-set; how many were queued again."""


async def open_store(storage: Storage, on_commit: OnCommit | None = None) -> Store:
    """The configured backend, opened; `on_commit` hears of each write transaction it makes.

    Backends are imported here, not above: one that is not configured is never loaded."""
    store: Store
    if storage.url is not None:
        from gateway.store.postgres import PostgresStore

        store = PostgresStore(storage.url, on_commit)
    else:
        from gateway.store.sqlite import SQLiteStore

        store = SQLiteStore(storage.path, on_commit)
    await store.open()
    return store
