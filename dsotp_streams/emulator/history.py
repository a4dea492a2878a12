"""A past for the emulated grid: the loads a platform estimating it would have stored."""

from __future__ import annotations

from datetime import UTC, datetime

from dsotp_streams.contracts.storage import Row, ts_ns
from dsotp_streams.emulator.fleet import PmuFleet

__all__ = ["backfill_rows"]


def backfill_rows(fleet: PmuFleet, now: datetime, *, days: int, step_s: float = 900.0) -> list[Row]:
    """`state` rows of every bus's net load (`p_mw`) for the `days` before `now`, one per step
    at its middle, from the fleet's loads without noise (`expected_bus_loads_mw`); the step
    `now` is in is left to the live estimates."""
    last = int(now.timestamp() // step_s)
    first = last - round(days * 86400 / step_s)
    times = [datetime.fromtimestamp((k + 0.5) * step_s, tz=UTC) for k in range(first, last)]
    names, p_mw = fleet.expected_bus_loads_mw(times)
    area = fleet.spec.area
    return [
        Row("state", {"area": area, "bus": bus}, {"p_mw": float(p_mw[k, j])}, ts_ns(when))
        for k, when in enumerate(times)
        for j, bus in enumerate(names)
    ]
