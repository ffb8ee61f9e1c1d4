"""The Python client end to end: DataFrames and files load, queries come back as typed DataFrames."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from headrace.client import Client, HeadraceError
from tests.client.conftest import eventually


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": pd.Series([1, 2, 3], dtype="int64"),
            "price": pd.Series([1.5, -2.25, 1e10], dtype="float64"),
            "paid": pd.Series([True, False, True], dtype="bool"),
            "at": pd.Series(
                pd.to_datetime(
                    ["2021-04-08 10:58:14", "2021-04-08 11:00:00.123456", "2022-01-01 00:00:00"], format="ISO8601"
                )
            ).astype("datetime64[ns]"),
            "name": pd.Series(["a", "ünï", "with, comma"]),
        }
    )


def test_a_dataframe_loads_and_queries_back_equal(client: Client, storage_name: str) -> None:
    storage = client.create_storage(storage_name, load_mode="append")
    df = frame()
    answer = storage.load_dataframe(df)
    assert answer["rows"] == 3

    def loaded() -> pd.DataFrame:
        got = storage.query(columns=list(df.columns), order_by=["id"])
        assert len(got) == 3
        return got

    got = eventually(loaded)
    expected = df.copy()
    expected["at"] = expected["at"].dt.tz_localize("UTC")  # naive datetimes are UTC; they come back tz-aware
    pd.testing.assert_frame_equal(got, expected)
    assert str(got["at"].dtype) == "datetime64[ns, UTC]"


def test_replace_merge_filters_and_aggregates(client: Client, storage_name: str, tmp_path: Path) -> None:
    storage = client.create_storage(storage_name, primary_key=["id"], load_mode="merge")
    csv = tmp_path / "orders.csv"
    csv.write_text("id,shop,amount,day\n1,north,10,2024-01-01\n2,north,5.5,2024-01-02\n3,south,7,2024-01-02\n")
    assert storage.load_file(csv, mode="merge")["rows"] == 3
    eventually(lambda: _assert_len(storage.query(), 3))
    storage.load_dataframe(pd.DataFrame({"id": [2, 4], "shop": ["south", "west"], "amount": [1.0, 2.0]}), mode="merge")
    eventually(lambda: _assert_len(storage.query(), 4))

    totals = storage.query(
        group_by=["shop"], aggregates={"total": ("sum", "amount"), "n": ("count", "*")}, order_by=["-total"]
    )
    assert totals.to_dict("records") == [
        {"shop": "north", "total": 10.0, "n": 1},
        {"shop": "south", "total": 8.0, "n": 2},
        {"shop": "west", "total": 2.0, "n": 1},
    ]
    few = storage.query(columns=["id"], where=[("amount", ">", 1.5), ("shop", "in", ["north", "south"])], limit=5)
    assert sorted(few["id"]) == [1, 3]
    assert storage.query(columns=["id"], where={"shop": "west"})["id"].tolist() == [4]

    with pytest.raises(HeadraceError) as refused:
        storage.query(columns=["id; DROP TABLE x"])
    assert refused.value.status == 422
    with pytest.raises(HeadraceError) as refused:
        storage.query(where=[("id", "between", 1)])
    assert "operator" in str(refused.value)


def _assert_len(df: pd.DataFrame, rows: int) -> None:
    assert len(df) == rows
