"""Headless Chromium for the portal tests: Debian's ``chromium`` driven by Playwright's Python API.

No ``playwright install``: the browser is the system package (``make browsers`` installs it), found
at ``BROKER_TEST_CHROMIUM``, else ``chromium`` on PATH, else ``/usr/bin/chromium``. Where it cannot
start the tests skip, except under ``CI``, where a missing browser must fail the build rather than
silently drop the portal's coverage.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest
from aiohttp.test_utils import TestClient

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The portal polls every 3 s; a status change may take one poll plus the delivery itself.
UI_TIMEOUT_MS = 20_000


def chromium_path() -> str:
    return os.environ.get("BROKER_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _unavailable(why: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"headless Chromium is required in CI: {why}", pytrace=False)
    pytest.skip(f"headless Chromium unavailable: {why}")


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError as exc:
        _unavailable(f"the playwright package is not installed ({exc})")
    path = chromium_path()
    if not os.path.exists(path):  # noqa: ASYNC240 (one stat before the browser starts)
        _unavailable(f"no Chromium at {path} (run `make browsers`)")
    playwright = await async_playwright().start()
    try:
        chromium = await playwright.chromium.launch(
            executable_path=path, args=CHROMIUM_ARGS, headless=True
        )
    except Exception as exc:
        await playwright.stop()
        _unavailable(f"{path} did not start: {exc}")
    try:
        yield chromium
    finally:
        await chromium.close()
        await playwright.stop()


@dataclass
class Portal:
    """One browser page on the portal of one test server, watching what the page does."""

    page: Any
    origin: str
    requests: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    async def open(self, path: str = "/portal") -> None:
        await self.page.goto(self.origin + path)

    async def sign_in(self, key: str) -> None:
        await self.page.fill("#api-key", key)
        await self.page.click("#sign-in")

    def registration_row(self, registration_id: str) -> Any:
        return self.page.locator(
            f'#registrations-body tr[data-registration-id="{registration_id}"]'
        )

    async def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        await self.page.screenshot(path=str(path), full_page=True)
        return path

    def assert_healthy(self) -> None:
        """Offline (every request to the broker itself: no CDN) and no script errors."""
        foreign = [
            url
            for url in self.requests
            if not url.startswith(self.origin + "/") and not url.startswith("data:")
        ]
        assert not foreign, f"the portal fetched from elsewhere: {foreign}"
        assert not self.page_errors, f"uncaught errors in the page: {self.page_errors}"
        # Chromium logs every non-2xx fetch ("Failed to load resource"); a rejected key or a 409
        # is expected in some tests. Anything else on the console is a bug.
        other = [m for m in self.console_errors if "Failed to load resource" not in m]
        assert not other, f"console errors: {other}"


@pytest.fixture
async def open_portal(browser: Any) -> AsyncIterator[Any]:
    """``portal = await open_portal(client)``: a fresh browser context (its own sessionStorage)."""
    contexts: list[Any] = []

    async def factory(client: TestClient) -> Portal:
        context = await browser.new_context(viewport={"width": 1400, "height": 900})
        context.set_default_timeout(UI_TIMEOUT_MS)
        contexts.append(context)
        page = await context.new_page()
        origin = str(client.make_url("/")).rstrip("/")
        portal = Portal(page=page, origin=origin)
        page.on("request", lambda request: portal.requests.append(request.url))
        page.on("pageerror", lambda error: portal.page_errors.append(str(error)))
        page.on(
            "console",
            lambda message: (
                portal.console_errors.append(message.text) if message.type == "error" else None
            ),
        )
        return portal

    yield factory
    for context in contexts:
        await context.close()
