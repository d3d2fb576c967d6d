"""What the console's pages, JSON and live events say about the store's projections: pure.

Counts past a limit read "1000+"; ages are whole seconds, minutes or hours; times RFC 3339.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.config import Config
from gateway.jobs import FINAL, PENDING, Status, rfc3339
from gateway.store.views import OUTCOMES, JobRow, Lane

CAP = 1000  # counts stop past this; the store is asked for one more to tell "1000+"
WINDOW = 300.0  # "ended in the last five minutes"
NONE = "\N{EN DASH}"  # what a page shows for a time or figure that has none yet


def count(n: int, cap: int = CAP) -> str:
    return f"{cap}+" if n > cap else str(n)


def age(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{int(seconds)} s"
    if seconds < 7200:
        return f"{int(seconds // 60)} min"
    return f"{int(seconds // 3600)} h"


def lane(config: Config, found: Lane, now: float) -> dict[str, Any]:
    oldest = found.oldest_queued_at
    return {
        "upstream": found.upstream,
        "queued": found.queued,
        "running": found.running,
        "max_in_flight": config.upstreams[found.upstream].max_in_flight,
        "oldest_waiting": age(now - oldest if oldest is not None else None),
        "oldest_waiting_s": None if oldest is None else round(max(0.0, now - oldest), 3),
        "ended_5m": {str(o): found.ended.get(str(o), 0) for o in OUTCOMES},
        "failed": found.failed,
    }


def overview(
    config: Config, lanes: Sequence[Lane], now: float, ready: bool, draining: bool
) -> dict[str, Any]:
    return {
        "ready": ready,
        "draining": draining,
        "count_cap": CAP,  # a count above it stands for "more than that"
        "upstreams": [lane(config, found, now) for found in lanes],
    }


def live_overview(view: Mapping[str, Any]) -> dict[str, str]:
    """The overview as `data-live` keys and the text each element shows."""
    shown = {
        "ready": "ready" if view["ready"] else "not ready",
        "draining": "draining" if view["draining"] else "serving",
    }
    for up in view["upstreams"]:
        name = up["upstream"]
        shown[f"{name}.oldest_waiting"] = up["oldest_waiting"]
        for key in ("queued", "running", "failed"):
            shown[f"{name}.{key}"] = count(up[key])
        for outcome, n in up["ended_5m"].items():
            shown[f"{name}.ended.{outcome}"] = count(n)
    return shown


def job(found: JobRow) -> dict[str, Any]:
    return {
        "id": found.id,
        "status": str(found.status),
        "method": found.method,
        "path": found.path,
        "query_names": list(found.query_names),
        "route": found.route,
        "upstream": found.upstream,
        "created_at": rfc3339(found.created_at),
        "started_at": rfc3339(found.started_at),
        "finished_at": rfc3339(found.finished_at),
        "attempts": found.attempts,
        "request_size": found.request_size,
        "response": None
        if found.answer_status is None
        else {
            "status": found.answer_status,
            "size": found.answer_size,
            "headers": [{"name": n, "value": v} for n, v in found.answer_headers],
        },
        "failure": None
        if found.failure_kind is None
        else {"kind": found.failure_kind, "detail": found.failure_detail},
        "actions": actions(found.status),
    }


def actions(status: Status) -> list[str]:
    """What an operator may do with a job in this state."""
    allowed = []
    if status == Status.FAILED:
        allowed.append("retry")
    if status in PENDING:
        allowed.append("cancel")
    if status in FINAL:
        allowed.append("forget")
    return allowed


def live_job(view: Mapping[str, Any]) -> dict[str, str]:
    response, failure = view["response"], view["failure"]
    return {
        "job.status": view["status"],
        "job.attempts": str(view["attempts"]),
        "job.started_at": view["started_at"] or NONE,
        "job.finished_at": view["finished_at"] or NONE,
        "job.response": NONE if response is None else str(response["status"]),
        "job.failure": NONE if failure is None else f"{failure['kind']}: {failure['detail']}",
    }
