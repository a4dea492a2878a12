"""What `dsotp demo`, `run` and `emulate` do: the broker, the emulator, the pipeline and its
outputs, and their live table. Imported by the commands when they run, so that `dsotp --help`
and the other commands do not load pandapower, the runtime and the rest (`dsotp_streams/cli.py`
only parses)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from dsotp_streams.adapters.grids import load_grid
from dsotp_streams.adapters.mqtt import EmbeddedBroker, MqttEndpoint, endpoint_from_settings
from dsotp_streams.adapters.recording import RecordingWriter
from dsotp_streams.api.outputs import Outputs
from dsotp_streams.contracts.agent import AgentSpec, load_agent_spec
from dsotp_streams.core.grid import GridModel
from dsotp_streams.emulator.history import backfill_rows
from dsotp_streams.errors import DsotpError
from dsotp_streams.logs import configure_logging
from dsotp_streams.runtime.embedded import AreaPipeline, Emulator, EmulatorStats, PipelineStats
from dsotp_streams.settings import MqttSettings, Settings

__all__ = ["DemoSummary", "demo", "emulate", "run", "run_demo"]

console = Console(stderr=False)
log = logging.getLogger("dsotp_streams")


def _setup(
    agent: Path | None,
    mqtt_url: str | None,
    mqtt_port: int | None,
    *,
    live_port: int | None = None,
    no_live: bool = False,
    store: Path | None = None,
) -> tuple[Settings, AgentSpec]:
    base = Settings()
    mqtt = base.mqtt.model_dump()
    if mqtt_url is not None:
        mqtt["url"] = mqtt_url
    if mqtt_port is not None:
        mqtt["port"] = mqtt_port
    live = base.live.model_copy(
        update={
            "enabled": base.live.enabled and not no_live,
            "port": base.live.port if live_port is None else live_port,
        }
    )
    stored = base.store if store is None else base.store.model_copy(update={"path": store})
    settings = base.model_copy(
        update={
            "mqtt": MqttSettings(**mqtt),
            "agent_file": agent or base.agent_file,
            "live": live,
            "store": stored,
        }
    )
    configure_logging(settings.log_level, Console(stderr=True))
    spec = load_agent_spec(settings.agent_file)
    return settings, spec


def _with_rate(spec: AgentSpec, rate: float | None) -> AgentSpec:
    if rate is None:
        return spec
    return spec.model_copy(update={"window": spec.window.model_copy(update={"rate_hz": rate})})


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


def _table(emulator: EmulatorStats | None, pipeline: PipelineStats) -> Table:
    table = Table(title="dsotp", show_header=True, header_style="bold")
    table.add_column("counter")
    table.add_column("value", justify="right")
    rows: list[tuple[str, str]] = []
    if emulator is not None:
        rows += [
            ("instants emulated", str(emulator.instants)),
            ("instants skipped (emulator behind)", str(emulator.instants_behind)),
            ("frames published", str(emulator.frames)),
        ]
    p = pipeline
    rows += [
        ("frames in", str(p.messages_in)),
        ("frames valid", str(p.frames_valid)),
        ("dead letters", str(p.dead_letters)),
        ("late / duplicate", f"{p.late} / {p.duplicate}"),
        ("windows (incomplete)", f"{p.windows} ({p.windows_incomplete})"),
        ("estimates ok / failed", f"{p.estimates_ok} / {p.estimates_failed}"),
        ("windows skipped", str(p.windows_skipped)),
        ("lag ms (max)", f"{p.lag_ms:.0f} ({p.lag_ms_max:.0f})"),
        ("estimate ms", f"{p.estimate_ms:.1f}"),
        ("max |V est - V true| pu", f"{p.max_true_dvm_pu:.4f}"),
        ("forecasts issued (set aside)", f"{p.forecasts} ({p.forecasts_rejected})"),
        ("forecast history read at start", f"{p.forecast_history_steps} steps"),
        ("FLISR cases (fault to plan ms)", f"{p.flisr_events} ({p.flisr_lag_ms:.0f})"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


async def run_demo(
    *,
    settings: Settings,
    spec: AgentSpec,
    duration_s: float | None,
    live: bool = True,
    faults: list[tuple[str, float]] | None = None,
    recorder: RecordingWriter | None = None,
    history_days: int = 0,
) -> DemoSummary:
    """Broker (embedded unless a URL is set), emulator and pipeline until duration or Ctrl-C;
    with `history_days`, the store is first given that many days of the emulated loads."""
    stop_emulator = asyncio.Event()
    stop_pipeline = asyncio.Event()
    _stop_on_signals(stop_emulator)
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
        grid = await asyncio.to_thread(
            load_grid, spec.grid, base_dir=settings.agent_file.parent, data_dir=settings.data_dir
        )
        outputs = await stack.enter_async_context(Outputs(settings, live=True))
        if outputs.live_url:
            console.print(f"live page at {outputs.live_url}")
        pipeline = _pipeline(spec, grid, settings, endpoint, outputs)
        pipeline.recorder = recorder
        gc.freeze()  # the grid model's objects live as long as the process: keep them out of GC
        # in a thread: reading the load profiles takes seconds, and the embedded broker and the
        # live page run on this loop
        emulator = await asyncio.to_thread(
            lambda: Emulator(spec=spec, grid=grid, settings=settings, endpoint=endpoint)
        )
        for line, at_s in faults or []:
            emulator.fleet.schedule_fault(line, at_s=at_s)
        if history_days:
            if outputs.store is None:
                raise DsotpError("--history-days fills the embedded store: run without InfluxDB")
            rows = await asyncio.to_thread(
                backfill_rows,
                emulator.fleet,
                datetime.now(tz=UTC),
                days=history_days,
                step_s=spec.forecast.step_s,
            )
            await asyncio.to_thread(outputs.store.append, rows)
            console.print(f"history: {history_days} days of the emulated loads stored")
        pipeline_task = asyncio.create_task(pipeline.run(stop_pipeline))
        await asyncio.wait_for(pipeline.ready.wait(), timeout=30)
        emulator_task = asyncio.create_task(emulator.run(stop_emulator))
        started = time.monotonic()
        progress = Progress(
            TextColumn("[bold]dsotp demo[/] {task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        task_id = progress.add_task(f"{spec.area} on {endpoint}", total=duration_s)
        with Live(
            Group(progress, _table(emulator.stats, pipeline.stats)),
            console=console,
            refresh_per_second=4,
            transient=not console.is_terminal,
            auto_refresh=live and console.is_terminal,
        ) as view:
            while not stop_emulator.is_set() and not emulator_task.done():
                elapsed = time.monotonic() - started
                if duration_s is not None and elapsed >= duration_s:
                    break
                progress.update(task_id, completed=elapsed)
                view.update(Group(progress, _table(emulator.stats, pipeline.stats)))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_emulator.wait(), timeout=0.25)
            stop_emulator.set()
            await asyncio.gather(emulator_task, return_exceptions=False)
            await asyncio.sleep(spec.window.wait_ms / 1000.0 + 0.3)
            stop_pipeline.set()
            await pipeline_task
            view.update(Group(progress, _table(emulator.stats, pipeline.stats)))
    # the sinks drained when the context closed: their counters are final now
    return DemoSummary(
        time.monotonic() - started, emulator.stats, pipeline.stats, outputs.sink_stats()
    )


def _parse_fault(text: str) -> tuple[str, float]:
    line, sep, seconds = text.rpartition("@")
    try:
        if not sep or not line:
            raise ValueError(text)
        return line, float(seconds)
    except ValueError as exc:
        raise typer.BadParameter(
            f"--fault {text!r}: expected LINE@SECONDS, e.g. 'Line 3-4@10'"
        ) from exc


def _pipeline(
    spec: AgentSpec,
    grid: GridModel,
    settings: Settings,
    endpoint: MqttEndpoint,
    outputs: Outputs,
) -> AreaPipeline:
    """An area's pipeline wired to the process's sinks and live page."""
    pipeline = AreaPipeline(
        spec=spec,
        grid=grid,
        settings=settings,
        endpoint=endpoint,
        sinks=outputs.sinks,
        listeners=outputs.attach(spec, grid),
        history=outputs.history(),
    )
    if outputs.live:
        pipeline.flisr_listeners.append(outputs.hub.publish_flisr)
        pipeline.forecast_listeners.append(outputs.hub.publish_forecast)
    outputs.counters = lambda: _counters(pipeline.stats)
    outputs.runtime_counters[spec.area] = lambda: {
        k: float(v) for k, v in asdict(pipeline.stats).items()
    }
    return pipeline


def _counters(p: PipelineStats) -> dict[str, Any]:
    return {
        "frames": p.frames_valid,
        "dead letters": p.dead_letters,
        "estimates ok": p.estimates_ok,
        "failed": p.estimates_failed,
        "lag ms": round(p.lag_ms, 1),
        "estimate ms": round(p.estimate_ms, 2),
        "forecasts": p.forecasts,
        "set aside": p.forecasts_rejected,
        "FLISR cases": p.flisr_events,
    }


def _report(summary: DemoSummary) -> None:
    console.print(_table(summary.emulator, summary.pipeline))
    p, e = summary.pipeline, summary.emulator
    console.print(
        f"dsotp demo: {e.instants} instants emulated ({e.instants_behind} skipped) "
        f"in {summary.seconds:.1f} s, "
        f"{p.estimates_published} estimates published ({p.estimates_ok} ok), "
        f"coverage {100 * summary.coverage:.1f} %, {p.dead_letters} dead letters"
    )
    for name, stats in summary.sinks.items():
        console.print(
            f"sink {name}: {stats['written']} rows written, {stats['retried']} retries, "
            f"{stats['spilled']} spilled, {stats['rejected']} rejected"
        )
    log.debug("summary %s", {"emulator": asdict(e), "pipeline": asdict(p)})


def demo(
    *,
    agent: Path | None,
    mqtt_url: str | None,
    mqtt_port: int,
    duration: float | None,
    rate: float | None,
    live_port: int | None,
    no_live: bool,
    store: Path | None,
    fault: list[str] | None,
    record: Path | None,
    history_days: int,
) -> None:
    """`dsotp demo`."""
    settings, spec = _setup(
        agent, mqtt_url, mqtt_port, live_port=live_port, no_live=no_live, store=store
    )
    spec = _with_rate(spec, rate)
    if history_days:  # the loads of the wall clock's time of year, a profile step per 15 min
        emulator = spec.emulator.model_copy(
            update={"profile_clock": "wall", "profile_step_s": spec.forecast.step_s}
        )
        spec = spec.model_copy(update={"emulator": emulator})
    faults = [_parse_fault(text) for text in fault or []]
    recorder = RecordingWriter(record) if record is not None else None
    try:
        summary = asyncio.run(
            run_demo(
                settings=settings,
                spec=spec,
                duration_s=duration,
                faults=faults,
                recorder=recorder,
                history_days=history_days,
            )
        )
    finally:
        if recorder is not None:
            recorder.close()
            console.print(f"{recorder.count} frames recorded to {record}")
    _report(summary)


ServiceT = TypeVar("ServiceT", AreaPipeline, Emulator)


def _stop_on_signals(stop: asyncio.Event) -> None:
    """Ctrl-C and SIGTERM set the stop event: the service drains and returns."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def _serve(
    settings: Settings,
    spec: AgentSpec,
    duration_s: float | None,
    make: Callable[[GridModel, MqttEndpoint], ServiceT],
) -> ServiceT:
    """Load the grid, build one service against the configured broker, run it until stopped."""
    stop = asyncio.Event()
    _stop_on_signals(stop)
    grid = await asyncio.to_thread(
        load_grid, spec.grid, base_dir=settings.agent_file.parent, data_dir=settings.data_dir
    )
    service = make(grid, endpoint_from_settings(settings.mqtt))
    gc.freeze()  # the grid model's objects live as long as the process: keep them out of GC
    if duration_s is not None:
        asyncio.get_running_loop().call_later(duration_s, stop.set)
    await service.run(stop)
    return service


