"""The configuration as frozen dataclasses, validated once from YAML.

Every problem is reported as `FILE:LINE: key.path: message`; nothing else in the package reads
YAML or the environment.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from gateway import source as yamlsource
from gateway import units
from gateway.errors import ConfigError

T = TypeVar("T")
Mode = Literal["async", "proxy"]
OnInterrupt = Literal["auto", "retry", "fail"]


class Secret(str):
    """A string that never shows itself in a repr or a log line."""

    def __repr__(self) -> str:
        return "'***'" if self else "''"


@dataclass(frozen=True)
class Server:
    host: str = "127.0.0.1"
    port: int = 8080
    workers: int = 1
    public_url: str | None = None
    trust_forwarded: bool = False
    max_body: int = 100 * 1024**2
    shutdown_grace: float = 30.0
    idle_timeout: float = 60.0  # a client connection idle, or stalled mid-request, this long


@dataclass(frozen=True)
class Storage:
    path: str = "./gateway.db"
    url: Secret | None = None  # PostgreSQL instead of the SQLite file at `path`

    @property
    def where(self) -> str:
        """Where the jobs are, for a log line: the file, or the URL without its password."""
        return self.path if self.url is None else units.redacted(self.url)


@dataclass(frozen=True)
class Jobs:
    prefix: str = "/_gateway/jobs"
    retention: float = 24 * 3600.0
    retry_after: float = 2.0
    max_queued: int = 10000
    bind_headers: tuple[str, ...] = ("Authorization",)


@dataclass(frozen=True)
class Retry:
    attempts: int = 3
    on_status: frozenset[int] = frozenset({502, 503, 504})
    backoff: float = 1.0
    max_backoff: float = 60.0


@dataclass(frozen=True)
class Upstream:
    name: str
    url: str
    connect_timeout: float = 5.0
    timeout: float = 900.0
    max_in_flight: int = 16
    retry: Retry = field(default_factory=Retry)


@dataclass(frozen=True)
class Route:
    path: str
    upstream: str
    methods: frozenset[str] | None = None
    mode: Mode = "async"
    wait: float = 0.0
    max_wait: float = 60.0
    on_interrupt: OnInterrupt = "auto"
    callback: str | None = None

    def matches(self, path: str, method: str) -> bool:
        """Segment-aware prefix: /reports matches /reports and /reports/7, not /reportsX."""
        if self.methods is not None and method not in self.methods:
            return False
        base = self.path.rstrip("/")
        return path == base or path.startswith(base + "/") or base == ""


@dataclass(frozen=True)
class Callbacks:
    secret: Secret = field(default_factory=Secret)
    allow_hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Admin:
    """The operator console: its own listener, loopback by default, off until a port is set."""

    host: str = "127.0.0.1"
    port: int | None = None
    token: Secret = field(default_factory=Secret)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Config:
    upstreams: Mapping[str, Upstream]
    routes: tuple[Route, ...]
    server: Server = field(default_factory=Server)
    storage: Storage = field(default_factory=Storage)
    jobs: Jobs = field(default_factory=Jobs)
    callbacks: Callbacks = field(default_factory=Callbacks)
    admin: Admin = field(default_factory=Admin)

    def route_for(self, path: str, method: str) -> Route | None:
        return next((r for r in self.routes if r.matches(path, method)), None)


def _some_time(value: object) -> float:
    seconds = units.duration(value)
    if seconds <= 0:
        raise ValueError("must be longer than 0s")
    return seconds


def _optional_port(value: object) -> int | None:
    """A port, or none for an empty string (`${GATEWAY_ADMIN_PORT:-}` left unset)."""
    return None if value == "" else units.port(value)


def default_path(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get("GATEWAY_CONFIG") or "config/gateway.yaml"


def load(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the file; raise ConfigError with every problem found."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([f"{path}:1: (file): cannot read: {e}"]) from e
    return parse(text, path, os.environ if environ is None else environ)


def parse(text: str, filename: str, environ: Mapping[str, str]) -> Config:
    src = yamlsource.read(text, environ)
    config = _Reader(src).config() if src.data is not None else None
    if src.problems or config is None:
        first: dict[str, yamlsource.Problem] = {}
        for problem in src.problems:  # one message per key: the first found is the cause
            first.setdefault(problem.path, problem)
        ordered = sorted(first.values(), key=lambda p: p.line)
        raise ConfigError([p.render(filename) for p in ordered])
    return config


class _Reader:
    """Builds the dataclasses from plain values, recording a problem for each bad key."""

    def __init__(self, src: yamlsource.Source) -> None:
        self.src = src

    def config(self) -> Config | None:
        top = self.mapping(
            "", {"server", "storage", "jobs", "upstreams", "routes", "callbacks", "admin"}
        )
        if top is None:
            return None
        upstreams = self.upstreams(top)
        config = Config(
            server=self.server(),
            storage=self.storage(),
            jobs=self.jobs(),
            upstreams=upstreams,
            routes=self.routes(top, upstreams),
            callbacks=self.callbacks(),
            admin=self.admin(),
        )
        return None if self.src.problems else config

    # -- sections --------------------------------------------------------------

    def server(self) -> Server:
        self.mapping("server", set(Server.__dataclass_fields__))
        return Server(
            host=self.get("server.host", "127.0.0.1", units.string),
            port=self.get("server.port", 8080, units.port),
            workers=self.get("server.workers", 1, units.workers),
            public_url=self.get("server.public_url", None, units.base_url),
            trust_forwarded=self.get("server.trust_forwarded", False, units.boolean),
            max_body=self.get("server.max_body", 100 * 1024**2, units.size),
            shutdown_grace=self.get("server.shutdown_grace", 30.0, units.duration),
            idle_timeout=self.get("server.idle_timeout", 60.0, _some_time),
        )

    def storage(self) -> Storage:
        found = self.mapping("storage", {"path", "url"})
        url = self.get("storage.url", None, units.postgres_url)
        if found and found.get("path") is not None and url is not None:
            self.src.problem("storage.url", "path and url are exclusive: SQLite or PostgreSQL")
        return Storage(
            path=self.get("storage.path", "./gateway.db", units.string),
            url=None if url is None else Secret(url),
        )

    def jobs(self) -> Jobs:
        self.mapping("jobs", set(Jobs.__dataclass_fields__))
        return Jobs(
            prefix=self.get("jobs.prefix", "/_gateway/jobs", units.prefix),
            retention=self.get("jobs.retention", 86400.0, units.duration),
            retry_after=self.get("jobs.retry_after", 2.0, units.duration),
            max_queued=self.get("jobs.max_queued", 10000, units.positive),
            bind_headers=tuple(self.get("jobs.bind_headers", ["Authorization"], units.name_list)),
        )

    def callbacks(self) -> Callbacks:
        self.mapping("callbacks", {"secret", "allow_hosts"})
        return Callbacks(
            secret=Secret(self.get("callbacks.secret", "", units.webhook_secret)),
            allow_hosts=tuple(self.get("callbacks.allow_hosts", [], units.name_list)),
        )

    def admin(self) -> Admin:
        self.mapping("admin", {"host", "port", "token"})
        admin = Admin(
            host=self.get("admin.host", "127.0.0.1", units.string),
            port=self.get("admin.port", None, _optional_port),
            token=Secret(self.get("admin.token", "", units.string)),
        )
        if admin.port is not None and not admin.token and not is_loopback(admin.host):
            self.src.problem(
                "admin.token", f"required when admin.host ({admin.host}) is not a loopback address"
            )
        return admin

    def upstreams(self, top: dict[str, Any]) -> dict[str, Upstream]:
        found = self.mapping("upstreams", None)
        if "upstreams" not in top or not found:
            self.src.problem("upstreams", "at least one upstream is required")
            return {}
        return {name: self.upstream(name) for name in found}

    def upstream(self, name: str) -> Upstream:
        path = yamlsource.child("upstreams", name)
        keys = {"url", "connect_timeout", "timeout", "max_in_flight", "retry"}
        found = self.mapping(path, keys)
        if found is None:
            return Upstream(name=name, url="http://invalid")
        if "url" not in found:
            self.src.problem(path, "url is required")
        return Upstream(
            name=name,
            url=self.get(f"{path}.url", None, units.base_url) or "http://invalid",
            connect_timeout=self.get(f"{path}.connect_timeout", 5.0, units.duration),
            timeout=self.get(f"{path}.timeout", 900.0, units.duration),
            max_in_flight=self.get(f"{path}.max_in_flight", 16, units.positive),
            retry=self.retry(f"{path}.retry"),
        )

    def retry(self, path: str) -> Retry:
        self.mapping(path, {"attempts", "on_status", "backoff", "max_backoff"})
        return Retry(
            attempts=self.get(f"{path}.attempts", 3, units.positive),
            on_status=frozenset(self.get(f"{path}.on_status", [502, 503, 504], units.statuses)),
            backoff=self.get(f"{path}.backoff", 1.0, units.duration),
            max_backoff=self.get(f"{path}.max_backoff", 60.0, units.duration),
        )

    def routes(self, top: dict[str, Any], upstreams: Mapping[str, Upstream]) -> tuple[Route, ...]:
        items = top.get("routes")
        if not isinstance(items, list) or not items:
            self.src.problem("routes", "a non-empty list of routes is required")
            return ()
        return tuple(self.route(f"routes[{i}]", upstreams) for i in range(len(items)))

    def route(self, path: str, upstreams: Mapping[str, Upstream]) -> Route:
        found = self.mapping(path, set(Route.__dataclass_fields__))
        if found is None:
            return Route(path="/", upstream="")
        for required in ("path", "upstream"):
            if required not in found:
                self.src.problem(path, f"{required} is required")
        upstream = self.get(f"{path}.upstream", "", units.string)
        if upstream and upstream not in upstreams:
            self.src.problem(f"{path}.upstream", f"no upstream named {upstream!r}")
        methods = self.get(f"{path}.methods", None, units.methods)
        return Route(
            path=self.get(f"{path}.path", "/", units.route_path),
            upstream=upstream,
            methods=frozenset(methods) if methods is not None else None,
            mode=self.get(f"{path}.mode", "async", units.choice("async", "proxy")),
            wait=self.get(f"{path}.wait", 0.0, units.duration),
            max_wait=self.get(f"{path}.max_wait", 60.0, units.duration),
            on_interrupt=self.get(
                f"{path}.on_interrupt", "auto", units.choice("auto", "retry", "fail")
            ),
            callback=self.get(f"{path}.callback", None, units.url),
        )

    # -- plumbing --------------------------------------------------------------

    def at(self, path: str) -> Any:
        value = self.src.data
        for part in path.replace("[", ".[").split(".") if path else []:
            if isinstance(value, dict):
                value = value.get(part)
            elif isinstance(value, list) and part.startswith("["):
                value = value[int(part[1:-1])]
            else:
                return None
        return value

    def mapping(self, path: str, allowed: set[str] | None) -> dict[str, Any] | None:
        value = self.at(path)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.src.problem(path, "expected a mapping")
            return None
        for key in value:
            if allowed is not None and key not in allowed:
                self.src.problem(yamlsource.child(path, key), "unknown key")
        return value

    def get(self, path: str, default: T, convert: Callable[[Any], T]) -> T:
        value = self.at(path)
        if value is None:
            return default
        try:
            return convert(value)
        except (ValueError, TypeError) as e:
            self.src.problem(path, str(e))
            return default
