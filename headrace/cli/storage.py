"""`headrace storage …`: create, list, show, query, lock and unlock storages; their rejected rows and history."""

from __future__ import annotations

from typing import Any

import click
import orjson

from headrace.catalog import Catalog
from headrace.catalog.provision import create_storage
from headrace.catalog.rejected import list_rejected, replay_rejected
from headrace.cli import cli
from headrace.cli.common import print_json, run_with_catalog
from headrace.settings import Settings

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON")


@cli.group()
def storage() -> None:
    """Create, inspect and query storages."""


@storage.command("create")
@click.argument("name")
@click.option("--primary-key", "-k", multiple=True, help="Primary-key field (repeat for a composite key)")
@click.option("--load-mode", type=click.Choice(["append", "merge", "replace"]), default="append")
@json_option
@click.pass_context
def storage_create(ctx: click.Context, name: str, primary_key: tuple[str, ...], load_mode: str, as_json: bool) -> None:
    """Create an empty storage and print its push URL (the token is shown only now)."""

    async def work(settings: Settings, catalog: Catalog) -> dict[str, Any]:
        return await create_storage(settings, catalog, name, list(primary_key), load_mode)

    result = run_with_catalog(ctx, work)
    if as_json:
        print_json(result)
    else:
        click.echo(f"storage {result['name']} created ({result['id']})")
        click.echo(f"push URL: {result['push_url']}")


@storage.command("list")
@json_option
@click.pass_context
def storage_list(ctx: click.Context, as_json: bool) -> None:
    """List storages."""

    async def work(settings: Settings, catalog: Catalog) -> list[dict[str, Any]]:
        return [s.to_json() for s in await catalog.list()]

    result = run_with_catalog(ctx, work)
    if as_json:
        print_json(result)
        return
    for item in result:
        locked = "  locked" if item["locked"] else ""
        click.echo(f"{item['name']:<30} {item['load_mode']:<8} v{item['version']}{locked}")


@storage.command("show")
@click.argument("name")
@json_option
@click.pass_context
def storage_show(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show a storage and its model."""

    async def work(settings: Settings, catalog: Catalog) -> dict[str, Any]:
        return await catalog.describe(name)

    result = run_with_catalog(ctx, work)
    if as_json:
        print_json(result)
        return
    locked = " locked" if result["locked"] else ""
    click.echo(f"{result['name']} ({result['id']}) v{result['version']} {result['load_mode']}{locked}")
    for column in result["columns"]:
        click.echo(f"  {column['name']:<30} {column['type']}")


@storage.command("query")
@click.argument("name")
@click.option("--limit", type=int, default=None, help="At most this many rows")
@json_option
@click.pass_context
def storage_query(ctx: click.Context, name: str, limit: int | None, as_json: bool) -> None:
    """Print a storage's rows in insertion order; system columns start with `_`."""
    from headrace.query import fetch_rows

    async def work(settings: Settings, catalog: Catalog) -> list[dict[str, Any]]:
        return await fetch_rows(catalog, await catalog.get(name), limit)

    rows = run_with_catalog(ctx, work)
    if as_json:
        print_json(rows)
        return
    for row in rows:
        click.echo(orjson.dumps(row, option=orjson.OPT_UTC_Z, default=str).decode())


def _set_locked(ctx: click.Context, name: str, locked: bool, as_json: bool) -> None:
    async def work(settings: Settings, catalog: Catalog) -> dict[str, Any]:
        return (await catalog.set_locked(name, locked)).to_json()

    result = run_with_catalog(ctx, work)
    if as_json:
        print_json(result)
    else:
        click.echo(f"storage {name} {'locked' if locked else 'unlocked'}")


@storage.command("lock")
@click.argument("name")
@json_option
@click.pass_context
def storage_lock(ctx: click.Context, name: str, as_json: bool) -> None:
    """Lock the model: type changes are refused (rows that do not fit are rejected); new columns still come."""
    _set_locked(ctx, name, True, as_json)


@storage.command("unlock")
@click.argument("name")
@json_option
@click.pass_context
def storage_unlock(ctx: click.Context, name: str, as_json: bool) -> None:
    """Unlock the model: types widen again with the data."""
    _set_locked(ctx, name, False, as_json)


@storage.command("rotate-token")
@click.argument("name")
@json_option
@click.pass_context
def storage_rotate_token(ctx: click.Context, name: str, as_json: bool) -> None:
    """Issue a new push token; the previous push URL stops working within the ingest cache time (5 s)."""

    async def work(settings: Settings, catalog: Catalog) -> dict[str, Any]:
        found, token = await catalog.rotate_token(name)
        return found.to_json() | {"push_url": found.push_url(settings.push_base_url, token)}

    result = run_with_catalog(ctx, work)
    if as_json:
        print_json(result)
    else:
        click.echo(f"push URL: {result['push_url']}")


@storage.command("rejected")
@click.argument("name")
@click.option("--all", "include_replayed", is_flag=True, help="Also the rows already replayed")
@json_option
@click.pass_context
def storage_rejected(ctx: click.Context, name: str, include_replayed: bool, as_json: bool) -> None:
    """List the rows a locked model refused, with their payload and reason."""

    async def work(settings: Settings, catalog: Catalog) -> list[dict[str, Any]]:
        return await list_rejected(catalog, await catalog.get(name), include_replayed)

    rows = run_with_catalog(ctx, work)
    if as_json:
        print_json(rows)
        return
    for row in rows:
        click.echo(f"{row['id']:>8}  {row['reason']}  {orjson.dumps(row['payload']).decode()}")


@storage.command("replay-rejected")
@click.argument("name")
@json_option
@click.pass_context
def storage_replay_rejected(ctx: click.Context, name: str, as_json: bool) -> None:
    """Send the rejected rows through again (after an unlock, say); those that still do not fit come back."""

    async def work(settings: Settings, catalog: Catalog) -> int:
        return await replay_rejected(settings, catalog, await catalog.get(name))

    replayed = run_with_catalog(ctx, work)
    if as_json:
        print_json({"replayed": replayed})
    else:
        click.echo(f"{replayed} rows replayed")


@storage.command("history")
@click.argument("name")
@json_option
@click.pass_context
def storage_history(ctx: click.Context, name: str, as_json: bool) -> None:
    """Every version of the model with the change from the one before."""

    async def work(settings: Settings, catalog: Catalog) -> list[dict[str, Any]]:
        return await catalog.history(name)

    versions = run_with_catalog(ctx, work)
    if as_json:
        print_json(versions)
        return
    for version in versions:
        change = version["change"]
        parts = [f"+{c['key']} {c['type']}" for c in change.get("added", [])]
        parts += [f"{w['column']} {w['from']}→{w['to']}" for w in change.get("widened", [])]
        click.echo(f"v{version['version']}  {version['created_at']:%Y-%m-%d %H:%M:%S}  {', '.join(parts) or 'created'}")
