"""Configuration: units, environment, defaults, each problem as FILE:LINE: key.path: message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway import units
from gateway.config import Config, Secret, load, parse
from gateway.errors import ConfigError

MINIMAL = (
    "upstreams: {legacy: {url: 'http://127.0.0.1:9000'}}\nroutes: [{path: /, upstream: legacy}]\n"
)
ROOT = Path(__file__).resolve().parent.parent


def problems(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, "gw.yaml", environ or {})
    return caught.value.messages


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("30s", 30.0),
        ("15m", 900.0),
        ("24h", 86400.0),
        (5, 5.0),
        ("1.5", 1.5),
        (0.5, 0.5),
        ("0s", 0.0),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert units.duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512KB", 512 * 1024),
        ("10MB", 10 * 1024**2),
        ("1GB", 1024**3),
        (100, 100),
        ("7", 7),
        ("2mb", 2 * 1024**2),
    ],
)
def test_sizes(text: object, size: int) -> None:
    assert units.size(text) == size


@pytest.mark.parametrize("bad", ["fast", "-1s", "10 parsecs", True, "5w"])
def test_bad_durations(bad: object) -> None:
    with pytest.raises(ValueError):
        units.duration(bad)


def test_minimal_file_takes_every_default() -> None:
    config = parse(MINIMAL, "gw.yaml", {})
    assert config.server.port == 8080 and config.server.host == "127.0.0.1"
    assert config.server.max_body == 100 * 1024**2
    assert config.server.idle_timeout == 60
    assert config.jobs.prefix == "/_gateway/jobs" and config.jobs.retention == 86400
    assert config.jobs.bind_headers == ("Authorization",)
    [route] = config.routes
    assert route.mode == "async" and route.methods is None and route.on_interrupt == "auto"
    upstream = config.upstreams["legacy"]
    assert (upstream.timeout, upstream.max_in_flight, upstream.retry.attempts) == (900, 16, 3)
    assert upstream.retry.on_status == {502, 503, 504}


@pytest.mark.parametrize("name", ["gateway.yaml", "minimal.yaml"])
def test_example_files_are_valid(name: str) -> None:
    config = load(str(ROOT / "config" / name), environ={})
    assert isinstance(config, Config)


def test_environment_is_expanded_with_defaults() -> None:
    text = (
        "server:\n  port: ${PORT:-9999}\nupstreams:\n  legacy:\n    url: ${URL}\n"
        "routes: [{path: /, upstream: legacy}]\ncallbacks:\n  secret: ${SECRET:-}\n"
    )
    config = parse(text, "gw.yaml", {"URL": "http://backend:8000"})
    assert config.server.port == 9999
    assert config.upstreams["legacy"].url == "http://backend:8000"
    assert config.callbacks.secret == ""
    secret = "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ="
    config = parse(text, "gw.yaml", {"URL": "http://b", "SECRET": secret})
    assert repr(config.callbacks.secret) == "'***'"
    assert secret not in repr(config)
    assert problems(text, {"URL": "http://b", "SECRET": "whsec_%%%"}) == [
        "gw.yaml:8: callbacks.secret: expected a Standard Webhooks secret: whsec_ then base64"
    ]


def test_unset_variable_is_named() -> None:
    text = "upstreams:\n  legacy:\n    url: ${BACKEND_URL}\nroutes: [{path: /, upstream: legacy}]\n"
    assert problems(text) == [
        "gw.yaml:3: upstreams.legacy.url: environment variable BACKEND_URL is not set and has "
        "no default"
    ]


def test_every_problem_has_file_line_and_key_path() -> None:
    text = """server:
  port: abc
  colour: blue
upstreams:
  legacy: {url: 'ftp://x', timeout: soon}
routes:
  - path: /a
    upstream: nowhere
    mode: sometimes
  - {path: b, upstream: legacy, methods: [FETCH]}
jobs:
  max_body: 1MB
