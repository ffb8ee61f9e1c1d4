"""What every `headrace` subcommand shares: the services' client, found like the settings, errors as one line, JSON
output, and jobs followed with a progress bar on stderr. Commands speak only HTTP (no Postgres, no service code)."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
import orjson

from headrace.client import NO_ANSWER, Client, HeadraceError
from headrace.settings import Settings, load_settings

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON")


def print_json(data: Any) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z, default=str).decode())


def settings_of(ctx: click.Context) -> Settings:
    return load_settings(ctx.find_root().obj.get("data_dir"))


def segment(name: str) -> str:
    """A name as one path segment of a URL."""
    return quote(name, safe="")


def when(text: str | None) -> str:
    """An ISO timestamp from an answer, as the text output shows it."""
    return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M:%S") if text else "-"


def client_of(ctx: click.Context) -> Client:
    """The client of this command's platform: the URLs and admin token load_settings finds (environment first)."""
    root = ctx.find_root().obj
    if "client" not in root:
        settings = settings_of(ctx)
        if not settings.admin_token:
            raise click.ClickException(
                "no admin token: set HEADRACE_ADMIN_TOKEN, or run this where `headrace up` keeps its data dir"
                " (--data-dir, HEADRACE_DATA_DIR)"
            )
        root["client"] = Client(
            settings.service_url("ingest"),
            settings.admin_token,
            exporter_url=settings.service_url("exporter"),
            transform_url=settings.service_url("transform"),
            timeout=600,
        )
        ctx.find_root().call_on_close(root["client"].close)
    client: Client = root["client"]
    return client


def _refused(client: Client, service: str, exc: HeadraceError) -> click.ClickException:
    if exc.status == NO_ANSWER:
        return click.ClickException(
            f"cannot reach {service} at {client.urls[service]}; is `headrace up` running? ({exc.reason})"
        )
    return click.ClickException(exc.reason)


def call(ctx: click.Context, method: str, path: str, service: str = "ingest", **kwargs: Any) -> Any:
    """One request to a service's API; an error answer becomes the command's one-line error (exit 1)."""
    client = client_of(ctx)
    try:
        return client.request(method, path, service=service, **kwargs)
    except HeadraceError as exc:
        raise _refused(client, service, exc) from exc


def run_job(ctx: click.Context, path: str, label: str, service: str = "ingest", **kwargs: Any) -> Any:
    """Start a job in its service and follow it to its end, its progress on stderr; its result."""
    client = client_of(ctx)
    bar = ProgressBar(label)
    try:
        return client.run_job(path, service, bar.update, **kwargs)
    except HeadraceError as exc:
        raise _refused(client, service, exc) from exc
    finally:
        bar.close()


class ProgressBar:
    """A job's progress on stderr, redrawn in place: a bar when its total is known, a count otherwise. Only on a
    terminal, so that piped or captured output holds the result alone."""

    WIDTH = 30

    def __init__(self, label: str) -> None:
        self.label = label
        self.shown = sys.stderr.isatty()
        self.drawn = 0

    def update(self, progress: dict[str, Any]) -> None:
        if not self.shown:
            return
        done, total, unit = progress["done"], progress["total"], progress["unit"]
        if total:
            filled = self.WIDTH * min(done, total) // total
            text = (
                f"{self.label} [{'#' * filled}{'-' * (self.WIDTH - filled)}] {100 * min(done, total) // total:3d}%"
                f"  {_amount(done, unit)} of {_amount(total, unit)}"
            )
        else:
            text = f"{self.label}  {_amount(done, unit)}"
        click.echo("\r" + text.ljust(self.drawn), nl=False, err=True)
        self.drawn = len(text)

    def close(self) -> None:
        if self.drawn:
            click.echo(err=True)


def _amount(count: int, unit: str) -> str:
    if unit == "bytes":
        return f"{count / (1024 * 1024):,.1f} MiB"
    return f"{count:,} {unit}"


def read_definition(path: Path) -> Any:
    """A definition file (JSON or YAML, as `show --json` prints one) as its JSON value."""
    import yaml  # only the commands that read definition files need it

    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from exc
