"""The one result path: what a processed window, a frame and a dead letter become, whatever the
runtime. Pure and synchronous: a window's results in, the outgoing messages (kind, payload and the
time that identifies them) and the store rows out, and the counters updated.

The embedded runtime publishes the messages on MQTT (`Topics.of_kind`) and hands the rows to its
sinks; the Kafka worker sends the messages to Kafka (`KafkaTopics.of_kind`) and the rows to its
sinks, and the bridge moves them from Kafka to the same MQTT topics. A new output is added here,
once, and every runtime carries it."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.contracts.frames import PmuFrame
from dsotp_streams.contracts.messages import (
    DeadLetter,
    EstimateStatus,
    FlisrEvent,
    Forecast,
    ResultKind,
    StateEstimate,
)
from dsotp_streams.contracts.sogno import estimate_to_sogno
from dsotp_streams.contracts.storage import (
    Row,
    rows_from_estimate,
    rows_from_flisr,
    rows_from_forecast,
    rows_from_frame,
)
from dsotp_streams.core.grid import GridModel
from dsotp_streams.runtime.stages import PipelineStats, Processed

__all__ = ["SEQ_HEADER", "STAMP_HEADER", "Fanned", "Outgoing", "ResultFanout", "dead_letter"]

# where a transport with headers (Kafka) carries `Outgoing.stamp` and `Outgoing.seq`
STAMP_HEADER = "dsotp-stamp"
SEQ_HEADER = "dsotp-seq"

log = logging.getLogger(__name__)

_MS = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message for the area's topic of `kind`.

    `stamp` and `seq` identify it among the messages of its area and kind (the window start, or
    a forecast's issue time; `seq` numbers the switching steps of one plan): a transport that may
    deliver twice (the Kafka path after a worker failover) passes on only a newer one."""

    kind: ResultKind
    payload: str
    stamp: datetime | None = None
    seq: int = 0

    @property
    def order(self) -> tuple[datetime, int] | None:
        """What `stamp` and `seq` say about its place: None for a dead letter (never dropped)."""
        return None if self.stamp is None else (self.stamp, self.seq)


@dataclass(frozen=True, slots=True)
class Fanned:
    """What one result becomes: messages to publish, in order, and rows to store."""

    messages: tuple[Outgoing, ...] = ()
    rows: tuple[Row, ...] = ()

    def __add__(self, other: Fanned) -> Fanned:
        return Fanned(self.messages + other.messages, self.rows + other.rows)


class ResultFanout:
    """The results of one area as messages and rows; counts them in `stats`."""

    def __init__(self, spec: AgentSpec, *, grid: GridModel, stats: PipelineStats) -> None:
        self.area = spec.area
        self.publish_commands = spec.flisr.publish_commands
        self.vn_kv = {name: float(grid.vn_kv[idx]) for name, idx in grid.named_buses}
        self.stats = stats

    def processed(self, result: Processed, *, now: datetime) -> Fanned:
        """A processed window: its estimate, then its forecast and FLISR event if any."""
        fanned = self.estimate(result.estimate, now=now)
        if result.forecast is not None:
            fanned += self.forecast(result.forecast)
        if result.flisr is not None:
            fanned += self.flisr(result.flisr, now=now)
        return fanned

    def estimate(self, estimate: StateEstimate, *, now: datetime) -> Fanned:
        """An estimate (ok, failed or skipped) on `state`, the SOGNO form on `state/sogno` when
        it has buses, its rows with the lag from the window start to `now`."""
        lag_ms = (now - estimate.window_start) / _MS
        stats = self.stats
        stats.lag_ms = lag_ms
        stats.lag_ms_max = max(stats.lag_ms_max, lag_ms)
        stats.estimate_ms = estimate.runtime_ms
        if estimate.status is EstimateStatus.OK:
            stats.estimates_ok += 1
        else:
            stats.estimates_failed += 1
        if estimate.max_true_dvm_pu is not None:
            stats.max_true_dvm_pu = max(stats.max_true_dvm_pu, estimate.max_true_dvm_pu)
        stamp = estimate.window_start
        messages = [Outgoing(ResultKind.STATE, estimate.model_dump_json(), stamp)]
        if estimate.buses:
            sogno = json.dumps(estimate_to_sogno(estimate, vn_kv=self.vn_kv))
            messages.append(Outgoing(ResultKind.STATE_SOGNO, sogno, stamp))
        return Fanned(tuple(messages), tuple(rows_from_estimate(estimate, lag_ms=lag_ms)))

    def forecast(self, forecast: Forecast) -> Fanned:
        """A forecast on `forecast`, with its rows."""
        self.stats.forecasts += 1
        message = Outgoing(ResultKind.FORECAST, forecast.model_dump_json(), forecast.issued_at)
        return Fanned((message,), tuple(rows_from_forecast(forecast)))

    def flisr(self, event: FlisrEvent, *, now: datetime) -> Fanned:
        """A FLISR event on `flisr`, and each switching step on `command/switch` when the agent
        spec allows publishing commands."""
        log.warning(
            "FLISR %s: %s -> %s, %d switching steps",
            self.area,
            event.detected,
            event.fault_section,
            len(event.sequence),
        )
        self.stats.flisr_events += 1
        self.stats.flisr_lag_ms = (now - event.window_start) / _MS
        stamp = event.window_start
        messages = [Outgoing(ResultKind.FLISR, event.model_dump_json(), stamp)]
        if self.publish_commands:
            messages += [
                Outgoing(ResultKind.SWITCH_COMMAND, action.model_dump_json(), stamp, seq)
                for seq, action in enumerate(event.sequence, start=1)
            ]
        return Fanned(tuple(messages), tuple(rows_from_flisr(event)))

    def frame(self, frame: PmuFrame) -> tuple[Row, ...]:
        """The readings of an accepted frame, for the sinks that store frames."""
        return tuple(rows_from_frame(self.area, frame))

    def dead_letter(
        self, topic: str, *, raw: bytes | bytearray, reason: str, device: str | None = None
    ) -> Outgoing:
        """Input that could not be used, with the reason, for `deadletter`."""
        self.stats.dead_letters += 1
        return dead_letter(topic, raw=raw, reason=reason, device=device)


def dead_letter(
    topic: str, *, raw: bytes | bytearray, reason: str, device: str | None = None
) -> Outgoing:
    """A dead letter received now, for the area's `deadletter` topic."""
    letter = DeadLetter.of(topic, raw, reason, device=device)
    return Outgoing(ResultKind.DEADLETTER, letter.model_dump_json())
