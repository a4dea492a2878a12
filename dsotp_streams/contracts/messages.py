"""Messages the platform produces: windows, state estimates, dead letters, truth and status."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from dsotp_streams.contracts.frames import PmuFrame

__all__ = [
    "BridgedFrame",
    "BusState",
    "DataQuality",
    "DeadLetter",
    "EstimateStatus",
    "FlisrEvent",
    "FlisrLocation",
    "Forecast",
    "FrameBatch",
    "InputKind",
    "LineFlow",
    "QualityFlag",
    "ResultKind",
    "StateEstimate",
    "SwitchAction",
    "SwitchSource",
    "SwitchState",
    "TrueState",
    "Window",
]


class ResultKind(StrEnum):
    """What a runtime publishes for an area; each kind has one MQTT topic (`Topics.of_kind`) and
    one Kafka topic (`KafkaTopics.of_kind`)."""

    STATE = "state"
    STATE_SOGNO = "state-sogno"
    FORECAST = "forecast"
    FLISR = "flisr"
    SWITCH_COMMAND = "switch-command"
    DEADLETTER = "deadletter"

    @property
    def always_acknowledged(self) -> bool:
        """Events that must arrive (QoS 1 on MQTT whatever `mqtt.qos` says): all but the
        estimates, which the next window replaces."""
        return self not in (ResultKind.STATE, ResultKind.STATE_SOGNO)


class Window(BaseModel):
    """All frames of one area for one reporting instant, as a phasor data concentrator emits it."""

    model_config = ConfigDict(frozen=True)

    area: str
    window_start: datetime
    period_s: float
    frames: dict[str, PmuFrame]
    missing_devices: list[str] = Field(default_factory=list)
    closed_at: datetime

    @property
    def complete(self) -> bool:
        """True when every expected device reported."""
        return not self.missing_devices


class EstimateStatus(StrEnum):
    """Outcome of one estimation."""

    OK = "ok"
    BAD_DATA = "bad_data"
    NOT_OBSERVABLE = "not_observable"
    DIVERGED = "diverged"
    FAILED = "failed"
    SKIPPED = "skipped"


class BusState(BaseModel):
    """Estimated state of one bus (consumption-positive p/q, as pandapower's res_bus)."""

    model_config = ConfigDict(frozen=True)

    bus: str
    vm_pu: float
    va_deg: float
    p_mw: float
    q_mvar: float
    measured_vm_pu: float | None = Field(
        default=None, description="the PMU magnitude measured at this bus in this window"
    )
    true_vm_pu: float | None = None
    true_va_deg: float | None = None


class LineFlow(BaseModel):
    """Estimated flows at both ends of one branch (line or transformer)."""

    model_config = ConfigDict(frozen=True)

    line: str
    p_from_mw: float
    q_from_mvar: float
    i_from_ka: float
    p_to_mw: float
    q_to_mvar: float
    i_to_ka: float
    loading_percent: float | None = Field(
        default=None, description="larger end current over the rating; None without a rating"
    )


class QualityFlag(StrEnum):
    """What the checks found wrong with a device's data in a window (C37.118 STAT bits join
    these in the protocol adapter)."""

    MISSING = "missing"  # no frame in the window
    STALE = "stale"  # a channel stopped changing: not used
    JUMP = "jump"  # a magnitude jumped from one frame to the next: used, flagged


class DataQuality(BaseModel):
    """The quality summary of one estimate: which devices were used, which were not, and every
    measurement dropped with its reason."""

    model_config = ConfigDict(frozen=True)

    devices_used: list[str] = Field(default_factory=list)
    devices_missing: list[str] = Field(default_factory=list)
    flags: dict[str, list[QualityFlag]] = Field(
        default_factory=dict, description="device -> what its data showed"
    )
    dropped: dict[str, str] = Field(
        default_factory=dict, description="measurement (device:component:measurand) -> why"
    )


class StateEstimate(BaseModel):
    """The estimated grid state of one window, or why there is none."""

    model_config = ConfigDict(frozen=True)

    area: str
    window_start: datetime
    status: EstimateStatus
    reason: str | None = None
    engine: str
    buses: list[BusState] = Field(default_factory=list)
    lines: list[LineFlow] = Field(default_factory=list)
    n_measurements: int = 0
    n_devices: int = 0
    missing_devices: list[str] = Field(default_factory=list)
    iterations: int = 0
    chi2: float | None = Field(default=None, description="weighted residual sum J(x)")
    dof: int | None = None
    chi2_threshold: float | None = None
    bad_data: list[str] = Field(default_factory=list)
    runtime_ms: float = 0.0
    max_true_dvm_pu: float | None = None
    quality: DataQuality | None = None
    load_scale: float | None = Field(
        default=None,
        description="estimated load relative to the model's nominal loads (estimator.load_scale)",
    )
    residuals: dict[str, float] | None = Field(
        default=None, description="measurement label -> normalised residual (estimator.residuals)"
    )


class DeadLetter(BaseModel):
    """Input that could not be used, with the reason; nothing is dropped silently."""

    model_config = ConfigDict(frozen=True)

    topic: str
    reason: str
    received_at: datetime
    payload: str
    device: str | None = None

    @classmethod
    def of(
        cls, topic: str, raw: bytes | bytearray, reason: str, *, device: str | None = None
    ) -> DeadLetter:
        """A dead letter received now, with the first 4 KiB of the payload as text."""
        return cls(
            topic=topic,
            reason=reason,
            received_at=datetime.now(tz=UTC),
            payload=bytes(raw[:4096]).decode("utf-8", errors="replace"),
            device=device,
        )


class TrueState(BaseModel):
    """The emulator's true state at one instant (debug topic), for showing accuracy."""

    model_config = ConfigDict(frozen=True)

    area: str
    timestamp: datetime
    vm_pu: dict[str, float]
    va_deg: dict[str, float]


class SwitchSource(StrEnum):
    """Who says a switch changed."""

    DEVICE = "device"  # a breaker or switch status reported by a device or SCADA
    COMMAND = "command"  # a switch command, applied when the agent spec allows it


class SwitchState(BaseModel):
    """A switch's new state, on `dsotp/<area>/switch/state`: the model of the next window
    follows it (`topology.follow_switches`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    switch: str = Field(
        min_length=1, max_length=200, description="switch name, or <line>@<bus> for a line end"
    )
    closed: bool
    timestamp: AwareDatetime
    source: SwitchSource = SwitchSource.DEVICE


class SwitchAction(BaseModel):
    """One step of a switching sequence."""

    model_config = ConfigDict(frozen=True)

    step: int
    action: Literal["open", "close"]
    switch: str = Field(description="switch name, or <line>@<bus> for a line-end switch")
    line: str | None = None
    bus: str | None = None
    purpose: Literal["isolate", "restore"]


class FlisrLocation(BaseModel):
    """A candidate faulted section and how well it explains the observations."""

    model_config = ConfigDict(frozen=True)

    section: str
    lines: list[str]
    confidence: float = Field(ge=0, le=1)


class FlisrEvent(BaseModel):
    """A FLISR case: what was detected, where the fault is, and the switching plan."""

    model_config = ConfigDict(frozen=True)

    area: str
    window_start: datetime
    detected: str = Field(description="what triggered the case")
    status: Literal["planned", "located_only", "not_located"]
    fault_section: str | None = None
    fault_lines: list[str] = Field(default_factory=list)
    candidates: list[FlisrLocation] = Field(default_factory=list)
    sequence: list[SwitchAction] = Field(default_factory=list)
    restored_mw: float = 0.0
    unserved_mw: float = 0.0
    unserved_buses: list[str] = Field(default_factory=list)
    checks: dict[str, float | bool] = Field(default_factory=dict)
    advisory: bool = True
    runtime_ms: float = 0.0
    reason: str | None = None


class Forecast(BaseModel):
    """Quantile forecasts per bus of an area, issued at one instant."""

    model_config = ConfigDict(frozen=True)

    area: str
    issued_at: datetime
    step_s: float
    quantity: str = "p_mw"
    times: list[datetime]
    quantiles: dict[str, dict[str, list[float]]] = Field(
        description="bus -> quantile level (as text) -> values at `times`"
    )


class InputKind(StrEnum):
    """What an input message on MQTT is, by its topic."""

    FRAME = "frame"  # dsotp/<area>/pmu/<device>
    SWITCH_STATE = "switch-state"  # dsotp/<area>/switch/state


class BridgedFrame(BaseModel):
    """One input message as the bridge received it from MQTT (raw, so it can be replayed):
    a frame, or a switch state that travels in order with the area's frames."""

    model_config = ConfigDict(frozen=True)

    topic: str
    payload: str
    received_at: datetime
    kind: InputKind = InputKind.FRAME


class FrameBatch(BaseModel):
    """The frames of one area received within a few milliseconds: one Kafka record, keyed by
    area, so that a worker handles tens of frames per record rather than one."""

    model_config = ConfigDict(frozen=True)

    area: str
    frames: list[BridgedFrame]
