"""Secure by default: every route of every service but the declared open ones refuses a request without the admin
token; bodies must be JSON (or the route's documented types); schemathesis finds no server error, with the token
and without it."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.conftest import ADMIN, TEST_ADMIN_TOKEN, RunningPlatform

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = {
    "ingest": REPO / "ingest" / "openapi.yaml",
    "exporter": REPO / "exporter" / "openapi.yaml",
    "schema-registry": REPO / "schema-registry" / "openapi.yaml",
    "transform": REPO / "transform" / "openapi.yaml",
}
OPEN = {"/api/data_source/{storage_id}/push/{token}", "/healthz", "/readyz", "/metrics"}  # push: its own token


def operations(service: str) -> list[tuple[str, str]]:
    """Every (method, path) a service's OpenAPI document describes, with path parameters filled in."""
    document = yaml.safe_load(DOCUMENTS[service].read_text())
    found = []
    for path, item in document["paths"].items():
        if path in OPEN:
            continue
        for method in item:
            if method in ("get", "post", "put", "delete", "patch"):
                concrete = path
                for name in ("name", "subject", "storage_id", "token", "batch", "host"):
                    concrete = concrete.replace("{" + name + "}", "x")
                for name in ("version", "id", "port"):
                    concrete = concrete.replace("{" + name + "}", "1")
                found.append((method.upper(), concrete))
    return found


@pytest.mark.parametrize("service", sorted(DOCUMENTS))
async def test_every_documented_route_refuses_a_request_without_the_token(
    platform: RunningPlatform, service: str
) -> None:
    base = platform.settings.service_url(service)
    wrong = base64.b64encode(b"headrace:not-the-token").decode()
    refusals: list[tuple[str, str, int]] = []
    async with aiohttp.ClientSession() as session:
        for method, path in operations(service):
            for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {wrong}"}):
                async with session.request(method, base + path, json={}, headers=headers) as response:
                    if response.status != 401:
                        refusals.append((method, path, response.status))
        # Unknown paths too: the guard answers before the router.
        async with session.get(f"{base}/api/not-a-route") as response:
            assert response.status == 401
        # Open routes stay open.
        for path in ("/healthz", "/readyz", "/metrics"):
            async with session.get(base + path) as response:
                assert response.status == 200
    assert refusals == []


async def test_the_token_works_as_bearer_and_as_basic_password_and_bodies_must_be_json(
    platform: RunningPlatform,
) -> None:
    ingest = platform.settings.service_url("ingest")
    registry = platform.settings.service_url("schema-registry")
    basic = base64.b64encode(f"anyone:{TEST_ADMIN_TOKEN}".encode()).decode()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{ingest}/api/storages", headers=ADMIN) as response:
            assert response.status == 200
        async with session.get(f"{registry}/subjects", headers={"Authorization": f"Basic {basic}"}) as response:
            assert response.status == 200
        # A cross-site form post carries a form content type: refused before anything is read.
        form = {"Content-Type": "application/x-www-form-urlencoded"} | ADMIN
        async with session.post(f"{ingest}/api/storages", data="name=evil", headers=form) as response:
            assert response.status == 415
        text = {"Content-Type": "text/plain"} | ADMIN
        async with session.put(f"{registry}/config", data='{"compatibility": "NONE"}', headers=text) as response:
            assert response.status == 415
            assert (await response.json())["error_code"] == 415


def test_a_service_refuses_to_start_without_a_token(kafka_bootstrap: str, database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADRACE_")} | {
        "HEADRACE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "HEADRACE_DATABASE_URL": database_url,
    }
    for module in ("ingest", "exporter", "schema_registry", "transform", "console"):
        result = subprocess.run(
            [sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=60, cwd=REPO
        )
        assert result.returncode != 0
        assert "no admin token" in result.stdout + result.stderr


CHECKS = "not_a_server_error"


HOOKS = REPO / "tests" / "ingest" / "schemathesis_hooks.py"


def schemathesis(
    url: str, tmp_path: Path, headers: dict[str, Any], max_examples: int, parameters: dict[str, str]
) -> subprocess.CompletedProcess:
    """schemathesis against a live service; `parameters` fill path parameters with real names half the time."""
    executable = Path(sys.executable).with_name("schemathesis")
    config = tmp_path / "schemathesis.toml"
    config.write_text("[parameters]\n" + "".join(f'"{key}" = "{value}"\n' for key, value in parameters.items()))
    args = [str(executable), "--config-file", str(config), "run", url, "--checks", CHECKS]
    args += ["--max-examples", str(max_examples)]
    for key, value in headers.items():
        args += ["--header", f"{key}: {value}"]
    args += ["--phases", "examples,coverage,fuzzing", "--workers", "1", "--seed", "1", "--no-color"]
    args += ["--suppress-health-check", "all", "--request-timeout", "30"]
    env = os.environ | {"SCHEMATHESIS_HOOKS": str(HOOKS)}
    return subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)


@pytest.mark.parametrize("service", ["ingest", "exporter", "schema-registry", "transform"])
@pytest.mark.parametrize("authorized", [True, False], ids=["with-token", "without-token"])
async def test_schemathesis_finds_no_server_error(
    platform: RunningPlatform, service: str, authorized: bool, tmp_path: Path, storage_name: str
) -> None:
    parameters: dict[str, str] = {}
    if service == "ingest":
        async with aiohttp.ClientSession(headers=ADMIN) as session:
            url = f"{platform.settings.service_url('ingest')}/api/storages"
            async with session.post(url, json={"name": storage_name}) as response:
                created = await response.json()
        storage_id, token = created["push_url"].split("/")[-3], created["push_url"].split("/")[-1]
        parameters = {"path.name": storage_name, "path.storage_id": storage_id, "path.token": token}
    if service == "transform":
        # A real flow, so that runs, plans and graphs are reached too (a script step needs no storage).
        flow = {"name": storage_name, "steps": [{"name": "p", "type": "python", "code": "print(1)"}]}
        async with aiohttp.ClientSession(headers=ADMIN) as session:
            async with session.post(f"{platform.settings.service_url('transform')}/api/flows", json=flow) as response:
                assert response.status == 201, await response.text()
        parameters = {"path.name": storage_name}
    url = f"{platform.settings.service_url(service)}/openapi.json"
    result = await asyncio.to_thread(
        schemathesis, url, tmp_path, ADMIN if authorized else {}, 20 if authorized else 5, parameters
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
