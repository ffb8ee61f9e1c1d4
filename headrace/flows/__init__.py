"""Dataflows: definitions, validation, the DAG, step compilation to SQL and planning; imports no service."""
