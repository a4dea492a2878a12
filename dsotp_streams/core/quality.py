"""Data quality per device and channel, before a window is estimated: stale (frozen) channels
are taken out, jumps flagged, missing devices named; the summary travels in the estimate.

A real PMU's readings change at every report (noise alone does it); a channel whose value stays
exactly the same for `stale_s` (and three reports at least) is a frozen device or a stuck
gateway, and an estimate from it would look healthy while it is not."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from dsotp_streams.contracts.agent import QualitySpec
from dsotp_streams.contracts.frames import Measurand, PmuFrame, Reading
from dsotp_streams.contracts.messages import DataQuality, QualityFlag, Window

__all__ = ["QualityCheck"]

_MAGNITUDES = (Measurand.VOLTMAGNITUDE, Measurand.CURRMAGNITUDE)
_MIN_REPEATS = 3


@dataclass
class _Channel:
    value: float
    since: datetime  # when the value was first seen
    repeats: int = 0


@dataclass
class QualityCheck:
    """Per area: remembers each channel's last value between windows."""

    spec: QualitySpec
    _channels: dict[tuple[str, str, Measurand, str], _Channel] = field(default_factory=dict)

    def check(self, window: Window) -> tuple[Window, DataQuality]:
        """The window without its stale channels, and what was found."""
        flags: dict[str, list[QualityFlag]] = {
            device: [QualityFlag.MISSING] for device in window.missing_devices
        }
        dropped: dict[str, str] = {}
        frames = dict(window.frames)
        for device, frame in window.frames.items():
            keep: list[Reading] = []
            for reading in frame.readings:
                reason = self._observe(device, frame, reading, flags)
                if reason is None:
                    keep.append(reading)
                else:
                    label = f"{device}:{reading.component}:{reading.measurand.value}"
                    dropped[label] = reason
            if len(keep) != len(frame.readings):
                frames[device] = frame.model_copy(update={"readings": keep})
        used = sorted(d for d, f in frames.items() if f.readings)
        quality = DataQuality(
            devices_used=used,
            devices_missing=sorted(window.missing_devices),
            flags={d: sorted(set(f)) for d, f in flags.items()},
            dropped=dropped,
        )
        if dropped:
            frames = {d: f for d, f in frames.items() if f.readings}
            window = window.model_copy(update={"frames": frames})
        return window, quality

    def _observe(
        self,
        device: str,
        frame: PmuFrame,
        reading: Reading,
        flags: dict[str, list[QualityFlag]],
    ) -> str | None:
        """Why the reading is not used (None: it is), flags noted on the way."""
        key = (device, reading.component, reading.measurand, reading.phase.value)
        now = frame.timestamp
        seen = self._channels.get(key)
        if seen is None or now < seen.since:  # first report, or a replay from the start
            self._channels[key] = _Channel(reading.data, now)
            return None
        if reading.data != seen.value:
            if reading.measurand in _MAGNITUDES and seen.value != 0.0:
                change = abs(reading.data - seen.value) / abs(seen.value)
                if change > self.spec.jump_rel:
                    flags.setdefault(device, []).append(QualityFlag.JUMP)
            seen.value, seen.since, seen.repeats = reading.data, now, 0
            return None
        seen.repeats += 1
        unchanged_s = (now - seen.since).total_seconds()
        if (
            self.spec.stale_s > 0
            and seen.repeats >= _MIN_REPEATS
            and (unchanged_s >= self.spec.stale_s)
        ):
            flags.setdefault(device, []).append(QualityFlag.STALE)
            return f"stale: unchanged for {unchanged_s:.1f} s"
        return None
