"""The stages every runtime runs per area, free of any transport: intake (decode, validate,
align) and window processing (estimate, then forecasting and FLISR on the result).

The embedded runtime moves their values over MQTT and asyncio queues, the scale-out runtime over
Kafka topics with faust; both call these, so no step is written twice."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from dsotp_streams.adapters.forecasters import load_forecaster, save_forecaster
from dsotp_streams.adapters.profiles import profiles_from_slots
from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.contracts.frames import PmuFrame, parse_frame
from dsotp_streams.contracts.messages import (
    EstimateStatus,
    FlisrEvent,
    Forecast,
    StateEstimate,
    SwitchSource,
    SwitchState,
    TrueState,
    Window,
)
from dsotp_streams.core.alignment import Aligner, AlignOutcome
from dsotp_streams.core.estimation import Estimator
from dsotp_streams.core.flisr import FaultDetector, FlisrPlanner
from dsotp_streams.core.forecasting.stream import ForecastAgent
from dsotp_streams.core.grid import GridModel
from dsotp_streams.core.topology import Topology
from dsotp_streams.core.validation import FrameCheck
from dsotp_streams.errors import DsotpError, FrameError, TopologyError

log = logging.getLogger(__name__)

__all__ = [
    "Completeness",
    "FrameIntake",
    "Intake",
    "IntakeOutcome",
    "LoadHistory",
    "PipelineStats",
    "Processed",
    "WindowProcessor",
    "touch",
]


def _utcnow() -> datetime:
    return datetime.now(tz=UTC)


class IntakeOutcome(StrEnum):
    """What became of one frame message; each lands in one counter of the runtimes' stats."""

    VALID = "frames_valid"
    INVALID = "invalid"
    IMPLAUSIBLE = "implausible"
    LATE = "late"
    DUPLICATE = "duplicate"
    UNKNOWN_DEVICE = "unknown_device"
    FUTURE = "future"


@dataclass
class PipelineStats:
    """What an area pipeline has seen and done."""

    messages_in: int = 0
    frames_valid: int = 0
    dead_letters: int = 0
    invalid: int = 0
    late: int = 0
    duplicate: int = 0
    unknown_device: int = 0
    future: int = 0
    windows: int = 0
    windows_incomplete: int = 0
    windows_skipped: int = 0
    estimates_published: int = 0
    estimates_ok: int = 0
    estimates_failed: int = 0
    publish_errors: int = 0
    reconnects: int = 0
    lag_ms: float = 0.0
    lag_ms_max: float = 0.0
    estimate_ms: float = 0.0
    max_true_dvm_pu: float = 0.0
    flisr_events: int = 0
    forecasts: int = 0
    forecast_history_steps: int = 0  # read back from the store at start (warm start)
    forecasts_rejected: int = 0  # set aside: their pseudo-measurements contradicted the PMUs
    implausible: int = 0
    processing_errors: int = 0
    dead_letters_dropped: int = 0  # the dead-letter queue was full (a flood)
    flisr_lag_ms: float = 0.0  # from the faulted window's start to the published plan
    switches_applied: int = 0  # switch states that changed the model
    estimate_age_ms_max: float = 0.0  # oldest window whose estimate began (max_window_age_s)

    def count(self, outcome: IntakeOutcome) -> None:
        """One frame message more, in the counter of its outcome."""
        self.messages_in += 1
        match outcome:
            case IntakeOutcome.VALID:
                self.frames_valid += 1
            case IntakeOutcome.INVALID:
                self.invalid += 1
            case IntakeOutcome.IMPLAUSIBLE:
                self.implausible += 1
            case IntakeOutcome.LATE:
                self.late += 1
            case IntakeOutcome.DUPLICATE:
                self.duplicate += 1
            case IntakeOutcome.UNKNOWN_DEVICE:
                self.unknown_device += 1
            case IntakeOutcome.FUTURE:
                self.future += 1


