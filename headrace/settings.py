"""One typed settings object for every service and the CLI, read from HEADRACE_* environment variables."""

from __future__ import annotations

from pathlib import Path

import orjson
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES = ("ingest", "schema-registry", "transform", "exporter")
RUNTIME_FILE = "runtime.json"


class Settings(BaseSettings):
    """Configuration of a Headrace process; every field is HEADRACE_<FIELD> in the environment."""

    model_config = SettingsConfigDict(env_prefix="HEADRACE_", extra="ignore")

    data_dir: Path = Field(Path(".headrace"), description="Where `headrace up` keeps embedded Postgres data")
    kafka_bootstrap: str | None = Field(
        None, description="Kafka bootstrap servers; unset: `headrace up` runs the embedded Tansu broker"
    )
    kafka_enable_idempotence: bool = Field(
        False, description="Idempotent producers (real Kafka only; the embedded broker lacks them)"
    )
    kafka_security_protocol: str = Field("PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    kafka_sasl_mechanism: str | None = Field(None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_topic_partitions: int = Field(4, description="Partitions of each topic Headrace creates")
    kafka_replication_factor: int = Field(1, description="Replication factor of each topic Headrace creates")
    kafka_fetch_max_wait_ms: int = Field(
        50, description="Longest a consumer's fetch waits for data (bounds push-to-row latency)"
    )
    kafka_session_timeout_ms: int = Field(
        6000, description="Consumer group session timeout; joining a group takes about half of it on Tansu"
    )
    topic_prefix: str = Field("headrace", description="Prefix of every topic and consumer group")

    database_url: str | None = Field(
        None, description="Postgres DSN; unset: `headrace up` runs an embedded Postgres in the data dir"
    )
    database_pool_size: int = Field(10, description="Connections per service pool")

    host: str = Field("127.0.0.1", description="Address the services listen on")
    public_url: str | None = Field(
        None, description="Base URL push URLs are built on (default: the ingest service's own URL)"
    )
    admin_token: str | None = Field(
        None, description="When set, the management API (/api/storages…) requires `Authorization: Bearer <token>`"
    )
    max_columns: int = Field(1000, description="Columns per storage before new fields go to `_overflow`")
    ingest_port: int = 8080
    schema_registry_port: int = 8081
    transform_port: int = 8082
    exporter_port: int = 8083

    ingest_max_body_bytes: int = Field(
        10 * 1024 * 1024, description="Largest push body, in bytes, counted both as sent and after gunzip"
    )
    ingest_in_flight_bytes: int = Field(
        64 * 1024 * 1024, description="Body bytes ingest holds at once across requests; past it pushes get 429"
    )
    ingest_produce_timeout_ms: int = Field(
        5000, description="Longest wait for Kafka to acknowledge a push's events before answering 503"
    )
    ingest_cache_seconds: float = Field(5.0, description="How long ingest caches a storage, its tokens and model")

    transform_batch_max_rows: int = Field(5000, description="Rows per Postgres write batch, at most")
    transform_batch_max_ms: int = Field(200, description="Longest wait to fill a write batch, in ms")

    exporter_scheduler: bool = Field(
        True, description="Whether the exporter service starts runs at frequency boundaries"
    )
    exporter_spool_dir: Path | None = Field(
        None, description="Where export runs spool their gzip files before upload (default: the system temp dir)"
    )

    collector_scheduler: bool = Field(True, description="Whether the ingest service runs collectors on their schedules")
    collector_poll_seconds: float = Field(5.0, description="How often the collector scheduler looks for due collectors")
    collector_test_pause_seconds: float = Field(
        0.0,
        description="Test hook: a collector run sleeps this long after Kafka acked a batch, before its cursor moves",
    )

    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_format: str = Field("json", description="json (one object per line) or console")

    def service_port(self, service: str) -> int:
        return int(getattr(self, f"{service.replace('-', '_')}_port"))

    def service_url(self, service: str) -> str:
        return f"http://{self.host}:{self.service_port(service)}"

    @property
    def push_base_url(self) -> str:
        return (self.public_url or self.service_url("ingest")).rstrip("/")

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError("no database: set HEADRACE_DATABASE_URL, or start the platform with `headrace up` first")
        return self.database_url

    def require_kafka_bootstrap(self) -> str:
        if not self.kafka_bootstrap:
            raise RuntimeError("no Kafka: set HEADRACE_KAFKA_BOOTSTRAP, or start the platform with `headrace up` first")
        return self.kafka_bootstrap


def runtime_path(data_dir: Path) -> Path:
    return data_dir / RUNTIME_FILE


def load_settings(data_dir: Path | None = None) -> Settings:
    """Settings from the environment, completed by what a running `headrace up` recorded in its data dir.

    The environment wins, so a CLI pointed at a real cluster never picks up a stale local platform.
    """
    settings = Settings() if data_dir is None else Settings(data_dir=data_dir)
    recorded = runtime_path(settings.data_dir)
    if recorded.exists():
        runtime = orjson.loads(recorded.read_bytes())
        overrides = {
            key: value for key, value in runtime.get("settings", {}).items() if key not in settings.model_fields_set
        }
        if overrides:
            settings = settings.model_copy(update=overrides)
    return settings
