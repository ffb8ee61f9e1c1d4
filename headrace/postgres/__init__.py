"""Postgres plumbing shared by the services: the connection pool, migrations and identifier quoting."""

from headrace.postgres.migrations import migrate
from headrace.postgres.pool import create_pool, postgres_reachable, quote_ident

__all__ = ["create_pool", "migrate", "postgres_reachable", "quote_ident"]
