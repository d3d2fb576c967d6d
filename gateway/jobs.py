"""Jobs, their states and what happens after each try: pure, no I/O, no clock reads.

The dispatcher asks `after_try` what to do with an outcome; `on_restart` settles a job that was
running when its process died. Times are seconds since the epoch, passed in.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from gateway.config import Retry
from gateway.headers import Headers, first, retry_after

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})


class Status(StrEnum):
    RECEIVING = "receiving"  # body still arriving; no 202 sent, swept if abandoned
    QUEUED = "queued"  # stored and acknowledged, waiting for an upstream slot
    RUNNING = "running"  # one process holds a lease on it and is calling the upstream
    COMPLETED = "completed"  # the upstream answered, whatever its status code
    FAILED = "failed"  # no usable answer after all tries
    CANCELED = "canceled"  # a client canceled it before it ended


PENDING = frozenset({Status.QUEUED, Status.RUNNING})
FINAL = frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELED})

FailureKind = Literal["refused", "reset", "timeout", "bad_answer", "interrupted", "internal"]


@dataclass(frozen=True)
class Answer:
    """The head of an upstream's answer; its body lives in storage beside it."""

    status: int
    reason: str
    headers: Headers
    size: int = 0


@dataclass(frozen=True)
class Failure:
    kind: FailureKind
    detail: str
    sent: bool  # the request may have reached the upstream

    @property
    def http_status(self) -> int:
        return 504 if self.kind == "timeout" else 502


@dataclass(frozen=True)
class NewJob:
    """A request as accepted, before storage gives it its place in the queue."""

    id: str
    route: str
    upstream: str
    method: str
    target: str
    headers: Headers
    created_at: float
    retry_on_interrupt: bool
    binding: str = ""
    idempotency_key: str = ""  # a keyed hash of the client's key and credentials, or ""
    callback: str | None = None  # a URL told when the job ends


def fingerprint(job: NewJob) -> Any:
    """A running hash of what makes a request the same: method, target, then the body."""
    return hashlib.sha256(f"{job.method} {job.target}\n".encode())


def digest_of(job: NewJob, pieces: list[bytes]) -> str:
    """The fingerprint's hex digest, or "" when no Idempotency-Key will compare it."""
    if not job.idempotency_key:
        return ""
    digest = fingerprint(job)
    for piece in pieces:
        digest.update(piece)
    return str(digest.hexdigest())


class Whole:
    """A body already read whole: an async iterator of its one piece, whose `data` a store
    may take at once instead of iterating."""

    __slots__ = ("_done", "data")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self._done = False

    def __aiter__(self) -> Whole:
        return self

    async def __anext__(self) -> bytes:
        if self._done or not self.data:
            raise StopAsyncIteration
        self._done = True
        return self.data


@dataclass(frozen=True)
class Job:
    id: str
    route: str
    upstream: str
    status: Status
    method: str
    target: str
    created_at: float
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    request_headers: Headers | None = None
    request_size: int = 0
    retry_on_interrupt: bool = False
    binding: str = ""
    callback: str | None = None
    owner: str | None = None
    lease_until: float | None = None
    answer: Answer | None = None
    failure: Failure | None = None


def as_queued(job: NewJob, size: int) -> Job:
    """The job as storage holds it right after accepting it."""
    return Job(
        id=job.id,
        route=job.route,
        upstream=job.upstream,
        status=Status.QUEUED,
        method=job.method,
        target=job.target,
        created_at=job.created_at,
        request_headers=job.headers,
        request_size=size,
        retry_on_interrupt=job.retry_on_interrupt,
        binding=job.binding,
        callback=job.callback,
    )


_DIGITS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # in byte order


def new_id(now: float) -> str:
    """The time in milliseconds (8 characters that sort as the times do), then 128 random
    bits; URL-safe. Ids of jobs taken in the same period sort together, so each new one
    lands at the end of the indexes keyed by id instead of at a random place in them."""
    ms = int(now * 1000)
    prefix = ""
    for _ in range(8):
        ms, digit = divmod(ms, 62)
        prefix = _DIGITS[digit] + prefix
    return prefix + secrets.token_urlsafe(16)


