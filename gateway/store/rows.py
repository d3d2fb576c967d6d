"""A stored job's row as the SQL backends read it back: the columns, in the Job's field order,
and the Job made of one (headers, answer and failure kept as JSON text)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from gateway import encoding
from gateway.jobs import Answer, Failure, Job, Status

NAMES = tuple(field.name for field in dataclasses.fields(Job))
_STATUS, _HEADERS, _RETRY, _ANSWER, _FAILURE = (
    NAMES.index(name)
    for name in ("status", "request_headers", "retry_on_interrupt", "answer", "failure")
)
LEASE_UNTIL = NAMES.index("lease_until")


def job_of(row: Iterable[Any]) -> Job:
    """A Job from a row of the columns NAMES."""
    fields = list(row)
    headers, answer, failure = fields[_HEADERS], fields[_ANSWER], fields[_FAILURE]
    fields[_STATUS] = Status(fields[_STATUS])
    fields[_HEADERS] = _headers(encoding.loads(headers)) if headers else None
    fields[_RETRY] = bool(fields[_RETRY])
    fields[_ANSWER] = _answer(encoding.loads(answer)) if answer else None
    fields[_FAILURE] = Failure(*encoding.loads(failure)) if failure else None
    return Job(*fields[: len(NAMES)])


def _headers(pairs: list[list[str]]) -> tuple[tuple[str, str], ...]:
    return tuple((name, value) for name, value in pairs)


def _answer(fields: list[Any]) -> Answer:
    status, reason, headers, size = fields
    return Answer(status, reason, _headers(headers), size)
