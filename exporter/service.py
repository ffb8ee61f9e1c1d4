"""The exporter HTTP service."""

from __future__ import annotations

from headrace.web.kafka_probe import KafkaProbedService


class ExporterService(KafkaProbedService):
    name = "exporter"
