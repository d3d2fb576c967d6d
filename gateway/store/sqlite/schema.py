"""The SQLite file's tables, indexes and triggers, and bringing a file from an older version
up to date; run once by the writer's connection when it opens.
"""

from __future__ import annotations

import sqlite3


def create(c: sqlite3.Connection) -> None:
    """Every table, index and trigger that is missing."""
    c.executescript(SCHEMA)
    lanes_schema(c)


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
CREATE INDEX IF NOT EXISTS jobs_ended ON jobs (upstream, status, finished_at)
    WHERE finished_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_failed ON jobs (seq) WHERE status = 'failed';
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
