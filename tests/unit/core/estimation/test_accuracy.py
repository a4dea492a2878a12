"""Every measurement's sigma follows from what its device is: a C37.118.1 class by default,
instrument transformers added where the spec names them, per device where it says so."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from dsotp_streams.contracts.agent import AgentSpec, DeviceAccuracy, InstrumentClass
from dsotp_streams.contracts.messages import Window
from dsotp_streams.core.estimation import MeasurementMap
from dsotp_streams.core.grid import GridModel
from dsotp_streams.emulator import PmuFleet
from dsotp_streams.runtime.stages import FrameIntake

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def test_the_default_is_an_m_class_pmu_with_its_limit_as_three_sigma() -> None:
    m_class = DeviceAccuracy()
    assert m_class.tve_percent == 1.0
    assert m_class.vm_rel == pytest.approx(0.01 / 3)
    assert m_class.va_rad == pytest.approx(0.01 / 3)  # 1 % TVE allows 10 mrad of angle
    assert m_class.im_rel == m_class.vm_rel and m_class.ia_rad == m_class.va_rad


def test_instrument_transformers_add_their_class_to_the_pmus() -> None:
    with_ct = DeviceAccuracy(tve_percent=0.5, ct_class=InstrumentClass.C0_5)
    assert with_ct.im_rel == pytest.approx(math.hypot(0.005, 0.005) / 3)
    thirty_minutes = 30 * math.pi / (180 * 60)
    assert with_ct.ia_rad == pytest.approx(math.hypot(0.005, thirty_minutes) / 3)
    assert with_ct.vm_rel == pytest.approx(0.005 / 3)  # no VT named: the voltage is the PMU's
    vt = DeviceAccuracy(vt_class=0.2)  # a number in YAML is read as its class
    assert vt.vt_class is InstrumentClass.C0_2
    assert vt.va_rad == pytest.approx(math.hypot(0.01, 10 * math.pi / (180 * 60)) / 3)
    stated = DeviceAccuracy(vm_percent=0.1, va_mrad=1.0)
    assert (stated.vm_rel, stated.va_rad) == pytest.approx((0.001 / 3, 0.001 / 3))
    with pytest.raises(ValidationError):
        DeviceAccuracy(ct_class=0.3)


def _window(spec: AgentSpec, grid: GridModel) -> Window:
    intake = FrameIntake(spec, grid=grid, max_payload_bytes=100_000, event_time=True)
    for frame in PmuFleet(spec, grid).step(T0).frames:
        intake.offer(frame.model_dump_json().encode())
    return intake.flush()[0]


def test_a_device_with_its_own_accuracy_gets_its_own_sigmas(
    spec: AgentSpec, grid: GridModel
) -> None:
    precise = DeviceAccuracy(tve_percent=0.1)
    first = spec.devices[0].model_copy(update={"accuracy": precise})
    own = spec.model_copy(update={"devices": [first, *spec.devices[1:]]})
    window = _window(own, grid)
    ms = MeasurementMap(own, grid=grid).build(window)
    for label, value, sigma, pseudo in zip(ms.label, ms.value, ms.sigma, ms.pseudo, strict=True):
        if pseudo or not label.endswith(":voltmagnitude"):
            continue
        expected = precise if label.startswith(f"{first.id}:") else own.estimator.accuracy
        assert sigma == pytest.approx(expected.vm_rel * value)
