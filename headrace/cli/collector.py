"""`headrace collector …`: create, list, show, run and delete collectors; list and replay their batches; each a call to
the ingest service's API (`/api/collectors…`), runs and replays followed as jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from headrace.cli import cli
from headrace.cli.common import call, json_option, print_json, read_definition, run_job, segment, when


@cli.group()
def collector() -> None:
    """Collectors: pull batches from Postgres, SFTP/S3 files or HTTP APIs into storages."""


def _path(name: str, rest: str = "") -> str:
    return f"/api/collectors/{segment(name)}{rest}"


def _source(source_url: str, table: str | None, query: str | None, options: dict[str, Any]) -> dict[str, Any]:
    """The definition's source from the options; ingest validates it (a file source's URL gives its fields)."""
    if source_url.startswith(("postgres://", "postgresql://")):
        return {"kind": "postgres", "dsn": source_url, "table": table, "query": query}
    if source_url.startswith(("http://", "https://")):
        http = {k: options[k] for k in ("records_path", "pagination", "page_param", "size_param", "page_size")}
        headers = dict(h.split(":", 1) for h in options["headers"])
        return {"kind": "http", "url": source_url, "next_path": options["next_path"], **http} | {
            "headers": {k.strip(): v.strip() for k, v in headers.items()}
        }
    scheme = urlsplit(source_url).scheme
    key_file: Path | None = options["key_file"]
    fields = {"format": options["file_format"], "delimiter": options["delimiter"]}
    if scheme == "s3":
        fields |= {k: options[k] for k in ("endpoint_url", "region", "access_key_id", "secret_access_key")}
    elif scheme in ("ftp", "ftps"):
        ca_cert: Path | None = options["ca_cert"]
        fields |= {"password": options["password"], "ca_cert": ca_cert.read_text() if ca_cert else None}
    else:
        fields |= {"private_key": key_file.read_text() if key_file else None, "password": options["password"]}
        fields |= {"host_key": options["host_key"]}
    return {"kind": scheme, "url": source_url} | {k: v for k, v in fields.items() if v is not None}


@collector.command("create")
@click.argument("name")
@click.option("--storage", "-s", "storage_name", required=True, help="Target storage (created when missing)")
@click.option(
    "--from",
    "source_url",
    required=True,
    help="postgresql://user:pass@host/db, sftp://user@host:port/dir/*.csv (or ftp://, ftps://), s3://bucket/prefix/*.csv"
    " or https://api/…",
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
@click.option("--password", help="SFTP or FTP password")
@click.option(
    "--ca-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="FTPS: PEM certificate to trust"
)
@click.option("--host-key", help="SFTP: the server's public key (unset: trusted on first use, then enforced)")
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
def collector_create(ctx: click.Context, /, name: str, storage_name: str, source_url: str, **options: Any) -> None:
    """Create a collector (its target storage too, when missing)."""
    definition = {
        "name": name,
        "storage": storage_name,
        "source": _source(source_url, options["table"], options["query"], options),
        "primary_key": list(options["primary_key"]),
        **{k: options[k] for k in ("extract_mode", "cursor_column", "soft_delete_column", "delete_missing")},
        **{k: options[k] for k in ("every_seconds", "cron")},
    }
    result = call(ctx, "POST", "/api/collectors", json=definition)
    if options["as_json"]:
        print_json(result)
    else:
        click.echo(f"collector {result['name']} created: {result['extract_mode']} into {result['storage']}")


@collector.command("list")
@json_option
@click.pass_context
def collector_list(ctx: click.Context, as_json: bool) -> None:
    """List collectors."""
    result = call(ctx, "GET", "/api/collectors")
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
    """Show a collector (credentials masked), its cursor and last run."""
    result = call(ctx, "GET", _path(name))
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
    result = call(ctx, "DELETE", _path(name))
    print_json(result) if as_json else click.echo(f"collector {name} deleted")


@collector.command("run")
@click.argument("name")
@json_option
@click.pass_context
def collector_run(ctx: click.Context, name: str, as_json: bool) -> None:
    """Run a collector now, in the ingest service: a pending batch first, then the next one."""
    result = run_job(ctx, _path(name, "/run"), f"collector {name}")
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
    result = call(ctx, "GET", _path(name, "/batches"))
    if as_json:
        print_json(result)
        return
    for batch in result:
        replay = f" (replay of {batch['replay_of']})" if batch["replay_of"] else ""
        click.echo(
            f"{batch['batch_id']}  {batch['rows'] if batch['rows'] is not None else '-':>9} rows"
            f"  {when(batch['created_at'])}  {batch['status']}{replay}"
        )


@collector.command("replay")
@click.argument("name")
@click.argument("batch_id")
@json_option
@click.pass_context
def collector_replay(ctx: click.Context, name: str, batch_id: str, as_json: bool) -> None:
    """Load a sent batch again (read back from its ingest topic, sent as a new batch)."""
    result = run_job(ctx, _path(name, f"/batches/{segment(batch_id)}/replay"), f"replaying {batch_id}")
    if as_json:
        print_json(result)
    else:
        click.echo(f"batch {batch_id} replayed as {result['batch_id']}: {result['rows']} rows")


@collector.command("update")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def collector_update(ctx: click.Context, name: str, file: Path, as_json: bool) -> None:
    """Change a collector: FILE holds its whole definition, as `collector show NAME --json` prints it, edited
    (credentials left as *** keep their stored values)."""
    definition = read_definition(file)
    if isinstance(definition, dict):
        definition = {k: v for k, v in definition.items() if k not in ("id", "created_at", "runs")}
    result = call(ctx, "PUT", f"/api/collectors/{segment(name)}", service="ingest", json=definition)
    if as_json:
        print_json(result)
    else:
        click.echo(f"collector {name} changed")
