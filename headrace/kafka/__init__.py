"""Kafka plumbing shared by the services: client factories, topic names and topic creation."""

from headrace.kafka.clients import consumer, ensure_topics, kafka_reachable, metadata_client, producer
from headrace.kafka.topics import Topics

__all__ = ["Topics", "consumer", "ensure_topics", "kafka_reachable", "metadata_client", "producer"]
