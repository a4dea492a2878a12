"""Agent specs: one declarative YAML file per grid area, validated here."""

from __future__ import annotations

import math
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dsotp_streams.errors import SpecError

__all__ = [
    "AgentSpec",
    "DeviceAccuracy",
    "DeviceSpec",
    "EmulatorSpec",
    "EstimatorSpec",
    "FlisrSpec",
    "ForecastSpec",
    "GridSource",
    "GridSpec",
    "InstrumentClass",
    "QualitySpec",
    "SigmaSpec",
    "TopologySpec",
    "VoltageBasis",
    "WindowSpec",
    "load_agent_spec",
    "load_agent_specs",
]

_TOPIC_SAFE = re.compile(r"^[A-Za-z0-9_.\-]+$")


class GridSource(StrEnum):
    """Where a grid model comes from."""

    PANDAPOWER_NETWORK = "pandapower_network"
    PANDAPOWER_JSON = "pandapower_json"
    CGMES = "cgmes"


class VoltageBasis(StrEnum):
    """Whether voltage magnitudes in frames are phase-to-ground (SOGNO) or line-to-line."""

    PHASE_TO_GROUND = "phase_to_ground"
    LINE_TO_LINE = "line_to_line"

    @property
    def to_line_to_line(self) -> float:
        """Factor from a magnitude in this basis to the line-to-line (nominal) basis."""
        return 1.0 if self is VoltageBasis.LINE_TO_LINE else math.sqrt(3.0)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GridSpec(_Frozen):
    """The grid model: pandapower's library by name, a pandapower JSON file, or a CGMES model.

    File paths are relative to the agent file; ``{data_dir}`` stands for the data-directory
    setting (``DSOTP_DATA_DIR``), so a spec can name shared data without a fixed path.
    """

    source: GridSource = GridSource.PANDAPOWER_NETWORK
    name: str = Field(
        min_length=1,
        description="function in pandapower.networks, or a file/folder path",
    )
    kwargs: dict[str, Any] = Field(default_factory=dict)
    ignore_phase_shift: bool = Field(
        default=False,
        description="drop transformer vector-group shifts (as DPsim and pyvolt do)",
    )


class WindowSpec(_Frozen):
    """PDC-style alignment: one window per reporting instant, held open for late frames."""

    rate_hz: float = Field(default=10.0, gt=0, le=120)
    wait_ms: float = Field(default=150.0, ge=0, le=60_000)
    max_open_windows: int = Field(default=256, ge=1)
    max_future_s: float = Field(
        default=5.0, gt=0, description="reject frames stamped further ahead"
    )


class QualitySpec(_Frozen):
    """Checks of each device's channels before a window is estimated."""

    stale_s: float = Field(
        default=1.0,
        ge=0,
        description="a channel whose value has not changed for this long (and 3 frames at "
        "least) is stale, a frozen device, and not used; 0 turns the check off (a simulator's "
        "slack voltage is exactly constant)",
    )
    jump_rel: float = Field(
        default=0.2,
        gt=0,
        description="a magnitude changing by more than this share from one frame to the next "
        "is flagged as a jump (still used: a fault changes values that fast too)",
    )


class InstrumentClass(StrEnum):
    """Accuracy class of an instrument transformer (IEC 61869-2 current, 61869-3 voltage)."""

    C0_1 = "0.1"
    C0_2 = "0.2"
    C0_5 = "0.5"
    C1 = "1"

    @property
    def ratio_percent(self) -> float:
        """Ratio error limit at rated value, %."""
        return float(self.value)

    def phase_rad(self, *, current: bool) -> float:
        """Phase displacement limit at rated value, rad."""
        minutes = (_CT_PHASE_MINUTES if current else _VT_PHASE_MINUTES)[self.value]
        return minutes * math.pi / (180.0 * 60.0)


