"""Forecasting in the stream: estimated bus loads resampled into a history, day-ahead quantile
forecasts refreshed on a schedule (event time), retraining on a schedule, pseudo-measurements.

Pure and synchronous: the runtime feeds it every StateEstimate and publishes what it returns.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from dsotp_streams.contracts.agent import ForecastSpec
from dsotp_streams.contracts.messages import EstimateStatus, Forecast, StateEstimate
from dsotp_streams.core.forecasting.models import QUANTILES, QuantileForecaster
from dsotp_streams.errors import DsotpError

__all__ = ["ForecastAgent", "ForecastUpdate"]

log = logging.getLogger(__name__)
Z80 = 2.563  # width of a normal 10-90 % interval in sigmas


@dataclass(frozen=True)
class ForecastUpdate:
    """What one estimate led to: a new forecast, and pseudo injections for the estimator."""

    forecast: Forecast | None
    pseudo: dict[str, tuple[float, float, float]] | None
    retrained: bool = False


class ForecastAgent:
    """One area's forecaster."""

    def __init__(
        self, area: str, *, spec: ForecastSpec, model: QuantileForecaster | None = None
    ) -> None:
        self.area = area
        self.spec = spec
        self.spd = round(86400 / spec.step_s)
        self.capacity = spec.history_days * self.spd
        self.buses: list[str] = []
        self.history: dict[int, np.ndarray] = {}  # slot -> p_mw per bus (mean of the slot)
        self._sum: np.ndarray | None = None
        self._count = 0
        self._slot: int | None = None
        self._newest: int | None = None  # the newest slot in the history
        self._q_ratio: np.ndarray | None = None
        self.model = model  # a trained one, until retraining replaces it (`update.retrained`)
        self.current: Forecast | None = None
        self._rejected: Forecast | None = None  # its pseudo-measurements contradicted the PMUs
        self._next_refresh: datetime | None = None
        self._next_retrain: datetime | None = None

    def observe(self, estimate: StateEstimate) -> ForecastUpdate:
        """Feed one estimate; forecasts and pseudo-measurements when they are due."""
        if estimate.status is not EstimateStatus.OK or not estimate.buses:
            return ForecastUpdate(None, None)
        names = [b.bus for b in estimate.buses]
        if names != self.buses:
            self._reorder(names)
        p = np.array([b.p_mw for b in estimate.buses])
        q = np.array([b.q_mvar for b in estimate.buses])
        slot = int(estimate.window_start.timestamp() // self.spec.step_s)
        if self._newest is not None and slot < self._newest:
            # time went back (a replay of older data after newer ones): another time line
            log.warning("forecast history of %s is newer than its estimates: dropped", self.area)
            self.history.clear()
            self.current, self._slot, self._sum, self._count = None, None, None, 0
            self._newest = None
        if self._slot is not None and slot != self._slot and self._sum is not None:
            self.history[self._slot] = self._sum / self._count
            self._newest = self._slot
            self._trim(slot)
            self._sum, self._count = None, 0
        self._slot = slot
        self._sum = p if self._sum is None else self._sum + p
        self._count += 1
        ratio = np.where(np.abs(p) > 1e-9, q / np.where(np.abs(p) > 1e-9, p, 1.0), 0.0)
        self._q_ratio = ratio if self._q_ratio is None else 0.99 * self._q_ratio + 0.01 * ratio
        now = estimate.window_start
        retrained = self._maybe_retrain(now)
        forecast = self._maybe_refresh(now, slot)
        return ForecastUpdate(
            forecast, self.pseudo(slot) if forecast or self.current else None, retrained
        )

    def seed(
        self, start: datetime, *, step_s: float, buses: Sequence[str], p_mw: np.ndarray
    ) -> int:
        """Take a stored history as if it had been observed: `p_mw` (steps x buses) holds the
        mean load of each step from `start` (what the stores' `bus_loads` give). Only before the
        first estimate; rows with a NaN are left out. Returns the steps kept."""
        if self._slot is not None:
            raise DsotpError("a forecast history is seeded before the first estimate")
        if abs(step_s - self.spec.step_s) > 1e-9:
            raise DsotpError(f"history step {step_s} s differs from the forecast step")
        values = np.asarray(p_mw, dtype=float)
        if values.ndim != 2 or values.shape[1] != len(buses):
            raise DsotpError(f"history of shape {values.shape} for {len(buses)} buses")
        first = int(start.timestamp() // step_s)
        self.history = {
            first + k: row.copy() for k, row in enumerate(values) if np.all(np.isfinite(row))
        }
        self._newest = max(self.history) if self.history else None
        if self._newest is not None:
            self._trim(self._newest)
        self.buses = list(buses)
        return len(self.history)

    def _trim(self, slot: int) -> None:
        """Keep the `history_days` of history up to `slot`."""
        for old in [s for s in self.history if s <= slot - self.capacity]:
            del self.history[old]

    def _reorder(self, names: list[str]) -> None:
        """Follow the estimates' buses: the history's columns by name (a bus the history lacks
        starts at 0)."""
        if self.buses and self.history:
            index = {b: j for j, b in enumerate(self.buses)}
            missing = [n for n in names if n not in index]
            if missing:
                log.warning("forecast history of %s lacks buses %s", self.area, missing)
            take = np.array([index.get(n, -1) for n in names])
            for slot, row in self.history.items():
                self.history[slot] = np.where(take >= 0, row[np.maximum(take, 0)], 0.0)
        self.buses = names
        self._sum, self._count, self._q_ratio = None, 0, None

    def _series(self, last_slot: int) -> np.ndarray | None:
        """The history as a regular array ending before `last_slot` (gaps filled forward)."""
        if not self.history:
            return None
        first = min(self.history)
        if last_slot <= first:
            return None
        out = np.empty((last_slot - first, len(self.buses)))
        previous = self.history[first]
        for k, slot in enumerate(range(first, last_slot)):
            previous = self.history.get(slot, previous)
            out[k] = previous
        return out

    def _maybe_refresh(self, now: datetime, slot: int) -> Forecast | None:
        if self.model is None or (self._next_refresh is not None and now < self._next_refresh):
            return None
        series = self._series(slot)
        if series is None or len(series) < 8 * self.spd:
            return None  # a day-ahead forecast needs last week's values
        self._next_refresh = now + timedelta(seconds=self.spec.refresh_s)
        padded = np.vstack([series, np.zeros((self.spec.horizon_steps, series.shape[1]))])
        self.model.horizon = self.spec.horizon_steps
        quantiles = self.model.predict(padded, origin=len(series))
        start = datetime.fromtimestamp(slot * self.spec.step_s, tz=UTC)
        times = [
            start + timedelta(seconds=k * self.spec.step_s) for k in range(self.spec.horizon_steps)
        ]
        self.current = Forecast(
            area=self.area,
            issued_at=now,
            step_s=self.spec.step_s,
            times=times,
            quantiles={
                bus: {str(a): [round(float(v), 6) for v in quantiles[a][:, j]] for a in QUANTILES}
                for j, bus in enumerate(self.buses)
            },
        )
        return self.current

    def pseudo(self, slot: int) -> dict[str, tuple[float, float, float]] | None:
        """Pseudo injections for the current slot: median, q from the recent q/p ratio, sigma
        from the 10-90 % spread."""
        forecast = self.current
        if forecast is None or forecast is self._rejected or not self.spec.pseudo_measurements:
            return None
        start = int(forecast.times[0].timestamp() // self.spec.step_s)
        k = slot - start
        if not 0 <= k < len(forecast.times):
            return None
        lo, mid, hi = (str(a) for a in (QUANTILES[0], 0.5, QUANTILES[-1]))
        out = {}
        for j, bus in enumerate(self.buses):
            levels = forecast.quantiles.get(bus)
            if levels is None:  # a bus the forecast was not issued for
                continue
            p = levels[mid][k]
            ratio = float(self._q_ratio[j]) if self._q_ratio is not None else 0.0
            sigma = max((levels[hi][k] - levels[lo][k]) / Z80, 1e-4)
            out[bus] = (p, p * ratio, sigma)
        return out

    def reject_current(self) -> None:
        """The estimator set this forecast's pseudo-measurements aside (they contradict the
        measurements): give none from it; the next forecast is tried again."""
        self._rejected = self.current

    def _maybe_retrain(self, now: datetime) -> bool:
        if self._next_retrain is not None and now < self._next_retrain:
            return False
        needed = (8 + 28 + 7) * self.spd
        if not self.history or (self._slot or 0) - min(self.history) < needed:
            return False  # checked from the slots, before any array is built (every window)
        series = self._series(self._slot or 0)
        if series is None:
            return False
        self._next_retrain = now + timedelta(seconds=self.spec.retrain_s)
        start = datetime.fromtimestamp(min(self.history) * self.spec.step_s, tz=UTC)
        model = QuantileForecaster(steps_per_day=self.spd, horizon=self.spec.horizon_steps)
        try:
            model.fit(series, start=start, step_s=self.spec.step_s)
        except DsotpError as exc:
            log.warning("forecast retraining for %s failed: %s", self.area, exc)
            return False
        self.model = model  # the runtime saves it (`ForecastUpdate.retrained`)
        log.info("forecast model for %s retrained on %d steps", self.area, len(series))
        return True

    @property
    def ready(self) -> bool:
        """True once forecasts are being issued."""
        return self.current is not None
