"""SQL for the PostgreSQL store, every statement under a name. Every transition is a
compare-and-set on the state it expects; what must see other replicas' commits (a claim's cap,
an Idempotency-Key) is read by a statement that starts after an advisory lock is held.

Times that decide who may act (a lease, a callback's turn) are on the database's clock (`NOW`),
so replicas whose clocks disagree still agree on them; a retry's due time (`not_before`) is the
caller's, as are the times shown to clients.
"""

from __future__ import annotations

from gateway.store.rows import NAMES

NOW = "extract(epoch FROM now())::float8"
CHANNEL = "gateway_ended"  # pg_notify's channel: the id of each job that ended
FINAL = "('completed', 'failed', 'canceled')"
COLUMNS = ", ".join("NULL::float8" if name == "lease_until" else name for name in NAMES)
_VISIBLE = (
    "FROM jobs WHERE id = $1 AND status <> 'receiving' AND (expires_at IS NULL OR expires_at > $2)"
)
GET = f"SELECT {COLUMNS.replace('request_headers', 'NULL')} {_VISIBLE}"
GET_WITH_REQUEST = f"SELECT {COLUMNS} {_VISIBLE}"
PIECE = (
    "SELECT data, EXISTS (SELECT 1 FROM bodies WHERE job_id = $1 AND part = $2 AND n = $3 + 1)"
    " FROM bodies WHERE job_id = $1 AND part = $2 AND n = $3"
)
INSERT = (
    "INSERT INTO jobs (id, route, upstream, status, method, target, request_headers,"
    " request_size, retry_on_interrupt, binding, callback, created_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
)
# A whole request of one piece, queued, in one statement: one round trip, its own transaction.
ENQUEUE = (
    "WITH j AS (INSERT INTO jobs (id, route, upstream, status, method, target, request_headers,"
    " request_size, retry_on_interrupt, binding, callback, created_at)"
    " VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id)"
    " INSERT INTO bodies SELECT id, 0, 0, $12 FROM j"
)
PUT_PIECE = (
    "INSERT INTO bodies VALUES ($1, $2, $3, $4)"
    " ON CONFLICT (job_id, part, n) DO UPDATE SET data = excluded.data"
)
DROP_PART = "DELETE FROM bodies WHERE job_id = $1 AND part = $2"
QUEUE_RECEIVED = (
    "UPDATE jobs SET status = 'queued', request_size = $2 WHERE id = $1 AND status = 'receiving'"
)
DELETE_JOB = (
    "WITH b AS (DELETE FROM bodies WHERE job_id = $1), i AS (DELETE FROM idempotency"
    " WHERE job_id = $1) DELETE FROM jobs WHERE id = $1"
)
# Advisory locks, as statements of their own: the statement after one sees every commit made
# by the lock's previous holder, which a lock taken inside that statement would not.
LOCK = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"
# Under the key's lock: the job holding it, if that job is still live.
KEY_HOLDER = (
    "SELECT i.job_id, i.fingerprint FROM idempotency i JOIN jobs j ON j.id = i.job_id"
    " WHERE i.key = $1 AND j.status <> 'receiving' AND (j.expires_at IS NULL OR j.expires_at > $2)"
)
TAKE_KEY = (
    "INSERT INTO idempotency VALUES ($1, $2, $3) ON CONFLICT (key)"
    " DO UPDATE SET job_id = excluded.job_id, fingerprint = excluded.fingerprint"
)
# The claim (schema.py's gateway_claim: the upstream's lock, then the claim), one round trip:
# each job's columns, then its request's first body piece and whether more pieces follow.
_CLAIMED = ", ".join("NULL::float8" if n == "lease_until" else f"(job).{n}" for n in NAMES)
CLAIM = f"SELECT {_CLAIMED}, first_piece, more FROM gateway_claim($1, $2, $3, $4, $5)"
# A process's heartbeat: its leases hold while it beats (one row per process, not a rewrite
# of every job it runs).
BEAT = (
    f"INSERT INTO replicas VALUES ($1, {NOW} + $2) ON CONFLICT (owner)"
    " DO UPDATE SET alive_until = excluded.alive_until"
)
# Jobs its holder no longer runs (its call ended without a record): they lapse at once. A
# claim younger than a second is spared: it may have come after the holder listed its calls.
ORPHANS = (
    "UPDATE jobs SET orphan = true WHERE owner = $1 AND status = 'running' AND NOT orphan"
    f" AND id <> ALL($2::text[]) AND claimed_at < {NOW} - 1"
)
# Running jobs with the seconds left on their lease, by the database's clock.
RUNNING = (
    "SELECT "
    + COLUMNS.replace(
        "NULL::float8",
        f"CASE WHEN j.orphan OR r.alive_until IS NULL THEN -1 ELSE r.alive_until - {NOW} END",
    ).replace("owner", "j.owner")
    + " FROM jobs j LEFT JOIN replicas r ON r.owner = j.owner WHERE j.status = 'running'"
)
STEAL = (
    f"UPDATE jobs j SET owner = $2, claimed_at = {NOW}, orphan = false WHERE id = $1"
    " AND status = 'running' AND owner = $3 AND attempts = $4 AND (orphan OR NOT EXISTS"
    f" (SELECT 1 FROM replicas r WHERE r.owner = $3 AND r.alive_until > {NOW}))"
)
FINISH = (
    "UPDATE jobs SET status = $3, finished_at = $4, expires_at = $5, owner = NULL, answer = $6,"
    " failure = $7, request_headers = CASE WHEN $3 = 'completed' THEN NULL"
    " ELSE request_headers END WHERE id = $1 AND status = 'running' AND owner = $2"
    " RETURNING callback"
)
# A completion in one statement (one round trip, a transaction of its own): the answer's last
# piece, the request's body dropped, the callback owed and the word to every replica, all only
# if the job was still running under this owner. A row back means it was.
COMPLETE = (
    "WITH f AS (UPDATE jobs SET status = 'completed', finished_at = $3, expires_at = $4,"
    " owner = NULL, answer = $5, request_headers = NULL"
    " WHERE id = $1 AND status = 'running' AND owner = $2 RETURNING id, callback),"
    " p AS (INSERT INTO bodies SELECT id, 1, $6::int, $7::bytea FROM f WHERE $7 IS NOT NULL"
    " ON CONFLICT (job_id, part, n) DO UPDATE SET data = excluded.data),"
    " r AS (DELETE FROM bodies WHERE job_id = $1 AND part = 0 AND EXISTS (SELECT 1 FROM f)),"
    " c AS (INSERT INTO callbacks (webhook_id, job_id, url, next_at)"
    f" SELECT $8, id, callback, {NOW} FROM f WHERE callback IS NOT NULL)"
    f" SELECT pg_notify('{CHANNEL}', id) FROM f"
)
CANCEL = (
    "UPDATE jobs SET status = 'canceled', finished_at = $2, expires_at = $3, owner = NULL,"
    " request_headers = NULL WHERE id = $1 AND status IN ('queued', 'running') RETURNING callback"
)
OWE_CALLBACK = (
    f"INSERT INTO callbacks (webhook_id, job_id, url, next_at) VALUES ($1, $2, $3, {NOW})"
)
NOTIFY = f"SELECT pg_notify('{CHANNEL}', $1)"
ENDED = f"SELECT id FROM jobs WHERE id = ANY($1::text[]) AND status IN {FINAL}"
REQUEUE = (
    "UPDATE jobs SET status = 'queued', owner = NULL, not_before = $3"
    " WHERE id = $1 AND status = 'running' AND owner = $2"
)
RETRY = (
    "UPDATE jobs SET status = 'queued', attempts = 0, failure = NULL, finished_at = NULL,"
    " expires_at = NULL, not_before = 0 WHERE id = $1 AND status = 'failed'"
)
FORGET = f"DELETE FROM jobs WHERE id = $1 AND status IN {FINAL} RETURNING id"
DUE_CALLBACK = (
    f"UPDATE callbacks SET next_at = {NOW} + $1, attempts = attempts + 1 WHERE webhook_id ="
    f" (SELECT webhook_id FROM callbacks WHERE next_at <= {NOW} ORDER BY next_at LIMIT 1"
    " FOR UPDATE SKIP LOCKED) RETURNING webhook_id, job_id, url, attempts"
)
CALLBACK_DONE = "DELETE FROM callbacks WHERE webhook_id = $1"
CALLBACK_LATER = f"UPDATE callbacks SET next_at = {NOW} + $2 WHERE webhook_id = $1"
LIST = (
    f"SELECT {COLUMNS} FROM jobs WHERE status <> 'receiving'"
    " AND ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR route = $2)"
    " ORDER BY seq DESC LIMIT $3"
)
QUEUED = "SELECT count(*) FROM (SELECT 1 FROM jobs WHERE status = 'queued' LIMIT $1) q"
QUEUED_BY_UPSTREAM = "SELECT upstream, count(*) FROM jobs WHERE status = 'queued' GROUP BY upstream"
# Batches that several replicas' sweeps split between them (SKIP LOCKED), each its own short
# transaction, with what is stored for each job.
_DELETE_FOUND = (
    "WITH b AS (DELETE FROM bodies WHERE job_id IN (SELECT id FROM gone)),"
    " i AS (DELETE FROM idempotency WHERE job_id IN (SELECT id FROM gone))"
    " DELETE FROM jobs WHERE id IN (SELECT id FROM gone)"
)
EXPIRED = (
    "WITH old AS (SELECT id FROM jobs WHERE expires_at <= $1 LIMIT 500 FOR UPDATE SKIP LOCKED),"
    " stale AS (SELECT id FROM jobs WHERE status = 'receiving' AND created_at < $2 LIMIT 500"
    " FOR UPDATE SKIP LOCKED), gone AS (SELECT id FROM old UNION ALL SELECT id FROM stale), "
    + _DELETE_FOUND.removeprefix("WITH ")
)
FINISHED_BEFORE = (
    f"WITH gone AS (SELECT id FROM jobs WHERE status IN {FINAL} AND finished_at < $1"
    " LIMIT 500 FOR UPDATE SKIP LOCKED), " + _DELETE_FOUND.removeprefix("WITH ")
)
DEAD_REPLICAS = f"DELETE FROM replicas WHERE alive_until < {NOW} - 3600"
PING = "UPDATE gateway_meta SET value = value WHERE key = 'schema_version'"
