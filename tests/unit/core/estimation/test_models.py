"""The WLS engine on harder models: islands, generators, ratings; bad data that chi2 misses."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest

from dsotp_streams.adapters.grids import load_grid
from dsotp_streams.contracts.agent import AgentSpec, DeviceSpec, GridSpec
from dsotp_streams.contracts.messages import EstimateStatus, Window
from dsotp_streams.core.estimation import Estimator, MeasurementMap
from dsotp_streams.core.estimation.wls import WlsOptions, residual_variances, solve_wls
from dsotp_streams.core.grid import GridModel
from dsotp_streams.emulator import PmuFleet

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _window(spec: AgentSpec, grid: GridModel) -> tuple[Window, np.ndarray]:
    instant = PmuFleet(spec, grid).step(T0)
    frames = {f.device: f for f in instant.frames}
    return Window(area=spec.area, window_start=T0, period_s=0.1, frames=frames, closed_at=T0), (
        instant.v
    )


def test_two_islands_each_with_its_slack_are_estimated() -> None:
    grid = load_grid(GridSpec(name="mv_oberrhein"))
    assert len(grid.slacks) == 2
    assert set(grid.island[grid.slacks].tolist()) == {0, 1}
    names = [name for name, _idx in grid.named_buses]
    devices = [DeviceSpec(id=f"pmu-{k}", bus=names[k]) for k in range(0, len(names), 3)]
    spec = AgentSpec(area="oberrhein", grid=GridSpec(name="mv_oberrhein"), devices=devices)
    window, v_true = _window(spec, grid)
    estimate = Estimator(spec, grid=grid).estimate(window)
    assert estimate.status is EstimateStatus.OK, estimate.reason
    named = [idx for _name, idx in grid.named_buses]
    vm = {b.bus: b.vm_pu for b in estimate.buses}
    err = max(abs(vm[name] - abs(v_true[idx])) for name, idx in grid.named_buses)
    assert err < 0.01
    assert len(named) == len(estimate.buses) == 179


def test_generators_are_held_at_their_power_flow_injection() -> None:
    grid = load_grid(GridSpec(name="example_simple"))
    assert int(grid.sgen_fixed.sum()) == 1
    assert not grid.net.gen.in_service.any()
    p, q = grid.nominal_injection_pu()
    mismatch = grid.v_nominal * np.conj(grid.ybus @ grid.v_nominal) - (p + 1j * q)
    mismatch[grid.slacks] = 0
    assert np.max(np.abs(mismatch)) < 1e-6


def test_estimate_reports_both_ends_and_loading(spec: AgentSpec, grid: GridModel) -> None:
    window, _v = _window(spec, grid)
    estimate = Estimator(spec, grid=grid).estimate(window)
    lines = {f.line: f for f in estimate.lines}
    trafo = lines["Trafo 0-1"]
    assert trafo.loading_percent is not None and 0 < trafo.loading_percent < 150
    assert trafo.i_to_ka > trafo.i_from_ka  # 110 kV -> 20 kV
    line = lines["Line 1-2"]
    assert line.p_from_mw > 0 > line.p_to_mw
    assert line.loading_percent is not None
    assert estimate.chi2 is not None and estimate.dof is not None and estimate.dof > 0


def test_gross_error_below_the_chi2_radar_is_found_by_its_normalised_residual(
    spec: AgentSpec, grid: GridModel
) -> None:
    window, _v = _window(spec, grid)
    ms = MeasurementMap(spec, grid=grid).build(window)
    clean = solve_wls(grid, ms=ms, options=WlsOptions())
    assert clean.bad_data == []
    redundancy = residual_variances(grid, ms=ms, v=clean.v) / ms.sigma**2
    real = np.flatnonzero(~ms.pseudo & ~ms.exact & (redundancy > 0.3))
    index = int(real[0])
    value = ms.value.copy()
    value[index] += 20.0 * ms.sigma[index]
    bad = replace(ms, value=value)
    without_lnr = solve_wls(grid, ms=bad, options=WlsOptions(lnr_detection=None))
    with_lnr = solve_wls(grid, ms=bad, options=WlsOptions())
    assert with_lnr.bad_data == [ms.label[index]]
    # the estimate after removal is as good as the clean one
    assert np.max(np.abs(np.abs(with_lnr.v) - np.abs(clean.v))) < 5e-3
    assert without_lnr.bad_data in ([], [ms.label[index]])


def test_no_real_measurement_is_not_observable(spec: AgentSpec, grid: GridModel) -> None:
    ms = MeasurementMap(spec, grid=grid).build(
        Window(area=spec.area, window_start=T0, period_s=0.1, frames={}, closed_at=T0)
    )
    assert ms.size > 0 and bool(ms.pseudo.any())
    with pytest.raises(Exception, match="no real measurement"):
        solve_wls(grid, ms=ms, options=WlsOptions())


def test_normalised_residuals_on_request_point_at_the_gross_error(
    spec: AgentSpec, grid: GridModel
) -> None:
    window, _v = _window(spec, grid)
    ms = MeasurementMap(spec, grid=grid).build(window)
    assert solve_wls(grid, ms=ms, options=WlsOptions()).normalized_residuals is None  # off
    clean = solve_wls(grid, ms=ms, options=WlsOptions(residuals=True))
    assert clean.normalized_residuals is not None
    assert set(clean.normalized_residuals) == set(ms.label)
    assert max(clean.normalized_residuals.values()) < 4.0
    redundancy = residual_variances(grid, ms=ms, v=clean.v) / ms.sigma**2
    index = int(np.flatnonzero(~ms.pseudo & ~ms.exact & (redundancy > 0.3))[0])
    value = ms.value.copy()
    value[index] += 20.0 * ms.sigma[index]
    bad = replace(ms, value=value)
    seen = solve_wls(grid, ms=bad, options=WlsOptions(residuals=True, bad_data=False))
    assert seen.normalized_residuals is not None
    worst = max(seen.normalized_residuals, key=lambda k: seen.normalized_residuals[k])  # type: ignore[index]
    assert worst == ms.label[index] and seen.normalized_residuals[worst] > 10.0


def test_an_estimate_carries_its_residuals_only_when_the_spec_asks(
    spec: AgentSpec, grid: GridModel
) -> None:
    from dsotp_streams.core.estimation import Estimator

    window, _v = _window(spec, grid)
    assert Estimator(spec, grid=grid).estimate(window).residuals is None
    asking = spec.model_copy(
        update={"estimator": spec.estimator.model_copy(update={"residuals": True})}
    )
    estimate = Estimator(asking, grid=grid).estimate(window)
    assert estimate.residuals and all(v >= 0 for v in estimate.residuals.values())
    assert any(label.endswith(":voltmagnitude") for label in estimate.residuals)
