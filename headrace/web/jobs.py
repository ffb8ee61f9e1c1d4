"""Long jobs run in the service that owns them and are followed over HTTP: 202 with the job, then GET /api/jobs/{id}.

A route that starts a long job (a file import, an export run, a replay) answers `202 {"job": id, "url":
"/api/jobs/<id>"}` at once; with `?wait=true` it answers when the job ends, with the body and status the route
answered before jobs existed. Either way the job runs in the service's event loop, not in the request: a client
that goes away does not stop it. Jobs are rows of headrace.jobs, so any instance of any service answers for any job;
the process running one beats its heartbeat (and records its progress) every second, and a job whose heartbeat is
older than STALE_SECONDS lost its process and is reported failed. A job that fails is answered through the route's
ErrorAnswers (headrace.web.errors), so its error and status are those the synchronous answer would carry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import asyncpg
import orjson
from aiohttp import web

from headrace.progress import Progress
from headrace.secrets import redact
from headrace.web.errors import ErrorAnswers, error_answer
from headrace.web.service import json_error, json_response

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 1.0
# Ten missed heartbeats: the process is gone (killed, crashed, its machine lost), not merely slow to reach Postgres.
STALE_SECONDS = 10.0
# Finished jobs are kept this long, then dropped when a new job starts.
KEEP_DAYS = 7
STOPPED = "the service running this job stopped before it finished; run it again"

Work = Callable[[Progress], Awaitable[Any]]
# A job's end as its synchronous answer: the HTTP status and the body (the result, or the error).
Outcome = tuple[int, Any]


def _as_json(body: Any) -> Any:
    """The body as a client receives it (datetimes as ISO text, UUIDs as text…), so it can be stored as jsonb."""
    return orjson.loads(orjson.dumps(body, option=orjson.OPT_UTC_Z, default=str))


def wants_wait(request: web.Request) -> bool:
    return request.query.get("wait", "").lower() in ("1", "true", "yes")


class Jobs:
    """The jobs this process runs, and every job's record in Postgres."""

    def __init__(self, pool: asyncpg.Pool, service: str) -> None:
        self.pool = pool
        self.service = service
        self._tasks: dict[uuid.UUID, asyncio.Task[Outcome]] = {}

    async def start(
        self, kind: str, target: str, work: Work, errors: ErrorAnswers, progress: Progress
    ) -> tuple[uuid.UUID, asyncio.Task[Outcome]]:
        job_id = uuid.uuid4()
        async with self.pool.acquire() as conn:
            await conn.execute(
                "DELETE FROM headrace.jobs WHERE created_at < now() - make_interval(days => $1) AND state <> 'running'",
                KEEP_DAYS,
            )
            await conn.execute(
                "INSERT INTO headrace.jobs (id, service, kind, target, unit, total) VALUES ($1, $2, $3, $4, $5, $6)",
                job_id,
                self.service,
                kind,
                target,
                progress.unit,
                progress.total,
            )
        task = asyncio.create_task(self._run(job_id, work, errors, progress), name=f"job {kind} {target}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job_id, None))
        return job_id, task

    async def respond(
        self, request: web.Request, kind: str, target: str, work: Work, errors: ErrorAnswers, unit: str
    ) -> web.Response:
        """Start the job; answer 202 with it, or (`?wait=true`) its outcome once it ends."""
        job_id, task = await self.start(kind, target, work, errors, Progress(unit))
        if wants_wait(request):
            # Shielded: a client that hangs up cancels this request, never the job.
            status, body = await asyncio.shield(task)
            return json_response(body, status=status)
        url = f"/api/jobs/{job_id}"
        return json_response({"job": str(job_id), "url": url}, status=202, headers={"Location": url})

    async def _run(self, job_id: uuid.UUID, work: Work, errors: ErrorAnswers, progress: Progress) -> Outcome:
        beating = asyncio.create_task(self._heartbeat(job_id, progress))
        try:
            outcome: Outcome = (200, await work(progress))
        except asyncio.CancelledError:
            await self._finish(job_id, (503, {"error": STOPPED}), progress)
            raise
        except Exception as exc:
            outcome = self._failure(exc, errors)
        finally:
            beating.cancel()
        await self._finish(job_id, outcome, progress)
        return outcome

    def _failure(self, exc: Exception, errors: ErrorAnswers) -> Outcome:
        answer = error_answer(exc, errors)
        if answer is None:
            log.error("job failed", exc_info=exc)
            return 500, {"error": f"{type(exc).__name__}: {redact(str(exc))}"}
        assert isinstance(answer.body, bytes)
        return answer.status, orjson.loads(answer.body)

    async def _heartbeat(self, job_id: uuid.UUID, progress: Progress) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self.pool.execute(
                    "UPDATE headrace.jobs SET done = $2, total = $3, heartbeat_at = now() WHERE id = $1",
                    job_id,
                    progress.done,
                    progress.total,
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("job heartbeat not recorded", extra={"job": str(job_id), "error": repr(exc)})

    async def _finish(self, job_id: uuid.UUID, outcome: Outcome, progress: Progress) -> None:
        status, body = outcome
        await self.pool.execute(
            "UPDATE headrace.jobs SET state = $2, status = $3, answer = $4, done = $5, total = $6,"
            " heartbeat_at = now(), finished_at = now() WHERE id = $1",
            job_id,
            "succeeded" if status < 400 else "failed",
            status,
            _as_json(body),
            progress.done,
            progress.total,
        )

    async def get(self, job_id: uuid.UUID) -> dict[str, Any] | None:
        """The job as clients see it; a running job whose heartbeat stopped is failed from now on."""
        async with self.pool.acquire() as conn:
            await conn.execute(
                "UPDATE headrace.jobs SET state = 'failed', status = 503, answer = $2, finished_at = now()"
                " WHERE id = $1 AND state = 'running' AND heartbeat_at < now() - make_interval(secs => $3)",
                job_id,
                {
                    "error": f"its process stopped before it finished (no heartbeat for {STALE_SECONDS:.0f} s); run it"
                    " again"
                },
                STALE_SECONDS,
            )
            row = await conn.fetchrow("SELECT * FROM headrace.jobs WHERE id = $1", job_id)
        return None if row is None else shown(row)

    async def stop(self, timeout: float = 10.0) -> None:
        """Cancel the jobs this process runs; each is recorded failed (its work is safe to run again)."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait(tasks, timeout=timeout)


def shown(row: asyncpg.Record) -> dict[str, Any]:
    job: dict[str, Any] = {
        "id": str(row["id"]),
        "service": row["service"],
        "kind": row["kind"],
        "target": row["target"],
        "state": row["state"],
        "progress": Progress(row["unit"], row["done"], row["total"]).to_json(),
        "status": row["status"],
        "created_at": row["created_at"],
        "finished_at": row["finished_at"],
    }
    answer = row["answer"]
    if row["state"] == "succeeded":
        job["result"] = answer
    elif row["state"] == "failed" and isinstance(answer, dict):
        job["error"] = answer.get("error")
        details = {k: v for k, v in answer.items() if k != "error"}
        if details:
            job["details"] = details
    return job


class HasJobs(Protocol):
    jobs: Jobs | None


class JobRoutes:
    """`GET /api/jobs/{id}` on every service that runs jobs; it answers for a job of any service."""

    def __init__(self, service: HasJobs) -> None:
        self.service = service

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/api/jobs/{id}", self.show)

    async def show(self, request: web.Request) -> web.Response:
        try:
            job_id = uuid.UUID(request.match_info["id"])
        except ValueError:
            return json_error(404, "no such job")
        assert self.service.jobs is not None
        job = await self.service.jobs.get(job_id)
        return json_error(404, "no such job") if job is None else json_response(job)
