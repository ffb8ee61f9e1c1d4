"""One typed settings object for every service and the CLI, read from HEADRACE_* environment variables."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import orjson
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES = ("ingest", "schema-registry", "transform", "exporter", "console")
RUNTIME_FILE = "runtime.json"
# Credentials `headrace up` generates on first start, kept in the data dir (mode 0600) for the CLI to find.
ADMIN_TOKEN_FILE = "admin-token"
SECRET_KEY_FILE = "secret-key"
# The embedded Postgres superuser's password: runtime.json records its DSN without it, the CLI adds it from here.
POSTGRES_PASSWORD_FILE = "postgres-password"


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
    kafka_ssl_cafile: str | None = Field(None, description="CA bundle that signs the brokers' certificates (SSL)")
    kafka_ssl_certfile: str | None = Field(None, description="Client certificate, for brokers that ask for one")
    kafka_ssl_keyfile: str | None = Field(None, description="The client certificate's private key")
    kafka_ssl_key_password: str | None = Field(None, description="Password of the private key, if it has one")
    kafka_ssl_check_hostname: bool = Field(True, description="Check that the broker's certificate names its host")
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
        None,
        description="Token every management and data route requires (Bearer, or HTTP Basic password); unset: the one"
        " `headrace up` generated in the data dir",
    )
    secret_key: str | None = Field(
        None,
        description="Key that encrypts stored credentials (collectors, exports); unset: the one `headrace up`"
        " generated in the data dir",
    )
    outbound_allow: str = Field(
        "",
        description="Hosts and networks (comma-separated names, addresses or CIDRs) collectors and exports may reach"
        " although they are private, loopback or link-local",
    )
    max_columns: int = Field(1000, description="Columns per storage before new fields go to `_overflow`")
    ingest_port: int = 8080
    schema_registry_port: int = 8081
    transform_port: int = 8082
    exporter_port: int = 8083
    console_port: int = 8084
    # Where clients (the CLI, headrace.client, `headrace status`) reach each service; unset: http://host:port.
    ingest_url: str | None = Field(None, description="ingest's URL for clients; unset: http://HOST:INGEST_PORT")
    schema_registry_url: str | None = Field(None, description="The registry's URL for clients")
    transform_url: str | None = Field(None, description="transform's URL for clients (health and metrics)")
    exporter_url: str | None = Field(None, description="The exporter's URL for clients")
    console_url: str | None = Field(None, description="The web console's URL (the one `headrace up` prints)")

    ingest_max_body_bytes: int = Field(
        10 * 1024 * 1024, description="Largest push body, in bytes, counted both as sent and after gunzip"
    )
    ingest_in_flight_bytes: int = Field(
        256 * 1024 * 1024,
        description="Memory requests may hold at once (bodies, parsed values, events until acked); past it: 429",
    )
    ingest_max_events: int = Field(
        50_000, description="Events one push may hold (JSON array elements or NDJSON lines); past it: 413"
    )
    ingest_read_timeout_seconds: float = Field(
        30.0, description="Longest a push's body may take to arrive (each read of a /batches body); past it: 408"
    )
    ingest_max_batch_bytes: int = Field(
        1024 * 1024 * 1024, description="Largest /batches body, in bytes, counted both as sent and after gunzip"
    )
    ingest_produce_timeout_ms: int = Field(
        5000, description="Longest wait for Kafka to acknowledge a push's events before answering 503"
    )
    ingest_cache_seconds: float = Field(5.0, description="How long ingest caches a storage, its tokens and model")

    transform_batch_max_rows: int = Field(5000, description="Rows per Postgres write batch, at most")
    transform_batch_max_ms: int = Field(200, description="Longest wait to fill a write batch, in ms")
    transform_fast_path: bool = Field(
        True, description="Write polls that fit the model as they are column-wise; off, every poll takes the row path"
    )
    dedupe_window_hours: float = Field(
        48.0, gt=0, description="How long an event id is remembered, so a copy sent again is written once"
    )
    batch_complete_timeout_seconds: float = Field(
        600.0, gt=0, description="How long a batch may stay short of its announced rows after its end marker"
    )

    exporter_scheduler: bool = Field(
        True, description="Whether the exporter service starts runs at frequency boundaries"
    )
    exporter_spool_dir: Path | None = Field(
        None, description="Where export runs spool their gzip files before upload (default: the system temp dir)"
    )

    collector_scheduler: bool = Field(True, description="Whether the ingest service runs collectors on their schedules")
    collector_poll_seconds: float = Field(5.0, description="How often the collector scheduler looks for due collectors")
    collector_http_max_bytes: int = Field(
        50 * 1024 * 1024, gt=0, description="Largest response an HTTP JSON API source may send for one page, in bytes"
    )
    collector_http_timeout_seconds: float = Field(
        30.0, gt=0, description="Longest one request of an HTTP JSON API source may take, its body read included"
    )
    file_store_timeout_seconds: float = Field(
        60.0,
        gt=0,
        description="Longest an SFTP, FTP or FTPS server may take to answer: connecting, an operation, a chunk",
    )
    collector_test_pause_seconds: float = Field(
        0.0,
        description="Test hook: a collector run sleeps this long after Kafka acked a batch, before its cursor moves",
    )

    flow_scheduler: bool = Field(True, description="Whether the transform service runs flows on their schedules")
    flow_poll_seconds: float = Field(1.0, gt=0, description="How often the flow scheduler looks for due flows")
    flow_test_pause_seconds: float = Field(
        0.0, ge=0, description="Test hook: an ETL step sleeps this long inside each transaction before it commits"
    )

    stop_drain_seconds: float = Field(
        10.0,
        description="On Ctrl-C/SIGTERM, how long `headrace up` lets transform write what the embedded broker holds",
    )
    broker_memory_warn_mb: int | None = Field(
        None,
        description="Embedded broker RSS (MiB) past which `headrace up` warns; unset: a quarter of its RSS plus the "
        "machine's available memory",
    )
    broker_memory_check_seconds: float = Field(
        30.0, description="How often `headrace up` checks the embedded broker's memory"
    )

    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR")
    log_format: str = Field("json", description="json (one object per line) or console")

    def service_port(self, service: str) -> int:
        return int(getattr(self, f"{service.replace('-', '_')}_port"))

    def service_url(self, service: str) -> str:
        given = getattr(self, f"{service.replace('-', '_')}_url")
        return given.rstrip("/") if given else f"http://{self.host}:{self.service_port(service)}"

    @property
    def push_base_url(self) -> str:
        return (self.public_url or self.service_url("ingest")).rstrip("/")

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError(
                "no database: set HEADRACE_DATABASE_URL (the one `headrace up` was given, if it was: its password is"
                " not recorded), or start the platform with `headrace up` first"
            )
        return self.database_url

    def require_admin_token(self) -> str:
        if not self.admin_token:
            raise RuntimeError(
                "no admin token: set HEADRACE_ADMIN_TOKEN, or start the platform with `headrace up`, which makes one"
            )
        return self.admin_token

    def require_secret_key(self) -> str:
        if not self.secret_key:
            raise RuntimeError(
                "no secret key for stored credentials: set HEADRACE_SECRET_KEY, or start the platform with"
                " `headrace up`, which makes one"
            )
        return self.secret_key

    def require_kafka_bootstrap(self) -> str:
        if not self.kafka_bootstrap:
            raise RuntimeError("no Kafka: set HEADRACE_KAFKA_BOOTSTRAP, or start the platform with `headrace up` first")
        return self.kafka_bootstrap


def runtime_path(data_dir: Path) -> Path:
    return data_dir / RUNTIME_FILE


def url_with_password(url: str, password: str) -> str:
    """The DSN with `password` as its user's password (URL-quoted)."""
    parts = urlsplit(url)
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]  # as the URL spells it, quoted already
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


