"""Flow definitions: steps of type etl, python and upload, their stages, parameters, schedule and retries (pydantic)."""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any, Literal

import orjson
import yaml
from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from headrace.catalog.storages import NAME_PATTERN
from headrace.filestores.ftp_fields import FtpFields

STEP_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,62}\Z")
AGGREGATES = ("sum", "count", "count_distinct", "min", "max", "avg")
JOIN_KINDS = ("inner", "left", "right", "full")
FORMATS = ("csv", "ndjson", "parquet")
MAX_STEPS = 200
MAX_STAGES = 50
MAX_PIVOT_VALUES = 1000
MAX_PARAM_VALUES = 10_000


class FlowError(ValueError):
    """A definition that cannot be applied; `errors` lists each problem with the field it is about."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors) or "invalid flow")
        self.errors = errors


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _storage_name(value: str) -> str:
    if not NAME_PATTERN.match(value):
        raise ValueError(f"{value!r} is not a storage name (letters, digits, '_' or '-', at most 63)")
    return value


StorageName = Annotated[str, AfterValidator(_storage_name)]


# ---------------------------------------------------------------- ETL stages


class Measure(_Strict):
    """One aggregate: `{sum: amount}`, `{count: "*"}`, `{count_distinct: customer}`."""

    function: Literal["sum", "count", "count_distinct", "min", "max", "avg"]
    column: str | None = None  # None: count(*)

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if isinstance(data, dict) and len(data) == 1 and next(iter(data)) in AGGREGATES:
            function, column = next(iter(data.items()))
            return {"function": function, "column": None if column in ("*", None) else column}
        return data

    @model_validator(mode="after")
    def _column_needed(self) -> Measure:
        if self.column is None and self.function != "count":
            raise ValueError(f"{self.function} needs a column")
        return self


class Aggregate(_Strict):
    group_by: list[str] = Field(default_factory=list, max_length=100)
    measures: dict[str, Measure] = Field(min_length=1, max_length=500)


class Join(_Strict):
    """Joins the rows so far with another storage (a step's output is a storage too) on key pairs."""

    storage: StorageName
    how: Literal["inner", "left", "right", "full"] = "inner"
    on: dict[str, str] = Field(min_length=1, max_length=20)  # left field -> right field
    columns: list[str] | None = None  # the other storage's fields to bring (default: all but its keys)
    prefix: str | None = None  # for brought fields whose name is taken already (default: "<storage>_")

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, data: Any) -> Any:
        # YAML 1.1 reads an unquoted `on:` key as the boolean true.
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data


class Pivot(_Strict):
    """A key column's values become columns, each the aggregate of `value` over the rows with that key value."""

    index: list[str] = Field(default_factory=list, max_length=100)
    key: str
    value: str | None = None  # None with count: the rows
    function: Literal["sum", "count", "count_distinct", "min", "max", "avg"] = "sum"
    values: list[Any] | None = Field(None, min_length=1, max_length=MAX_PIVOT_VALUES)  # None: read when run
    max_values: int = Field(100, ge=1, le=MAX_PIVOT_VALUES)
    prefix: str = ""

    @model_validator(mode="after")
    def _value_needed(self) -> Pivot:
        if self.value is None and self.function != "count":
            raise ValueError(f"{self.function} needs a value column")
        return self


STAGE_KINDS = ("filter", "compute", "select", "rename", "aggregate", "join", "pivot")


class Stage(_Strict):
    """Exactly one of the stage kinds, e.g. `{filter: "amount > 0"}` or `{join: {storage: customers, on: …}}`."""

    filter: str | None = None
    compute: dict[str, str] | None = Field(None, min_length=1, max_length=500)
    select: list[str] | None = Field(None, min_length=1, max_length=1000)
    rename: dict[str, str] | None = Field(None, min_length=1, max_length=1000)
    aggregate: Aggregate | None = None
    join: Join | None = None
    pivot: Pivot | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Stage:
        given = [k for k in STAGE_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a stage is exactly one of {', '.join(STAGE_KINDS)}; this one has {given or 'none'}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in STAGE_KINDS if getattr(self, k) is not None)


# ---------------------------------------------------------------- parameters


