"""The recorded DPsim stream replayed through Mosquitto at ten times its speed: every frame
arrives and every instant is estimated by a pipeline aligning in event time; and a recording
of the bus plays back the same frames."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dsotp_streams.adapters.grids import load_grid
from dsotp_streams.adapters.mqtt import MqttEndpoint, Topics
from dsotp_streams.adapters.recording import RecordingWriter, read_frames
from dsotp_streams.contracts.agent import DeviceSpec, load_agent_spec
from dsotp_streams.contracts.frames import PmuFrame
from dsotp_streams.contracts.messages import StateEstimate
from dsotp_streams.runtime.embedded import AreaPipeline
from dsotp_streams.runtime.replay import publish_frames, record
from dsotp_streams.settings import MqttSettings, RuntimeSettings, Settings

pytestmark = pytest.mark.broker
REPO = Path(__file__).resolve().parents[2]


def test_dpsim_replay_at_10x_through_mosquitto_is_fully_estimated(
    mosquitto: MqttEndpoint, data_dir: Path, tmp_path: Path
) -> None:
    spec = load_agent_spec(REPO / "agents" / "sogno-cigre-mv.yaml")
    # every recorded node as a device: all 4,500 frames belong to the area
    spec = spec.model_copy(
        update={"devices": [DeviceSpec(id=f"dpsim-n{k}", bus=f"N{k}") for k in range(15)]}
    )
    grid = load_grid(spec.grid, data_dir=data_dir.parent)
    settings = Settings(
        mqtt=MqttSettings(host=mosquitto.host, port=mosquitto.port),
        runtime=RuntimeSettings(event_time=True),
        agent_file=REPO / "agents" / "sogno-cigre-mv.yaml",
    )
    estimates: list[StateEstimate] = []
    recording = tmp_path / "bus.jsonl"
    writer = RecordingWriter(recording)

    async def go() -> tuple[int, float]:
        stop, stop_recorder = asyncio.Event(), asyncio.Event()
        pipeline = AreaPipeline(
            spec=spec,
            grid=grid,
            settings=settings,
            endpoint=mosquitto,
            listeners=[estimates.append],
        )
        task = asyncio.create_task(pipeline.run(stop))
        recorder = asyncio.create_task(
            record(
                endpoint=mosquitto,
                topic_filter=f"dsotp/{spec.area}/pmu/+",
                writer=writer,
                stop=stop_recorder,
            )
        )
        await asyncio.wait_for(pipeline.ready.wait(), timeout=30)
        await asyncio.sleep(0.5)
        stats = await publish_frames(
            data_dir / "dpsim_powerflow_record_cigre.jsonl",
            columns=data_dir / "dpsim_powerflow_record_cigre.columns.txt",
            endpoint=mosquitto,
            topics=Topics("dsotp", spec.area),
            speed=10.0,
        )
        for _ in range(100):
            if pipeline.stats.frames_valid >= stats.frames:
                break
            await asyncio.sleep(0.1)
        stop.set()
        stop_recorder.set()
        await task
        await recorder
        assert pipeline.stats.dead_letters == 0
        return pipeline.stats.frames_valid, stats.seconds

    frames_valid, seconds = asyncio.run(go())
    writer.close()
    assert frames_valid == 4500
    assert 25 < seconds < 40  # 300 s of recording at ten times its speed
    assert len(estimates) == 300
    assert all(e.status.value == "ok" and not e.missing_devices for e in estimates)
    # the recording of the bus holds the same frames, in order
    replayed = [f for f in read_frames(recording) if isinstance(f, PmuFrame)]
    assert len(replayed) == 4500
    assert replayed[0].device == "dpsim-n0" and replayed[-1].device == "dpsim-n14"
