"""The OpenAPI 3.1 document of the gateway's own endpoints, served at /_gateway/openapi.json.

Routes the operator configured are the upstream's API, not the gateway's, and are not described.
"""

from __future__ import annotations

from typing import Any

from gateway import __version__
from gateway.config import Config

_PROBLEM = {"$ref": "#/components/schemas/Problem"}
_JOB_HEADERS = {
    "Cache-Control": {"schema": {"type": "string", "const": "no-store"}},
    "X-Gateway-Job-Status": {"$ref": "#/components/headers/JobStatus"},
}


def _problem(description: str, job_headers: bool = False) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/problem+json": {"schema": _PROBLEM}},
    }
    if job_headers:
        answer["headers"] = _JOB_HEADERS
    return answer


def _json(description: str, schema: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_PREFER = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "description": "wait=N (RFC 7240): answer as soon as the job ends, or after N seconds",
    "schema": {"type": "string"},
}
_NOT_FOUND = _problem("Unknown, expired, or bound to other credentials")
_STORAGE_DOWN = _problem("Storage cannot be read right now; retry after Retry-After")


def _status_url() -> dict[str, Any]:
    replay = {
        "description": "Pending (202, the gateway's JSON) or the upstream's stored answer "
        "replayed byte for byte, with its own status code and headers",
        "headers": {**_JOB_HEADERS, "X-Gateway-Job-Id": {"schema": {"type": "string"}}},
        "content": {"*/*": {"schema": {}}},
    }
    get = {
        "summary": "Poll or long-poll a job; replay its answer once completed",
        "parameters": [_ID, _PREFER],
        "responses": {
            "default": replay,
            "404": _NOT_FOUND,
            "409": _problem("Canceled", job_headers=True),
            "502": _problem("Failed: refused, reset, bad answer, or outcome unknown", True),
            "503": _STORAGE_DOWN,
            "504": _problem("Failed: the upstream timed out", job_headers=True),
        },
    }
    delete = {
        "summary": "Cancel a pending job, or forget a finished one",
        "parameters": [_ID],
        "responses": {
            "204": {"description": "Canceled or forgotten"},
            "404": _NOT_FOUND,
            "409": _problem("The job changed state meanwhile"),
            "503": _STORAGE_DOWN,
        },
    }
    return {"get": get, "head": {**get, "summary": "As GET, without the body"}, "delete": delete}


def _status_view() -> dict[str, Any]:
    return {
        "get": {
            "summary": "A job's metadata, with the upstream's status and headers once completed",
            "parameters": [_ID],
            "responses": {
                "200": _json("The job", {"$ref": "#/components/schemas/Job"}, headers=_JOB_HEADERS),
                "404": _NOT_FOUND,
                "503": _STORAGE_DOWN,
            },
        }
    }


def _ops() -> dict[str, Any]:
    state = {"type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]}
    return {
        "/_gateway/healthz": {
            "get": {"summary": "The process is alive", "responses": {"200": _json("Alive", state)}}
        },
        "/_gateway/readyz": {
            "get": {
                "summary": "Storage is usable and the gateway is not draining",
                "responses": {"200": _json("Ready", state), "503": _json("Not ready", state)},
            }
        },
        "/_gateway/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/_gateway/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {
                    "200": _json("OpenAPI 3.1", {"type": "object"}),
                },
            }
        },
    }


_SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
        },
        "required": ["type", "title", "status", "detail"],
    },
    "Job": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "status": {"enum": ["queued", "running", "completed", "failed", "canceled"]},
            "created_at": {"type": "string", "format": "date-time"},
            "started_at": {"type": ["string", "null"], "format": "date-time"},
            "finished_at": {"type": ["string", "null"], "format": "date-time"},
            "attempts": {"type": "integer", "minimum": 0},
            "method": {"type": "string"},
            "path": {"type": "string"},
            "response": {"type": "object"},
            "failure": {"type": "object"},
        },
        "required": ["id", "status", "created_at", "attempts", "method", "path"],
    },
}


def document(config: Config) -> dict[str, Any]:
    prefix = config.jobs.prefix
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "async-gateway",
            "version": __version__,
            "description": "The gateway's own endpoints: status URLs and operations.",
        },
        "paths": {
            f"{prefix}/{{id}}": _status_url(),
            f"{prefix}/{{id}}/status": _status_view(),
            **_ops(),
        },
        "components": {
            "schemas": _SCHEMAS,
            "headers": {
                "JobStatus": {
                    "schema": {"enum": ["queued", "running", "completed", "failed", "canceled"]}
                }
            },
        },
    }
