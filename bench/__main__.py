"""python -m bench NAME [--json]: run one benchmark and print its figures as a table and as JSON."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import pkgutil
import sys
from pathlib import Path

import orjson

import bench
from bench.harness import bench_env


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name not in {"harness", "__main__"})


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("name", nargs="?", help=f"one of: {', '.join(available())}")
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args()
    if args.name not in available():
        parser.print_help()
        return 2
    module = importlib.import_module(f"bench.{args.name}")
    with bench_env(getattr(module, "NEEDS_POSTGRES", True)) as env:
        figures = asyncio.run(module.run(env))
    description = (module.__doc__ or "").strip()
    result = {"benchmark": args.name, "description": description, "figures": [f.to_json() for f in figures]}
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"{args.name}.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    if not args.json:
        print(f"{args.name}: {result['description']}")
        print(f"{'figure':<44} {'value':>14} {'unit':<10} {'baseline':>14} {'ratio':>7}")
        for f in figures:
            baseline = f"{f.baseline:>14.1f}" if f.baseline is not None else " " * 14
            ratio = f"{f.ratio:>7.2f}" if f.ratio is not None else ""
            print(f"{f.name:<44} {f.value:>14.1f} {f.unit:<10} {baseline} {ratio}")
        print()
    print(orjson.dumps(result).decode())
    return 0


sys.exit(main())
