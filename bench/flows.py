"""Dataflows: an aggregate-and-join ETL step over 1M rows, vs the same SQL by hand and vs pandas doing the same."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

import adbc_driver_postgresql.dbapi
import asyncpg

from bench.harness import BenchEnv, Figure
from headrace.catalog import Catalog
from headrace.flows.definitions import parse_flow
from headrace.models import Column, ModelChange
from headrace.models.types import ColumnType
from headrace.postgres import create_pool, migrate
from transform.flows.service import Flows

NEEDS_POSTGRES = True
ROWS = int(os.environ.get("BENCH_FLOW_ROWS", 1_000_000))
PRODUCTS = 1000
RUNS = 3

STEP = {
    "name": "by_customer",
    "input": "bench_sales",
    "stages": [
        {"join": {"storage": "bench_products", "on": {"product_id": "product_id"}, "columns": ["category", "price"]}},
        {"compute": {"amount": "quantity * price"}},
        {
            "aggregate": {
                "group_by": ["customer_id", "category"],
                "measures": {"turnover": {"sum": "amount"}, "lines": {"count": "*"}},
            }
        },
    ],
    "output": "bench_turnover",
}

# The statement a person would write for the step, into a table shaped like the step's output.
HAND = (
    "INSERT INTO bench_hand (customer_id, category, turnover, lines)"
    " SELECT s.customer_id, p.category, sum(s.quantity * p.price), count(*)"
    " FROM storage.bench_sales s JOIN storage.bench_products p ON s.product_id = p.product_id"
    " GROUP BY s.customer_id, p.category"
)


async def make_storage(pool: asyncpg.Pool, name: str, columns: dict[str, ColumnType], select: str) -> None:
    """A storage with this model, filled by one INSERT … SELECT (as fast as loading gets, and beside the point)."""
    catalog = Catalog(pool)
    storage, _ = await catalog.create(name)
    async with pool.acquire() as conn, conn.transaction():
        model = await catalog.model(storage.id, conn)
        change = ModelChange(added=[Column(k, k, t) for k, t in columns.items()])
        await catalog.evolve(conn, storage, model, change)
        listed = ", ".join(columns)
        await conn.execute(f"INSERT INTO {storage.qualified_table} ({listed}) {select}")
        await conn.execute(f"ANALYZE {storage.qualified_table}")


async def best(work: Callable[[], Awaitable[object]]) -> float:
    timings = []
    for _ in range(RUNS):
        started = time.perf_counter()
        await work()
        timings.append(time.perf_counter() - started)
    return min(timings)


def pandas_round(database_url: str) -> None:
    """Read both tables, join, compute, aggregate in pandas, and write the result back (ADBC both ways)."""
    with adbc_driver_postgresql.dbapi.connect(database_url) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT customer_id, product_id, quantity FROM storage.bench_sales")
        sales = cursor.fetch_arrow_table().to_pandas()
        cursor.execute("SELECT product_id, category, price FROM storage.bench_products")
        products = cursor.fetch_arrow_table().to_pandas()
        lines = sales.merge(products, on="product_id")
        lines["amount"] = lines["quantity"] * lines["price"]
        result = (
            lines.groupby(["customer_id", "category"])
            .agg(turnover=("amount", "sum"), lines=("amount", "size"))
            .reset_index()
        )
        cursor.execute("DELETE FROM bench_pandas")
        cursor.adbc_ingest("bench_pandas", result, mode="append")
        conn.commit()


async def run(env: BenchEnv) -> list[Figure]:
    settings = env.settings.model_copy(update={"flow_scheduler": False})
    pool = await create_pool(settings, max_size=4)
    await migrate(pool)
    await make_storage(
        pool,
        "bench_products",
        {"product_id": ColumnType.INTEGER, "category": ColumnType.STRING, "price": ColumnType.FLOAT},
        f"SELECT i, 'category ' || (i % 20), (i % 97) * 0.5 + 1 FROM generate_series(1, {PRODUCTS}) i",
    )
    await make_storage(
        pool,
        "bench_sales",
        {"customer_id": ColumnType.INTEGER, "product_id": ColumnType.INTEGER, "quantity": ColumnType.INTEGER},
        f"SELECT i % 50000, 1 + (i * 7) % {PRODUCTS}, 1 + i % 5 FROM generate_series(1, {ROWS}) i",
    )
    await pool.execute(
        "CREATE TABLE bench_pandas (customer_id bigint, category text, turnover double precision, lines bigint)"
    )

    async def by_hand() -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM bench_hand")
            await conn.execute(HAND)

    flows = await Flows.start(settings)
    try:
        flow = parse_flow({"name": "bench", "steps": [STEP]})
        stored, _ = await flows.store.apply(flow)

        async def step() -> None:
            run_id = await flows.runner.start(stored, "bench")
            await flows.runner.wait(run_id)
            run = await flows.store.run(stored.id, run_id)
            assert run["status"] == "succeeded", run

        await step()  # the first run creates the output storage and its model: not what is measured
        # By hand, into a table like the output storage's (its system columns' defaults and _xid index included).
        await pool.execute("CREATE TABLE bench_hand (LIKE storage.bench_turnover INCLUDING ALL)")
        hand_s = await best(by_hand)
        step_s = await best(step)
        pandas_s = await best(lambda: asyncio.to_thread(pandas_round, settings.require_database_url()))
        written = await pool.fetchval("SELECT count(*) FROM storage.bench_turnover")
        assert (
            written
            == await pool.fetchval("SELECT count(*) FROM bench_hand")
            == await pool.fetchval("SELECT count(*) FROM bench_pandas")
        )
    finally:
        await flows.stop()
        await pool.close()
    label = f"{ROWS // 1000}k rows" if ROWS < 1_000_000 else f"{ROWS / 1e6:g}M rows"
    return [
        Figure(f"the step over {label} vs the same SQL by hand", ROWS / step_s, "rows/s", baseline=ROWS / hand_s),
        Figure(f"the step over {label} vs pandas (read, compute, write)", ROWS / step_s, "rows/s", ROWS / pandas_s),
        Figure("step, wall time (best of 3)", step_s * 1000, "ms"),
        Figure("hand-written SQL, wall time (best of 3)", hand_s * 1000, "ms"),
        Figure("pandas, wall time (best of 3)", pandas_s * 1000, "ms"),
        Figure("groups written", float(written), "rows"),
    ]
