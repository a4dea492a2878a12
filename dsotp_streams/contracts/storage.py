"""The storage schema shared by every store (InfluxDB, DuckDB): measurements, tags and fields.

Tags are the few low-cardinality keys a query filters on (area, bus, device, ...); everything
measured is a field. A row carries its time in integer nanoseconds since the epoch (UTC).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from dsotp_streams.contracts.frames import PmuFrame
from dsotp_streams.contracts.messages import (
    EstimateStatus,
    FlisrEvent,
    Forecast,
    StateEstimate,
)

__all__ = [
    "SCHEMA",
    "Measurement",
    "Row",
    "rows_from_estimate",
    "rows_from_flisr",
    "rows_from_forecast",
    "rows_from_frame",
    "ts_ns",
]


@dataclass(frozen=True)
class Measurement:
    """One measurement (table): its tag keys and its fields with their types."""

    name: str
    tags: tuple[str, ...]
    fields: dict[str, type]


SCHEMA: dict[str, Measurement] = {
    m.name: m
    for m in (
        Measurement("pmu", ("area", "device", "component", "measurand", "phase"), {"value": float}),
        Measurement(
            "state",
            ("area", "bus"),
            {
                "vm_pu": float,
                "va_deg": float,
                "p_mw": float,
                "q_mvar": float,
                "measured_vm_pu": float,
                "true_vm_pu": float,
                "true_va_deg": float,
            },
        ),
        Measurement(
            "branch",
            ("area", "line"),
            {
                "p_from_mw": float,
                "q_from_mvar": float,
                "i_from_ka": float,
                "p_to_mw": float,
                "q_to_mvar": float,
                "i_to_ka": float,
                "loading_percent": float,
            },
        ),
        Measurement(
            "se_quality",
            ("area", "status", "engine"),
            {
                "ok": int,
                "chi2": float,
                "chi2_threshold": float,
                "dof": int,
                "iterations": int,
                "runtime_ms": float,
                "lag_ms": float,
                "n_measurements": int,
                "n_devices": int,
                "n_missing": int,
                "n_bad_data": int,
                "bad_data": str,
                "n_dropped": int,
                "dropped": str,
                "max_true_dvm_pu": float,
                "load_scale": float,
            },
        ),
        Measurement(
            "forecast",
            ("area", "node", "quantity", "quantile"),
            {"value": float, "horizon_s": float, "issued_ns": int},
        ),
        Measurement(
            "flisr",
            ("area", "kind"),
            {"section": str, "plan": str, "restored_mw": float, "unserved_mw": float, "text": str},
        ),
    )
}


@dataclass(frozen=True)
class Row:
    """One point: measurement, tags, fields (None fields are left out) and time in ns."""

    measurement: str
    tags: dict[str, str]
    fields: dict[str, float | int | str | None]
    ts_ns: int


def ts_ns(ts: datetime) -> int:
    """Integer nanoseconds since the epoch of an aware datetime."""
    seconds = int(ts.timestamp())
    return seconds * 1_000_000_000 + ts.microsecond * 1000


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def rows_from_frame(area: str, frame: PmuFrame) -> Iterator[Row]:
    """Every reading of a frame as a `pmu` row."""
    t = ts_ns(frame.timestamp)
    for reading in frame.readings:
        yield Row(
            "pmu",
            {
                "area": area,
                "device": frame.device,
                "component": reading.component,
                "measurand": reading.measurand.value,
                "phase": reading.phase.value,
            },
            {"value": reading.data},
            t,
        )


def rows_from_estimate(estimate: StateEstimate, *, lag_ms: float | None = None) -> Iterator[Row]:
    """A state estimate as `state` rows per bus, `branch` rows per branch and one `se_quality`."""
    t = ts_ns(estimate.window_start)
    area = estimate.area
    dropped = list(estimate.quality.dropped) if estimate.quality is not None else []
    for bus in estimate.buses:
        yield Row(
            "state",
            {"area": area, "bus": bus.bus},
            {
                "vm_pu": bus.vm_pu,
                "va_deg": bus.va_deg,
                "p_mw": bus.p_mw,
                "q_mvar": bus.q_mvar,
                "measured_vm_pu": bus.measured_vm_pu,
                "true_vm_pu": bus.true_vm_pu,
                "true_va_deg": bus.true_va_deg,
            },
            t,
        )
    for line in estimate.lines:
        yield Row(
            "branch",
            {"area": area, "line": line.line},
            {
                "p_from_mw": line.p_from_mw,
                "q_from_mvar": line.q_from_mvar,
                "i_from_ka": line.i_from_ka,
                "p_to_mw": line.p_to_mw,
                "q_to_mvar": line.q_to_mvar,
                "i_to_ka": line.i_to_ka,
                "loading_percent": _finite(line.loading_percent),
            },
            t,
        )
    yield Row(
        "se_quality",
        {"area": area, "status": estimate.status.value, "engine": estimate.engine},
        {
            "ok": int(estimate.status is EstimateStatus.OK),
            "chi2": _finite(estimate.chi2),
            "chi2_threshold": estimate.chi2_threshold,
            "dof": estimate.dof,
            "iterations": estimate.iterations,
            "runtime_ms": estimate.runtime_ms,
            "lag_ms": lag_ms,
            "n_measurements": estimate.n_measurements,
            "n_devices": estimate.n_devices,
            "n_missing": len(estimate.missing_devices),
            "n_bad_data": len(estimate.bad_data),
            "bad_data": ",".join(estimate.bad_data) or None,
            "n_dropped": len(dropped),
            "dropped": ",".join(dropped) or None,
            "max_true_dvm_pu": estimate.max_true_dvm_pu,
            "load_scale": estimate.load_scale,
        },
        t,
    )


def rows_from_flisr(event: FlisrEvent) -> Iterator[Row]:
    """A FLISR event as one `flisr` row (the text is what Grafana annotates)."""
    steps = "; ".join(f"{a.step}. {a.action} {a.switch}" for a in event.sequence)
    text = (
        f"{event.detected}: fault in {event.fault_section or '?'} ({event.status}); {steps}; "
        f"restored {event.restored_mw:.2f} MW, unserved {event.unserved_mw:.2f} MW"
    )
    yield Row(
        "flisr",
        {"area": event.area, "kind": event.status},
        {
            "section": event.fault_section,
            "plan": steps or None,
            "restored_mw": event.restored_mw,
            "unserved_mw": event.unserved_mw,
            "text": text,
        },
        ts_ns(event.window_start),
    )


def rows_from_forecast(forecast: Forecast) -> Iterator[Row]:
    """One `forecast` row per bus, quantile and target time."""
    issued = ts_ns(forecast.issued_at)
    for node, levels in forecast.quantiles.items():
        for level, values in levels.items():
            tags = {
                "area": forecast.area,
                "node": node,
                "quantity": forecast.quantity,
                "quantile": level,
            }
            for when, value in zip(forecast.times, values, strict=True):
                t = ts_ns(when)
                yield Row(
                    "forecast",
                    tags,
                    {"value": value, "horizon_s": (t - issued) / 1e9, "issued_ns": issued},
                    t,
                )
