from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import numpy as np
import pytest

from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.contracts.messages import Window
from dsotp_streams.core.estimation import MeasurementMap, WlsOptions, solve_wls
from dsotp_streams.core.grid import GridModel
from dsotp_streams.core.linalg import Ops, dense_ops, sparse_ops
from dsotp_streams.core.powerflow import run_power_flow
from dsotp_streams.emulator import PmuFleet

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _with_ops(grid: GridModel, ops: Ops) -> GridModel:
    return dataclasses.replace(
        grid,
        ops=ops,
        ybus=ops.matrix(grid.ybus),
        yf=ops.matrix(grid.yf),
        yt=ops.matrix(grid.yt),
        cf=ops.matrix(grid.cf),
        ct=ops.matrix(grid.ct),
    )


@pytest.mark.parametrize("ops", [dense_ops, sparse_ops], ids=["dense", "sparse"])
def test_linalg_backends_give_the_same_power_flow(grid: GridModel, ops: Ops) -> None:
    p, q = grid.nominal_injection_pu()
    v = run_power_flow(_with_ops(grid, ops), p_pu=p, q_pu=q)
    idx = [grid.bus_index[name] for name in grid.bus_names]
    assert np.max(np.abs(np.abs(v[idx]) - grid.net.res_bus.vm_pu.to_numpy())) < 1e-8


def test_linalg_backends_give_the_same_estimate(spec: AgentSpec, grid: GridModel) -> None:
    instant = PmuFleet(spec, grid).step(T0)
    window = Window(
        area=spec.area,
        window_start=T0,
        period_s=0.1,
        frames={f.device: f for f in instant.frames},
        closed_at=T0,
    )
    results = []
    for ops in (dense_ops, sparse_ops):
        g = _with_ops(grid, ops)
        ms = MeasurementMap(spec, grid=g).build(window)
        results.append(solve_wls(g, ms=ms, options=WlsOptions(tolerance=1e-10)))
    dense, sparse = results
    assert np.max(np.abs(dense.v - sparse.v)) < 1e-8
    assert dense.objective == pytest.approx(sparse.objective, rel=1e-9)
