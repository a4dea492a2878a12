"""Trained forecasters on disk: written whole, read back equal, unreadable files refused."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from dsotp_streams.adapters.forecasters import load_forecaster, save_forecaster
from dsotp_streams.core.forecasting.models import QUANTILES, QuantileForecaster
from dsotp_streams.errors import DsotpError

SPD = 24


@pytest.fixture(scope="module")
def trained() -> tuple[QuantileForecaster, np.ndarray]:
    t = np.arange(60 * SPD)
    rng = np.random.default_rng(3)
    y = np.stack([1 + 0.4 * np.sin(2 * np.pi * t / SPD), 2 + 0.2 * np.cos(2 * np.pi * t / SPD)], 1)
    y = y + 0.05 * rng.standard_normal(y.shape)
    model = QuantileForecaster(steps_per_day=SPD, horizon=SPD)
    model.fit(y[: 50 * SPD], start=datetime(2026, 1, 1, tzinfo=UTC), step_s=3600)
    return model, y


def test_a_saved_forecaster_reads_back_with_the_same_forecasts(
    trained: tuple[QuantileForecaster, np.ndarray], tmp_path: Path
) -> None:
    model, y = trained
    path = tmp_path / "models" / "forecast-x.json"
    save_forecaster(model, path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["forecast-x.json"]  # no partial
    again = load_forecaster(path)
    for a in QUANTILES:
        np.testing.assert_allclose(
            again.predict(y, origin=52 * SPD)[a], model.predict(y, origin=52 * SPD)[a]
        )


@pytest.mark.parametrize("content", [None, "", "{not json", '{"spd": 24}', '{"boosters": 3}'])
def test_a_missing_or_broken_file_is_a_dsotp_error_naming_it(
    content: str | None, tmp_path: Path
) -> None:
    path = tmp_path / "forecast-x.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(DsotpError, match=r"cannot read forecaster .*forecast-x\.json"):
        load_forecaster(path)
