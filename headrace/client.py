"""The Python client of the services' HTTP APIs: push records, load DataFrames and files, query storages into
DataFrames, follow jobs (synchronous). The `headrace` CLI sends its every request through it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import orjson

from headrace.settings import load_settings

if TYPE_CHECKING:  # pandas is imported where a DataFrame is made or read: the CLI never needs it
    import pandas as pd

# Rows per NDJSON piece of a DataFrame upload, and bytes per piece of a file upload: memory stays bounded.
DATAFRAME_CHUNK_ROWS = 10_000
# Records per push request: well inside ingest's events cap (HEADRACE_INGEST_MAX_EVENTS) and body limit.
PUSH_CHUNK_RECORDS = 10_000
FILE_CHUNK_BYTES = 1024 * 1024


# Answers that mean "nothing of this request is confirmed, try again" (0: no answer at all): data requests are
# retried with the same ids (Idempotency-Key, batch id), so a retry is written once.
NO_ANSWER = 0
RETRY_STATUSES = frozenset({NO_ANSWER, 408, 429, 502, 503, 504})
BACKOFF_FIRST, BACKOFF_MAX = 0.2, 5.0
# How often a job is asked how it fares.
JOB_POLL_SECONDS = 0.5


class HeadraceError(RuntimeError):
    """The server refused the request; `status` is its HTTP status (0: no answer) and the message its reason."""

    def __init__(self, status: int, message: str, body: Any = None, retry_with: dict[str, str] | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.reason = message
        self.body = body
        # The ids to send the same request again with, so that it is written once (idempotency_key or batch_id).
        self.retry_with = retry_with or {}


class Client:
    """The services of a Headrace platform; usable without an event loop.

    `Client()` finds them as the CLI does (headrace.settings.load_settings: the environment, else the record and the
    admin token `headrace up` keeps in its data dir); `Client("http://127.0.0.1:8080", admin_token=...)` names ingest.
    """

    def __init__(
        self,
        url: str | None = None,
        admin_token: str | None = None,
        timeout: float = 300.0,
        retries: int = 5,
        *,
        exporter_url: str | None = None,
        transform_url: str | None = None,
        data_dir: str | Path | None = None,
    ) -> None:
        if url is None or admin_token is None or exporter_url is None or transform_url is None:
            settings = load_settings(Path(data_dir) if data_dir is not None else None)
            url = url or settings.service_url("ingest")
            exporter_url = exporter_url or settings.service_url("exporter")
            transform_url = transform_url or settings.service_url("transform")
            admin_token = admin_token or settings.admin_token
        self.urls = {
            "ingest": url.rstrip("/"),
            "exporter": exporter_url.rstrip("/"),
            "transform": transform_url.rstrip("/"),
        }
        headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
        self._http = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout, connect=10))
        self.retries = retries

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, service: str = "ingest", **kwargs: Any) -> Any:
        """The answer's JSON body; HeadraceError for an error answer, or none (status 0)."""
        url = self.urls[service] + path
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise HeadraceError(NO_ANSWER, f"no answer from {service} at {self.urls[service]}: {exc!r}") from exc
        try:
            body = orjson.loads(response.content) if response.content else None
        except orjson.JSONDecodeError:
            body = response.text
        if response.status_code >= 400:
            message = body.get("error") if isinstance(body, dict) else str(body)
            raise HeadraceError(response.status_code, message or response.reason_phrase, body)
        return body

    def send_data(self, path: str, content: Callable[[], Any], retry_with: dict[str, str], **kwargs: Any) -> Any:
        """POST data, retrying what may not have been written (no answer, 429, 503…) with the same ids.

        `content` makes the body afresh for each attempt (a stream can be read only once).
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                return self.request("POST", path, content=content(), **kwargs)
            except HeadraceError as exc:
                exc.retry_with = retry_with
                if exc.status not in RETRY_STATUSES or attempt > self.retries:
                    raise
            time.sleep(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (attempt - 1)))

    def run_job(
        self,
        path: str,
        service: str = "ingest",
        progress: Callable[[dict[str, Any]], None] | None = None,
        **kwargs: Any,
    ) -> Any:
        """POST a route that starts a job (an import, a run, a replay) and wait for its end; its result.

        `progress` is called with the job's progress (`{"done", "total", "unit"}`) each time it is asked.
        A job that fails raises HeadraceError with the status and error its route would answer.
        """
        started = self.request("POST", path, service=service, **kwargs)
        return self.follow(started, service, progress)

    def follow(
        self, started: dict[str, Any], service: str, progress: Callable[[dict[str, Any]], None] | None = None
    ) -> Any:
        """Wait for the job a 202 answer (`{"job", "url"}`) started; a passing loss of its service is waited out."""
        missed = 0
        while True:
            try:
                job = self.request("GET", started["url"], service=service)
            except HeadraceError as exc:
                missed += 1
                if exc.status not in RETRY_STATUSES or missed > self.retries:
                    raise
                time.sleep(min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (missed - 1)))
                continue
            missed = 0
            if progress is not None:
                progress(job["progress"])
            if job["state"] == "succeeded":
                return job["result"]
            if job["state"] == "failed":
                raise HeadraceError(job["status"] or 500, job["error"] or "the job failed", job)
            time.sleep(JOB_POLL_SECONDS)

    def storages(self) -> list[dict[str, Any]]:
        storages: list[dict[str, Any]] = self.request("GET", "/api/storages")
        return storages

    def create_storage(self, name: str, primary_key: Sequence[str] = (), load_mode: str = "append") -> StorageClient:
        """Create an empty storage (append, replace or merge; merge needs a primary key) and return its handle."""
        self.request(
            "POST", "/api/storages", json={"name": name, "primary_key": list(primary_key), "load_mode": load_mode}
        )
        return self.storage(name)

    def storage(self, name: str) -> StorageClient:
        return StorageClient(self, name)


class StorageClient:
    """One storage: what to load into it and how to read it back."""

    def __init__(self, client: Client, name: str) -> None:
        self.client = client
        self.name = name
        self._path = f"/api/storages/{quote(name, safe='')}"

    def describe(self) -> dict[str, Any]:
        """The storage and its model: columns with their types."""
        described: dict[str, Any] = self.client.request("GET", self._path)
        return described

    def delete(self) -> dict[str, Any]:
        """Delete the storage with its table, topic and registry subject (refused while a collector or export names
        it)."""
        answer: dict[str, Any] = self.client.request("DELETE", self._path)
        return answer

    def push(self, records: dict[str, Any] | Iterable[dict[str, Any]], idempotency_key: str | None = None) -> int:
        """Push records as events (like the push URL); returns how many Kafka acknowledged.

        Sent in requests of at most PUSH_CHUNK_RECORDS records, each retried with its own Idempotency-Key (derived
        from `idempotency_key`) when no answer says it was taken, so each record is written once (a record's own
        `_id` field takes precedence as its id).
        """
        listed = [records] if isinstance(records, dict) else list(records)
        key = idempotency_key or str(uuid.uuid4())
        accepted = 0
        for start in range(0, len(listed), PUSH_CHUNK_RECORDS):
            piece = listed[start : start + PUSH_CHUNK_RECORDS]
            body = orjson.dumps(piece, option=orjson.OPT_UTC_Z | orjson.OPT_SERIALIZE_NUMPY, default=_json_default)
            chunk_key = key if len(listed) <= PUSH_CHUNK_RECORDS else f"{key}/{start}"
            headers = {"Content-Type": "application/json", "Idempotency-Key": chunk_key}
            # mypy infers no type for a lambda with a default argument (here binding this chunk's body).
            answer = self.client.send_data(
                f"{self._path}/records",
                lambda body=body: body,  # type: ignore[misc]
                {"idempotency_key": key},
                headers=headers,
            )
            accepted += int(answer["accepted"])
        return accepted

    def load_dataframe(self, df: pd.DataFrame, mode: str = "append", batch_id: str | None = None) -> dict[str, Any]:
        """Load a DataFrame as one batch (append, replace or merge); returns the batch id and row count.

        Naive datetimes are taken as UTC. The batch id is chosen here when not given, and failed attempts are
        retried with it, so the batch is applied once; an error carries it (`retry_with`) to try again later.
        """
        return self._load(lambda: _dataframe_ndjson(df), mode, batch_id, "ndjson")

    def load_file(
        self, path: str | Path, mode: str = "append", batch_id: str | None = None, delimiter: str = ","
    ) -> dict[str, Any]:
        """Load a CSV (header row first; cells typed as pushes are) or NDJSON file as one batch, streamed."""
        path = Path(path)
        leaf = path.name.lower()
        file_format = "ndjson" if leaf.endswith((".ndjson", ".jsonl", ".json")) else "csv"
        return self._load(lambda: _file_chunks(path), mode, batch_id, file_format, delimiter)

    def _load(
        self,
        body: Callable[[], Iterator[bytes]],
        mode: str,
        batch_id: str | None,
        file_format: str,
        delimiter: str = ",",
    ) -> dict[str, Any]:
        batch_id = batch_id or str(uuid.uuid4())
        params = {"mode": mode, "format": file_format, "delimiter": delimiter, "batch_id": batch_id}
        content_type = "application/x-ndjson" if file_format == "ndjson" else "text/csv"
        loaded: dict[str, Any] = self.client.send_data(
            f"{self._path}/batches",
            body,
            {"batch_id": batch_id},
            params=params,
            headers={"Content-Type": content_type},
        )
        return loaded

    def query(
        self,
        columns: Sequence[str] | None = None,
        where: Sequence[Sequence[Any]] | dict[str, Any] | None = None,
        group_by: Sequence[str] | None = None,
        aggregates: Sequence[Any] | dict[str, Sequence[str]] | None = None,
        order_by: Sequence[Any] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> pd.DataFrame:
        """Query into a DataFrame. `where`: [("n", ">", 3), ("tag", "in", ["a", "b"]), ("x", "is null")] or
        {"field": value}; `aggregates`: {"total": ("sum", "price"), "n": ("count", "*")}; `order_by`: ["a", "-b"].

        Types: integer -> int64 (Int64 with nulls), float -> float64, boolean -> bool (boolean with nulls),
        datetime -> datetime64[ns, UTC] (tz-aware UTC), date -> datetime64[ns] (midnight), string -> str.
        """
        spec: dict[str, Any] = {
            "columns": list(columns) if columns is not None else None,
            "where": where if isinstance(where, dict) else [list(c) for c in where or []],
            "group_by": list(group_by or []),
            "aggregates": (
                {alias: list(agg) for alias, agg in aggregates.items()}
                if isinstance(aggregates, dict)
                else [list(a) if isinstance(a, list | tuple) else a for a in aggregates or []]
            ),
            "order_by": [list(o) if isinstance(o, list | tuple) else o for o in order_by or []],
            "limit": limit,
            "offset": offset,
        }
        answer = self.client.request(
            "POST", f"{self._path}/query", json={k: v for k, v in spec.items() if v is not None}
        )
        return to_dataframe(answer["columns"], answer["rows"])


def to_dataframe(columns: list[dict[str, str]], rows: list[list[Any]]) -> pd.DataFrame:
    """A query answer as a DataFrame whose dtypes follow the storage's column types."""
    import pandas as pd

    data: dict[str, pd.Series] = {}
    for index, column in enumerate(columns):
        values = [row[index] for row in rows]
        data[column["name"]] = _series(values, column["type"])
    return pd.DataFrame(data, columns=[c["name"] for c in columns])


