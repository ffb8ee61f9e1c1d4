"""Collectors in the browser: the definition, a run started from the page, its batch, and the batch replayed."""

from __future__ import annotations

import asyncpg
from playwright.async_api import Page, expect

from tests.conftest import RunningPlatform
from tests.console.conftest import api, reload_until, screenshot


async def test_a_collector_run_and_a_batch_replay_from_the_page(
    page: Page, platform: RunningPlatform, pool: asyncpg.Pool, database_url: str, storage_name: str
) -> None:
    table = f"src_{storage_name}"
    await pool.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
    await pool.execute(f"INSERT INTO {table} VALUES (1, 'a'), (2, 'b')")
    source = {"kind": "postgres", "dsn": database_url, "table": f"public.{table}"}
    await api(
        platform, "POST", "ingest", "/api/collectors", json={"name": table, "storage": storage_name, "source": source}
    )

    await page.click("nav >> text=Collectors")
    await expect(page.locator(f"tr[data-collector={table}]")).to_contain_text(storage_name)
    await page.click(f"text={table}")
    await expect(page.locator("pre.definition")).to_contain_text(f"public.{table}")
    await page.click("text=Run now")
    await expect(page.locator("p.notice")).to_have_text("Run started.")
    await reload_until(page, "table.batches tr[data-batch] .status-sent", what="the batch sent")
    await expect(page.locator("table.batches tr[data-batch]")).to_have_count(1)
    await expect(page.locator("table.batches tr[data-batch]")).to_contain_text("2")
    await screenshot(page, "collector")

    await page.locator("table.batches tr[data-batch] button", has_text="Replay").click()
    await expect(page.locator("p.notice")).to_have_text("Replay started.")
    await reload_until(page, "table.batches tr[data-batch]:nth-child(2) .status-sent", what="the replayed batch")
    await expect(page.locator("table.batches tr[data-batch]").first).to_contain_text("replay of")
