"""When a commit is on disk, and how a reader knows.

The writer's connection runs `synchronous = NORMAL`: SQLite writes a commit to the WAL without
waiting for the disk, and the writer syncs the WAL itself once it has given up its turn at the
write lock. A sync then no longer holds the lock, so the processes sharing a file
(`server.workers`) sync side by side instead of one after another. Callers still hear of a write
only after that sync: a 202 waits for the disk as before. A sync covers every commit written to
the WAL before it, whoever wrote it; a checkpoint syncs the WAL before it copies and the
database after, so a commit copied out of the WAL is on disk too.

Between its COMMIT and its sync a commit is visible to other connections and not yet on disk.
A writer holds a shared flock on `<db>-sync` over that span. A reader about to show a state that
must not be taken back after a power loss (a job that ended) checks that no writer holds it, and
syncs the WAL itself if one does: what it read was committed before its check, so either its
writer had synced by then or the reader's own sync covers it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator


class Durability:
    def __init__(self, path: str) -> None:
        self._wal = path + "-wal"
        self._marks = path + "-sync"
        self._holding: int | None = None  # the writer's hold, shared with other writers
        self._checking: int | None = None  # a reader's look, exclusive for a moment

    def open(self) -> None:
        # flock needs no write access: any user who may write the database can take part
        flags = os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC
        self._holding = os.open(self._marks, flags, 0o644)
        self._checking = os.open(self._marks, flags, 0o644)

    def close(self) -> None:
        for fd in (self._holding, self._checking):
            if fd is not None:
                os.close(fd)
        self._holding = self._checking = None

    @contextlib.contextmanager
    def committing(self) -> Iterator[None]:
        """Around a write transaction: readers see it as unsynced until the WAL is synced
        after it. A transaction that fails is not synced (nothing of it is visible)."""
        assert self._holding is not None, "open() first"
        fcntl.flock(self._holding, fcntl.LOCK_SH)
        try:
            yield
            self.sync()
        finally:
            fcntl.flock(self._holding, fcntl.LOCK_UN)

    def settled(self) -> bool:
        """Whether no writer is between a COMMIT and its sync just now."""
        assert self._checking is not None, "open() first"
        try:
            fcntl.flock(self._checking, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(self._checking, fcntl.LOCK_UN)
        return True

    def sync(self) -> None:
        """Put every commit written to the WAL so far on disk."""
        fd = os.open(self._wal, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fdatasync(fd)  # as SQLite syncs: the data, and the size needed to read it
        finally:
            os.close(fd)