class DateRange(_Strict):
    start: date
    end: date  # included
    by: Literal["day", "month"] = "month"


class IntRange(_Strict):
    start: int
    end: int  # included
    step: int = Field(1, ge=1)


class Distinct(_Strict):
    storage: StorageName
    column: str


class Param(_Strict):
    """The values a parametric step runs once for: a list, a range of dates or integers, or a column's values."""

    values: list[Any] | None = Field(None, min_length=1, max_length=MAX_PARAM_VALUES)
    dates: DateRange | None = None
    integers: IntRange | None = None
    distinct: Distinct | None = None
    column: str | None = None  # the output column holding the value (default: the parameter's name)

    @model_validator(mode="after")
    def _exactly_one(self) -> Param:
        given = [k for k in ("values", "dates", "integers", "distinct") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"a parameter has exactly one of values, dates, integers, distinct; this one has {given}")
        return self


# ---------------------------------------------------------------- steps


class Retry(_Strict):
    """Retries of transient failures (lost connection, serialization failure, SFTP or FTP network error), never of user
    errors: attempt n waits min(max_seconds, backoff_seconds * 2**(n-1)) scaled by a random factor in [1-jitter, 1]."""

    attempts: int = Field(3, ge=1, le=20)
    backoff_seconds: float = Field(1.0, ge=0, le=3600)
    max_seconds: float = Field(60.0, ge=0, le=86400)
    jitter: float = Field(0.5, ge=0, le=1)


