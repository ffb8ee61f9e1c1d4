"""Stored credentials: sealed and opened with the secret key, masked by an allowlist, redacted from free text."""

from __future__ import annotations

import pytest

from exporter.definitions import SECRETS as EXPORT_SECRETS
from exporter.definitions import ExportDefinition
from headrace.secrets import MASK, SecretBox, SecretFields, SecretKeyMismatch, is_sealed, mask_url, redact
from ingest.collectors.definitions import SECRETS as COLLECTOR_SECRETS
from ingest.collectors.definitions import CollectorDefinition


def test_a_sealed_value_opens_with_its_key_only() -> None:
    box = SecretBox("any text an operator chose, however long or short")
    sealed = box.seal("hunter2")
    assert is_sealed(sealed) and "hunter2" not in sealed
    assert box.seal("hunter2") != sealed  # a fresh nonce each time
    assert box.open(sealed) == "hunter2"
    with pytest.raises(SecretKeyMismatch, match="HEADRACE_SECRET_KEY is not the key it was encrypted with"):
        SecretBox("another key").open(sealed)
    with pytest.raises(SecretKeyMismatch):
        box.open(sealed[:-4] + "AAAA")  # tampered


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:pw@db/shop?sslmode=require", "postgresql://app:***@db/shop?sslmode=***"),
        ("postgresql://app@db:5433/shop?password=pw", "postgresql://app@db:5433/shop?password=***"),
        ("postgresql://u:p@h1:5432,h2:5433/db", "postgresql://u:***@h1:5432,h2:5433/db"),
        (
            "https://user:pw@api.example.com/v1/items?api_key=k&page=2",
            "https://***@api.example.com/v1/items?api_key=***&page=***",
        ),
        ("https://ghp_token@api.example.com/x", "https://***@api.example.com/x"),
        ("https://api.example.com/x?token#access_token=t", "https://api.example.com/x?***#***"),
        ("sftp://ftp@files.example.com:22/in", "sftp://ftp@files.example.com:22/in"),
        ("not a url with password", MASK),
        ("http://[::1", MASK),
    ],
)
def test_urls_are_shown_without_credentials_or_query_values(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_free_text_is_redacted() -> None:
    text = (
        "GET http://user:pw@127.0.0.1:8000/items?api_key=K1: 500; retry postgresql://app:pw2@db/x?sslmode=s."
        " conninfo host=db password=pw3 user=app"
    )
    redacted = redact(text)
    assert not any(secret in redacted for secret in ("pw@", "K1", "pw2", "pw3", "=s."))
    assert "http://***@127.0.0.1:8000/items?api_key=***: 500" in redacted
    assert "postgresql://app:***@db/x?sslmode=***." in redacted
    assert redact("nothing to hide here") == "nothing to hide here"


def test_showing_is_an_allowlist() -> None:
    fields = SecretFields(sealed=frozenset(), shown=frozenset({"kind", "port"}), headers=frozenset({"headers"}))
    shown = fields.mask(
        {
            "kind": "x",
            "port": 22,
            "new_field": "surprise",
            "flag": False,
            "unset": None,
            "nested": {"kind": "y", "token": "t"},
            "headers": {"Accept": "application/json", "X-Api-Key": "k", "Cookie": "c"},
        }
    )
    assert shown == {
        "kind": "x",
        "port": 22,
        "new_field": MASK,
        "flag": MASK,
        "unset": None,
        "nested": {"kind": "y", "token": MASK},
        "headers": {"Accept": "application/json", "X-Api-Key": MASK, "Cookie": MASK},
    }


def test_every_definition_field_is_either_shown_or_a_secret() -> None:
    """A field added to a definition is masked until someone lists it: this says which ones are, so it is a choice."""
    collector = CollectorDefinition.model_validate(
        {
            "name": "c",
            "storage": "s",
            "source": {"kind": "http", "url": "https://u:p@api.example.com/x?k=v", "headers": {"X-Api-Key": "k"}},
        }
    ).model_dump(mode="json")
    shown = COLLECTOR_SECRETS.mask(collector)
    masked = {k for k, v in shown["source"].items() if v == MASK} | {k for k, v in shown.items() if v == MASK}
    assert masked == set()
    assert shown["source"]["url"] == "https://***@api.example.com/x?k=***"
    assert shown["source"]["headers"] == {"X-Api-Key": MASK}
    export = ExportDefinition.model_validate(
        {"name": "e", "sources": ["s"], "destination": {"kind": "sftp", "host": "h", "user": "u", "password": "pw"}}
    ).model_dump(mode="json")
    shown = EXPORT_SECRETS.mask(export)
    assert [k for k, v in shown["destination"].items() if v == MASK] == ["password"]
    assert [k for k, v in shown.items() if v == MASK] == []


def test_definitions_are_sealed_field_by_field() -> None:
    box = SecretBox("k")
    definition = CollectorDefinition.model_validate(
        {
            "name": "c",
            "storage": "s",
            "source": {"kind": "http", "url": "https://api.example.com/?api_key=K", "headers": {"X-Api-Key": "H"}},
        }
    ).model_dump(mode="json")
    sealed = COLLECTOR_SECRETS.seal(definition, box)
    assert "api_key=K" not in str(sealed) and "'H'" not in str(sealed)
    assert sealed["source"]["pagination"] == "none" and is_sealed(sealed["source"]["headers"]["X-Api-Key"])
    assert not COLLECTOR_SECRETS.in_clear(sealed) and COLLECTOR_SECRETS.in_clear(definition)
    assert COLLECTOR_SECRETS.open(sealed, box) == definition
    assert COLLECTOR_SECRETS.open(definition, box) == definition  # a row from before sealing reads as it was


def test_a_definition_sent_back_as_shown_keeps_its_credentials() -> None:
    from ingest.collectors.definitions import SECRETS as COLLECTOR_SECRETS

    stored = {
        "source": {
            "kind": "http",
            "url": "https://user:pw@api.example.com/orders?api_key=k1",
            "headers": {"X-Api-Key": "secret-1", "Accept": "application/json"},
        },
        "storage": "orders",
    }
    shown = COLLECTOR_SECRETS.mask(stored)
    assert "pw" not in str(shown) and "secret-1" not in str(shown) and "k1" not in str(shown)
    edited = shown | {"storage": "orders2"}
    edited["source"] = shown["source"] | {"headers": shown["source"]["headers"] | {"X-New": "n"}}
    kept = COLLECTOR_SECRETS.keep_masked(edited, stored)
    assert kept["storage"] == "orders2"
    assert kept["source"]["url"] == stored["source"]["url"]
    assert kept["source"]["headers"] == {"X-Api-Key": "secret-1", "Accept": "application/json", "X-New": "n"}
    # A credential actually changed is taken as given.
    edited["source"] = edited["source"] | {"url": "https://api.example.com/v2"}
    assert COLLECTOR_SECRETS.keep_masked(edited, stored)["source"]["url"] == "https://api.example.com/v2"
