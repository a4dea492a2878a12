"""The `dsotp` command: demo, run, emulate; estimate, convert, record, replay, forecast;
bridge and worker (scale-out on Kafka).

Only parsing lives here and in the command modules it registers: what a command needs is
imported when it runs (`cli_demo` and the rest), so `dsotp --help` loads no pandapower,
LightGBM or runtime (measured: 2.6 s before, see benchmarks/startup.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from dsotp_streams.cli_forecast import register as register_forecast
from dsotp_streams.cli_offline import register as register_offline
from dsotp_streams.cli_scaleout import register as register_scaleout
from dsotp_streams.errors import DsotpError

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="dsotp-streams: PMU streams to grid state."
)

AgentOpt = Annotated[Path | None, typer.Option("--agent", help="agent spec YAML file")]
UrlOpt = Annotated[
    str | None, typer.Option("--mqtt-url", help="mqtt://user:pass@host:port of an external broker")
]
PortOpt = Annotated[int, typer.Option("--mqtt-port", help="port of the embedded broker")]
DurationOpt = Annotated[
    float | None, typer.Option("--duration", help="stop after SECONDS (default: run until Ctrl-C)")
]
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
RateOpt = Annotated[
    float | None, typer.Option("--rate", min=0.1, max=50, help="frames/s per device (<= 50)")
]


@app.command()
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
    record: Annotated[
        Path | None, typer.Option("--record", help="record every frame to this file")
    ] = None,
    history_days: Annotated[
        int,
        typer.Option(
            "--history-days",
            min=0,
            max=365,
            help="first store DAYS of the emulated loads (as if the platform had run), with "
            "the profiles in real time: forecasts and their pseudo-measurements from the start "
            "(43 or more: the forecaster trains on them at once)",
        ),
    ] = 0,
) -> None:
    """Embedded broker + emulated PMU fleet + alignment + estimation + store + live page."""
    from dsotp_streams import cli_demo

    cli_demo.demo(
        agent=agent,
        mqtt_url=mqtt_url,
        mqtt_port=mqtt_port,
        duration=duration,
        rate=rate,
        live_port=live_port,
        no_live=no_live,
        store=store,
        fault=fault,
        record=record,
        history_days=history_days,
    )


@app.command()
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
    from dsotp_streams import cli_demo

    cli_demo.run(
        agent=agent,
        mqtt_url=mqtt_url,
        duration=duration,
        live_port=live_port,
        no_live=no_live,
        store=store,
        event_time=event_time,
    )


@app.command()
def emulate(
    agent: AgentOpt = None,
    mqtt_url: UrlOpt = None,
    duration: DurationOpt = None,
    rate: RateOpt = None,
) -> None:
    """Publish an emulated PMU fleet to a broker."""
    from dsotp_streams import cli_demo

    cli_demo.emulate(agent=agent, mqtt_url=mqtt_url, duration=duration, rate=rate)


@app.command("settings")
def settings_cmd(
    reference: Annotated[
        bool, typer.Option("--reference", help="every setting with its meaning, as Markdown")
    ] = False,
) -> None:
    """Print the settings this environment gives a process (`DSOTP_...`, secrets masked)."""
    from dsotp_streams.settings import Settings, settings_environment, settings_reference

    text = settings_reference() if reference else "\n".join(settings_environment(Settings()))
    typer.echo(text)


register_offline(app)
register_forecast(app)
register_scaleout(app)


def main() -> None:
    """Console entry point: DsotpError becomes a one-line message and exit code 2."""
    try:
        app()
    except DsotpError as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc}")
        sys.exit(2)
