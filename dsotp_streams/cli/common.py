"""What every command shares: the options, settings from flags, logging, stop on signals.

Only light imports at the top (typer, rich): a command imports what it needs when it runs, so
`dsotp --help` loads no pandapower, LightGBM or runtime (benchmarks/startup.py)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from rich.progress import Progress

    from dsotp_streams.settings import Settings

__all__ = [
    "AgentOpt",
    "DurationOpt",
    "KafkaOpt",
    "UrlOpt",
    "console",
    "progress_bar",
    "settings_from_flags",
    "stderr",
    "stop_on_signals",
]

console = Console(stderr=False)
stderr = Console(stderr=True)

AgentOpt = Annotated[Path | None, typer.Option("--agent", help="agent spec YAML file")]
UrlOpt = Annotated[
    str | None, typer.Option("--mqtt-url", help="mqtt://user:pass@host:port of an external broker")
]
KafkaOpt = Annotated[
    str | None, typer.Option("--kafka-url", help="kafka://host:port (default: DSOTP_KAFKA__URL)")
]
DurationOpt = Annotated[
    float | None, typer.Option("--duration", help="stop after SECONDS (default: run until Ctrl-C)")
]


def settings_from_flags(
    *,
    agent: Path | None = None,
    agents_dir: Path | None = None,
    mqtt_url: str | None = None,
    mqtt_port: int | None = None,
    kafka_url: str | None = None,
    live_port: int | None = None,
    no_live: bool = False,
    store: Path | None = None,
    event_time: bool = False,
) -> Settings:
    """The settings of the environment (`DSOTP_...`) with the flags a command was given on top
    (a flag not given changes nothing); logging is set up at their level, to stderr."""
    from dsotp_streams.logs import configure_logging
    from dsotp_streams.settings import Settings

    base = Settings()
    update: dict[str, Any] = {}
    mqtt: dict[str, Any] = {}
    if mqtt_url is not None:
        mqtt["url"] = mqtt_url
    if mqtt_port is not None:
        mqtt["port"] = mqtt_port
    if mqtt:
        # validated again: a URL sets host, port and credentials
        update["mqtt"] = type(base.mqtt)(**(base.mqtt.model_dump() | mqtt))
    if kafka_url is not None:
        update["kafka"] = base.kafka.model_copy(update={"url": kafka_url})
    if agent is not None:
        update["agent_file"] = agent
    if agents_dir is not None:
        update["agents_dir"] = agents_dir
    if live_port is not None or no_live:
        live: dict[str, Any] = {}
        if live_port is not None:
            live["port"] = live_port
        if no_live:
            live["enabled"] = False
        update["live"] = base.live.model_copy(update=live)
    if store is not None:
        update["store"] = base.store.model_copy(update={"path": store})
    if event_time:
        update["runtime"] = base.runtime.model_copy(update={"event_time": True})
    settings = base.model_copy(update=update)
    configure_logging(settings.log_level, stderr)
    return settings


def progress_bar(description: str = "{task.description}") -> Progress:
    """The progress bar of long commands: description, bar, time elapsed."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn(description), BarColumn(), TimeElapsedColumn(), console=console)


def stop_on_signals(stop: asyncio.Event) -> None:
    """Ctrl-C and SIGTERM set `stop`: the service drains and returns."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