_FROM_ALIGNER = {
    AlignOutcome.LATE: IntakeOutcome.LATE,
    AlignOutcome.DUPLICATE: IntakeOutcome.DUPLICATE,
    AlignOutcome.UNKNOWN_DEVICE: IntakeOutcome.UNKNOWN_DEVICE,
    AlignOutcome.FUTURE: IntakeOutcome.FUTURE,
}


@dataclass(frozen=True)
class Intake:
    """What became of one message; a `reason` means it goes to the dead-letter topic."""

    outcome: IntakeOutcome
    frame: PmuFrame | None = None
    reason: str | None = None
    device: str | None = None


_REASONS = {
    AlignOutcome.LATE: "late: its window was already closed",
    AlignOutcome.DUPLICATE: "duplicate: the device already reported this instant",
    AlignOutcome.FUTURE: "timestamp too far in the future",
}


@dataclass(frozen=True)
class SwitchIntake:
    """A switch state to apply, or the reason it is refused (to the dead-letter topic)."""

    state: SwitchState | None
    reason: str | None


class FrameIntake:
    """Decode, check and align the frames of one area; close windows on its clock."""

    def __init__(
        self,
        spec: AgentSpec,
        *,
        grid: GridModel,
        max_payload_bytes: int,
        event_time: bool,
        idle_close_s: float = 1.0,
    ) -> None:
        self.spec = spec
        self.max_payload_bytes = max_payload_bytes
        self.event_time = event_time
        # in event time, a stream quiet this long (wall time) has its open windows closed
        self.idle_close_s = max(idle_close_s, 2 * spec.window.wait_ms / 1000.0)
        self._event_now: datetime | None = None
        self._last_offer = time.monotonic()
        self.frame_check = FrameCheck(spec, grid=grid)
        self.aligner = Aligner(
            area=spec.area,
            devices=spec.device_ids,
            period_s=1.0 / spec.window.rate_hz,
            wait_s=spec.window.wait_ms / 1000.0,
            max_open_windows=spec.window.max_open_windows,
            max_future_s=spec.window.max_future_s,
        )

    def now(self) -> datetime:
        """The alignment clock: wall time, or in event-time mode the newest frame's time; once
        no frame has come for `idle_close_s`, plus that quiet time (the last windows of a
        paused stream close). A busy consumer (loading, estimating) never moves the clock."""
        if self.event_time and self._event_now is not None:
            idle_s = time.monotonic() - self._last_offer
            if idle_s < self.idle_close_s:
                return self._event_now
            return self._event_now + timedelta(seconds=idle_s)
        return _utcnow()

    @staticmethod
    def decode(raw: bytes, *, max_payload_bytes: int) -> Intake:
        """The first step of `offer`, on its own for a transport that forwards frames (the
        bridge): size and schema; VALID with the frame, or INVALID with the reason."""
        if len(raw) > max_payload_bytes:
            return Intake(
                IntakeOutcome.INVALID, reason=f"payload of {len(raw)} bytes exceeds the limit"
            )
        try:
            frame = parse_frame(raw)
        except FrameError as exc:
            return Intake(IntakeOutcome.INVALID, reason=f"invalid frame: {exc}")
        return Intake(IntakeOutcome.VALID, frame=frame, device=frame.device)

    def offer(self, raw: bytes) -> Intake:
        """One frame message, as received."""
        self._last_offer = time.monotonic()
        decoded = self.decode(raw, max_payload_bytes=self.max_payload_bytes)
        if decoded.frame is None:
            return decoded
        return self.offer_frame(decoded.frame)

    def offer_frame(self, frame: PmuFrame) -> Intake:
        """One decoded frame: checked for plausibility, then aligned."""
        problem = self.frame_check.problem(frame)
        if problem is not None:
            return Intake(
                IntakeOutcome.IMPLAUSIBLE,
                reason=f"implausible frame: {problem}",
                device=frame.device,
            )
        # a frame from the future (by the wall clock, whatever the mode) never moves the clock
        outcome = self.aligner.add(frame, now=max(self.now(), _utcnow()))
        if outcome is AlignOutcome.ACCEPTED:
            stamp = frame.timestamp
            if self.event_time and (self._event_now is None or stamp > self._event_now):
                self._event_now = stamp
            return Intake(IntakeOutcome.VALID, frame=frame, device=frame.device)
        if outcome is AlignOutcome.UNKNOWN_DEVICE:
            reason = f"unknown device {frame.device!r} for area {self.spec.area!r}"
        else:
            reason = _REASONS[outcome]
        return Intake(_FROM_ALIGNER[outcome], reason=reason, device=frame.device)

    def switch(self, raw: bytes) -> SwitchIntake:
        """One switch-state message: schema, then what the agent spec allows."""
        if len(raw) > self.max_payload_bytes > 0:
            return SwitchIntake(None, f"payload of {len(raw)} bytes exceeds the limit")
        try:
            state = SwitchState.model_validate_json(raw)
        except ValueError as exc:
            return SwitchIntake(None, f"invalid switch state: {exc}")
        topology = self.spec.topology
        if not topology.follow_switches:
            return SwitchIntake(
                None, "this area does not follow switches (topology.follow_switches)"
            )
        if state.source is SwitchSource.COMMAND and state.switch not in topology.command_switches:
            return SwitchIntake(
                None,
                f"a command for switch {state.switch!r} is not allowed by the agent spec "
                "(topology.command_switches)",
            )
        return SwitchIntake(state, None)

    def poll(self) -> list[Window]:
        """The windows that are complete or whose wait has passed, oldest first."""
        return self.aligner.poll(now=self.now())

    def flush(self) -> list[Window]:
        """Every open window, complete or not (at shutdown)."""
        return self.aligner.flush(now=self.now())


