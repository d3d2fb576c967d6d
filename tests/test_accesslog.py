"""The access log: JSON lines written in batches, each a line like every other log line."""

from __future__ import annotations

import asyncio
import io
import json

from gateway.accesslog import FLUSH_S, MAX_LINES, AccessLines


async def test_lines_are_json_and_written_together_after_a_moment() -> None:
    stream = io.StringIO()
    lines = AccessLines(stream)
    lines.add("GET", '/a "quoted"\npath', 200, 0.0123, "127.0.0.1")
    lines.add("POST", "/b", 202, 0.5, "")
    assert stream.getvalue() == ""  # not yet: lines wait for the batch
    await asyncio.sleep(FLUSH_S * 3)
    written = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(e["method"], e["path"], e["status"]) for e in written] == [
        ("GET", '/a "quoted"\npath', 200),
        ("POST", "/b", 202),
    ]
    first = written[0]
    assert first["event"] == "access" and first["level"] == "info"
    assert first["duration_ms"] == 12.3 and first["remote"] == "127.0.0.1"
    assert first["ts"].endswith("Z") and isinstance(first["pid"], int)


async def test_a_full_batch_is_written_at_once_and_flush_writes_the_rest() -> None:
    stream = io.StringIO()
    lines = AccessLines(stream)
    for _ in range(MAX_LINES):
        lines.add("GET", "/", 200, 0.001, "")
    assert len(stream.getvalue().splitlines()) == MAX_LINES
    lines.add("GET", "/last", 200, 0.001, "")
    lines.flush()
    assert stream.getvalue().splitlines()[-1].count('"/last"') == 1


async def test_a_failing_stream_costs_lines_not_requests() -> None:
    stream = io.StringIO()
    stream.close()
    lines = AccessLines(stream)
    lines.add("GET", "/", 200, 0.001, "")
    lines.flush()  # no exception
