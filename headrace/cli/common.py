"""Helpers every `headrace` subcommand uses: settings, a catalog on a short-lived pool, JSON output."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
import orjson

from headrace.catalog import Catalog, InvalidStorageName, StorageExists, StorageNotFound
from headrace.postgres import create_pool, migrate
from headrace.settings import Settings, load_settings

T = TypeVar("T")

# Errors that are the user's to fix: shown as one line, exit 1, no traceback.
USER_ERRORS: tuple[type[Exception], ...] = (
    StorageNotFound,
    StorageExists,
    InvalidStorageName,
    ValueError,
    RuntimeError,
)


def print_json(data: Any) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z, default=str).decode())


def settings_of(ctx: click.Context) -> Settings:
    return load_settings(ctx.find_root().obj.get("data_dir"))


def run_with_catalog(ctx: click.Context, work: Callable[[Settings, Catalog], Awaitable[T]]) -> T:
    """Run `work` with the settings and a catalog on a two-connection pool, turning user errors into messages."""
    settings = settings_of(ctx)

    async def run() -> T:
        pool = await create_pool(settings, max_size=2)
        try:
            await migrate(pool)
            return await work(settings, Catalog(pool, max_columns=settings.max_columns))
        finally:
            await pool.close()

    try:
        return asyncio.run(run())
    except USER_ERRORS as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot reach Postgres ({exc}); is `headrace up` running?") from exc
