"""File imports on the ingest service: a CSV or NDJSON file (or every file a glob matches) on SFTP, FTP(S) or S3,
loaded into a storage as one batch, streamed, as a job (`POST /api/storages/{name}/imports`; `storage import`)."""

from __future__ import annotations

import uuid
from typing import Any, Literal, Protocol

from aiohttp import web
from aiokafka import AIOKafkaProducer
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from headrace.catalog import Catalog, InvalidStorageName, Storage, StorageNotFound
from headrace.catalog.provision import create_storage
from headrace.filestores import open_store
from headrace.kafka import Topics, create_topics
from headrace.outbound import OutboundPolicy
from headrace.progress import Progress
from headrace.settings import Settings
from headrace.web.errors import INVALID_INPUT, ErrorAnswers, guarded, read_json
from headrace.web.jobs import Jobs
from headrace.web.service import json_error
from ingest.collectors.batches import BatchFailed, BatchWriter
from ingest.collectors.files import FileSourceError, format_of, parse_file
from ingest.collectors.source_models import FileSource, FtpSource, S3Source, SftpSource, source_hosts
from ingest.push import MAX_EVENT_ID_LENGTH


class ImportFailed(RuntimeError):
    """The source could not be read (502) or Kafka did not take the batch (503); retry with the same batch id."""

    def __init__(self, status: int, message: str, batch_id: str) -> None:
        super().__init__(f"{message} (batch {batch_id}; nothing is applied until a batch is complete)")
        self.status = status
        self.batch_id = batch_id


IMPORT_ERRORS: ErrorAnswers = [
    (StorageNotFound, 404),
    (ImportFailed, lambda exc: json_error(exc.status, str(exc), batch_id=exc.batch_id)),
    (InvalidStorageName, 422),
    *INVALID_INPUT,
]


class ImportRequest(BaseModel):
    """The file source (`{"kind": "sftp", "url": "sftp://user@host/dir/*.csv", "private_key": …}`) and the load."""

    model_config = ConfigDict(extra="forbid")
    source: FileSource
    mode: Literal["append", "replace", "merge"] = "append"
    primary_key: list[str] = Field(default_factory=list)  # when the storage is created by the import
    # Retrying an import? The batch id it failed with, so its events keep their ids and are written once.
    batch_id: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _format_from_name(cls, data: Any) -> Any:
        """An import's format, unless given, is the file name's (.ndjson, .jsonl, .json: NDJSON; else CSV)."""
        source = data.get("source") if isinstance(data, dict) else None
        if isinstance(source, dict) and source.get("format") is None:
            named = source.get("url") or source.get("pattern") or ""
            data = data | {"source": source | {"format": format_of(str(named))}}
        return data

    @field_validator("batch_id")
    @classmethod
    def _printable(cls, batch_id: str | None) -> str | None:
        if batch_id is not None and not (
            0 < len(batch_id) <= MAX_EVENT_ID_LENGTH and batch_id.isascii() and batch_id.isprintable()
        ):
            raise ValueError(f"a batch id has 1 to {MAX_EVENT_ID_LENGTH} printable ASCII characters")
        return batch_id


class ImportService(Protocol):
    settings: Settings
    catalog: Catalog | None
    producer: AIOKafkaProducer | None
    jobs: Jobs | None


async def run_import(
    settings: Settings,
    catalog: Catalog,
    producer: AIOKafkaProducer,
    storage: Storage,
    request: ImportRequest,
    batch_id: str,
    progress: Progress,
) -> dict[str, Any]:
    """Stream every file the source matches into one batch; progress counts the files' bytes read."""
    source: SftpSource | FtpSource | S3Source = request.source
    topic = Topics(settings.topic_prefix).ingest(storage.name)
    await create_topics(settings, catalog.pool, [topic])
    writer = BatchWriter(producer, topic, batch_id, request.mode, storage.primary_key)
    try:
        async with open_store(source, settings, catalog.pool) as store:
            files = sorted(await store.list(source.pattern), key=lambda f: f.path)
            if not files:
                raise FileSourceError(f"no file matches {source.pattern}")
            progress.total = sum(f.size for f in files)
            for file in files:
                async for records in parse_file(store, file.path, source.format, source.delimiter, progress.add):
                    for record in records:
                        await writer.add(record)
            result = await writer.finish()
    except FileSourceError as exc:
        writer.abandon()
        raise ImportFailed(502, str(exc), batch_id) from exc
    except BatchFailed as exc:
        writer.abandon()
        raise ImportFailed(503, str(exc), batch_id) from exc
    except BaseException:
        writer.abandon()
        raise
    return result.to_json() | {"storage": storage.name, "load_mode": request.mode, "files": [f.path for f in files]}


class ImportRoutes:
    def __init__(self, service: ImportService) -> None:
        self.service = service

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_post("/api/storages/{name}/imports", guarded(self.create, IMPORT_ERRORS))

    async def create(self, request: web.Request) -> web.Response:
        """Checked now (422: the request, a host named by an internal address; the storage made when missing), then
        streamed as a job: 202, or (`?wait=true`) the batch once Kafka acknowledged all of it."""
        settings, catalog = self.service.settings, self.service.catalog
        assert catalog is not None and self.service.jobs is not None and self.service.producer is not None
        name = request.match_info["name"]
        body = ImportRequest.model_validate(await read_json(request))
        policy = OutboundPolicy.from_settings(settings)
        for host, _ in source_hosts(body.source):
            policy.check_literal(host)
        storage = await _storage(settings, catalog, name, body)
        batch_id = body.batch_id or str(uuid.uuid4())
        producer = self.service.producer

        async def work(progress: Progress) -> dict[str, Any]:
            return await run_import(settings, catalog, producer, storage, body, batch_id, progress)

        return await self.service.jobs.respond(request, "import", name, work, IMPORT_ERRORS, "bytes")


async def _storage(settings: Settings, catalog: Catalog, name: str, body: ImportRequest) -> Storage:
    """The target storage, created with the import's primary key and mode when missing."""
    try:
        storage = await catalog.get(name)
    except StorageNotFound:
        await create_storage(settings, catalog, name, body.primary_key, body.mode)
        storage = await catalog.get(name)
    if body.mode == "merge" and not storage.primary_key:
        raise ValueError(f"storage {name!r} has no primary key to merge by")
    return storage
