"""`headrace storage import`: a CSV or NDJSON file on SFTP or S3 loaded into a storage as one batch, streamed."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import click

from headrace.catalog import Catalog, StorageNotFound
from headrace.catalog.provision import create_storage
from headrace.cli.common import print_json, run_with_catalog
from headrace.cli.storage import storage
from headrace.kafka import Topics, ensure_topics, producer
from headrace.settings import Settings
from ingest.collectors.batches import BatchFailed, BatchWriter
from ingest.collectors.files import FileSourceError, format_of, open_store, parse_file, source_from_url


@storage.command("import")
@click.argument("name")
@click.option("--from", "source_url", required=True, help="sftp://user@host:port/path.csv or s3://bucket/key.csv")
@click.option("--key", "key_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="SFTP key file")
@click.option("--password", help="SFTP password (prefer --key)")
@click.option("--host-key", help="SFTP: the server's public key (unset: any host key is accepted)")
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
def storage_import(ctx: click.Context, name: str, source_url: str, **options: Any) -> None:
    """Load a file (or every file a glob matches) into a storage as one batch; created when missing."""
    key_file: Path | None = options["key_file"]
    try:
        source = source_from_url(
            source_url,
            private_key=key_file.read_text() if key_file else None,
            password=options["password"],
            host_key=options["host_key"],
            endpoint_url=options["endpoint_url"],
            region=options["region"],
            access_key_id=options["access_key_id"],
            secret_access_key=options["secret_access_key"],
            file_format=options["file_format"] or format_of(source_url),
            delimiter=options["delimiter"],
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    mode: str = options["mode"]
    batch_id: str = options["batch_id"] or str(uuid.uuid4())

    async def work(settings: Settings, catalog: Catalog) -> dict[str, Any]:
        try:
            target = await catalog.get(name)
        except StorageNotFound:
            await create_storage(settings, catalog, name, list(options["primary_key"]), mode)
            target = await catalog.get(name)
        if mode == "merge" and not target.primary_key:
            raise ValueError(f"storage {name!r} has no primary key to merge by")
        topic = Topics(settings.topic_prefix).ingest(name)
        await ensure_topics(settings, [topic])
        kafka = producer(settings)
        await kafka.start()
        writer = BatchWriter(kafka, topic, batch_id, mode, target.primary_key)
        try:
            async with open_store(source) as store:
                files = sorted(await store.list(source.pattern), key=lambda f: f.path)
                if not files:
                    raise FileSourceError(f"no file matches {source_url}")
                total = sum(f.size for f in files)
                with click.progressbar(length=total, label=f"importing into {name}", file=sys.stderr) as bar:
                    for file in files:
                        async for records in parse_file(store, file.path, source.format, source.delimiter, bar.update):
                            for record in records:
                                await writer.add(record)
                result = await writer.finish()
        except BaseException:
            writer.abandon()
            raise
        finally:
            await kafka.stop()
        return result.to_json() | {"storage": name, "load_mode": mode, "files": [f.path for f in files]}

    try:
        result = run_with_catalog(ctx, work)
    except (FileSourceError, BatchFailed) as exc:
        raise click.ClickException(f"{exc} (batch {batch_id}; nothing is applied until a batch is complete)") from exc
    if options["as_json"]:
        print_json(result)
    else:
        click.echo(f"{result['rows']} rows sent to {name} as batch {result['batch_id']} ({mode})")
