"""The embedded store: DuckDB tables with the shared schema, appended in batches, queried by time.

One table per measurement: `ts_ns BIGINT` (ns since the epoch, UTC), `time TIMESTAMPTZ`, the tags
as VARCHAR, the fields typed. One process holds the file read-write; all calls are serialised by
a lock (the runtime calls `append` from a worker thread).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb

from dsotp_streams.contracts.storage import SCHEMA, Row
from dsotp_streams.errors import DsotpError, TransportError

__all__ = ["DuckBackend", "DuckStore"]

_SQL_TYPE = {float: "DOUBLE", int: "BIGINT", str: "VARCHAR"}


class DuckStore:
    """Append rows, query them back."""

    def __init__(
        self, path: Path | str, *, read_only: bool = False, memory_limit: str | None = None
    ) -> None:
        """`memory_limit` (e.g. "256MB") bounds DuckDB's page cache of a file store, which
        otherwise grows with the data (a file store spills to its file)."""
        target = str(path)
        if target != ":memory:" and not read_only:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(target, read_only=read_only)
        except duckdb.Error as exc:
            raise TransportError(f"cannot open the store {target}: {exc}") from exc
        self._lock = threading.Lock()
        self.path = target
        if memory_limit is not None and target != ":memory:":
            try:
                self._con.execute(f"SET memory_limit = '{memory_limit}'")
            except duckdb.Error as exc:
                raise TransportError(f"invalid store memory limit {memory_limit!r}: {exc}") from exc
        if read_only:
            return
        for m in SCHEMA.values():
            columns = ["ts_ns BIGINT NOT NULL", "time TIMESTAMPTZ NOT NULL"]
            columns += [f'"{tag}" VARCHAR' for tag in m.tags]
            columns += [f'"{name}" {_SQL_TYPE[kind]}' for name, kind in m.fields.items()]
            self._con.execute(f'CREATE TABLE IF NOT EXISTS "{m.name}" ({", ".join(columns)})')
            # a store written by an earlier version gains the fields added since (empty there)
            for name, kind in m.fields.items():
                self._con.execute(
                    f'ALTER TABLE "{m.name}" ADD COLUMN IF NOT EXISTS "{name}" {_SQL_TYPE[kind]}'
                )

    def append(self, rows: list[Row]) -> int:
        """Append rows (any mix of measurements); returns how many were stored."""
        import pyarrow as pa

        groups: dict[str, list[Row]] = defaultdict(list)
        for row in rows:
            groups[row.measurement].append(row)
        with self._lock:
            for name, group in groups.items():
                m = SCHEMA[name]
                data: dict[str, Any] = {"ts_ns": [r.ts_ns for r in group]}
                for tag in m.tags:
                    data[tag] = [r.tags.get(tag) for r in group]
                for field, kind in m.fields.items():
                    values = [r.fields.get(field) for r in group]
                    data[field] = pa.array(values, type=_ARROW[kind])
                batch = pa.table(data)  # noqa: F841 (read by DuckDB through its name)
                columns = ", ".join(f'"{c}"' for c in data if c != "ts_ns")
                try:
                    self._con.execute(
                        f'INSERT INTO "{name}" (ts_ns, time, {columns}) '
                        f"SELECT ts_ns, make_timestamptz(ts_ns // 1000), {columns} FROM batch"
                    )
                except duckdb.Error as exc:
                    raise DsotpError(f"store append to {name} failed: {exc}") from exc
        return len(rows)

    def query(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """Run a read query; rows as dicts."""
        with self._lock:
            try:
                cursor = self._con.execute(sql, params or [])
            except duckdb.Error as exc:
                raise DsotpError(f"store query failed: {exc}") from exc
            names = [d[0] for d in cursor.description or []]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def memory_bytes(self) -> int:
        """What DuckDB holds in memory now (its buffer pool and other allocations)."""
        rows = self.query("SELECT sum(memory_usage_bytes) AS b FROM duckdb_memory()")
        return int(rows[0]["b"] or 0)

    def count(self, measurement: str) -> int:
        """Rows in one table."""
        if measurement not in SCHEMA:
            raise DsotpError(f"no measurement {measurement!r}")
        return int(self.query(f'SELECT count(*) AS n FROM "{measurement}"')[0]["n"])

    def state_history(
        self, area: str, *, since_ns: int, bus: str | None = None, limit: int = 100_000
    ) -> list[dict[str, Any]]:
        """Estimated (and measured, true) voltages of an area since a time, oldest first."""
        sql = (
            "SELECT ts_ns, bus, vm_pu, va_deg, measured_vm_pu, true_vm_pu FROM state "
            "WHERE area = ? AND ts_ns >= ?"
            + (" AND bus = ?" if bus else "")
            + " ORDER BY ts_ns LIMIT ?"
        )
        params: list[Any] = [area, since_ns, *([bus] if bus else []), limit]
        return self.query(sql, params)

    def bus_loads(self, area: str, *, since_ns: int, step_s: float) -> list[dict[str, Any]]:
        """Mean estimated load of every bus per step since a time: rows `{"slot", "bus",
        "p_mw"}`, slot = epoch seconds // step_s (what a forecaster's history is made of)."""
        return self.query(
            "SELECT (ts_ns // ?) AS slot, bus, avg(p_mw) AS p_mw FROM state "
            "WHERE area = ? AND ts_ns >= ? GROUP BY slot, bus ORDER BY slot, bus",
            [round(step_s * 1e9), area, since_ns],
        )

    def close(self) -> None:
        """Close the database file."""
        with self._lock:
            self._con.close()


def _arrow_types() -> dict[type, Any]:
    import pyarrow as pa

    return {float: pa.float64(), int: pa.int64(), str: pa.string()}


_ARROW = _arrow_types()


class DuckBackend:
    """The store as a sink backend (appends in a worker thread)."""

    def __init__(self, store: DuckStore) -> None:
        self.store = store

    async def write(self, rows: list[Row]) -> None:
        """Append one batch."""
        import asyncio

        await asyncio.to_thread(self.store.append, rows)

    async def close(self) -> None:
        """The store is closed by its owner."""
