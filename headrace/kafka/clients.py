"""Producer and consumer factories configured from Settings, and topic creation."""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from aiokafka.helpers import create_ssl_context

from headrace.settings import Settings

log = logging.getLogger(__name__)


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context SSL and SASL_SSL connections use, from the settings' CA, client certificate and key."""
    if not settings.kafka_security_protocol.upper().endswith("SSL"):
        return None
    context: ssl.SSLContext = create_ssl_context(
        cafile=settings.kafka_ssl_cafile,
        certfile=settings.kafka_ssl_certfile,
        keyfile=settings.kafka_ssl_keyfile,
        password=settings.kafka_ssl_key_password,
    )
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def _common(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap_servers": settings.require_kafka_bootstrap(),
        "security_protocol": settings.kafka_security_protocol,
    }
    context = ssl_context(settings)
    if context is not None:
        config["ssl_context"] = context
    if settings.kafka_sasl_mechanism:
        config.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password,
        )
    return config


def producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """A producer that waits for every in-sync replica (acks=all); idempotence only when configured."""
    config = _common(settings) | {
        "acks": "all",
        "enable_idempotence": settings.kafka_enable_idempotence,
        "linger_ms": 2,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": 15000,
        "compression_type": None,
    }
    return AIOKafkaProducer(**(config | overrides))


def consumer(settings: Settings, *topics: str, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer that never commits on its own: whoever uses it decides where positions live."""
    config = _common(settings) | {
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_uncommitted",
        "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": max(1000, settings.kafka_session_timeout_ms // 3),
    }
    return AIOKafkaConsumer(*topics, **(config | overrides))


def fetcher_stopped(consumer: AIOKafkaConsumer) -> BaseException | None:
    """Why the consumer's background fetch routine has ended while the consumer still runs, or None if it has not.

    aiokafka (0.14, pinned) ends that routine on an internal assertion when an assignment changes while it cancels
    its fetches (aio-libs/aiokafka#796); the consumer then silently returns nothing for ever. Nothing public exposes
    the routine, so this reads the fetcher's task: re-check it on an upgrade.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    task = getattr(fetcher, "_fetch_task", None)
    if task is None or not task.done() or getattr(consumer, "_closed", False):
        return None
    if task.cancelled():
        return RuntimeError("the fetch routine was cancelled")
    return task.exception() or RuntimeError("the fetch routine returned")


def refresh_metadata(consumer: AIOKafkaConsumer) -> None:
    """Ask for the cluster's metadata now rather than at the next periodic refresh: a pattern subscription sees a new
    topic (and rejoins its group for it) only through metadata. aiokafka (0.14, pinned) has no public call for it,
    so this goes through the consumer's client: re-check it on an upgrade."""
    client = getattr(consumer, "_client", None)
    if client is not None and not getattr(consumer, "_closed", False):
        client.force_metadata_update()


def admin_client(settings: Settings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**_common(settings))


def metadata_client(settings: Settings) -> AIOKafkaClient:
    """A bare client for services that only need to know the cluster answers."""
    return AIOKafkaClient(**_common(settings), request_timeout_ms=5000)


async def kafka_reachable(client: AIOKafkaClient, timeout: float = 3.0) -> bool:
    """True when the cluster answers a metadata request through this client within the timeout."""
    try:
        await asyncio.wait_for(client.fetch_all_metadata(), timeout)
        return True
    except Exception:
        return False
