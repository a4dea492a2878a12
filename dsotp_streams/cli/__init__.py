"""The `dsotp` command, one module per command group: `demo` (demo, run, emulate), `offline`
(estimate, convert, record, replay), `forecast` (train, evaluate), `scaleout` (bridge, worker,
api), `placement`; `common` holds what they share (options, settings from flags, logging, signals).

Only parsing happens at import: what a command needs is imported when it runs, so `dsotp --help`
loads no pandapower, LightGBM or runtime (measured: 2.6 s before, see benchmarks/startup.py)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from dsotp_streams.cli import demo, forecast, offline, placement, scaleout
from dsotp_streams.cli.common import stderr
from dsotp_streams.errors import DsotpError

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="dsotp-streams: PMU streams to grid state."
)


def settings_cmd(
    reference: Annotated[
        bool, typer.Option("--reference", help="every setting with its meaning, as Markdown")
    ] = False,
) -> None:
    """Print the settings this environment gives a process (`DSOTP_...`, secrets masked)."""
    from dsotp_streams.settings import Settings, settings_environment, settings_reference

    text = settings_reference() if reference else "\n".join(settings_environment(Settings()))
    typer.echo(text)


demo.register(app)
app.command("settings")(settings_cmd)
offline.register(app)
forecast.register(app)
scaleout.register(app)
placement.register(app)


def main() -> None:
    """Console entry point: DsotpError becomes a one-line message and exit code 2."""
    try:
        app()
    except DsotpError as exc:
        stderr.print(f"[red]error:[/] {exc}")
        sys.exit(2)
