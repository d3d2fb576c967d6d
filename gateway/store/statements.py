"""SQL for the SQLite store: the schema, row mapping, and the operations the writer runs.

Each operation is a plain function of a sqlite3 connection, run inside the writer's transaction;
nothing here awaits or opens connections.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from typing import Any

import orjson

from gateway.errors import IdempotencyConflict
from gateway.jobs import Answer, Failure, Job, NewJob, Status, new_webhook_id
from gateway.store import Part

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    route TEXT NOT NULL,
    upstream TEXT NOT NULL,
    status TEXT NOT NULL,
    method TEXT NOT NULL,
    target TEXT NOT NULL,
    request_headers TEXT,
    request_size INTEGER NOT NULL DEFAULT 0,
    retry_on_interrupt INTEGER NOT NULL,
    binding TEXT NOT NULL DEFAULT '',
    callback TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    owner TEXT,
    lease_until REAL,
    expires_at REAL,
    answer TEXT,
    failure TEXT
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (upstream, seq) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS jobs_leases ON jobs (lease_until) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_receiving ON jobs (created_at) WHERE status = 'receiving';
CREATE TABLE IF NOT EXISTS bodies (
    job_id TEXT NOT NULL,
    part INTEGER NOT NULL,
    n INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (job_id, part, n)
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_job ON idempotency (job_id);
CREATE TABLE IF NOT EXISTS callbacks (
    webhook_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    url TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS callbacks_due ON callbacks (next_at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# How many jobs of each upstream wait and run, kept by triggers in every transaction that moves
# a job in or out of those states, whatever code path makes it: `max_queued`, the queue gauge
# and the claim's cap on `max_in_flight` across processes read one row instead of counting.
# Created, and filled from the jobs already there, in one transaction (`lanes_schema`).
LANES_TABLE = (
    "CREATE TABLE lanes (upstream TEXT PRIMARY KEY, queued INTEGER NOT NULL,"
    " running INTEGER NOT NULL) WITHOUT ROWID"
)
LANES_FILL = (
    "INSERT INTO lanes SELECT upstream, sum(status = 'queued'), sum(status = 'running')"
    " FROM jobs WHERE status IN ('queued', 'running') GROUP BY upstream"
)
_LANES_ADD = (
    " ON CONFLICT (upstream) DO UPDATE SET queued = queued + excluded.queued,"
    " running = running + excluded.running; END"
)
LANES_TRIGGERS = (
    "CREATE TRIGGER lanes_insert AFTER INSERT ON jobs"
    " WHEN NEW.status IN ('queued', 'running') BEGIN"
    " INSERT INTO lanes VALUES (NEW.upstream, NEW.status = 'queued', NEW.status = 'running')"
    + _LANES_ADD,
    "CREATE TRIGGER lanes_update AFTER UPDATE OF status ON jobs WHEN OLD.status != NEW.status"
    " AND (OLD.status IN ('queued', 'running') OR NEW.status IN ('queued', 'running')) BEGIN"
    " INSERT INTO lanes VALUES (NEW.upstream, (NEW.status = 'queued') - (OLD.status = 'queued'),"
    " (NEW.status = 'running') - (OLD.status = 'running'))" + _LANES_ADD,
    "CREATE TRIGGER lanes_delete AFTER DELETE ON jobs"
    " WHEN OLD.status IN ('queued', 'running') BEGIN"
    " UPDATE lanes SET queued = queued - (OLD.status = 'queued'),"
    " running = running - (OLD.status = 'running') WHERE upstream = OLD.upstream; END",
)
QUEUED = "SELECT coalesce(sum(queued), 0) FROM lanes"
QUEUED_BY_UPSTREAM = "SELECT upstream, queued FROM lanes WHERE queued > 0"


def lanes_schema(c: sqlite3.Connection) -> None:
    """The lanes table and its triggers, if missing; in a transaction of its own, so a count
    taken before the triggers exist cannot miss a job another process queues or claims."""
    c.execute("BEGIN IMMEDIATE")
    try:
        if not c.execute("SELECT 1 FROM sqlite_master WHERE name = 'lanes'").fetchone():
            c.execute(LANES_TABLE)
            c.execute(LANES_FILL)
            for trigger in LANES_TRIGGERS:
                c.execute(trigger)
        c.execute("COMMIT")
    except BaseException:
        c.execute("ROLLBACK")
        raise


# The jobs columns read back, named and ordered as the Job's fields.
_NAMES = tuple(field.name for field in dataclasses.fields(Job))
_STATUS, _HEADERS, _RETRY, _ANSWER, _FAILURE = (
    _NAMES.index(name)
    for name in ("status", "request_headers", "retry_on_interrupt", "answer", "failure")
)
COLUMNS = ", ".join(_NAMES)
_VISIBLE = (
    "FROM jobs WHERE id = ? AND status != 'receiving' AND (expires_at IS NULL OR expires_at > ?)"
)
GET = f"SELECT {COLUMNS.replace('request_headers', 'NULL')} {_VISIBLE}"
GET_WITH_REQUEST = f"SELECT {COLUMNS} {_VISIBLE}"
# A piece, and whether another follows: the last piece (for most bodies the only one) ends the
# reading without a query that finds nothing.
PIECE = (
    "SELECT data, EXISTS (SELECT 1 FROM bodies WHERE job_id = ?1 AND part = ?2 AND n = ?3 + 1)"
    " FROM bodies WHERE job_id = ?1 AND part = ?2 AND n = ?3"
)
# The oldest due queued jobs of one upstream, taken only if still queued (compare-and-set), and
# no more than leave the upstream's running jobs, in every process, within its cap.
CLAIM = (
    "UPDATE jobs SET status = 'running', owner = ?, lease_until = ?, started_at = ?,"
    " attempts = attempts + 1 WHERE seq IN (SELECT seq FROM jobs WHERE status = 'queued'"
    " AND upstream = ? AND not_before <= ? ORDER BY seq LIMIT max(0, min(?, ? - coalesce("
    "(SELECT running FROM lanes WHERE upstream = ?), 0)))) AND status = 'queued'"
    f" RETURNING {COLUMNS}"
)
# A batch of finished jobs that ended before a time (`jobs purge --older-than`).
FINISHED_BEFORE = (
    "SELECT id FROM jobs WHERE status IN ('completed', 'failed', 'canceled')"
    " AND finished_at < ? LIMIT 500"
)
# A batch of jobs past retention and of abandoned uploads, found by index: the sweep costs what
# it deletes, whatever the number of live jobs.
EXPIRED = (
    "SELECT id FROM jobs WHERE expires_at <= ? UNION ALL"
    " SELECT id FROM jobs WHERE status = 'receiving' AND created_at < ? LIMIT 500"
)


def insert(c: sqlite3.Connection, job: NewJob, status: Status, first: bytes) -> None:
    c.execute(
        "INSERT INTO jobs (id, route, upstream, status, method, target, request_headers,"
        " request_size, retry_on_interrupt, binding, callback, created_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            job.id,
            job.route,
            job.upstream,
            str(status),
            job.method,
            job.target,
            orjson.dumps(job.headers).decode(),
            len(first),
            int(job.retry_on_interrupt),
            job.binding,
            job.callback,
            job.created_at,
        ),
    )
    c.execute("INSERT INTO bodies VALUES (?, ?, 0, ?)", (job.id, Part.REQUEST, first))


def enqueue(c: sqlite3.Connection, job: NewJob, digest: str, body: bytes | int) -> str:
    """Queue the job (its whole body, or the size of one received in pieces); the id kept.

    A live job already stored under the same Idempotency-Key is kept instead, if it is the
    same request; another request under that key is a conflict.
    """
    if job.idempotency_key:
        earlier = c.execute(
            "SELECT i.job_id, i.fingerprint FROM idempotency i JOIN jobs j ON j.id = i.job_id"
            " WHERE i.key = ? AND j.status != 'receiving'"
            " AND (j.expires_at IS NULL OR j.expires_at > ?)",
            (job.idempotency_key, job.created_at),
        ).fetchone()
        if earlier is not None:
            if earlier[1] != digest:
                raise IdempotencyConflict("the key was used for another request")
            if isinstance(body, int):
                delete(c, job.id)
            return str(earlier[0])
        c.execute(
            "INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?)",
            (job.idempotency_key, job.id, digest),
        )
    if isinstance(body, bytes):
        insert(c, job, Status.QUEUED, body)
    else:
        c.execute(
            "UPDATE jobs SET status = 'queued', request_size = ? WHERE id = ?"
            " AND status = 'receiving'",
            (body, job.id),
        )
    return job.id


def put_chunk(job_id: str, part: Part, n: int, data: bytes) -> Callable[[sqlite3.Connection], None]:
    def op(c: sqlite3.Connection) -> None:
        c.execute("INSERT OR REPLACE INTO bodies VALUES (?, ?, ?, ?)", (job_id, part, n, data))

    return op


def drop_part(job_id: str, part: Part) -> Callable[[sqlite3.Connection], None]:
    def op(c: sqlite3.Connection) -> None:
        c.execute("DELETE FROM bodies WHERE job_id = ? AND part = ?", (job_id, part))

    return op


def delete_found(c: sqlite3.Connection, query: str, args: tuple[Any, ...]) -> int:
    """Delete every job whose id `query` selects, with all stored for it; how many."""
    ids = [row[0] for row in c.execute(query, args)]
    for job_id in ids:
        delete(c, job_id)
    return len(ids)


def delete(c: sqlite3.Connection, job_id: str) -> None:
    c.execute("DELETE FROM idempotency WHERE job_id = ?", (job_id,))
    c.execute("DELETE FROM bodies WHERE job_id = ?", (job_id,))
    c.execute("DELETE FROM jobs WHERE id = ?", (job_id,))


def finish(
    c: sqlite3.Connection,
    job_id: str,
    owner: str,
    status: str,
    now: float,
    expires_at: float,
    answer: str | None = None,
    failure: str | None = None,
) -> bool:
    cursor = c.execute(
        "UPDATE jobs SET status = ?, finished_at = ?, expires_at = ?, owner = NULL,"
        " lease_until = NULL, answer = ?, failure = ?"
        " WHERE id = ? AND status = 'running' AND owner = ?",
        (status, now, expires_at, answer, failure, job_id, owner),
    )
    if cursor.rowcount != 1:
        return False
    owe_callback(c, job_id, now)
    return True


def owe_callback(c: sqlite3.Connection, job_id: str, now: float) -> None:
    """In the transaction that ends the job, so the callback survives any restart."""
    c.execute(
        "INSERT INTO callbacks (webhook_id, job_id, url, next_at)"
        " SELECT ?, id, callback, ? FROM jobs WHERE id = ? AND callback IS NOT NULL",
        (new_webhook_id(), now, job_id),
    )


def job_of(row: Any) -> Job:
    """A Job from a row of COLUMNS."""
    fields = list(row)
    headers, answer, failure = fields[_HEADERS], fields[_ANSWER], fields[_FAILURE]
    fields[_STATUS] = Status(fields[_STATUS])
    fields[_HEADERS] = _headers(orjson.loads(headers)) if headers else None
    fields[_RETRY] = bool(fields[_RETRY])
    fields[_ANSWER] = _answer(orjson.loads(answer)) if answer else None
    fields[_FAILURE] = Failure(*orjson.loads(failure)) if failure else None
    return Job(*fields)


def _headers(pairs: list[list[str]]) -> tuple[tuple[str, str], ...]:
    return tuple((name, value) for name, value in pairs)


def _answer(fields: list[Any]) -> Answer:
    status, reason, headers, size = fields
    return Answer(status, reason, _headers(headers), size)
