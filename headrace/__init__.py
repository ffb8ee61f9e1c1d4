"""Headrace: the shared package every service uses (settings, Kafka and Postgres plumbing, metrics, CLI)."""

__version__ = "0.1.0"
