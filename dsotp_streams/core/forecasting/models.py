"""Day-ahead quantile forecasts for many nodes at once.

Series are a 2-D array (time steps x nodes) at a fixed step (15 min: 96 a day), each node scaled
by its mean absolute value so that one pooled model serves every node. A forecast is issued at a
day boundary for the next `horizon` steps and uses only what is known then: the same time one and
seven days earlier, the last day's mean and spread, calendar features.

- `SeasonalNaive`: the value one week earlier as median; quantiles from the spread of its past
  errors (per level, pooled over nodes).
- `QuantileForecaster`: a LightGBM model per quantile level, then conformal widening of the
  outer quantiles on a held-out calibration span (raw quantile trees under-cover), and sorting
  (no crossing). The model is pooled over nodes (each node described by its scaled series
  only), so a model trained on one set of nodes forecasts any other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from dsotp_streams.core.grid import FloatArray
from dsotp_streams.errors import DsotpError

__all__ = ["QUANTILES", "QuantileForecaster", "SeasonalNaive", "day_ahead_origins"]

QUANTILES = (0.1, 0.5, 0.9)
_FEATURES = (
    "lag_day",
    "lag_week",
    "lag_2days",
    "last_day_mean",
    "last_day_max",
    "step_of_day",
    "day_of_week",
    "doy_sin",
    "doy_cos",
    "horizon",
    "node_kind",
)


def day_ahead_origins(n_steps: int, *, steps_per_day: int, start: int) -> list[int]:
    """Issue times (step indices at day boundaries) from `start` with a full day ahead."""
    first = -(-start // steps_per_day) * steps_per_day
    return list(range(first, n_steps - steps_per_day + 1, steps_per_day))


def _scale(history: FloatArray) -> FloatArray:
    scale: FloatArray = np.mean(np.abs(history), axis=0)
    return np.where(scale > 1e-9, scale, 1.0)


@dataclass
class _Calendar:
    start: datetime
    step_s: float

    def features(self, steps: npt.NDArray[np.int64]) -> tuple[FloatArray, FloatArray, FloatArray]:
        seconds = steps * self.step_s
        day = (self.start.timestamp() + seconds) / 86400.0
        dow = np.floor(day + 3) % 7  # 1970-01-01 was a Thursday
        doy = (day % 365.25) / 365.25 * 2 * np.pi
        return dow, np.sin(doy), np.cos(doy)


def _design(
    y: FloatArray,
    origins: list[int],
    horizon: int,
    spd: int,
    calendar: _Calendar,
    kinds: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """Feature rows and targets for every (origin, step ahead, node)."""
    n_nodes = y.shape[1]
    rows, targets = [], []
    for origin in origins:
        h = np.arange(horizon)
        t = origin + h
        if t[-1] >= len(y):
            continue  # the horizon runs past the data (predict pads the series instead)
        last_day = y[origin - spd : origin]
        mean_day = last_day.mean(axis=0)
        max_day = last_day.max(axis=0)
        # a lag of one day reaches back before the origin only for steps inside the first day
        lag_day = y[np.minimum(t - spd, origin - 1)]
        lag_week = y[t - 7 * spd]
        lag_2days = y[np.minimum(t - 2 * spd, origin - 1)]
        dow, dsin, dcos = calendar.features(t)
        block = np.empty((horizon, n_nodes, len(_FEATURES)))
        block[..., 0] = lag_day
        block[..., 1] = lag_week
        block[..., 2] = lag_2days
        block[..., 3] = mean_day[None, :]
        block[..., 4] = max_day[None, :]
        block[..., 5] = (t % spd)[:, None]
        block[..., 6] = dow[:, None]
        block[..., 7] = dsin[:, None]
        block[..., 8] = dcos[:, None]
        block[..., 9] = h[:, None]
        block[..., 10] = kinds[None, :]
        rows.append(block.reshape(-1, len(_FEATURES)))
        targets.append(y[t].reshape(-1))
    x = np.concatenate(rows)
    target = np.concatenate(targets) if targets else np.empty(0)
    return x, target


class SeasonalNaive:
    """Last week's value, with quantiles from its past errors."""

    def __init__(self, steps_per_day: int = 96) -> None:
        self.spd = steps_per_day
        self.offsets: dict[float, float] = {}

    def fit(self, y: FloatArray) -> SeasonalNaive:
        """Learn the error quantiles (relative to each node's scale) on a history."""
        scale = _scale(y)
        week = 7 * self.spd
        errors = ((y[week:] - y[:-week]) / scale).reshape(-1)
        self.offsets = {a: float(np.quantile(errors, a)) for a in QUANTILES}
        return self

    def predict(self, y: FloatArray, *, origin: int, horizon: int) -> dict[float, FloatArray]:
        """Quantile forecasts (horizon x nodes) from the history before `origin`."""
        scale = _scale(y[:origin])
        base = y[origin + np.arange(horizon) - 7 * self.spd]
        return {a: base + off * scale for a, off in self.offsets.items()}


