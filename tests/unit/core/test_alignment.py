from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dsotp_streams.contracts.frames import Measurand, PmuFrame, Reading
from dsotp_streams.core.alignment import Aligner, AlignOutcome

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
PERIOD = timedelta(milliseconds=100)


def _frame(device: str, k: int, *, jitter_ms: float = 0.0) -> PmuFrame:
    return PmuFrame(
        device=device,
        timestamp=T0 + k * PERIOD + timedelta(milliseconds=jitter_ms),
        readings=[Reading(component="Bus 1", measurand=Measurand.VOLTMAGNITUDE, data=11_500.0)],
    )


def _aligner(devices: tuple[str, ...] = ("a", "b", "c"), wait_ms: float = 150) -> Aligner:
    return Aligner(area="test", devices=frozenset(devices), period_s=0.1, wait_s=wait_ms / 1000)


def test_alignment_complete_window_closes_at_once() -> None:
    aligner = _aligner()
    now = T0 + timedelta(milliseconds=5)
    for device in "abc":
        assert aligner.add(_frame(device, 0), now=now) is AlignOutcome.ACCEPTED
    windows = aligner.poll(now=now)
    assert len(windows) == 1
    assert windows[0].window_start == T0
    assert windows[0].complete
    assert sorted(windows[0].frames) == ["a", "b", "c"]


def test_alignment_reordered_frames_join_their_instant() -> None:
    aligner = _aligner()
    now = T0
    order = [("b", 1), ("a", 0), ("c", 1), ("b", 0), ("a", 1), ("c", 0)]
    for device, k in order:
        aligner.add(_frame(device, k, jitter_ms=3), now=now)
    windows = aligner.poll(now=now)
    assert [w.window_start for w in windows] == [T0, T0 + PERIOD]
    assert all(w.complete for w in windows)


def test_alignment_missing_device_closes_after_wait_time() -> None:
    aligner = _aligner()
    aligner.add(_frame("a", 0), now=T0)
    aligner.add(_frame("b", 0), now=T0)
    assert aligner.poll(now=T0 + timedelta(milliseconds=149)) == []
    windows = aligner.poll(now=T0 + timedelta(milliseconds=150))
    assert len(windows) == 1
    assert windows[0].missing_devices == ["c"]
    assert aligner.counters.windows_complete == 0


def test_alignment_late_frame_is_counted_not_merged() -> None:
    aligner = _aligner()
    aligner.add(_frame("a", 0), now=T0)
    aligner.poll(now=T0 + timedelta(seconds=1))
    assert aligner.add(_frame("b", 0), now=T0 + timedelta(seconds=1)) is AlignOutcome.LATE
    assert aligner.counters.late == 1
    assert aligner.open_windows == 0


def test_alignment_duplicate_keeps_first_frame() -> None:
    aligner = _aligner(devices=("a",))
    first = _frame("a", 0)
    assert aligner.add(first, now=T0) is AlignOutcome.ACCEPTED
    assert aligner.add(_frame("a", 0, jitter_ms=1), now=T0) is AlignOutcome.DUPLICATE
    windows = aligner.poll(now=T0)
    assert windows[0].frames["a"] is first
    assert aligner.counters.duplicate == 1


def test_alignment_unknown_device_is_rejected() -> None:
    aligner = _aligner()
    assert aligner.add(_frame("zz", 0), now=T0) is AlignOutcome.UNKNOWN_DEVICE
    assert aligner.open_windows == 0


def test_alignment_far_future_frame_is_rejected() -> None:
    aligner = _aligner()
    assert aligner.add(_frame("a", 100_000), now=T0) is AlignOutcome.FUTURE


def test_alignment_emits_in_time_order_behind_a_waiting_window() -> None:
    aligner = _aligner(devices=("a", "b"))
    aligner.add(_frame("a", 0), now=T0)
    aligner.add(_frame("a", 1), now=T0)
    aligner.add(_frame("b", 1), now=T0)
    assert aligner.poll(now=T0 + timedelta(milliseconds=120)) == []
    windows = aligner.poll(now=T0 + timedelta(milliseconds=160))
    assert [w.window_start for w in windows] == [T0, T0 + PERIOD]
    assert [w.complete for w in windows] == [False, True]


@pytest.mark.parametrize("n_open", [3, 10])
def test_alignment_bounds_open_windows(n_open: int) -> None:
    aligner = Aligner(
        area="t", devices=frozenset({"a", "b"}), period_s=0.1, wait_s=60, max_open_windows=n_open
    )
    for k in range(n_open + 5):
        assert aligner.add(_frame("a", k), now=T0) is AlignOutcome.ACCEPTED
    closed = aligner.poll(now=T0)
    assert aligner.open_windows == n_open
    assert len(closed) == 5
    assert aligner.counters.windows_forced == 5


def test_alignment_every_frame_is_accounted_for() -> None:
    aligner = _aligner()
    offered = 0
    for k in range(20):
        for device in ("a", "b", "c", "x"):
            aligner.add(_frame(device, k % 7), now=T0 + k * PERIOD)
            offered += 1
        aligner.poll(now=T0 + k * PERIOD)
    c = aligner.counters
    assert c.accepted + c.duplicate + c.late + c.unknown_device + c.future == offered


def test_alignment_clock_skew_within_half_a_period_joins_the_right_instant() -> None:
    """PMU clocks skewed by up to +-45 ms at 10 frames/s: every frame joins its own instant."""
    aligner = _aligner()
    skew_ms = {"a": -45.0, "b": 0.0, "c": 45.0}
    for k in range(20):
        now = T0 + k * PERIOD + timedelta(milliseconds=50)
        for device, skew in skew_ms.items():
            assert aligner.add(_frame(device, k, jitter_ms=skew), now=now) is AlignOutcome.ACCEPTED
    windows = aligner.poll(now=T0 + 20 * PERIOD)
    assert [w.window_start for w in windows] == [T0 + k * PERIOD for k in range(20)]
    assert all(w.complete for w in windows)


def test_alignment_a_pmu_whose_clock_lags_beyond_the_wait_is_late_every_time() -> None:
    """One PMU 2 s behind: its frames are counted late, one by one; the others' windows close
    after the wait without it, in order, none lost."""
    aligner = _aligner()
    outcomes = []
    closed = []
    for k in range(30):
        now = T0 + k * PERIOD
        aligner.add(_frame("a", k), now=now)
        aligner.add(_frame("b", k), now=now)
        outcomes.append(aligner.add(_frame("c", k - 20), now=now) if k >= 20 else None)
        closed += aligner.poll(now=now + timedelta(milliseconds=10))
    closed += aligner.poll(now=T0 + 31 * PERIOD)
    assert set(outcomes[20:]) == {AlignOutcome.LATE}
    assert aligner.counters.late == 10
    assert [w.window_start for w in closed] == [T0 + k * PERIOD for k in range(30)]
    assert all(w.missing_devices == ["c"] for w in closed)
