"""`headrace storage …`: create, list, show and query storages."""

from __future__ import annotations

from typing import Any

import click
import orjson

from headrace.catalog import Catalog
from headrace.cli import cli
from headrace.cli.common import print_json, run_with_catalog
from headrace.kafka import Topics, ensure_topics
from headrace.settings import Settings


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

    result = run_with_catalog(ctx, work)
    if as_json:
        print_json(result)
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

    result = run_with_catalog(ctx, work)
    if as_json:
        print_json(result)
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

    result = run_with_catalog(ctx, work)
    if as_json:
        print_json(result)
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

    rows = run_with_catalog(ctx, work)
    if as_json:
        print_json(rows)
    else:
        for row in rows:
            click.echo(orjson.dumps(row, option=orjson.OPT_UTC_Z, default=str).decode())