class QuantileForecaster:
    """Pooled LightGBM quantile models with conformal calibration."""

    def __init__(
        self,
        *,
        steps_per_day: int = 96,
        horizon: int = 96,
        n_estimators: int = 150,
        max_rows: int = 400_000,
        calibration_days: int = 28,
        seed: int = 7,
    ) -> None:
        self.spd = steps_per_day
        self.horizon = horizon
        self.n_estimators = n_estimators
        self.max_rows = max_rows
        self.calibration_days = calibration_days
        self.seed = seed
        self.boosters: dict[float, Any] = {}
        self.widen = 0.0
        self.calendar = _Calendar(datetime.fromtimestamp(0).astimezone(), 900.0)

    def fit(
        self,
        y: FloatArray,
        *,
        start: datetime,
        step_s: float = 900.0,
        progress: Any = None,
    ) -> QuantileForecaster:
        """Train on a history (steps x nodes) that starts at `start`."""
        import lightgbm as lgb

        if y.shape[0] < (8 + self.calibration_days + 7) * self.spd:
            raise DsotpError("forecast training needs at least six weeks of history")
        self.calendar = _Calendar(start, step_s)
        scale = _scale(y)
        z = y / scale
        kinds = self._kinds(z)
        split = y.shape[0] - self.calibration_days * self.spd
        origins = day_ahead_origins(split, steps_per_day=self.spd, start=8 * self.spd)
        x, target = _design(z, origins, self.horizon, self.spd, self.calendar, kinds)
        rng = np.random.default_rng(self.seed)
        if len(target) > self.max_rows:
            pick = rng.choice(len(target), self.max_rows, replace=False)
            x, target = x[pick], target[pick]
        for k, alpha in enumerate(QUANTILES):
            params = {
                "objective": "quantile",
                "alpha": alpha,
                "learning_rate": 0.08,
                "num_leaves": 63,
                "min_data_in_leaf": 50,
                "bagging_fraction": 0.8,
                "bagging_freq": 1,
                "feature_fraction": 0.9,
                "num_threads": 2,
                "seed": self.seed + k,
                "verbosity": -1,
            }
            data = lgb.Dataset(x, target, free_raw_data=False)
            self.boosters[alpha] = lgb.train(params, data, num_boost_round=self.n_estimators)
            if progress is not None:
                progress(k + 1, len(QUANTILES) + 1)
        # conformal widening of the outer quantiles on the held-out calibration span
        cal_origins = day_ahead_origins(y.shape[0], steps_per_day=self.spd, start=split)
        xc, yc = _design(z, cal_origins, self.horizon, self.spd, self.calendar, kinds)
        lo, hi = (self.boosters[a].predict(xc) for a in (QUANTILES[0], QUANTILES[-1]))
        excess = np.maximum(lo - yc, yc - hi)
        target_cover = QUANTILES[-1] - QUANTILES[0]
        self.widen = float(np.quantile(excess, target_cover))
        if progress is not None:
            progress(len(QUANTILES) + 1, len(QUANTILES) + 1)
        return self

    def _kinds(self, z: FloatArray) -> FloatArray:
        """A coarse per-node descriptor: how peaky the node is (load vs generation shapes)."""
        kinds: FloatArray = np.round(z.std(axis=0) * 10.0) / 10.0
        return kinds

    def predict(self, y: FloatArray, *, origin: int) -> dict[float, FloatArray]:
        """Quantile forecasts (horizon x nodes) issued at `origin` from the history before it."""
        if not self.boosters:
            raise DsotpError("the forecaster is not trained")
        scale = _scale(y[:origin])
        z = y[:origin] / scale
        pad = np.zeros((self.horizon, y.shape[1]))
        x, _ = _design(
            np.vstack([z, pad]), [origin], self.horizon, self.spd, self.calendar, self._kinds(z)
        )
        out = np.stack([self.boosters[a].predict(x) for a in QUANTILES], axis=1)
        out[:, 0] -= self.widen
        out[:, -1] += self.widen
        out.sort(axis=1)  # repair quantile crossing
        shaped = out.reshape(self.horizon, y.shape[1], len(QUANTILES))
        return {a: shaped[..., k] * scale for k, a in enumerate(QUANTILES)}

    def to_json(self) -> str:
        """The trained models as one JSON document (LightGBM's text format inside)."""
        return json.dumps(
            {
                "quantiles": list(QUANTILES),
                "boosters": {str(a): b.model_to_string() for a, b in self.boosters.items()},
                "widen": self.widen,
                "spd": self.spd,
                "horizon": self.horizon,
                "start": self.calendar.start.isoformat(),
                "step_s": self.calendar.step_s,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> QuantileForecaster:
        """Models written by `to_json`."""
        import lightgbm as lgb

        try:
            state = json.loads(text)
            model = cls(steps_per_day=state["spd"], horizon=state["horizon"])
            model.boosters = {
                float(a): lgb.Booster(model_str=s) for a, s in state["boosters"].items()
            }
            model.widen = float(state["widen"])
            model.calendar = _Calendar(
                datetime.fromisoformat(state["start"]), float(state["step_s"])
            )
        except (ValueError, KeyError, TypeError, lgb.basic.LightGBMError) as exc:
            raise DsotpError(f"not a saved forecaster: {exc}") from exc
        return model
