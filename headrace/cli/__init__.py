"""The `headrace` command: one module per resource (platform, storage, …), registered on one group."""

from __future__ import annotations

from pathlib import Path

import click


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


def main() -> None:
    import headrace.cli.collector
    import headrace.cli.etl
    import headrace.cli.flow
    import headrace.cli.hostkeys
    import headrace.cli.imports  # noqa: F401 - registers `storage import`
    from headrace.cli import (  # noqa: F401 - each module registers its commands
        export,
        platform,
        storage,
    )

    cli()
