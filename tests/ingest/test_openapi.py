"""schemathesis against the live ingest service, driven by the OpenAPI document the service itself serves."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.ingest.conftest import HostedIngest, PushTarget

HOOKS = Path(__file__).with_name("schemathesis_hooks.py")
REPO_DOCUMENT = Path(__file__).resolve().parents[2] / "ingest" / "openapi.yaml"
CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance,negative_data_rejection"
)


def test_the_document_in_the_repo_is_valid_openapi() -> None:
    document = yaml.safe_load(REPO_DOCUMENT.read_text())
    assert document["openapi"].startswith("3.")
    push = document["paths"]["/api/data_source/{storage_id}/push/{token}"]["post"]
    assert {"200", "400", "404", "408", "413", "415", "422", "429", "503"} <= set(push["responses"])


def test_schemathesis_finds_no_failure(ingest: HostedIngest, target: PushTarget, tmp_path: Path) -> None:
    # Half the cases carry the storage's real id and token, so schemathesis reaches past the 404 into the parsing.
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f'[parameters]\n"path.storage_id" = "{target.id}"\n"path.token" = "{target.push_url.rsplit("/", 1)[1]}"\n'
    )
    schemathesis = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [
            str(schemathesis),
            "--config-file",
            str(config),
            "run",
            f"{ingest.url}/openapi.json",
            "--checks",
            CHECKS,
            "--max-examples",
            "25",
            "--phases",
            "examples,coverage,fuzzing",
            "--workers",
            "1",
            "--seed",
            "1",
            "--no-color",
            "--suppress-health-check",
            "all",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        env=os.environ | {"SCHEMATHESIS_HOOKS": str(HOOKS)},
        cwd=tmp_path,  # schemathesis keeps its state in .schemathesis/ under the working directory
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
