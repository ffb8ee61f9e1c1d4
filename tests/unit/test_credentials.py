"""Credentials of `headrace up`: secret files made 0600 and never replaced, URLs masked, the CLI's DSN composed."""

from __future__ import annotations

import stat
from pathlib import Path

import orjson
import pytest
import yaml

from headrace.platform.credentials import MASK, kept_secret, mask_url
from headrace.settings import POSTGRES_PASSWORD_FILE, RUNTIME_FILE, load_settings, url_with_password

REPO = Path(__file__).resolve().parents[2]


def test_a_secret_is_made_once_with_mode_0600_and_then_kept(tmp_path: Path) -> None:
    path = tmp_path / "dir" / "admin-token"
    value, made = kept_secret(path)
    assert made and len(value) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)  # widened by hand: narrowed again when read
    assert kept_secret(path) == (value, False)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("")
    with pytest.raises(RuntimeError, match="is empty"):
        kept_secret(path)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://postgres:s3cr%2Ft@127.0.0.1:5433/headrace",
            f"postgresql://postgres:{MASK}@127.0.0.1:5433/headrace",
        ),
        ("postgresql://u@h/db?password=s3cret&sslmode=require", f"postgresql://u@h/db?password={MASK}&sslmode=require"),
        ("host=h password='s3 cret' dbname=d", f"host=h password={MASK} dbname=d"),
        ("postgresql://postgres@127.0.0.1:5433/headrace", "postgresql://postgres@127.0.0.1:5433/headrace"),
        ("127.0.0.1:9092", "127.0.0.1:9092"),
    ],
)
def test_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_the_cli_adds_the_embedded_postgres_password_to_the_recorded_dsn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HEADRACE_DATABASE_URL", "HEADRACE_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    recorded = "postgresql://postgres@127.0.0.1:5433/headrace"
    record = {"settings": {"database_url": recorded}, "postgres": {"embedded": True}}
    (tmp_path / RUNTIME_FILE).write_bytes(orjson.dumps(record))
    (tmp_path / POSTGRES_PASSWORD_FILE).write_text("p/w:1\n")
    assert load_settings(tmp_path).database_url == "postgresql://postgres:p%2Fw%3A1@127.0.0.1:5433/headrace"
    assert url_with_password(recorded, "p/w:1") == load_settings(tmp_path).database_url
    # HEADRACE_DATABASE_URL wins over the local platform's record.
    monkeypatch.setenv("HEADRACE_DATABASE_URL", "postgresql://other@db/x")
    assert load_settings(tmp_path).database_url == "postgresql://other@db/x"


def test_compose_takes_its_secrets_from_the_environment_and_publishes_only_ingest_to_all() -> None:
    compose = yaml.safe_load((REPO / "infra" / "compose.yaml").read_text())
    services = compose["services"]
    for name in ("ingest", "schema-registry", "transform", "exporter", "console"):
        env = services[name]["environment"]
        assert env["HEADRACE_ADMIN_TOKEN"].startswith("${HEADRACE_ADMIN_TOKEN:?")
        assert env["HEADRACE_SECRET_KEY"].startswith("${HEADRACE_SECRET_KEY:?")
        assert "${POSTGRES_PASSWORD:?" in env["HEADRACE_DATABASE_URL"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    published = {name: service["ports"] for name, service in services.items() if "ports" in service}
    # Applications push from anywhere; the console is for the operator on the host itself.
    assert published == {"ingest": ["8080:8080"], "console": ["127.0.0.1:8084:8084"]}
