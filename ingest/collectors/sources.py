"""What a collector reads: a Postgres table or query, files on SFTP/S3, or a paginated HTTP JSON API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urljoin

import aiohttp
import asyncpg
import orjson

from headrace.catalog import Catalog, Storage
from headrace.events import DELETE_OP, OP_FIELD
from headrace.postgres import quote_ident
from ingest.collectors.definitions import (
    CollectorDefinition,
    HttpSource,
    PostgresSource,
    S3Source,
    SftpSource,
    decode_cursor,
    encode_cursor,
)
from ingest.collectors.files import RemoteFile, open_store, parse_file

# Rows a server-side cursor fetches per round trip.
PREFETCH = 5000
Records = AsyncIterator[list[dict[str, Any]]]


class SourceError(RuntimeError):
    """The source could not be read; the message says which and why (never with its credentials)."""


def is_soft_deleted(value: Any) -> bool:
    """A soft-delete column marks a row deleted when true, or when set at all (a deleted_at timestamp)."""
    return value is not None and value is not False and value != 0 and value != ""


class Extractor:
    """Plans a batch (its cursor range or files) and then reads exactly that batch, as often as needed."""

    def __init__(self, definition: CollectorDefinition) -> None:
        self.definition = definition
        self.observed_cursor: dict[str, Any] | None = None  # set by sources that learn the range while reading

    async def plan(self, cursor: dict[str, Any] | None) -> dict[str, Any] | None:
        """The next batch's cursor_from, cursor_to and files; None when there is nothing new."""
        raise NotImplementedError

    def extract(self, batch: dict[str, Any], catalog: Catalog, storage: Storage) -> Records:
        raise NotImplementedError

    def _deletion(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The delete event a changed record stands for in incremental-updates, else None."""
        definition = self.definition
        if definition.extract_mode != "incremental-updates":
            return None
        deleted = record.get(OP_FIELD) == DELETE_OP
        if definition.soft_delete_column is not None:
            deleted = deleted or is_soft_deleted(record.get(definition.soft_delete_column))
        if not deleted:
            return None
        return {OP_FIELD: DELETE_OP, **{k: record.get(k) for k in definition.primary_key}}


# -- Postgres -------------------------------------------------------------------------------------------------------


def _relation(source: PostgresSource) -> str:
    if source.table is not None:
        return ".".join(quote_ident(part) for part in source.table.split("."))
    return f"({source.query}) AS collected"


async def connect_source(dsn: str) -> asyncpg.Connection:
    try:
        conn = await asyncpg.connect(dsn, timeout=15)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        # asyncpg's messages name the host and user, never the password.
        raise SourceError(f"cannot connect to the source database: {exc}") from exc
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(
            kind, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
        )
    return conn


class PostgresExtractor(Extractor):
    def __init__(self, definition: CollectorDefinition) -> None:
        super().__init__(definition)
        assert isinstance(definition.source, PostgresSource)
        self.source: PostgresSource = definition.source

    async def plan(self, cursor: dict[str, Any] | None) -> dict[str, Any] | None:
        definition = self.definition
        if definition.extract_mode == "snapshot":
            return {"cursor_from": None, "cursor_to": None}
        column = quote_ident(definition.cursor_column or "")
        conn = await connect_source(self.source.dsn)
        try:
            start = decode_cursor(cursor)
            where = "" if start is None else f" WHERE {column} > $1"
            try:
                end = await conn.fetchval(
                    f"SELECT max({column}) FROM {_relation(self.source)}{where}", *([] if start is None else [start])
                )
            except asyncpg.PostgresError as exc:
                raise SourceError(f"cannot read the source: {exc}") from exc
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
            sql += " WHERE " + " AND ".join(conditions) + f" ORDER BY {column}"
        conn = await connect_source(self.source.dsn)
        try:
            async with conn.transaction(readonly=True, isolation="repeatable_read"):
                chunk: list[dict[str, Any]] = []
                try:
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
                    raise SourceError(f"cannot read the source: {exc}") from exc
        finally:
            await conn.close()

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
        stored = await catalog.pool.fetch(f"SELECT DISTINCT {columns} FROM {storage.qualified_table}")
        deletes = []
        for row in stored:
            values = [_plain(v) for v in row.values()]
            if orjson.dumps(values) not in present:
                deletes.append({OP_FIELD: DELETE_OP, **dict(zip(key, values, strict=True))})
        for start in range(0, len(deletes), PREFETCH):
            yield deletes[start : start + PREFETCH]


def _plain(value: Any) -> Any:
    """A key value as JSON would carry it, so source and storage keys compare alike."""
    return orjson.loads(orjson.dumps(value, default=str, option=orjson.OPT_UTC_Z))


# -- files on SFTP or S3 --------------------------------------------------------------------------------------------


def _file_cursor(file: RemoteFile) -> dict[str, Any]:
    return {"type": "file", "value": [file.modified, file.path]}


class FileExtractor(Extractor):
    """Snapshot: every matching file, each run. Incremental: the files modified after the last one taken."""

    def __init__(self, definition: CollectorDefinition) -> None:
        super().__init__(definition)
        assert isinstance(definition.source, SftpSource | S3Source)
        self.source: SftpSource | S3Source = definition.source

    async def plan(self, cursor: dict[str, Any] | None) -> dict[str, Any] | None:
        async with open_store(self.source) as store:
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
        async with open_store(self.source) as store:
            for file in files:
                async for records in parse_file(store, file.path, self.source.format, self.source.delimiter):
                    yield [self._deletion(r) or r for r in records]


# -- HTTP JSON API --------------------------------------------------------------------------------------------------


def dig(data: Any, path: str | None) -> Any:
    """The value at a dotted path (`data.items`, `links.next`); None when any step is missing."""
    if not path:
        return data
    for step in path.split("."):
        if isinstance(data, dict):
            data = data.get(step)
        elif isinstance(data, list) and step.isdigit() and int(step) < len(data):
            data = data[int(step)]
        else:
            return None
    return data


class HttpExtractor(Extractor):
    """Reads every page; incremental modes keep the records past the cursor, and learn the new cursor as they go."""

    def __init__(self, definition: CollectorDefinition) -> None:
        super().__init__(definition)
        assert isinstance(definition.source, HttpSource)
        self.source: HttpSource = definition.source

    async def plan(self, cursor: dict[str, Any] | None) -> dict[str, Any] | None:
        return {"cursor_from": cursor, "cursor_to": None}

    async def pages(self) -> AsyncIterator[list[dict[str, Any]]]:
        source = self.source
        timeout = aiohttp.ClientTimeout(total=None, sock_read=60, sock_connect=15)
        async with aiohttp.ClientSession(headers=source.headers, timeout=timeout) as session:
            url: str | None = source.url
            number = source.first_page if source.pagination == "page" else 0
            for _ in range(source.max_pages):
                params: dict[str, str] = {}
                if source.pagination in ("page", "offset"):
                    params[source.page_param] = str(number)
                    if source.size_param:
                        params[source.size_param] = str(source.page_size)
                assert url is not None
                try:
                    async with session.get(url, params=params) as response:
                        if response.status >= 400:
                            raise SourceError(f"GET {url} answered {response.status}: {(await response.text())[:200]}")
                        body = orjson.loads(await response.read())
                except (aiohttp.ClientError, orjson.JSONDecodeError, TimeoutError) as exc:
                    raise SourceError(f"GET {url}: {exc!r}") from exc
                records = dig(body, source.records_path)
                if records is None:
                    records = []
                if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
                    raise SourceError(f"GET {url}: {source.records_path or 'the body'} is not a list of objects")
                if records:
                    yield records
                if source.pagination == "none":
                    return
                if source.pagination == "next":
                    following = dig(body, source.next_path)
                    if not following:
                        return
                    url = urljoin(url, str(following))
                    continue
                if not records or (source.size_param and len(records) < source.page_size):
                    return
                number += 1 if source.pagination == "page" else len(records)
            raise SourceError(f"{source.url}: more than {source.max_pages} pages")

    async def extract(self, batch: dict[str, Any], catalog: Catalog, storage: Storage) -> Records:
        definition = self.definition
        column = definition.cursor_column
        start = decode_cursor(batch["cursor_from"])
        end = decode_cursor(batch["cursor_to"])
        highest: Any = None
        async for records in self.pages():
            if definition.extract_mode != "snapshot" and column:
                kept = []
                for record in records:
                    value = record.get(column)
                    if value is None or (start is not None and value <= start) or (end is not None and value > end):
                        continue
                    highest = value if highest is None or value > highest else highest
                    kept.append(record)
                records = kept
            if records:
                yield [self._deletion(r) or r for r in records]
        if highest is not None:
            self.observed_cursor = encode_cursor(highest)


def extractor_for(definition: CollectorDefinition) -> Extractor:
    if isinstance(definition.source, PostgresSource):
        return PostgresExtractor(definition)
    if isinstance(definition.source, HttpSource):
        return HttpExtractor(definition)
    return FileExtractor(definition)
