"""The model follows the switches: a tie switch closed and a line opened mid-stream."""

from __future__ import annotations

import asyncio
import statistics
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.contracts.messages import EstimateStatus, SwitchSource, SwitchState, Window
from dsotp_streams.core.grid import GridModel
from dsotp_streams.core.topology import Topology
from dsotp_streams.emulator import PmuFleet
from dsotp_streams.errors import TopologyError
from dsotp_streams.runtime.stages import FrameIntake, WindowProcessor

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
TIE, LINE = "S2", "Line 4-5@Bus 4"  # S2 joins the feeders at Bus 6-7; then Line 4-5 opens


def _switched(grid: GridModel) -> GridModel:
    topology = Topology(grid.net)
    assert topology.change(TIE, closed=True) is not None
    switched = topology.change(LINE, closed=False)
    assert switched is not None
    return switched


def _errors(processor: WindowProcessor, fleet: PmuFleet, *, start: int, count: int) -> list[float]:
    out = []
    for k in range(start, start + count):
        instant = fleet.step(T0 + k * timedelta(milliseconds=100))
        window = Window(
            area=processor.spec.area,
            window_start=instant.truth.timestamp,
            period_s=0.1,
            frames={f.device: f for f in instant.frames},
            closed_at=instant.truth.timestamp,
        )
        result = asyncio.run(processor.process(window, truth=instant.truth))
        estimate = result.estimate
        assert estimate.max_true_dvm_pu is not None, estimate.reason
        out.append(estimate.max_true_dvm_pu if estimate.status is EstimateStatus.OK else 1.0)
    return out


def _no_forecast(spec: AgentSpec) -> AgentSpec:
    return spec.model_copy(update={"forecast": spec.forecast.model_copy(update={"enabled": False})})


def test_estimates_follow_a_tie_closed_and_a_line_opened(
    spec: AgentSpec, grid: GridModel, tmp_path: Path
) -> None:
    spec = _no_forecast(spec)
    switched_grid = _switched(grid)
    following = WindowProcessor(spec, grid, tmp_path)
    ignoring = WindowProcessor(spec, grid, tmp_path)
    before = _errors(following, PmuFleet(spec, grid), start=0, count=10)
    for switch, closed in ((TIE, True), (LINE, False)):
        state = SwitchState(switch=switch, closed=closed, timestamp=T0)
        assert asyncio.run(following.switch(state)) is None
    assert following.switches_applied == 2
    assert following.grid is grid  # in force from the window at the switch states' time
    after = _errors(following, PmuFleet(spec, switched_grid), start=10, count=20)
    assert following.grid is not grid and "Line 4-5" in following.grid.branches
    assert following.grid.n_bus == grid.n_bus  # one aux bus fewer (S2), one more (the line end)
    stale = _errors(ignoring, PmuFleet(spec, switched_grid), start=10, count=20)
    # the same accuracy on the new topology as on the old one (1 % TVE PMUs: under 0.2 %)
    assert statistics.median(before) < 0.002 and statistics.median(after) < 0.002
    # the windows right after the switching too: the next window is on the new model
    assert after[0] < 0.005
    # an estimator that kept the old topology is off (or fails its chi-square test)
    assert statistics.median(stale) > 3 * statistics.median(after)


def test_refused_switchings_leave_the_model_as_it_was(
    spec: AgentSpec, grid: GridModel, tmp_path: Path
) -> None:
    processor = WindowProcessor(_no_forecast(spec), grid, tmp_path)
    dead = SwitchState(switch="Line 1-2@Bus 1", closed=False, timestamp=T0)
    reason = asyncio.run(processor.switch(dead))
    assert reason is not None and "without supply" in reason and "Bus 2" in reason
    unknown = SwitchState(switch="S99", closed=True, timestamp=T0)
    assert "unknown switch 'S99'" in (asyncio.run(processor.switch(unknown)) or "")
    same = SwitchState(switch=TIE, closed=False, timestamp=T0)  # S2 is open already
    assert asyncio.run(processor.switch(same)) is None
    assert processor.switches_applied == 0 and processor.grid is grid
    assert processor.topology is not None and processor.topology.closed("Line 1-2@Bus 1")
    with pytest.raises(TopologyError):
        processor.topology.change("nowhere", closed=True)


def test_intake_checks_switch_messages_against_the_spec(spec: AgentSpec, grid: GridModel) -> None:
    stage = FrameIntake(spec, grid=grid, max_payload_bytes=10_000, event_time=False)
    ok = SwitchState(switch=TIE, closed=True, timestamp=T0).model_dump_json().encode()
    assert stage.switch(ok).state is not None
    command = SwitchState(switch=TIE, closed=True, timestamp=T0, source=SwitchSource.COMMAND)
    refused = stage.switch(command.model_dump_json().encode())
    assert refused.state is None and "topology.command_switches" in (refused.reason or "")
    allowed = spec.model_copy(
        update={"topology": spec.topology.model_copy(update={"command_switches": [TIE]})}
    )
    allowing = FrameIntake(allowed, grid=grid, max_payload_bytes=10_000, event_time=False)
    assert allowing.switch(command.model_dump_json().encode()).state is not None
    for bad in (
        b"{",
        b'{"switch": "S2"}',
        b'{"switch": "S2", "closed": true, "timestamp": "2026-03-01T09:00:00"}',
        b"x" * 20_000,
    ):
        got = stage.switch(bad)
        assert got.state is None and got.reason
    off = spec.model_copy(
        update={"topology": spec.topology.model_copy(update={"follow_switches": False})}
    )
    not_following = FrameIntake(off, grid=grid, max_payload_bytes=10_000, event_time=False)
    assert "follow_switches" in (not_following.switch(ok).reason or "")
