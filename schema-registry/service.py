"""The schema-registry HTTP service."""

from __future__ import annotations

from headrace.web.kafka_probe import KafkaProbedService


class SchemaRegistryService(KafkaProbedService):
    name = "schema-registry"
