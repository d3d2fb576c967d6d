"""SQL for the SQLite store: queries and the operations the writer runs.

Each operation is a plain module-level function whose first argument is a sqlite3 connection,
run inside the writer's transaction; nothing here awaits or opens connections. The store hands
them to the writer as `Call`s: data that names the function and its arguments, which pickles, so
a writer in another process could run them (tried for `server.workers`; benchmarks/README.md
says why it was not kept).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from typing import Any

from gateway import encoding
from gateway.errors import IdempotencyConflict
from gateway.jobs import NewJob, Status, new_webhook_id
from gateway.store import Part
from gateway.store.rows import NAMES


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """`fn(connection, *args)`: an operation as data, picklable by reference to `fn`."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()

    def __call__(self, c: sqlite3.Connection) -> Any:
        return self.fn(c, *self.args)


def call(fn: Callable[..., Any], *args: Any) -> Call:
    return Call(fn, args)


QUEUED = "SELECT coalesce(sum(queued), 0) FROM lanes"
QUEUED_BY_UPSTREAM = "SELECT upstream, queued FROM lanes WHERE queued > 0"


COLUMNS = ", ".join(NAMES)
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
RUNNING = f"SELECT {COLUMNS} FROM jobs WHERE status = 'running'"
LIST = (
    f"SELECT {COLUMNS} FROM jobs WHERE status != 'receiving'"
    " AND (? IS NULL OR status = ?) AND (? IS NULL OR route = ?) ORDER BY seq DESC LIMIT ?"
)
# Transitions: each a compare-and-set on the state it expects.
REQUEUE = (
    "UPDATE jobs SET status = 'queued', owner = NULL, lease_until = NULL,"
    " not_before = ? WHERE id = ? AND status = 'running' AND owner = ?"
)
CANCEL = (
    "UPDATE jobs SET status = 'canceled', finished_at = ?, expires_at = ?, owner = NULL,"
    " lease_until = NULL, request_headers = NULL WHERE id = ? AND status IN ('queued', 'running')"
)
RETRY = (
    "UPDATE jobs SET status = 'queued', attempts = 0, failure = NULL, finished_at = NULL,"
    " expires_at = NULL, not_before = 0 WHERE id = ? AND status = 'failed'"
)
RENEW = "UPDATE jobs SET lease_until = ? WHERE id = ? AND owner = ? AND status = 'running'"
STEAL = (
    "UPDATE jobs SET owner = ?, lease_until = ? WHERE id = ? AND status = 'running'"
    " AND owner = ? AND lease_until = ?"
)
# The oldest due callback, leased until a time so that one process delivers it at a time: the
# outer `next_at <= ?` makes the update a compare-and-set on the row still being due.
DUE_CALLBACK = (
    "UPDATE callbacks SET next_at = ?1, attempts = attempts + 1 WHERE webhook_id ="
    " (SELECT webhook_id FROM callbacks WHERE next_at <= ?2 ORDER BY next_at LIMIT 1)"
    " AND next_at <= ?2 RETURNING webhook_id, job_id, url, attempts"
)
# An Idempotency-Key taken for a job: inserted, or taken over only from a job that is no longer
# live (gone, past retention); no row back means a live job holds it.
TAKE_KEY = (
    "INSERT INTO idempotency (key, job_id, fingerprint) VALUES (?1, ?2, ?3)"
    " ON CONFLICT (key) DO UPDATE SET job_id = excluded.job_id,"
    " fingerprint = excluded.fingerprint WHERE NOT EXISTS (SELECT 1 FROM jobs j"
    " WHERE j.id = idempotency.job_id AND j.status != 'receiving'"
    " AND (j.expires_at IS NULL OR j.expires_at > ?4)) RETURNING job_id"
)
# Forgetting is one compare-and-set: the job row goes only if it is finished.
FORGET = "DELETE FROM jobs WHERE id = ? AND status IN ('completed', 'failed', 'canceled')"
CALLBACK_DONE = "DELETE FROM callbacks WHERE webhook_id = ?"
CALLBACK_LATER = "UPDATE callbacks SET next_at = ? WHERE webhook_id = ?"
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
            encoding.dumps_text(job.headers),
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
    same request; another request under that key is a conflict. The key is taken by one
    compare-and-set (insert it, or take it over from a job that is gone), so two accepts under
    one key make one job whatever runs them side by side.
    """
    if job.idempotency_key:
        taken = c.execute(TAKE_KEY, (job.idempotency_key, job.id, digest, job.created_at))
        if taken.fetchone() is None:
            earlier = c.execute(
                "SELECT job_id, fingerprint FROM idempotency WHERE key = ?",
                (job.idempotency_key,),
            ).fetchone()
            if earlier[1] != digest:
                raise IdempotencyConflict("the key was used for another request")
            if isinstance(body, int):
                delete(c, job.id)
            return str(earlier[0])
    if isinstance(body, bytes):
        insert(c, job, Status.QUEUED, body)
    else:
        c.execute(
            "UPDATE jobs SET status = 'queued', request_size = ? WHERE id = ?"
            " AND status = 'receiving'",
            (body, job.id),
        )
    return job.id


def put_chunk(c: sqlite3.Connection, job_id: str, part: Part, n: int, data: bytes) -> None:
    c.execute("INSERT OR REPLACE INTO bodies VALUES (?, ?, ?, ?)", (job_id, part, n, data))


def drop_part(c: sqlite3.Connection, job_id: str, part: Part) -> None:
    c.execute("DELETE FROM bodies WHERE job_id = ? AND part = ?", (job_id, part))


def fetch_one(c: sqlite3.Connection, query: str, args: tuple[Any, ...]) -> Any:
    return c.execute(query, args).fetchone()


def execute(c: sqlite3.Connection, query: str, args: tuple[Any, ...]) -> None:
    c.execute(query, args)


def swapped(c: sqlite3.Connection, update: str, args: tuple[Any, ...]) -> bool:
    """One compare-and-set UPDATE: whether it found its row still as expected."""
    return bool(c.execute(update, args).rowcount == 1)


def binding_key(c: sqlite3.Connection, fresh: str) -> str:
    """The store's binding key: `fresh` if none was kept yet."""
    c.execute("INSERT OR IGNORE INTO meta VALUES ('binding_key', ?)", (fresh,))
    return str(c.execute("SELECT value FROM meta WHERE key = 'binding_key'").fetchone()[0])


