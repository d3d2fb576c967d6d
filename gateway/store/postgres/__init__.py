"""The PostgreSQL backend: replicas on several hosts share one database (asyncpg)."""

from gateway.store.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
