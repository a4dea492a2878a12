"""Probabilistic load and generation forecasting: features, models with quantiles, evaluation."""

from dsotp_streams.core.forecasting.backtest import Backtest, backtest
from dsotp_streams.core.forecasting.metrics import ForecastScores, score
from dsotp_streams.core.forecasting.models import (
    QUANTILES,
    QuantileForecaster,
    SeasonalNaive,
    day_ahead_origins,
)

__all__ = [
    "QUANTILES",
    "Backtest",
    "ForecastScores",
    "QuantileForecaster",
    "SeasonalNaive",
    "backtest",
    "day_ahead_origins",
    "score",
]
