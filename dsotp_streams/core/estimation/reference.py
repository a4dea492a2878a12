"""pandapower's own WLS `estimate` as the reference engine, fed the same measurements."""

from __future__ import annotations

import copy
import logging
import math
import warnings
from typing import Any

import numpy as np

from dsotp_streams.core.estimation.measurements import Kind, MeasurementSet, Side
from dsotp_streams.core.grid import ComplexArray, GridModel
from dsotp_streams.errors import ConvergenceError, NotObservableError

__all__ = ["solve_pandapower"]

log = logging.getLogger(__name__)

_BRANCH_KINDS = {Kind.P_FLOW: "p", Kind.Q_FLOW: "q", Kind.I_MAG: "i"}


def solve_pandapower(grid: GridModel, *, ms: MeasurementSet) -> ComplexArray:
    """Estimate with pandapower (about 100 ms a snapshot).

    pandapower uses voltage angles but ignores current angles, and holds the slack angle fixed.
    """
    from pandapower.estimation import estimate

    net: Any = copy.deepcopy(grid.net)
    net.measurement = net.measurement.iloc[0:0]
    ppc_to_pp = {idx: pp_bus for pp_bus, idx in zip(net.bus.index, _lookup(grid, net), strict=True)}
    branch_elements = _branch_elements(grid, net)
    for k, el, side, value, sigma in zip(
        ms.kind, ms.element, ms.side, ms.value, ms.sigma, strict=True
    ):
        kind = Kind(int(k))
        if kind is Kind.VM and el in ppc_to_pp:
            _create_measurement(net, "v", "bus", value, sigma, ppc_to_pp[el])
        elif kind is Kind.VA and el in ppc_to_pp:
            deg = math.degrees
            _create_measurement(net, "va", "bus", deg(value), deg(sigma), ppc_to_pp[el])
        elif kind in (Kind.P_INJ, Kind.Q_INJ) and el in ppc_to_pp:
            # pandapower bus measurements are consumption-positive, in MW
            meas = "p" if kind is Kind.P_INJ else "q"
            _create_measurement(
                net, meas, "bus", -value * grid.base_mva, sigma * grid.base_mva, ppc_to_pp[el]
            )
        elif kind in _BRANCH_KINDS and int(el) in branch_elements:
            element_type, element, pp_side = branch_elements[int(el)][int(side)]
            scale = grid.base_mva
            if kind is Kind.I_MAG:
                bus = grid.f_bus[el] if side == Side.FROM else grid.t_bus[el]
                scale = grid.i_base_ka(int(bus))
            _create_measurement(
                net,
                _BRANCH_KINDS[kind],
                element_type,
                value * scale,
                sigma * scale,
                element,
                side=pp_side,
            )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandapower's own pandas and numba warnings
            ok = estimate(net, algorithm="wls", init="flat")
    except Exception as exc:
        raise NotObservableError(f"pandapower estimate failed: {exc}") from exc
    # pandapower returns a dict for "wls" (truthy even on failure) and a bool otherwise
    success = ok.get("success", False) if isinstance(ok, dict) else bool(ok)
    if not success:
        raise ConvergenceError("pandapower estimate did not converge")
    v = np.ones(grid.n_bus, dtype=complex)
    for pp_bus, idx in zip(net.bus.index, _lookup(grid, net), strict=True):
        vm = float(net.res_bus_est.vm_pu.at[pp_bus])
        va = math.radians(float(net.res_bus_est.va_degree.at[pp_bus]))
        v[idx] = vm * complex(math.cos(va), math.sin(va))
    return v


def _lookup(grid: GridModel, net: Any) -> list[int]:
    return [grid.bus_index[name] for name in grid.bus_names]


def _branch_elements(grid: GridModel, net: Any) -> dict[int, tuple[tuple[str, int, str], ...]]:
    out: dict[int, tuple[tuple[str, int, str], ...]] = {}
    lookups = net._pd2ppc_lookups["branch"]
    for element_type, sides in (("line", ("from", "to")), ("trafo", ("hv", "lv"))):
        if element_type not in lookups:
            continue
        start, end = lookups[element_type]
        table = getattr(net, element_type)
        for pos, idx in enumerate(table.index[: end - start]):
            out[start + pos] = tuple((element_type, int(idx), s) for s in sides)
    return out


def _create_measurement(
    net: Any,
    meas_type: str,
    element_type: str,
    value: float,
    sigma: float,
    element: int,
    side: str | None = None,
) -> None:
    """Add one measurement to a pandapower net."""
    import pandapower as pp

    pp.create_measurement(
        net, meas_type, element_type, float(value), float(sigma), int(element), side=side
    )
