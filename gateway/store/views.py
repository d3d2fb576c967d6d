"""What the operator console may read of jobs: its filters and its projections, pure.

A projection never holds a request's headers or body, an answer's body, header values other than
Content-Type and Content-Length, query values or a credential binding: they are dropped here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway import encoding
from gateway.jobs import Answer, Failure, Job, Status

# The columns the SQL backends select for a JobRow, in `row_of`'s order: never request
# headers, bodies or bindings.
COLUMNS = (
    "seq, id, route, upstream, status, method, target, created_at, started_at, finished_at,"
    " attempts, request_size, answer, failure"
)
SHOWN_VALUES = frozenset({"content-type", "content-length"})  # header values a page may show
OUTCOMES = (Status.COMPLETED, Status.FAILED, Status.CANCELED)


@dataclass(frozen=True)
class Filter:
    """Jobs a list or a bulk retry takes: each field unset takes every job."""

    status: Status | None = None
    upstream: str | None = None
    route: str | None = None
    prefix: str | None = None  # a path prefix if it starts with "/", else an id prefix

    def __post_init__(self) -> None:
        if self.prefix is not None and "?" in self.prefix:
            raise ValueError("a path prefix stops before the query")

    @property
    def by_path(self) -> bool:
        return bool(self.prefix and self.prefix.startswith("/"))

    def matches(self, job: Job) -> bool:
        return (
            job.status != Status.RECEIVING
            and self.status in (None, job.status)
            and self.upstream in (None, job.upstream)
            and self.route in (None, job.route)
            and (
                not self.prefix or (job.target if self.by_path else job.id).startswith(self.prefix)
            )
        )

    def as_dict(self) -> dict[str, str]:
        """The fields that are set, as a query string or a log line takes them."""
        fields = {
            "status": self.status,
            "upstream": self.upstream,
            "route": self.route,
            "prefix": self.prefix,
        }
        return {k: str(v) for k, v in fields.items() if v}


@dataclass(frozen=True)
class JobRow:
    """One job as the console shows it."""

    key: str  # where a page that ends with this job resumes (newest first)
    id: str
    route: str
    upstream: str
    status: Status
    method: str
    path: str  # the target without its query
    query_names: tuple[str, ...]
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    request_size: int
    answer_status: int | None = None
    answer_size: int | None = None
    answer_headers: tuple[tuple[str, str | None], ...] = ()  # names; a value only if shown
    failure_kind: str | None = None
    failure_detail: str | None = None


@dataclass(frozen=True)
class Lane:
    """One upstream's figures; counts past the caller's `at_most` stop there."""

    upstream: str
    queued: int = 0
    running: int = 0
    oldest_queued_at: float | None = None
    ended: dict[str, int] = field(default_factory=dict)  # outcome → jobs ended since `since`
    failed: int = 0  # failed jobs kept


def split_target(target: str) -> tuple[str, tuple[str, ...]]:
    """The path, and the names of the query's parameters without their values."""
    path, _, query = target.partition("?")
    names = tuple(dict.fromkeys(p.partition("=")[0] for p in query.split("&") if p))
    return path, names


def row_of(found: Sequence[Any]) -> JobRow:
    """A JobRow from the COLUMNS of a row (its answer and failure as JSON text)."""
    seq, job_id, route, upstream, status, method, target, *times, answer, failure = found
    created_at, started_at, finished_at, attempts, request_size = times
    job = Job(
        id=job_id,
        route=route,
        upstream=upstream,
        status=Status(status),
        method=method,
        target=target,
        created_at=created_at,
        started_at=started_at,
        finished_at=finished_at,
        attempts=attempts,
        request_size=request_size,
        answer=_answer(encoding.loads(answer)) if answer else None,
        failure=Failure(*encoding.loads(failure)) if failure else None,
    )
    return row(str(seq), job)


def _answer(fields: list[Any]) -> Answer:
    status, reason, headers, size = fields
    return Answer(status, reason, tuple((name, value) for name, value in headers), size)


def row(key: str, job: Job) -> JobRow:
    """The console's projection of a job."""
    path, names = split_target(job.target)
    answer, failure = job.answer, job.failure
    return JobRow(
        key=key,
        id=job.id,
        route=job.route,
        upstream=job.upstream,
        status=job.status,
        method=job.method,
        path=path,
        query_names=names,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        attempts=job.attempts,
        request_size=job.request_size,
        answer_status=answer.status if answer else None,
        answer_size=answer.size if answer else None,
        answer_headers=shown_headers(answer) if answer else (),
        failure_kind=failure.kind if failure else None,
        failure_detail=failure.detail if failure else None,
    )


def shown_headers(answer: Answer) -> tuple[tuple[str, str | None], ...]:
    """Every header's name; its value only where a page may show it."""
    return tuple(
        (name, value if name.lower() in SHOWN_VALUES else None) for name, value in answer.headers
    )
