"""Trained forecasters on disk: the files `models/` holds and agent specs name."""

from __future__ import annotations

from pathlib import Path

from dsotp_streams.core.forecasting.models import QuantileForecaster
from dsotp_streams.errors import DsotpError

__all__ = ["load_forecaster", "save_forecaster"]


def save_forecaster(model: QuantileForecaster, path: Path) -> None:
    """Write a trained forecaster (one JSON file), replacing the old one at once."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(path.suffix + ".partial")
        partial.write_text(model.to_json(), encoding="utf-8")
        partial.replace(path)
    except OSError as exc:
        raise DsotpError(f"cannot write forecaster {path}: {exc}") from exc


def load_forecaster(path: Path) -> QuantileForecaster:
    """Read a forecaster written by `save_forecaster`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DsotpError(f"cannot read forecaster {path}: {exc}") from exc
    try:
        return QuantileForecaster.from_json(text)
    except DsotpError as exc:
        raise DsotpError(f"cannot read forecaster {path}: {exc}") from exc