# phase displacement limits in minutes of arc per class at rated value
_CT_PHASE_MINUTES = {"0.1": 5.0, "0.2": 10.0, "0.5": 30.0, "1": 60.0}  # IEC 61869-2
_VT_PHASE_MINUTES = {"0.1": 5.0, "0.2": 10.0, "0.5": 20.0, "1": 40.0}  # IEC 61869-3


# an error limit a device states is taken as three standard deviations
_LIMIT_SIGMAS = 3.0


class DeviceAccuracy(_Frozen):
    """What a device's measurements are worth; each measurement's sigma follows from it. The
    defaults are a C37.118.1 M-class PMU (1 % total vector error) on ideal transformers."""

    tve_percent: float = Field(
        default=1.0, gt=0, le=10, description="total vector error limit (C37.118.1 M and P: 1 %)"
    )
    vm_percent: float | None = Field(
        default=None, gt=0, description="magnitude error limit, where stated apart from the TVE"
    )
    va_mrad: float | None = Field(
        default=None, gt=0, description="phase angle error limit, where stated apart (mrad)"
    )
    ct_class: InstrumentClass | None = Field(
        default=None, description="current transformers' class (IEC 61869-2), adds to the PMU's"
    )
    vt_class: InstrumentClass | None = Field(
        default=None, description="voltage transformers' class (IEC 61869-3), adds to the PMU's"
    )
    scada_percent: float = Field(
        default=3.0, gt=0, description="error limit of P/Q values (SCADA, meters), % of the value"
    )

    @field_validator("ct_class", "vt_class", mode="before")
    @classmethod
    def _class_from_number(cls, value: object) -> object:
        return f"{value:g}" if isinstance(value, int | float) else value

    @property
    def _magnitude(self) -> float:
        return (self.vm_percent or self.tve_percent) / 100.0

    @property
    def _angle(self) -> float:  # a TVE of x % allows an angle error of x/100 rad
        return self.va_mrad / 1000.0 if self.va_mrad else self.tve_percent / 100.0

    @property
    def vm_rel(self) -> float:
        """Sigma of a voltage magnitude, relative."""
        vt = self.vt_class.ratio_percent / 100.0 if self.vt_class else 0.0
        return math.hypot(self._magnitude, vt) / _LIMIT_SIGMAS

    @property
    def va_rad(self) -> float:
        """Sigma of a voltage angle."""
        vt = self.vt_class.phase_rad(current=False) if self.vt_class else 0.0
        return math.hypot(self._angle, vt) / _LIMIT_SIGMAS

    @property
    def im_rel(self) -> float:
        """Sigma of a current magnitude, relative."""
        ct = self.ct_class.ratio_percent / 100.0 if self.ct_class else 0.0
        return math.hypot(self._magnitude, ct) / _LIMIT_SIGMAS

    @property
    def ia_rad(self) -> float:
        """Sigma of a current angle."""
        ct = self.ct_class.phase_rad(current=True) if self.ct_class else 0.0
        return math.hypot(self._angle, ct) / _LIMIT_SIGMAS

    @property
    def pq_rel(self) -> float:
        """Sigma of an active or reactive power, relative."""
        return self.scada_percent / 100.0 / _LIMIT_SIGMAS


class SigmaSpec(_Frozen):
    """Standard deviations of what no device states: pseudo-measurements, zero injections and
    floors (a measurement's own sigma follows from its device's `accuracy`)."""

    pq_floor_mw: float = Field(default=0.001, gt=0)
    im_floor_ka: float = Field(default=0.0005, gt=0)
    pseudo_rel: float = Field(default=0.5, gt=0)
    pseudo_floor_mw: float = Field(default=0.01, gt=0)
    forecast_rel: float = Field(
        default=0.2,
        gt=0,
        description="least sigma of a forecast pseudo-measurement, relative to its value: a "
        "bus's 15-minute load is not known better than this, however narrow the forecast band",
    )
    pseudo_slack_vm_rel: float = Field(
        default=0.02, gt=0, description="substation voltage set-point where no PMU measures it"
    )
    zero_injection_mw: float = Field(
        default=0.01,
        gt=0,
        description="sigma of zero injections; tighter makes the gain ill-conditioned",
    )
    load_scale: float = Field(
        default=1.0,
        gt=0,
        description="sigma of the load-scale prior (1 = nominal loads): loose, so that the "
        "measurements say how loaded the grid is",
    )


