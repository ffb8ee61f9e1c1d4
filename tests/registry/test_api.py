"""The Confluent Schema Registry REST API, driven by confluent-kafka's own SchemaRegistryClient over HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from tests.conftest import TEST_ADMIN_TOKEN

V1 = json.dumps({"type": "record", "name": "User", "fields": [{"name": "name", "type": "string"}]})
V2_DEFAULT = json.dumps(
    {
        "type": "record",
        "name": "User",
        "fields": [{"name": "name", "type": "string"}, {"name": "age", "type": "int", "default": 0}],
    }
)
V2_NO_DEFAULT = json.dumps(
    {"type": "record", "name": "User", "fields": [{"name": "name", "type": "string"}, {"name": "age", "type": "int"}]}
)


def avro(text: str) -> Schema:
    return Schema(text, "AVRO")


def http(
    registry_url: str, method: str, path: str, body: Any = None, content_type: str | None = None
) -> tuple[int, dict[str, str], Any]:
    """A raw request, for what the client library does not expose (headers, malformed input)."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(registry_url + path, data=data, method=method)
    request.add_header("Content-Type", content_type or "application/vnd.schemaregistry.v1+json")
    request.add_header("Authorization", f"Bearer {TEST_ADMIN_TOKEN}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read())


def error_of(call: Any, *args: Any, **kwargs: Any) -> tuple[int, int]:
    with pytest.raises(SchemaRegistryError) as caught:
        call(*args, **kwargs)
    return caught.value.http_status_code, caught.value.error_code


def test_register_look_up_and_fetch(client: SchemaRegistryClient, registry_url: str, subject: str) -> None:
    schema_id = client.register_schema(subject, avro(V1))
    assert client.register_schema(subject, avro(V1)) == schema_id  # the same schema is not a new version
    assert json.loads(client.get_schema(schema_id).schema_str) == json.loads(V1)

    found = client.lookup_schema(subject, avro(V1))
    assert (found.schema_id, found.version, found.subject) == (schema_id, 1, subject)

    v2_id = client.register_schema(subject, avro(V2_DEFAULT))
    assert v2_id != schema_id
    assert client.get_versions(subject) == [1, 2]
    latest = client.get_latest_version(subject)
    assert (latest.version, latest.schema_id) == (2, v2_id)
    assert json.loads(latest.schema.schema_str) == json.loads(V2_DEFAULT)
    assert client.get_version(subject, 1).schema_id == schema_id
    assert subject in client.get_subjects()

    # The same schema under another subject keeps its id.
    other = f"other-{subject}"
    fresh = SchemaRegistryClient({"url": registry_url, "basic.auth.user.info": f"headrace:{TEST_ADMIN_TOKEN}"})
    assert fresh.register_schema(other, avro(V1)) == schema_id
    versions = {(v.subject, v.version) for v in fresh.get_schema_versions(schema_id)}
    assert versions == {(subject, 1), (other, 1)}


@pytest.mark.parametrize(
    ("mode", "new", "compatible"),
    [
        ("BACKWARD", V2_NO_DEFAULT, False),
        ("FORWARD", V2_NO_DEFAULT, True),
        ("FULL", V2_NO_DEFAULT, False),
        ("FULL", V2_DEFAULT, True),
        ("NONE", V2_NO_DEFAULT, True),
    ],
)
def test_compatibility_modes(client: SchemaRegistryClient, subject: str, mode: str, new: str, compatible: bool) -> None:
    client.set_compatibility(subject, mode)
    assert client.get_compatibility(subject) == mode
    client.register_schema(subject, avro(V1))
    assert client.test_compatibility(subject, avro(new)) is compatible
    assert client.test_compatibility(subject, avro(new), version=1) is compatible
    if compatible:
        client.register_schema(subject, avro(new))
        assert client.get_versions(subject) == [1, 2]
    else:
        assert error_of(client.register_schema, subject, avro(new)) == (409, 409)
        assert client.get_versions(subject) == [1]


def test_the_default_mode_is_backward(client: SchemaRegistryClient, registry_url: str, subject: str) -> None:
    assert client.get_compatibility() == "BACKWARD"
    client.register_schema(subject, avro(V1))
    status, _, body = http(
        registry_url,
        "POST",
        f"/compatibility/subjects/{subject}/versions/latest?verbose=true",
        {"schema": V2_NO_DEFAULT},
    )
    assert status == 200 and body["is_compatible"] is False
    assert "'age' has no default" in body["messages"][0]


def test_transitive_mode_checks_every_version(client: SchemaRegistryClient, subject: str) -> None:
    client.set_compatibility(subject, "BACKWARD")
    client.register_schema(subject, avro(V1))
    removed = json.dumps({"type": "record", "name": "User", "fields": []})
    client.register_schema(subject, avro(removed))
    back_as_int = json.dumps(
        {"type": "record", "name": "User", "fields": [{"name": "name", "type": "int", "default": 0}]}
    )
    assert client.test_compatibility(subject, avro(back_as_int))
    client.set_compatibility(subject, "BACKWARD_TRANSITIVE")
    assert error_of(client.register_schema, subject, avro(back_as_int)) == (409, 409)


def test_subject_config(client: SchemaRegistryClient, registry_url: str, subject: str) -> None:
    assert error_of(client.get_compatibility, subject) == (404, 40408)
    assert http(registry_url, "GET", f"/config/{subject}?defaultToGlobal=true")[2] == {"compatibilityLevel": "BACKWARD"}
    assert http(registry_url, "PUT", f"/config/{subject}", {"compatibility": "FULL"})[2] == {"compatibility": "FULL"}
    assert client.get_config(subject).compatibility_level == "FULL"
    assert http(registry_url, "DELETE", f"/config/{subject}")[2] == {"compatibility": "FULL"}
    assert error_of(client.get_compatibility, subject) == (404, 40408)
    assert error_of(client.set_compatibility, subject, "SIDEWAYS") == (422, 42203)


def test_error_codes(client: SchemaRegistryClient, registry_url: str, subject: str) -> None:
    assert error_of(client.get_versions, subject) == (404, 40401)
    assert error_of(client.lookup_schema, subject, avro(V1)) == (404, 40401)
    client.register_schema(subject, avro(V1))
    assert error_of(client.get_version, subject, 99) == (404, 40402)
    assert error_of(client.lookup_schema, subject, avro(V2_DEFAULT)) == (404, 40403)
    assert error_of(client.get_schema, 2_000_000_000) == (404, 40403)
    assert error_of(client.register_schema, subject, avro('{"type": "record", "name": "R"}')) == (422, 42201)
    assert error_of(client.register_schema, subject, avro("{not json")) == (422, 42201)
    status, _, body = http(
        registry_url, "POST", f"/subjects/{subject}/versions", {"schema": "{}", "schemaType": "JSON"}
    )
    assert (status, body["error_code"]) == (422, 42201) and "AVRO" in body["message"]
    status, _, body = http(registry_url, "GET", f"/subjects/{subject}/versions/abc")
    assert (status, body["error_code"]) == (422, 42202)
    status, _, body = http(registry_url, "GET", "/no/such/route")
    assert (status, body["error_code"]) == (404, 404)
    status, _, body = http(registry_url, "POST", f"/subjects/{subject}/versions", b"{", content_type="application/json")
    assert (status, body["error_code"]) == (400, 400)


def test_content_type(registry_url: str, subject: str) -> None:
    status, headers, body = http(
        registry_url, "POST", f"/subjects/{subject}/versions", {"schema": V1}, "application/json"
    )
    assert status == 200 and set(body) == {"id"}
    status, headers, body = http(registry_url, "GET", f"/subjects/{subject}/versions/latest")
    assert headers["Content-Type"].startswith("application/vnd.schemaregistry.v1+json")
    assert body == {
        "subject": subject,
        "version": 1,
        "id": body["id"],
        "schema": json.dumps(json.loads(V1), separators=(",", ":")),
    }
    assert http(registry_url, "GET", f"/schemas/ids/{body['id']}")[2] == {"schema": body["schema"]}


def test_deleting_versions_and_subjects(client: SchemaRegistryClient, registry_url: str, subject: str) -> None:
    client.register_schema(subject, avro(V1))
    client.register_schema(subject, avro(V2_DEFAULT))
    assert error_of(client.delete_version, subject, 1, permanent=True) == (404, 40407)
    assert client.delete_version(subject, 1) == 1
    assert error_of(client.delete_version, subject, 1) == (404, 40406)
    assert client.get_versions(subject) == [2]
    assert http(registry_url, "GET", f"/subjects/{subject}/versions?deleted=true")[2] == [1, 2]
    assert error_of(client.get_version, subject, 1) == (404, 40402)
    assert http(registry_url, "GET", f"/subjects/{subject}/versions/1?deleted=true")[0] == 200
    assert client.delete_version(subject, 1, permanent=True) == 1

    assert error_of(client.delete_subject, subject, permanent=True) == (404, 40405)
    assert client.delete_subject(subject) == [2]
    assert subject not in client.get_subjects()
    assert error_of(client.get_versions, subject) == (404, 40401)
    assert error_of(client.delete_subject, subject) == (404, 40404)
    assert client.delete_subject(subject, permanent=True) == [2]
    # A subject registered anew starts over once its history is gone.
    assert client.register_schema(subject, avro(V1)) > 0
    assert client.get_versions(subject) == [1]


def test_subjects_by_prefix(registry_url: str, client: SchemaRegistryClient) -> None:
    prefix = f"p{uuid.uuid4().hex[:8]}"
    for name in ("a", "b"):
        client.register_schema(f"{prefix}-{name}", avro(V1))
    assert http(registry_url, "GET", f"/subjects?subjectPrefix={prefix}")[2] == [f"{prefix}-a", f"{prefix}-b"]
