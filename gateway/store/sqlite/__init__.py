"""The embedded default backend: one SQLite file, its writer thread, readers and schema."""

from gateway.store.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
