"""A window that is not observable names the buses that are not, and where PMUs would help."""

from __future__ import annotations

import numpy as np
import pytest

from dsotp_streams.contracts.agent import AgentSpec, DeviceSpec
from dsotp_streams.core.estimation import MeasurementMap
from dsotp_streams.core.estimation.wls import WlsOptions, solve_wls
from dsotp_streams.core.grid import GridModel
from dsotp_streams.emulator import PmuFleet
from dsotp_streams.errors import NotObservableError
from tests.unit.core.estimation.test_engine import T0, _window


def test_unobservable_buses_are_named_with_the_pmus_that_would_help(
    spec: AgentSpec, grid: GridModel
) -> None:
    one = spec.model_copy(update={"devices": [d for d in spec.devices if d.bus == "Bus 0"]})
    ms = MeasurementMap(one, grid=grid).build(_window(PmuFleet(one, grid).step(T0)))
    # the feeder end loses its pseudo-measurements (a meter that should be there is not)
    gone = [i for i, lbl in enumerate(ms.label) if lbl.startswith(("Bus 13:", "Bus 14:"))]
    assert len(gone) == 4
    for index in sorted(gone, reverse=True):
        ms = ms.without(index)
    with pytest.raises(NotObservableError) as caught:
        solve_wls(grid, ms=ms, options=WlsOptions())
    message = str(caught.value)
    assert "not observable: " in message
    named = message.split("not observable: ", 1)[1].split(" (", 1)[0].split(", ")
    real = {name for name in named if not name.startswith("aux ")}  # an open switch's end
    assert real and real <= {"Bus 13", "Bus 14"}, named
    # and the advice holds: the proposed PMUs' voltage phasors make it observable
    proposed = message.split("a PMU at ", 1)[1].split(" would", 1)[0].split(", ")
    with_pmus = one.model_copy(
        update={
            "devices": [
                *one.devices,
                *(DeviceSpec(id=f"new-{k}", bus=b) for k, b in enumerate(proposed)),
            ]
        }
    )
    window = _window(PmuFleet(with_pmus, grid).step(T0))
    fixed = MeasurementMap(with_pmus, grid=grid).build(window)
    drop = [
        i
        for i, lbl in enumerate(fixed.label)
        if lbl.startswith(("Bus 13:", "Bus 14:")) and lbl.endswith(("_p", "_q"))
    ]
    for index in sorted(drop, reverse=True):
        fixed = fixed.without(index)
    result = solve_wls(grid, ms=fixed, options=WlsOptions(bad_data=False))
    assert np.all(np.isfinite(result.v))
