"""The console's browser tests: Debian's chromium driven by Playwright, logged in, screenshots into docs/."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page, async_playwright

from tests.conftest import ADMIN, TEST_ADMIN_TOKEN, RunningPlatform
from tests.eventually import eventually

CHROMIUM = "/usr/bin/chromium"  # Debian's package (.ci/run installs it); `playwright install` is never run
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
VIEWPORT = {"width": 1280, "height": 800}


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def console_url(platform: RunningPlatform) -> str:
    return platform.settings.service_url("console")


@pytest.fixture
async def anonymous(browser: Browser) -> AsyncIterator[Page]:
    """A page of a fresh browser context: no cookie."""
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    page.set_default_timeout(30_000)
    try:
        yield page
    finally:
        await context.close()


@pytest.fixture
async def page(anonymous: Page, console_url: str) -> Page:
    """A page logged in with the admin token, through the login form."""
    await anonymous.goto(f"{console_url}/login")
    await anonymous.fill("input[name=token]", TEST_ADMIN_TOKEN)
    await anonymous.click("button[type=submit]")
    await anonymous.wait_for_url(f"{console_url}/")
    return anonymous


async def screenshot(page: Page, name: str) -> None:
    """The page as a reviewer sees it at 1280x800, into docs/screenshots/ (committed)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))


async def reload_until(page: Page, selector: str, timeout: float = 60, what: str = "") -> None:
    """Reload the page until `selector` matches (for pages that show a state a service reaches later)."""

    async def shown() -> bool:
        await page.reload()
        return await page.locator(selector).count() > 0

    await eventually(shown, timeout, what or selector)


async def api(platform: RunningPlatform, method: str, service: str, path: str, **kwargs: Any) -> Any:
    """A call to a service's API with the admin token (set-up the test needs besides the pages)."""
    async with (
        aiohttp.ClientSession(headers=ADMIN) as http,
        http.request(method, platform.settings.service_url(service) + path, **kwargs) as response,
    ):
        assert response.status < 300, f"{method} {path}: {response.status} {await response.text()}"
        return await response.json()


async def push(url: str, body: bytes) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=body, headers={"Content-Type": "application/json"}) as response,
    ):
        assert response.status == 200, await response.text()
