"""The SOGNO output format for published estimates: one object per component."""

from __future__ import annotations

import math
from typing import Any

from dsotp_streams.contracts.messages import StateEstimate

__all__ = ["estimate_to_sogno"]


def estimate_to_sogno(estimate: StateEstimate, *, vn_kv: dict[str, float]) -> list[dict[str, Any]]:
    """Per bus: phase-to-ground voltage magnitude (V) and angle (rad) in the SOGNO output format."""
    timestamp = estimate.window_start.isoformat()
    out: list[dict[str, Any]] = []
    for bus in estimate.buses:
        v_base = vn_kv[bus.bus] * 1000.0 / math.sqrt(3.0)
        out.append(
            {
                "component": bus.bus,
                "timestamp": timestamp,
                "readings": [
                    {"measurand": "voltmagnitude", "phase": "A", "data": bus.vm_pu * v_base},
                    {"measurand": "voltangle", "phase": "A", "data": math.radians(bus.va_deg)},
                ],
            }
        )
    return out
