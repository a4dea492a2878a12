"""Reading results back for the REST API: one interface, the embedded DuckDB store behind it.

Pages are keyset-paginated: results are ordered by (time, key) and a page's cursor is the last
(time, key) it held, so a page stays correct while new results are appended."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Protocol

from dsotp_streams.adapters.store import DuckStore
from dsotp_streams.errors import DsotpError

__all__ = ["Cursor", "DuckResults", "Page", "ResultStore", "TimeRange"]


class CursorError(DsotpError):
    """A page cursor that this API did not issue."""


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
        columns = _COLUMNS[measurement]
        where = ["area = ?", "ts_ns >= ?", "ts_ns < ?"]
        params: list[Any] = [area, window.start_ns, window.end_ns]
        for column, value in filters.items():
            if column not in columns:
                raise DsotpError(f"no column {column!r} in {measurement}")
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
