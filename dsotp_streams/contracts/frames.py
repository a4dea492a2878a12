"""PMU frames in the SOGNO message format, with the aliases seen in the field."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dsotp_streams.errors import FrameError

__all__ = [
    "MEASURAND_ALIASES",
    "Measurand",
    "Phase",
    "PmuFrame",
    "Reading",
    "Rejected",
    "parse_frame",
    "to_utc",
]


class Measurand(StrEnum):
    """What a reading measures; values in SI units, angles in radians."""

    VOLTMAGNITUDE = "voltmagnitude"
    VOLTANGLE = "voltangle"
    CURRMAGNITUDE = "currmagnitude"
    CURRANGLE = "currangle"
    ACTIVEPOWER = "activepower"
    REACTIVEPOWER = "reactivepower"
    APPARENTPOWER = "apparentpower"
    FREQUENCY = "frequency"


MEASURAND_ALIASES: dict[str, Measurand] = {
    "voltagemagnitude": Measurand.VOLTMAGNITUDE,
    "voltageangle": Measurand.VOLTANGLE,
    "currentmagnitude": Measurand.CURRMAGNITUDE,
    "currentangle": Measurand.CURRANGLE,
}


class Phase(StrEnum):
    """Phase of a reading; the estimator works on the balanced positive sequence."""

    A = "A"
    B = "B"
    C = "C"


_EPOCH_NS_MIN = 1e17  # epoch numbers above this are nanoseconds
_EPOCH_US_MIN = 1e14
_EPOCH_MS_MIN = 1e11


def to_utc(value: Any) -> datetime:
    """Parse an ISO-8601 string or epoch number (s, ms, us or ns) into an aware UTC datetime."""
    if isinstance(value, datetime):
        ts = value
    elif isinstance(value, bool):
        raise ValueError("timestamp must be ISO-8601 text or an epoch number, not a boolean")
    elif isinstance(value, int | float):
        number = float(value)
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"epoch timestamp {value!r} is not a finite, non-negative number")
        if number >= _EPOCH_NS_MIN:
            seconds = number / 1e9
        elif number >= _EPOCH_US_MIN:
            seconds = number / 1e6
        elif number >= _EPOCH_MS_MIN:
            seconds = number / 1e3
        else:
            seconds = number
        try:
            ts = datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise ValueError(f"epoch timestamp {value!r} is out of range") from exc
    elif isinstance(value, str):
        text = value.strip()
        try:
            return to_utc(float(text))
        except ValueError:
            pass
        try:
            ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(
                f"timestamp {value!r} is neither ISO-8601 nor an epoch number"
            ) from exc
    else:
        raise ValueError(f"timestamp of type {type(value).__name__} is not understood")
    if ts.tzinfo is None:
        # SOGNO timestamps carry an offset; PMUs without one report UTC (GPS time).
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


class Reading(BaseModel):
    """One value of a frame: a measurand of a component (bus or branch) on one phase."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    component: str = Field(min_length=1, max_length=200)
    measurand: Measurand
    phase: Phase = Phase.A
    data: float

    @field_validator("measurand", mode="before")
    @classmethod
    def _measurand_alias(cls, value: Any) -> Any:
        if isinstance(value, str):
            key = value.strip().lower()
            return MEASURAND_ALIASES.get(key, key)
        return value

    @field_validator("phase", mode="before")
    @classmethod
    def _phase_upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("data", mode="before")
    @classmethod
    def _data_number(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("data must be a number, not a boolean")
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError as exc:
                raise ValueError(f"data {value!r} is not a number") from exc
        if isinstance(value, int | float) and not math.isfinite(value):
            raise ValueError(f"data {value!r} is not finite")
        return value


class PmuFrame(BaseModel):
    """A SOGNO frame: one device's readings at one instant."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    device: str = Field(min_length=1, max_length=200)
    timestamp: datetime
    readings: list[Reading] = Field(min_length=1, max_length=10_000)

    @field_validator("timestamp", mode="before")
    @classmethod
    def _timestamp_utc(cls, value: Any) -> datetime:
        return to_utc(value)


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "frame"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def parse_frame(payload: bytes | str) -> PmuFrame:
    """Decode and validate one SOGNO frame; a FrameError names each bad field."""
    try:
        return PmuFrame.model_validate_json(payload)
    except ValidationError as exc:
        raise FrameError(_describe(exc)) from exc


@dataclass(frozen=True)
class Rejected:
    """Input that is not a usable frame (a line of a file, a sample of a record), and why;
    every reader of frames yields these beside its frames."""

    line: int
    reason: str