class FlisrSpec(_Frozen):
    """Fault location, isolation and service restoration for this area."""

    enabled: bool = True
    switchable: Literal["all_lines", "existing"] = Field(
        default="all_lines",
        description="all_lines: a remote-controlled switch at both ends of every line (ring "
        "main units); existing: only the model's switches",
    )
    overcurrent_factor: float = Field(default=3.0, gt=1, description="x the pre-fault current")
    undervoltage_pu: float = Field(default=0.8, gt=0, lt=1)
    max_loading_percent: float = Field(default=100.0, gt=0)
    vm_min_pu: float = Field(default=0.9, gt=0)
    vm_max_pu: float = Field(default=1.1, gt=1)
    max_ties: int = Field(default=3, ge=0, description="tie switches a plan may close")
    cooldown_s: float = Field(default=10.0, ge=0, description="one case per fault")
    failed_estimates: int = Field(
        default=5, ge=1, description="estimates failing in a row that open a case"
    )
    incomplete_wait_windows: int = Field(
        default=2,
        ge=0,
        description="fault signs in a window that misses PMUs (a late frame, a lost device) "
        "wait up to this many windows for one that has them all before a case opens",
    )
    publish_commands: bool = Field(
        default=False, description="also publish the switching sequence as commands"
    )


class TopologySpec(_Frozen):
    """How the model follows the grid's switches."""

    follow_switches: bool = Field(
        default=True,
        description="switch states on dsotp/<area>/switch/state (a breaker status a device "
        "reports) change the model the next window uses",
    )
    command_switches: list[str] = Field(
        default_factory=list,
        description="switches whose commands (source: command) are applied as executed; a "
        "command for any other switch is refused",
    )


class ForecastSpec(_Frozen):
    """Load forecasts per bus from the estimated loads, and pseudo-measurements from them."""

    enabled: bool = True
    step_s: float = Field(default=900.0, gt=0, description="resampling step of the history")
    horizon_steps: int = Field(default=96, ge=1, description="24 h at 15 min")
    refresh_s: float = Field(default=900.0, gt=0, description="forecast every (event time)")
    retrain_s: float = Field(default=7 * 86400.0, gt=0, description="retrain every (event time)")
    model: str = Field(
        default="../models/forecast-{area}.json",
        description="relative to the agent file (agents/ and models/ sit side by side)",
    )
    history_days: int = Field(default=56, ge=9, description="history kept for forecasting")
    pseudo_measurements: bool = True
    warm_start: bool = Field(
        default=True,
        description="at start, read the last history_days of estimated loads from the store "
        "(DuckDB or InfluxDB) so that forecasts resume at once after a restart",
    )


class EstimatorSpec(_Frozen):
    """Which engine estimates, and how strictly."""

    engine: Literal["wls", "pandapower"] = "wls"
    accuracy: DeviceAccuracy = Field(
        default=DeviceAccuracy(), description="of every device that states none of its own"
    )
    sigmas: SigmaSpec = SigmaSpec()
    max_iterations: int = Field(default=30, ge=1, le=200)
    tolerance: float = Field(
        default=1e-6, gt=0, description="max state update at convergence (pu, rad)"
    )
    bad_data: bool = True
    chi2_confidence: float = Field(default=0.99, gt=0.5, lt=1)
    lnr_threshold: float = Field(default=3.0, gt=0)
    max_bad_data: int = Field(default=3, ge=0)
    residuals: bool = Field(
        default=False,
        description="publish every measurement's normalised residual with the estimate (the "
        "residual covariance costs milliseconds on large grids: off on the hot path)",
    )
    load_scale: bool = Field(
        default=True,
        description="estimate one scale of all nominal pseudo loads with the state (a grid at "
        "30 % of its nominal load is then estimated as such, not pulled towards 100 %)",
    )