async def take_switch(raw: bytes, *, intake: FrameIntake, processor: WindowProcessor) -> str | None:
    """One switch-state message through the one intake and the one processor, for every
    runtime: None when taken, else the reason it goes to the dead-letter topic."""
    checked = intake.switch(raw)
    if checked.state is None:
        return checked.reason
    return await processor.switch(checked.state)


@dataclass
class Completeness:
    """Each device's share of the windows it reported in over the last `span_s` of windows
    (the status topic's `devices`)."""

    devices: tuple[str, ...]
    span_s: float = 60.0
    _windows: deque[tuple[datetime, frozenset[str]]] = field(default_factory=deque)

    def add(self, window: Window) -> None:
        """One closed window: who was missing."""
        self._windows.append((window.window_start, frozenset(window.missing_devices)))
        newest = window.window_start
        while self._windows and (newest - self._windows[0][0]).total_seconds() > self.span_s:
            self._windows.popleft()

    def shares(self) -> dict[str, float]:
        """Device -> share of the windows it was in (1.0: every one); empty before any window."""
        n = len(self._windows)
        if n == 0:
            return {}
        missing = {d: 0 for d in self.devices}
        for _start, gone in self._windows:
            for device in gone:
                if device in missing:
                    missing[device] += 1
        return {d: round(1.0 - k / n, 4) for d, k in missing.items()}


