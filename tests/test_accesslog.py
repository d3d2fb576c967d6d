"""The access log: JSON lines written in batches, each a line like every other log line."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import select
import time

from gateway.accesslog import FLUSH_S, LOGGER, MAX_LINES, AccessLines
from gateway.cli import JsonFormatter


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


async def test_an_access_line_is_written_as_the_log_formatter_writes_any_line() -> None:
    stream = io.StringIO()
    lines = AccessLines(stream)
    lines.add("GET", "/ü", 200, 0.001, "::1")
    lines.flush()
    line = stream.getvalue().rstrip("\n")
    fields = json.loads(line)
    record = logging.makeLogRecord({"name": LOGGER, "levelno": logging.INFO, "levelname": "INFO"})
    record.__dict__.update(
        {k: v for k, v in fields.items() if k not in ("ts", "level", "logger", "pid")}
    )
    record.msg = record.__dict__.pop("message")
    record.created, record.msecs, record.process = time.time(), 0.0, fields["pid"]
    formatted = JsonFormatter().format(record)
    same_time = '{"ts":"' + fields["ts"] + formatted[formatted.index('","level"') :]
    assert line == same_time


def test_the_log_formatter_writes_what_orjson_refuses() -> None:
    record = logging.makeLogRecord({"msg": "bad \udcff", "levelname": "INFO", "n": 2**70})
    assert json.loads(JsonFormatter().format(record))["n"] == 2**70


async def test_a_full_batch_is_written_at_once_and_flush_writes_the_rest() -> None:
    stream = io.StringIO()
    lines = AccessLines(stream)
    for _ in range(MAX_LINES):
        lines.add("GET", "/", 200, 0.001, "")
    assert len(stream.getvalue().splitlines()) == MAX_LINES
    lines.add("GET", "/last", 200, 0.001, "")
    lines.flush()
    assert stream.getvalue().splitlines()[-1].count('"/last"') == 1


class Writes(io.StringIO):
    """A stream that keeps each flushed write apart, as a pipe sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


async def test_each_write_is_whole_lines_within_pipe_buf_so_workers_never_interleave() -> None:
    stream = Writes()
    lines = AccessLines(stream)
    for i in range(200):
        lines.add("GET", f"/{i}" + "x" * (i % 50), 200, 0.001, "127.0.0.1")
    lines.add("GET", "/" + "y" * (2 * select.PIPE_BUF), 200, 0.001, "")  # a line alone
    lines.flush()
    assert len(stream.writes) > 1
    for text in stream.writes[:-1]:
        assert len(text.encode()) <= select.PIPE_BUF and text.endswith("\n")
    assert stream.writes[-1].count("\n") == 1  # the long line, whole, in a write of its own
    assert len(stream.getvalue().splitlines()) == 201


async def test_a_failing_stream_costs_lines_not_requests() -> None:
    stream = io.StringIO()
    stream.close()
    lines = AccessLines(stream)
    lines.add("GET", "/", 200, 0.001, "")
    lines.flush()  # no exception
