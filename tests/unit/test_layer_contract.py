"""The layer contract names every core module: a new one left out would escape the rule that nothing below imports
the CLI or the client."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import headrace

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_every_core_module_is_in_the_contract() -> None:
    contracts = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    [on_top] = [c for c in contracts if c["name"].startswith("The CLI and the client sit on top")]
    core = {f"headrace.{m.name}" for m in pkgutil.iter_modules(headrace.__path__)}
    expected = core - {"headrace.__main__", "headrace.cli", "headrace.client"}
    assert expected - set(on_top["source_modules"]) == set()
