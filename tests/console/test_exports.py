"""Exports and collectors in the browser: an export's definition with its secret masked, a run started from the
page, and the run's files, rows and bytes."""

from __future__ import annotations

import uuid

from playwright.async_api import Page, expect

from headrace.platform.scratch import ScratchS3
from tests.conftest import RunningPlatform
from tests.console.conftest import api, push, reload_until, screenshot
from tests.eventually import eventually


async def test_an_export_run_from_the_page_and_its_files(
    page: Page, console_url: str, platform: RunningPlatform, storage_name: str, s3_server: ScratchS3, bucket: str
) -> None:
    created = await api(platform, "POST", "ingest", "/api/storages", json={"name": storage_name})
    events = [
        {"hit_time_utc": "2021-04-08T10:05:00Z", "page": "/home"},
        {"hit_time_utc": "2021-04-08T11:20:00Z", "page": "/cart"},
    ]
    await push(created["push_url"], str(events).replace("'", '"').encode())

    async def written() -> bool:
        count = {"aggregates": {"n": ["count", "*"]}}
        found = await api(platform, "POST", "ingest", f"/api/storages/{storage_name}/query", json=count)
        return bool(found["rows"] and found["rows"][0][0] == 2)

    await eventually(written, 60, "the two events written")
    name = f"e{uuid.uuid4().hex[:10]}"
    secret = f"secret-{uuid.uuid4().hex}"
    await api(
        platform,
        "POST",
        "exporter",
        "/api/exports",
        json={
            "name": name,
            "sources": [storage_name],
            "scheduled": False,
            "destination": {
                "kind": "s3",
                "bucket": bucket,
                "folder": "console",
                "endpoint_url": s3_server.endpoint_url,
                "region": s3_server.region,
                "access_key_id": s3_server.access_key_id,
                "secret_access_key": secret,
            },
        },
    )

    await page.click("nav >> text=Exports")
    await expect(page.locator(f"tr[data-export={name}]")).to_contain_text("never run")
    await screenshot(page, "exports")

    await page.click(f"text={name}")
    assert secret not in await page.content()
    await page.click("text=Run now")
    await expect(page.locator("p.notice")).to_have_text("Run started.")
    await reload_until(page, 'table.export-runs tr[data-status="succeeded"]', what="the run succeeded")
    run = page.locator('table.export-runs tr[data-status="succeeded"]')
    await run.locator("a").first.click()
    files = page.locator("table.files tr[data-file]")
    await expect(files).to_have_count(2)  # one per hour of event time
    names = await files.evaluate_all("rows => rows.map(r => r.dataset.file)")
    assert all(f.startswith(f"console/{name}/data/date=2021-04-08/") and f.endswith(".csv.gz") for f in names)
    await expect(run).to_contain_text("2")  # rows
    assert secret not in await page.content()
    await screenshot(page, "export-run")

    await page.click("nav >> text=Overview")
    await expect(page.locator(f"text={name}")).to_have_count(1)  # among the latest export runs


async def test_overview_and_collectors(page: Page, console_url: str) -> None:
    for service in ("ingest", "schema-registry", "transform", "exporter"):
        row = page.locator(f"table.services tr[data-service={service}]")
        await expect(row).to_contain_text("ready")
        await expect(row).to_contain_text("0.1.0")
    await expect(page.locator("#events-per-second")).to_be_visible()
    await page.reload()  # a second scrape: the rates are computed from two
    await expect(page.locator("#events-per-second")).not_to_have_text("—")
    await screenshot(page, "overview")
    await page.click("nav >> text=Collectors")
    await expect(page.locator("h1")).to_have_text("Collectors")
    await screenshot(page, "collectors")
