"""Shared set-up of the benchmarks: grids with a PMU placement, and windows from the emulator."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from dsotp_streams.adapters.grids import load_grid
from dsotp_streams.contracts.agent import (
    AgentSpec,
    EmulatorSpec,
    EstimatorSpec,
    GridSource,
    GridSpec,
    SigmaSpec,
    load_agent_spec,
)
from dsotp_streams.contracts.messages import Window
from dsotp_streams.core.grid import GridModel
from dsotp_streams.emulator import PmuFleet, candidate_pmus

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _replicated(name: str) -> GridSpec:
    """`<library grid>*<n>`: n copies of a library grid side by side (separate islands, one
    substation each), saved as pandapower JSON: a large DSO area made of real feeders."""
    import tempfile
    import warnings

    import pandapower as pp
    import pandapower.networks as pn
    import pandapower.toolbox as tb

    base, copies = name.split("*")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = getattr(pn, base)()
        for _ in range(int(copies) - 1):
            net = tb.merge_nets(net, getattr(pn, base)(), validate=False, std_prio_on_net1=True)
    path = Path(tempfile.mkdtemp(prefix="dsotp-bench-")) / f"{base}-x{copies}.json"
    pp.to_json(net, str(path))
    return GridSpec(source=GridSource.PANDAPOWER_JSON, name=str(path))


def agent_for(
    name: str, *, pmu_every: int = 3, branches_per_pmu: int = 2
) -> tuple[AgentSpec, GridModel]:
    """`cigre-mv` is the shipped agent; any other name is a pandapower library grid (or n copies
    of one, `mv_oberrhein*6`) with a PMU on every `pmu_every`-th bus (voltage phasor and up to
    `branches_per_pmu` line currents)."""
    if name == "cigre-mv":
        spec = load_agent_spec(REPO / "agents" / "cigre-mv.yaml")
        return spec, load_grid(spec.grid)
    grid_spec = _replicated(name) if "*" in name else GridSpec(name=name)
    grid = load_grid(grid_spec)
    devices = candidate_pmus(grid, lines_per_pmu=branches_per_pmu)[::pmu_every]
    spec = AgentSpec(
        area=re.sub(r"[^A-Za-z0-9_.\-]", "-", name),
        grid=grid_spec,
        devices=devices,
        # transmission cases run near their limits with generators held at fixed P/Q
        emulator=EmulatorSpec(load_variation=0.05),
        # transmission (>= 110 kV everywhere): zero injections at 1 MW; with flows of hundreds of
        # MW a tighter sigma only makes the gain ill-conditioned (refactored every iteration)
        estimator=EstimatorSpec(
            sigmas=SigmaSpec(zero_injection_mw=1.0 if float(grid.vn_kv.min()) >= 100 else 0.01)
        ),
    )
    return spec, grid


def windows(spec: AgentSpec, grid: GridModel, count: int) -> list[tuple[Window, np.ndarray]]:
    """`count` emulated windows 100 ms apart, with the true voltages."""
    fleet = PmuFleet(spec, grid)
    out = []
    for k in range(count):
        ts = T0 + k * timedelta(milliseconds=100)
        instant = fleet.step(ts)
        window = Window(
            area=spec.area,
            window_start=ts,
            period_s=0.1,
            frames={f.device: f for f in instant.frames},
            closed_at=ts,
        )
        out.append((window, instant.v))
    return out
