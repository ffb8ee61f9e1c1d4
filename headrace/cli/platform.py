"""`headrace up` and `headrace status`: run the local platform and check it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import aiohttp
import click

from headrace.cli import cli
from headrace.cli.common import print_json, settings_of
from headrace.settings import SERVICES, Settings


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
    settings = settings_of(ctx)

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
        print_json({"services": services})
    else:
        for name, info in services.items():
            click.echo(f"{name:<16} {info['url']:<28} {'ready' if info['ready'] else 'NOT READY'}")
    sys.exit(0 if all(s["ready"] for s in services.values()) else 1)
