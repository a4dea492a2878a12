"""Forecasting core on synthetic series whose answers are known."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from dsotp_streams.core.forecasting import (
    QUANTILES,
    QuantileForecaster,
    SeasonalNaive,
    day_ahead_origins,
    score,
)
from dsotp_streams.core.forecasting.metrics import pinball
from dsotp_streams.errors import DsotpError

SPD = 24  # hourly steps keep the tests fast
START = datetime(2024, 1, 1, tzinfo=UTC)


def _series(days: int, nodes: int, noise: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(days * SPD)
    daily = 1.0 + 0.5 * np.sin(2 * np.pi * t / SPD)
    weekly = np.where((t // SPD) % 7 >= 5, 0.7, 1.0)
    base = (daily * weekly)[:, None] * np.linspace(1.0, 3.0, nodes)[None, :]
    return base * (1.0 + noise * rng.standard_normal((len(t), nodes)))


def test_metrics_match_their_definitions() -> None:
    y = np.array([1.0, 2.0, 3.0])
    q = np.array([2.0, 2.0, 2.0])
    assert pinball(y, q=q, alpha=0.9) == pytest.approx((0.1 * 1 + 0 + 0.9 * 1) / 3)
    s = score(y, quantiles={0.1: y - 1, 0.5: q, 0.9: y + 1})
    assert s.mae == pytest.approx(2 / 3) and s.coverage == 1.0
    assert s.crps == pytest.approx(2 * s.pinball)


def test_seasonal_naive_is_exact_on_a_noise_free_weekly_series() -> None:
    y = _series(60, 3, noise=0.0)
    naive = SeasonalNaive(SPD).fit(y[: 50 * SPD])
    forecast = naive.predict(y, origin=50 * SPD, horizon=SPD)
    np.testing.assert_allclose(forecast[0.5], y[50 * SPD : 51 * SPD], atol=1e-9)


def test_quantile_forecaster_beats_naive_and_covers_about_80_percent() -> None:
    y = _series(140, 6, noise=0.08)
    split = 112 * SPD
    model = QuantileForecaster(steps_per_day=SPD, horizon=SPD, n_estimators=80, calibration_days=14)
    model.fit(y[:split], start=START, step_s=3600.0)
    naive = SeasonalNaive(SPD).fit(y[:split])
    ours, base, truth = [], [], []
    for origin in day_ahead_origins(len(y), steps_per_day=SPD, start=split):
        ours.append(model.predict(y, origin=origin))
        base.append(naive.predict(y, origin=origin, horizon=SPD))
        truth.append(y[origin : origin + SPD])
    observed = np.concatenate(truth).ravel()
    mine = score(
        observed, quantiles={a: np.concatenate([f[a] for f in ours]).ravel() for a in QUANTILES}
    )
    theirs = score(
        observed, quantiles={a: np.concatenate([f[a] for f in base]).ravel() for a in QUANTILES}
    )
    assert mine.pinball < theirs.pinball
    assert 0.7 <= mine.coverage <= 0.92
    stacked = np.stack([ours[0][a] for a in QUANTILES])
    assert np.all(np.diff(stacked, axis=0) >= 0)  # no crossing
    again = QuantileForecaster.from_json(model.to_json())
    origin = split + 7 * SPD
    for a in QUANTILES:
        np.testing.assert_allclose(
            again.predict(y, origin=origin)[a], model.predict(y, origin=origin)[a]
        )


def test_too_short_history_is_refused() -> None:
    with pytest.raises(DsotpError, match="six weeks"):
        QuantileForecaster(steps_per_day=SPD).fit(_series(20, 2, 0.05), start=START, step_s=3600)
