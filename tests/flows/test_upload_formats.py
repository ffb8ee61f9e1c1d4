"""An upload step's file in each format, gzipped or not: written by the exports' formats, read back whole."""

from __future__ import annotations

import csv
import gzip
import io
import uuid
from pathlib import Path

import asyncpg
import orjson
import pyarrow.parquet as pq
import pytest

from headrace.catalog import Catalog
from headrace.flows.definitions import UploadStep
from headrace.flows.upload import write_file
from tests.flows.conftest import load_rows

RECORDS = [
    {"n": 1, "x": 1.5, "ok": True, "day": "2024-02-29", "at": "2024-02-29T10:58:14.25Z"}
    | {"s": 'a "b",\nc', "j": {"k": [1]}},
    {"n": -(2**63), "x": -0.0, "ok": False, "day": "1999-12-31", "at": "1999-12-31T23:59:59Z", "s": "é", "j": [1, "2"]},
    {"n": None, "x": None, "ok": None, "day": None, "at": None, "s": None, "j": None},
]
KEYS = ["n", "x", "ok", "day", "at", "s", "j"]


def step(fmt: str, gzipped: bool, separator: str = ",") -> UploadStep:
    return UploadStep.model_validate(
        {
            "name": "ship",
            "type": "upload",
            "storage": "unused",
            "format": fmt,
            "gzip": gzipped,
            "csv_separator": separator,
            "destination": {"kind": "sftp", "host": "h", "user": "u", "password": "p", "path": "/x.csv"},
        }
    )


def text_of(path: Path, gzipped: bool) -> str:
    raw = path.read_bytes()
    return (gzip.decompress(raw) if gzipped else raw).decode()


@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize("fmt", ["csv", "ndjson", "parquet"])
async def test_each_format_holds_every_value_as_exports_spell_it(
    pool: asyncpg.Pool, tmp_path: Path, fmt: str, gzipped: bool
) -> None:
    name = f"upload_{uuid.uuid4().hex[:8]}"
    await load_rows(pool, name, RECORDS)
    catalog = Catalog(pool)
    storage = await catalog.get(name)
    model = await catalog.model(storage.id)
    path = tmp_path / f"out.{fmt}"
    async with pool.acquire() as conn:
        assert await write_file(conn, step(fmt, gzipped, ";"), storage, model, path) == 3
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(text_of(path, gzipped)), delimiter=";"))
        assert sorted(rows[0]) == sorted(KEYS)
        cells = sorted([dict(zip(rows[0], row, strict=True)) for row in rows[1:]], key=orjson.dumps)
        expected = [
            ["1", "1.5", "true", "2024-02-29", "2024-02-29T10:58:14.250000Z", 'a "b",\nc', '{"k":[1]}'],
            [str(-(2**63)), "-0", "false", "1999-12-31", "1999-12-31T23:59:59Z", "é", '[1,"2"]'],
            ["", "", "", "", "", "", ""],
        ]
        assert cells == sorted([dict(zip(KEYS, row, strict=True)) for row in expected], key=orjson.dumps)
    elif fmt == "ndjson":
        lines = [orjson.loads(line) for line in text_of(path, gzipped).splitlines()]
        expected = [{k: v for k, v in r.items() if v is not None} for r in RECORDS]
        expected[0]["at"] = "2024-02-29T10:58:14.250000Z"
        assert sorted(lines, key=orjson.dumps) == sorted(expected, key=orjson.dumps)
    else:
        table = pq.read_table(path)
        assert sorted(table.column_names) == sorted(KEYS)
        assert table.schema.field("n").type == "int64" and str(table.schema.field("at").type) == "timestamp[us, tz=UTC]"
        assert sorted(table.column("n").to_pylist(), key=str) == sorted([1, -(2**63), None], key=str)
        assert sorted(table.column("j").to_pylist(), key=str) == sorted(['{"k":[1]}', '[1,"2"]', None], key=str)
        compression = pq.ParquetFile(path).metadata.row_group(0).column(0).compression
        assert compression == ("GZIP" if gzipped else "SNAPPY")


async def test_an_empty_storage_gives_a_valid_empty_file(pool: asyncpg.Pool, tmp_path: Path) -> None:
    name = f"upload_{uuid.uuid4().hex[:8]}"
    await load_rows(pool, name, RECORDS[:1])
    catalog = Catalog(pool)
    storage = await catalog.get(name)
    await pool.execute(f"DELETE FROM {storage.qualified_table}")
    model = await catalog.model(storage.id)
    for fmt in ("csv", "ndjson", "parquet"):
        path = tmp_path / f"empty.{fmt}"
        async with pool.acquire() as conn:
            assert await write_file(conn, step(fmt, False), storage, model, path) == 0
        if fmt == "parquet":
            assert pq.read_table(path).num_rows == 0
        elif fmt == "csv":
            assert [sorted(row) for row in csv.reader(io.StringIO(text_of(path, False)))] == [sorted(KEYS)]
        else:
            assert text_of(path, False) == ""
