"""Streaming ETL configured without code: a formula language checked against an allowlist, and per-record steps."""

from headrace.etl.config import Dropped, EtlConfig
from headrace.etl.expressions import FUNCTIONS, EvaluationError, FormulaError, evaluate, parse

__all__ = ["FUNCTIONS", "Dropped", "EtlConfig", "EvaluationError", "FormulaError", "evaluate", "parse"]
