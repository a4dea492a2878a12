"""The load-scale state: one extra state scales every nominal pseudo load."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from dsotp_streams.adapters.grids import load_pandapower_net
from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.core.estimation import Estimator, MeasurementMap
from dsotp_streams.core.estimation.measurements import Kind
from dsotp_streams.core.grid import GridModel
from dsotp_streams.emulator import PmuFleet
from tests.unit.core.estimation.test_engine import T0, _window

FEEDER_ENDS = ("Bus 0", "Bus 1", "Bus 12", "Bus 11", "Bus 14")


def _five_pmus(spec: AgentSpec, *, tve_percent: float, load_scale: bool) -> AgentSpec:
    return spec.model_copy(
        update={
            "devices": [d for d in spec.devices if d.bus in FEEDER_ENDS],
            "emulator": spec.emulator.model_copy(
                update={"load_variation": 0.0, "tve_percent": tve_percent}
            ),
            "estimator": spec.estimator.model_copy(update={"load_scale": load_scale}),
        }
    )


@pytest.fixture(scope="module")
def light_grid(spec: AgentSpec) -> GridModel:
    """The demo grid with its loads at 40 % of what the model says."""
    net = load_pandapower_net(spec.grid)
    net.load[["p_mw", "q_mvar"]] *= 0.4
    return GridModel.from_pandapower(net)


def _median_error(
    spec: AgentSpec, *, truth_grid: GridModel, model: GridModel
) -> tuple[float, float]:
    fleet = PmuFleet(spec, truth_grid)
    estimator = Estimator(spec, grid=model)
    errors, scale = [], float("nan")
    for k in range(10):
        instant = fleet.step(T0 + k * timedelta(milliseconds=100))
        estimate = estimator.estimate(_window(instant), truth=instant.truth)
        assert estimate.max_true_dvm_pu is not None, estimate.reason
        errors.append(estimate.max_true_dvm_pu)
        scale = estimate.load_scale if estimate.load_scale is not None else float("nan")
    return float(np.median(errors)), scale


def test_a_lightly_loaded_grid_is_estimated_as_such(
    spec: AgentSpec, grid: GridModel, light_grid: GridModel
) -> None:
    on = _five_pmus(spec, tve_percent=1.0, load_scale=True)
    off = _five_pmus(spec, tve_percent=1.0, load_scale=False)
    error_on, scale = _median_error(on, truth_grid=light_grid, model=grid)
    error_off, no_scale = _median_error(off, truth_grid=light_grid, model=grid)
    # loads at 40 % (PV at nominal): the estimated scale says so, within the PMUs' noise
    assert 0.3 < scale < 0.6
    assert np.isnan(no_scale)
    # nominal pseudo loads pull a 5-PMU estimate 0.44 % off; the scale takes most of it out
    assert error_on < 0.0025
    assert error_on < 0.5 * error_off


def test_the_prior_comes_with_nominal_pseudo_loads_only(spec: AgentSpec, grid: GridModel) -> None:
    instant = PmuFleet(spec, grid).step(T0)
    ms = MeasurementMap(spec, grid=grid).build(_window(instant))
    prior = np.flatnonzero(ms.kind == Kind.LOAD_SCALE)
    assert len(prior) == 1 and ms.value[prior[0]] == 1.0 and ms.never_bad[prior[0]]
    scaled = np.flatnonzero(ms.load_share != 0.0)
    assert len(scaled) > 0
    assert all(ms.label[i].endswith((":pseudo_p", ":pseudo_q")) for i in scaled)
    # consumption: an injection below zero at every loaded bus's P row
    p_rows = [i for i in scaled if ms.kind[i] == Kind.P_INJ]
    assert all(ms.load_share[i] < 0 for i in p_rows)

    off = spec.model_copy(
        update={"estimator": spec.estimator.model_copy(update={"load_scale": False})}
    )
    ms_off = MeasurementMap(off, grid=grid).build(_window(instant))
    assert not np.any(ms_off.kind == Kind.LOAD_SCALE) and not np.any(ms_off.load_share)
    assert ms_off.size == ms.size - 1


def test_forecast_pseudo_loads_are_not_scaled(spec: AgentSpec, grid: GridModel) -> None:
    mapping = MeasurementMap(spec, grid=grid)
    names = [name for name, _idx in grid.named_buses]
    mapping.set_pseudo_injections({name: (0.1, 0.02, 0.01) for name in names})
    ms = mapping.build(_window(PmuFleet(spec, grid).step(T0)))
    assert not np.any(ms.kind == Kind.LOAD_SCALE) and not np.any(ms.load_share)
