"""The embedded DuckDB store across versions of the schema."""

from __future__ import annotations

from pathlib import Path

import duckdb

from dsotp_streams.adapters.store import DuckStore
from dsotp_streams.contracts.storage import Row


def test_a_store_of_an_earlier_schema_gains_the_new_fields(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))  # se_quality as an earlier version wrote it
    con.execute(
        'CREATE TABLE se_quality (ts_ns BIGINT NOT NULL, time TIMESTAMPTZ NOT NULL, "area" '
        'VARCHAR, "status" VARCHAR, "engine" VARCHAR, "ok" BIGINT, "chi2" DOUBLE)'
    )
    con.execute("INSERT INTO se_quality VALUES (1, now(), 'a', 'ok', 'wls', 1, 2.5)")
    con.close()
    store = DuckStore(path)
    row = Row("se_quality", {"area": "a", "status": "ok", "engine": "wls"}, {"ok": 1}, 2)
    row.fields.update({"chi2": 3.0, "load_scale": 0.31, "n_dropped": 0})
    assert store.append([row]) == 1
    got = store.query("SELECT ts_ns, chi2, load_scale FROM se_quality ORDER BY ts_ns")
    store.close()
    assert [(r["ts_ns"], r["chi2"], r["load_scale"]) for r in got] == [
        (1, 2.5, None),
        (2, 3.0, 0.31),
    ]
