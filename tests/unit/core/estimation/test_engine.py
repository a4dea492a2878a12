from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.contracts.frames import Measurand, PmuFrame, Reading
from dsotp_streams.contracts.messages import EstimateStatus, Window
from dsotp_streams.core.estimation import Estimator, MeasurementMap
from dsotp_streams.core.estimation.reference import solve_pandapower
from dsotp_streams.core.estimation.wls import WlsOptions, solve_wls
from dsotp_streams.core.grid import GridModel
from dsotp_streams.emulator import EmulatedInstant, PmuFleet

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _spec_with(spec: AgentSpec, *, tve_percent: float, seed: int = 3) -> AgentSpec:
    emulator = spec.emulator.model_copy(update={"tve_percent": tve_percent, "seed": seed})
    return spec.model_copy(update={"emulator": emulator})


def _window(instant: EmulatedInstant, *, area: str = "cigre-mv") -> Window:
    return Window(
        area=area,
        window_start=instant.truth.timestamp,
        period_s=0.1,
        frames={f.device: f for f in instant.frames},
        closed_at=instant.truth.timestamp,
    )


def _max_dvm(estimate_buses: list[tuple[float, float | None]]) -> float:
    return max(abs(vm - true) for vm, true in estimate_buses if true is not None)


def test_estimation_noise_free_recovers_the_true_state(spec: AgentSpec, grid: GridModel) -> None:
    clean = _spec_with(spec, tve_percent=0.0)
    instant = PmuFleet(clean, grid).step(T0)
    estimate = Estimator(clean, grid=grid).estimate(_window(instant), truth=instant.truth)
    assert estimate.status is EstimateStatus.OK
    assert len(estimate.buses) == 15
    assert estimate.max_true_dvm_pu is not None
    # exact PMUs; only the loose pseudo-injections (nominal loads) pull a little
    assert estimate.max_true_dvm_pu < 2e-5
    for bus in estimate.buses:
        assert bus.va_deg == pytest.approx(bus.true_va_deg, abs=1e-3)


def test_estimation_noisy_stays_within_pmu_accuracy(spec: AgentSpec, grid: GridModel) -> None:
    fleet = PmuFleet(spec, grid)
    estimator = Estimator(spec, grid=grid)
    errors = []
    for k in range(20):
        instant = fleet.step(T0 + k * timedelta(milliseconds=100))
        estimate = estimator.estimate(_window(instant), truth=instant.truth)
        assert estimate.status is EstimateStatus.OK, estimate.reason
        assert estimate.dof is not None and estimate.dof > 0
        assert estimate.max_true_dvm_pu is not None
        errors.append(estimate.max_true_dvm_pu)
    # 1 % TVE PMUs: the estimate is better than a single PMU's magnitude error (0.27 % sigma)
    assert float(np.median(errors)) < 0.002
    assert max(errors) < 0.005


def test_estimation_gross_error_is_detected_and_removed(spec: AgentSpec, grid: GridModel) -> None:
    instant = PmuFleet(_spec_with(spec, tve_percent=0.2), grid).step(T0)
    frames = []
    for frame in instant.frames:
        if frame.device == "pmu-n5":
            readings = [
                r.model_copy(update={"data": r.data * 1.08})
                if r.measurand is Measurand.VOLTMAGNITUDE
                else r
                for r in frame.readings
            ]
            frame = frame.model_copy(update={"readings": readings})
        frames.append(frame)
    window = _window(EmulatedInstant(frames, instant.truth, instant.v))
    estimate = Estimator(spec, grid=grid).estimate(window, truth=instant.truth)
    assert estimate.bad_data == ["pmu-n5:Bus 5:voltmagnitude"]
    assert estimate.status is EstimateStatus.OK
    assert estimate.max_true_dvm_pu is not None and estimate.max_true_dvm_pu < 0.005


def test_estimation_without_bad_data_check_fails_chi2(spec: AgentSpec, grid: GridModel) -> None:
    instant = PmuFleet(_spec_with(spec, tve_percent=0.2), grid).step(T0)
    mapping = MeasurementMap(spec, grid=grid)
    ms = mapping.build(_window(instant))
    bad = int(np.flatnonzero(np.array(ms.label) == "pmu-n8:Bus 8:voltmagnitude")[0])
    value = ms.value.copy()
    value[bad] *= 1.08
    tampered = replace(ms, value=value)
    result = solve_wls(grid, ms=tampered, options=WlsOptions(bad_data=False))
    assert not result.passes_chi2
    assert result.objective > result.chi2_threshold


