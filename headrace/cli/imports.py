"""`headrace storage import`: a CSV or NDJSON file on SFTP, FTP(S) or S3 loaded into a storage as one batch."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from headrace.cli.common import print_json, run_job, segment
from headrace.cli.storage import storage


@storage.command("import")
@click.argument("name")
@click.option(
    "--from",
    "source_url",
    required=True,
    help="sftp://user@host:port/path.csv (or ftp://, ftps://), s3://bucket/key.csv",
)
@click.option("--key", "key_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="SFTP key file")
@click.option("--password", help="SFTP (prefer --key) or FTP password")
@click.option(
    "--ca-cert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="FTPS: a PEM certificate to trust (a self-signed server's own); unset: the system's CAs",
)
@click.option("--host-key", help="SFTP: the server's public key (unset: trusted on first use, then enforced)")
@click.option("--endpoint", "endpoint_url", help="S3: the API endpoint (MinIO, moto, …)")
@click.option("--region", default="us-east-1", show_default=True)
@click.option("--access-key-id", envvar="AWS_ACCESS_KEY_ID")
@click.option("--secret-access-key", envvar="AWS_SECRET_ACCESS_KEY")
@click.option("--mode", type=click.Choice(["append", "replace", "merge"]), default="append", show_default=True)
@click.option("--format", "file_format", type=click.Choice(["csv", "ndjson"]), help="Default: from the file name")
@click.option("--delimiter", default=",", show_default=True, help="CSV separator")
@click.option("--primary-key", "-k", multiple=True, help="When the storage is created: its primary key")
@click.option("--batch-id", help="Retrying an import? Pass the batch id it printed, so its events keep their ids")
@click.option("--json", "as_json", is_flag=True, help="Print JSON")
@click.pass_context
def storage_import(ctx: click.Context, /, name: str, source_url: str, **options: Any) -> None:
    """Load a file (or every file a glob matches) into a storage as one batch; created when missing.

    The ingest service reads the file and streams it to Kafka (a job, followed here with a progress bar).
    """
    key_file: Path | None = options["key_file"]
    scheme = urlsplit(source_url).scheme
    source: dict[str, Any] = {
        "kind": scheme,
        "url": source_url,
        "format": options["file_format"],  # unset: the service tells it from the file name
        "delimiter": options["delimiter"],
    }
    if scheme == "s3":
        source |= {k: options[k] for k in ("endpoint_url", "region", "access_key_id", "secret_access_key")}
    elif scheme in ("ftp", "ftps"):
        ca_cert: Path | None = options["ca_cert"]
        source |= {"password": options["password"], "ca_cert": ca_cert.read_text() if ca_cert else None}
    else:
        source |= {
            "private_key": key_file.read_text() if key_file else None,
            "password": options["password"],
            "host_key": options["host_key"],
        }
    # Chosen here, so that whatever happens to the job the batch id to retry with is known.
    batch_id: str = options["batch_id"] or str(uuid.uuid4())
    body = {
        "source": {k: v for k, v in source.items() if v is not None},
        "mode": options["mode"],
        "primary_key": list(options["primary_key"]),
        "batch_id": batch_id,
    }
    result = run_job(ctx, f"/api/storages/{segment(name)}/imports", f"importing into {name}", json=body)
    if options["as_json"]:
        print_json(result)
    else:
        click.echo(f"{result['rows']} rows sent to {name} as batch {result['batch_id']} ({result['load_mode']})")
