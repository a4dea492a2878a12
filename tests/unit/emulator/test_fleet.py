from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np

from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.contracts.frames import Measurand, parse_frame
from dsotp_streams.core.grid import GridModel
from dsotp_streams.emulator import PmuFleet
from dsotp_streams.emulator.history import backfill_rows

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def test_fleet_frames_are_valid_sogno_json(spec: AgentSpec, grid: GridModel) -> None:
    instant = PmuFleet(spec, grid).step(T0)
    assert {f.device for f in instant.frames} == set(spec.device_ids)
    for frame in instant.frames:
        again = parse_frame(frame.model_dump_json())
        assert again == frame
        assert again.timestamp == T0


def test_fleet_total_vector_error_meets_the_class(spec: AgentSpec, grid: GridModel) -> None:
    fleet = PmuFleet(spec, grid)
    tve = []
    for k in range(100):
        instant = fleet.step(T0 + k * timedelta(milliseconds=100))
        for frame in instant.frames:
            values = {r.measurand: r.data for r in frame.readings if r.component.startswith("Bus")}
            bus = frame.readings[0].component
            v_base = 20_000 / math.sqrt(3) if bus != "Bus 0" else 110_000 / math.sqrt(3)
            true = instant.truth.vm_pu[bus] * np.exp(1j * math.radians(instant.truth.va_deg[bus]))
            measured = (
                values[Measurand.VOLTMAGNITUDE] / v_base * np.exp(1j * values[Measurand.VOLTANGLE])
            )
            tve.append(abs(measured - true) / abs(true))
    tve_arr = np.array(tve)
    assert np.quantile(tve_arr, 0.99) < 0.01
    assert np.median(tve_arr) > 0.001  # there is noise


def test_fleet_loads_vary_over_time(spec: AgentSpec, grid: GridModel) -> None:
    fleet = PmuFleet(spec, grid)
    first = fleet.step(T0).truth.vm_pu["Bus 11"]
    later = fleet.step(T0 + timedelta(seconds=75)).truth.vm_pu["Bus 11"]
    assert abs(first - later) > 1e-3


def _wall_clock(spec: AgentSpec) -> AgentSpec:
    emulator = spec.emulator.model_copy(update={"profile_clock": "wall", "profile_step_s": 900.0})
    return spec.model_copy(update={"emulator": emulator})


def test_wall_clock_profiles_follow_the_time_of_year_and_day(
    spec: AgentSpec, grid: GridModel
) -> None:
    """With `profile_clock: wall` the loads are the profile step of the instant's own time of
    year (a daily profile shape, PV only by day); the expected loads match the fleet's."""
    rng = np.random.default_rng(1)
    profiles = 1.0 + 0.5 * np.cos(2 * np.pi * np.arange(96 * 366) / 96)[:, None] * np.ones((1, 3))
    profiles += 0.01 * rng.standard_normal(profiles.shape)
    fleet = PmuFleet(_wall_clock(spec), grid, profiles)
    night = datetime(2026, 3, 2, 0, 7, 30, tzinfo=UTC)
    noon = night + timedelta(hours=12)
    names, loads = fleet.expected_bus_loads_mw([night, noon, night + timedelta(days=1)])
    assert len(names) == 15 and loads.shape == (3, 15)
    np.testing.assert_allclose(loads[0], loads[2], rtol=0.1)  # the same time of day, next day
    assert not np.allclose(loads[0], loads[1], rtol=0.1)  # night and noon differ
    night_only = PmuFleet(_wall_clock(spec), grid, profiles)
    # the emulated instant: net injections close to the expected loads (2 % noise on loads)
    p, _q = night_only.injections(0.0, noon.timestamp())
    emulated = -p[[idx for _n, idx in grid.named_buses]] * grid.base_mva
    np.testing.assert_allclose(emulated, loads[1], rtol=0.1, atol=0.05)
    # PV by day only: at midnight UTC it gives nothing, so the net load there is the load alone
    pv = PmuFleet(_wall_clock(spec), grid, np.ones((96 * 366, 1)))
    _names, flat = pv.expected_bus_loads_mw([night, noon])
    assert np.all(flat[1] <= flat[0] + 1e-9) and np.any(flat[1] < flat[0] - 1e-3)


def test_backfill_rows_hold_one_load_per_bus_and_step_before_now(
    spec: AgentSpec, grid: GridModel
) -> None:
    fleet = PmuFleet(_wall_clock(spec), grid, np.ones((96 * 366, 1)))
    now = datetime(2026, 3, 2, 10, 20, tzinfo=UTC)
    rows = backfill_rows(fleet, now, days=2)
    assert len(rows) == 2 * 96 * 15
    assert {r.measurement for r in rows} == {"state"} and {r.tags["area"] for r in rows} == {
        spec.area
    }
    times = sorted({r.ts_ns for r in rows})
    assert times[-1] < now.timestamp() * 1e9 - 300e9  # the current step is left to live data
    assert times[-1] - times[0] == (2 * 96 - 1) * 900e9
