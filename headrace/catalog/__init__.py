"""The catalog of storages in Postgres: storages, push tokens, model versions and their tables."""

from headrace.catalog.storages import (
    Catalog,
    InvalidStorageName,
    Storage,
    StorageExists,
    StorageNotFound,
    validate_storage_name,
)

__all__ = [
    "Catalog",
    "InvalidStorageName",
    "Storage",
    "StorageExists",
    "StorageNotFound",
    "validate_storage_name",
]