def claim(c: sqlite3.Connection, args: tuple[Any, ...]) -> list[Any]:
    """The rows CLAIM took; an answer half-stored by an earlier try is dropped."""
    rows = c.execute(CLAIM, args).fetchall()
    c.executemany(
        "DELETE FROM bodies WHERE job_id = ? AND part = ?",
        [(row[0], Part.ANSWER) for row in rows],
    )
    return list(rows)


def complete(
    c: sqlite3.Connection,
    job_id: str,
    owner: str,
    last: tuple[int, bytes] | None,
    head: str,
    now: float,
    expires_at: float,
) -> bool:
    """The answer's last piece (if any) and the completion, in one transaction."""
    if last is not None:
        put_chunk(c, job_id, Part.ANSWER, *last)
    done = finish(c, job_id, owner, "completed", now, expires_at, answer=head)
    if done:
        c.execute("UPDATE jobs SET request_headers = NULL WHERE id = ?", (job_id,))
    drop_part(c, job_id, Part.REQUEST if done else Part.ANSWER)
    return done


def cancel(c: sqlite3.Connection, job_id: str, now: float, expires_at: float) -> bool:
    done = c.execute(CANCEL, (now, expires_at, job_id)).rowcount == 1
    if done:
        c.execute("DELETE FROM bodies WHERE job_id = ?", (job_id,))
        owe_callback(c, job_id, now)
    return done


def forget(c: sqlite3.Connection, job_id: str) -> bool:
    if c.execute(FORGET, (job_id,)).rowcount != 1:
        return False
    delete(c, job_id)
    return True


def renew(c: sqlite3.Connection, owner: str, job_ids: list[str], lease_until: float) -> None:
    c.executemany(RENEW, [(lease_until, job_id, owner) for job_id in job_ids])


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
