"""Storages in the browser: create one, push the seed's event to the push URL shown once, see the row and the
inferred model; widen a column and see the diff in the model history."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer
from playwright.async_api import Page, expect

from headrace.kafka.topics import Topics
from tests.conftest import RunningPlatform
from tests.console.conftest import push, reload_until, screenshot

SEED_BODY = b'{"key":"msg1", "key2":"msg2"}'  # the seed's curl example, as sent


async def produce(platform: RunningPlatform, storage: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=platform.settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(Topics(platform.settings.topic_prefix).ingest(storage), value)
    finally:
        await producer.stop()


async def test_create_a_storage_push_and_see_the_row_the_model_and_its_history(
    page: Page, console_url: str, storage_name: str, platform: RunningPlatform
) -> None:
    await page.click("nav >> text=Storages")
    await page.fill("#create-storage input[name=name]", storage_name)
    await page.click("#create-storage button[type=submit]")
    await expect(page.locator("h1 .name")).to_have_text(storage_name)
    push_url = (await page.locator("#push-url pre.url").inner_text()).strip()
    assert "/push/" in push_url
    await screenshot(page, "storage-created")

    # The token is shown only in that answer: the storage's own page never shows it.
    await page.goto(f"{console_url}/storages/{storage_name}")
    assert await page.locator("#push-url").count() == 0
    assert push_url.rsplit("/", 1)[1] not in await page.content()

    await push(push_url, SEED_BODY)
    await reload_until(page, "table.rows td:text-is('msg1')", what="the pushed row on the page")
    await expect(page.locator("table.rows td:text-is('msg2')")).to_have_count(1)
    await expect(page.locator("table.model tr[data-column=key] td.type")).to_have_text("string")
    await expect(page.locator("table.model tr[data-column=key2] td.type")).to_have_text("string")
    await expect(page.locator("#row-count")).to_have_text("1")

    # A new field comes in as an integer, then a float value widens it.
    await push(push_url, b'{"key": "msg3", "count": 2}')
    await reload_until(page, "table.model tr[data-column=count]", what="the new column")
    await push(push_url, b'{"key": "msg4", "count": 2.5}')
    await reload_until(page, "ul.history li.widened", what="the widening in the history")
    widened = page.locator("ul.history li.widened")
    await expect(widened).to_have_count(1)
    await expect(widened).to_contain_text("count")
    await expect(widened.locator(".type")).to_have_text(["integer", "float"])
    await expect(page.locator("ul.history li.added", has_text="count")).to_have_count(1)
    await expect(page.locator("table.model tr[data-column=count] td.type")).to_have_text("float")
    await screenshot(page, "storage")

    await page.goto(f"{console_url}/storages")
    row = page.locator(f"tr[data-storage={storage_name}]")
    await expect(row).to_contain_text("append")
    await expect(row).to_contain_text("evolving")
    await screenshot(page, "storages")

    # Locked, the model refuses a value that does not fit: a rejected row with its reason, replayed once unlocked.
    await page.goto(f"{console_url}/storages/{storage_name}")
    await page.click("text=Lock the model")
    await expect(page.locator("#model-state")).to_contain_text("locked")
    # Ingest refuses a misfit at once (422); produced to the storage's topic directly, transform keeps it aside.
    await produce(platform, storage_name, b'{"key": "msg5", "count": "many"}')
    await reload_until(page, "table.rejected tbody tr", what="the rejected row")
    await expect(page.locator("table.rejected tbody tr")).to_contain_text("count")
    await page.locator("#rejected").scroll_into_view_if_needed()
    await screenshot(page, "storage-rejected")
    await page.click("text=Unlock the model")
    await expect(page.locator("#model-state")).to_contain_text("evolving")
    await page.click("text=Replay the rejected rows")
    await expect(page.locator("p.notice")).to_contain_text("Replay started")
    await reload_until(page, "table.rows td:text-is('many')", what="the replayed row written")
    await expect(page.locator("table.rejected")).to_have_count(0)
    await expect(page.locator("table.model tr[data-column=count] td.type")).to_have_text("string")
