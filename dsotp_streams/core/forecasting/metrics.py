"""Forecast evaluation: MAE of the median, pinball loss, interval coverage, CRPS."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsotp_streams.core.grid import FloatArray

__all__ = ["ForecastScores", "pinball", "score"]


def pinball(y: FloatArray, *, q: FloatArray, alpha: float) -> float:
    """Mean pinball (quantile) loss of forecasts q of level alpha."""
    diff = y - q
    return float(np.mean(np.maximum(alpha * diff, (alpha - 1.0) * diff)))


@dataclass(frozen=True)
class ForecastScores:
    """Scores of quantile forecasts against what came (in the series' units)."""

    mae: float
    nmae: float  # MAE over the mean absolute value
    pinball: float  # mean over the quantiles
    coverage: float  # share inside [lowest, highest] quantile
    crps: float  # approximated from the quantiles (2 x mean pinball)


def score(y: FloatArray, *, quantiles: dict[float, FloatArray]) -> ForecastScores:
    """Scores of `quantiles` (level -> forecasts, same shape as y)."""
    levels = sorted(quantiles)
    median = quantiles[min(levels, key=lambda a: abs(a - 0.5))]
    losses = [pinball(y, q=quantiles[a], alpha=a) for a in levels]
    mae = float(np.mean(np.abs(y - median)))
    inside = (y >= quantiles[levels[0]]) & (y <= quantiles[levels[-1]])
    scale = float(np.mean(np.abs(y))) or 1.0
    return ForecastScores(
        mae=mae,
        nmae=mae / scale,
        pinball=float(np.mean(losses)),
        coverage=float(np.mean(inside)),
        crps=2.0 * float(np.mean(losses)),
    )
