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
from headrace.platform.processes import admin_headers
from headrace.settings import SERVICES, Settings

MIB = 1024 * 1024
# How events held are counted, said wherever the count is shown.
EVENTS_COUNTED = "sum over every topic's partitions of end offset minus first offset, ends as a consumer is sent them"


@cli.command()
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="Default: .headrace/")
@click.pass_context
def up(ctx: click.Context, data_dir: Path | None) -> None:
    """Start the whole platform in the foreground; Ctrl-C stops everything."""
    from headrace.platform.supervisor import up as run_up

    chosen = data_dir or ctx.obj.get("data_dir")
    # Not load_settings(): runtime.json describes a platform already running, which `up` refuses to start beside;
    # the credentials kept in the data dir are read (or made) by `up` itself.
    settings = Settings() if chosen is None else Settings(data_dir=chosen)
    sys.exit(run_up(settings))


async def _probe_services(settings: Settings, recorded: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=5), headers=admin_headers(settings.admin_token)
    ) as session:
        for service in SERVICES:
            url = settings.service_url(service)
            try:
                async with session.get(f"{url}/readyz") as response:
                    ready = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ready = False
            # What the supervisor knows (pid, restarts, last exit), when this platform runs under `headrace up`.
            found[service] = recorded.get(service, {}) | {"url": url, "ready": ready}
    return found


async def _broker(settings: Settings, recorded: dict[str, Any]) -> dict[str, Any]:
    from headrace.platform.broker import process_rss, warn_threshold
    from headrace.platform.holdings import events_by_topic

    broker: dict[str, Any] = {"bootstrap": settings.kafka_bootstrap, "embedded": bool(recorded.get("embedded"))}
    if not broker["embedded"]:
        return broker  # a real Kafka's memory and retention are its own business
    pid = recorded.get("pid")
    rss = process_rss(pid) if pid else None
    broker |= {"pid": pid, "rss_bytes": rss, "events": None, "topics": {}, "events_counted_as": EVENTS_COUNTED}
    if rss is not None:
        broker["memory_warn_bytes"] = warn_threshold(recorded.get("memory_warn_mb"), rss)
        try:
            topics = await asyncio.wait_for(events_by_topic(settings), 20)
        except Exception as exc:
            broker["error"] = f"events not counted: {exc!r}"
        else:
            broker |= {"events": sum(topics.values()), "topics": topics}
    return broker


def _service_line(name: str, info: dict[str, Any]) -> str:
    line = f"{name:<16} {info['url']:<28} {'ready' if info['ready'] else 'NOT READY'}"
    if "restarts" in info:
        line += f"  restarts {info['restarts']}"
        if info.get("last_exit_code") is not None:
            line += f" (last exit {info['last_exit_code']} at {info['last_exit_at']})"
    return line


def _broker_line(broker: dict[str, Any]) -> str:
    if broker["bootstrap"] is None:
        return f"{'broker':<16} none: no `headrace up` runs from this data dir and HEADRACE_KAFKA_BOOTSTRAP is unset"
    line = f"{'broker':<16} kafka://{broker['bootstrap']}"
    if not broker["embedded"]:
        return line
    if broker.get("rss_bytes") is None:
        return line + "  embedded, NOT RUNNING"
    events = "events not counted" if broker["events"] is None else f"{broker['events']:,} events held"
    return (
        line + f"  embedded, in memory: {broker['rss_bytes'] / MIB:,.0f} MiB, {events}"
        f" (warning past {broker['memory_warn_bytes'] / MIB:,.0f} MiB)"
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Exit 0 only when every service answers ready; also restarts, and the embedded broker's memory and events."""
    from headrace.platform.runtime import read_runtime

    settings = settings_of(ctx)
    record = read_runtime(settings.data_dir) or {}

    async def probe() -> dict[str, Any]:
        return {
            "services": await _probe_services(settings, record.get("services", {})),
            "broker": await _broker(settings, record.get("broker", {})),
        }

    found = asyncio.run(probe())
    if as_json:
        print_json(found)
    else:
        for name, info in found["services"].items():
            click.echo(_service_line(name, info))
        click.echo(_broker_line(found["broker"]))
    sys.exit(0 if all(s["ready"] for s in found["services"].values()) else 1)
