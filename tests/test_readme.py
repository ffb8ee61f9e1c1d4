"""The README stays true: every setting is in its configuration table, and every benchmark in its list."""

from __future__ import annotations

import pkgutil
from pathlib import Path

import bench
from headrace.settings import Settings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    missing = [
        f"HEADRACE_{name.upper()}" for name in Settings.model_fields if f"`HEADRACE_{name.upper()}`" not in README
    ]
    assert missing == []


def test_every_benchmark_is_listed() -> None:
    names = [m.name for m in pkgutil.iter_modules(bench.__path__) if m.name not in {"harness", "__main__"}]
    assert [n for n in names if f"`{n}`" not in README] == []
