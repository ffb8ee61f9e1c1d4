"""A storage's model: column types, their widening lattice, inference from values and column naming."""

from headrace.models.identifiers import ColumnNamer
from headrace.models.inference import infer_text, infer_value
from headrace.models.model import Column, Model, ModelChange
from headrace.models.types import ColumnType, widen

__all__ = ["Column", "ColumnNamer", "ColumnType", "Model", "ModelChange", "infer_text", "infer_value", "widen"]
