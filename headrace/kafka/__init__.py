"""Kafka plumbing shared by the services: client factories, topic names and topic creation."""

from headrace.kafka.admin import create_topics, delete_topics, ensure_topics
from headrace.kafka.clients import admin_client, consumer, kafka_reachable, metadata_client, producer
from headrace.kafka.topics import Topics

__all__ = [
    "Topics",
    "admin_client",
    "consumer",
    "create_topics",
    "delete_topics",
    "ensure_topics",
    "kafka_reachable",
    "metadata_client",
    "producer",
]