class Output(_Strict):
    storage: StorageName
    mode: Literal["replace", "append", "merge"] = "replace"
    primary_key: list[str] = Field(default_factory=list, max_length=20)

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        return {"storage": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _key_for_merge(self) -> Output:
        if self.mode == "merge" and not self.primary_key:
            raise ValueError("merge needs a primary_key")
        return self


class _Step(_Strict):
    name: str
    needs: list[str] = Field(default_factory=list, max_length=MAX_STEPS)
    retry: Retry | None = None  # default: the flow's

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not STEP_NAME.match(value):
            raise ValueError(f"{value!r} is not a step name (a letter, then letters, digits, '_' or '-')")
        return value


class EtlStep(_Step):
    type: Literal["etl"] = "etl"
    input: StorageName
    stages: list[Stage] = Field(default_factory=list, max_length=MAX_STAGES)
    output: Output
    params: dict[str, Param] = Field(default_factory=dict, max_length=1)
    incremental: bool = False

    @model_validator(mode="after")
    def _incremental_output(self) -> EtlStep:
        if self.incremental and self.params:
            raise ValueError("a parametric step cannot be incremental")
        if self.incremental:
            aggregates = [s for s in self.stages if s.kind in ("aggregate", "pivot")]
            if self.output.mode == "replace" or (aggregates and self.output.mode != "merge"):
                raise ValueError("an incremental step appends, or merges when it aggregates (by its group keys)")
            if any(s.kind == "pivot" for s in self.stages) or len(aggregates) > 1:
                raise ValueError("an incremental step may aggregate once and not pivot")
        return self

    @property
    def param(self) -> tuple[str, Param] | None:
        return next(iter(self.params.items()), None)


class PythonStep(_Step):
    type: Literal["python"]
    code: str = Field(min_length=1, max_length=1_000_000)
    timeout_seconds: float = Field(300.0, gt=0, le=86400)
    reads: list[StorageName] = Field(default_factory=list, max_length=100)  # for the graph and dependencies
    writes: list[StorageName] = Field(default_factory=list, max_length=100)


class SftpTarget(_Strict):
    kind: Literal["sftp"] = "sftp"  # the default: upload steps were SFTP-only before FTP came
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(22, ge=1, le=65535)
    user: str = Field(min_length=1, max_length=255)
    password: str | None = None
    private_key: str | None = None
    host_key: str | None = None
    path: str = Field(min_length=1, max_length=1024)  # folder and templated name: /out/sales_{date}.csv


class FtpTarget(FtpFields):
    """ftp:// or ftps:// (explicit TLS; `ca_cert` trusts a self-signed server)."""

    path: str = Field(min_length=1, max_length=1024)


def _target_kind(value: Any) -> str:
    """The tag of an upload destination: a destination without `kind` (written before FTP came) is SFTP."""
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return "ftp" if kind in ("ftp", "ftps") else "sftp"


UploadTarget = Annotated[
    Annotated[SftpTarget, Tag("sftp")] | Annotated[FtpTarget, Tag("ftp")], Discriminator(_target_kind)
]


class UploadStep(_Step):
    type: Literal["upload"]
    storage: StorageName
    columns: list[str] | None = None
    filter: str | None = None
    format: Literal["csv", "ndjson", "parquet"] = "csv"
    gzip: bool = False
    csv_separator: str = Field(",", min_length=1, max_length=1)
    destination: UploadTarget


Step = Annotated[EtlStep | PythonStep | UploadStep, Field(discriminator="type")]


class Schedule(_Strict):
    cron: str | None = None  # UTC
    every_seconds: float | None = Field(None, ge=1, le=366 * 86400)

    @model_validator(mode="after")
    def _one(self) -> Schedule:
        if (self.cron is None) == (self.every_seconds is None):
            raise ValueError("a schedule has either cron or every_seconds")
        if self.cron is not None and not croniter.is_valid(self.cron):
            raise ValueError(f"{self.cron!r} is not a cron expression")
        return self


class Flow(_Strict):
    name: StorageName  # flow names follow storage names: safe in URLs, lock keys and file names
    description: str = Field("", max_length=10_000)
    schedule: Schedule | None = None
    retry: Retry = Retry()
    steps: list[Step] = Field(min_length=1, max_length=MAX_STEPS)

    @model_validator(mode="before")
    @classmethod
    def _default_types(cls, data: Any) -> Any:
        # A step without a type is an ETL step, the common case.
        if isinstance(data, dict) and isinstance(data.get("steps"), list):
            steps = [dict(s, type="etl") if isinstance(s, dict) and "type" not in s else s for s in data["steps"]]
            return {**data, "steps": steps}
        return data

    def step(self, name: str) -> EtlStep | PythonStep | UploadStep:
        return next(s for s in self.steps if s.name == name)

    def retry_of(self, step: EtlStep | PythonStep | UploadStep) -> Retry:
        return step.retry or self.retry

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def _field_path(flow: Any, loc: tuple[Any, ...]) -> str:
    """`steps.meta.stages[1].join.on` from pydantic's ('steps', 3, 'etl', 'stages', 1, 'join', 'on')."""
    parts: list[str] = []
    items = list(loc)
    while items:
        part = items.pop(0)
        if isinstance(part, int):
            parts[-1:] = [f"{parts[-1]}[{part}]"] if parts else [f"[{part}]"]
            if parts and parts[-1].startswith("steps[") and items and items[0] in ("etl", "python", "upload"):
                items.pop(0)
            continue
        parts.append(str(part))
    path = ".".join(parts)
    steps = flow.get("steps") if isinstance(flow, dict) else None
    match = re.match(r"steps\[(\d+)\]", path)
    if match and isinstance(steps, list) and int(match.group(1)) < len(steps):
        step = steps[int(match.group(1))]
        if isinstance(step, dict) and isinstance(step.get("name"), str):
            path = f"steps.{step['name']}" + path[match.end() :]
    return path or "body"


def parse_flow(data: Any) -> Flow:
    """A validated Flow; raises FlowError naming each field at fault (by step name rather than index)."""
    try:
        return Flow.model_validate(data)
    except ValidationError as exc:
        raise FlowError(
            [{"field": _field_path(data, tuple(e["loc"])), "message": e["msg"]} for e in exc.errors()]
        ) from None


def load_text(text: bytes | str, content_type: str = "application/json") -> Any:
    """A definition's text (JSON, or YAML when the content type says so) as plain data."""
    as_yaml = "yaml" in content_type or "yml" in content_type
    try:
        if not as_yaml:
            return orjson.loads(text)
        # Aliases could make a small document expand into a huge one once serialized: a definition needs none.
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            raise FlowError([{"field": "body", "message": "YAML aliases (*name) are not accepted"}])
        return yaml.safe_load(text)
    except (yaml.YAMLError, orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        kind = "YAML" if as_yaml else "JSON"
        raise FlowError([{"field": "body", "message": f"not {kind}: {str(exc)[:300]}"}]) from None