def test_estimation_unobservable_window_is_a_status_not_an_exception(
    spec: AgentSpec, grid: GridModel
) -> None:
    missing = sorted(d.id for d in spec.devices)
    window = Window(
        area="cigre-mv",
        window_start=T0,
        period_s=0.1,
        frames={},
        closed_at=T0,
        missing_devices=missing,
    )
    estimate = Estimator(spec, grid=grid).estimate(window)
    assert estimate.status is EstimateStatus.NOT_OBSERVABLE
    assert estimate.reason is not None and "no real measurement" in estimate.reason
    # the reason says what would make it observable: the devices that did not report
    assert f"devices missing in this window: {', '.join(missing)}" in estimate.reason
    assert estimate.buses == []


def test_estimation_unknown_components_are_ignored(spec: AgentSpec, grid: GridModel) -> None:
    instant = PmuFleet(_spec_with(spec, tve_percent=0.0), grid).step(T0)
    extra = PmuFrame(
        device="pmu-n1",
        timestamp=T0,
        readings=[
            *instant.frames[1].readings,
            Reading(component="Bus 99", measurand=Measurand.VOLTMAGNITUDE, data=1.0),
        ],
    )
    frames = {f.device: f for f in instant.frames} | {"pmu-n1": extra}
    window = Window(area="cigre-mv", window_start=T0, period_s=0.1, frames=frames, closed_at=T0)
    estimate = Estimator(spec, grid=grid).estimate(window, truth=instant.truth)
    assert estimate.status is EstimateStatus.OK
    assert estimate.max_true_dvm_pu is not None and estimate.max_true_dvm_pu < 2e-5


def test_estimation_agrees_with_pandapower_reference(spec: AgentSpec, grid: GridModel) -> None:
    instant = PmuFleet(_spec_with(spec, tve_percent=0.0), grid).step(T0)
    ms = MeasurementMap(spec, grid=grid).build(_window(instant))
    ours = solve_wls(grid, ms=ms, options=WlsOptions())
    theirs = solve_pandapower(grid, ms=ms)
    named = [idx for _name, idx in grid.named_buses]
    # pandapower ignores the PMU angles, so it leans on magnitudes and pseudo injections
    assert np.max(np.abs(np.abs(ours.v[named]) - np.abs(theirs[named]))) < 5e-3
    assert np.max(np.abs(np.abs(ours.v[named]) - np.abs(instant.v[named]))) < 2e-5


def _forecast_at_nominal(grid: GridModel, scale: float, sigma_mw: float) -> dict[str, tuple]:
    """A forecast of every loaded bus: `scale` times its nominal load, with a given sigma."""
    p, q = grid.nominal_injection_pu()
    base = grid.base_mva
    return {
        name: (-scale * p[idx] * base, -scale * q[idx] * base, sigma_mw)
        for name, idx in grid.named_buses
        if p[idx] != 0.0
    }


def test_a_forecast_that_contradicts_the_pmus_is_set_aside(
    spec: AgentSpec, grid: GridModel
) -> None:
    fleet = PmuFleet(spec, grid)
    estimator = Estimator(spec, grid=grid)
    # a confident forecast of another grid: three times every load, a narrow band
    estimator.mapping.set_pseudo_injections(_forecast_at_nominal(grid, 3.0, 0.01))
    assert estimator.mapping.uses_forecast
    instant = fleet.step(T0)
    estimate = estimator.estimate(_window(instant), truth=instant.truth)
    assert estimator.forecast_rejected
    assert not estimator.mapping.uses_forecast  # back on the nominal pseudo injections
    assert estimate.status is EstimateStatus.OK and estimate.bad_data == []
    assert estimate.max_true_dvm_pu is not None and estimate.max_true_dvm_pu < 0.005
    # with the forecast kept, the same window loses real PMU measurements as bad data
    stubborn = Estimator(spec, grid=grid)
    stubborn.mapping.set_pseudo_injections(_forecast_at_nominal(grid, 3.0, 0.01))
    forced = stubborn._estimate(_window(instant), instant.truth)
    assert forced.status is EstimateStatus.BAD_DATA
    assert any(label.startswith("pmu-") for label in forced.bad_data)
    # the next window runs on nominal pseudo injections at once
    following = fleet.step(T0 + timedelta(milliseconds=100))
    assert estimator.estimate(_window(following)).status is EstimateStatus.OK
    assert not estimator.forecast_rejected


def test_a_forecast_that_agrees_with_the_pmus_is_kept(spec: AgentSpec, grid: GridModel) -> None:
    fleet = PmuFleet(spec, grid)
    estimator = Estimator(spec, grid=grid)
    estimator.mapping.set_pseudo_injections(_forecast_at_nominal(grid, 1.0, 0.05))
    for k in range(10):
        instant = fleet.step(T0 + k * timedelta(milliseconds=100))
        estimate = estimator.estimate(_window(instant), truth=instant.truth)
        assert estimate.status is EstimateStatus.OK, estimate.reason
        assert not estimator.forecast_rejected
    assert estimator.mapping.uses_forecast
    labels = [row[4] for row in estimator.mapping.pseudo_injections]
    assert any(label.endswith(":forecast_p") for label in labels)
