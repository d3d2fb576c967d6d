"""The operator console's reads and its bulk retry in the PostgreSQL store.

Its queries select their own columns: never request headers, bodies or bindings. Counts stop
at a limit and run on partial indexes, as in the SQLite store's `console_sql.py`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from gateway.jobs import Status
from gateway.store.postgres.connection import Database
from gateway.store.views import COLUMNS, OUTCOMES, Filter, JobRow, Lane, row_of

_COUNT = (
    "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE upstream = $1 AND status = $2{} LIMIT $3) q"
)
_OLDEST = (
    "SELECT created_at FROM jobs WHERE status = 'queued' AND upstream = $1 ORDER BY seq LIMIT 1"
)
_ONE = (
    f"SELECT {COLUMNS} FROM jobs WHERE id = $1 AND status <> 'receiving'"
    " AND (expires_at IS NULL OR expires_at > $2)"
)
# The batch is picked once, in a CTE: as `seq IN (SELECT … LIMIT n)` the planner may run the
# subquery again for each row it updates, and one batch then took every failed job.
_RETRY_BATCH = (
    "WITH picked AS MATERIALIZED (SELECT seq FROM jobs {where} LIMIT ${n} FOR UPDATE SKIP LOCKED)"
    " UPDATE jobs SET status = 'queued', attempts = 0, failure = NULL, finished_at = NULL,"
    " expires_at = NULL, not_before = 0 FROM picked"
    " WHERE jobs.seq = picked.seq AND jobs.status = 'failed'"
)


def _where(where: Filter, after: str | None = None) -> tuple[str, list[Any]]:
    """The WHERE clause of a filter, its values as numbered parameters."""
    terms: list[str] = ["status <> 'receiving'"]
    args: list[Any] = []

    def term(sql: str, value: Any) -> None:
        args.append(value)
        terms.append(sql.format(f"${len(args)}"))

    if where.status is not None:
        terms.append(f"status = '{Status(where.status).value}'")  # a literal: its partial index
    if where.upstream is not None:
        term("upstream = {}", where.upstream)
    if where.route is not None:
        term("route = {}", where.route)
    if where.prefix:
        term(f"starts_with({'target' if where.by_path else 'id'}, {{}})", where.prefix)
    if after is not None:
        term("seq < {}", int(after))
    return "WHERE " + " AND ".join(terms), args


def _row(found: Any) -> JobRow:
    return row_of(list(found))


async def lanes(db: Database, upstreams: Collection[str], since: float, at_most: int) -> list[Lane]:
    found = []
    async with db.connection() as c:
        for upstream in upstreams:

            async def count(status: str, extra: str = "", *more: Any) -> int:
                query = _COUNT.format(extra)
                return int(await c.fetchval(query, upstream, status, at_most, *more))  # noqa: B023

            queued = await count("queued")
            oldest = await c.fetchval(_OLDEST, upstream) if queued else None
            ended = {
                str(outcome): await count(str(outcome), " AND finished_at >= $4", since)
                for outcome in OUTCOMES
            }
            found.append(
                Lane(
                    upstream=upstream,
                    queued=queued,
                    running=await count("running"),
                    oldest_queued_at=oldest,
                    ended=ended,
                    failed=await count("failed"),
                )
            )
    return found


async def find_jobs(db: Database, where: Filter, after: str | None, limit: int) -> list[JobRow]:
    clause, args = _where(where, after)
    query = f"SELECT {COLUMNS} FROM jobs {clause} ORDER BY seq DESC LIMIT ${len(args) + 1}"
    async with db.connection() as c:
        return [_row(found) for found in await c.fetch(query, *args, limit)]


async def find_job(db: Database, job_id: str, now: float) -> JobRow | None:
    async with db.connection() as c:
        found = await c.fetchrow(_ONE, job_id, now)
    return _row(found) if found else None


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
    update = _RETRY_BATCH.format(where=clause, n=len(args) + 2)
    total = 0
    while True:
        async with db.transaction() as c:
            done = int(str(await c.execute(update, *args, ended_before, batch)).rsplit(" ", 1)[1])
        if not done:
            return total
        total += done