def run(
    *,
    agent: Path | None,
    mqtt_url: str | None,
    duration: float | None,
    live_port: int | None,
    no_live: bool,
    store: Path | None,
    event_time: bool,
) -> None:
    """`dsotp run`."""
    settings, spec = _setup(
        agent, mqtt_url, None, live_port=live_port, no_live=no_live, store=store
    )
    if event_time:
        runtime = settings.runtime.model_copy(update={"event_time": True})
        settings = settings.model_copy(update={"runtime": runtime})

    async def serve() -> tuple[AreaPipeline, dict[str, dict[str, Any]]]:
        async with Outputs(settings, live=True) as outputs:
            if outputs.live_url:
                console.print(f"live page at {outputs.live_url}")
            pipeline = await _serve(
                settings,
                spec,
                duration,
                lambda grid, endpoint: _pipeline(spec, grid, settings, endpoint, outputs),
            )
        return pipeline, outputs.sink_stats()

    pipeline, sinks = asyncio.run(serve())
    console.print(_table(None, pipeline.stats))
    for name, stats in sinks.items():
        console.print(f"sink {name}: {stats['written']} rows written, {stats['spilled']} spilled")


def emulate(
    *, agent: Path | None, mqtt_url: str | None, duration: float | None, rate: float | None
) -> None:
    """`dsotp emulate`."""
    settings, spec = _setup(agent, mqtt_url, None)
    spec = _with_rate(spec, rate)
    emulator = asyncio.run(
        _serve(
            settings,
            spec,
            duration,
            lambda grid, endpoint: Emulator(
                spec=spec, grid=grid, settings=settings, endpoint=endpoint
            ),
        )
    )
    stats = emulator.stats
    console.print(
        f"emulated {stats.instants} instants ({stats.instants_behind} skipped), "
        f"{stats.frames} frames"
    )
