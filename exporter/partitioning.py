"""Partitioning by UTC event time, and the seed's file names: S3 folders `date=/hour=/min=` or file-server prefixes."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

# Epoch numbers above this are taken as milliseconds (it is 5138 AD in seconds).
MILLIS_FROM = 100_000_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Derived names are uuid5 in this namespace, so a retried run gets exactly the same names.
NAMESPACE = uuid.UUID("5d0f4f0c-8a7b-4e55-9a43-2f6f1e5c0b21")


def parse_event_time(value: Any) -> datetime | None:
    """The UTC instant a value stands for, or None: ISO-8601 text (naive means UTC), a date, or epoch s/ms."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, (int, float)):
        seconds = value / 1000 if abs(value) >= MILLIS_FROM else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    else:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True, order=True)
class Interval:
    """One partition: a date, and the hour and minute range when the level asks; date None is `unknown`."""

    date: str | None
    hour: str | None = None
    minutes: str | None = None  # "00-15", "30-60", …

    @property
    def key(self) -> str:
        return "/".join(p for p in (self.date or "unknown", self.hour, self.minutes) if p)

    def s3_folder(self) -> str:
        parts = [f"date={self.date or 'unknown'}"]
        if self.hour is not None:
            parts.append(f"hour={self.hour}")
        if self.minutes is not None:
            parts.append(f"min={self.minutes}")
        return "/".join(parts)

    def name_prefix(self) -> str:
        if self.date is None:
            return "unknown"
        return "_".join(p for p in (self.date, self.hour, self.minutes) if p is not None)


# Rows whose event time is missing or unparseable are never dropped: they go to the `unknown` interval,
# `…/data/date=unknown/…` on S3 and `<export>_unknown_data_…` on SFTP and FTP.
UNKNOWN = Interval(None)

_MINUTE_SPAN = {"half-hour": 30, "quarter-hour": 15}


def interval_of(moment: datetime | None, level: str) -> Interval:
    """The interval of a UTC moment at a partition level (date, hour, half-hour, quarter-hour)."""
    if moment is None:
        return UNKNOWN
    day = moment.strftime("%Y-%m-%d")
    if level == "date":
        return Interval(day)
    hour = f"{moment.hour:02d}"
    span = _MINUTE_SPAN.get(level)
    if span is None:
        return Interval(day, hour)
    start = moment.minute // span * span
    return Interval(day, hour, f"{start:02d}-{start + span:02d}")


def interval_at(micros: int, level: str) -> Interval:
    """The interval of a moment given as microseconds since the epoch (how the shaping step groups rows)."""
    return interval_of(EPOCH + timedelta(microseconds=micros), level)


def file_guid(export_id: uuid.UUID, run_key: str, interval: Interval) -> uuid.UUID:
    """The guid of an interval's files in one run; the same export, range and interval always give the same one."""
    return uuid.uuid5(NAMESPACE, f"{export_id}|{run_key}|{interval.key}")


@dataclass(frozen=True)
class Layout:
    """Where an export's files and reports go on its destination (S3 keys, or SFTP and FTP paths)."""

    kind: str  # "s3", or a file server's "sftp", "ftp", "ftps"
    folder: str
    export_name: str

    def _join(self, name: str) -> str:
        # A file server's folder may be absolute; an S3 key never starts with a slash.
        folder = self.folder.strip("/") if self.kind == "s3" else self.folder.rstrip("/")
        return f"{folder}/{name}" if folder else name

    def data_file(self, interval: Interval, guid: uuid.UUID, number: int, suffix: str) -> str:
        """A data file's name; suffix is the whole extension (`csv.gz`, `json.gz`, `parquet`)."""
        leaf = f"data_{guid}_{number:03d}_0_0.{suffix}"
        if self.kind == "s3":
            return self._join(f"{self.export_name}/data/{interval.s3_folder()}/{leaf}")
        # File servers (SFTP, FTP) may not let us create folders, so the interval travels in the file name.
        return self._join(f"{self.export_name}_{interval.name_prefix()}_{leaf}")

    def report(self, stamp: str) -> str:
        return self._report_base(stamp) + "_delivery.report"

    def manifest(self, stamp: str) -> str:
        return self._report_base(stamp) + "_delivery.manifest.json"

    def _report_base(self, stamp: str) -> str:
        if self.kind == "s3":
            return self._join(f"{self.export_name}/{stamp}")
        return self._join(f"{self.export_name}_{stamp}")


def report_stamp(moment: datetime) -> str:
    """The `<timestamp>` of a report name: UTC, sortable, to the millisecond."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%S") + f"{moment.microsecond // 1000:03d}Z"


def parse_period(start: str, end: str) -> tuple[datetime, datetime]:
    """A regeneration period [from, to) in UTC; a date-only `to` includes that whole day, as the seed's Y does."""

    def moment(text: str, name: str) -> tuple[datetime, bool]:
        text = text.strip()
        try:
            if len(text) == 10:
                return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC), True
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"--{name}: {text!r} is not an ISO-8601 date or date-time") from None
        return (parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)), False

    begin, _ = moment(start, "from")
    finish, whole_day = moment(end, "to")
    if whole_day:
        finish += timedelta(days=1)
    if finish <= begin:
        raise ValueError("the period ends before it starts")
    return begin, finish
