from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np

from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.contracts.frames import Measurand, parse_frame
from dsotp_streams.core.grid import GridModel
from dsotp_streams.emulator import PmuFleet

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
