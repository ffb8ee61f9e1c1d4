"""`headrace storage etl NAME …`: a storage's streaming ETL (select, rename, filter, computed columns), over HTTP."""

from __future__ import annotations

import click

from headrace.cli.common import call, print_json, segment
from headrace.cli.storage import storage


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name.strip() or not rest.strip():
            raise click.BadParameter(f"expected NAME=VALUE, got {value!r}", param_hint=option)
        found[name.strip()] = rest.strip()
    return found


@storage.command("etl")
@click.argument("name")
@click.option("--select", "select", multiple=True, help="Keep only these fields (repeat, or comma-separate)")
@click.option("--rename", multiple=True, help="OLD=NEW: rename a field (repeat)")
@click.option("--filter", "filter_", default=None, help="Keep only records where this formula is true")
@click.option("--compute", multiple=True, help='FIELD=FORMULA: a computed field, e.g. "total=price * qty" (repeat)')
@click.option("--clear", is_flag=True, help="Remove the storage's ETL")
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def storage_etl(
    ctx: click.Context,
    name: str,
    select: tuple[str, ...],
    rename: tuple[str, ...],
    filter_: str | None,
    compute: tuple[str, ...],
    clear: bool,
    as_json: bool,
) -> None:
    """Show or set the ETL transform applies to NAME's events before writing them.

    With no option it prints the current ETL. Otherwise the ETL becomes exactly the given steps, applied
    in this order: computed fields, filter, select, rename. Formulas use fields, numbers, 'text', + - * / %,
    comparisons, and/or/not, in (…), is [not] null, and the functions lower, upper, trim, length, concat,
    coalesce, substr, replace, round, abs, floor, ceil, int, float, string, date, date_trunc, now, if.
    """
    path = f"/api/storages/{segment(name)}/etl"
    if clear:
        result = call(ctx, "DELETE", path)
    elif select or rename or filter_ or compute:
        body = {
            "select": [f.strip() for item in select for f in item.split(",") if f.strip()],
            "rename": _pairs(rename, "--rename"),
            "filter": filter_,
            "compute": _pairs(compute, "--compute"),
        }
        result = call(ctx, "PUT", path, json=body)
    else:
        result = call(ctx, "GET", path)
    if as_json:
        print_json(result)
    elif not result:
        click.echo(f"{name}: no ETL, events are written as they arrive")
    else:
        for step in ("compute", "filter", "select", "rename"):
            if step in result:
                click.echo(f"{step:<8} {result[step]}")