def new_webhook_id() -> str:
    return "msg_" + secrets.token_urlsafe(16)


def retries_on_interrupt(on_interrupt: str, method: str) -> bool:
    return on_interrupt == "retry" or (on_interrupt == "auto" and method in IDEMPOTENT)


@dataclass(frozen=True)
class Callback:
    """A signed POST owed to a URL because a job ended; `webhook_id` is stable across tries."""

    webhook_id: str
    job_id: str
    url: str
    attempts: int


@dataclass(frozen=True)
class Again:
    delay: float


@dataclass(frozen=True)
class Complete:
    answer: Answer


@dataclass(frozen=True)
class Fail:
    failure: Failure


Decision = Again | Complete | Fail


MAX_HINT = 3600.0  # the longest upstream Retry-After honoured, in seconds


def after_try(
    job: Job, outcome: Answer | Failure, policy: Retry, now: float, rng: random.Random
) -> Decision:
    """What follows one try. `job.attempts` counts the try that just ended."""
    tries_left = job.attempts < policy.attempts
    if isinstance(outcome, Answer):
        retry = tries_left and outcome.status in policy.on_status and job.method in IDEMPOTENT
        if not retry:
            return Complete(outcome)
        hinted = retry_after(first(outcome.headers, "Retry-After"), now)
        if outcome.status in (429, 503) and hinted is not None:
            # Honoured up to an hour: a hint of a billion seconds must not leave the job
            # pending forever.
            return Again(min(hinted, MAX_HINT))
        return Again(backoff(job.attempts, policy, rng))
    if tries_left and (not outcome.sent or job.method in IDEMPOTENT):
        return Again(backoff(job.attempts, policy, rng))
    return Fail(outcome)


def backoff(attempt: int, policy: Retry, rng: random.Random) -> float:
    """Doubling from `backoff`, with equal jitter, capped by `max_backoff`."""
    ceiling = min(policy.max_backoff, policy.backoff * 2.0 ** max(0, attempt - 1))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


def on_restart(job: Job, policy: Retry) -> Fail | None:
    """A job cut off by a crash or a drain: retried (None) or failed as interrupted.

    A retry spends a try like any other, so a request that keeps killing the gateway ends.
    """
    if job.retry_on_interrupt and job.attempts < policy.attempts:
        return None
    detail = (
        "the gateway stopped while this request was with the upstream; "
        "the method is not idempotent, so its outcome is unknown and it was not sent again"
    )
    return Fail(Failure("interrupted", detail, sent=True))


def rfc3339(when: float | None) -> str | None:
    """UTC with milliseconds, as datetime's isoformat gives it (microseconds rounded half to
    even, then cut to milliseconds); the date and time of day are built once per second."""
    if when is None:
        return None
    second = math.floor(when)
    micro = round((when - second) * 1e6)
    if micro == 1_000_000:
        second, micro = second + 1, 0
    return f"{utc_second(second)}.{micro // 1000:03d}Z"


@functools.lru_cache(maxsize=256)
def utc_second(second: int) -> str:
    """A whole second since the epoch as RFC 3339's date and time of day, UTC; kept for the
    seconds just used, which the times written next mostly share (job views, log lines)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def summary(job: Job) -> dict[str, object]:
    """The gateway's own JSON view of a job (202 bodies, /status)."""
    view: dict[str, object] = {
        "id": job.id,
        "status": str(job.status),
        "created_at": rfc3339(job.created_at),
        "started_at": rfc3339(job.started_at),
        "finished_at": rfc3339(job.finished_at),
        "attempts": job.attempts,
        "method": job.method,
        "path": job.target,
    }
    if job.answer is not None:
        view["response"] = {
            "status": job.answer.status,
            "headers": [list(h) for h in job.answer.headers],
            "size": job.answer.size,
        }
    if job.failure is not None:
        view["failure"] = {"kind": job.failure.kind, "detail": job.failure.detail}
    return view
