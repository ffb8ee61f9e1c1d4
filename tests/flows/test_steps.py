"""ETL steps run in Postgres: stages, load modes, the model inferred from the result, system columns filled."""

from __future__ import annotations

import uuid

import asyncpg

from tests.flows.conftest import apply, last_attempts, load_rows, rows_of, run_now
from transform.flows.service import Flows


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def test_an_etl_step_filters_computes_aggregates_and_writes_its_output(flows: Flows, pool: asyncpg.Pool) -> None:
    sales, out = unique("sales"), unique("out")
    await load_rows(
        pool,
        sales,
        [
            {"customer": "a", "price": 2.5, "qty": 2, "day": "2024-01-03"},
            {"customer": "a", "price": 1.0, "qty": 1, "day": "2024-02-01"},
            {"customer": "b", "price": 10.0, "qty": 3, "day": "2024-01-09"},
            {"customer": "c", "price": 0.0, "qty": 5, "day": "2024-03-01"},
        ],
    )
    flow = unique("f")
    await apply(
        flows,
        {
            "name": flow,
            "steps": [
                {
                    "name": "meta",
                    "input": sales,
                    "stages": [
                        {"compute": {"total": "price * qty"}},
                        {"filter": "total > 0"},
                        {
                            "aggregate": {
                                "group_by": ["customer"],
                                "measures": {
                                    "turnover": {"sum": "total"},
                                    "purchases": {"count": "*"},
                                    "last": {"max": "day"},
                                },
                            }
                        },
                        {"rename": {"customer": "who"}},
                    ],
                    "output": out,
                }
            ],
        },
    )
    run = await run_now(flows, flow)
    assert run["status"] == "succeeded", run
    step = last_attempts(run)["meta"]
    assert (step["rows_read"], step["rows_written"]) == (4, 2)
    assert step["model_change"][0]["added"]
    assert await rows_of(pool, out, "who", "turnover", "purchases") == [("a", 6.0, 2), ("b", 30.0, 1)]
    # A derived row is no event; its transaction is its provenance, listed by the step run.
    written = await pool.fetch(f'SELECT _event_id, _received_at, _xid::text AS xid FROM storage."{out}"')
    assert {(r["_event_id"], r["_received_at"]) for r in written} == {(None, None)}
    assert {r["xid"] for r in written} == set(step["transactions"])
    # Replace: a second run leaves the same rows, not twice as many.
    assert (await run_now(flows, flow))["status"] == "succeeded"
    assert len(await rows_of(pool, out, "who")) == 2
