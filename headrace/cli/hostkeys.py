"""`headrace sftp-host-keys …`: the SFTP host keys trusted on first use; forget one whose server changed its key."""

from __future__ import annotations

import click

from headrace.cli import cli
from headrace.cli.common import call, json_option, print_json, segment, when


@cli.group("sftp-host-keys")
def sftp_host_keys() -> None:
    """SFTP host keys recorded on first use (for servers whose definition gives no host key)."""


@sftp_host_keys.command("list")
@json_option
@click.pass_context
def host_keys_list(ctx: click.Context, as_json: bool) -> None:
    """List the recorded host keys: host, port, fingerprint, when first seen."""
    result = call(ctx, "GET", "/api/sftp-host-keys")
    if as_json:
        print_json(result)
        return
    for key in result:
        click.echo(f"{key['host']}:{key['port']:<6} {key['fingerprint']}  recorded {when(key['recorded_at'])}")


@sftp_host_keys.command("forget")
@click.argument("host")
@click.option("--port", type=int, default=22, show_default=True)
@click.pass_context
def host_keys_forget(ctx: click.Context, host: str, port: int) -> None:
    """Forget a server's recorded key (it was replaced on purpose): the next connection records the new one."""
    call(ctx, "DELETE", f"/api/sftp-host-keys/{segment(host)}/{port}")
    click.echo(f"host key of {host}:{port} forgotten; the next connection records the key it presents")
