"""The seed's dataflow on a running platform, over HTTP: products from a CSV on SFTP, customers and sales tables,
per-customer meta-info, sales joined with it, customers over 100 € filtered, a pivot of turnover per shop, and the
history of active clients by month; every result equal to pandas computing the same on the same data."""

from __future__ import annotations

import random
import uuid
from datetime import date, timedelta
from typing import Any

import aiohttp
import asyncpg
import pandas as pd
import yaml

from headrace.platform.scratch import ScratchSftp
from tests.conftest import ADMIN, RunningPlatform
from tests.eventually import eventually
from tests.flows.conftest import api, rows_of

SHOPS = ["Lyon", "Nantes", "Paris", "Lille"]


def sample(seed: int = 13) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(seed)
    products = [{"product_id": i, "label": f"product {i}", "price": round(rng.uniform(2, 60), 2)} for i in range(1, 13)]
    customers = [{"customer_id": i, "name": f"customer {i}", "city": rng.choice(SHOPS)} for i in range(1, 41)]
    sales = [
        {
            "sale_id": i,
            "customer_id": rng.randint(1, 40),
            "product_id": rng.randint(1, 12),
            "shop": rng.choice(SHOPS),
            "quantity": rng.randint(1, 4),
            "sold_on": (date(2023, 1, 1) + timedelta(days=rng.randint(0, 729))).isoformat(),
        }
        for i in range(1, 601)
    ]
    return products, customers, sales


def flow_yaml(name: str, s: dict[str, str]) -> str:
    definition = {
        "name": name,
        "steps": [
            {
                "name": "lines",
                "input": s["sales"],
                "stages": [
                    {"join": {"storage": s["products"], "on": {"product_id": "product_id"}, "columns": ["price"]}},
                    {"compute": {"amount": "quantity * price"}},
                ],
                "output": s["lines"],
            },
            {
                "name": "meta",
                "input": s["lines"],
                "stages": [
                    {
                        "aggregate": {
                            "group_by": ["customer_id"],
                            "measures": {
                                "turnover": {"sum": "amount"},
                                "purchases": {"count": "*"},
                                "last_purchase": {"max": "sold_on"},
                            },
                        }
                    }
                ],
                "output": s["meta"],
            },
            {
                "name": "enriched",
                "input": s["lines"],
                "stages": [
                    {"join": {"storage": s["meta"], "on": {"customer_id": "customer_id"}, "how": "left"}},
                    {"join": {"storage": s["customers"], "on": {"customer_id": "customer_id"}, "columns": ["name"]}},
                    {"filter": "turnover > 100"},
                    {"select": ["sale_id", "name", "shop", "amount", "turnover"]},
                ],
                "output": s["big"],
            },
            {
                "name": "by_shop",
                "input": s["lines"],
                "stages": [{"pivot": {"index": ["customer_id"], "key": "shop", "value": "amount"}}],
                "output": s["pivot"],
            },
            {
                "name": "active",
                "input": s["lines"],
                "params": {"month": {"dates": {"start": "2024-01-01", "end": "2024-12-01", "by": "month"}}},
                "stages": [
                    # Active: a purchase in the 12 months before the calculation month.
                    {"compute": {"ago": "(year(@month) - year(sold_on)) * 12 + month(@month) - month(sold_on)"}},
                    {"filter": "ago >= 1 and ago <= 12"},
                    {"aggregate": {"measures": {"active_clients": {"count_distinct": "customer_id"}}}},
                ],
                "output": s["active"],
            },
        ],
    }
    return yaml.safe_dump(definition, sort_keys=False)


def expected(products: list[dict], customers: list[dict], sales: list[dict]) -> dict[str, pd.DataFrame]:
    lines = pd.DataFrame(sales).merge(pd.DataFrame(products)[["product_id", "price"]], on="product_id")
    lines["amount"] = lines["quantity"] * lines["price"]
    lines["sold_on"] = pd.to_datetime(lines["sold_on"])
    meta = lines.groupby("customer_id").agg(
        turnover=("amount", "sum"), purchases=("amount", "size"), last_purchase=("sold_on", "max")
    )
    enriched = lines.merge(meta.reset_index(), on="customer_id", how="left")
    enriched = enriched.merge(pd.DataFrame(customers)[["customer_id", "name"]], on="customer_id")
    big = enriched[enriched["turnover"] > 100][["sale_id", "name", "shop", "amount", "turnover"]]
    pivot = lines.pivot_table(index="customer_id", columns="shop", values="amount", aggfunc="sum")
    active = []
    for month in pd.date_range("2024-01-01", "2024-12-01", freq="MS"):
        since = (month.year * 12 + month.month) - (lines["sold_on"].dt.year * 12 + lines["sold_on"].dt.month)
        active.append((month.date(), lines[(since >= 1) & (since <= 12)]["customer_id"].nunique()))
    return {"meta": meta, "big": big, "pivot": pivot, "active": pd.DataFrame(active, columns=["month", "n"])}


def close(a: float | None, b: float | None) -> bool:
    return (a is None and pd.isna(b)) or (a is not None and not pd.isna(b) and abs(a - b) < 1e-6)


