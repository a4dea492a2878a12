"""Backpressure in the embedded runtime: an estimator slower than the windows arrive (the
pandapower reference engine, about 80 ms per CIGRE MV window, against windows every 20 ms)
fills the bounded window queue; the oldest queued windows are published as skipped with the
reason, so latency stays bounded and every window is still accounted for."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import numpy as np
import pytest

from dsotp_streams.adapters.mqtt import MqttEndpoint
from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.contracts.messages import StateEstimate
from dsotp_streams.core.grid import GridModel
from dsotp_streams.runtime.embedded import AreaPipeline, Emulator
from dsotp_streams.settings import MqttSettings, RuntimeSettings, Settings

pytestmark = [pytest.mark.broker, pytest.mark.slow]

RUN_S = 8.0
QUEUE = 4


def test_a_slow_estimator_skips_windows_and_latency_stays_bounded(
    mosquitto: MqttEndpoint, spec: AgentSpec, grid: GridModel
) -> None:
    slow = spec.model_copy(
        update={
            "estimator": spec.estimator.model_copy(update={"engine": "pandapower"}),
            "window": spec.window.model_copy(update={"rate_hz": 50.0}),
            "emulator": spec.emulator.model_copy(update={"profiles": None}),
        }
    )
    run = f"bp{time.time_ns()}"
    settings = Settings(
        mqtt=MqttSettings(
            host=mosquitto.host, port=mosquitto.port, client_id_prefix=run, topic_prefix=run
        ),
        runtime=RuntimeSettings(window_queue_size=QUEUE),
    )
    arrivals: list[tuple[float, StateEstimate]] = []

    async def go() -> tuple[object, int]:
        stop_pipeline, stop_emulator = asyncio.Event(), asyncio.Event()
        pipeline = AreaPipeline(
            spec=slow,
            grid=grid,
            settings=settings,
            endpoint=mosquitto,
            listeners=[lambda e: arrivals.append((time.time(), e))],
        )
        emulator = Emulator(spec=slow, grid=grid, settings=settings, endpoint=mosquitto)
        task = asyncio.create_task(pipeline.run(stop_pipeline))
        await asyncio.wait_for(pipeline.ready.wait(), timeout=30)
        emulating = asyncio.create_task(emulator.run(stop_emulator))
        await asyncio.sleep(RUN_S)
        stop_emulator.set()
        await emulating
        await asyncio.sleep(1.0)
        stop_pipeline.set()
        await task
        return pipeline.stats, emulator.stats.instants

    stats, instants = asyncio.run(go())
    windows = Counter(e.window_start for _t, e in arrivals)
    assert set(windows.values()) == {1}, "a window published twice"
    assert len(windows) >= instants - 2, (len(windows), instants, stats)  # none lost
    statuses = Counter(e.status.value for _t, e in arrivals)
    skipped = [e for _t, e in arrivals if e.status.value == "skipped"]
    # the estimator carries at most about a quarter of the windows: most are skipped, and say so
    assert len(skipped) > 0.5 * len(arrivals), statuses
    assert {e.reason for e in skipped} == {"estimator behind: window queue full"}
    assert statuses["ok"] > 10, statuses
    # latency of the estimated windows stays bounded by the queue, not by the run's length
    lags = np.array([t - e.window_start.timestamp() for t, e in arrivals if e.status.value == "ok"])
    late_half = lags[len(lags) // 2 :]
    # (0.5-1.4 s seen; an unbounded queue: 20 s and growing)
    assert np.percentile(late_half, 95) < 4.0, np.percentile(late_half, [50, 95])
