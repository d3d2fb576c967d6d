"""The operator console's reads and its bulk retry in the SQLite store.

Its queries select their own columns: never request headers, bodies or bindings. Counts stop
at a limit and run on indexes (`jobs_queue`, `jobs_ended`, `jobs_failed`), so a page costs the
same with a million jobs stored.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection
from typing import Any

from gateway import encoding
from gateway.jobs import Answer, Failure, Job, Status
from gateway.store.sqlite import statements as sql
from gateway.store.sqlite.reader import Reader
from gateway.store.sqlite.writer import Writer
from gateway.store.views import OUTCOMES, Filter, JobRow, Lane, row

_COLUMNS = (
    "seq, id, route, upstream, status, method, target, created_at, started_at, finished_at,"
    " attempts, request_size, answer, failure"
)
_LANES = "SELECT upstream, queued, running FROM lanes"
_OLDEST = (
    "SELECT created_at FROM jobs WHERE status = 'queued' AND upstream = ? ORDER BY seq LIMIT 1"
)
_ENDED = (
    "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE upstream = ? AND status = ?"
    " AND finished_at >= ? LIMIT ?)"
)
_ONE = (
    f"SELECT {_COLUMNS} FROM jobs WHERE id = ? AND status != 'receiving'"
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
        column = "target" if where.by_path else "id"
        terms.append(f"{column} >= ? AND {column} < ?")
        args += [where.prefix, where.prefix + "\U0010ffff"]
    if after is not None:
        terms.append("seq < ?")
        args.append(int(after))
    return "WHERE " + " AND ".join(terms), args


def _row(found: Any) -> JobRow:
    seq, job_id, route, upstream, status, method, target, *times, answer, failure = found
    created_at, started_at, finished_at, attempts, request_size = times
    job = Job(
        id=job_id,
        route=route,
        upstream=upstream,
        status=Status(status),
        method=method,
        target=target,
        created_at=created_at,
        started_at=started_at,
        finished_at=finished_at,
        attempts=attempts,
        request_size=request_size,
        answer=_answer(encoding.loads(answer)) if answer else None,
        failure=Failure(*encoding.loads(failure)) if failure else None,
    )
    return row(str(seq), job)


def _answer(fields: list[Any]) -> Answer:
    status, reason, headers, size = fields
    return Answer(status, reason, tuple((name, value) for name, value in headers), size)


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
    query = f"SELECT {_COLUMNS} FROM jobs {clause} ORDER BY seq DESC LIMIT ?"
    return [_row(found) for found in await reader.all(query, (*args, limit))]


async def find_job(reader: Reader, job_id: str, now: float) -> JobRow | None:
    found = await reader.one(_ONE, (job_id, now))
    return _row(found) if found else None


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
