"""`dsotp demo`, `run` and `emulate`: parse, build the outputs, hand them to the runtime's
composition (`runtime/demo.py`) and render its counters. What a command needs is imported when
it runs, so `dsotp --help` stays fast."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.table import Table

from dsotp_streams.cli.common import (
    AgentOpt,
    DurationOpt,
    UrlOpt,
    console,
    settings_from_flags,
    stop_on_signals,
)

if TYPE_CHECKING:
    from dsotp_streams.adapters.mqtt import MqttEndpoint
    from dsotp_streams.adapters.recording import RecordingWriter
    from dsotp_streams.contracts.agent import AgentSpec
    from dsotp_streams.core.grid import GridModel
    from dsotp_streams.runtime.demo import DemoSummary
    from dsotp_streams.runtime.embedded import AreaPipeline, Emulator, EmulatorStats
    from dsotp_streams.runtime.stages import PipelineStats
    from dsotp_streams.settings import Settings

__all__ = ["register", "run_demo"]

log = logging.getLogger("dsotp_streams")

PortOpt = Annotated[int, typer.Option("--mqtt-port", help="port of the embedded broker")]
LivePortOpt = Annotated[
    int | None, typer.Option("--live-port", help="port of the live page (default 8050)")
]
NoLiveOpt = Annotated[bool, typer.Option("--no-live", help="do not serve the live page")]
StoreOpt = Annotated[
    Path | None, typer.Option("--store", help='DuckDB file of the embedded store, or ":memory:"')
]
FaultOpt = Annotated[
    list[str] | None,
    typer.Option("--fault", help="LINE@SECONDS: a three-phase fault on LINE after SECONDS"),
]
SwitchOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--switch",
        help="SWITCH=open|close@SECONDS: the emulated grid switches after SECONDS and reports "
        "it on dsotp/<area>/switch/state; the model follows (e.g. 'S2=close@10', "
        "'Line 4-5@Bus 4=open@20')",
    ),
]
RateOpt = Annotated[
    float | None, typer.Option("--rate", min=0.1, max=50, help="frames/s per device (<= 50)")
]
RecordOpt = Annotated[Path | None, typer.Option("--record", help="record every frame to this file")]
HistoryOpt = Annotated[
    int,
    typer.Option(
        "--history-days",
        min=0,
        max=365,
        help="first store DAYS of the emulated loads (as if the platform had run), with "
        "the profiles in real time: forecasts and their pseudo-measurements from the start "
        "(43 or more: the forecaster trains on them at once)",
    ),
]


def _spec(settings: Settings, rate: float | None = None) -> AgentSpec:
    from dsotp_streams.contracts.agent import load_agent_spec

    spec = load_agent_spec(settings.agent_file)
    if rate is None:
        return spec
    return spec.model_copy(update={"window": spec.window.model_copy(update={"rate_hz": rate})})


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
        ("switchings followed", str(p.switches_applied)),
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
    switchings: list[tuple[str, bool, float]] | None = None,
    recorder: RecordingWriter | None = None,
    history_days: int = 0,
) -> DemoSummary:
    """The demo with this process's outputs (sinks, live page, API), its counters rendered live
    on the terminal; returns once it has stopped and the sinks have drained."""
    from rich.console import Group
    from rich.live import Live
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from dsotp_streams.api.outputs import Outputs
    from dsotp_streams.runtime.demo import Demo

    stop = asyncio.Event()
    stop_on_signals(stop)
    async with Outputs(settings, live=True) as outputs:
        if outputs.live_url:
            console.print(f"live page at {outputs.live_url}")
        demo = Demo(
            settings=settings,
            spec=spec,
            outputs=outputs,
            faults=faults or [],
            switchings=switchings or [],
            recorder=recorder,
            history_days=history_days,
        )
        progress = Progress(
            TextColumn("[bold]dsotp demo[/] {task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        task_id = progress.add_task(spec.area, total=duration_s)

        def view() -> Group:
            return Group(progress, _table(demo.emulator_stats, demo.pipeline_stats))

        with Live(
            view(),
            console=console,
            refresh_per_second=4,
            transient=not console.is_terminal,
            auto_refresh=live and console.is_terminal,
        ) as screen:

            def tick(elapsed_s: float) -> None:
                description = f"{spec.area} on {demo.endpoint}"
                progress.update(task_id, completed=elapsed_s, description=description)
                screen.update(view())

            summary = await demo.run(duration_s=duration_s, stop=stop, on_tick=tick)
    # the sinks drained when the outputs closed: their counters are final now
    summary.sinks = outputs.sink_stats()
    return summary


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


def _parse_switch(text: str) -> tuple[str, bool, float]:
    switch, sep, rest = text.rpartition("=")
    action, at, seconds = rest.partition("@")
    try:
        if not sep or not switch or not at or action not in ("open", "close"):
            raise ValueError(text)
        return switch, action == "close", float(seconds)
    except ValueError as exc:
        raise typer.BadParameter(
            f"--switch {text!r}: expected SWITCH=open|close@SECONDS, e.g. 'S2=close@10'"
        ) from exc


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


ServiceT = TypeVar("ServiceT", "AreaPipeline", "Emulator")


async def _serve(
    settings: Settings,
    spec: AgentSpec,
    duration_s: float | None,
    make: Callable[[GridModel, MqttEndpoint], ServiceT],
) -> ServiceT:
    """Load the grid, build one service against the configured broker, run it until stopped."""
    from dsotp_streams.adapters.grids import load_grid
    from dsotp_streams.adapters.mqtt import endpoint_from_settings

    stop = asyncio.Event()
    stop_on_signals(stop)
    grid = await asyncio.to_thread(
        load_grid, spec.grid, base_dir=settings.agent_file.parent, data_dir=settings.data_dir
    )
    service = make(grid, endpoint_from_settings(settings.mqtt))  # it freezes at start (GC)
    if duration_s is not None:
        asyncio.get_running_loop().call_later(duration_s, stop.set)
    await service.run(stop)
    return service


def demo(
    agent: AgentOpt = None,
    mqtt_url: UrlOpt = None,
    mqtt_port: PortOpt = 1883,
    duration: DurationOpt = None,
    rate: RateOpt = None,
    live_port: LivePortOpt = None,
    no_live: NoLiveOpt = False,
    store: StoreOpt = None,
    fault: FaultOpt = None,
    switch: SwitchOpt = None,
    record: RecordOpt = None,
    history_days: HistoryOpt = 0,
) -> None:
    """Embedded broker + emulated PMU fleet + alignment + estimation + store + live page."""
    from dsotp_streams.adapters.recording import RecordingWriter

    settings = settings_from_flags(
        agent=agent,
        mqtt_url=mqtt_url,
        mqtt_port=mqtt_port,
        live_port=live_port,
        no_live=no_live,
        store=store,
    )
    spec = _spec(settings, rate)
    if history_days:  # the loads of the wall clock's time of year, a profile step per 15 min
        emulator = spec.emulator.model_copy(
            update={"profile_clock": "wall", "profile_step_s": spec.forecast.step_s}
        )
        spec = spec.model_copy(update={"emulator": emulator})
    faults = [_parse_fault(text) for text in fault or []]
    switchings = [_parse_switch(text) for text in switch or []]
    recorder = RecordingWriter(record) if record is not None else None
    try:
        summary = asyncio.run(
            run_demo(
                settings=settings,
                spec=spec,
                duration_s=duration,
                faults=faults,
                switchings=switchings,
                recorder=recorder,
                history_days=history_days,
            )
        )
    finally:
        if recorder is not None:
            recorder.close()
            console.print(f"{recorder.count} frames recorded to {record}")
    _report(summary)


def run(
    agent: AgentOpt = None,
    mqtt_url: UrlOpt = None,
    duration: DurationOpt = None,
    live_port: LivePortOpt = None,
    no_live: NoLiveOpt = False,
    store: StoreOpt = None,
    event_time: Annotated[
        bool, typer.Option("--event-time", help="align by the frames' time (for replays)")
    ] = False,
) -> None:
    """Bridge an external broker's PMU frames into alignment, estimation, store and live page."""
    from dsotp_streams.api.outputs import Outputs

    settings = settings_from_flags(
        agent=agent,
        mqtt_url=mqtt_url,
        live_port=live_port,
        no_live=no_live,
        store=store,
        event_time=event_time,
    )
    spec = _spec(settings)

    async def serve() -> tuple[AreaPipeline, dict[str, dict[str, Any]]]:
        from dsotp_streams.runtime.stages import PipelineStats

        async with Outputs(settings, live=True) as outputs:
            if outputs.live_url:
                console.print(f"live page at {outputs.live_url}")
            stats = PipelineStats()
            pipeline = await _serve(
                settings,
                spec,
                duration,
                lambda grid, endpoint: outputs.wiring(spec, grid, stats).pipeline(
                    spec=spec, grid=grid, settings=settings, endpoint=endpoint, stats=stats
                ),
            )
        return pipeline, outputs.sink_stats()

    pipeline, sinks = asyncio.run(serve())
    console.print(_table(None, pipeline.stats))
    for name, stats in sinks.items():
        console.print(f"sink {name}: {stats['written']} rows written, {stats['spilled']} spilled")


def emulate(
    agent: AgentOpt = None,
    mqtt_url: UrlOpt = None,
    duration: DurationOpt = None,
    rate: RateOpt = None,
) -> None:
    """Publish an emulated PMU fleet to a broker."""
    from dsotp_streams.runtime.embedded import Emulator

    settings = settings_from_flags(agent=agent, mqtt_url=mqtt_url)
    spec = _spec(settings, rate)
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


def register(app: typer.Typer) -> None:
    """Add `demo`, `run` and `emulate` to the `dsotp` app."""
    app.command()(demo)
    app.command()(run)
    app.command()(emulate)