def touch(path: Path) -> None:
    """Set a heartbeat file's time to now (a liveness probe checks its age)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


@dataclass
class Processed:
    """The results of one window."""

    estimate: StateEstimate
    forecast: Forecast | None = None
    flisr: FlisrEvent | None = None


class LoadHistory(Protocol):
    """Where a forecaster's history comes from at start: the stores' `bus_loads`."""

    def bus_loads(self, area: str, *, since_ns: int, step_s: float) -> list[dict[str, Any]]: ...


@dataclass
class WindowProcessor:
    """Estimate one area's windows, feed forecasting and FLISR; CPU work runs in threads.

    With a `history` (the store the runtime writes to), the forecaster starts from the loads
    stored in the last `forecast.history_days`: read in a thread when the first window comes,
    while windows are estimated on (the forecaster is fed once it is read)."""

    spec: AgentSpec
    grid: GridModel
    model_dir: Path
    history: LoadHistory | None = None
    history_steps: int = field(init=False, default=0)
    forecasts_rejected: int = field(init=False, default=0)  # set aside by the estimator
    _warm: asyncio.Task[int] | None = field(init=False, default=None)
    estimator: Estimator = field(init=False)
    detector: FaultDetector | None = field(init=False)
    planner: FlisrPlanner | None = field(init=False)
    forecaster: ForecastAgent | None = field(init=False)
    model_path: Path = field(init=False)
    topology: Topology | None = field(init=False, default=None)
    switches_applied: int = field(init=False, default=0)
    _last_loads: dict[str, float] = field(init=False, default_factory=dict)
    _pseudo: dict[str, tuple[float, float, float]] | None = field(init=False, default=None)
    # switchings accepted, each with its model, in force from the window at its timestamp on
    _switched: deque[tuple[datetime, GridModel]] = field(init=False, default_factory=deque)

    def __post_init__(self) -> None:
        spec = self.spec
        self._use(self.grid)
        self.model_path = self.model_dir / spec.forecast.model.format(area=spec.area)
        self.forecaster = None
        if spec.forecast.enabled:
            model = None
            if self.model_path.exists():
                try:
                    model = load_forecaster(self.model_path)
                except DsotpError as exc:
                    log.warning("forecast model unusable, training anew: %s", exc)
            self.forecaster = ForecastAgent(spec.area, spec=spec.forecast, model=model)

    def _use(self, grid: GridModel) -> None:
        """Estimator and FLISR on this grid model (at start, and after a switching)."""
        spec = self.spec
        self.grid = grid
        self.estimator = Estimator(spec, grid=grid)
        self.estimator.mapping.set_pseudo_injections(self._pseudo)  # by bus name: carried over
        self.detector = FaultDetector(spec, grid=grid) if spec.flisr.enabled else None
        self.planner = FlisrPlanner(grid, spec=spec.flisr) if spec.flisr.enabled else None

    async def switch(self, state: SwitchState) -> str | None:
        """Take a switch's new state: the windows from its timestamp on are estimated on the
        new topology (in both runtimes alike, however the windows and the message interleave).
        Returns None when taken (or already so), else the reason it is refused."""
        if self.topology is None:
            self.topology = await asyncio.to_thread(Topology, self.grid.net)
        try:
            grid = await asyncio.to_thread(self.topology.change, state.switch, closed=state.closed)
        except TopologyError as exc:
            return str(exc)
        if grid is not None:
            self._switched.append((state.timestamp, grid))
            self.switches_applied += 1
            log.info(
                "%s: %s %s (%s): the model follows from the window at its time",
                self.spec.area,
                state.switch,
                "closed" if state.closed else "opened",
                state.source.value,
            )
        return None

    def _forecaster_ready(self, first: datetime) -> bool:
        """False while the stored history is being read (started by the first window, whose
        time is `first`: the wall clock, or a replay's time)."""
        if self.history is None or not self.spec.forecast.warm_start:
            return True
        if self._warm is None:
            self._warm = asyncio.create_task(
                asyncio.to_thread(self.warm_start, first), name=f"history-{self.spec.area}"
            )
        if not self._warm.done():
            return False
        if self._warm.cancelled() or self.history_steps:
            return True
        error = self._warm.exception()
        if error is not None:
            log.error("forecast history of %s not read", self.spec.area, exc_info=error)
            self.history = None  # asked once: forecasting goes on without it
        else:
            self.history_steps = self._warm.result()
        return True

    def warm_start(self, now: datetime) -> int:
        """Seed the forecaster with the loads the history holds for the last `history_days`
        before `now` (not after it: a replay of older data may follow newer estimates in the
        store); returns the steps taken (0 when there are none or the store fails)."""
        forecast = self.spec.forecast
        if self.history is None or self.forecaster is None:
            return 0
        since = now - timedelta(days=forecast.history_days)
        try:
            rows = self.history.bus_loads(
                self.spec.area, since_ns=int(since.timestamp() * 1e9), step_s=forecast.step_s
            )
            current = int(now.timestamp() // forecast.step_s)
            rows = [r for r in rows if int(r["slot"]) < current]
            if not rows:
                log.info("forecast history of %s: none stored", self.spec.area)
                return 0
            profiles = profiles_from_slots(rows, forecast.step_s)
            steps = self.forecaster.seed(
                profiles.start, step_s=profiles.step_s, buses=profiles.nodes, p_mw=profiles.values
            )
        except DsotpError as exc:  # forecasting then starts from nothing, as without a store
            log.warning("forecast history of %s not read: %s", self.spec.area, exc)
            return 0
        log.info(
            "forecast history of %s: %d steps (%.1f days) from the store",
            self.spec.area,
            steps,
            steps * forecast.step_s / 86400,
        )
        return steps

    def skipped(self, window: Window, *, reason: str) -> StateEstimate:
        """The estimate published for a window this processor did not estimate."""
        return StateEstimate(
            area=window.area,
            window_start=window.window_start,
            status=EstimateStatus.SKIPPED,
            reason=reason,
            engine=self.estimator.engine,
        )

    def stale(
        self, window: Window, *, now: datetime, max_age_s: float, who: str = "estimator"
    ) -> StateEstimate | None:
        """The skipped estimate of a window that started more than `max_age_s` before `now`
        when its turn comes (0: no limit), else None. Whatever held it up (a slow estimator, a
        loop starved of the GIL, frames queued in a socket), an estimate is never later than
        the limit plus one estimate; the windows behind it are published as skipped."""
        age_s = (now - window.window_start).total_seconds()
        if max_age_s <= 0 or age_s <= max_age_s:
            return None
        reason = f"{who} behind: window started {age_s:.1f} s ago (limit {max_age_s:g} s)"
        return self.skipped(window, reason=reason)

    async def process(self, window: Window, *, truth: TrueState | None = None) -> Processed:
        """Estimate one window; then forecasting and FLISR on its result."""
        while self._switched and self._switched[0][0] <= window.window_start:
            self._use(self._switched.popleft()[1])
        observation = self.detector.observe(window) if self.detector else None
        v_prefault = self.estimator.last_state
        estimate = await asyncio.to_thread(self.estimator.estimate, window, truth=truth)
        result = Processed(estimate)
        if self.detector is not None:
            self.detector.estimate_status(estimate.status is EstimateStatus.OK)
        if estimate.status is EstimateStatus.OK and observation is None:
            self._last_loads = {b.bus: b.p_mw for b in estimate.buses}
        if self.estimator.forecast_rejected and self.forecaster is not None:
            self.forecaster.reject_current()
            self.forecasts_rejected += 1
        if self.forecaster is not None and self._forecaster_ready(window.window_start):
            update = await asyncio.to_thread(self.forecaster.observe, estimate)
            if update.retrained and self.forecaster.model is not None:
                try:
                    await asyncio.to_thread(save_forecaster, self.forecaster.model, self.model_path)
                except DsotpError as exc:  # the model in memory serves on
                    log.warning("retrained forecaster not saved: %s", exc)
            if update.pseudo is not None or update.forecast is not None:
                self._pseudo = update.pseudo
                self.estimator.mapping.set_pseudo_injections(update.pseudo)
            result.forecast = update.forecast
        if observation is not None and self.planner is not None:
            result.flisr = await asyncio.to_thread(
                self.planner.plan,
                observation,
                area=self.spec.area,
                load_mw=self._last_loads,
                v_prefault=v_prefault,
            )
        return result
