"""`headrace export …`: create, list, show and delete exports; run and regenerate them (jobs in the exporter,
followed with a progress bar); each a call to the exporter service's API (`/api/exports…`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson

from headrace.cli import cli
from headrace.cli.common import call, print_json, read_definition, run_job, segment


@cli.group()
def export() -> None:
    """Scheduled exports of inserted rows to S3 or SFTP, with delivery reports."""


def _path(name: str, rest: str = "") -> str:
    return f"/api/exports/{segment(name)}{rest}"


@export.command("create")
@click.argument("name")
@click.option("--source", "-s", "sources", multiple=True, help="A storage to export (repeat for several)")
@click.option("--all-sources", is_flag=True, help="Export every storage, present and future")
@click.option("--include", multiple=True, help="Export only these properties (repeat)")
@click.option("--exclude", multiple=True, help="Export every property but these (repeat)")
@click.option("--privacy-filter/--no-privacy-filter", default=False, help="Drop rows whose consent property is false")
@click.option("--consent-column", default="visitor_privacy_consent", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["csv", "ndjson", "parquet"]), default="csv", show_default=True)
@click.option("--separator", default=",", show_default=True, help="CSV separator")
@click.option("--header/--no-header", default=True, help="CSV header row of property keys")
@click.option(
    "--parquet-compression",
    type=click.Choice(["gzip", "zstd", "snappy"]),
    default="gzip",
    show_default=True,
    help="Parquet's own compression (inside the file)",
)
@click.option("--frequency", type=click.Choice(["15", "30", "60"]), default="60", show_default=True, help="Minutes")
@click.option("--schedule/--no-schedule", default=True, help="Run at every frequency boundary, or only when asked")
@click.option("--partition", type=click.Choice(["date", "hour", "half-hour", "quarter-hour"]), default="hour")
@click.option("--event-time-column", default="hit_time_utc", show_default=True)
@click.option("--max-rows-per-file", type=int, default=1_000_000, show_default=True)
@click.option("--destination", type=click.Choice(["s3", "sftp", "ftp", "ftps"]), required=True)
@click.option("--folder", default="", help="Folder (S3 key prefix, or SFTP/FTP directory)")
@click.option("--bucket", help="S3 bucket")
@click.option("--endpoint-url", help="S3 endpoint (S3-compatible stores)")
@click.option("--region", help="S3 region")
@click.option("--access-key-id", help="S3 access key id")
@click.option("--secret-access-key", help="S3 secret access key (stored, never shown)")
@click.option("--host", help="SFTP or FTP host")
@click.option("--port", type=int, help="SFTP or FTP port  [default: 22, FTP: 21]")
@click.option("--user", help="SFTP or FTP user")
@click.option("--password", help="SFTP or FTP password (stored, never shown)")
@click.option(
    "--ca-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="FTPS: PEM certificate to trust"
)
@click.option("--private-key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="SFTP key")
@click.option("--host-key", help="The SFTP server's public key; unset: trusted on first use, then enforced")
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def export_create(ctx: click.Context, /, name: str, **options: Any) -> None:
    """Create an export."""
    result = call(ctx, "POST", "/api/exports", service="exporter", json=_definition(name, options))
    _print(result, options["as_json"], f"export {name} created")


def _definition(name: str, o: dict[str, Any]) -> dict[str, Any]:
    if o["all_sources"] == bool(o["sources"]):
        raise click.UsageError("give --source (once or more) or --all-sources")
    if o["include"] and o["exclude"]:
        raise click.UsageError("--include and --exclude do not go together")
    if o["include"]:
        properties: dict[str, Any] = {"mode": "include", "names": list(o["include"])}
    elif o["exclude"]:
        properties = {"mode": "exclude", "names": list(o["exclude"])}
    else:
        properties = {"mode": "all"}
    if o["destination"] == "s3":
        destination = {
            "kind": "s3",
            "bucket": o["bucket"] or "",
            "folder": o["folder"],
            "endpoint_url": o["endpoint_url"],
            "region": o["region"],
            "access_key_id": o["access_key_id"],
            "secret_access_key": o["secret_access_key"],
        }
    elif o["destination"] in ("ftp", "ftps"):
        destination = {
            "kind": o["destination"],
            "host": o["host"] or "",
            "port": o["port"] or 21,
            "user": o["user"] or "",
            "password": o["password"],
            "ca_cert": o["ca_cert"].read_text() if o["ca_cert"] else None,
            "folder": o["folder"],
        }
    else:
        destination = {
            "kind": "sftp",
            "host": o["host"] or "",
            "port": o["port"] or 22,
            "user": o["user"] or "",
            "password": o["password"],
            "private_key": o["private_key_file"].read_text() if o["private_key_file"] else None,
            "host_key": o["host_key"],
            "folder": o["folder"],
        }
    return {
        "name": name,
        "sources": "all" if o["all_sources"] else list(o["sources"]),
        "properties": properties,
        "privacy_filter": o["privacy_filter"],
        "consent_column": o["consent_column"],
        "format": o["fmt"],
        "csv_separator": o["separator"],
        "csv_header": o["header"],
        "parquet_compression": o["parquet_compression"],
        "frequency_minutes": int(o["frequency"]),
        "scheduled": o["schedule"],
        "partition_level": o["partition"],
        "event_time_column": o["event_time_column"],
        "max_rows_per_file": o["max_rows_per_file"],
        "destination": destination,
    }


def _print(result: Any, as_json: bool, line: str) -> None:
    if as_json:
        print_json(result)
    else:
        click.echo(line)


@export.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def export_list(ctx: click.Context, as_json: bool) -> None:
    """List exports."""
    result = call(ctx, "GET", "/api/exports", service="exporter")
    if as_json:
        print_json(result)
        return
    for item in result:
        sources = "all" if item["sources"] == "all" else ",".join(item["sources"])
        click.echo(
            f"{item['name']:<24} {item['format']:<8} every {item['frequency_minutes']:>2} min"
            f"  {item['destination']['kind']:<5} {sources}"
        )


@export.command("show")
@click.argument("name")
@click.option("--runs", "show_runs", type=click.IntRange(0, 1000), default=5, show_default=True, help="Runs to show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def export_show(ctx: click.Context, name: str, show_runs: int, as_json: bool) -> None:
    """Show an export (credentials hidden) and its recent runs."""
    result = call(ctx, "GET", _path(name), service="exporter")
    result["runs"] = call(ctx, "GET", _path(name, "/runs"), service="exporter", params={"limit": show_runs})
    if as_json:
        print_json(result)
        return
    click.echo(orjson.dumps({k: v for k, v in result.items() if k != "runs"}, option=orjson.OPT_INDENT_2).decode())
    for run in result["runs"]:
        click.echo(
            f"  {run['started_at']}  {run['kind']:<10} {run['status']:<9} {run['rows']:>9} rows {run['files']} files"
        )


@export.command("delete")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def export_delete(ctx: click.Context, name: str, as_json: bool) -> None:
    """Delete an export, its horizon and its run history (delivered files stay where they are)."""
    _print(call(ctx, "DELETE", _path(name), service="exporter"), as_json, f"export {name} deleted")


def _summary(result: dict[str, Any]) -> str:
    if result["status"] == "empty":
        return f"export {result['export']}: nothing new since the last run"
    return (
        f"export {result['export']}: {result['status']}, {result['rows']} rows in {len(result['files'])} files,"
        f" {result['dropped_privacy']} dropped by the privacy filter; report {result['report']}"
    )


@export.command("run")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def export_run(ctx: click.Context, name: str, as_json: bool) -> None:
    """Run an export now, in the exporter service: every row written since its last run, then its delivery report."""
    result = run_job(ctx, _path(name, "/runs"), f"export {name}", service="exporter")
    _print(result, as_json, _summary(result))


@export.command("regenerate")
@click.argument("name")
@click.option("--from", "start", required=True, help="Start of the period (ISO date or date-time, UTC), included")
@click.option("--to", "end", required=True, help="End of the period; a date includes that whole day")
@click.option("--folder", required=True, help="Folder the regenerated files and report go to")
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def export_regenerate(ctx: click.Context, name: str, start: str, end: str, folder: str, as_json: bool) -> None:
    """Re-export the period's rows (by event time) from the storages into FOLDER, with its own report."""
    body = {"from": start, "to": end, "folder": folder}
    result = run_job(ctx, _path(name, "/regenerate"), f"regenerating {name}", service="exporter", json=body)
    _print(result, as_json, _summary(result))


@export.command("update")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def export_update(ctx: click.Context, name: str, file: Path, as_json: bool) -> None:
    """Change a export: FILE holds its whole definition, as `export show NAME --json` prints it, edited (credentials
    left as *** keep their stored values)."""
    definition = read_definition(file)
    if isinstance(definition, dict):
        definition = {k: v for k, v in definition.items() if k not in ("id", "created_at", "runs")}
    result = call(ctx, "PUT", f"/api/exports/{segment(name)}", service="exporter", json=definition)
    if as_json:
        print_json(result)
    else:
        click.echo(f"export {name} changed")
