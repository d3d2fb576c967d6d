"""The `admin:` keys: the console is off by default, loopback by default, and a listener on
another host without a token is a configuration error."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load, parse
from gateway.errors import ConfigError
from tests.test_config import MINIMAL, problems, run_cli


def test_console_is_off_and_on_loopback_by_default() -> None:
    admin = parse(MINIMAL, "gw.yaml", {}).admin
    assert (admin.host, admin.port, admin.token) == ("127.0.0.1", None, "")


def test_admin_keys_are_read_and_the_token_never_shows() -> None:
    text = MINIMAL + "admin:\n  host: 0.0.0.0\n  port: 8081\n  token: ${TOKEN}\n"
    admin = parse(text, "gw.yaml", {"TOKEN": "s3cret"}).admin
    assert (admin.host, admin.port, admin.token) == ("0.0.0.0", 8081, "s3cret")
    assert "s3cret" not in repr(admin)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_a_loopback_host_needs_no_token(host: str) -> None:
    admin = parse(MINIMAL + f"admin: {{host: '{host}', port: 8081}}\n", "gw.yaml", {}).admin
    assert admin.port == 8081


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "console.example.com"])
def test_another_host_without_a_token_is_an_error_on_the_token(host: str) -> None:
    text = MINIMAL + f"admin:\n  host: '{host}'\n  port: 8081\n  token: ${{T:-}}\n"
    assert problems(text) == [
        f"gw.yaml:6: admin.token: required when admin.host ({host}) is not a loopback address"
    ]


def test_unknown_and_bad_admin_keys() -> None:
    text = MINIMAL + "admin:\n  port: 99999\n  colour: blue\n"
    assert problems(text) == [
        "gw.yaml:4: admin.port: must be a port number from 0 to 65535",
        "gw.yaml:5: admin.colour: unknown key",
    ]


@pytest.mark.parametrize("command", ["check", "serve"])
def test_an_open_console_on_another_host_exits_2(tmp_path: Path, command: str) -> None:
    path = tmp_path / "open.yaml"
    path.write_text(MINIMAL + "admin: {host: 0.0.0.0, port: 8081}\n")
    result = run_cli(command, "--config", str(path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"{path}:3: admin.token: required when admin.host (0.0.0.0) is not a loopback address"
    ]


SIDECAR = Path(__file__).resolve().parent.parent / "config" / "sidecar.yaml"
SIDECAR_ENV = {"UPSTREAM_URL": "http://127.0.0.1:9000"}


def test_the_sidecar_console_is_off_until_its_port_is_set() -> None:
    admin = load(str(SIDECAR), environ=SIDECAR_ENV).admin
    assert (admin.host, admin.port) == ("0.0.0.0", None)
    env = {**SIDECAR_ENV, "GATEWAY_ADMIN_PORT": "8081", "GATEWAY_ADMIN_TOKEN": "tok"}
    admin = load(str(SIDECAR), environ=env).admin
    assert (admin.host, admin.port, admin.token) == ("0.0.0.0", 8081, "tok")


def test_the_sidecar_refuses_an_open_console_on_every_interface() -> None:
    with pytest.raises(ConfigError) as caught:
        load(str(SIDECAR), environ={**SIDECAR_ENV, "GATEWAY_ADMIN_PORT": "8081"})
    [message] = caught.value.messages
    assert message.endswith(
        "admin.token: required when admin.host (0.0.0.0) is not a loopback address"
    )


def test_a_console_port_in_use_is_a_clear_error_not_a_half_started_gateway(
    tmp_path: Path,
) -> None:
    import socket

    from tests.processes import free_port

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        admin_port = taken.getsockname()[1]
        path = tmp_path / "gw.yaml"
        db = tmp_path / "gw.db"
        path.write_text(MINIMAL + f"storage: {{path: {db}}}\nadmin: {{port: {admin_port}}}\n")
        result = run_cli("serve", "--config", str(path), "--port", str(free_port()))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"cannot listen on 127.0.0.1:{admin_port}" in result.stderr
    assert '"event":"listening"' not in result.stderr.replace(" ", "")
