"""The console in a real browser: Debian's chromium driven by Playwright's async API (no browser
download, no pytest plugin), launched once for the module.

Without chromium these tests skip, except in CI (`CI` set), where they fail. With
`CONSOLE_SCREENSHOTS` set they also write the README's screenshots under tests/screenshots/.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from gateway.app import create_app
from gateway.config import parse
from gateway.console.pages import CONSOLE
from gateway.console.server import create_console
from gateway.handlers import RUNTIME
from tests.conftest import config_text, wait_for
from tests.fakes import FakeUpstream
from tests.processes import ROOT

pytestmark = pytest.mark.asyncio(loop_scope="module")
CHROMIUM = "/usr/bin/chromium"
# This machine's closed network refuses Chromium's own background connections: turn them off.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TOKEN = "browser-token"
SHOTS = ROOT / "tests" / "screenshots"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed")
    async with async_playwright() as playwright:
        # launch() starts the browser on a fresh, empty profile of its own (a temp dir).
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        await launched.close()


@dataclass
class Stack:
    """A gateway, its console and a fake upstream, each a real server on 127.0.0.1."""

    upstream: FakeUpstream
    gateway: str
    console: str
    app: web.Application
    hub: Any
    http: aiohttp.ClientSession
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def post(self, path: str) -> str:
        async with self.http.post(self.gateway + path, data=b"x") as response:
            assert response.status == 202
            return str((await response.json())["id"])

    async def state(self, job_id: str) -> str:
        return str((await self.app[RUNTIME].store.get(job_id, 0)).status)  # type: ignore[union-attr]

    async def page(self, context: BrowserContext) -> Page:
        page = await context.new_page()
        page.set_default_timeout(10_000)
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        return page

    def check_page_hygiene(self) -> None:
        assert self.requests and all(u.startswith(self.console + "/") for u in self.requests), (
            self.requests
        )
        assert self.errors == []


@contextlib.asynccontextmanager
async def stack(
    tmp_path: Path, upstream_timeout: str = "5s", max_in_flight: int = 2
) -> AsyncIterator[Stack]:
    fake = await FakeUpstream().start()
    text = config_text(
        fake.url,
        str(tmp_path / "gateway.db"),
        extra=f"admin: {{port: 0, token: {TOKEN}}}",
        upstream={"timeout": upstream_timeout, "max_in_flight": str(max_in_flight)},
    )
    app = create_app(parse(text, "browser.yaml", {}))
    runners = [web.AppRunner(app)]
    await runners[0].setup()
    await web.TCPSite(runners[0], "127.0.0.1", 0).start()
    console_app = create_console(app[RUNTIME], tick=0.2)
    runners.append(web.AppRunner(console_app))
    await runners[1].setup()
    await web.TCPSite(runners[1], "127.0.0.1", 0).start()
    gateway, console = (f"http://127.0.0.1:{r.addresses[0][1]}" for r in runners)
    try:
        async with aiohttp.ClientSession() as http:
            yield Stack(fake, gateway, console, app, console_app[CONSOLE].hub, http)
    finally:
        fake.gate.set()
        for runner in reversed(runners):
            await runner.cleanup()
        await fake.stop()


async def sign_in(page: Page, console: str, errors: list[str]) -> None:
    """Sign in from the 401 page a browser first gets (Chromium logs that 401 as an error)."""
    await page.goto(console + "/")
    await expect(page.locator("h1")).to_have_text("Sign in")
    await page.fill("input[name=token]", TOKEN)
    await page.click("button[type=submit]")
    await expect(page.locator("h1")).to_have_text("Overview")
    assert [e for e in errors if "401" not in e] == []
    errors.clear()


async def assert_no_inline_code(page: Page) -> None:
    inline = await page.evaluate(
        """() => ({
            scripts: [...document.scripts].filter(s => !s.src || s.textContent.trim()).length,
            styles: document.querySelectorAll("style, [style]").length,
            handlers: [...document.querySelectorAll("*")].filter(
                e => [...e.attributes].some(a => a.name.startsWith("on"))).length,
        })"""
    )
    assert inline == {"scripts": 0, "styles": 0, "handlers": 0}


async def shoot(page: Page, name: str) -> None:
    if os.environ.get("CONSOLE_SCREENSHOTS"):
        SHOTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(SHOTS / name), full_page=True, caret="initial")


async def test_the_overview_moves_live_and_can_pause(browser: Browser, tmp_path: Path) -> None:
    async with stack(tmp_path) as s:
        context = await browser.new_context(viewport={"width": 1100, "height": 640})
        page = await s.page(context)
        await sign_in(page, s.console, s.errors)
        running = page.locator('span[data-live="legacy.running"]')
        await expect(running).to_have_text("0")
        await expect(page.locator("#live-state")).to_have_text("live")
        await page.evaluate("window.notReloaded = true")
        s.upstream.gate.clear()
        for n in range(3):
            await s.post(f"/async/report-{n}?hold=1")
        await expect(running).to_have_text("2")
        await expect(page.locator('[data-live="legacy.queued"]')).to_have_text("1")
        await expect(page.locator('meter[data-live="legacy.running"]')).to_have_attribute(
            "value", "2"
        )
        await shoot(page, "console-overview.png")
        s.upstream.gate.set()
        await expect(page.locator('[data-live="legacy.ended.completed"]')).to_have_text("3")
        await expect(running).to_have_text("0")
        assert await page.evaluate("window.notReloaded") is True

        hub = s.hub  # one viewer: the snapshot task stops when its stream does
        await page.click("#pause")
        await expect(page.locator("#live-state")).to_have_text("paused")
        await wait_for(lambda: not hub.running)
        await page.click("#pause")
        await expect(page.locator("#live-state")).to_have_text("live")
        await page.evaluate(
            """() => {
                Object.defineProperty(document, "hidden", {value: true, configurable: true});
                document.dispatchEvent(new Event("visibilitychange"));
            }"""
        )
        await wait_for(lambda: not hub.running)  # a hidden tab keeps no stream open
        await page.evaluate(
            """() => {
                Object.defineProperty(document, "hidden", {value: false, configurable: true});
                document.dispatchEvent(new Event("visibilitychange"));
            }"""
        )
        await wait_for(lambda: hub.running)  # shown again: the stream is back
        await hub.bye()  # what a drain does: the page stops listening, and says why
        await expect(page.locator("#live-state")).to_contain_text("no longer update")
        await expect(page.locator('[data-live="draining"]')).to_have_text("draining")
        await assert_no_inline_code(page)
        s.check_page_hygiene()
        await context.close()


async def test_find_a_failed_job_retry_it_and_cancel_a_queued_one(
    browser: Browser, tmp_path: Path
) -> None:
    async with stack(tmp_path, upstream_timeout="2s", max_in_flight=3) as s:
        s.upstream.gate.clear()  # held past the 2 s timeout: each of these fails
        failed = [await s.post(f"/async/invoice-{n}?hold=1&token=q.v.{n}") for n in range(3)]
        for job_id in failed:
            await wait_for(lambda: _is(s, job_id, "failed"))  # noqa: B023
        context = await browser.new_context(viewport={"width": 1000, "height": 760})
        page = await s.page(context)
        await sign_in(page, s.console, s.errors)
        await page.click("nav >> text=Jobs")
        await page.select_option("select[name=status]", "failed")
        await page.click("form.filters button[type=submit]")
        rows = page.locator("#jobs tbody tr")
        await expect(rows).to_have_count(3)
        await expect(page.locator("#jobs")).not_to_contain_text("q.v.")  # no id holds a dot
        await rows.first.locator("a.id").click()
        await expect(page.locator('[data-live="job.status"]')).to_have_text("failed")
        await expect(page.locator('[data-live="job.failure"]')).to_contain_text("timeout")
        await shoot(page, "console-job.png")
        await page.click("#retry")
        # the same page, live: the job runs again, and completes once the upstream answers
        await expect(page.locator('[data-live="job.status"]')).to_have_text("running")
        s.upstream.gate.set()
        await expect(page.locator('[data-live="job.status"]')).to_have_text("completed")
        await expect(page.locator("#changed")).to_be_visible()  # its actions are out of date
        await expect(page.locator("#actions")).to_be_hidden()
        await expect(page.locator('[data-live="job.response"]')).to_have_text("200")
        await expect(page.locator('[data-live="job.failure"]')).to_have_text("\N{EN DASH}")
        assert await s.state(failed[2]) == "completed"

        await page.goto(s.console + "/jobs?status=failed")
        await page.click("#bulk-retry")
        await expect(page.locator("#confirm-count")).to_contain_text("Retry 2 failed jobs")
        await expect(page.locator("#confirm")).to_have_text("Retry 2 jobs")
        await page.click("#confirm")
        await expect(page.locator("#message")).to_have_text("2 failed jobs queued again.")
        for job_id in failed:
            await wait_for(lambda: _is(s, job_id, "completed"))  # noqa: B023

        s.app[RUNTIME].dispatcher._claiming = False  # nothing is taken: the next one waits
        queued = await s.post("/async/later")
        await page.goto(f"{s.console}/jobs/{queued}")
        await expect(page.locator('[data-live="job.status"]')).to_have_text("queued")
        await page.click("#cancel")
        await expect(page.locator('[data-live="job.status"]')).to_have_text("canceled")
        assert await s.state(queued) == "canceled"
        await assert_no_inline_code(page)
        s.check_page_hygiene()
        await context.close()


async def _is(s: Stack, job_id: str, status: str) -> bool:
    return await s.state(job_id) == status


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_readable_at_a_phones_width_in_light_and_dark(
    browser: Browser, tmp_path: Path, scheme: Any
) -> None:
    async with stack(tmp_path) as s:
        context = await browser.new_context(
            viewport={"width": 390, "height": 800}, color_scheme=scheme
        )
        page = await s.page(context)
        await sign_in(page, s.console, s.errors)
        job_id = await s.post("/async/a")
        for path in ("/", "/jobs", f"/jobs/{job_id}"):
            await page.goto(s.console + path)
            wide = await page.evaluate("document.documentElement.scrollWidth")
            assert wide <= 390, (path, wide)
        background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
        level = sum(int(n) for n in re.findall(r"\d+", background)[:3])
        assert (level < 150) if scheme == "dark" else (level > 600), background
        s.check_page_hygiene()
        await context.close()
