"""Recording from and replaying to the databus; replaying a file through the core directly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt

from dsotp_streams.adapters.grids import load_grid
from dsotp_streams.adapters.mqtt import MqttEndpoint, Topics, connect
from dsotp_streams.adapters.recording import RecordingWriter, Rejected, read_frames
from dsotp_streams.contracts.agent import load_agent_spec
from dsotp_streams.contracts.frames import PmuFrame
from dsotp_streams.contracts.messages import StateEstimate
from dsotp_streams.errors import TransportError
from dsotp_streams.runtime.offline import OfflineEstimator

__all__ = ["ReplayStats", "publish_frames", "record", "replay"]

log = logging.getLogger(__name__)


def replay(
    source: Path,
    *,
    agent: Path,
    columns: Path | None = None,
    data_dir: Path | None = None,
) -> Iterator[StateEstimate]:
    """State estimates of a recording, through the same core, without any broker.

    `source`: a recording, SOGNO JSON Lines, CSV of readings, or VILLASnode JSON with `columns`.
    """
    spec = load_agent_spec(agent)
    grid = load_grid(spec.grid, base_dir=agent.parent, data_dir=data_dir)
    frames = (f for f in read_frames(source, columns=columns) if isinstance(f, PmuFrame))
    yield from OfflineEstimator(spec, grid=grid).run(frames)


@dataclass
class ReplayStats:
    """What a replay published."""

    frames: int = 0
    rejected: int = 0
    seconds: float = 0.0


async def publish_frames(
    source: Path,
    *,
    endpoint: MqttEndpoint,
    topics: Topics,
    speed: float | None,
    columns: Path | None = None,
    qos: int = 1,
) -> ReplayStats:
    """Publish a file's frames in order, with their relative timing divided by `speed` (None:
    as fast as the broker takes them); frames keep their own timestamps."""
    stats = ReplayStats()
    started = time.monotonic()
    first: datetime | None = None
    async with connect(endpoint, client_id=f"dsotp-replay-{topics.area}") as client:
        for item in read_frames(source, columns=columns):
            if isinstance(item, Rejected):
                stats.rejected += 1
                log.warning("%s:%d skipped: %s", source.name, item.line, item.reason)
                continue
            if speed is not None:
                first = first or item.timestamp
                due = (item.timestamp - first).total_seconds() / speed
                wait = due - (time.monotonic() - started)
                if wait > 0:
                    await asyncio.sleep(wait)
            try:
                await client.publish(topics.pmu(item.device), item.model_dump_json(), qos=qos)
            except aiomqtt.MqttError as exc:
                raise TransportError(f"replay publish failed: {exc}") from exc
            stats.frames += 1
    stats.seconds = time.monotonic() - started
    return stats


async def record(
    *,
    endpoint: MqttEndpoint,
    topic_filter: str,
    writer: RecordingWriter,
    stop: asyncio.Event,
) -> int:
    """Write every message on `topic_filter` with its receive time until stopped."""
    async with connect(endpoint, client_id="dsotp-recorder") as client:
        await client.subscribe(topic_filter, qos=1)

        async def read() -> None:
            async for message in client.messages:
                payload = message.payload
                raw = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
                writer.write(str(message.topic), bytes(raw), datetime.now(UTC))

        reader = asyncio.create_task(read())
        await stop.wait()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await reader
    return writer.count
