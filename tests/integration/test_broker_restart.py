"""A broker restart in the middle of a stream loses no frame at QoS 1 (Mosquitto with persistence,
RabbitMQ with its durable MQTT sessions).

The emulated PMUs keep their frames while the broker is down and send them after reconnecting
(store and forward); the pipeline's persistent session makes the broker keep what was queued for
it. Every frame the PMUs produced must reach the pipeline, which records each message it
receives before handling it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from dsotp_streams.adapters.recording import RecordingWriter
from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.core.grid import GridModel
from dsotp_streams.runtime.embedded import AreaPipeline
from dsotp_streams.settings import MqttSettings, Settings
from tests.integration.conftest import MosquittoProcess, RabbitProcess
from tests.integration.databases import free_port
from tests.integration.emulated import Produced

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def received_frames(path: Path) -> set[tuple[str, str]]:
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        frame = json.loads(record["payload"])
        out.add((frame["device"], frame["timestamp"]))
    return out


@pytest.mark.parametrize("kind", ["mosquitto", "rabbitmq"])
def test_no_frame_is_lost_when_the_broker_restarts(
    kind: str, spec: AgentSpec, grid: GridModel, tmp_path: Path
) -> None:
    broker = MosquittoProcess(tmp_path, persistence=True) if kind == "mosquitto" else None
    broker = broker or RabbitProcess(tmp_path)
    broker.start()
    try:
        produced, received, stats = asyncio.run(_run(broker, spec, grid, tmp_path))
    finally:
        broker.stop()
    lost = produced - received
    assert not lost, f"{len(lost)} of {len(produced)} frames lost: {sorted(lost)[:5]}; {stats}"
    assert len(produced) >= 150  # the outage fell inside the stream
    assert stats["reconnects"] >= 1 and stats["emulator_reconnects"] >= 1, stats


async def _run(
    broker: MosquittoProcess | RabbitProcess, spec: AgentSpec, grid: GridModel, folder: Path
) -> tuple[set[tuple[str, str]], set[tuple[str, str]], dict[str, int]]:
    endpoint = broker.endpoint
    settings = Settings(
        mqtt=MqttSettings(
            port=endpoint.port,
            username=endpoint.username,
            password=endpoint.password,
            client_id_prefix=f"restart{free_port()}",
            reconnect_backoff_max_s=1.0,
        )
    )
    recorder = RecordingWriter(folder / "received.jsonl")
    pipeline = AreaPipeline(
        spec=spec, grid=grid, settings=settings, endpoint=endpoint, recorder=recorder
    )
    emulator = Produced(spec=spec, grid=grid, settings=settings, endpoint=endpoint)
    stop_pipeline, stop_emulator = asyncio.Event(), asyncio.Event()
    running = asyncio.create_task(pipeline.run(stop_pipeline))
    await asyncio.wait_for(pipeline.ready.wait(), 30)
    emulating = asyncio.create_task(emulator.run(stop_emulator))
    await asyncio.sleep(4.0)
    await asyncio.to_thread(broker.stop)  # graceful: a maintenance restart
    await asyncio.sleep(2.0)
    await asyncio.to_thread(broker.start)
    await asyncio.sleep(6.0)
    stop_emulator.set()
    await emulating  # sends what its outbox still holds
    await asyncio.sleep(3.0)  # the last queued frames reach the pipeline
    stop_pipeline.set()
    await running
    recorder.close()
    stats = {
        "reconnects": pipeline.stats.reconnects,
        "emulator_reconnects": emulator.stats.reconnects,
        "frames_valid": pipeline.stats.frames_valid,
        "late": pipeline.stats.late,
        "duplicate": pipeline.stats.duplicate,
    }
    return emulator.produced, received_frames(folder / "received.jsonl"), stats
