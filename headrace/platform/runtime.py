"""The runtime record `<data dir>/runtime.json`: where the running platform is and how its processes fare."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from headrace.settings import runtime_path


def write_runtime(data_dir: Path, record: dict[str, Any]) -> None:
    """Replace the record atomically, readable by its owner only (it holds no password, but what runs where)."""
    path = runtime_path(data_dir)
    scratch = path.with_suffix(".json.tmp")
    with os.fdopen(os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as file:
        # A scratch file left by a killed supervisor keeps its old mode through os.open: set it anyway.
        os.fchmod(file.fileno(), 0o600)
        file.write(orjson.dumps(record, option=orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z))
    # Readers (`headrace status`) see the old record or the new one, never half of one.
    os.replace(scratch, path)


def read_runtime(data_dir: Path) -> dict[str, Any] | None:
    """The record of the platform running from this data dir; None when there is none or its supervisor is gone."""
    path = runtime_path(data_dir)
    try:
        record = orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
    if not isinstance(record, dict):
        return None
    pid = record.get("pid")
    if not pid or not Path(f"/proc/{pid}").exists():
        return None
    return record


def remove_runtime(data_dir: Path) -> None:
    runtime_path(data_dir).unlink(missing_ok=True)
