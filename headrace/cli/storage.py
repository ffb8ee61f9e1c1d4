"""`headrace storage …`: create, list, show, query, lock, unlock and delete storages; tokens, rejected rows, history
and batches; each a call to the ingest service's API (`/api/storages…`)."""

from __future__ import annotations

from typing import Any

import click
import orjson

from headrace.cli import cli
from headrace.cli.common import call, json_option, print_json, run_job, segment, when


@cli.group()
def storage() -> None:
    """Create, inspect, query and delete storages."""


def _path(name: str, rest: str = "") -> str:
    return f"/api/storages/{segment(name)}{rest}"


@storage.command("create")
@click.argument("name")
@click.option("--primary-key", "-k", multiple=True, help="Primary-key field (repeat for a composite key)")
@click.option("--load-mode", type=click.Choice(["append", "merge", "replace"]), default="append")
@json_option
@click.pass_context
def storage_create(ctx: click.Context, name: str, primary_key: tuple[str, ...], load_mode: str, as_json: bool) -> None:
    """Create an empty storage and print its push URL (the token is shown only now)."""
    body = {"name": name, "primary_key": list(primary_key), "load_mode": load_mode}
    result = call(ctx, "POST", "/api/storages", json=body)
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
    result = call(ctx, "GET", "/api/storages")
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
    result = call(ctx, "GET", _path(name))
    if as_json:
        print_json(result)
        return
    locked = " locked" if result["locked"] else ""
    click.echo(f"{result['name']} ({result['id']}) v{result['version']} {result['load_mode']}{locked}")
    for column in result["columns"]:
        click.echo(f"  {column['name']:<30} {column['type']}")


@storage.command("query")
@click.argument("name")
@click.option("--limit", type=click.IntRange(min=0), default=None, help="At most this many rows (100,000 at most)")
@json_option
@click.pass_context
def storage_query(ctx: click.Context, name: str, limit: int | None, as_json: bool) -> None:
    """Print a storage's rows in insertion order; system columns start with `_`."""
    rows = call(ctx, "GET", _path(name, "/rows"), params={} if limit is None else {"limit": limit})
    if as_json:
        print_json(rows)
        return
    for row in rows:
        click.echo(orjson.dumps(row).decode())


def _set_locked(ctx: click.Context, name: str, locked: bool, as_json: bool) -> None:
    result = call(ctx, "POST", _path(name, "/lock" if locked else "/unlock"))
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
    result = call(ctx, "POST", _path(name, "/token"))
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
    rows = call(ctx, "GET", _path(name, "/rejected"), params={"all": "true"} if include_replayed else {})
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
    result = run_job(ctx, _path(name, "/rejected/replay"), f"replaying {name}")
    if as_json:
        print_json(result)
    else:
        click.echo(f"{result['replayed']} rows replayed")


@storage.command("history")
@click.argument("name")
@json_option
@click.pass_context
def storage_history(ctx: click.Context, name: str, as_json: bool) -> None:
    """Every version of the model with the change from the one before."""
    versions = call(ctx, "GET", _path(name, "/history"))
    if as_json:
        print_json(versions)
        return
    for version in versions:
        change = version["change"]
        parts = [f"+{c['key']} {c['type']}" for c in change.get("added", [])]
        parts += [f"{w['column']} {w['from']}→{w['to']}" for w in change.get("widened", [])]
        click.echo(f"v{version['version']}  {when(version['created_at'])}  {', '.join(parts) or 'created'}")


@storage.command("batches")
@click.argument("name")
@json_option
@click.pass_context
def storage_batches(ctx: click.Context, name: str, as_json: bool) -> None:
    """The latest batches loaded into the storage: state, rows, duplicates dropped, why one failed."""
    batches = call(ctx, "GET", _path(name, "/batches"))
    if as_json:
        print_json(batches)
        return
    for batch in batches:
        rows = f"{batch['rows_seen']}/{batch['expected_rows'] if batch['expected_rows'] is not None else '?'}"
        reason = f"  {batch['reason']}" if batch["reason"] else ""
        click.echo(
            f"{batch['batch_id']:<40} {batch['load_mode']:<8} {batch['state']:<9} rows {rows}"
            f"  duplicates {batch['duplicates']}{reason}"
        )


@storage.command("delete")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation")
@json_option
@click.pass_context
def storage_delete(ctx: click.Context, name: str, yes: bool, as_json: bool) -> None:
    """Delete a storage: its table and rows, staging tables, push tokens, batches, rejected rows, model history,
    ingest topic and registry subject. Refused while a collector or an export names it."""
    if not yes:
        click.confirm(
            f"Delete storage {name!r} with its rows, topic and model history? This cannot be undone", abort=True
        )
    result: dict[str, Any] = call(ctx, "DELETE", _path(name))
    if as_json:
        print_json(result)
        return
    click.echo(f"storage {name} deleted")
    if not result["topic"]["deleted"]:
        click.echo(f"its topic {result['topic']['name']} is left: {result['topic']['error']}", err=True)
