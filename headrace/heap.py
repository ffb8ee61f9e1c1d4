"""The garbage collector's one tuning, which every service applies once it has started."""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Move what start-up made (modules, clients, caches: alive as long as the process) out of the collector's sight,
    so the young objects every request or poll makes are collected without walking it again and again. Measured on
    ingest's single push: p99 from ~75 ms to ~20 ms."""
    gc.collect()
    gc.freeze()
