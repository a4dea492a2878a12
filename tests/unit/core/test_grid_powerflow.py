from __future__ import annotations

import numpy as np
import pytest

from dsotp_streams.adapters.grids import load_grid
from dsotp_streams.contracts.agent import GridSpec
from dsotp_streams.core.grid import GridModel
from dsotp_streams.core.powerflow import run_power_flow
from dsotp_streams.errors import ModelError


def test_grid_power_flow_matches_pandapower(grid: GridModel) -> None:
    p, q = grid.nominal_injection_pu()
    v = run_power_flow(grid, p_pu=p, q_pu=q)
    res = grid.net.res_bus
    idx = [grid.bus_index[name] for name in grid.bus_names]
    assert np.max(np.abs(np.abs(v[idx]) - res.vm_pu.to_numpy())) < 1e-8
    assert np.max(np.abs(np.degrees(np.angle(v[idx])) - res.va_degree.to_numpy())) < 1e-6


def test_grid_maps_names_and_open_switches(grid: GridModel) -> None:
    assert len(grid.bus_names) == 15
    assert grid.bus_index["Bus 0"] == grid.slack
    assert {"Line 1-2", "Trafo 0-1", "Line 14-8"} <= set(grid.branches)
    # S1 is open: the current into Bus 8 on Line 14-8 is zero
    p, q = grid.nominal_injection_pu()
    v = run_power_flow(grid, p_pu=p, q_pu=q)
    ref = grid.branches["Line 14-8"]
    assert abs((grid.yt @ v)[ref.index]) < 1e-9


def test_grid_unknown_network_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="no_such_grid"):
        load_grid(GridSpec(name="no_such_grid"))
