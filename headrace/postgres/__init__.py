"""Postgres plumbing shared by the services: the connection pool, migrations and identifier quoting."""

from headrace.postgres.migrations import migrate
from headrace.postgres.pool import Connection, connect, create_pool, postgres_reachable, quote_ident

__all__ = ["Connection", "connect", "create_pool", "migrate", "postgres_reachable", "quote_ident"]