"""
    assert problems(text) == [
        "gw.yaml:2: server.port: expected a whole number, got 'abc'",
        "gw.yaml:3: server.colour: unknown key",
        "gw.yaml:5: upstreams.legacy.url: expected an http:// or https:// URL, got 'ftp://x'",
        "gw.yaml:5: upstreams.legacy.timeout: 'soon' is not a duration such as 250ms, 30s, "
        "15m or 24h",
        "gw.yaml:8: routes[0].upstream: no upstream named 'nowhere'",
        "gw.yaml:9: routes[0].mode: expected one of async, proxy, got 'sometimes'",
        "gw.yaml:10: routes[1].methods: unknown HTTP method 'FETCH'",
        "gw.yaml:10: routes[1].path: must start with /",
        "gw.yaml:12: jobs.max_body: unknown key",
    ]


def test_duplicate_keys_are_errors() -> None:
    text = MINIMAL + "server: {port: 1}\nserver: {port: 2}\n"
    assert problems(text) == ["gw.yaml:4: server: duplicate key"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "gw.yaml:1: upstreams: at least one upstream is required"),
        ("- a\n- b\n", "gw.yaml:1: (root): expected a mapping"),
        (
            "upstreams: {a: {url: 'http://x'}}\nroutes: []\n",
            "gw.yaml:2: routes: a non-empty list of routes is required",
        ),
        (
            "upstreams: {a: {}}\nroutes: [{path: /, upstream: a}]\n",
            "gw.yaml:1: upstreams.a: url is required",
        ),
        (
            "upstreams: {a: {url: 'http://x'}}\nroutes: [{path: /}]\n",
            "gw.yaml:2: routes[0]: upstream is required",
        ),
        (
            "server: [\n",
            "gw.yaml:2: (root): invalid YAML: expected the node content, but found '<stream end>'",
        ),
    ],
)
def test_structural_problems(text: str, expected: str) -> None:
    assert expected in problems(text)


def test_secret_never_shows() -> None:
    assert repr(Secret("whsec_abc")) == "'***'"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        env=env,
    )


def test_check_exits_0_on_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "good.yaml"
    path.write_text(MINIMAL)
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", ["check", "serve"])
def test_bad_file_exits_2_with_messages_on_stderr(tmp_path: Path, command: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(MINIMAL + "server:\n  port: -1\n")
    result = run_cli(command, "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"{path}:4: server.port: must be a port number from 0 to 65535"
    ]
    assert "Traceback" not in result.stderr


def test_config_defaults_to_the_environment_variable(tmp_path: Path) -> None:
    path = tmp_path / "env.yaml"
    path.write_text("nonsense: true\n" + MINIMAL)
    result = run_cli("check", env={"GATEWAY_CONFIG": str(path), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert f"{path}:1: nonsense: unknown key" in result.stderr


def test_a_port_in_use_is_a_clear_error_not_a_traceback(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "gw.yaml"
        path.write_text(MINIMAL + f"storage: {{path: {tmp_path / 'gw.db'}}}\n")
        result = run_cli("serve", "--config", str(path), "--port", str(port))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


@pytest.mark.parametrize(("text", "seconds"), [("250ms", 0.25), ("75s", 75), ("2m", 120), (5, 5)])
def test_idle_timeout_is_a_duration(text: object, seconds: float) -> None:
    config = parse(MINIMAL + f"server: {{idle_timeout: {text}}}\n", "gw.yaml", {})
    assert config.server.idle_timeout == seconds


@pytest.mark.parametrize("bad", ["0s", "0", "soon", "-5s"])
def test_idle_timeout_must_be_a_positive_duration(bad: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(MINIMAL + f"server: {{idle_timeout: {bad}}}\n", "gw.yaml", {})
    assert "server.idle_timeout" in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://gw:secret@db.example.com:5432/gateway",
        "postgres://db.example.com/gateway",
        "postgresql:///gateway?host=/var/run/postgresql",
        "postgresql://gw@db:5432/gateway?sslmode=verify-full&sslrootcert=/etc/ca.pem",
        "postgresql://gw@h1:5432,h2:5433/gateway?target_session_attrs=read-write",
        "postgresql://[::1]:5432/gateway",
        "postgresql://%2Fvar%2Frun%2Fpostgresql/gateway",
    ],
)
def test_storage_url_takes_libpq_url_forms(url: str) -> None:
    config = parse(MINIMAL + f"storage: {{url: '{url}'}}\n", "gw.yaml", {})
    assert config.storage.url == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://db/gateway", "expected a postgresql:// or postgres:// URL"),
        ("db.example.com/gateway", "expected a postgresql:// or postgres:// URL"),
        ("postgresql://db:99999/gateway", "port 99999 is not from 1 to 65535"),
        ("postgresql://db:x5/gateway", "is not a host name, a host:port or an [IPv6]:port"),
        ("postgresql://db/gateway?sslmode=sometimes", "sslmode must be one of disable, allow"),
        ("postgresql://db/gateway?colour=red", "unknown parameter 'colour'"),
        ("postgresql://db/gateway?port=\uff15\uff14", "port '\uff15\uff14' is not a number"),
        ("postgresql://db:\u0665/gateway", "is not a host name"),
        ("postgresql://db/gateway#top", "a PostgreSQL URL takes no fragment"),
    ],
)
def test_storage_url_problems(url: str, message: str) -> None:
    found = problems(MINIMAL + f"storage: {{url: '{url}'}}\n")
    assert len(found) == 1
    assert found[0].startswith("gw.yaml:3: storage.url: ")
    assert message in found[0]


def test_storage_path_and_url_together_are_an_error() -> None:
    assert problems(MINIMAL + "storage: {path: gw.db, url: 'postgresql://db/gateway'}\n") == [
        "gw.yaml:3: storage.url: path and url are exclusive: SQLite or PostgreSQL"
    ]


def test_storage_unknown_keys_are_errors() -> None:
    text = MINIMAL + "storage:\n  url: postgresql://db/gateway\n  bogus: 1\n"
    assert problems(text) == ["gw.yaml:5: storage.bogus: unknown key"]


def test_storage_url_from_the_environment_and_its_password_never_shows() -> None:
    text = MINIMAL + "storage: {url: '${DATABASE_URL:-}'}\n"
    assert parse(text, "gw.yaml", {}).storage.url is None  # empty: the SQLite file
    url = "postgresql://gw:hunter2@db/gateway?password=hunter3"
    storage = parse(text, "gw.yaml", {"DATABASE_URL": url}).storage
    assert storage.url == url
    assert "hunter" not in repr(storage)
    assert storage.where == "postgresql://gw:***@db/gateway?password=***"


def test_check_validates_a_storage_url_without_connecting(tmp_path: Path) -> None:
    path = tmp_path / "pg.yaml"  # nothing listens on port 1: check must not try
    path.write_text(MINIMAL + "storage: {url: 'postgresql://gw:pw@127.0.0.1:1/gateway'}\n")
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 0, result.stderr
    path.write_text(MINIMAL + "storage: {url: 'postgresql://127.0.0.1:1/gw?bogus=1', x: 1}\n")
    result = run_cli("check", "--config", str(path))
    assert result.returncode == 2
    assert {line.split(": ")[1] for line in result.stderr.splitlines()} == {
        "storage.url",
        "storage.x",
    }


def test_workers_auto_is_the_cores_a_container_may_use(tmp_path: Path) -> None:
    mine = len(os.sched_getaffinity(0))
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")  # --cpus 1.5
    assert units.cores(quota) == min(mine, 2)
    quota.write_text("50000 100000\n")
    assert units.cores(quota) == 1
    quota.write_text("max 100000\n")
    assert units.cores(quota) == mine
    assert units.cores(tmp_path / "absent") == mine


def test_the_replicas_example_checks_with_a_database_url() -> None:
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": "postgresql://gw:pw@db:5432/gateway"}
    result = run_cli("check", "--config", "config/replicas.yaml", env=env)
    assert result.returncode == 0, result.stderr
    result = run_cli("check", "--config", "config/replicas.yaml", env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and "storage.url: environment variable DATABASE_URL" in (
        result.stderr
    )
