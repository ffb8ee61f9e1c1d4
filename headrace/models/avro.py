"""A storage's model as an Avro record schema: the form the schema registry keeps for every model version.

Every column becomes a nullable field `["null", T]` with default null, since any row may lack any field.
Column keys are arbitrary JSON keys, but Avro names are `[A-Za-z_][A-Za-z0-9_]*`, so each key gets an
Avro-safe field name (other characters become `_`, a leading digit gets a `_` prefix, collisions get
`_2`, `_3`, …) and the original key travels in the field attribute `headrace.key`. Names are assigned in
column order and columns are only ever appended, so a column keeps its field name across versions.
"""

from __future__ import annotations

import re
from typing import Any

from headrace.models.model import Model

NAMESPACE = "headrace.storage"
KEY_ATTRIBUTE = "headrace.key"
STORAGE_ATTRIBUTE = "headrace.storage"

AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NOT_NAME_CHARACTER = re.compile(r"[^A-Za-z0-9_]")


def avro_name(text: str) -> str:
    """The Avro name closest to text: invalid characters become `_`, a leading digit gets a `_` prefix."""
    name = _NOT_NAME_CHARACTER.sub("_", text) or "_"
    if name[0].isdigit():
        name = "_" + name
    return name


def record_name(storage_name: str) -> str:
    """The record name of a storage's schema (storage names allow `-`, Avro names do not)."""
    return avro_name(storage_name)


def field_names(keys: list[str]) -> list[str]:
    """Unique Avro field names for these keys, in order."""
    taken: set[str] = set()
    names = []
    for key in keys:
        base = avro_name(key)
        name, suffix = base, 2
        while name in taken:
            name = f"{base}_{suffix}"
            suffix += 1
        taken.add(name)
        names.append(name)
    return names


def model_schema(storage_name: str, model: Model) -> dict[str, Any]:
    """The Avro record schema of one model version of a storage."""
    names = field_names([c.key for c in model.columns])
    fields = [
        {"name": name, "type": ["null", column.type.avro], "default": None, KEY_ATTRIBUTE: column.key}
        for name, column in zip(names, model.columns, strict=True)
    ]
    return {
        "type": "record",
        "name": record_name(storage_name),
        "namespace": NAMESPACE,
        "doc": f"Rows of the Headrace storage {storage_name}",
        STORAGE_ATTRIBUTE: storage_name,
        "fields": fields,
    }


def field_keys(schema: dict[str, Any]) -> dict[str, str]:
    """Avro field name -> original key, for the fields of a record schema that carry one."""
    return {f["name"]: f[KEY_ATTRIBUTE] for f in schema.get("fields", ()) if KEY_ATTRIBUTE in f}
