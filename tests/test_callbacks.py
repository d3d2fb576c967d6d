"""Signed callbacks: the route's or an allowed X-Callback-Url, retried, kept across restarts."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from standardwebhooks.webhooks import Webhook

from gateway.callbacks import allowed
from tests.conftest import config_text, settled, wait_for
from tests.fakes import FakeUpstream, Seen, header_values
from tests.processes import GatewayProcess

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


@pytest.fixture
async def receiver() -> AsyncIterator[FakeUpstream]:
    fake = await FakeUpstream().start()
    yield fake
    await fake.stop()


def callback_config(receiver: FakeUpstream, route_callback: str = "null") -> dict[str, Any]:
    routes = f"""
  - {{path: /async, upstream: legacy, mode: async, callback: {route_callback}}}
  - {{path: /told, upstream: legacy, mode: async}}
"""
    extra = f"callbacks: {{secret: '{SECRET}', allow_hosts: ['127.0.0.1']}}"
    return {"routes": routes, "extra": extra}


def verified(seen: Seen) -> Any:
    headers = {n.lower(): v for n, v in seen.headers}
    return Webhook(SECRET).verify(seen.body, headers)


async def test_route_callback_is_signed_with_the_status_json(
    gateway_for: Any, make_config: Any, receiver: FakeUpstream
) -> None:
    client = await gateway_for(make_config(**callback_config(receiver, f"'{receiver.url}/hook'")))
    location = (await client.post("/async/binary", data=b"x")).headers["Location"]
    await settled(client, location)
    await wait_for(lambda: receiver.seen)
    [seen] = receiver.seen
    assert seen.method == "POST" and seen.path_qs == "/hook"
    payload = verified(seen)  # raises unless the signature is right
    assert payload["id"] == location.rsplit("/", 1)[1]
    assert payload["status"] == "completed"
    assert payload["response"]["status"] == 201
    assert header_values(seen.headers, "webhook-attempt") == ["1"]


async def test_allowed_x_callback_url_is_told(
    gateway_for: Any, make_config: Any, receiver: FakeUpstream
) -> None:
    client = await gateway_for(make_config(**callback_config(receiver)))
    headers = {"X-Callback-Url": f"{receiver.url}/mine"}
    location = (await client.post("/told/x", headers=headers)).headers["Location"]
    await settled(client, location)
    await wait_for(lambda: receiver.seen)
    assert receiver.seen[0].path_qs == "/mine"
    assert verified(receiver.seen[0])["status"] == "completed"


async def test_disallowed_x_callback_url_is_400_and_never_called(
    gateway_for: Any, make_config: Any, receiver: FakeUpstream, upstream: FakeUpstream
) -> None:
    client = await gateway_for(make_config(**callback_config(receiver)))
    for url in ["http://localhost:1/x", "ftp://127.0.0.1/x", "http://127.0.0.2/x"]:
        response = await client.post("/told/x", headers={"X-Callback-Url": url})
        assert response.status == 400
        assert response.headers["Content-Type"] == "application/problem+json"
    assert upstream.seen == [] and receiver.seen == []


async def test_failed_delivery_is_retried_under_the_same_webhook_id(
    gateway_for: Any, make_config: Any, receiver: FakeUpstream
) -> None:
    config = make_config(**callback_config(receiver, f"'{receiver.url}/flaky?fail=1'"))
    client = await gateway_for(config)
    location = (await client.post("/async/x")).headers["Location"]
    done = await settled(client, location)
    assert done.status == 200  # a failing callback never changes the job's result
    await wait_for(lambda: len(receiver.seen) == 2, timeout=15)
    ids = [header_values(s.headers, "webhook-id")[0] for s in receiver.seen]
    attempts = [header_values(s.headers, "webhook-attempt")[0] for s in receiver.seen]
    assert ids[0] == ids[1] and attempts == ["1", "2"]
    assert verified(receiver.seen[1])["status"] == "completed"


async def test_owed_callbacks_survive_kill_9(
    tmp_path: Path, upstream: FakeUpstream, receiver: FakeUpstream, storage: str
) -> None:
    path = tmp_path / "gateway.yaml"
    settings = callback_config(receiver, f"'{receiver.url}/flaky?fail=1'")
    path.write_text(config_text(upstream.url, storage, **settings))
    args = ["serve", "--config", str(path)]
    gateway = await GatewayProcess(args, tmp_path / "log").start()
    try:
        async with aiohttp.ClientSession() as http, http.post(gateway.url + "/async/x") as r:
            assert r.status == 202
        await wait_for(lambda: len(receiver.seen) == 1)  # the first delivery failed (503)
        # ...and its retry is stored (killed before that, the delivery waits out its 60 s hold)
        await wait_for(lambda: '"callback_retry"' in (tmp_path / "log").read_text())
    finally:
        gateway.kill()
    restarted = await GatewayProcess(args, tmp_path / "log").start()
    try:
        await wait_for(lambda: len(receiver.seen) == 2, timeout=15)
        assert json.loads(receiver.seen[1].body)["status"] == "completed"
        assert header_values(receiver.seen[1].headers, "webhook-attempt") == ["2"]
    finally:
        restarted.kill()


@pytest.mark.parametrize(
    ("url", "hosts", "ok"),
    [
        ("https://hooks.example.com/x", ("hooks.example.com",), True),
        ("https://HOOKS.example.com:8443/x", ("hooks.example.com:8443",), True),
        ("https://hooks.example.com:8443/x", ("hooks.example.com:9000",), False),
        ("https://evil.example.com/x", ("hooks.example.com",), False),
        ("https://hooks.example.com.evil.net/x", ("hooks.example.com",), False),
        ("file:///etc/passwd", ("",), False),
        ("https://hooks.example.com/x", (), False),
    ],
)
def test_allowed_hosts(url: str, hosts: tuple[str, ...], ok: bool) -> None:
    assert allowed(url, hosts) is ok
