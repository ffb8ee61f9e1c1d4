"""Dataflows in the browser (D6): a flow drawn as a graph of storages and steps (asserted on the SVG's data
attributes), a node's definition and compiled SQL, a run started from the page and its status changing."""

from __future__ import annotations

from playwright.async_api import Page, expect

from tests.conftest import RunningPlatform
from tests.console.conftest import api, push, screenshot
from tests.eventually import eventually

FLOW = """
name: {flow}
description: Amounts doubled, then summed per shop
steps:
  - name: clean
    input: {src}
    stages:
      - compute: {{double: "amount * 2"}}
    output: {mid}
  - name: total
    input: {mid}
    stages:
      - aggregate: {{group_by: [shop], measures: {{total: {{sum: double}}}}}}
    output: {agg}
"""


async def test_a_flow_as_a_graph_run_from_the_page(
    page: Page, console_url: str, platform: RunningPlatform, storage_name: str
) -> None:
    src, mid, agg, flow = (f"{storage_name}_{part}" for part in ("src", "mid", "agg", "flow"))
    created = await api(platform, "POST", "ingest", "/api/storages", json={"name": src})
    await push(created["push_url"], b'[{"shop": "Lyon", "amount": 10}, {"shop": "Paris", "amount": 5}]')

    async def has_columns() -> bool:
        return bool((await api(platform, "GET", "ingest", f"/api/storages/{src}"))["columns"])

    await eventually(has_columns, 60, "the source storage's model")
    text = FLOW.format(flow=flow, src=src, mid=mid, agg=agg)
    await api(platform, "POST", "transform", "/api/flows", data=text, headers={"Content-Type": "application/yaml"})

    await page.click("nav >> text=Dataflows")
    await expect(page.locator(f"tr[data-flow={flow}]")).to_contain_text("never run")
    await screenshot(page, "flows")

    await page.click(f"text={flow}")
    svg = page.locator("#graph svg")
    ids = await svg.locator("g.node").evaluate_all("nodes => nodes.map(n => n.dataset.id)")
    assert sorted(ids) == sorted([f"storage:{src}", f"storage:{mid}", f"storage:{agg}", "step:clean", "step:total"])
    for storage in (src, mid, agg):
        await expect(svg.locator(f'g.node.storage[data-id="storage:{storage}"]')).to_have_count(1)
    for step in ("clean", "total"):
        await expect(svg.locator(f'g.node.step[data-id="step:{step}"]')).to_have_count(1)
    edges = await svg.locator("path.edge").evaluate_all(
        "paths => paths.map(p => [p.dataset.from, p.dataset.to, [...p.classList].filter(c => c !== 'edge')[0]])"
    )
    assert {tuple(e) for e in edges} >= {
        (f"storage:{src}", "step:clean", "reads"),
        ("step:clean", f"storage:{mid}", "writes"),
        (f"storage:{mid}", "step:total", "reads"),
        ("step:total", f"storage:{agg}", "writes"),
    }
    await expect(svg.locator('g.node[data-id="step:clean"].status-succeeded')).to_have_count(0)
    await screenshot(page, "flow")

    # A node is a link: its definition, its compiled SQL and its runs.
    await svg.locator('g.node[data-id="step:clean"]').click()
    details = page.locator('#node-details[data-node="step:clean"]')
    await expect(details).to_be_visible()
    await expect(details.locator("pre.definition")).to_contain_text("amount * 2")
    await expect(details.locator("pre.sql")).to_contain_text("SELECT")
    await expect(details).to_contain_text("This step has not run yet.")
    await screenshot(page, "flow-node")

    # Run now: the page follows the run (it refreshes while the run goes) until the steps show their status.
    await page.click("text=Run now")
    await expect(page.locator("table.run-list tr[data-run]")).to_have_count(1)
    await expect(page.locator('table.run-list tr[data-run][data-status="succeeded"]')).to_have_count(1, timeout=60_000)
    await expect(page.locator('#graph g.node[data-id="step:clean"].status-succeeded')).to_have_count(1)
    await expect(page.locator('#graph g.node[data-id="step:total"].status-succeeded')).to_have_count(1)
    await expect(page.locator('#timeline rect.bar[data-step="clean"]')).to_have_count(1)
    await expect(page.locator('#timeline rect.bar[data-step="total"]')).to_have_count(1)
    await screenshot(page, "flow-run")

    await page.click("nav >> text=Dataflows")
    await expect(page.locator(f"tr[data-flow={flow}]")).to_contain_text("succeeded")
