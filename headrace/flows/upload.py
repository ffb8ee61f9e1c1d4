"""An upload step: a storage's rows (some columns, a filter) as CSV, NDJSON or Parquet, maybe gzip, to SFTP or FTP."""

from __future__ import annotations

import csv
import gzip
import io
import string
import tempfile
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path, PurePosixPath
from typing import IO, Any, cast

import asyncpg
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from headrace.catalog import Storage
from headrace.filestores import open_store
from headrace.flows.compile import StepError
from headrace.flows.definitions import UploadStep
from headrace.flows.formulas import compile_text
from headrace.models import Column, Model
from headrace.models.inference import format_datetime
from headrace.models.types import ColumnType
from headrace.postgres import quote_ident
from headrace.settings import Settings

FETCH_ROWS = 10_000
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


def _text(value: Any) -> Any:
    """The spelling exports use: ISO dates, UTC datetimes with a Z, booleans true/false, nested values as JSON."""
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return value


class _Writer:
    def __init__(self, step: UploadStep, columns: Sequence[Column], path: Path) -> None:
        self.step, self.columns, self.path = step, columns, path
        self.keys = [c.key for c in columns]
        self.file: IO[bytes] | None = None
        self.parquet: pq.ParquetWriter | None = None
        self.rows = 0
        if step.format != "parquet":
            raw = cast(IO[bytes], gzip.open(path, "wb", compresslevel=6) if step.gzip else open(path, "wb"))
            self.file = raw
            if step.format == "csv":
                self._csv_header()

    def _csv_header(self) -> None:
        self._write_csv([self.keys])

    def _write_csv(self, rows: list[list[Any]]) -> None:
        assert self.file is not None
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=self.step.csv_separator, lineterminator="\n").writerows(rows)
        self.file.write(buffer.getvalue().encode())

    def add(self, records: list[asyncpg.Record]) -> None:
        self.rows += len(records)
        if self.step.format == "csv":
            self._write_csv([["" if v is None else _text(v) for v in r] for r in records])
        elif self.step.format == "ndjson":
            assert self.file is not None
            lines = (
                orjson.dumps({k: _text(v) for k, v in zip(self.keys, r, strict=True) if v is not None}) for r in records
            )
            self.file.write(b"\n".join(lines) + b"\n")
        else:
            self._add_parquet(records)

    def _add_parquet(self, records: list[asyncpg.Record]) -> None:
        schema = pa.schema([(c.key, _ARROW[c.type]) for c in self.columns])
        arrays = []
        for index, column in enumerate(self.columns):
            values = [r[index] for r in records]
            if column.type is ColumnType.JSON:
                values = [None if v is None else orjson.dumps(v).decode() for v in values]
            arrays.append(pa.array(values, type=_ARROW[column.type]))
        if self.parquet is None:
            self.parquet = pq.ParquetWriter(self.path, schema, compression="gzip" if self.step.gzip else "snappy")
        self.parquet.write_table(pa.Table.from_arrays(arrays, schema=schema))

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
        elif self.parquet is None:  # no row at all: still a valid, empty file
            schema = pa.schema([(c.key, _ARROW[c.type]) for c in self.columns])
            pq.write_table(schema.empty_table(), self.path)
        else:
            self.parquet.close()


async def write_file(conn: asyncpg.Connection, step: UploadStep, storage: Storage, model: Model, path: Path) -> int:
    """The rows into a local file, read through a cursor in one snapshot; returns how many."""
    sql, params, columns = select_sql(step, storage, model)
    writer = _Writer(step, columns, path)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            cursor = await conn.cursor(sql, *params)
            while records := await cursor.fetch(FETCH_ROWS):
                writer.add(records)
    finally:
        writer.close()
    return writer.rows


async def upload(step: UploadStep, settings: Settings, pool: asyncpg.Pool, local: Path, target: PurePosixPath) -> None:
    """Put the file in place whole (the store writes it under a temporary name beside its target, then renames it):
    readers never see half a file."""
    async with open_store(step.destination, settings, pool) as store:
        await store.put_file(local, str(target))


def scratch_file(suffix: str) -> Path:
    handle = tempfile.NamedTemporaryFile(prefix="headrace-upload-", suffix=suffix, delete=False)
    handle.close()
    return Path(handle.name)
