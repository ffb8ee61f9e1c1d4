"""Login with the admin token: pages need it, a wrong token is refused, the cookie is HttpOnly and SameSite=Strict,
and a POST without the form's CSRF token is refused 403."""

from __future__ import annotations

import aiohttp
from playwright.async_api import Page, expect

from tests.conftest import TEST_ADMIN_TOKEN, RunningPlatform
from tests.console.conftest import screenshot


async def test_pages_need_a_login_and_a_wrong_token_is_refused(anonymous: Page, console_url: str) -> None:
    await anonymous.goto(f"{console_url}/storages")
    await expect(anonymous).to_have_url(f"{console_url}/login?next=/storages")
    await screenshot(anonymous, "login")

    await anonymous.fill("input[name=token]", "not-the-token")
    await anonymous.click("button[type=submit]")
    await expect(anonymous.locator("p.error")).to_have_text("That is not the admin token.")
    assert "headrace_console" not in {c["name"] for c in await anonymous.context.cookies()}

    await anonymous.fill("input[name=token]", TEST_ADMIN_TOKEN)
    await anonymous.click("button[type=submit]")
    await expect(anonymous).to_have_url(f"{console_url}/storages")  # back where the visit started
    cookie = next(c for c in await anonymous.context.cookies() if c["name"] == "headrace_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert TEST_ADMIN_TOKEN not in cookie["value"]

    # Logging out drops the cookie: pages send to the login form again.
    await anonymous.click("header .logout button")
    await expect(anonymous).to_have_url(f"{console_url}/login")
    await anonymous.goto(f"{console_url}/flows")
    await expect(anonymous).to_have_url(f"{console_url}/login?next=/flows")


async def test_a_post_without_the_csrf_token_is_refused(console_url: str) -> None:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        # No cookie: refused, nothing done.
        async with http.post(f"{console_url}/storages", data={"name": "never", "load_mode": "append"}) as response:
            assert response.status == 403
        async with http.post(
            f"{console_url}/login", data={"token": TEST_ADMIN_TOKEN}, allow_redirects=False
        ) as response:
            assert response.status == 303
            assert "HttpOnly" in response.headers["Set-Cookie"] and "SameSite=Strict" in response.headers["Set-Cookie"]
        async with http.get(f"{console_url}/storages") as response:
            assert response.status == 200
            page = await response.text()
        for form in ({"name": "never", "load_mode": "append"}, {"name": "never", "csrf_token": "0" * 64}):
            async with http.post(f"{console_url}/storages", data=form) as response:
                assert response.status == 403
        async with http.post(f"{console_url}/storages/never/lock", json={}) as response:
            assert response.status == 403  # JSON bodies carry no form token: refused too
        async with http.get(f"{console_url}/storages") as response:
            assert 'data-storage="never"' not in await response.text()
        assert 'name="csrf_token"' in page  # the forms the console serves carry it
        # Health, readiness and metrics stay open, like every service's.
        for path in ("/healthz", "/readyz", "/metrics"):
            async with aiohttp.ClientSession() as anonymous, anonymous.get(console_url + path) as response:
                assert response.status == 200


def test_headrace_up_prints_the_console_and_status_lists_it(platform: RunningPlatform, console_url: str) -> None:
    assert f"console          {console_url}" in platform.output
    status = platform.cli_json("status")
    assert isinstance(status, dict)
    assert status["services"]["console"]["url"] == console_url and status["services"]["console"]["ready"]
