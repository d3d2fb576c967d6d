"""The `async-gateway` command: argument parsing, logging setup and the subcommands.

The only place that configures logging; exits 2 with `FILE:LINE: key.path: message` lines for a
bad configuration, and never prints a traceback for an expected failure.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from gateway import admin, encoding
from gateway import config as configuration
from gateway.errors import ConfigError, GatewayError
from gateway.jobs import utc_second

_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, event, the record's extras, any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": f"{utc_second(int(record.created))}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _RECORD_FIELDS})
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return encoding.dumps_text(line, default=str)


def setup_logging(level: int = logging.INFO) -> None:
    # The lines name no source file, function or thread: skip finding them for each record,
    # as the logging HOWTO's "Optimization" section says (a quarter of a log call's cost).
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def run_async(main: Coroutine[Any, Any, Any]) -> Any:
    """Run on uvloop where it is installed."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported platform
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="async-gateway", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the gateway")
    _config_arg(serve)
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, help="listen port (overrides server.port)")
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    check = commands.add_parser("check", help="validate the configuration file")
    _config_arg(check)
    admin.add_commands(commands)
    demo = commands.add_parser("demo", help="run the gateway in front of a bundled slow backend")
    demo.add_argument("--port", type=int, default=8080, help="the gateway's port (default 8080)")
    demo.add_argument("--db", default="./async-gateway-demo.db", help="the SQLite file to use")
    demo.add_argument("--admin-port", type=int, help="the console's port (default: --port + 1)")
    demo.add_argument("--quiet", action="store_true", help="send no demo jobs of its own")
    return parser


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default=None,
        help="YAML file (default $GATEWAY_CONFIG, then config/gateway.yaml)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    path = getattr(args, "config", None) or configuration.default_path()
    try:
        if args.command == "check":
            configuration.load(path)
            print(f"{path}: ok")
            return 0
        setup_logging()
        if args.command == "serve":
            return _serve(configuration.load(path), path, args)
        if args.command == "jobs":
            return int(run_async(admin.run(configuration.load(path), args)))
        if args.command == "demo":
            from gateway import demo

            admin_port = args.port + 1 if args.admin_port is None else args.admin_port
            run_async(demo.run(args.port, args.db, admin_port, busy=not args.quiet))
            return 0
    except ConfigError as e:
        for message in e.messages:
            print(message, file=sys.stderr)
        return 2
    except GatewayError as e:
        logging.getLogger("gateway").error(
            "cannot start", extra={"event": "start_failed", "error": str(e)}
        )
        return 1
    return 2


def _serve(config: configuration.Config, path: str, args: argparse.Namespace) -> int:
    from gateway.app import serve

    host = args.host or config.server.host
    port = config.server.port if args.port is None else args.port
    workers = config.server.workers
    if workers > 1 and not args.worker:
        from gateway.workers import Supervisor, worker_command

        return Supervisor(worker_command(path, host, port), workers).run()
    run_async(serve(config, host, port, shared_port=workers > 1))
    return 0
