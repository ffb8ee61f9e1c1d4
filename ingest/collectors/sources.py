"""What a collector reads: a Postgres table or query, or files on SFTP, FTP or S3 (HTTP JSON APIs: http_source)."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from headrace.catalog import Catalog, Storage
from headrace.events import DELETE_OP, OP_FIELD
from headrace.filestores import RemoteFile, open_store
from headrace.outbound import OutboundPolicy, OutboundRefused, dsn_hosts
from headrace.postgres import quote_ident
from headrace.secrets import redact
from headrace.settings import Settings
from ingest.collectors.definitions import CollectorDefinition, decode_cursor, encode_cursor
from ingest.collectors.extractor import Extractor, Records, SourceError
from ingest.collectors.files import parse_file
from ingest.collectors.http_source import HttpExtractor
from ingest.collectors.source_models import FILE_SOURCES, FtpSource, HttpSource, PostgresSource, S3Source, SftpSource

# Rows a server-side cursor fetches per round trip.
PREFETCH = 5000
# A table's primary key columns, in key order.
_PRIMARY_KEY = """
SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
WHERE i.indrelid = to_regclass($1) AND i.indisprimary ORDER BY array_position(i.indkey::int2[], a.attnum)
"""


# -- Postgres -------------------------------------------------------------------------------------------------------


def _relation(source: PostgresSource) -> str:
    if source.table is not None:
        return ".".join(quote_ident(part) for part in source.table.split("."))
    return f"({source.query}) AS collected"


async def connect_source(dsn: str, settings: Settings) -> asyncpg.Connection:
    """A connection to a source database whose every host passed the outbound policy."""
    policy = OutboundPolicy.from_settings(settings)
    try:
        for host, port in dsn_hosts(dsn):
            await policy.resolve(host, port)
        conn = await asyncpg.connect(dsn, timeout=15)
    except (OutboundRefused, ValueError) as exc:  # ValueError: a DSN that does not parse
        raise SourceError(f"cannot connect to the source database: {redact(str(exc))}") from None
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        # asyncpg's messages name the host and user; redact() masks any URL or password they might carry.
        raise SourceError(f"cannot connect to the source database: {redact(str(exc))}") from None
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(
            kind, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
        )
    return conn


class PostgresExtractor(Extractor):
    def __init__(self, definition: CollectorDefinition, settings: Settings, pool: asyncpg.Pool) -> None:
        super().__init__(definition, settings, pool)
        assert isinstance(definition.source, PostgresSource)
        self.source: PostgresSource = definition.source

    async def plan(self, cursor: dict[str, Any] | None) -> dict[str, Any] | None:
        definition = self.definition
        if definition.extract_mode == "snapshot":
            return {"cursor_from": None, "cursor_to": None}
        column = quote_ident(definition.cursor_column or "")
        conn = await connect_source(self.source.dsn, self.settings)
        try:
            start = decode_cursor(cursor)
            where = "" if start is None else f" WHERE {column} > $1"
            try:
                end = await conn.fetchval(
                    f"SELECT max({column}) FROM {_relation(self.source)}{where}", *([] if start is None else [start])
                )
            except asyncpg.PostgresError as exc:
                raise SourceError(f"cannot read the source: {redact(str(exc))}") from exc
        finally:
            await conn.close()
        if end is None and not definition.delete_missing:
            return None
        return {"cursor_from": cursor, "cursor_to": encode_cursor(end) if end is not None else cursor}

    async def extract(self, batch: dict[str, Any], catalog: Catalog, storage: Storage) -> Records:
        definition = self.definition
        relation = _relation(self.source)
        args: list[Any] = []
        sql = f"SELECT * FROM {relation}"
        order: list[str] = []
        if definition.extract_mode != "snapshot":
            column = quote_ident(definition.cursor_column or "")
            start, end = decode_cursor(batch["cursor_from"]), decode_cursor(batch["cursor_to"])
            conditions = []
            if start is not None:
                args.append(start)
                conditions.append(f"{column} > ${len(args)}")
            if end is not None:
                args.append(end)
                conditions.append(f"{column} <= ${len(args)}")
            if end is None:
                conditions.append("false")  # only deletes by key comparison in this batch
            sql += " WHERE " + " AND ".join(conditions)
            order.append(column)
        conn = await connect_source(self.source.dsn, self.settings)
        try:
            async with conn.transaction(readonly=True, isolation="repeatable_read"):
                chunk: list[dict[str, Any]] = []
                try:
                    order += await self._stable_order(conn, relation)
                    if order:
                        sql += " ORDER BY " + ", ".join(order)
                    async for row in conn.cursor(sql, *args, prefetch=PREFETCH):
                        record = dict(row.items())
                        chunk.append(self._deletion(record) or record)
                        if len(chunk) >= PREFETCH:
                            yield chunk
                            chunk = []
                    if chunk:
                        yield chunk
                    if definition.delete_missing:
                        async for deletes in self._missing_keys(conn, relation, catalog, storage):
                            yield deletes
                except asyncpg.PostgresError as exc:
                    raise SourceError(f"cannot read the source: {redact(str(exc))}") from exc
        finally:
            await conn.close()

    async def _stable_order(self, conn: asyncpg.Connection, relation: str) -> list[str]:
        """ORDER BY terms under which every read of the same rows yields them in the same order, since event ids
        are positions in the batch (`<batch id>:<index>`): the table's primary key, else every column, a column
        whose type has no ordering (json, xml, point…) by its text."""
        if self.source.table is not None:
            key = await conn.fetch(_PRIMARY_KEY, relation)
            if key:
                return [quote_ident(row["attname"]) for row in key]
        names = [attribute.name for attribute in (await conn.prepare(f"SELECT * FROM {relation}")).get_attributes()]
        every = [str(position) for position in range(1, len(names) + 1)]  # by position: a query may repeat a name
        if await _orders_by(conn, relation, every):
            return every
        terms = []
        for position, name in enumerate(names, start=1):
            if await _orders_by(conn, relation, [str(position)]):
                terms.append(str(position))
            elif names.count(name) == 1:
                terms.append(f"{quote_ident(name)}::text")
        return terms

    async def _missing_keys(
        self, conn: asyncpg.Connection, relation: str, catalog: Catalog, storage: Storage
    ) -> Records:
        """Deletes for the storage's keys the source no longer has (keys only are held, not rows)."""
        key = self.definition.primary_key
        model = await catalog.model(storage.id)
        if any(k not in model.by_key for k in key):
            return
        source_sql = f"SELECT {', '.join(quote_ident(k) for k in key)} FROM {relation}"
        source_rows = await conn.fetch(source_sql)
        present = {orjson.dumps([_plain(r[k]) for k in key]) for r in source_rows}
        del source_rows
        columns = ", ".join(quote_ident(model.by_key[k].name) for k in key)
        stored = await catalog.pool.fetch(
            f"SELECT DISTINCT {columns} FROM {storage.qualified_table} ORDER BY {columns}"  # same deletes, same ids
        )
        deletes = []
        for row in stored:
            values = [_plain(v) for v in row.values()]
            if orjson.dumps(values) not in present:
                deletes.append({OP_FIELD: DELETE_OP, **dict(zip(key, values, strict=True))})
        for start in range(0, len(deletes), PREFETCH):
            yield deletes[start : start + PREFETCH]


