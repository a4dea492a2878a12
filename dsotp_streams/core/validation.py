"""Plausibility of a valid frame against the area it claims to belong to.

`PmuFrame` already guarantees shape, types, finite numbers and a UTC time; this checks what only
the agent spec and the grid know: the device's components, and values that are physically
impossible for them (the usual cause being a unit: kV for V, degrees for radians).
"""

from __future__ import annotations

import math

from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.contracts.frames import Measurand, PmuFrame
from dsotp_streams.core.grid import GridModel

__all__ = ["FrameCheck"]

_MAX_VM_PU = 3.0
_FREQUENCY_HZ = (40.0, 70.0)


class FrameCheck:
    """Built once per area; `problem(frame)` is None for a plausible frame, else the reason."""

    def __init__(self, spec: AgentSpec, *, grid: GridModel) -> None:
        self.components = {d.id: {d.bus, *d.branches} for d in spec.devices}
        self.bus_of = {d.id: d.bus for d in spec.devices}
        factor = spec.voltage_basis.to_line_to_line
        self.v_base = {
            d.id: float(grid.vn_kv[grid.bus_index[d.bus]]) * 1e3 / factor
            for d in spec.devices
            if d.bus in grid.bus_index
        }

    def problem(self, frame: PmuFrame) -> str | None:
        """Why the frame cannot be used, or None."""
        known = self.components.get(frame.device)
        if known is None:
            return None  # unknown devices are the aligner's to report
        for r in frame.readings:
            if r.component not in known:
                return f"unknown component {r.component!r} for device {frame.device!r}"
            m = r.measurand
            if m is Measurand.VOLTMAGNITUDE:
                if r.component != self.bus_of[frame.device]:
                    return f"voltage of {r.component!r}, which is not the device's bus"
                base = self.v_base.get(frame.device)
                if r.data < 0 or (base and r.data / base > _MAX_VM_PU):
                    pu = r.data / base if base else float("nan")
                    return (
                        f"implausible voltage magnitude {r.data:g} V ({pu:.3g} p.u. of "
                        f"{base:g} V): units off by 1000?"
                    )
            elif m in (Measurand.VOLTANGLE, Measurand.CURRANGLE):
                if abs(r.data) > 2 * math.pi + 1e-9:
                    return f"angle {r.data:g} beyond +-2 pi rad: degrees instead of radians?"
            elif m is Measurand.CURRMAGNITUDE:
                if r.data < 0:
                    return f"negative current magnitude {r.data:g} A"
            elif m is Measurand.FREQUENCY and not _FREQUENCY_HZ[0] <= r.data <= _FREQUENCY_HZ[1]:
                return f"implausible frequency {r.data:g} Hz"
        return None
