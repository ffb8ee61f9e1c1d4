"""Running an ETL step: per parameter value, one transaction that evolves the output's model and runs the statement."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from headrace.catalog import Catalog, Storage, StorageExists
from headrace.catalog.provision import create_storage
from headrace.etl.sql import GENERIC_PLANS
from headrace.flows.compile import Source, StepError, compile_step, pivot_values_sql
from headrace.flows.definitions import EtlStep
from headrace.flows.graph import reads_of
from headrace.flows.output import plan_change, write_sql
from headrace.flows.params import ParamError, chosen, declared_values, value_key
from headrace.flows.retry import is_transient
from headrace.postgres import connect, quote_ident
from headrace.settings import Settings
from transform.writer import pk_index_name

log = logging.getLogger(__name__)


@dataclass
class StepOutcome:
    """What an attempt did, as the run history records it."""

    rows_read: int = 0
    rows_written: int = 0
    sql: str | None = None
    parameters: list[Any] | None = None
    model_change: list[dict[str, Any]] = field(default_factory=list)
    values: dict[str, dict[str, Any]] | None = None
    output: str | None = None
    # The transactions that wrote the output's rows (a row's `_xid` names the step run that wrote it).
    transactions: list[str] = field(default_factory=list)


class StepFailed(Exception):
    def __init__(self, message: str, transient: bool, outcome: StepOutcome) -> None:
        super().__init__(message)
        self.transient = transient
        self.outcome = outcome


@dataclass
class EtlRun:
    """One attempt at an ETL step of a flow run."""

    settings: Settings
    catalog: Catalog
    flow_id: Any
    flow_name: str
    run_id: str
    step: EtlStep
    pause_seconds: float = 0.0  # test hook: sleep inside each transaction before it commits

    def _json(self, value: Any) -> Any:
        return value if isinstance(value, int | float | str | bool) or value is None else str(value)

    async def run(self, run_params: dict[str, Any], done: set[str]) -> StepOutcome:
        """Every value not `done` yet (a retry or a rerun redoes only the failed ones), each its own transaction."""
        outcome = StepOutcome()
        await self._ensure_output()
        conn = await self._connect()
        try:
            values = await self._values(conn, run_params)
            outcome.values = {} if self.step.param is not None else None
            failures: list[BaseException] = []
            for value in values:
                key = value_key(value) if self.step.param is not None else None
                if key is not None and key in done:
                    assert outcome.values is not None
                    outcome.values[key] = {"status": "succeeded", "reused": True}
                    continue
                try:
                    read, written, transaction = await self._write(conn, value, outcome)
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, StepError) as exc:
                    failures.append(exc)
                    if outcome.values is not None and key is not None:
                        outcome.values[key] = {"status": "failed", "error": str(exc)[:2000]}
                    if conn.is_closed():
                        conn = await self._connect()
                    continue
                outcome.rows_read += read
                outcome.rows_written += written
                outcome.transactions.append(transaction)
                if outcome.values is not None and key is not None:
                    outcome.values[key] = {
                        "status": "succeeded",
                        "rows_read": read,
                        "rows_written": written,
                        "transaction": transaction,
                    }
        finally:
            await conn.close()
        if failures:
            message = str(failures[0]) if len(failures) == 1 else f"{len(failures)} values failed; first: {failures[0]}"
            raise StepFailed(message, all(is_transient(f) for f in failures), outcome)
        return outcome

    async def _connect(self) -> asyncpg.Connection:
        # Named, so an operator (and a test) can find the step's session in pg_stat_activity.
        name = f"headrace-flow {self.flow_name}:{self.step.name}"[:63]
        return await connect(self.settings, application_name=name, command_timeout=None)

    async def _ensure_output(self) -> None:
        output = self.step.output
        try:
            await self.catalog.get(output.storage)
        except LookupError:
            try:
                await create_storage(
                    self.settings, self.catalog, output.storage, list(output.primary_key) or None, output.mode
                )
            except StorageExists:
                pass  # another run made it meanwhile

    async def _values(self, conn: asyncpg.Connection, run_params: dict[str, Any]) -> list[Any]:
        """The parameter's values for this run ([None] for a step without one)."""
        if self.step.param is None:
            return [None]
        name, spec = self.step.param
        declared = declared_values(spec)
        if declared is not None:
            values = declared[0]
        else:
            assert spec.distinct is not None
            storage = await self.catalog.get(spec.distinct.storage)
            model = await self.catalog.model(storage.id, conn)
            if spec.distinct.column not in model.by_key:
                raise StepFailed(f"params.{name}: no field {spec.distinct.column!r}", False, StepOutcome())
            column = quote_ident(model.by_key[spec.distinct.column].name)
            rows = await conn.fetch(
                f"SELECT DISTINCT {column} AS v FROM {storage.qualified_table} WHERE {column} IS NOT NULL"
                " ORDER BY 1 LIMIT 10001"
            )
            values = [r["v"] for r in rows]
        if name in run_params:
            try:
                values = chosen(values, run_params[name])
            except ParamError as exc:
                raise StepFailed(f"params.{name}: {exc}", False, StepOutcome()) from None
        return values

    async def _sources(self, conn: asyncpg.Connection) -> dict[str, Source]:
        found = {}
        for name in reads_of(self.step):
            try:
                storage = await self.catalog.get(name)
            except LookupError:
                raise StepError("input", f"no storage named {name!r}") from None
            model = await self.catalog.model(storage.id, conn)
            found[name] = Source(name, storage.qualified_table, model.columns)
        return found

    async def _output(self, conn: asyncpg.Connection) -> Storage:
        row = await conn.fetchrow(
            "SELECT id, name, table_name, primary_key, load_mode, locked, model_version"
            " FROM headrace.storages WHERE name = $1 FOR UPDATE",
            self.step.output.storage,
        )
        if row is None:
            raise StepError("output", f"the storage {self.step.output.storage!r} was deleted")
        return Storage.from_row(row)

    async def _pivots(
        self, conn: asyncpg.Connection, sources: dict[str, Source], values: dict[str, Any]
    ) -> dict[int, list[Any]]:
        found = {}
        for index, stage in enumerate(self.step.stages):
            if stage.pivot is None or stage.pivot.values is not None:
                continue
            sql, params = pivot_values_sql(self.step, sources, index, values)
            rows = await conn.fetch(sql, *params)
            if len(rows) > stage.pivot.max_values:
                raise StepError(f"stages[{index}].pivot", f"more than max_values ({stage.pivot.max_values}) values")
            found[index] = [r[0] for r in rows]
        return found

    async def _horizon(self, conn: asyncpg.Connection) -> tuple[int, int] | None:
        if not self.step.incremental:
            return None
        stored = await conn.fetchval(
            "SELECT horizon::text FROM headrace.flow_step_horizons WHERE flow_id = $1 AND step = $2",
            self.flow_id,
            self.step.name,
        )
        start = int(stored or 0)
        # Every transaction below the snapshot's xmin has ended: [horizon, xmin) misses nothing, takes nothing twice.
        end = int(await conn.fetchval("SELECT pg_snapshot_xmin(pg_current_snapshot())::text"))
        return start, max(start, end)

    async def _write(self, conn: asyncpg.Connection, value: Any, outcome: StepOutcome) -> tuple[int, int, str]:
        """One value (or the whole step): model change, statement, incremental horizon, all in one transaction;
        returns rows read, rows written and the transaction's id."""
        values = {self.step.param[0]: value} if self.step.param is not None else {}
        async with conn.transaction(isolation="repeatable_read"):
            await conn.execute(GENERIC_PLANS)
            storage = await self._output(conn)
            model = await self.catalog.model(storage.id, conn)
            xid_range = await self._horizon(conn)
            sources = await self._sources(conn)
            compiled = compile_step(self.step, sources, values, await self._pivots(conn, sources, values), xid_range)
            change = plan_change(model, [(k, t) for k, _, t in compiled.outputs], storage.locked)
            if change:
                model = await self.catalog.evolve(conn, storage, model, change)
                await conn.reload_schema_state()
                outcome.model_change.append(change.to_json())
            if self.step.output.mode == "merge":
                keys = ", ".join(quote_ident(model.by_key[k].name) for k in self.step.output.primary_key)
                await conn.execute(
                    f"CREATE UNIQUE INDEX IF NOT EXISTS {quote_ident(pk_index_name(storage))}"
                    f" ON {storage.qualified_table} ({keys})"
                )
            scanned = await self._scanned(conn, sources) if xid_range is None else 0
            statements = write_sql(compiled, model, self.step.output, value)
            status = ""
            for sql, params in statements.statements:
                status = await conn.execute(sql.replace("{table}", storage.qualified_table), *params)
            outcome.sql, outcome.parameters = (
                statements.statements[-1][0].replace("{table}", storage.qualified_table),
                [self._json(p) for p in statements.statements[-1][1]],
            )
            if xid_range is None:
                read = await self._scanned(conn, sources) - scanned
            else:
                read = await self._count_input(conn, sources, xid_range)
            if self.pause_seconds:
                await conn.execute("SELECT pg_sleep($1)", self.pause_seconds)
            if xid_range is not None:
                await conn.execute(
                    "INSERT INTO headrace.flow_step_horizons (flow_id, step, horizon) VALUES ($1, $2, $3::text::xid8)"
                    " ON CONFLICT (flow_id, step) DO UPDATE SET horizon = EXCLUDED.horizon, updated_at = now()",
                    self.flow_id,
                    self.step.name,
                    str(xid_range[1]),
                )
            transaction = str(await conn.fetchval("SELECT pg_current_xact_id()::text"))
        return read, int(status.split()[-1]), transaction

    async def _scanned(self, conn: asyncpg.Connection, sources: dict[str, Source]) -> int:
        """Rows this transaction's scans have read from the input so far (Postgres' per-transaction statistics):
        the statement's rows read, without a second pass over the input to count them."""
        return int(
            await conn.fetchval(
                "SELECT pg_stat_get_xact_tuples_returned($1::regclass) + pg_stat_get_xact_tuples_fetched($1::regclass)",
                sources[self.step.input].table,
            )
        )

    async def _count_input(
        self, conn: asyncpg.Connection, sources: dict[str, Source], xid_range: tuple[int, int] | None
    ) -> int:
        table = sources[self.step.input].table
        if xid_range is None:
            return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
        return int(
            await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE _xid >= $1::text::xid8 AND _xid < $2::text::xid8",
                str(xid_range[0]),
                str(xid_range[1]),
            )
        )


__all__ = ["EtlRun", "StepFailed", "StepOutcome"]
