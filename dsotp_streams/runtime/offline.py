"""The same core on a recording, without any broker: frames in, state estimates out.

Windows close in event time (a frame's timestamp is "now"), so a recording gives the same windows
whatever the speed it is read at. Frames of devices that the agent spec does not use are not
estimated from. Every frame's bus voltage magnitudes, of devices used or not, serve as the
reference the estimate is compared with (``true_vm_pu``, ``max_true_dvm_pu`` over all buses the
recording has): a recording of every node's voltage (DPsim's) then shows how well a sparse
measurement set tracks the whole grid, measured buses included.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator

from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.contracts.frames import Measurand, PmuFrame
from dsotp_streams.contracts.messages import StateEstimate, TrueState, Window
from dsotp_streams.core.alignment import slot_of
from dsotp_streams.core.estimation import Estimator
from dsotp_streams.core.grid import GridModel
from dsotp_streams.runtime.stages import FrameIntake, IntakeOutcome

__all__ = ["OfflineEstimator"]


class OfflineEstimator:
    """Align and estimate a stream of recorded frames, in order, through the same `FrameIntake`
    as the runtimes (plausibility checks included), on the frames' clock only."""

    def __init__(self, spec: AgentSpec, *, grid: GridModel) -> None:
        self.spec = spec
        self.grid = grid
        self.estimator = Estimator(spec, grid=grid)
        # frames come decoded (offer_frame: no payload to size); no idle closing: estimating a
        # window between two frames is not a pause of the stream
        self.intake = FrameIntake(
            spec, grid=grid, max_payload_bytes=0, event_time=True, idle_close_s=math.inf
        )
        self.period_ns = self.intake.aligner.period_ns
        self.outcomes: Counter[IntakeOutcome] = Counter()
        self.statuses: Counter[str] = Counter()
        self._v_factor = spec.voltage_basis.to_line_to_line
        self._reference: dict[int, dict[str, float]] = {}

    def run(self, frames: Iterable[PmuFrame]) -> Iterator[StateEstimate]:
        """State estimates of every window, in time order."""
        pending: list[Window] = []  # closed, estimated once a later instant shows up
        for frame in frames:
            outcome = self.intake.offer_frame(frame).outcome
            self.outcomes[outcome] += 1
            if outcome in (IntakeOutcome.VALID, IntakeOutcome.UNKNOWN_DEVICE):
                self._keep_reference(frame)
            slot = slot_of(frame.timestamp, period_ns=self.period_ns)
            ready = [w for w in pending if slot_of(w.window_start, period_ns=self.period_ns) < slot]
            pending = pending[len(ready) :]
            yield from self._estimate(ready)
            pending.extend(self.intake.poll())
        pending.extend(self.intake.flush())
        yield from self._estimate(pending)

    def _keep_reference(self, frame: PmuFrame) -> None:
        slot = slot_of(frame.timestamp, period_ns=self.period_ns)
        values = self._reference.setdefault(slot, {})
        for reading in frame.readings:
            idx = self.grid.bus_index.get(reading.component)
            if idx is not None and reading.measurand is Measurand.VOLTMAGNITUDE:
                vn_v = float(self.grid.vn_kv[idx]) * 1e3
                values[reading.component] = reading.data * self._v_factor / vn_v

    def _estimate(self, windows: list[Window]) -> Iterator[StateEstimate]:
        for window in windows:
            slot = slot_of(window.window_start, period_ns=self.period_ns)
            for old in [s for s in self._reference if s < slot]:
                del self._reference[old]
            reference = self._reference.pop(slot, None)
            truth = (
                TrueState(
                    area=window.area, timestamp=window.window_start, vm_pu=reference, va_deg={}
                )
                if reference
                else None
            )
            estimate = self.estimator.estimate(window, truth=truth)
            self.statuses[estimate.status.value] += 1
            yield estimate
