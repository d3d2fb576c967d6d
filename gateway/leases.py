"""Leases and what keeps them honest: who holds a running job, and the housekeeping tick that
renews this process's leases, settles the jobs of processes that died, and sweeps expired jobs.

It decides nothing about a job's outcome: a job taken from a dead holder is handed back to the
dispatcher to settle, by the same rule as a call cut off by a drain.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Collection

from gateway.errors import StorageError
from gateway.jobs import Job
from gateway.store import Store

log = logging.getLogger("gateway.leases")
LEASE = 15.0  # a running job's lease; renewed every LEASE / 3 while its call goes on
STALE_UPLOAD = 3600.0  # an upload unfinished this long is abandoned


def new_owner() -> str:
    """host:pid:random, so a restarted process can tell its dead predecessor's leases."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def dead_predecessor(owner: str, me: str) -> bool:
    """Whether a lease's holder is a process on this host that is gone.

    Our own pid under another token (a container restarted as pid 1) or a pid that no longer
    runs; anything else waits for the lease to run out.
    """
    host, pid, _ = ([*owner.split(":"), "", "", ""])[:3]
    my_host, my_pid, _ = me.split(":")
    if owner == me or host != my_host or not pid.isdigit():
        return False
    return pid == my_pid or not _running(int(pid))


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Housekeeping:
    """One tick for leases, recovery and retention, every LEASE / 3 (or sooner, for a short
    retention); `calls` names the jobs whose calls this process is making now."""

    def __init__(
        self,
        store: Store,
        owner: str,
        lease: float,
        retention: float,
        clock: Callable[[], float],
        calls: Callable[[], Collection[str]],
        settle: Callable[[Job], Awaitable[None]],
    ) -> None:
        self._store = store
        self._owner = owner
        self._lease = lease
        self._retention = retention
        self._clock = clock
        self._calls = calls
        self._settle = settle

    async def run(self) -> None:
        sweep_every = min(60.0, max(1.0, self._retention / 4))
        tick = min(self._lease / 3, sweep_every)
        failing = ""  # the error last logged: an outage is one line, not one a tick
        while True:
            now = self._clock()
            try:
                await self._store.renew(self._owner, list(self._calls()), now + self._lease)
                await self.recover(now)
                await self.sweep(now)
                failing = ""
            except StorageError as e:
                if str(e) != failing:
                    failing = str(e)
                    log.error(
                        "housekeeping failed",
                        extra={"event": "housekeeping_failed", "error": failing},
                    )
            await asyncio.sleep(tick)

    async def sweep(self, now: float) -> int:
        """Delete expired jobs in small batches, each its own transaction, found by index."""
        total = 0
        while (deleted := await self._store.purge(now, now - STALE_UPLOAD)) > 0:
            total += deleted
            await asyncio.sleep(0)  # let accepts and claims in between batches
        if total:
            log.info("swept", extra={"event": "swept", "jobs": total})
        return total

    async def recover(self, now: float) -> int:
        """Settle running jobs whose process died: retried or failed per `on_interrupt`."""
        settled = 0
        for job in await self._store.running():
            holder, lease_until = job.owner or "", job.lease_until or 0.0
            if job.id in self._calls():  # ours, and its call is still going on
                continue
            if not (lease_until < now or dead_predecessor(holder, self._owner)):
                continue
            if await self._store.steal(job, self._owner, now + self._lease):
                log.warning(
                    "job recovered",
                    extra={"event": "job_recovered", "job_id": job.id, "from": holder},
                )
                await self._settle(job)
                settled += 1
        return settled
