"""An upload step: a storage's rows (some columns, a filter) as CSV, NDJSON or Parquet, maybe gzip, to SFTP or FTP."""

from __future__ import annotations

import asyncio
import string
import tempfile
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

import asyncpg
import orjson
import pyarrow as pa

from headrace.catalog import Storage
from headrace.filestores import open_store
from headrace.flows.compile import StepError
from headrace.flows.definitions import UploadStep
from headrace.flows.formulas import compile_text
from headrace.formats import FileOptions, FileWriter, Format, make_format
from headrace.models import Column, Model
from headrace.models.types import ColumnType
from headrace.postgres import quote_ident
from headrace.settings import Settings

FETCH_ROWS = 10_000
MAX_BUFFERED_BYTES = 64 * 2**20
_JSON = {b"headrace.type": b"json"}
TEMPLATE_FIELDS = frozenset({"date", "datetime", "run_id", "flow", "step"})
_ARROW = {
    ColumnType.INTEGER: pa.int64(),
    ColumnType.FLOAT: pa.float64(),
    ColumnType.BOOLEAN: pa.bool_(),
    ColumnType.DATE: pa.date32(),
    ColumnType.DATETIME: pa.timestamp("us", tz="UTC"),
    ColumnType.STRING: pa.string(),
    ColumnType.JSON: pa.string(),
}


def check_template(path: str) -> None:
    """Refuse a name template with fields other than {date}, {datetime}, {run_id}, {flow}, {step}."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(path) if name is not None}
    except ValueError as exc:
        raise StepError("destination.path", f"not a name template: {exc}") from None
    unknown = names - TEMPLATE_FIELDS
    if unknown:
        raise StepError("destination.path", f"unknown field {{{sorted(unknown)[0]}}}; use {sorted(TEMPLATE_FIELDS)}")


def remote_path(step: UploadStep, now: datetime, run_id: str, flow: str) -> PurePosixPath:
    check_template(step.destination.path)
    fields = {
        "date": now.strftime("%Y-%m-%d"),
        "datetime": now.strftime("%Y%m%dT%H%M%SZ"),
        "run_id": run_id,
        "flow": flow,
        "step": step.name,
    }
    return PurePosixPath(step.destination.path.format_map(fields))


def select_sql(step: UploadStep, storage: Storage, model: Model) -> tuple[str, list[Any], list[Column]]:
    columns = [model.by_key[k] for k in step.columns] if step.columns else list(model.columns)
    params: list[Any] = []
    where = ""
    if step.filter:
        scope = {c.key: (quote_ident(c.name), c.type) for c in model.columns}
        expr, _ = compile_text(step.filter, scope, params, {})
        where = f" WHERE {expr.sql}"
    listed = ", ".join(quote_ident(c.name) for c in columns) or "NULL"
    return f"SELECT {listed} FROM {storage.qualified_table}{where} ORDER BY _xid, _event_id", params, columns


def file_options(step: UploadStep) -> FileOptions:
    """The step's file, written by the formats exports use (headrace/formats): the same spellings and encoders."""
    return FileOptions(step.format, step.csv_separator, True, step.gzip, "gzip" if step.gzip else "snappy")


def arrow_schema(columns: Sequence[Column]) -> pa.Schema:
    """The columns' Arrow types as exports shape them; JSON values travel as JSON text, marked as such."""
    return pa.schema(
        [pa.field(c.key, _ARROW[c.type], metadata=_JSON if c.type is ColumnType.JSON else None) for c in columns]
    )


def arrow_batch(records: list[asyncpg.Record], columns: Sequence[Column], schema: pa.Schema) -> pa.RecordBatch:
    arrays = []
    for index, column in enumerate(columns):
        values = [r[index] for r in records]
        if column.type is ColumnType.JSON:
            values = [None if v is None else orjson.dumps(v).decode() for v in values]
        arrays.append(pa.array(values, type=schema.field(index).type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _write(writer: FileWriter, fmt: Format, batch: pa.RecordBatch) -> None:
    """One fetched chunk into the file (in a thread: encoding and compression are no work for the event loop)."""
    writer.write(fmt.prepare(batch))
    if writer.buffered_bytes > MAX_BUFFERED_BYTES:
        writer.settle()  # Parquet encodes row groups aside: wait rather than gather the whole storage in memory


async def write_file(conn: asyncpg.Connection, step: UploadStep, storage: Storage, model: Model, path: Path) -> int:
    """The rows into a local file, read through a cursor in one snapshot; returns how many."""
    sql, params, columns = select_sql(step, storage, model)
    schema = arrow_schema(columns)
    fmt = make_format(file_options(step), schema)
    writer = await asyncio.to_thread(fmt.open, path)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            cursor = await conn.cursor(sql, *params)
            while records := await cursor.fetch(FETCH_ROWS):
                await asyncio.to_thread(_write, writer, fmt, arrow_batch(records, columns, schema))
        if not writer.rows and step.format == "csv":
            # An empty storage still gives its header: the file says what it would hold.
            await asyncio.to_thread(_write, writer, fmt, arrow_batch([], columns, schema))
        written = await asyncio.to_thread(writer.finish)
    except BaseException:
        await asyncio.to_thread(writer.abandon)
        raise
    return written.rows


async def upload(step: UploadStep, settings: Settings, pool: asyncpg.Pool, local: Path, target: PurePosixPath) -> None:
    """Put the file in place whole (the store writes it under a temporary name beside its target, then renames it):
    readers never see half a file."""
    async with open_store(step.destination, settings, pool) as store:
        await store.put_file(local, str(target))


def scratch_file(suffix: str) -> Path:
    handle = tempfile.NamedTemporaryFile(prefix="headrace-upload-", suffix=suffix, delete=False)
    handle.close()
    return Path(handle.name)
