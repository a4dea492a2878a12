"""Day-ahead backtest of a quantile forecaster against seasonal naive: one forecast a day over the
span after training, each node scored in units of its mean training load. The one backtest of the
project: `dsotp forecast evaluate`, `benchmarks/forecasting.py` and the forecasts notebook."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dsotp_streams.core.forecasting.metrics import ForecastScores, score
from dsotp_streams.core.forecasting.models import (
    QUANTILES,
    QuantileForecaster,
    SeasonalNaive,
    day_ahead_origins,
)
from dsotp_streams.core.grid import FloatArray

__all__ = ["Backtest", "backtest"]

_SCORES = ("nmae", "pinball", "crps", "coverage")


@dataclass(frozen=True)
class Backtest:
    """Forecasts and scores of a backtest; arrays are (origins x horizon) x nodes."""

    origins: list[int]
    horizon: int
    observed: FloatArray
    ours: dict[float, FloatArray]  # quantile level -> forecasts
    naive: dict[float, FloatArray]
    ours_scores: list[ForecastScores]  # per node
    naive_scores: list[ForecastScores]
    predict_ms: list[float]  # one refresh for all nodes, per origin

    @staticmethod
    def mean(scores: list[ForecastScores]) -> dict[str, float]:
        """Each score's mean over the nodes."""
        return {k: float(np.mean([getattr(s, k) for s in scores])) for k in _SCORES}

    @property
    def pinball_gain(self) -> float:
        """How much lower our mean pinball loss is than seasonal naive's (0.2: 20 % lower)."""
        ours = self.mean(self.ours_scores)["pinball"]
        naive = self.mean(self.naive_scores)["pinball"]
        return 1.0 - ours / naive if naive > 0 else 0.0


def backtest(
    forecaster: QuantileForecaster,
    *,
    y: FloatArray,
    steps_per_day: int,
    split: int,
    progress: Callable[[int, int], None] | None = None,
) -> Backtest:
    """Forecast each day of `y[split:]` at its midnight with `forecaster` and with seasonal
    naive fitted on `y[:split]`; `progress(done, total)` after each day. A node whose training
    span is all zero is scored unscaled (not divided by zero)."""
    spd = steps_per_day
    naive = SeasonalNaive(spd).fit(y[:split])
    origins = day_ahead_origins(len(y), steps_per_day=spd, start=split)
    ours: dict[float, list[FloatArray]] = {a: [] for a in QUANTILES}
    base: dict[float, list[FloatArray]] = {a: [] for a in QUANTILES}
    truth: list[FloatArray] = []
    predict_ms: list[float] = []
    for done, origin in enumerate(origins, start=1):
        started = time.perf_counter()
        f = forecaster.predict(y, origin=origin)
        predict_ms.append((time.perf_counter() - started) * 1e3)
        b = naive.predict(y, origin=origin, horizon=spd)
        for a in QUANTILES:
            ours[a].append(f[a])
            base[a].append(b[a])
        truth.append(y[origin : origin + spd])
        if progress is not None:
            progress(done, len(origins))
    observed = np.concatenate(truth) if truth else np.zeros((0, y.shape[1]))
    joined = {a: np.concatenate(v) if v else observed.copy() for a, v in ours.items()}
    joined_naive = {a: np.concatenate(v) if v else observed.copy() for a, v in base.items()}
    scale = np.mean(np.abs(y[:split]), axis=0)
    scale = np.where(scale > 1e-9, scale, 1.0)

    def per_node(forecasts: dict[float, FloatArray]) -> list[ForecastScores]:
        return [
            score(
                observed[:, j] / scale[j],
                quantiles={a: q[:, j] / scale[j] for a, q in forecasts.items()},
            )
            for j in range(y.shape[1])
        ]

    return Backtest(
        origins=origins,
        horizon=spd,
        observed=observed,
        ours=joined,
        naive=joined_naive,
        ours_scores=per_node(joined),
        naive_scores=per_node(joined_naive),
        predict_ms=predict_ms,
    )
