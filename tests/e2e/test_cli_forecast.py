"""`dsotp forecast train` and `evaluate` on a CSV of profiles, as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def _dsotp(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dsotp_streams", "forecast", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_forecast_train_evaluate_and_plot_from_a_csv(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    times = pd.date_range("2025-01-06", periods=24 * 80, freq="h", tz="UTC")
    hour = times.hour.to_numpy()
    weekend = np.where(times.dayofweek.to_numpy() >= 5, 0.7, 1.0)
    frame = pd.DataFrame({"time": times.strftime("%Y-%m-%dT%H:%M:%SZ")})
    for k in range(4):
        shape = (1.0 + 0.5 * np.sin(2 * np.pi * (hour - 3 * k) / 24)) * weekend
        frame[f"node {k}"] = (1 + k) * shape * (1 + 0.05 * rng.standard_normal(len(times)))
    source = tmp_path / "profiles.csv"
    frame.to_csv(source, index=False)
    model = tmp_path / "models" / "forecast.json"
    trained = _dsotp("train", "--source", str(source), "--model", str(model), cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "x 4 nodes" in trained.stdout and model.exists()
    plot = tmp_path / "forecast.png"
    evaluated = _dsotp(
        "evaluate",
        "--source",
        str(source),
        "--model",
        str(model),
        "--plot",
        str(plot),
        cwd=tmp_path,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "seasonal naive" in evaluated.stdout and "LightGBM quantile" in evaluated.stdout
    assert "lower than seasonal naive" in evaluated.stdout
    assert plot.stat().st_size > 10_000


def test_forecast_with_a_missing_source_is_one_clear_error(tmp_path: Path) -> None:
    done = _dsotp("train", "--source", str(tmp_path / "nope.csv"), cwd=tmp_path)
    assert done.returncode == 2 and "no profile file" in done.stderr
    assert "Traceback" not in done.stderr
