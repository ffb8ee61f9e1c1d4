"""Load the example's products, customers and sales into a running platform (`headrace up`), then wait for them."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from headrace.client import Client, HeadraceError
from headrace.settings import load_settings

HERE = Path(__file__).resolve().parent
TABLES = {"products": ["product_id"], "customers": ["customer_id"], "sales": ["sale_id"]}


def rows_in(client: Client, name: str) -> int:
    found = client.storage(name).query(aggregates={"n": ("count", "*")})
    return int(found["n"].iloc[0]) if len(found) else 0


def main() -> int:
    settings = load_settings()
    with Client(settings.service_url("ingest"), admin_token=settings.require_admin_token()) as client:
        expected = {}
        for name, key in TABLES.items():
            try:
                client.create_storage(name, primary_key=key, load_mode="replace")
            except HeadraceError as exc:
                if exc.status != 409:  # there already: the load replaces its rows
                    raise
            path = HERE / f"{name}.csv"
            client.storage(name).load_file(path, mode="replace")
            expected[name] = sum(1 for _ in path.open()) - 1
        # Loads go through Kafka; transform writes them a moment later.
        deadline = time.monotonic() + 120
        while any(rows_in(client, n) != count for n, count in expected.items()):
            if time.monotonic() > deadline:
                print("the rows did not all arrive within 120 s", file=sys.stderr)
                return 1
            time.sleep(0.5)
    print(", ".join(f"{n}: {c} rows" for n, c in expected.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