async def _orders_by(conn: asyncpg.Connection, relation: str, terms: list[str]) -> bool:
    """Whether Postgres can order the relation by these terms (it says so when planning, before reading a row)."""
    try:
        async with conn.transaction():  # a savepoint: the refusal must not end the snapshot's transaction
            await conn.prepare(f"SELECT * FROM {relation} ORDER BY {', '.join(terms)}")
    except asyncpg.UndefinedFunctionError:
        return False
    return True


def _plain(value: Any) -> Any:
    """A key value as JSON would carry it, so source and storage keys compare alike."""
    return orjson.loads(orjson.dumps(value, default=str, option=orjson.OPT_UTC_Z))


# -- files on SFTP, FTP(S) or S3 ---------------------------------------------------------------------------------------


def _file_cursor(file: RemoteFile) -> dict[str, Any]:
    return {"type": "file", "value": [file.modified, file.path]}


class FileExtractor(Extractor):
    """Snapshot: every matching file, each run. Incremental: the files modified after the last one taken."""

    def __init__(self, definition: CollectorDefinition, settings: Settings, pool: asyncpg.Pool) -> None:
        super().__init__(definition, settings, pool)
        assert isinstance(definition.source, FILE_SOURCES)
        self.source: SftpSource | FtpSource | S3Source = definition.source

    async def plan(self, cursor: dict[str, Any] | None) -> dict[str, Any] | None:
        async with open_store(self.source, self.settings, self.pool) as store:
            files = sorted(await store.list(self.source.pattern), key=lambda f: (f.modified, f.path))
        if self.definition.extract_mode != "snapshot" and cursor is not None:
            after = tuple(cursor["value"])
            files = [f for f in files if (f.modified, f.path) > after]
        if not files:
            # Not even a snapshot: an empty listing is more likely a moved folder than a source emptied on purpose.
            return None
        return {
            "cursor_from": cursor,
            "cursor_to": _file_cursor(files[-1]),
            "files": [f.to_json() for f in files],
        }

    async def extract(self, batch: dict[str, Any], catalog: Catalog, storage: Storage) -> Records:
        files = [RemoteFile.from_json(f) for f in batch.get("files") or []]
        async with open_store(self.source, self.settings, self.pool) as store:
            for file in files:
                async for records in parse_file(store, file.path, self.source.format, self.source.delimiter):
                    yield [self._deletion(r) or r for r in records]


def extractor_for(definition: CollectorDefinition, settings: Settings, pool: asyncpg.Pool) -> Extractor:
    if isinstance(definition.source, PostgresSource):
        return PostgresExtractor(definition, settings, pool)
    if isinstance(definition.source, HttpSource):
        return HttpExtractor(definition, settings, pool)
    return FileExtractor(definition, settings, pool)
