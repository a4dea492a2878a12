"""Offline commands of `dsotp`: estimate from a file of frames, convert recordings."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import typer

from dsotp_streams.cli.common import settings_from_flags, stderr, stop_on_signals

if TYPE_CHECKING:  # imported when a command runs: `dsotp --help` stays fast
    from rich.progress import Progress

    from dsotp_streams.contracts.agent import AgentSpec
    from dsotp_streams.contracts.frames import PmuFrame
    from dsotp_streams.settings import Settings

__all__ = ["register"]

log = logging.getLogger("dsotp_streams.offline")
console = stderr

InputOpt = Annotated[Path, typer.Option("--input", "-i", exists=True, dir_okay=False)]
OutputOpt = Annotated[Path, typer.Option("--output", "-o", dir_okay=False)]
DeadOpt = Annotated[
    Path | None,
    typer.Option("--dead-letter", dir_okay=False, help="write rejected lines here, with reasons"),
]


def _progress() -> Progress:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} bytes"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


class _Rejects:
    """Counts rejected input and writes it, with the reason, to an optional file."""

    def __init__(self, path: Path | None, source: str) -> None:
        self.count = 0
        self.source = source
        self._file: IO[str] | None = path.open("w", encoding="utf-8") if path else None

    def add(self, line: int, reason: str, payload: str) -> None:
        from datetime import UTC, datetime

        from dsotp_streams.contracts.messages import DeadLetter

        self.count += 1
        log.warning("%s:%d rejected: %s", self.source, line, reason)
        if self._file is not None:
            letter = DeadLetter(
                topic=f"{self.source}:{line}",
                reason=reason,
                received_at=datetime.now(UTC),
                payload=payload[:4096],
            )
            self._file.write(letter.model_dump_json() + "\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _frames(path: Path, rejects: _Rejects, progress: Progress) -> Iterator[PmuFrame]:
    from dsotp_streams.contracts.frames import parse_frame
    from dsotp_streams.errors import FrameError

    task = progress.add_task(f"estimating {path.name}", total=path.stat().st_size)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            progress.advance(task, len(raw))
            text = raw.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            try:
                yield parse_frame(text)
            except FrameError as exc:
                rejects.add(number, str(exc), text)


def estimate(
    input_path: InputOpt,
    output: OutputOpt,
    agent: Annotated[Path | None, typer.Option("--agent", help="agent spec YAML file")] = None,
    dead_letter: DeadOpt = None,
) -> None:
    """Estimate every window of a SOGNO JSON Lines file (one frame per line), offline."""
    import gc

    from dsotp_streams.adapters.grids import load_grid
    from dsotp_streams.runtime.offline import OfflineEstimator

    settings = settings_from_flags(agent=agent)
    spec, grid_base = _spec(settings)
    grid = load_grid(spec.grid, base_dir=grid_base, data_dir=settings.data_dir)
    offline = OfflineEstimator(spec, grid=grid)
    gc.freeze()  # the grid model's objects live as long as the process: keep them out of GC
    rejects = _Rejects(dead_letter, input_path.name)
    written = 0
    try:
        with _progress() as progress, output.open("w", encoding="utf-8") as out:
            for state in offline.run(_frames(input_path, rejects, progress)):
                out.write(state.model_dump_json() + "\n")
                written += 1
    finally:
        rejects.close()
    outcomes = ", ".join(f"{k.value} {v}" for k, v in sorted(offline.outcomes.items()))
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(offline.statuses.items()))
    typer.echo(
        f"{written} estimates to {output} ({statuses or 'none'}); frames: {outcomes or 'none'}; "
        f"rejected lines {rejects.count}"
    )


def convert_villas(
    input_path: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    columns: Annotated[Path, typer.Option("--columns", exists=True, dir_okay=False)],
    output: OutputOpt,
    device_prefix: Annotated[str, typer.Option("--device-prefix")] = "dpsim-",
    dead_letter: DeadOpt = None,
) -> None:
    """Turn VILLASnode JSON records (a columns file names the values) into SOGNO frames."""
    from dsotp_streams.adapters.villas import read_columns, villas_to_frames
    from dsotp_streams.contracts.frames import Rejected

    settings_from_flags()  # logging at the level of the settings
    names = read_columns(columns)
    rejects = _Rejects(dead_letter, input_path.name)
    lines = input_path.read_text(encoding="utf-8").splitlines()
    frames = 0
    try:
        with output.open("w", encoding="utf-8") as out:
            for item in villas_to_frames(lines, names, device_prefix=device_prefix):
                if isinstance(item, Rejected):
                    rejects.add(item.line, item.reason, lines[item.line - 1])
                    continue
                out.write(item.model_dump_json() + "\n")
                frames += 1
    finally:
        rejects.close()
    typer.echo(f"{frames} SOGNO frames to {output}; rejected samples {rejects.count}")


def record(
    output: OutputOpt,
    topic: Annotated[str, typer.Option("--topic", help="MQTT topic filter")] = "dsotp/+/pmu/+",
    mqtt_url: Annotated[str | None, typer.Option("--mqtt-url")] = None,
    duration: Annotated[float | None, typer.Option("--duration", help="seconds")] = None,
) -> None:
    """Record the databus (frames by default) to JSON Lines or Parquet, with receive times."""
    import asyncio

    from dsotp_streams.adapters.mqtt import endpoint_from_settings
    from dsotp_streams.adapters.recording import RecordingWriter
    from dsotp_streams.runtime.replay import record as record_bus

    settings = settings_from_flags(mqtt_url=mqtt_url)
    writer = RecordingWriter(output)

    async def run() -> int:
        stop = asyncio.Event()
        stop_on_signals(stop)
        if duration is not None:
            asyncio.get_running_loop().call_later(duration, stop.set)
        return await record_bus(
            endpoint=endpoint_from_settings(settings.mqtt),
            topic_filter=topic,
            writer=writer,
            stop=stop,
        )

    try:
        count = asyncio.run(run())
    finally:
        writer.close()
    typer.echo(f"{count} messages recorded to {output}")


def replay_cmd(
    source: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    agent: Annotated[Path | None, typer.Option("--agent", help="agent spec (area)")] = None,
    columns: Annotated[
        Path | None, typer.Option("--columns", help="columns file of VILLASnode JSON")
    ] = None,
    speed: Annotated[float, typer.Option("--speed", min=0.001, help="x recorded speed")] = 1.0,
    fastest: Annotated[bool, typer.Option("--max", help="as fast as possible")] = False,
    mqtt_url: Annotated[str | None, typer.Option("--mqtt-url")] = None,
) -> None:
    """Publish a recording (or SOGNO/VILLAS/CSV frames) to the databus, keeping order and timing."""
    import asyncio

    from dsotp_streams.adapters.mqtt import Topics, endpoint_from_settings
    from dsotp_streams.runtime.replay import publish_frames

    settings = settings_from_flags(agent=agent, mqtt_url=mqtt_url)
    spec, _base = _spec(settings)
    topics = Topics(settings.mqtt.topic_prefix, spec.area)
    stats = asyncio.run(
        publish_frames(
            source,
            endpoint=endpoint_from_settings(settings.mqtt),
            topics=topics,
            speed=None if fastest else speed,
            columns=columns,
            qos=settings.mqtt.qos,
        )
    )
    typer.echo(
        f"{stats.frames} frames replayed to {topics.base}/pmu/+ in {stats.seconds:.1f} s "
        f"({stats.rejected} skipped)"
    )


def _spec(settings: Settings) -> tuple[AgentSpec, Path]:
    from dsotp_streams.contracts.agent import load_agent_spec

    return load_agent_spec(settings.agent_file), settings.agent_file.parent


def register(app: typer.Typer) -> None:
    """Add the offline commands to the `dsotp` app."""
    app.command("estimate")(estimate)
    app.command("record")(record)
    app.command("replay")(replay_cmd)
    convert = typer.Typer(no_args_is_help=True, help="Convert recordings into SOGNO frames.")
    convert.command("villas")(convert_villas)
    app.add_typer(convert, name="convert")
