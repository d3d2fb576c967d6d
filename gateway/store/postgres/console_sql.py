"""The operator console's reads and its bulk retry in the PostgreSQL store.

Its queries select their own columns (`views.COLUMNS`): never request headers, bodies or
bindings. Counts stop at a limit; pages go by seq. A bulk retry's batches skip rows another
replica's batch holds, so two at once queue each job once.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from gateway.jobs import Status
from gateway.store.postgres.connection import Database
from gateway.store.views import COLUMNS, OUTCOMES, Filter, JobRow, Lane, row_of

QUEUED = (
    "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE status = 'queued' AND upstream = $1 LIMIT $2) q"
)
RUNNING = "SELECT count(*) FROM jobs WHERE status = 'running' AND upstream = $1"
OLDEST = (
    "SELECT created_at FROM jobs WHERE status = 'queued' AND upstream = $1 ORDER BY seq LIMIT 1"
)
ENDED = (
    "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE upstream = $1 AND status = $2"
    " AND finished_at >= $3 LIMIT $4) q"
)
ONE = (
    f"SELECT {COLUMNS} FROM jobs WHERE id = $1 AND status <> 'receiving'"
    " AND (expires_at IS NULL OR expires_at > $2)"
)
RETRY_BATCH = (
    "UPDATE jobs SET status = 'queued', attempts = 0, failure = NULL, finished_at = NULL,"
    " expires_at = NULL, not_before = 0 WHERE seq IN (SELECT seq FROM jobs {where}"
    " LIMIT ${limit} FOR UPDATE SKIP LOCKED) AND status = 'failed'"
)


def _where(where: Filter, after: str | None = None) -> tuple[str, list[Any]]:
    """The WHERE clause of a filter and its arguments, numbered $1, $2, ..."""
    terms, args = ["status <> 'receiving'"], []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if where.status is not None:
        terms.append(f"status = {arg(str(Status(where.status)))}")
    if where.upstream is not None:
        terms.append(f"upstream = {arg(where.upstream)}")
    if where.route is not None:
        terms.append(f"route = {arg(where.route)}")
    if where.prefix:
        column = "target" if where.by_path else "id"
        terms.append(f"left({column}, {arg(len(where.prefix))}) = {arg(where.prefix)}")
    if after is not None:
        terms.append(f"seq < {arg(int(after))}")
    return "WHERE " + " AND ".join(terms), args


async def lanes(db: Database, upstreams: Collection[str], since: float, at_most: int) -> list[Lane]:
    found = []
    async with db.connection() as c:
        for upstream in upstreams:
            queued = int(await c.fetchval(QUEUED, upstream, at_most))
            oldest = await c.fetchval(OLDEST, upstream) if queued else None
            ended = {
                str(o): int(await c.fetchval(ENDED, upstream, str(o), since, at_most))
                for o in OUTCOMES
            }
            failed = await c.fetchval(ENDED, upstream, "failed", float("-inf"), at_most)
            found.append(
                Lane(
                    upstream=upstream,
                    queued=queued,
                    running=int(await c.fetchval(RUNNING, upstream)),
                    oldest_queued_at=oldest,
                    ended=ended,
                    failed=int(failed),
                )
            )
    return found


async def find_jobs(db: Database, where: Filter, after: str | None, limit: int) -> list[JobRow]:
    clause, args = _where(where, after)
    query = f"SELECT {COLUMNS} FROM jobs {clause} ORDER BY seq DESC LIMIT ${len(args) + 1}"
    async with db.connection() as c:
        return [row_of(tuple(r)) for r in await c.fetch(query, *args, limit)]


async def find_job(db: Database, job_id: str, now: float) -> JobRow | None:
    async with db.connection() as c:
        found = await c.fetchrow(ONE, job_id, now)
    return row_of(tuple(found)) if found else None


async def count_jobs(db: Database, where: Filter, at_most: int) -> int:
    clause, args = _where(where)
    query = f"SELECT count(*) FROM (SELECT 1 FROM jobs {clause} LIMIT ${len(args) + 1}) q"
    async with db.connection() as c:
        return int(await c.fetchval(query, *args, at_most))


async def retry_failed(db: Database, where: Filter, ended_before: float, batch: int) -> int:
    if where.status not in (None, Status.FAILED):
        return 0
    clause, args = _where(Filter(Status.FAILED, where.upstream, where.route, where.prefix))
    clause += f" AND finished_at < ${len(args) + 1}"
    update = RETRY_BATCH.format(where=clause, limit=len(args) + 2)
    total = 0
    while True:
        async with db.transaction() as c:
            done = int((await c.execute(update, *args, ended_before, batch)).split()[-1])
        if not done:
            return total
        total += done