def read_kept(path: Path) -> str | None:
    """A credential kept in a file of the data dir; None when there is none."""
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def load_settings(data_dir: Path | None = None) -> Settings:
    """Settings from the environment, completed by what a running `headrace up` recorded in its data dir.

    The environment wins, so a CLI pointed at a real cluster never picks up a stale local platform.
    """
    settings = Settings() if data_dir is None else Settings(data_dir=data_dir)
    for field, name in (("admin_token", ADMIN_TOKEN_FILE), ("secret_key", SECRET_KEY_FILE)):
        kept = read_kept(settings.data_dir / name)
        if getattr(settings, field) is None and kept is not None:
            settings = settings.model_copy(update={field: kept})
    recorded = runtime_path(settings.data_dir)
    if recorded.exists():
        runtime = orjson.loads(recorded.read_bytes())
        overrides = {
            key: value for key, value in runtime.get("settings", {}).items() if key not in settings.model_fields_set
        }
        # runtime.json holds no password: the embedded Postgres' one is in its own file.
        password = read_kept(settings.data_dir / POSTGRES_PASSWORD_FILE)
        if overrides.get("database_url") and runtime.get("postgres", {}).get("embedded") and password:
            overrides["database_url"] = url_with_password(overrides["database_url"], password)
        if overrides:
            settings = settings.model_copy(update=overrides)
    return settings
