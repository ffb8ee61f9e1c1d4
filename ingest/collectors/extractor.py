"""What every collector source does: plan a batch, then read exactly that batch, as often as needed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from headrace.catalog import Catalog, Storage
from headrace.events import DELETE_OP, OP_FIELD
from headrace.settings import Settings
from ingest.collectors.definitions import CollectorDefinition

Records = AsyncIterator[list[dict[str, Any]]]


class SourceError(RuntimeError):
    """The source could not be read; the message says which and why (never with its credentials)."""


def is_soft_deleted(value: Any) -> bool:
    """A soft-delete column marks a row deleted when true, or when set at all (a deleted_at timestamp)."""
    return value is not None and value is not False and value != 0 and value != ""


class Extractor:
    """Plans a batch (its cursor range or files) and then reads exactly that batch, as often as needed.

    `settings` bound what it may reach (HEADRACE_OUTBOUND_ALLOW, the HTTP limits); `pool` keeps SFTP host keys.
    """

    def __init__(self, definition: CollectorDefinition, settings: Settings, pool: asyncpg.Pool) -> None:
        self.definition = definition
        self.settings = settings
        self.pool = pool
        self.observed_cursor: dict[str, Any] | None = None  # set by sources that learn the range while reading

    async def plan(self, cursor: dict[str, Any] | None) -> dict[str, Any] | None:
        """The next batch's cursor_from, cursor_to and files; None when there is nothing new."""
        raise NotImplementedError

    def extract(self, batch: dict[str, Any], catalog: Catalog, storage: Storage) -> Records:
        raise NotImplementedError

    def _deletion(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The delete event a changed record stands for in incremental-updates, else None."""
        definition = self.definition
        if definition.extract_mode != "incremental-updates":
            return None
        deleted = record.get(OP_FIELD) == DELETE_OP
        if definition.soft_delete_column is not None:
            deleted = deleted or is_soft_deleted(record.get(definition.soft_delete_column))
        if not deleted:
            return None
        return {OP_FIELD: DELETE_OP, **{k: record.get(k) for k in definition.primary_key}}
