"""`headrace collector …`: create, list, show, run and delete collectors; list and replay their batches."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import ValidationError

from headrace.catalog import Catalog
from headrace.cli import cli
from headrace.cli.common import print_json, run_with_catalog
from headrace.kafka import producer
from headrace.settings import Settings
from ingest.collectors.api import validation_message
from ingest.collectors.batches import BatchFailed
from ingest.collectors.definitions import CollectorDefinition, CollectorExists, CollectorNotFound, CollectorStore
from ingest.collectors.files import FileSourceError, source_from_url
from ingest.collectors.runner import CollectorBusy, CollectorRunner, create_collector
from ingest.collectors.sources import SourceError

T = TypeVar("T")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON")
_COLLECTOR_ERRORS = (CollectorNotFound, CollectorExists, CollectorBusy, SourceError, FileSourceError, BatchFailed)


def _run(ctx: click.Context, work: Callable[[Settings, Catalog], Awaitable[T]]) -> T:
    try:
        return run_with_catalog(ctx, work)
    except _COLLECTOR_ERRORS as exc:
        raise click.ClickException(str(exc)) from exc


def _with_runner(ctx: click.Context, work: Callable[[CollectorRunner], Awaitable[T]]) -> T:
    """Work that produces to Kafka, with a producer of this process's own."""

    async def run(settings: Settings, catalog: Catalog) -> T:
        kafka = producer(settings)
        await kafka.start()
        try:
            return await work(CollectorRunner(settings, catalog, kafka))
        finally:
            await kafka.stop()

    return _run(ctx, run)


@cli.group()
def collector() -> None:
    """Collectors: pull batches from Postgres, SFTP/S3 files or HTTP APIs into storages."""


def _source(
    source_url: str, table: str | None, query: str | None, key_file: Path | None, password: str | None, **s3: Any
) -> dict[str, Any]:
    if source_url.startswith(("postgres://", "postgresql://")):
        return {"kind": "postgres", "dsn": source_url, "table": table, "query": query}
    if source_url.startswith(("http://", "https://")):
        return {"kind": "http", "url": source_url}
    private_key = key_file.read_text() if key_file is not None else None
    return source_from_url(source_url, private_key=private_key, password=password, **s3).model_dump()


@collector.command("create")
@click.argument("name")
@click.option("--storage", "-s", "storage_name", required=True, help="Target storage (created when missing)")
@click.option(
    "--from",
    "source_url",
    required=True,
    help="postgresql://user:pass@host/db, sftp://user@host:port/dir/*.csv, s3://bucket/prefix/*.csv or https://api/…",
)
@click.option("--table", help="Postgres: the table to collect (schema.name)")
@click.option("--query", help="Postgres: a SELECT to collect instead of a table")
@click.option(
    "--mode",
    "extract_mode",
    type=click.Choice(["snapshot", "incremental-appends", "incremental-updates"]),
    default="snapshot",
    show_default=True,
)
@click.option("--cursor-column", help="Incremental modes: the column rows are taken past (an id or updated-at)")
@click.option("--primary-key", "-k", multiple=True, help="Primary-key field (repeat for a composite key)")
@click.option("--soft-delete-column", help="incremental-updates: rows with this column true (or set) are deleted")
@click.option("--delete-missing", is_flag=True, help="incremental-updates: delete keys the source no longer has")
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="SFTP private key")
@click.option("--password", help="SFTP password")
@click.option("--host-key", help="SFTP: the server's public key (unset: any host key is accepted)")
@click.option("--format", "file_format", type=click.Choice(["csv", "ndjson"]), default="csv")
@click.option("--delimiter", default=",", help="CSV separator")
@click.option("--endpoint", "endpoint_url", help="S3: the API endpoint (MinIO, moto, …)")
@click.option("--region", default="us-east-1")
@click.option("--access-key-id")
@click.option("--secret-access-key")
@click.option("--records-path", help="HTTP: dotted path to the records in each page (e.g. data.items)")
@click.option("--pagination", type=click.Choice(["none", "page", "offset", "next"]), default="none")
@click.option("--page-param", default="page", help="HTTP: the page number's (or offset's) query parameter")
@click.option("--size-param", help="HTTP: the page size's query parameter")
@click.option("--page-size", type=int, default=100)
@click.option("--next-path", help="HTTP next-link pagination: dotted path to the next page's URL")
@click.option("--header", "headers", multiple=True, help="HTTP header, NAME:VALUE (repeatable)")
@click.option("--every", "every_seconds", type=float, help="Run every this many seconds")
@click.option("--cron", help="Run on this cron expression (UTC), e.g. '*/15 * * * *'")
@json_option
@click.pass_context
def collector_create(ctx: click.Context, name: str, storage_name: str, source_url: str, **options: Any) -> None:
    """Create a collector (its target storage too, when missing)."""
    as_json = options.pop("as_json")
    s3 = {k: options.pop(k) for k in ("endpoint_url", "region", "access_key_id", "secret_access_key")}
    files = {"host_key": options.pop("host_key"), "file_format": options.pop("file_format")}
    files["delimiter"] = options.pop("delimiter")
    source = _source(
        source_url,
        options.pop("table"),
        options.pop("query"),
        options.pop("key_file"),
        options.pop("password"),
        **(s3 | files) if source_url.startswith(("sftp://", "s3://")) else {},
    )
    http = {k: options.pop(k) for k in ("records_path", "pagination", "page_param", "size_param", "page_size")}
    http["next_path"] = options.pop("next_path")
    headers = dict(h.split(":", 1) for h in options.pop("headers"))
    if source["kind"] == "http":
        source |= http | {"headers": {k.strip(): v.strip() for k, v in headers.items()}}
    try:
        definition = CollectorDefinition.model_validate(
            {
                "name": name,
                "storage": storage_name,
                "source": source,
                "primary_key": list(options.pop("primary_key")),
                **options,
            }
        )
    except ValidationError as exc:
        raise click.ClickException(validation_message(exc)) from exc

    async def work(settings: Settings, catalog: Catalog) -> dict[str, Any]:
        return (await create_collector(settings, catalog, definition)).to_json()

    result = _run(ctx, work)
    if as_json:
        print_json(result)
    else:
        click.echo(f"collector {result['name']} created: {result['extract_mode']} into {result['storage']}")


