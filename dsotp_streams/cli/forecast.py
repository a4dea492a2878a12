"""`dsotp forecast train | evaluate`: offline forecasting on stored or published profiles."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from dsotp_streams.cli.common import console, progress_bar, settings_from_flags

if TYPE_CHECKING:  # imported when a command runs: `dsotp --help` stays fast
    from dsotp_streams.adapters.profiles import Profiles
    from dsotp_streams.core.forecasting import Backtest

__all__ = ["register"]

log = logging.getLogger("dsotp_streams.forecast")

SourceOpt = Annotated[
    str,
    typer.Option(
        "--source",
        help="simbench:<grid code>, store:<duckdb file>:<area>, or a .csv/.parquet file "
        "(time + one column a node)",
    ),
]
NodesOpt = Annotated[int | None, typer.Option("--nodes", help="use the first N nodes")]
ModelOpt = Annotated[Path, typer.Option("--model", help="where the trained forecaster is kept")]
TrainShareOpt = Annotated[
    float, typer.Option("--train-share", min=0.3, max=0.95, help="leading share used to train")
]


def _split(profiles: Profiles, share: float) -> int:
    spd = profiles.steps_per_day
    return int(len(profiles.values) * share) // spd * spd


def train(
    source: SourceOpt = "simbench:1-MV-urban--0-sw",
    nodes: NodesOpt = 100,
    model: ModelOpt = Path("models/forecast-load.json"),
    train_share: TrainShareOpt = 0.75,
) -> None:
    """Train the quantile forecaster on the leading part of the profiles and save it."""
    from dsotp_streams.adapters.forecasters import save_forecaster
    from dsotp_streams.adapters.profiles import load_profiles
    from dsotp_streams.core.forecasting import QUANTILES, QuantileForecaster

    settings_from_flags()  # logging at the level of the settings
    with console.status("reading profiles"):
        profiles = load_profiles(source, nodes=nodes)
    split = _split(profiles, train_share)
    started = time.perf_counter()
    with progress_bar() as progress:
        task = progress.add_task(f"training {len(profiles.nodes)} nodes", total=len(QUANTILES) + 1)
        spd = profiles.steps_per_day
        forecaster = QuantileForecaster(steps_per_day=spd, horizon=spd).fit(
            profiles.values[:split],
            start=profiles.start,
            step_s=profiles.step_s,
            progress=lambda done, _total: progress.update(task, completed=done),
        )
    save_forecaster(forecaster, model)
    typer.echo(
        f"trained on {split} steps x {len(profiles.nodes)} nodes in "
        f"{time.perf_counter() - started:.1f} s; saved to {model}"
    )


def evaluate(
    source: SourceOpt = "simbench:1-MV-urban--0-sw",
    nodes: NodesOpt = 100,
    model: ModelOpt = Path("models/forecast-load.json"),
    train_share: TrainShareOpt = 0.75,
    plot: Annotated[Path | None, typer.Option("--plot", help="write a PNG of one node")] = None,
) -> None:
    """Day-ahead forecasts over the part after training, against seasonal naive."""
    from rich.table import Table

    from dsotp_streams.adapters.forecasters import load_forecaster
    from dsotp_streams.adapters.profiles import load_profiles
    from dsotp_streams.core.forecasting import backtest

    settings_from_flags()  # logging at the level of the settings
    with console.status("reading profiles"):
        profiles = load_profiles(source, nodes=nodes)
    forecaster = load_forecaster(model)
    y, spd = profiles.values, profiles.steps_per_day
    split = _split(profiles, train_share)
    with progress_bar() as progress:
        days = len(range(split, len(y) - spd + 1, spd))
        task = progress.add_task(f"{days} day-ahead forecasts", total=days)
        result = backtest(
            forecaster,
            y=y,
            steps_per_day=spd,
            split=split,
            progress=lambda done, _total: progress.update(task, completed=done),
        )
    table = Table(
        title=f"day-ahead, {len(result.origins)} days, {y.shape[1]} nodes (mean over nodes)"
    )
    for col in ("model", "nMAE", "pinball", "CRPS", "80 % coverage"):
        table.add_column(col, justify="right")
    for name, scores in (
        ("seasonal naive", result.naive_scores),
        ("LightGBM quantile", result.ours_scores),
    ):
        mean = result.mean(scores)
        table.add_row(
            name,
            f"{mean['nmae']:.3f}",
            f"{mean['pinball']:.4f}",
            f"{mean['crps']:.4f}",
            f"{mean['coverage']:.3f}",
        )
    console.print(table)
    typer.echo(f"pinball loss {100 * result.pinball_gain:.1f} % lower than seasonal naive")
    if plot is not None:
        _plot(plot, profiles, result)
        typer.echo(f"plot written to {plot}")


def _plot(path: Path, profiles: Profiles, result: Backtest) -> None:
    import matplotlib
    import numpy as np

    from dsotp_streams.core.forecasting import QUANTILES

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spd = result.horizon
    steps = min(7, len(result.origins)) * spd
    t = np.arange(steps) / spd
    fig, ax = plt.subplots(figsize=(11, 4))
    lo = result.ours[QUANTILES[0]][:steps, 0]
    hi = result.ours[QUANTILES[-1]][:steps, 0]
    ax.fill_between(t, lo, hi, alpha=0.3, label="10-90 %")
    ax.plot(t, result.ours[0.5][:steps, 0], label="median")
    ax.plot(t, result.observed[:steps, 0], color="black", lw=0.8, label="observed")
    ax.set_xlabel("days after the training span")
    ax.set_ylabel("MW")
    ax.set_title(f"{profiles.nodes[0]}: day-ahead forecasts")
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def register(app: typer.Typer) -> None:
    """Add `dsotp forecast ...`."""
    forecast = typer.Typer(no_args_is_help=True, help="Train and evaluate load forecasters.")
    forecast.command("train")(train)
    forecast.command("evaluate")(evaluate)
    app.add_typer(forecast, name="forecast")
