"""PDC-style time alignment: frames from many devices become one window per reporting instant."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from dsotp_streams.contracts.frames import PmuFrame
from dsotp_streams.contracts.messages import Window

__all__ = ["AlignCounters", "AlignOutcome", "Aligner", "slot_of"]

_NS = 1_000_000_000


class AlignOutcome(StrEnum):
    """What happened to one frame offered to the aligner."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"
    UNKNOWN_DEVICE = "unknown_device"
    FUTURE = "future"


@dataclass
class AlignCounters:
    """Running counts; every frame offered lands in exactly one of the first five."""

    accepted: int = 0
    duplicate: int = 0
    late: int = 0
    unknown_device: int = 0
    future: int = 0
    windows_closed: int = 0
    windows_complete: int = 0
    windows_forced: int = 0

    def count(self, outcome: AlignOutcome) -> None:
        """Count one outcome."""
        setattr(self, outcome.value, getattr(self, outcome.value) + 1)


def _ns(ts: datetime) -> int:
    return round(ts.timestamp() * 1e6) * 1000


def slot_of(ts: datetime, *, period_ns: int) -> int:
    """The reporting instant (integer slot) that a timestamp belongs to."""
    return (_ns(ts) + period_ns // 2) // period_ns


@dataclass
class _Open:
    frames: dict[str, PmuFrame] = field(default_factory=dict)


class Aligner:
    """Group frames by reporting instant; emit windows in time order when complete or timed out."""

    def __init__(
        self,
        *,
        area: str,
        devices: frozenset[str],
        period_s: float,
        wait_s: float,
        max_open_windows: int = 256,
        max_future_s: float = 5.0,
    ) -> None:
        self.area = area
        self.devices = devices
        self.period_ns = max(1, round(period_s * _NS))
        self.wait_ns = round(wait_s * _NS)
        self.max_open_windows = max_open_windows
        self.max_future_ns = round(max_future_s * _NS)
        self.counters = AlignCounters()
        self._open: dict[int, _Open] = {}
        self._last_closed: int | None = None

    @property
    def open_windows(self) -> int:
        """How many windows wait for frames."""
        return len(self._open)

    @property
    def last_closed(self) -> int | None:
        """The slot of the newest closed window (None before the first)."""
        return self._last_closed

    def add(self, frame: PmuFrame, *, now: datetime) -> AlignOutcome:
        """Offer one frame; the outcome says whether it joined a window and, if not, why."""
        outcome = self._classify(frame, now=now)
        self.counters.count(outcome)
        return outcome

    def _classify(self, frame: PmuFrame, *, now: datetime) -> AlignOutcome:
        if frame.device not in self.devices:
            return AlignOutcome.UNKNOWN_DEVICE
        slot = slot_of(frame.timestamp, period_ns=self.period_ns)
        if self._last_closed is not None and slot <= self._last_closed:
            return AlignOutcome.LATE
        if slot * self.period_ns > _ns(now) + self.max_future_ns:
            return AlignOutcome.FUTURE
        window = self._open.setdefault(slot, _Open())
        if frame.device in window.frames:
            return AlignOutcome.DUPLICATE
        window.frames[frame.device] = frame
        return AlignOutcome.ACCEPTED

    def poll(self, *, now: datetime) -> list[Window]:
        """Close, oldest first, every window that is complete or whose wait time has passed."""
        now_ns = _ns(now)
        closed: list[Window] = []
        for slot in sorted(self._open):
            window = self._open[slot]
            complete = len(window.frames) == len(self.devices)
            timed_out = now_ns >= slot * self.period_ns + self.wait_ns
            forced = len(self._open) > self.max_open_windows
            if not (complete or timed_out or forced):
                break
            if forced and not (complete or timed_out):
                self.counters.windows_forced += 1
            closed.append(self._close(slot, now=now))
        return closed

    def flush(self, *, now: datetime) -> list[Window]:
        """Close every open window, complete or not (at shutdown)."""
        return [self._close(slot, now=now) for slot in sorted(self._open)]

    def _close(self, slot: int, *, now: datetime) -> Window:
        window = self._open.pop(slot)
        self._last_closed = slot
        missing = sorted(self.devices - window.frames.keys())
        self.counters.windows_closed += 1
        if not missing:
            self.counters.windows_complete += 1
        start_ns = slot * self.period_ns
        return Window(
            area=self.area,
            window_start=datetime.fromtimestamp(start_ns // _NS, tz=UTC).replace(
                microsecond=(start_ns % _NS) // 1000
            ),
            period_s=self.period_ns / _NS,
            frames=dict(window.frames),
            missing_devices=missing,
            closed_at=now,
        )