@collector.command("list")
@json_option
@click.pass_context
def collector_list(ctx: click.Context, as_json: bool) -> None:
    """List collectors."""

    async def work(settings: Settings, catalog: Catalog) -> list[dict[str, Any]]:
        return [c.to_json() for c in await CollectorStore(catalog.pool).list()]

    result = _run(ctx, work)
    if as_json:
        print_json(result)
        return
    for item in result:
        schedule = f"every {item['every_seconds']}s" if item["every_seconds"] else item["cron"] or "on demand"
        click.echo(
            f"{item['name']:<24} {item['source']['kind']:<8} {item['extract_mode']:<20} -> {item['storage']:<20}"
            f" {schedule}"
        )


@collector.command("show")
@click.argument("name")
@json_option
@click.pass_context
def collector_show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show a collector (passwords and keys masked), its cursor and last run."""

    async def work(settings: Settings, catalog: Catalog) -> dict[str, Any]:
        return (await CollectorStore(catalog.pool).get(name)).to_json()

    result = _run(ctx, work)
    if as_json:
        print_json(result)
        return
    for key, value in result.items():
        click.echo(f"{key:<20} {value}")


@collector.command("delete")
@click.argument("name")
@json_option
@click.pass_context
def collector_delete(ctx: click.Context, name: str, as_json: bool) -> None:
    """Delete a collector and its batch records (the storage and its rows stay)."""

    async def work(settings: Settings, catalog: Catalog) -> dict[str, Any]:
        await CollectorStore(catalog.pool).delete(name)
        return {"deleted": name}

    result = _run(ctx, work)
    print_json(result) if as_json else click.echo(f"collector {name} deleted")


@collector.command("run")
@click.argument("name")
@json_option
@click.pass_context
def collector_run(ctx: click.Context, name: str, as_json: bool) -> None:
    """Run a collector now: a pending batch first, then the next one."""

    async def work(runner: CollectorRunner) -> dict[str, Any]:
        return await runner.run(name)

    result = _with_runner(ctx, work)
    if as_json:
        print_json(result)
        return
    if not result["batches"]:
        click.echo(f"collector {name}: nothing new")
    for batch in result["batches"]:
        click.echo(f"collector {name}: batch {batch['batch_id']} sent, {batch['rows']} rows")


@collector.command("batches")
@click.argument("name")
@json_option
@click.pass_context
def collector_batches(ctx: click.Context, name: str, as_json: bool) -> None:
    """List a collector's batches, newest first: id, rows, time, status."""

    async def work(settings: Settings, catalog: Catalog) -> list[dict[str, Any]]:
        store = CollectorStore(catalog.pool)
        return await store.batches(await store.get(name))

    result = _run(ctx, work)
    if as_json:
        print_json(result)
        return
    for batch in result:
        replay = f" (replay of {batch['replay_of']})" if batch["replay_of"] else ""
        click.echo(
            f"{batch['batch_id']}  {batch['rows'] if batch['rows'] is not None else '-':>9} rows"
            f"  {batch['created_at']:%Y-%m-%d %H:%M:%S}  {batch['status']}{replay}"
        )


@collector.command("replay")
@click.argument("name")
@click.argument("batch_id")
@json_option
@click.pass_context
def collector_replay(ctx: click.Context, name: str, batch_id: str, as_json: bool) -> None:
    """Load a sent batch again (read back from its ingest topic, sent as a new batch)."""

    async def work(runner: CollectorRunner) -> dict[str, Any]:
        return await runner.replay(name, batch_id)

    result = _with_runner(ctx, work)
    if as_json:
        print_json(result)
    else:
        click.echo(f"batch {batch_id} replayed as {result['batch_id']}: {result['rows']} rows")
