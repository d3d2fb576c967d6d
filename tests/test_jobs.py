"""What follows each try, and restarts: pure decisions as tables, the clock passed in."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime

import pytest

from gateway.config import Retry
from gateway.jobs import (
    Again,
    Answer,
    Complete,
    Fail,
    Failure,
    Job,
    Status,
    after_try,
    backoff,
    new_id,
    on_restart,
    retries_on_interrupt,
    rfc3339,
    summary,
)

POLICY = Retry(attempts=3, on_status=frozenset({502, 503, 504}), backoff=1.0, max_backoff=60.0)
NOW = 1_000_000.0
REFUSED = Failure("refused", "no", sent=False)
RESET = Failure("reset", "cut", sent=True)


def job(method: str = "GET", attempts: int = 1, retry_on_interrupt: bool = True) -> Job:
    return Job(
        id="j",
        route="/r",
        upstream="u",
        status=Status.RUNNING,
        method=method,
        target="/r",
        created_at=NOW,
        attempts=attempts,
        retry_on_interrupt=retry_on_interrupt,
    )


def answer(status: int, retry_after: str | None = None) -> Answer:
    headers = (("Retry-After", retry_after),) if retry_after else ()
    return Answer(status, "", headers)


@pytest.mark.parametrize(
    ("method", "attempts", "outcome", "kind"),
    [
        ("GET", 1, answer(200), Complete),
        ("GET", 1, answer(500), Complete),  # not in on_status
        ("GET", 1, answer(503), Again),
        ("GET", 3, answer(503), Complete),  # tries ran out on an answer: the client sees it
        ("POST", 1, answer(503), Complete),  # the POST may have been processed
        ("POST", 1, REFUSED, Again),  # never sent: always safe to try again
        ("POST", 1, RESET, Fail),  # may have been sent: not again for POST
        ("PUT", 1, RESET, Again),
        ("GET", 3, REFUSED, Fail),
        ("DELETE", 2, Failure("timeout", "slow", sent=True), Again),
    ],
)
def test_after_try(method: str, attempts: int, outcome: Answer | Failure, kind: type) -> None:
    decision = after_try(job(method, attempts), outcome, POLICY, NOW, random.Random(1))
    assert isinstance(decision, kind)


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured(status: int) -> None:
    policy = Retry(on_status=frozenset({429, 503}))
    decision = after_try(job(), answer(status, "17"), policy, NOW, random.Random(1))
    assert decision == Again(17.0)


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 1.0), (2, 2.0), (3, 4.0), (9, 60.0)])
def test_backoff_doubles_with_jitter_under_the_cap(attempt: int, ceiling: float) -> None:
    delays = [backoff(attempt, POLICY, random.Random(seed)) for seed in range(50)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    assert len(set(delays)) > 1


@pytest.mark.parametrize(
    ("setting", "method", "retries"),
    [
        ("auto", "GET", True),
        ("auto", "POST", False),
        ("retry", "POST", True),
        ("fail", "GET", False),
    ],
)
def test_interrupt_setting(setting: str, method: str, retries: bool) -> None:
    assert retries_on_interrupt(setting, method) is retries


def test_on_restart_retries_or_says_outcome_unknown() -> None:
    assert on_restart(job("GET", 1, retry_on_interrupt=True), POLICY) is None
    failed = on_restart(job("POST", 1, retry_on_interrupt=False), POLICY)
    assert isinstance(failed, Fail) and failed.failure.kind == "interrupted"
    assert "unknown" in failed.failure.detail
    assert isinstance(on_restart(job("GET", 3, retry_on_interrupt=True), POLICY), Fail)


def test_summary_uses_rfc3339_times() -> None:
    view = summary(job())
    assert view["created_at"] == "1970-01-12T13:46:40.000Z"
    assert view["started_at"] is None


@pytest.mark.parametrize(
    "when",
    [0.0, 1.0005, 1.9994999, 1.9999995, 1_795_000_000.9996, 1_795_000_059.9999996, 4e9 + 0.25],
)
def test_rfc3339_matches_datetime_at_the_edges_of_a_millisecond(when: float) -> None:
    """The fast form agrees with datetime's rounding, carries included."""
    expected = datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")
    assert rfc3339(when) == expected.replace("+00:00", "Z")


def test_rfc3339_matches_datetime_on_random_times() -> None:
    rng = random.Random(7)
    for when in (rng.uniform(0, 4e9) for _ in range(20_000)):
        expected = datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds")
        assert rfc3339(when) == expected.replace("+00:00", "Z")


def test_job_ids_sort_by_time_and_carry_128_random_bits() -> None:
    t = 1_795_000_000.0
    ids = [new_id(t + step) for step in (0.0, 0.001, 1.0, 86_400.0, 10 * 365 * 86_400.0)]
    assert ids == sorted(ids)  # each new id lands at the end of the indexes keyed by id
    assert all(re.fullmatch(r"[0-9A-Za-z]{8}[A-Za-z0-9_-]{22}", i) for i in ids)
    same_moment = {new_id(t)[8:] for _ in range(1000)}
    assert len(same_moment) == 1000  # the random part differs even within one millisecond
