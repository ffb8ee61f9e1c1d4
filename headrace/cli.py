"""The `headrace` command: run the local platform, check it, and manage storages."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import click
import orjson

from headrace.catalog import Catalog, InvalidStorageName, StorageExists, StorageNotFound
from headrace.kafka import Topics, ensure_topics
from headrace.postgres import create_pool, migrate
from headrace.settings import SERVICES, Settings, load_settings

T = TypeVar("T")


def _print_json(data: Any) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z, default=str).decode())


def _settings(ctx: click.Context) -> Settings:
    return load_settings(ctx.obj.get("data_dir"))


def _with_catalog(ctx: click.Context, work: Callable[[Settings, Catalog], Awaitable[T]]) -> T:
    settings = _settings(ctx)

    async def run() -> T:
        pool = await create_pool(settings, max_size=2)
        try:
            await migrate(pool)
            return await work(settings, Catalog(pool))
        finally:
            await pool.close()

    try:
        return asyncio.run(run())
    except (StorageNotFound, StorageExists, InvalidStorageName, ValueError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot reach Postgres ({exc}); is `headrace up` running?") from exc


@click.group()
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Data directory of the local platform (default: $HEADRACE_DATA_DIR or .headrace/)",
)
@click.pass_context
def cli(ctx: click.Context, data_dir: Path | None) -> None:
    """Headrace: push JSON, stream it into evolving Postgres storages, export it as files."""
    ctx.obj = {"data_dir": data_dir}


@cli.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="Default: .headrace/")
@click.pass_context
def up(ctx: click.Context, data_dir: Path | None) -> None:
    """Start the whole platform in the foreground; Ctrl-C stops everything."""
    from headrace.platform.supervisor import up as run_up

    chosen = data_dir or ctx.obj.get("data_dir")
    settings = Settings() if chosen is None else Settings(data_dir=chosen)
    sys.exit(run_up(settings))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Exit 0 only when every service answers ready."""
    settings = _settings(ctx)

    async def probe() -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            for service in SERVICES:
                url = settings.service_url(service)
                try:
                    async with session.get(f"{url}/readyz") as response:
                        ready = response.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ready = False
                found[service] = {"url": url, "ready": ready}
        return found

    services = asyncio.run(probe())
    if as_json:
        _print_json({"services": services})
    else:
        for name, info in services.items():
            click.echo(f"{name:<16} {info['url']:<28} {'ready' if info['ready'] else 'NOT READY'}")
    sys.exit(0 if all(s["ready"] for s in services.values()) else 1)


@cli.group()
def storage() -> None:
    """Create, inspect and query storages."""


@storage.command("create")
@click.argument("name")
@click.option("--primary-key", "-k", multiple=True, help="Primary-key field (repeat for a composite key)")
@click.option("--load-mode", type=click.Choice(["append", "merge", "replace"]), default="append")
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def storage_create(ctx: click.Context, name: str, primary_key: tuple[str, ...], load_mode: str, as_json: bool) -> None:
    """Create an empty storage and print its push URL (the token is shown only now)."""

    async def work(settings: Settings, catalog: Catalog) -> dict[str, Any]:
        topics = Topics(settings.topic_prefix)
        await ensure_topics(settings, [topics.ingest(name), topics.rows(name), topics.dead_letter])
        created, token = await catalog.create(name, primary_key=list(primary_key), load_mode=load_mode)
        return created.to_json() | {
            "push_url": created.push_url(settings.push_base_url, token),
            "ingest_topic": topics.ingest(name),
        }

    result = _with_catalog(ctx, work)
    if as_json:
        _print_json(result)
    else:
        click.echo(f"storage {result['name']} created ({result['id']})")
        click.echo(f"push URL: {result['push_url']}")


@storage.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def storage_list(ctx: click.Context, as_json: bool) -> None:
    """List storages."""

    async def work(settings: Settings, catalog: Catalog) -> list[dict[str, Any]]:
        return [s.to_json() for s in await catalog.list()]

    result = _with_catalog(ctx, work)
    if as_json:
        _print_json(result)
    else:
        for item in result:
            click.echo(
                f"{item['name']:<30} {item['load_mode']:<8} v{item['version']}{'  locked' if item['locked'] else ''}"
            )


@storage.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def storage_show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show a storage and its model."""

    async def work(settings: Settings, catalog: Catalog) -> dict[str, Any]:
        found = await catalog.get(name)
        model = await catalog.model(found.id)
        return found.to_json() | {"columns": [{"name": c.key, "type": c.type.value} for c in model.columns]}

    result = _with_catalog(ctx, work)
    if as_json:
        _print_json(result)
    else:
        click.echo(f"{result['name']} ({result['id']}) v{result['version']} {result['load_mode']}")
        for column in result["columns"]:
            click.echo(f"  {column['name']:<30} {column['type']}")


@storage.command("query")
@click.argument("name")
@click.option("--limit", type=int, default=None, help="At most this many rows")
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def storage_query(ctx: click.Context, name: str, limit: int | None, as_json: bool) -> None:
    """Print a storage's rows in insertion order; system columns start with `_`."""
    from headrace.query import fetch_rows

    async def work(settings: Settings, catalog: Catalog) -> list[dict[str, Any]]:
        return await fetch_rows(catalog, await catalog.get(name), limit)

    rows = _with_catalog(ctx, work)
    if as_json:
        _print_json(rows)
    else:
        for row in rows:
            click.echo(orjson.dumps(row, option=orjson.OPT_UTC_Z, default=str).decode())


def main() -> None:
    cli()
