"""The PostgreSQL tables, indexes and storage settings, created or upgraded at start under an
advisory lock, so replicas that start together take turns instead of racing."""

from __future__ import annotations

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Connection = asyncpg.Connection | PoolConnectionProxy
VERSION = 2  # 2: the claim as a function (one round trip)
SCHEMA_LOCK = 0x6761_7465_7761_7901  # pg_advisory_xact_lock's key for the schema ("gateway")

SCHEMA = """
CREATE TABLE IF NOT EXISTS gateway_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id text NOT NULL UNIQUE,
    route text NOT NULL,
    upstream text NOT NULL,
    status text NOT NULL,
    method text NOT NULL,
    target text NOT NULL,
    request_headers text,
    request_size bigint NOT NULL DEFAULT 0,
    retry_on_interrupt boolean NOT NULL,
    binding text NOT NULL DEFAULT '',
    callback text,
    created_at double precision NOT NULL,
    started_at double precision,
    finished_at double precision,
    attempts integer NOT NULL DEFAULT 0,
    not_before double precision NOT NULL DEFAULT 0,
    owner text,
    claimed_at double precision,
    orphan boolean NOT NULL DEFAULT false,
    expires_at double precision,
    answer text,
    failure text
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02,
        autovacuum_analyze_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 1);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (upstream, seq) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS jobs_running ON jobs (upstream) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS jobs_expiry ON jobs (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_receiving ON jobs (created_at) WHERE status = 'receiving';
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS bodies (
    job_id text NOT NULL,
    part smallint NOT NULL,
    n integer NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (job_id, part, n)
) WITH (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 1);
-- pieces out of line and uncompressed: read and written whole, by key
ALTER TABLE bodies ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE TABLE IF NOT EXISTS idempotency (
    key text PRIMARY KEY,
    job_id text NOT NULL,
    fingerprint text NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_job ON idempotency (job_id);
CREATE TABLE IF NOT EXISTS callbacks (
    webhook_id text PRIMARY KEY,
    job_id text NOT NULL,
    url text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_at double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS callbacks_due ON callbacks (next_at);
CREATE TABLE IF NOT EXISTS replicas (
    owner text PRIMARY KEY,
    alive_until double precision NOT NULL
);
-- A claim in one round trip: the upstream's advisory lock as a statement of its own, then the
-- claim as the next, which in READ COMMITTED takes a fresh snapshot and so sees every claim
-- committed by the lock's previous holder (one statement taking the lock would not: its
-- snapshot predates the wait, and the cap overshoots). It counts the upstream's running jobs,
-- takes at most least(p_limit, p_cap - running) of its oldest due queued jobs, drops an answer
-- half-stored by an earlier try, and returns each job with its request's first body piece.
CREATE OR REPLACE FUNCTION gateway_claim(
    p_upstream text, p_limit bigint, p_cap bigint, p_owner text, p_now float8
) RETURNS TABLE (job jobs, first_piece bytea, more boolean) LANGUAGE plpgsql AS $claim$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('gateway:claim:' || p_upstream, 0));
    RETURN QUERY
    WITH due AS MATERIALIZED (
        SELECT q.seq FROM jobs q WHERE q.upstream = p_upstream AND q.status = 'queued'
        AND q.not_before <= p_now ORDER BY q.seq LIMIT greatest(0, least(p_limit, p_cap
        - (SELECT count(*) FROM jobs r WHERE r.upstream = p_upstream AND r.status = 'running')))
        FOR UPDATE SKIP LOCKED
    ), taken AS (
        UPDATE jobs j SET status = 'running', owner = p_owner, started_at = p_now,
        claimed_at = extract(epoch FROM now())::float8, orphan = false,
        attempts = j.attempts + 1 FROM due WHERE j.seq = due.seq AND j.status = 'queued'
        RETURNING j.*
    ), dropped AS (
        DELETE FROM bodies b USING taken t WHERE b.job_id = t.id AND b.part = 1
    )
    SELECT t::jobs, b.data, EXISTS (SELECT 1 FROM bodies m
        WHERE m.job_id = t.id AND m.part = 0 AND m.n = 1)
    FROM taken t LEFT JOIN bodies b ON b.job_id = t.id AND b.part = 0 AND b.n = 0;
END
$claim$;
"""


CURRENT = "SELECT value::int FROM gateway_meta WHERE key = 'schema_version'"


async def create(c: Connection) -> None:
    """Bring the database's schema up to VERSION; one replica at a time. A database already
    there is left alone: its DDL would lock tables other replicas are writing."""
    async with c.transaction():
        await c.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
        exists = await c.fetchval("SELECT to_regclass('gateway_meta') IS NOT NULL")
        if exists and (await c.fetchval(CURRENT) or 0) >= VERSION:
            return
        await c.execute(SCHEMA)
        await c.execute(
            "INSERT INTO gateway_meta VALUES ('schema_version', $1)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
            " WHERE gateway_meta.value::int < excluded.value::int",
            str(VERSION),
        )
