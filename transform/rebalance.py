"""The sink's consumer-group listener: positions and caches forgotten on revocation, Postgres' positions sought on
assignment."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiokafka import ConsumerRebalanceListener, TopicPartition

from transform import metrics

if TYPE_CHECKING:
    from transform.sink import StorageSink


class Rebalance(ConsumerRebalanceListener):
    def __init__(self, sink: StorageSink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.sink.positions.forget([(tp.topic, tp.partition) for tp in revoked])
        for tp in revoked:
            # A deleted storage's topic is revoked: a storage of the same name created later is another storage.
            self.sink.forget_storage(tp.topic)
            try:
                metrics.CONSUMER_LAG.remove(
                    self.sink.topics.storage_of_ingest_topic(tp.topic), tp.topic, str(tp.partition)
                )
            except KeyError:
                pass

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.sink.seek_to_committed(list(assigned))
