"""A service mixin for services that use Kafka only to prove readiness (they hold a bare metadata client)."""

from __future__ import annotations

from aiokafka.client import AIOKafkaClient

from headrace.kafka import metadata_client
from headrace.web.service import HttpService


class KafkaProbedService(HttpService):
    """An HttpService that keeps one metadata-only Kafka client for its readiness check."""

    _probe: AIOKafkaClient | None = None

    def kafka_client(self) -> AIOKafkaClient | None:
        return self._probe

    async def start(self) -> None:
        await super().start()
        self._probe = metadata_client(self.settings)
        await self._probe.bootstrap()

    async def stop(self) -> None:
        if self._probe is not None:
            await self._probe.close()
        await super().stop()