class EmulatorSpec(_Frozen):
    """The emulated PMU fleet of this area."""

    tve_percent: float = Field(default=1.0, ge=0, le=10, description="99.9 % bound of the TVE")
    load_variation: float = Field(default=0.2, ge=0, le=1)
    profile_period_s: float = Field(default=300.0, gt=0)
    frequency_hz: float = 50.0
    seed: int = 7
    profiles: str | None = Field(
        default=None,
        description="real load profiles (simbench:<code> or a file) the loads follow instead "
        "of the synthetic swing",
    )
    profile_step_s: float = Field(
        default=900.0, gt=0, description="emulated seconds per profile step (900: real time)"
    )
    profile_clock: Literal["start", "wall"] = Field(
        default="start",
        description="start: the first profile step at the first instant; wall: the step of the "
        "instant's own time of year and PV by the hour of day (a stored history and forecasts "
        "then line up with the emulated loads; use with profile_step_s 900)",
    )


class DeviceSpec(_Frozen):
    """One PMU: the bus whose voltage phasor it measures and the branches whose currents it sees."""

    id: str = Field(min_length=1)
    bus: str = Field(min_length=1)
    branches: list[str] = Field(default_factory=list)
    accuracy: DeviceAccuracy | None = Field(
        default=None, description="this device's accuracy (default: the estimator's)"
    )

    @field_validator("id")
    @classmethod
    def _topic_safe(cls, value: str) -> str:
        if not _TOPIC_SAFE.match(value):
            raise ValueError(f"device id {value!r} must match {_TOPIC_SAFE.pattern}")
        return value


class AgentSpec(_Frozen):
    """Everything an area's agents need: grid, devices, windowing, estimation, emulation."""

    area: str = Field(min_length=1)
    description: str = ""
    grid: GridSpec
    voltage_basis: VoltageBasis = VoltageBasis.PHASE_TO_GROUND
    window: WindowSpec = WindowSpec()
    quality: QualitySpec = QualitySpec()
    estimator: EstimatorSpec = EstimatorSpec()
    emulator: EmulatorSpec = EmulatorSpec()
    flisr: FlisrSpec = FlisrSpec()
    topology: TopologySpec = TopologySpec()
    forecast: ForecastSpec = ForecastSpec()
    devices: list[DeviceSpec] = Field(min_length=1)

    @field_validator("area")
    @classmethod
    def _area_topic_safe(cls, value: str) -> str:
        if not _TOPIC_SAFE.match(value):
            raise ValueError(f"area {value!r} must match {_TOPIC_SAFE.pattern}")
        return value

    @model_validator(mode="after")
    def _unique_devices(self) -> AgentSpec:
        ids = [d.id for d in self.devices]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"device ids must be unique, repeated: {duplicates}")
        return self

    @property
    def device_ids(self) -> frozenset[str]:
        """The ids of all devices of this area."""
        return frozenset(d.id for d in self.devices)


def load_agent_spec(path: Path) -> AgentSpec:
    """Read and validate an agent spec YAML file."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"cannot read agent spec {path}: {exc}") from exc
    try:
        return AgentSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(f"invalid agent spec {path}: {exc}") from exc


def load_agent_specs(folder: Path) -> dict[str, tuple[AgentSpec, Path]]:
    """Every agent spec (`*.yaml`) in a folder, by area, with its file; one spec per area."""
    found: dict[str, tuple[AgentSpec, Path]] = {}
    for path in sorted(folder.glob("*.yaml")):
        spec = load_agent_spec(path)
        if spec.area in found:
            raise SpecError(f"area {spec.area!r} is specified twice: {found[spec.area][1]}, {path}")
        found[spec.area] = (spec, path)
    if not found:
        raise SpecError(f"no agent specs (*.yaml) in {folder}")
    return found
