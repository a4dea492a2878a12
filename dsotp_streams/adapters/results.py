"""Reading results back for the REST API: one interface, the embedded DuckDB store or InfluxDB
behind it.

Pages are keyset-paginated: results are ordered by (time, key) and a page's cursor is the last
(time, key) it held, so a page stays correct while new results are appended."""

from __future__ import annotations

import base64
import json
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from dsotp_streams.adapters.store import DuckStore
from dsotp_streams.errors import CursorError, DsotpError
from dsotp_streams.settings import InfluxSettings, Settings

__all__ = [
    "Cursor",
    "DuckResults",
    "InfluxResults",
    "Page",
    "ResultStore",
    "TimeRange",
    "results_from_settings",
]

_MAX_PER_INSTANT = 2000  # rows of one measurement and area at one time (buses, lines, nodes)


@dataclass(frozen=True)
class Cursor:
    """Where a page ended: the last row's time and key."""

    ts_ns: int
    key: str

    def encode(self) -> str:
        """Opaque text for the `cursor` query parameter."""
        raw = f"{self.ts_ns}|{self.key}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """Parse a cursor issued by `encode`."""
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
            ts, key = raw.split("|", 1)
            return cls(int(ts), key)
        except (ValueError, UnicodeDecodeError) as exc:
            raise CursorError(f"invalid cursor {text!r}") from exc


@dataclass(frozen=True)
class TimeRange:
    """[start_ns, end_ns) in nanoseconds since the epoch."""

    start_ns: int
    end_ns: int


@dataclass(frozen=True)
class Page:
    """Rows of one page and the cursor of the next (None on the last page)."""

    items: list[dict[str, Any]]
    next_cursor: str | None


class ResultStore(Protocol):
    """What the API reads."""

    def ping(self) -> None:
        """Raise DsotpError if the store cannot answer."""

    def page(
        self,
        measurement: str,
        area: str,
        window: TimeRange,
        *,
        key_column: str,
        filters: dict[str, str],
        limit: int,
        after: Cursor | None,
    ) -> Page:
        """Rows of one measurement of an area, oldest first."""

    def latest_state(self, area: str) -> list[dict[str, Any]]:
        """The newest estimate of every bus of the area."""

    def quality_summary(self, since_ns: int) -> list[dict[str, Any]]:
        """Per area and status since a time: count, last lag, mean estimation time."""


_COLUMNS: dict[str, list[str]] = {
    "state": ["bus", "vm_pu", "va_deg", "p_mw", "q_mvar", "measured_vm_pu"],
    "branch": [
        "line",
        "p_from_mw",
        "q_from_mvar",
        "i_from_ka",
        "p_to_mw",
        "q_to_mvar",
        "i_to_ka",
        "loading_percent",
    ],
    "se_quality": [
        "status",
        "engine",
        "chi2",
        "chi2_threshold",
        "dof",
        "iterations",
        "runtime_ms",
        "lag_ms",
        "n_measurements",
        "n_devices",
        "n_missing",
        "n_bad_data",
        "bad_data",
    ],
    "forecast": ["node", "quantity", "quantile", "value", "horizon_s", "issued_ns"],
    "flisr": ["kind", "section", "plan", "restored_mw", "unserved_mw", "text"],
}


def _columns(measurement: str, filters: dict[str, str]) -> list[str]:
    """The columns a page of a measurement returns; a filter must name one of them."""
    columns = _COLUMNS[measurement]
    for column in filters:
        if column not in columns:
            raise DsotpError(f"no column {column!r} in {measurement}")
    return columns


class DuckResults:
    """Results from the embedded DuckDB store (the same process's, or a file opened read-only)."""

    def __init__(self, store: DuckStore) -> None:
        self.store = store

    def ping(self) -> None:
        """Raise DsotpError if the store cannot answer."""
        self.store.query("SELECT 1 AS one")

    def page(
        self,
        measurement: str,
        area: str,
        window: TimeRange,
        *,
        key_column: str,
        filters: dict[str, str],
        limit: int,
        after: Cursor | None,
    ) -> Page:
        """Rows of one measurement of an area, oldest first, keyset-paginated."""
        columns = _columns(measurement, filters)
        where = ["area = ?", "ts_ns >= ?", "ts_ns < ?"]
        params: list[Any] = [area, window.start_ns, window.end_ns]
        for column, value in filters.items():
            where.append(f'"{column}" = ?')
            params.append(value)
        key_sql = f'CAST("{key_column}" AS VARCHAR)'
        if after is not None:
            where.append(f"(ts_ns > ? OR (ts_ns = ? AND {key_sql} > ?))")
            params += [after.ts_ns, after.ts_ns, after.key]
        select = ", ".join(f'"{c}"' for c in columns)
        sql = (
            f'SELECT ts_ns, {key_sql} AS _key, {select} FROM "{measurement}" '
            f"WHERE {' AND '.join(where)} ORDER BY ts_ns, _key LIMIT ?"
        )
        rows = self.store.query(sql, [*params, limit + 1])
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = None
        if more and rows:
            next_cursor = Cursor(int(rows[-1]["ts_ns"]), str(rows[-1]["_key"])).encode()
        for row in rows:
            row.pop("_key")
        return Page(rows, next_cursor)

    def latest_state(self, area: str) -> list[dict[str, Any]]:
        """The newest estimate of every bus of the area."""
        columns = ", ".join(f'"{c}"' for c in _COLUMNS["state"])
        return self.store.query(
            f"SELECT ts_ns, {columns} FROM state WHERE area = ? "
            "AND ts_ns = (SELECT max(ts_ns) FROM state WHERE area = ?) ORDER BY bus",
            [area, area],
        )

    def quality_summary(self, since_ns: int) -> list[dict[str, Any]]:
        """Per area and status since a time: count, newest lag, mean estimation time."""
        return self.store.query(
            "SELECT area, status, count(*) AS n, avg(runtime_ms) AS runtime_ms, "
            "arg_max(lag_ms, ts_ns) AS lag_ms, sum(n_bad_data) AS bad_data "
            "FROM se_quality WHERE ts_ns >= ? GROUP BY area, status ORDER BY area, status",
            [since_ns],
        )


def _influx_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class InfluxResults:
    """Results from InfluxDB over InfluxQL (`/query`: InfluxDB 1.x, and 2.x/3.x through their v1
    compatibility with a DBRP mapping); what the deployed API reads."""

    def __init__(self, settings: InfluxSettings) -> None:
        if not settings.url:
            raise DsotpError("the InfluxDB reader needs influx.url")
        self.base = settings.url.rstrip("/")
        self.params = {"db": settings.database, "epoch": "ns"}
        if settings.username:
            self.params["u"] = settings.username
            self.params["p"] = settings.password.get_secret_value() if settings.password else ""
        self.timeout_s = settings.timeout_s

    def _query(self, q: str) -> list[dict[str, Any]]:
        url = f"{self.base}/query?" + urllib.parse.urlencode({**self.params, "q": q})
        try:
            with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                body = json.loads(response.read())
        except (OSError, ValueError) as exc:
            raise DsotpError(f"InfluxDB query failed: {exc}") from exc
        rows: list[dict[str, Any]] = []
        for result in body.get("results", []):
            if "error" in result:
                raise DsotpError(f"InfluxDB query failed: {result['error']}")
            for series in result.get("series", []):
                tags = series.get("tags", {})
                for values in series["values"]:
                    row = dict(zip(series["columns"], values, strict=True))
                    row.update(tags)
                    rows.append(row)
        return rows

    def ping(self) -> None:
        """Raise DsotpError if InfluxDB cannot answer."""
        self._query("SHOW MEASUREMENTS LIMIT 1")

    def page(
        self,
        measurement: str,
        area: str,
        window: TimeRange,
        *,
        key_column: str,
        filters: dict[str, str],
        limit: int,
        after: Cursor | None,
    ) -> Page:
        """Rows of one measurement of an area, oldest first; pages by (time, key)."""
        columns = _columns(measurement, filters)
        start = window.start_ns if after is None else max(window.start_ns, after.ts_ns)
        where = [f'"area" = {_influx_string(area)}', f"time >= {start}", f"time < {window.end_ns}"]
        for column, value in filters.items():
            where.append(f'"{column}" = {_influx_string(value)}')
        select = ", ".join(f'"{c}"' for c in columns)
        # rows of one time come in any order: fetch enough to sort the boundary instant
        q = (
            f'SELECT {select} FROM "{measurement}" WHERE {" AND ".join(where)} '
            f"ORDER BY time ASC LIMIT {limit + 1 + _MAX_PER_INSTANT}"
        )
        rows: list[dict[str, Any]] = [
            {"ts_ns": int(r.pop("time")), **{c: r.get(c) for c in columns}} for r in self._query(q)
        ]
        rows.sort(key=lambda r: (r["ts_ns"], str(r[key_column])))
        if after is not None:
            rows = [r for r in rows if (r["ts_ns"], str(r[key_column])) > (after.ts_ns, after.key)]
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = None
        if more and rows:
            next_cursor = Cursor(int(rows[-1]["ts_ns"]), str(rows[-1][key_column])).encode()
        return Page(rows, next_cursor)

    def latest_state(self, area: str) -> list[dict[str, Any]]:
        """The newest estimate of every bus of the area."""
        newest = self._query(
            f'SELECT last("vm_pu") FROM "state" WHERE "area" = {_influx_string(area)}'
        )
        if not newest:
            return []
        ts = int(newest[0]["time"])
        columns = _COLUMNS["state"]
        select = ", ".join(f'"{c}"' for c in columns)
        rows = self._query(
            f'SELECT {select} FROM "state" WHERE "area" = {_influx_string(area)} AND time = {ts}'
        )
        out = [{"ts_ns": int(r.pop("time")), **{c: r.get(c) for c in columns}} for r in rows]
        return sorted(out, key=lambda r: str(r["bus"]))

    def quality_summary(self, since_ns: int) -> list[dict[str, Any]]:
        """Per area and status since a time: count, newest lag, mean estimation time."""
        rows = self._query(
            'SELECT count("ok") AS n, mean("runtime_ms") AS runtime_ms, '
            'last("lag_ms") AS lag_ms, '
            f'sum("n_bad_data") AS bad_data FROM "se_quality" WHERE time >= {since_ns} '
            'GROUP BY "area", "status"'
        )
        return [
            {
                "area": r["area"],
                "status": r["status"],
                "n": r["n"] or 0,
                "runtime_ms": r["runtime_ms"],
                "lag_ms": r["lag_ms"],
                "bad_data": r["bad_data"],
            }
            for r in rows
        ]

    def bus_loads(self, area: str, *, since_ns: int, step_s: float) -> list[dict[str, Any]]:
        """Mean estimated load per bus and step since a time: `{"slot", "bus", "p_mw"}` (InfluxQL
        buckets start at multiples of the step since the epoch, as the slots do)."""
        step_ns = round(step_s * 1e9)
        rows = self._query(
            f'SELECT mean("p_mw") AS p_mw FROM "state" WHERE "area" = {_influx_string(area)} '
            f'AND time >= {since_ns} AND time <= now() GROUP BY time({step_ns // 1000}u), "bus" '
            "fill(none)"
        )
        out = [
            {"slot": int(r["time"]) // step_ns, "bus": r["bus"], "p_mw": r["p_mw"]} for r in rows
        ]
        return sorted(out, key=lambda r: (r["slot"], r["bus"]))


def results_from_settings(settings: Settings, store_path: Path | None = None) -> ResultStore:
    """InfluxDB when `influx.url` is set (the deployed platform), else the DuckDB store file,
    opened read-only."""
    if settings.influx.url:
        return InfluxResults(settings.influx)
    path = store_path or settings.api.store_path or settings.store.path
    return DuckResults(DuckStore(path, read_only=True))
