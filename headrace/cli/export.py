"""`headrace export …`: create, list, show and delete exports (in Postgres); run and regenerate them (over HTTP).

`run` and `regenerate` go through the exporter service's API, so that they share its one-run-per-export lock
and its metrics; `--in-process` runs them in this process instead (for when the service is not running).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import click
import orjson
from pydantic import ValidationError

from headrace.catalog import Catalog
from headrace.cli import cli
from headrace.cli.common import print_json, run_with_catalog, settings_of
from headrace.settings import Settings

T = TypeVar("T")


@cli.group()
def export() -> None:
    """Scheduled exports of inserted rows to S3 or SFTP, with delivery reports."""


def _with_store(ctx: click.Context, work: Callable[[Settings, Catalog], Awaitable[T]]) -> T:
    """run_with_catalog, with a missing export reported like a missing storage."""
    from exporter.definitions import ExportNotFound

    try:
        return run_with_catalog(ctx, work)
    except ExportNotFound as exc:
        raise click.ClickException(str(exc)) from exc


def _store(catalog: Catalog) -> Any:
    from exporter.definitions import ExportStore

    return ExportStore(catalog.pool)


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
@click.option("--frequency", type=click.Choice(["15", "30", "60"]), default="60", show_default=True, help="Minutes")
@click.option("--schedule/--no-schedule", default=True, help="Run at every frequency boundary, or only when asked")
@click.option("--partition", type=click.Choice(["date", "hour", "half-hour", "quarter-hour"]), default="hour")
@click.option("--event-time-column", default="hit_time_utc", show_default=True)
@click.option("--max-rows-per-file", type=int, default=1_000_000, show_default=True)
@click.option("--destination", type=click.Choice(["s3", "sftp"]), required=True)
@click.option("--folder", default="", help="Folder (S3 key prefix, or SFTP directory)")
@click.option("--bucket", help="S3 bucket")
@click.option("--endpoint-url", help="S3 endpoint (S3-compatible stores)")
@click.option("--region", help="S3 region")
@click.option("--access-key-id", help="S3 access key id")
@click.option("--secret-access-key", help="S3 secret access key (stored, never shown)")
@click.option("--host", help="SFTP host")
@click.option("--port", type=int, default=22, show_default=True, help="SFTP port")
@click.option("--user", help="SFTP user")
@click.option("--password", help="SFTP password (stored, never shown)")
@click.option("--private-key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="SFTP key")
@click.option("--host-key", help="The SFTP server's public key; unset: any host key is accepted")
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def export_create(ctx: click.Context, name: str, **options: Any) -> None:
    """Create an export."""
    from exporter.definitions import ExportDefinition

    definition = _definition(name, options)
    try:
        parsed = ExportDefinition.model_validate(definition)
    except ValidationError as exc:
        from exporter.api import validation_message

        raise click.ClickException(validation_message(exc)) from exc

    async def work(settings: Settings, catalog: Catalog) -> dict[str, Any]:
        return (await _store(catalog).create(parsed)).to_json()

    _print(_with_store(ctx, work), options["as_json"], f"export {name} created")


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
    else:
        destination = {
            "kind": "sftp",
            "host": o["host"] or "",
            "port": o["port"],
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

    async def work(settings: Settings, catalog: Catalog) -> list[dict[str, Any]]:
        return [e.to_json() for e in await _store(catalog).list()]

    result = _with_store(ctx, work)
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
@click.option("--runs", "show_runs", type=int, default=5, show_default=True, help="Recent runs to show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def export_show(ctx: click.Context, name: str, show_runs: int, as_json: bool) -> None:
    """Show an export (credentials hidden) and its recent runs."""

    async def work(settings: Settings, catalog: Catalog) -> dict[str, Any]:
        store = _store(catalog)
        found = await store.get(name)
        return found.to_json() | {"runs": await store.runs(found, show_runs)}

    result = _with_store(ctx, work)
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
    """Delete an export, its positions and its run history (delivered files stay where they are)."""

    async def work(settings: Settings, catalog: Catalog) -> dict[str, Any]:
        await _store(catalog).delete(name)
        return {"deleted": name}

    _print(_with_store(ctx, work), as_json, f"export {name} deleted")


def _over_http(ctx: click.Context, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
    settings = settings_of(ctx)
    url = settings.service_url("exporter") + path
    headers = {"Content-Type": "application/json"}
    token = getattr(settings, "admin_token", None)
    if token:
        headers["Authorization"] = f"Bearer {token}"

    async def call() -> tuple[int, Any]:
        # A run may take long; the service answers when its report is written.
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5)) as session,
            session.post(url, data=orjson.dumps(body or {}), headers=headers) as response,
        ):
            return response.status, orjson.loads(await response.read())

    try:
        status, data = asyncio.run(call())
    except aiohttp.ClientConnectionError as exc:
        raise click.ClickException(
            f"cannot reach the exporter at {url} ({exc}); is `headrace up` running? (or use --in-process)"
        ) from exc
    if status >= 400:
        raise click.ClickException(data.get("error", f"HTTP {status}") if isinstance(data, dict) else str(data))
    return data


def _in_process(ctx: click.Context, name: str, regenerate: tuple[str, str, str] | None) -> dict[str, Any]:
    from exporter.partitioning import parse_period
    from exporter.runs import ExportRunner, RunFailed, RunInProgress

    async def work(settings: Settings, catalog: Catalog) -> dict[str, Any]:
        found = await _store(catalog).get(name)
        runner = ExportRunner(settings, catalog.pool)
        try:
            if regenerate is None:
                return (await runner.run(found, trigger="cli")).to_json()
            start, end = parse_period(regenerate[0], regenerate[1])
            return (await runner.regenerate(found, start, end, regenerate[2], trigger="cli")).to_json()
        except (RunFailed, RunInProgress) as exc:
            raise RuntimeError(str(exc)) from exc

    return _with_store(ctx, work)


def _summary(result: dict[str, Any]) -> str:
    if result["status"] == "empty":
        return f"export {result['export']}: nothing new since the last run"
    return (
        f"export {result['export']}: {result['status']}, {result['rows']} rows in {len(result['files'])} files,"
        f" {result['dropped_privacy']} dropped by the privacy filter; report {result['report']}"
    )


@export.command("run")
@click.argument("name")
@click.option("--in-process", is_flag=True, help="Run here rather than in the exporter service")
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def export_run(ctx: click.Context, name: str, in_process: bool, as_json: bool) -> None:
    """Run an export now: everything inserted since its last run, then its delivery report."""
    if in_process:
        result = _in_process(ctx, name, None)
    else:
        result = _over_http(ctx, f"/api/exports/{name}/runs", None)
    _print(result, as_json, _summary(result))


@export.command("regenerate")
@click.argument("name")
@click.option("--from", "start", required=True, help="Start of the period (ISO date or date-time, UTC), included")
@click.option("--to", "end", required=True, help="End of the period; a date includes that whole day")
@click.option("--folder", required=True, help="Folder the regenerated files and report go to")
@click.option("--in-process", is_flag=True, help="Run here rather than in the exporter service")
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def export_regenerate(
    ctx: click.Context, name: str, start: str, end: str, folder: str, in_process: bool, as_json: bool
) -> None:
    """Re-export the period's rows (by event time) from the storages into FOLDER, with its own report."""
    if in_process:
        result = _in_process(ctx, name, (start, end, folder))
    else:
        result = _over_http(ctx, f"/api/exports/{name}/regenerate", {"from": start, "to": end, "folder": folder})
    _print(result, as_json, _summary(result))
