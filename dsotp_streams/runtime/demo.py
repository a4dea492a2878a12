"""The demo's composition: a broker (embedded unless a URL is set), an emulated PMU fleet and one
area's pipeline, with the outputs a caller hands it; run until a duration or a stop.

It knows no page and no terminal: the command line builds the outputs (sinks, live page, API),
hands them over as a `DemoOutputs`, and renders the counters on each tick."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from dsotp_streams.adapters.grids import load_grid
from dsotp_streams.adapters.mqtt import EmbeddedBroker, MqttEndpoint, endpoint_from_settings
from dsotp_streams.adapters.recording import RecordingWriter
from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.contracts.messages import FlisrEvent, Forecast, StateEstimate
from dsotp_streams.contracts.storage import Row
from dsotp_streams.core.grid import GridModel
from dsotp_streams.emulator.history import backfill_rows
from dsotp_streams.runtime.embedded import AreaPipeline, Emulator, EmulatorStats
from dsotp_streams.runtime.sinks import RowSink
from dsotp_streams.runtime.stages import LoadHistory, PipelineStats
from dsotp_streams.settings import Settings

__all__ = ["Demo", "DemoOutputs", "DemoSummary", "Wiring"]


@dataclass(frozen=True)
class Wiring:
    """What an area's pipeline is handed besides MQTT: sinks, listeners and its history."""

    sinks: Sequence[RowSink] = ()
    listeners: Sequence[Callable[[StateEstimate], None]] = ()
    forecast_listeners: Sequence[Callable[[Forecast], None]] = ()
    flisr_listeners: Sequence[Callable[[FlisrEvent], None]] = ()
    history: LoadHistory | None = None

    def pipeline(
        self,
        *,
        spec: AgentSpec,
        grid: GridModel,
        settings: Settings,
        endpoint: MqttEndpoint,
        recorder: RecordingWriter | None = None,
        stats: PipelineStats | None = None,
    ) -> AreaPipeline:
        """The area's pipeline with these outputs."""
        return AreaPipeline(
            spec=spec,
            grid=grid,
            settings=settings,
            endpoint=endpoint,
            sinks=self.sinks,
            listeners=self.listeners,
            forecast_listeners=self.forecast_listeners,
            flisr_listeners=self.flisr_listeners,
            recorder=recorder,
            history=self.history,
            stats=stats,
        )


class DemoOutputs(Protocol):
    """Where a demo's results go besides MQTT (the command line's sinks, page and API)."""

    def wiring(self, spec: AgentSpec, *, grid: GridModel, stats: PipelineStats) -> Wiring:
        """Register an area; what its pipeline is handed."""
        ...

    def store_rows(self, rows: list[Row]) -> None:
        """Write rows to the store the pipeline reads its history from (--history-days)."""
        ...


@dataclass
class DemoSummary:
    """What a demo run did, for the exit report."""

    seconds: float
    emulator: EmulatorStats
    pipeline: PipelineStats
    sinks: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def coverage(self) -> float:
        """Published estimates per scheduled instant (instants the emulator fell behind count)."""
        scheduled = self.emulator.instants + self.emulator.instants_behind
        return self.pipeline.estimates_published / max(1, scheduled)


class Demo:
    """Broker, emulator and pipeline of one area, run together."""

    def __init__(
        self,
        *,
        settings: Settings,
        spec: AgentSpec,
        outputs: DemoOutputs,
        faults: Sequence[tuple[str, float]] = (),
        switchings: Sequence[tuple[str, bool, float]] = (),
        recorder: RecordingWriter | None = None,
        history_days: int = 0,
    ) -> None:
        self.settings = settings
        self.spec = spec
        self.outputs = outputs
        self.faults = list(faults)
        self.switchings = list(switchings)  # (switch, closed, seconds after the first instant)
        self.recorder = recorder
        self.history_days = history_days
        self.endpoint: MqttEndpoint | None = None
        self.emulator_stats = EmulatorStats()
        self.pipeline_stats = PipelineStats()
        self.started = time.monotonic()

    async def run(
        self,
        *,
        duration_s: float | None,
        stop: asyncio.Event,
        on_tick: Callable[[float], None] | None = None,
        tick_s: float = 0.25,
    ) -> DemoSummary:
        """Until `duration_s` has passed or `stop` is set; `on_tick(elapsed_s)` every `tick_s`.
        The emulator stops first, the pipeline estimates the windows in flight, then returns."""
        settings, spec = self.settings, self.spec
        async with contextlib.AsyncExitStack() as stack:
            if settings.mqtt.url:
                endpoint = endpoint_from_settings(settings.mqtt)
            else:
                mqtt = settings.mqtt
                broker = await stack.enter_async_context(
                    EmbeddedBroker(
                        host=mqtt.host,
                        port=mqtt.port,
                        username=mqtt.username,
                        password=mqtt.password.get_secret_value() if mqtt.password else None,
                    )
                )
                endpoint = broker.endpoint
            self.endpoint = endpoint
            grid = await asyncio.to_thread(
                load_grid,
                spec.grid,
                base_dir=settings.agent_file.parent,
                data_dir=settings.data_dir,
            )
            wiring = self.outputs.wiring(spec, grid=grid, stats=self.pipeline_stats)
            pipeline = wiring.pipeline(
                spec=spec,
                grid=grid,
                settings=settings,
                endpoint=endpoint,
                recorder=self.recorder,
                stats=self.pipeline_stats,
            )
            # in a thread: reading the load profiles takes seconds (the first time), and the
            # embedded broker and the live page run on this loop
            emulator = await asyncio.to_thread(
                lambda: Emulator(
                    spec=spec,
                    grid=grid,
                    settings=settings,
                    endpoint=endpoint,
                    stats=self.emulator_stats,
                )
            )
            for line, at_s in self.faults:
                emulator.fleet.schedule_fault(line, at_s=at_s)
            for switch, closed, at_s in self.switchings:
                emulator.fleet.schedule_switching(switch, closed=closed, at_s=at_s)
            if self.history_days:
                rows = await asyncio.to_thread(
                    backfill_rows,
                    emulator.fleet,
                    datetime.now(tz=UTC),
                    days=self.history_days,
                    step_s=spec.forecast.step_s,
                )
                await asyncio.to_thread(self.outputs.store_rows, rows)
            stop_pipeline = asyncio.Event()
            pipeline_task = asyncio.create_task(pipeline.run(stop_pipeline), name="pipeline")
            await asyncio.wait_for(pipeline.ready.wait(), timeout=30)
            emulator_task = asyncio.create_task(emulator.run(stop), name="emulator")
            self.started = time.monotonic()
            while not stop.is_set() and not emulator_task.done():
                elapsed = time.monotonic() - self.started
                if duration_s is not None and elapsed >= duration_s:
                    break
                if on_tick is not None:
                    on_tick(elapsed)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=tick_s)
            stop.set()
            await emulator_task
            await asyncio.sleep(spec.window.wait_ms / 1000.0 + 0.3)
            stop_pipeline.set()
            await pipeline_task
            if on_tick is not None:
                on_tick(time.monotonic() - self.started)
        return DemoSummary(
            time.monotonic() - self.started, self.emulator_stats, self.pipeline_stats
        )
