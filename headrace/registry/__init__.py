"""The schema registry's core: Avro schema parsing, compatibility rules and the Postgres store."""

from headrace.registry.errors import RegistryError
from headrace.registry.store import delete_storage_subject, register_storage_model, storage_subject

__all__ = ["RegistryError", "delete_storage_subject", "register_storage_model", "storage_subject"]
