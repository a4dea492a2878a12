"""power-grid-model's state estimation on the same grid and the same measurements as ours: the
fastest peer in the estimation benchmark.

The grid is converted from the same pandapower net by power-grid-model-io's PandaPowerConverter;
each of our measurements becomes a power-grid-model sensor (SI units, injections positive):
voltage magnitude and angle -> one voltage phasor sensor per bus (power-grid-model has a single
sigma per voltage sensor: the magnitude's), bus P/Q injections (measured, pseudo and zero) -> node
power sensors, branch current magnitude and angle -> current sensors with a global angle, branch
P/Q -> branch power sensors. The model is built once per measurement structure; each snapshot is
one `calculate_state_estimation` with the values as an update batch of one.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
from power_grid_model import (
    AngleMeasurementType,
    CalculationMethod,
    CalculationType,
    ComponentType,
    DatasetType,
    MeasuredTerminalType,
    PowerGridModel,
    initialize_array,
)
from power_grid_model.validation import validate_input_data
from power_grid_model_io.converters import PandaPowerConverter

from dsotp_streams.core.estimation.measurements import Kind, MeasurementSet, Side
from dsotp_streams.core.estimation.reference import _branch_elements, _lookup
from dsotp_streams.core.grid import ComplexArray, GridModel

_TERMINAL = {
    ("line", "from"): MeasuredTerminalType.branch_from,
    ("line", "to"): MeasuredTerminalType.branch_to,
    ("trafo", "hv"): MeasuredTerminalType.branch_from,
    ("trafo", "lv"): MeasuredTerminalType.branch_to,
}


class PgmEstimator:
    """power-grid-model's estimate of one grid for measurement sets of one structure."""

    def __init__(self, grid: GridModel, ms: MeasurementSet) -> None:
        net: Any = copy.deepcopy(grid.net)
        import pandapower as pp

        pp.runpp(net)  # the lookups of `_branch_elements`
        data, extra = PandaPowerConverter().load_input_data(net)
        self.grid = grid
        id_of = {
            (info["id_reference"]["table"], info["id_reference"]["index"]): pgm_id
            for pgm_id, info in extra.items()
            if "id_reference" in info
        }
        self.node_of = {
            idx: id_of[("bus", int(pp_bus))]
            for pp_bus, idx in zip(net.bus.index, _lookup(grid, net), strict=True)
        }
        branches = _branch_elements(grid, net)
        next_id = max(extra) + 1
        voltage: dict[int, list[int]] = {}  # bus -> rows of VM, VA
        power: dict[tuple[int, int], dict[Kind, int]] = {}  # (object, terminal) -> rows
        current: dict[tuple[int, int], dict[Kind, int]] = {}
        for row, (k, el, side) in enumerate(zip(ms.kind, ms.element, ms.side, strict=True)):
            kind = Kind(int(k))
            if kind in (Kind.VM, Kind.VA) and int(el) in self.node_of:
                voltage.setdefault(int(el), []).append(row)
            elif kind in (Kind.P_INJ, Kind.Q_INJ) and int(el) in self.node_of:
                key = (self.node_of[int(el)], int(MeasuredTerminalType.node))
                power.setdefault(key, {})[kind] = row
            elif int(el) in branches:
                table, index, end = branches[int(el)][int(side)]
                key = (id_of[(table, index)], int(_TERMINAL[(table, end)]))
                if kind in (Kind.P_FLOW, Kind.Q_FLOW):
                    power.setdefault(key, {})[kind] = row
                elif kind in (Kind.I_MAG, Kind.I_ANG):
                    current.setdefault(key, {})[kind] = row
        self.voltage = sorted(voltage.items())
        self.power = sorted(power.items())
        self.current = sorted(current.items())
        v_sensor = initialize_array(
            DatasetType.input, ComponentType.sym_voltage_sensor, len(voltage)
        )
        p_sensor = initialize_array(DatasetType.input, ComponentType.sym_power_sensor, len(power))
        i_sensor = initialize_array(
            DatasetType.input, ComponentType.sym_current_sensor, len(current)
        )
        for array in (v_sensor, p_sensor, i_sensor):
            array["id"] = np.arange(next_id, next_id + len(array))
            next_id += len(array)
        v_sensor["measured_object"] = [self.node_of[bus] for bus, _rows in self.voltage]
        p_sensor["measured_object"] = [obj for (obj, _t), _rows in self.power]
        p_sensor["measured_terminal_type"] = [t for (_o, t), _rows in self.power]
        i_sensor["measured_object"] = [obj for (obj, _t), _rows in self.current]
        i_sensor["measured_terminal_type"] = [t for (_o, t), _rows in self.current]
        i_sensor["angle_measurement_type"] = AngleMeasurementType.global_angle
        self.arrays = {
            ComponentType.sym_voltage_sensor: v_sensor,
            ComponentType.sym_power_sensor: p_sensor,
            ComponentType.sym_current_sensor: i_sensor,
        }
        self.labels = ms.label
        self._fill(ms)
        data = {**data, **{k: v.copy() for k, v in self.arrays.items()}}
        # the native library may crash on input it does not accept: check it first
        errors = validate_input_data(data, calculation_type=CalculationType.state_estimation)
        if errors:
            raise ValueError(f"power-grid-model refuses the input: {errors[:3]}")
        self.model = PowerGridModel(data)
        self.u_rated = {int(n["id"]): float(n["u_rated"]) for n in data[ComponentType.node]}

    def _fill(self, ms: MeasurementSet) -> None:
        grid, base_w = self.grid, self.grid.base_mva * 1e6
        v_sensor = self.arrays[ComponentType.sym_voltage_sensor]
        for j, (bus, rows) in enumerate(self.voltage):
            u_base = float(grid.vn_kv[bus]) * 1e3
            vm = [r for r in rows if ms.kind[r] == Kind.VM]
            va = [r for r in rows if ms.kind[r] == Kind.VA]
            v_sensor["u_measured"][j] = ms.value[vm[0]] * u_base if vm else math.nan
            v_sensor["u_sigma"][j] = ms.sigma[vm[0]] * u_base if vm else 0.01 * u_base
            v_sensor["u_angle_measured"][j] = ms.value[va[0]] if va else math.nan
        p_sensor = self.arrays[ComponentType.sym_power_sensor]
        for j, (_key, rows) in enumerate(self.power):
            p_row = rows.get(Kind.P_INJ, rows.get(Kind.P_FLOW))
            q_row = rows.get(Kind.Q_INJ, rows.get(Kind.Q_FLOW))
            p_sensor["p_measured"][j] = ms.value[p_row] * base_w if p_row is not None else 0.0
            p_sensor["q_measured"][j] = ms.value[q_row] * base_w if q_row is not None else 0.0
            p_sensor["p_sigma"][j] = ms.sigma[p_row] * base_w if p_row is not None else 1e9
            p_sensor["q_sigma"][j] = ms.sigma[q_row] * base_w if q_row is not None else 1e9
            p_sensor["power_sigma"][j] = math.nan
        i_sensor = self.arrays[ComponentType.sym_current_sensor]
        for j, (_key, rows) in enumerate(self.current):
            m_row, a_row = rows.get(Kind.I_MAG), rows.get(Kind.I_ANG)
            i_base = 1.0
            if m_row is not None:
                element = int(ms.element[m_row])
                end = self.grid.f_bus if int(ms.side[m_row]) == Side.FROM else self.grid.t_bus
                i_base = self.grid.i_base_ka(int(end[element])) * 1e3
            i_sensor["i_measured"][j] = ms.value[m_row] * i_base if m_row is not None else 0.0
            i_sensor["i_sigma"][j] = ms.sigma[m_row] * i_base if m_row is not None else 1e9
            i_sensor["i_angle_measured"][j] = ms.value[a_row] if a_row is not None else 0.0
            i_sensor["i_angle_sigma"][j] = ms.sigma[a_row] if a_row is not None else 1e3

    def solve(self, ms: MeasurementSet) -> ComplexArray:
        """The bus voltages (per unit, our bus order; buses it does not model stay at 1)."""
        self._fill(ms)
        update = {}
        for component, array in self.arrays.items():
            if not len(array):
                continue
            batch = initialize_array(DatasetType.update, component, (1, len(array)))
            for name in batch.dtype.names:
                batch[name][0] = array[name]
            update[component] = batch
        result = self.model.calculate_state_estimation(
            update_data=update,
            calculation_method=CalculationMethod.newton_raphson,
            error_tolerance=1e-6,
            max_iterations=30,
        )
        nodes = result[ComponentType.node]
        u_pu = dict(zip(nodes["id"][0].tolist(), nodes["u_pu"][0].tolist(), strict=True))
        angle = dict(zip(nodes["id"][0].tolist(), nodes["u_angle"][0].tolist(), strict=True))
        v = np.ones(self.grid.n_bus, dtype=complex)
        for bus, node in self.node_of.items():
            v[bus] = u_pu[node] * complex(math.cos(angle[node]), math.sin(angle[node]))
        return v
