"""A corpus of more than 50 kinds of bad input, interleaved with a live emulated stream through
a real broker: every bad message is dead-lettered with a reason, nothing crashes, and the valid
frames around it are all estimated."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiomqtt
import pytest

from dsotp_streams.adapters.mqtt import MqttEndpoint, Topics, connect
from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.contracts.messages import DeadLetter, StateEstimate
from dsotp_streams.core.grid import GridModel
from dsotp_streams.runtime.embedded import AreaPipeline, Emulator, EmulatorStats, PipelineStats
from dsotp_streams.settings import MqttSettings, Settings

pytestmark = pytest.mark.broker


def _frame(**overrides: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "device": "pmu-n1",
        "timestamp": datetime.now(UTC).isoformat(),
        "readings": [
            {"component": "Bus 1", "measurand": "voltmagnitude", "phase": "A", "data": 11400.0},
            {"component": "Bus 1", "measurand": "voltangle", "phase": "A", "data": -0.1},
        ],
    }
    frame.update(overrides)
    return frame


def _reading(**overrides: Any) -> dict[str, Any]:
    reading: dict[str, Any] = {
        "component": "Bus 1",
        "measurand": "voltmagnitude",
        "phase": "A",
        "data": 11400.0,
    }
    reading.update(overrides)
    return _frame(readings=[reading])


def corpus() -> dict[str, bytes]:
    """Name -> payload; each must be dead-lettered once, with a reason."""
    now = datetime.now(UTC)
    j = lambda obj: json.dumps(obj).encode()  # noqa: E731
    items: dict[str, bytes] = {
        # malformed JSON and wrong top-level shapes
        "empty": b"",
        "whitespace": b"   \n",
        "truncated": b'{"device": "pmu-n1", "timestamp": ',
        "not json": b"this is not json",
        "single quotes": b"{'device': 'pmu-n1'}",
        "trailing garbage": j(_frame()) + b" trailing",
        "json array": b"[1, 2, 3]",
        "json null": b"null",
        "json number": b"42",
        "json string": b'"frame"',
        "invalid utf-8": b"\xff\xfe\xfa",
        "nested garbage": j({"frame": _frame()}),
        # missing and wrongly typed fields
        "no device": j({k: v for k, v in _frame().items() if k != "device"}),
        "no timestamp": j({k: v for k, v in _frame().items() if k != "timestamp"}),
        "no readings": j({k: v for k, v in _frame().items() if k != "readings"}),
        "device number": j(_frame(device=7)),
        "device empty": j(_frame(device="")),
        "device with slash": j(_frame(device="pmu/n1")),
        "timestamp bool": j(_frame(timestamp=True)),
        "timestamp object": j(_frame(timestamp={"s": 1})),
        "timestamp text": j(_frame(timestamp="yesterday")),
        "readings object": j(_frame(readings={"component": "Bus 1"})),
        "readings empty": j(_frame(readings=[])),
        "reading not object": j(_frame(readings=[1, 2])),
        "reading no component": j(_frame(readings=[{"measurand": "voltmagnitude", "data": 1}])),
        "reading no data": j(_frame(readings=[{"component": "Bus 1", "measurand": "voltangle"}])),
        "data list": j(_reading(data=[1, 2])),
        "data text": j(_reading(data="eleven")),
        "data null": j(_reading(data=None)),
        "data bool": j(_reading(data=True)),
        "phase unknown": j(_reading(phase="Z")),
        "measurand unknown": j(_reading(measurand="voltage")),
        "measurand number": j(_reading(measurand=3)),
        # non-finite numbers
        "NaN token": j(_frame()).replace(b"11400.0", b"NaN"),
        "Infinity token": j(_frame()).replace(b"11400.0", b"Infinity"),
        "-Infinity token": j(_frame()).replace(b"11400.0", b"-Infinity"),
        "nan string": j(_reading(data="nan")),
        "overflow": j(_frame()).replace(b"11400.0", b"1e400"),
        # units and physics
        "volts as millivolts": j(_reading(data=11400.0 * 1000)),
        "negative voltage": j(_reading(data=-11400.0)),
        "angle in degrees": j(_reading(measurand="voltangle", data=-57.3)),
        "frequency in mHz": j(_reading(measurand="frequency", data=50000.0)),
        "frequency in kHz": j(_reading(measurand="frequency", data=0.05)),
        "negative current": j(_reading(component="Line 1-2", measurand="currmagnitude", data=-5)),
        # identity: unknown device, component, a voltage of another bus
        "unknown device": j(_frame(device="pmu-intruder")),
        "unknown device 2": j(_frame(device="pmu-n99")),
        "unknown component": j(_reading(component="Bus 99")),
        "unknown branch": j(_reading(component="Line 9-99", measurand="currmagnitude")),
        "voltage of another bus": j(_reading(component="Line 1-2")),
        # time
        "future by an hour": j(_frame(timestamp=(now + timedelta(hours=1)).isoformat())),
        "year 3000": j(_frame(timestamp="3000-01-01T00:00:00Z")),
        "far past": j(_frame(timestamp="2001-01-01T00:00:00Z")),
        "late by a minute": j(_frame(timestamp=(now - timedelta(minutes=1)).isoformat())),
        "epoch seconds, an hour ago": j(_frame(timestamp=time.time() - 3600)),
        # size
        "oversized": j(_frame(note="x" * 300_000)),
    }
    return items


@dataclass
class StreamRun:
    """What a pipeline saw while bad input was sent into a live emulated stream."""

    stats: PipelineStats
    emulated: EmulatorStats
    dead: list[DeadLetter] = field(default_factory=list)
    estimates: list[StateEstimate] = field(default_factory=list)


def run_stream_with(
    endpoint: MqttEndpoint,
    spec: AgentSpec,
    grid: GridModel,
    inject: Callable[[aiomqtt.Client, Topics], Awaitable[None]],
    *,
    expected_letters: Callable[[list[DeadLetter], PipelineStats], bool],
) -> tuple[StreamRun, Topics]:
    """The area's pipeline and emulated PMUs on `endpoint`, with `inject` sending its messages
    two seconds into the stream; returns once the dead letters `expected_letters` waits for are
    in (or five seconds after the pipeline stopped). Client ids and topics are the run's own:
    amqtt was seen not to deliver to a new subscriber of a topic that another test's client had
    subscribed before."""
    run = f"bad{time.time_ns()}"
    settings = Settings(
        mqtt=MqttSettings(
            host=endpoint.host, port=endpoint.port, client_id_prefix=run, topic_prefix=run
        )
    )
    topics = Topics(run, spec.area)
    dead: list[DeadLetter] = []
    estimates: list[StateEstimate] = []

    async def go() -> StreamRun:
        stop_pipeline, stop_emulator = asyncio.Event(), asyncio.Event()
        pipeline = AreaPipeline(
            spec=spec, grid=grid, settings=settings, endpoint=endpoint, listeners=[estimates.append]
        )
        emulator = Emulator(spec=spec, grid=grid, settings=settings, endpoint=endpoint)
        task = asyncio.create_task(pipeline.run(stop_pipeline))
        await asyncio.wait_for(pipeline.ready.wait(), timeout=30)
        async with connect(endpoint, client_id=f"{run}-listener") as listener:
            await listener.subscribe(topics.deadletter, qos=1)

            async def collect() -> None:
                async for message in listener.messages:
                    dead.append(DeadLetter.model_validate_json(bytes(message.payload)))

            collector = asyncio.create_task(collect())
            emulating = asyncio.create_task(emulator.run(stop_emulator))
            await asyncio.sleep(2.0)
            async with connect(endpoint, client_id=f"{run}-sender") as sender:
                await inject(sender, topics)
            assert not task.done(), "the pipeline stopped"
            await asyncio.sleep(2.0)
            stop_emulator.set()
            await emulating
            await asyncio.sleep(1.0)
            stop_pipeline.set()
            await task
            for _ in range(50):
                if expected_letters(dead, pipeline.stats):
                    break
                await asyncio.sleep(0.1)
            collector.cancel()
        return StreamRun(pipeline.stats, emulator.stats, dead, estimates)

    return asyncio.run(go()), topics


@pytest.mark.parametrize("broker", ["amqtt", "mosquitto"])
def test_bad_input_corpus_is_dead_lettered_and_the_stream_goes_on(
    broker: str, request: pytest.FixtureRequest, spec: AgentSpec, grid: GridModel
) -> None:
    endpoint: MqttEndpoint = request.getfixturevalue(broker)
    items = corpus()
    assert len(items) >= 50

    async def inject(sender: aiomqtt.Client, topics: Topics) -> None:
        for payload in items.values():
            await sender.publish(topics.pmu("corpus"), payload, qos=1)
            await asyncio.sleep(0.02)

    def all_in(dead: list[DeadLetter], _stats: PipelineStats) -> bool:
        return sum(d.topic.endswith("/pmu/corpus") for d in dead) >= len(items)

    run, topics = run_stream_with(endpoint, spec, grid, inject, expected_letters=all_in)
    # every bad message accounted for: one dead letter each, with a reason (the emulated stream
    # may add its own, e.g. frames late under load: those come on the devices' topics)
    ours = [letter for letter in run.dead if letter.topic == topics.pmu("corpus")]
    assert len(ours) == len(items), (len(ours), len(items), run.stats)
    assert all(letter.reason for letter in ours)
    reasons = " | ".join(letter.reason for letter in ours)
    for expected in (
        "invalid frame",
        "unknown device",
        "unknown component",
        "units off by 1000",
        "degrees instead of radians",
        "future",
        "late",
        "exceeds the limit",
    ):
        assert expected in reasons, expected
    # and the valid stream around them was estimated
    ok = [e for e in run.estimates if e.status.value == "ok"]
    assert len(ok) >= 0.95 * run.emulated.instants
    assert run.stats.processing_errors == 0


FLOOD = 3000  # messages of each flooding device, sent as fast as the broker takes them


def test_a_flood_from_one_device_is_accounted_for_and_the_stream_goes_on(
    mosquitto: MqttEndpoint, spec: AgentSpec, grid: GridModel
) -> None:
    """Two devices flood the area mid-stream: a rogue device unknown to the spec, and copies of
    one instant of a known PMU. Every flood message is dead-lettered with its reason (or, past
    the dead-letter queue's bound, counted as dropped), and the PMUs' stream is still estimated."""

    async def inject(sender: aiomqtt.Client, topics: Topics) -> None:
        rogue = json.dumps(_frame(device="rogue"))
        copy = json.dumps(_frame(device="pmu-n1"))
        for _ in range(FLOOD):
            await sender.publish(topics.pmu("rogue"), rogue, qos=1)
            await sender.publish(topics.pmu("pmu-n1-copy"), copy, qos=1)

    def flood_letters(dead: list[DeadLetter]) -> int:
        return sum(d.topic.endswith(("/pmu/rogue", "/pmu/pmu-n1-copy")) for d in dead)

    def all_in(dead: list[DeadLetter], stats: PipelineStats) -> bool:
        return flood_letters(dead) + stats.dead_letters_dropped >= 2 * FLOOD - 1

    run, topics = run_stream_with(mosquitto, spec, grid, inject, expected_letters=all_in)
    rogue = [d for d in run.dead if d.topic == topics.pmu("rogue")]
    copies = [d for d in run.dead if d.topic == topics.pmu("pmu-n1-copy")]
    assert all("unknown device 'rogue'" in d.reason for d in rogue)
    # the first copy may take pmu-n1's place in its window; every other is a duplicate or late
    assert all(d.reason.startswith(("duplicate", "late")) for d in copies)
    stats = run.stats
    assert len(rogue) + len(copies) + stats.dead_letters_dropped >= 2 * FLOOD - 1, stats
    assert stats.unknown_device >= FLOOD and stats.processing_errors == 0
    ok = [e for e in run.estimates if e.status.value == "ok"]
    assert len(ok) >= 0.95 * run.emulated.instants, (len(ok), run.emulated, stats)
