"""Python and upload steps as the runner runs them: a script and the loads it made, a file put on SFTP or FTP(S)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg

from headrace.catalog import Catalog, StorageNotFound
from headrace.flows.definitions import PythonStep, UploadStep
from headrace.flows.python_step import ScriptFailed, run_script, script_environment
from headrace.flows.upload import remote_path, scratch_file, upload, write_file
from headrace.kafka import Topics
from headrace.platform.holdings import Drain, partition_spans
from headrace.postgres import connect
from headrace.settings import Settings
from transform.flows.etl_run import StepFailed, StepOutcome

SETTLE_POLL_SECONDS = 0.2


async def run_python(
    settings: Settings, pool: asyncpg.Pool, flow: str, run_id: str, step: PythonStep, params: dict[str, Any]
) -> StepOutcome:
    """Run the script, then wait until what it loaded into the storages it `writes` is in them, so the steps that
    read those storages see it (loads go through ingest and Kafka, and transform writes them a moment later)."""
    started = datetime.now(UTC)
    environment = script_environment(settings.push_base_url, settings.require_admin_token(), flow, run_id, params)
    try:
        result = await run_script(step, environment)
    except ScriptFailed as exc:
        raise StepFailed(str(exc), False, StepOutcome(output=exc.output)) from None
    outcome = StepOutcome(output=result.output)
    left = max(step.timeout_seconds - result.seconds, 10.0)
    try:
        async with asyncio.timeout(left):
            await settle(settings, pool, step.writes, started)
    except TimeoutError:
        raise StepFailed(
            f"what the script loaded into {', '.join(step.writes)} was not all written within {left:.0f} s",
            True,
            outcome,
        ) from None
    return outcome


async def settle(settings: Settings, pool: asyncpg.Pool, storages: list[str], since: datetime) -> None:
    """Wait until transform has written every event of these storages' ingest topics, and applied every batch of
    theirs begun since the step started."""
    if not storages:
        return
    topics = Topics(settings.topic_prefix)
    wanted = {topics.ingest(name) for name in storages}
    spans = await partition_spans(settings, only=lambda topic: topic in wanted)
    drain = Drain(settings, datetime.fromtimestamp(0, UTC))
    while await drain.unwritten(pool, spans) > 0:  # noqa: ASYNC110 - the condition lives in Postgres
        await asyncio.sleep(SETTLE_POLL_SECONDS)
    while await pool.fetchval(  # noqa: ASYNC110
        "SELECT count(*) FROM headrace.batches b JOIN headrace.storages s ON s.id = b.storage_id"
        " WHERE s.name = ANY($1::text[]) AND b.state IN ('open', 'complete') AND b.created_at >= $2",
        storages,
        since,
    ):
        await asyncio.sleep(SETTLE_POLL_SECONDS)


async def run_upload(
    settings: Settings, pool: asyncpg.Pool, catalog: Catalog, flow: str, run_id: str, step: UploadStep
) -> StepOutcome:
    try:
        storage = await catalog.get(step.storage)
    except StorageNotFound as exc:
        raise StepFailed(str(exc), False, StepOutcome()) from None
    model = await catalog.model(storage.id)
    missing = [k for k in step.columns or [] if k not in model.by_key]
    if missing:
        raise StepFailed(f"columns: no field {missing[0]!r} in {step.storage!r}", False, StepOutcome())
    target = remote_path(step, datetime.now(UTC), run_id, flow)
    local = scratch_file(target.suffix)
    try:
        conn = await connect(settings, application_name=f"headrace-flow {flow}:{step.name}"[:63], command_timeout=None)
        try:
            rows = await write_file(conn, step, storage, model, local)
        finally:
            await conn.close()
        await upload(step, settings, pool, local, target)
    finally:
        local.unlink(missing_ok=True)
    return StepOutcome(rows_read=rows, rows_written=rows, output=f"uploaded {rows} rows to {target}")