def _series(values: list[Any], column_type: str) -> pd.Series:
    import pandas as pd

    has_null = any(v is None for v in values)
    if column_type == "integer":
        return pd.Series(values, dtype="Int64" if has_null else "int64")
    if column_type == "float":
        return pd.Series([float("nan") if v is None else v for v in values], dtype="float64")
    if column_type == "boolean":
        return pd.Series(values, dtype="boolean" if has_null else "bool")
    if column_type == "datetime":
        return pd.Series(pd.to_datetime(values, utc=True, format="ISO8601")).astype("datetime64[ns, UTC]")
    if column_type == "date":
        return pd.Series(pd.to_datetime(values, format="ISO8601")).astype("datetime64[ns]")
    if column_type == "json":
        return pd.Series(values, dtype="object")
    return pd.Series(values)


def _json_default(value: Any) -> Any:
    import pandas as pd

    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if value is pd.NA or value is pd.NaT:
        return None
    raise TypeError(f"cannot send {type(value).__name__} as JSON")


def _dataframe_ndjson(df: pd.DataFrame) -> Iterator[bytes]:
    for start in range(0, len(df), DATAFRAME_CHUNK_ROWS):
        piece = df.iloc[start : start + DATAFRAME_CHUNK_ROWS]
        text = piece.to_json(orient="records", lines=True, date_format="iso", date_unit="us")
        if text:
            yield text.encode() + (b"" if text.endswith("\n") else b"\n")


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as file:
        while chunk := file.read(FILE_CHUNK_BYTES):
            yield chunk
