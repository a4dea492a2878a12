"""FLISR on the grid model: location from fault passage and voltage sags, isolation, restoration."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dsotp_streams.adapters.grids import load_grid
from dsotp_streams.contracts.agent import AgentSpec, DeviceSpec, FlisrSpec, GridSpec
from dsotp_streams.contracts.messages import Window
from dsotp_streams.contracts.storage import rows_from_flisr
from dsotp_streams.core.flisr import FaultDetector, FaultObservation, FlisrPlanner, fault_state
from dsotp_streams.core.grid import GridModel
from dsotp_streams.emulator import PmuFleet
from dsotp_streams.errors import SpecError

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _window(spec: AgentSpec, fleet: PmuFleet, ts: datetime, v: object | None = None) -> Window:
    frames = fleet.frames_for(ts, v) if v is not None else fleet.step(ts).frames  # type: ignore[arg-type]
    return Window(
        area=spec.area,
        window_start=ts,
        period_s=0.1,
        frames={f.device: f for f in frames},
        closed_at=ts,
    )


def _faulted_case(spec: AgentSpec, grid: GridModel, line: str) -> tuple[FaultObservation, object]:
    fleet, detector = PmuFleet(spec, grid), FaultDetector(spec, grid=grid)
    for k in range(4):
        assert detector.observe(_window(spec, fleet, T0 + timedelta(milliseconds=100 * k))) is None
    v0 = fleet.step(T0 + timedelta(milliseconds=400)).v
    ref = grid.branches[line]
    depth = fleet._depths()
    far = max((ref.from_bus, ref.to_bus), key=lambda b: depth.get(b, 0))
    observation = detector.observe(
        _window(spec, fleet, T0 + timedelta(seconds=1), fault_state(grid, v_prefault=v0, bus=far))
    )
    assert observation is not None
    return observation, v0


def test_every_cigre_line_fault_is_located_isolated_and_restored(
    spec: AgentSpec, grid: GridModel
) -> None:
    planner = FlisrPlanner(grid, spec=spec.flisr)
    lines = [r.name for r in grid.branches.values() if r.element == "line"]
    in_circuit = [ln for ln in lines if planner.normal.degree(planner.element_of[ln]) >= 2]
    assert len(in_circuit) == 12  # the three tie lines (S1-S3 open) are out of circuit
    for line in in_circuit:
        observation, v0 = _faulted_case(spec, grid, line)
        event = planner.plan(observation, area=spec.area, v_prefault=v0)  # type: ignore[arg-type]
        assert event.status == "planned"
        assert event.fault_lines == [line], (line, event.candidates)
        opened = [a for a in event.sequence if a.purpose == "isolate"]
        assert {a.switch for a in opened} == {f"{line}@{b}" for b in {a.bus for a in opened}}
        assert len(opened) == 2 and all(a.action == "open" for a in opened)
        closed = [a.switch for a in event.sequence if a.purpose == "restore"]
        assert set(closed) <= {"S1", "S2", "S3"}
        assert event.checks["passed"] is True and event.checks["radial"] is True
        assert float(event.checks["max_loading_percent"]) <= 100.0
        assert event.restored_mw > 0 and event.unserved_mw == 0
        assert [a.step for a in event.sequence] == list(range(1, len(event.sequence) + 1))


def test_plan_is_stored_as_one_annotated_row(spec: AgentSpec, grid: GridModel) -> None:
    observation, v0 = _faulted_case(spec, grid, "Line 8-9")
    event = FlisrPlanner(grid, spec=spec.flisr).plan(observation, area=spec.area, v_prefault=v0)  # type: ignore[arg-type]
    (row,) = rows_from_flisr(event)
    assert row.measurement == "flisr" and row.tags == {"area": spec.area, "kind": "planned"}
    assert "Line 8-9" in str(row.fields["text"]) and "close S3" in str(row.fields["plan"])


def test_existing_switches_only_isolate_the_whole_feeder(spec: AgentSpec, grid: GridModel) -> None:
    existing = spec.flisr.model_copy(update={"switchable": "existing"})
    observation, v0 = _faulted_case(spec, grid, "Line 3-4")
    event = FlisrPlanner(grid, spec=existing).plan(observation, area=spec.area, v_prefault=v0)  # type: ignore[arg-type]
    # without line-end switches the section is everything between the tie switches and the
    # transformer breakers: the whole first feeder is isolated and cannot be restored
    assert "Line 3-4" in event.fault_lines and "Line 1-2" in event.fault_lines
    assert event.unserved_mw > 10 and "Bus 5" in event.unserved_buses


def test_no_indication_and_no_sag_locates_nothing(spec: AgentSpec, grid: GridModel) -> None:
    planner = FlisrPlanner(grid, spec=spec.flisr)
    measured = {b: False for d in spec.devices for b in d.branches}
    event = planner.plan(
        FaultObservation(T0, "undervoltage at Bus 1", measured, {}), area=spec.area
    )
    assert event.status == "not_located" and event.sequence == []
    assert event.reason is not None and "no PMU saw fault current" in event.reason


def test_detector_learns_normal_currents_and_fires_once(spec: AgentSpec, grid: GridModel) -> None:
    fleet, detector = PmuFleet(spec, grid), FaultDetector(spec, grid=grid)
    for k in range(20):
        assert detector.observe(_window(spec, fleet, T0 + timedelta(milliseconds=100 * k))) is None
    v0 = fleet.step(T0 + timedelta(seconds=2)).v
    far = grid.bus_index["Bus 9"]
    faulted = fault_state(grid, v_prefault=v0, bus=far)
    first = detector.observe(_window(spec, fleet, T0 + timedelta(seconds=3), faulted))
    again = detector.observe(_window(spec, fleet, T0 + timedelta(seconds=3.1), faulted))
    assert first is not None and "overcurrent" in first.trigger and again is None  # cooldown


def test_fault_on_an_unknown_line_is_a_spec_error(spec: AgentSpec, grid: GridModel) -> None:
    with pytest.raises(SpecError, match="no branch"):
        PmuFleet(spec, grid).schedule_fault("Line 99-100", at_s=1.0)


def test_larger_grid_faults_are_located_and_plans_pass_the_power_flow() -> None:
    grid = load_grid(GridSpec(name="mv_oberrhein"))
    names = [name for name, _idx in grid.named_buses]
    lines_at: dict[int, list[str]] = {}
    for ref in grid.branches.values():
        if ref.element == "line":
            lines_at.setdefault(ref.from_bus, []).append(ref.name)
    devices = [
        DeviceSpec(
            id=f"pmu-{k}", bus=names[k], branches=lines_at.get(grid.bus_index[names[k]], [])[:2]
        )
        for k in range(0, len(names), 3)
    ]
    spec = AgentSpec(
        area="oberrhein", grid=GridSpec(name="mv_oberrhein"), devices=devices, flisr=FlisrSpec()
    )
    planner = FlisrPlanner(grid, spec=spec.flisr)
    lines = [r.name for r in grid.branches.values() if r.element == "line"]
    lines = [ln for ln in lines if planner.normal.degree(planner.element_of[ln]) >= 2][::20]
    assert len(lines) >= 8
    for line in lines:
        observation, v0 = _faulted_case(spec, grid, line)
        event = planner.plan(observation, area=spec.area, v_prefault=v0)  # type: ignore[arg-type]
        assert line in event.fault_lines, (line, event.candidates[:3])
        assert event.checks["passed"] is True


def test_detector_opens_cases_for_trips_lost_devices_and_failing_estimates(
    spec: AgentSpec, grid: GridModel
) -> None:
    fleet, detector = PmuFleet(spec, grid), FaultDetector(spec, grid=grid)
    windows = [_window(spec, fleet, T0 + timedelta(milliseconds=100 * k)) for k in range(12)]
    for window in windows[:10]:
        assert detector.observe(window) is None
    # pmu-n3 stops reporting
    frames = {d: f for d, f in windows[10].frames.items() if d != "pmu-n3"}
    lost = detector.observe(windows[10].model_copy(update={"frames": frames}))
    assert lost is not None and "devices lost: pmu-n3" in lost.trigger
    # a breaker trip: feeder 1's head current falls to nothing (after the cooldown)
    later = T0 + timedelta(seconds=30)
    v = fleet.step(later).v.copy()
    tripped = [
        frame.model_copy(
            update={
                "readings": [
                    r.model_copy(update={"data": 0.0})
                    if r.component == "Line 1-2" and r.measurand.value == "currmagnitude"
                    else r
                    for r in frame.readings
                ]
            }
        )
        for frame in fleet.frames_for(later, v)
    ]
    window = Window(
        area=spec.area,
        window_start=later,
        period_s=0.1,
        frames={f.device: f for f in tripped},
        closed_at=later,
    )
    trip = detector.observe(window)
    assert trip is not None and "current lost on Line 1-2" in trip.trigger
    # estimates failing in a row
    fresh = FaultDetector(spec, grid=grid)
    for _ in range(spec.flisr.failed_estimates):
        fresh.estimate_status(ok=False)
    failing = fresh.observe(windows[11])
    assert failing is not None and "estimates in a row failed" in failing.trigger


def test_a_fault_seen_without_every_pmu_waits_for_a_complete_window(
    spec: AgentSpec, grid: GridModel
) -> None:
    """Frames of the PMUs beyond the first overcurrent branch came late: the case waits (up to
    `incomplete_wait_windows`) for a window with them, and then locates the fault right."""
    fleet, detector = PmuFleet(spec, grid), FaultDetector(spec, grid=grid)
    for k in range(20):
        assert detector.observe(_window(spec, fleet, T0 + timedelta(milliseconds=100 * k))) is None
    v0 = fleet.step(T0 + timedelta(seconds=2)).v
    faulted = fault_state(grid, v_prefault=v0, bus=grid.bus_index["Bus 9"])
    full = _window(spec, fleet, T0 + timedelta(seconds=3), faulted)
    late = {"pmu-n3", "pmu-n8"}
    partial = full.model_copy(
        update={
            "frames": {d: f for d, f in full.frames.items() if d not in late},
            "missing_devices": sorted(late),
        }
    )
    assert spec.flisr.incomplete_wait_windows == 2
    assert detector.observe(partial) is None
    assert detector.observe(partial.model_copy(update={"window_start": full.window_start})) is None
    complete = full.model_copy(update={"window_start": T0 + timedelta(seconds=3.2)})
    observation = detector.observe(complete)
    assert observation is not None
    assert {k for k, flag in observation.passage.items() if flag} >= {"Line 8-9"}
    # with nothing but incomplete windows, the case opens after the wait, from what there is
    fresh = FaultDetector(spec, grid=grid)
    for k in range(20):
        assert fresh.observe(_window(spec, fleet, T0 + timedelta(milliseconds=100 * k))) is None
    outcomes = [fresh.observe(partial) for _ in range(3)]
    assert outcomes[:2] == [None, None] and outcomes[2] is not None


def test_a_late_frame_is_not_a_lost_device_but_a_device_gone_is(
    spec: AgentSpec, grid: GridModel
) -> None:
    fleet, detector = PmuFleet(spec, grid), FaultDetector(spec, grid=grid)
    windows = [_window(spec, fleet, T0 + timedelta(milliseconds=100 * k)) for k in range(30)]
    for window in windows[:10]:
        assert detector.observe(window) is None

    def without(window: Window, device: str) -> Window:
        frames = {d: f for d, f in window.frames.items() if d != device}
        return window.model_copy(update={"frames": frames, "missing_devices": [device]})

    # pmu-n3's frame of one instant came late: the window closed without it, no case
    assert detector.observe(without(windows[10], "pmu-n3")) is None
    for window in windows[11:15]:
        assert detector.observe(window) is None
    # pmu-n5 is gone: after the wait for a complete window, the case opens
    outcomes = [detector.observe(without(w, "pmu-n5")) for w in windows[15:18]]
    assert outcomes[:2] == [None, None]
    case = outcomes[2]
    assert case is not None and case.trigger == "devices lost: pmu-n5"