async def collect(
    platform: RunningPlatform, pool: asyncpg.Pool, database_url: str, name: str, rows: list[dict]
) -> None:
    """A Postgres table of the shop's database, collected into the storage of the same name (a snapshot)."""
    frame = pd.DataFrame(rows)
    types = {"int64": "bigint", "object": "text"}
    columns = ", ".join(f"{c} {types.get(str(frame[c].dtype), 'text')}" for c in frame.columns)
    await pool.execute(f"CREATE TABLE public.{name} ({columns})")
    date_columns = [c for c in frame.columns if c.endswith("_on")]
    for column in date_columns:
        await pool.execute(f"ALTER TABLE public.{name} ALTER COLUMN {column} TYPE date USING {column}::date")
    values = [tuple(date.fromisoformat(v) if k in date_columns else v for k, v in r.items()) for r in rows]
    await pool.copy_records_to_table(name, schema_name="public", columns=list(frame.columns), records=values)
    ingest = platform.settings.service_url("ingest")
    definition = {
        "name": name,
        "storage": name,
        "source": {"kind": "postgres", "dsn": database_url, "table": f"public.{name}"},
    }
    async with aiohttp.ClientSession(headers=ADMIN) as session:
        async with session.post(f"{ingest}/api/collectors", json=definition) as response:
            assert response.status == 201, await response.text()
        async with session.post(f"{ingest}/api/collectors/{name}/run") as response:
            assert response.status in (200, 202), await response.text()


async def test_the_seed_dataflow_gives_what_pandas_gives(
    platform: RunningPlatform, pool: asyncpg.Pool, sftp_server: ScratchSftp, database_url: str
) -> None:
    tag = uuid.uuid4().hex[:6]
    s = {k: f"{k}_{tag}" for k in ("products", "customers", "sales", "lines", "meta", "big", "pivot", "active")}
    products, customers, sales = sample()

    # Products: a CSV file on the SFTP server, imported by the platform (ingest, Kafka, transform).
    csv_path = sftp_server.root / f"products_{tag}.csv"
    pd.DataFrame(products).to_csv(csv_path, index=False)
    url = f"sftp://{sftp_server.user}@{sftp_server.host}:{sftp_server.port}{csv_path}"
    key = str(sftp_server.client_key_path)
    platform.cli("storage", "import", s["products"], "--from", url, "--key", key, "--mode", "replace")
    # Customers and sales: tables of the shop's Postgres database, brought in by collectors.
    await collect(platform, pool, database_url, s["customers"], customers)
    await collect(platform, pool, database_url, s["sales"], sales)

    async def loaded(name: str, key: str, count: int) -> bool:
        try:
            return len(await rows_of(pool, name, key)) == count
        except LookupError:
            return False

    await eventually(lambda: loaded(s["products"], "product_id", len(products)), what="the products import")
    await eventually(lambda: loaded(s["customers"], "customer_id", len(customers)), what="the customers collected")
    await eventually(lambda: loaded(s["sales"], "sale_id", len(sales)), what="the sales collected")

    yaml_type = {"Content-Type": "application/yaml"}
    status, applied = await api(platform, "POST", "/api/flows", data=flow_yaml(f"seed_{tag}", s), headers=yaml_type)
    assert status == 201, applied
    status, run = await api(platform, "POST", f"/api/flows/seed_{tag}/runs?wait=true")
    assert status == 200 and run["status"] == "succeeded", run
    active_step = next(st for st in run["steps"] if st["step"] == "active")
    assert len(active_step["values"]) == 12 and all(v["status"] == "succeeded" for v in active_step["values"].values())

    want = expected(products, customers, sales)
    meta = await rows_of(pool, s["meta"], "customer_id", "turnover", "purchases", "last_purchase")
    assert [(c, p, d) for c, _, p, d in meta] == [
        (c, int(r.purchases), r.last_purchase.date()) for c, r in want["meta"].sort_index().iterrows()
    ]
    assert all(close(t, want["meta"].loc[c, "turnover"]) for c, t, _, _ in meta)

    big = await rows_of(pool, s["big"], "sale_id", "name", "shop", "amount", "turnover")
    wanted_big = sorted(want["big"].itertuples(index=False), key=lambda r: r.sale_id)
    assert len(big) == len(wanted_big) > 0
    assert all(
        a[:3] == (b.sale_id, b.name, b.shop) and close(a[3], b.amount) and close(a[4], b.turnover)
        for a, b in zip(big, wanted_big, strict=True)
    )

    pivot = await rows_of(pool, s["pivot"], "customer_id", *SHOPS)
    wanted_pivot = want["pivot"].reindex(columns=SHOPS)
    assert [r[0] for r in pivot] == sorted(wanted_pivot.index)
    for row in pivot:
        assert all(close(v, wanted_pivot.loc[row[0], shop]) for v, shop in zip(row[1:], SHOPS, strict=True))

    active = await rows_of(pool, s["active"], "month", "active_clients")
    assert active == list(want["active"].itertuples(index=False, name=None))

    # Rerunning one value replaces only its rows.
    status, again = await api(
        platform, "POST", f"/api/flows/seed_{tag}/runs?wait=true", json={"params": {"month": "2024-03-01"}}
    )
    assert status == 200 and again["status"] == "succeeded", again
    assert await rows_of(pool, s["active"], "month", "active_clients") == active
