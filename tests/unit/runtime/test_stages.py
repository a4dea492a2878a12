"""The transport-free stages both runtimes share: intake and its event-time clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.core.grid import GridModel
from dsotp_streams.emulator import PmuFleet
from dsotp_streams.runtime.stages import FrameIntake, IntakeOutcome

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)  # a replay: long before the wall clock


def intake(spec: AgentSpec, grid: GridModel, idle_close_s: float = 0.3) -> FrameIntake:
    return FrameIntake(
        spec, grid=grid, max_payload_bytes=100_000, event_time=True, idle_close_s=idle_close_s
    )


def payloads(spec: AgentSpec, grid: GridModel, instants: int) -> list[list[bytes]]:
    fleet = PmuFleet(spec, grid)
    return [
        [f.model_dump_json().encode() for f in fleet.step(T0 + k * timedelta(seconds=0.1)).frames]
        for k in range(instants)
    ]


def test_event_time_windows_close_by_the_frames_clock_not_by_a_busy_consumer(
    spec: AgentSpec, grid: GridModel
) -> None:
    stage = intake(spec, grid)
    frames = payloads(spec, grid, 3)
    for raw in frames[0][:5]:  # half of instant 0
        assert stage.offer(raw).outcome is IntakeOutcome.VALID
    time.sleep(0.2)  # busy longer than the wait (150 ms), less than idle_close_s: no close
    assert stage.poll() == []
    for raw in frames[0][5:] + frames[1]:
        stage.offer(raw)
    windows = stage.poll()  # both complete
    assert [w.window_start for w in windows] == [T0, T0 + timedelta(seconds=0.1)]
    assert all(w.complete for w in windows)


def test_a_paused_stream_closes_its_last_windows_after_the_idle_time(
    spec: AgentSpec, grid: GridModel
) -> None:
    stage = intake(spec, grid, idle_close_s=0.3)
    frames = payloads(spec, grid, 1)
    for raw in frames[0][:-1]:  # one device never reports
        stage.offer(raw)
    assert stage.poll() == []
    time.sleep(0.35)
    (window,) = stage.poll()
    assert window.missing_devices == [spec.devices[-1].id]


def test_a_frame_from_the_future_is_rejected_and_does_not_move_the_clock(
    spec: AgentSpec, grid: GridModel
) -> None:
    stage = intake(spec, grid)
    frames = payloads(spec, grid, 1)
    stage.offer(frames[0][0])
    future = frames[0][1].replace(
        b"2025-06-01", str(datetime.now(tz=UTC).year + 1).encode() + b"-06-01"
    )
    result = stage.offer(future)
    assert result.outcome is IntakeOutcome.FUTURE
    assert result.reason == "timestamp too far in the future"
    for raw in frames[0][2:]:
        assert stage.offer(raw).outcome is IntakeOutcome.VALID
    assert stage.poll() == []  # instant 0 still waits for the device whose frame was bad


def test_completeness_is_each_devices_share_of_the_last_minute_of_windows(
    spec: AgentSpec, grid: GridModel
) -> None:
    from dsotp_streams.runtime.stages import Completeness

    devices = tuple(d.id for d in spec.devices)
    completeness = Completeness(devices, span_s=60.0)
    assert completeness.shares() == {}
    stage = intake(spec, grid)
    frames = payloads(spec, grid, 700)  # 70 s at 10 frames/s
    for k, instant in enumerate(frames):
        # the last device misses every other window during the last 30 s only
        sent = instant[:-1] if k >= 400 and k % 2 else instant
        for raw in sent:
            stage.offer(raw)
        for window in stage.poll():
            completeness.add(window)
    for window in stage.flush():
        completeness.add(window)
    shares = completeness.shares()
    assert set(shares) == set(devices)
    assert all(shares[d] == 1.0 for d in devices[:-1])
    # of the last minute's 600 windows, the 150 odd ones of the last 30 s lacked it
    assert shares[devices[-1]] == pytest.approx(1 - 150 / 601, abs=0.005)
