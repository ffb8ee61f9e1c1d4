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
from headrace.settings import Settings
from transform.flows.service import Flows

NEEDS_POSTGRES = True
ROWS = int(os.environ.get("BENCH_FLOW_ROWS", 1_000_000))
PRODUCTS = 1000
RUNS = 5

# Two shapes of the same step: grouped per customer, as the seed's per-customer meta-info (1M sales into 50k
# groups), and per customer and category (1M sales into about as many groups: writing the output dominates).
SHAPES = {"per customer": ["customer_id"], "per customer and category": ["customer_id", "category"]}


def step_of(shape: str) -> dict[str, object]:
    slug = "_".join(SHAPES[shape])
    return {
        "name": f"by_{slug}",
        "input": "bench_sales",
        "stages": [
            {
                "join": {
                    "storage": "bench_products",
                    "on": {"product_id": "product_id"},
                    "columns": ["category", "price"],
                }
            },
            {"compute": {"amount": "quantity * price"}},
            {
                "aggregate": {
                    "group_by": SHAPES[shape],
                    "measures": {"turnover": {"sum": "amount"}, "lines": {"count": "*"}},
                }
            },
        ],
        "output": f"bench_turnover_{slug}",
    }


def hand_sql(shape: str, table: str) -> str:
    """The statement a person would write for the step, into a table shaped like the step's output."""
    keys = ", ".join(("s." if k == "customer_id" else "p.") + k for k in SHAPES[shape])
    return (
        f"INSERT INTO {table} ({', '.join(SHAPES[shape])}, turnover, lines)"
        f" SELECT {keys}, sum(s.quantity * p.price), count(*)"
        " FROM storage.bench_sales s JOIN storage.bench_products p ON s.product_id = p.product_id"
        f" GROUP BY {keys}"
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


async def best_of_interleaved(works: list[Callable[[], Awaitable[object]]]) -> list[float]:
    """Each work's best of RUNS, the works taking turns: a replace leaves its table's dead rows behind until
    autovacuum passes, so each work must meet the same state (one unmeasured run each first, then alternating)."""
    for work in works:
        await work()
    timings: list[list[float]] = [[] for _ in works]
    for _ in range(RUNS):
        for index, work in enumerate(works):
            started = time.perf_counter()
            await work()
            timings[index].append(time.perf_counter() - started)
    return [min(t) for t in timings]


def pandas_round(database_url: str, group_by: list[str], table: str) -> None:
    """Read both tables, join, compute, aggregate in pandas, and write the result back (ADBC both ways)."""
    with adbc_driver_postgresql.dbapi.connect(database_url) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT customer_id, product_id, quantity FROM storage.bench_sales")
        sales = cursor.fetch_arrow_table().to_pandas()
        cursor.execute("SELECT product_id, category, price FROM storage.bench_products")
        products = cursor.fetch_arrow_table().to_pandas()
        lines = sales.merge(products, on="product_id")
        lines["amount"] = lines["quantity"] * lines["price"]
        result = lines.groupby(group_by).agg(turnover=("amount", "sum"), lines=("amount", "size")).reset_index()
        cursor.execute(f"DELETE FROM {table}")
        cursor.adbc_ingest(table, result, mode="append")
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
        # Each customer's 20 sales (i = c + 50000k) go to 20 products of 20 different categories: 37k + 7c mod 20.
        f"SELECT i % 50000, 1 + (i / 50000 * 37 + i * 7) % {PRODUCTS}, 1 + i % 5 FROM generate_series(1, {ROWS}) i",
    )
    flows = await Flows.start(settings)
    figures: list[Figure] = []
    try:
        for shape in SHAPES:
            figures += await measure(pool, flows, settings, shape)
    finally:
        await flows.stop()
        await pool.close()
    return figures


async def measure(pool: asyncpg.Pool, flows: Flows, settings: Settings, shape: str) -> list[Figure]:
    """The step of this shape, the same SQL by hand, and pandas: best of 3 each, the same rows written by all."""
    step_definition = step_of(shape)
    output = f"storage.{step_definition['output']}"
    slug = "_".join(SHAPES[shape])
    hand_table, pandas_table = f"bench_hand_{slug}", f"bench_pandas_{slug}"
    stored, _ = await flows.store.apply(parse_flow({"name": f"bench_{slug}", "steps": [step_definition]}))

    async def step() -> None:
        run_id = await flows.runner.start(stored, "bench")
        await flows.runner.wait(run_id)
        run = await flows.store.run(stored.id, run_id)
        assert run["status"] == "succeeded", run

    async def by_hand() -> None:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(f"DELETE FROM {hand_table}")
            await conn.execute(hand_sql(shape, hand_table))

    # By hand, into a table like the output storage's (its system columns' defaults and _xid index included).
    await step()  # the first run creates the output storage and its model: the hand table is made like it
    await pool.execute(f"CREATE TABLE {hand_table} (LIKE {output} INCLUDING ALL)")
    keys = ", ".join(f"{k} {'bigint' if k == 'customer_id' else 'text'}" for k in SHAPES[shape])
    await pool.execute(f"CREATE TABLE {pandas_table} ({keys}, turnover double precision, lines bigint)")
    database_url = settings.require_database_url()

    async def in_pandas() -> None:
        await asyncio.to_thread(pandas_round, database_url, SHAPES[shape], pandas_table)

    step_s, hand_s, pandas_s = await best_of_interleaved([step, by_hand, in_pandas])
    counts = [await pool.fetchval(f"SELECT count(*) FROM {t}") for t in (output, hand_table, pandas_table)]
    assert counts[0] == counts[1] == counts[2], counts
    label = f"{ROWS // 1000}k rows" if ROWS < 1_000_000 else f"{ROWS / 1e6:g}M rows"
    return [
        Figure(f"{shape}: the step over {label} vs the same SQL by hand", ROWS / step_s, "rows/s", ROWS / hand_s),
        Figure(
            f"{shape}: the step over {label} vs pandas (read, compute, write)", ROWS / step_s, "rows/s", ROWS / pandas_s
        ),
        Figure(f"{shape}: step, wall time (best of 5)", step_s * 1000, "ms"),
        Figure(f"{shape}: hand-written SQL, wall time (best of 5)", hand_s * 1000, "ms"),
        Figure(f"{shape}: pandas, wall time (best of 5)", pandas_s * 1000, "ms"),
        Figure(f"{shape}: groups written", float(counts[0]), "rows"),
    ]
