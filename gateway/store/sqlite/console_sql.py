"""The operator console's reads and its bulk retry in the SQLite store.

Its queries select their own columns: never request headers, bodies or bindings. Counts stop
at a limit and run on indexes (`jobs_queue`, `jobs_ended`, `jobs_failed`), so a page costs the
same with a million jobs stored.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from typing import Any

from gateway.jobs import Status
from gateway.store.sqlite import statements as sql
from gateway.store.sqlite.reader import Reader
from gateway.store.sqlite.writer import Writer
from gateway.store.views import COLUMNS, OUTCOMES, Filter, JobRow, Lane, row_of

ID_TIME = 8  # characters of time at the start of a job id (jobs.new_id)
_LANES = "SELECT upstream, queued, running FROM lanes"
_OLDEST = (
    "SELECT created_at FROM jobs WHERE status = 'queued' AND upstream = ? ORDER BY seq LIMIT 1"
)
_ENDED = (
    "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE upstream = ? AND status = ?"
    " AND finished_at >= ? LIMIT ?)"
)
_ONE = (
    f"SELECT {COLUMNS} FROM jobs WHERE id = ? AND status != 'receiving'"
    " AND (expires_at IS NULL OR expires_at > ?)"
)
_RETRY_BATCH = (
    "UPDATE jobs SET status = 'queued', attempts = 0, failure = NULL, finished_at = NULL,"
    " expires_at = NULL, not_before = 0 WHERE seq IN (SELECT seq FROM jobs {where} LIMIT ?)"
    " AND status = 'failed'"
)


def _where(where: Filter, after: str | None = None) -> tuple[str, list[Any]]:
    """The WHERE clause of a filter. A status is a literal (it is one of the enum's values), so
    SQLite can take the partial index that covers it; everything else is a parameter."""
    terms: list[str] = ["status != 'receiving'"]
    args: list[Any] = []
    if where.status is not None:
        terms.append(f"status = '{Status(where.status).value}'")
    for column, value in (("upstream", where.upstream), ("route", where.route)):
        if value is not None:
            terms.append(f"{column} = ?")
            args.append(value)
    if where.prefix:
        terms.append(f"{_prefixed(where)} >= ? AND {_prefixed(where)} < ?")
        args += [where.prefix, where.prefix + "\U0010ffff"]
    if after is not None:
        terms.append("seq < ?")
        args.append(int(after))
    return "WHERE " + " AND ".join(terms), args


def _prefixed(where: Filter) -> str:
    """The column a prefix is compared with. An id begins with its time in 8 characters, so a
    prefix that long or shorter can match every job: it is checked while walking newest first
    (`+id` keeps SQLite off the id index, whose range would then be sorted whole); a longer one
    reaches into the random part and finds its few jobs by the index."""
    if where.by_path:
        return "target"
    return "id" if len(where.prefix or "") > ID_TIME else "+id"


async def lanes(
    reader: Reader, upstreams: Collection[str], since: float, at_most: int
) -> list[Lane]:
    counts = {str(u): (int(q), int(r)) for u, q, r in await reader.all(_LANES, ())}
    found = []
    for upstream in upstreams:
        queued, running = counts.get(upstream, (0, 0))
        oldest = await reader.one(_OLDEST, (upstream,)) if queued else None
        ended = {}
        for outcome in OUTCOMES:
            hit = await reader.all(_ENDED, (upstream, str(outcome), since, at_most))
            ended[str(outcome)] = int(hit[0][0])
        failed = await reader.all(_ENDED, (upstream, "failed", float("-inf"), at_most))
        found.append(
            Lane(
                upstream=upstream,
                queued=min(queued, at_most),
                running=running,
                oldest_queued_at=oldest[0] if oldest else None,
                ended=ended,
                failed=int(failed[0][0]),
            )
        )
    return found


async def find_jobs(reader: Reader, where: Filter, after: str | None, limit: int) -> list[JobRow]:
    clause, args = _where(where, after)
    query = f"SELECT {COLUMNS} FROM jobs {clause} ORDER BY seq DESC LIMIT ?"
    return [row_of(found) for found in await reader.all(query, (*args, limit))]


async def find_job(reader: Reader, job_id: str, now: float) -> JobRow | None:
    found = await reader.one(_ONE, (job_id, now))
    return row_of(found) if found else None


async def count_jobs(reader: Reader, where: Filter, at_most: int) -> int:
    clause, args = _where(where)
    query = f"SELECT count(*) FROM (SELECT 1 FROM jobs {clause} LIMIT ?)"
    return int((await reader.all(query, (*args, at_most)))[0][0])


async def retry_failed(writer: Writer, where: Filter, ended_before: float, batch: int) -> int:
    if where.status not in (None, Status.FAILED):
        return 0
    clause, args = _where(Filter(Status.FAILED, where.upstream, where.route, where.prefix))
    update = _RETRY_BATCH.format(where=clause + " AND finished_at < ?")
    total = 0
    while done := await writer.run(sql.call(retried, update, (*args, ended_before, batch))):
        total += done
    return total


def retried(c: sqlite3.Connection, update: str, args: tuple[Any, ...]) -> int:
    """One batch of the bulk retry, in the writer's transaction: how many it queued again."""
    return int(c.execute(update, args).rowcount)
