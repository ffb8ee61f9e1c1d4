"""The names of every topic and consumer group Headrace uses, derived from one prefix."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    """Topic naming: `<prefix>.ingest.<storage>` carries a storage's events, `<prefix>.deadletter` what failed."""

    prefix: str = "headrace"

    def ingest(self, storage_name: str) -> str:
        return f"{self.prefix}.ingest.{storage_name}"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}.deadletter"

    @property
    def ingest_pattern(self) -> str:
        return "^" + re.escape(f"{self.prefix}.ingest.") + ".+"

    def storage_of_ingest_topic(self, topic: str) -> str:
        return topic.removeprefix(f"{self.prefix}.ingest.")

    def group(self, service: str) -> str:
        return f"{self.prefix}.{service}"
