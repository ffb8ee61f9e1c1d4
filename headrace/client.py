"""The Python client: push records, load DataFrames and files, query storages into DataFrames (synchronous)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import pandas as pd

# Rows per NDJSON piece of a DataFrame upload, and bytes per piece of a file upload: memory stays bounded.
DATAFRAME_CHUNK_ROWS = 10_000
FILE_CHUNK_BYTES = 1024 * 1024


class HeadraceError(RuntimeError):
    """The server refused the request; `status` is its HTTP status and the message its reason."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.body = body


class Client:
    """A Headrace ingest service: `Client("http://127.0.0.1:8080", admin_token=...)`. Usable without an event loop."""

    def __init__(self, url: str, admin_token: str | None = None, timeout: float = 300.0) -> None:
        headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=httpx.Timeout(timeout, connect=10))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        try:
            body = orjson.loads(response.content) if response.content else None
        except orjson.JSONDecodeError:
            body = response.text
        if response.status_code >= 400:
            message = body.get("error") if isinstance(body, dict) else str(body)
            raise HeadraceError(response.status_code, message or response.reason_phrase, body)
        return body

    def storages(self) -> list[dict[str, Any]]:
        return self.request("GET", "/api/storages")

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
        self._path = f"/api/storages/{name}"

    def describe(self) -> dict[str, Any]:
        """The storage and its model: columns with their types."""
        return self.client.request("GET", self._path)

    def push(self, records: dict[str, Any] | Iterable[dict[str, Any]]) -> int:
        """Push records as events (like the push URL); returns how many Kafka acknowledged."""
        listed = [records] if isinstance(records, dict) else list(records)
        body = orjson.dumps(listed, option=orjson.OPT_UTC_Z | orjson.OPT_SERIALIZE_NUMPY, default=_json_default)
        answer = self.client.request(
            "POST", f"{self._path}/records", content=body, headers={"Content-Type": "application/json"}
        )
        return int(answer["accepted"])

    def load_dataframe(self, df: pd.DataFrame, mode: str = "append", batch_id: str | None = None) -> dict[str, Any]:
        """Load a DataFrame as one batch (append, replace or merge); returns the batch id and row count.

        Naive datetimes are taken as UTC. Pass the returned batch id to retry a load that failed midway.
        """
        return self._load(_dataframe_ndjson(df), mode, batch_id, "ndjson")

    def load_file(
        self, path: str | Path, mode: str = "append", batch_id: str | None = None, delimiter: str = ","
    ) -> dict[str, Any]:
        """Load a CSV (header row first; cells typed as pushes are) or NDJSON file as one batch, streamed."""
        path = Path(path)
        leaf = path.name.lower()
        file_format = "ndjson" if leaf.endswith((".ndjson", ".jsonl", ".json")) else "csv"
        return self._load(_file_chunks(path), mode, batch_id, file_format, delimiter)

    def _load(
        self, body: Iterator[bytes], mode: str, batch_id: str | None, file_format: str, delimiter: str = ","
    ) -> dict[str, Any]:
        params = {"mode": mode, "format": file_format, "delimiter": delimiter}
        if batch_id:
            params["batch_id"] = batch_id
        content_type = "application/x-ndjson" if file_format == "ndjson" else "text/csv"
        return self.client.request(
            "POST", f"{self._path}/batches", params=params, content=body, headers={"Content-Type": content_type}
        )

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
    data: dict[str, pd.Series] = {}
    for index, column in enumerate(columns):
        values = [row[index] for row in rows]
        data[column["name"]] = _series(values, column["type"])
    return pd.DataFrame(data, columns=[c["name"] for c in columns])


def _series(values: list[Any], column_type: str) -> pd.Series:
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
