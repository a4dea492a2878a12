"""The one result path: what a processed window becomes, for every runtime."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from dsotp_streams.adapters.kafka import KafkaTopics
from dsotp_streams.adapters.mqtt import Topics
from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.contracts.messages import (
    DeadLetter,
    EstimateStatus,
    FlisrEvent,
    Forecast,
    ResultKind,
    StateEstimate,
    SwitchAction,
)
from dsotp_streams.core.estimation import Estimator
from dsotp_streams.core.grid import GridModel
from dsotp_streams.emulator import PmuFleet
from dsotp_streams.runtime.fanout import ResultFanout
from dsotp_streams.runtime.stages import FrameIntake, PipelineStats, Processed

T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def estimated(spec: AgentSpec, grid: GridModel) -> StateEstimate:
    intake = FrameIntake(spec, grid=grid, max_payload_bytes=100_000, event_time=True)
    fleet = PmuFleet(spec, grid)
    for k in range(2):
        for frame in fleet.step(T0 + k * timedelta(seconds=0.1)).frames:
            intake.offer(frame.model_dump_json().encode())
    window = intake.poll()[0]
    return Estimator(spec, grid=grid).estimate(window)


def flisr_event(spec: AgentSpec) -> FlisrEvent:
    steps = [
        SwitchAction(step=1, action="open", switch="S1", purpose="isolate"),
        SwitchAction(step=2, action="open", switch="S2", purpose="isolate"),
        SwitchAction(step=3, action="close", switch="S3", purpose="restore"),
    ]
    return FlisrEvent(
        area=spec.area,
        window_start=T0,
        detected="overcurrent",
        status="planned",
        fault_section="Line 3-4",
        sequence=steps,
    )


def test_an_estimate_goes_to_state_and_sogno_with_its_rows_and_counters(
    spec: AgentSpec, grid: GridModel
) -> None:
    estimate = estimated(spec, grid)
    assert estimate.status is EstimateStatus.OK
    stats = PipelineStats()
    fanned = ResultFanout(spec, grid=grid, stats=stats).estimate(
        estimate, now=T0 + timedelta(milliseconds=80)
    )
    assert [m.kind for m in fanned.messages] == [ResultKind.STATE, ResultKind.STATE_SOGNO]
    assert StateEstimate.model_validate_json(fanned.messages[0].payload) == estimate
    sogno = json.loads(fanned.messages[1].payload)
    assert {entry["component"] for entry in sogno} == {b.bus for b in estimate.buses}
    assert all(m.stamp == T0 for m in fanned.messages)
    states = [r for r in fanned.rows if r.measurement == "state"]
    (quality,) = [r for r in fanned.rows if r.measurement == "se_quality"]
    assert len(states) == len(estimate.buses)
    assert quality.fields["lag_ms"] == 80.0
    assert (stats.estimates_ok, stats.estimates_failed, stats.lag_ms) == (1, 0, 80.0)


def test_a_skipped_window_is_published_without_a_sogno_form(
    spec: AgentSpec, grid: GridModel
) -> None:
    stats = PipelineStats()
    skipped = StateEstimate(
        area=spec.area,
        window_start=T0,
        status=EstimateStatus.SKIPPED,
        reason="behind",
        engine="wls",
    )
    fanned = ResultFanout(spec, grid=grid, stats=stats).estimate(skipped, now=T0)
    assert [m.kind for m in fanned.messages] == [ResultKind.STATE]
    assert [r.measurement for r in fanned.rows] == ["se_quality"]
    assert stats.estimates_failed == 1


def test_switch_commands_follow_a_plan_only_when_the_spec_allows_them(
    spec: AgentSpec, grid: GridModel
) -> None:
    event = flisr_event(spec)
    advisory = ResultFanout(spec, grid=grid, stats=PipelineStats()).flisr(event, now=T0)
    assert [m.kind for m in advisory.messages] == [ResultKind.FLISR]
    allowed = spec.model_copy(
        update={"flisr": spec.flisr.model_copy(update={"publish_commands": True})}
    )
    stats = PipelineStats()
    commanding = ResultFanout(allowed, grid=grid, stats=stats).flisr(
        event, now=T0 + timedelta(seconds=1)
    )
    commands = [m for m in commanding.messages if m.kind is ResultKind.SWITCH_COMMAND]
    assert [SwitchAction.model_validate_json(m.payload) for m in commands] == event.sequence
    # one stamp (the window), told apart and ordered by their sequence number
    orders = [m.order for m in commands]
    assert orders == sorted(orders) and len(set(orders)) == 3
    assert [r.measurement for r in commanding.rows] == ["flisr"]
    assert (stats.flisr_events, stats.flisr_lag_ms) == (1, 1000.0)


def test_a_processed_window_fans_out_estimate_then_forecast_then_flisr(
    spec: AgentSpec, grid: GridModel
) -> None:
    forecast = Forecast(
        area=spec.area,
        issued_at=T0,
        step_s=900,
        times=[T0 + timedelta(minutes=15)],
        quantiles={"Bus 1": {"0.5": [1.0]}},
    )
    stats = PipelineStats()
    processed = Processed(estimated(spec, grid), forecast=forecast, flisr=flisr_event(spec))
    fanned = ResultFanout(spec, grid=grid, stats=stats).processed(processed, now=T0)
    kinds = [m.kind for m in fanned.messages]
    assert kinds == [
        ResultKind.STATE,
        ResultKind.STATE_SOGNO,
        ResultKind.FORECAST,
        ResultKind.FLISR,
    ]
    assert {r.measurement for r in fanned.rows} >= {"state", "se_quality", "forecast", "flisr"}
    assert (stats.forecasts, stats.flisr_events, stats.estimates_ok) == (1, 1, 1)


def test_a_dead_letter_keeps_the_reason_and_is_never_deduplicated(
    spec: AgentSpec, grid: GridModel
) -> None:
    stats = PipelineStats()
    message = ResultFanout(spec, grid=grid, stats=stats).dead_letter(
        "dsotp/x/pmu/a", raw=b"{not json", reason="invalid frame: bad", device="a"
    )
    letter = DeadLetter.model_validate_json(message.payload)
    assert (letter.reason, letter.payload, letter.device) == (
        "invalid frame: bad",
        "{not json",
        "a",
    )
    assert message.kind is ResultKind.DEADLETTER and message.order is None
    assert stats.dead_letters == 1


def test_every_kind_has_one_mqtt_and_one_kafka_topic() -> None:
    mqtt = Topics("site/dsotp", "north")
    kafka = KafkaTopics("dsotp")
    assert len({mqtt.of_kind(kind) for kind in ResultKind}) == len(ResultKind)
    assert mqtt.of_kind(ResultKind.STATE_SOGNO) == "site/dsotp/north/state/sogno"
    assert mqtt.of_kind(ResultKind.SWITCH_COMMAND) == "site/dsotp/north/command/switch"
    assert [kafka.kind_of(kafka.of_kind(kind)) for kind in ResultKind] == list(ResultKind)
    assert kafka.kind_of(kafka.frames) is None
    assert kafka.of_kind(ResultKind.STATE) == kafka.state  # the topic names that were there
