"""The forecast agent in event time: history, retraining, forecasts, pseudo-measurements."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from dsotp_streams.contracts.agent import ForecastSpec
from dsotp_streams.contracts.messages import BusState, EstimateStatus, StateEstimate
from dsotp_streams.contracts.storage import rows_from_forecast
from dsotp_streams.core.forecasting.models import QuantileForecaster
from dsotp_streams.core.forecasting.stream import ForecastAgent
from dsotp_streams.errors import DsotpError

START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday


def _load(hour: int, day: int, base: float) -> float:
    weekend = 0.7 if day % 7 >= 5 else 1.0
    return base * weekend * (1.0 + 0.5 * np.sin(2 * np.pi * hour / 24))


def _estimate(ts: datetime, day: int, hour: int) -> StateEstimate:
    buses = [
        BusState(bus=name, vm_pu=1.0, va_deg=0.0, p_mw=_load(hour, day, base), q_mvar=0.3 * base)
        for name, base in (("Bus 1", 1.0), ("Bus 2", 2.0), ("Bus 3", 0.5))
    ]
    return StateEstimate(
        area="t", window_start=ts, status=EstimateStatus.OK, engine="wls", buses=buses
    )


def test_agent_retrains_from_history_then_forecasts_and_feeds_pseudo_measurements() -> None:
    spec = ForecastSpec(step_s=3600, horizon_steps=24, refresh_s=6 * 3600, retrain_s=30 * 86400)
    agent = ForecastAgent("t", spec=spec)
    retrained_at, forecasts, pseudo = None, [], None
    for day in range(50):
        for hour in range(24):
            ts = START + timedelta(days=day, hours=hour)
            update = agent.observe(_estimate(ts, day, hour))
            if update.retrained and retrained_at is None:
                retrained_at = day
            if update.forecast is not None:
                forecasts.append(update.forecast)
            if update.pseudo is not None:
                pseudo = (day, hour, update.pseudo)
    assert retrained_at is not None and 42 <= retrained_at <= 44  # 43 days of history needed
    assert agent.model is not None
    assert forecasts and all(f.step_s == 3600 and len(f.times) == 24 for f in forecasts)
    last = forecasts[-1]
    assert set(last.quantiles) == {"Bus 1", "Bus 2", "Bus 3"}
    lo, mid, hi = (np.array(last.quantiles["Bus 2"][q]) for q in ("0.1", "0.5", "0.9"))
    assert np.all(lo <= mid) and np.all(mid <= hi)
    start = last.times[0]
    day = (start - START).days
    truth = np.array([_load((start + timedelta(hours=k)).hour, day, 2.0) for k in range(24)])
    assert np.mean(np.abs(mid - truth)) < 0.15 * np.mean(truth)
    assert pseudo is not None
    _day, _hour, values = pseudo
    p, q, sigma = values["Bus 3"]
    assert 0.2 < p < 0.8 and q > 0 and sigma > 0
    rows = list(rows_from_forecast(last))
    assert len(rows) == 3 * 3 * 24 and {r.tags["quantile"] for r in rows} == {"0.1", "0.5", "0.9"}
    # a restarted agent, handed the saved model, forecasts from a week and a bit of history
    # without waiting the six weeks of history retraining needs
    assert agent.model is not None
    again = ForecastAgent("t", spec=spec, model=QuantileForecaster.from_json(agent.model.to_json()))
    issued = []
    for day in range(60, 70):
        for hour in range(24):
            update = again.observe(_estimate(START + timedelta(days=day, hours=hour), day, hour))
            assert not update.retrained
            if update.forecast is not None:
                issued.append(update.forecast)
    assert issued and set(issued[-1].quantiles) == {"Bus 1", "Bus 2", "Bus 3"}


def _history(days: int, buses: list[tuple[str, float]]) -> tuple[datetime, np.ndarray]:
    """Hourly mean loads of `days` days ending at START + 50 days, as a store gives them."""
    first = START + timedelta(days=50 - days)
    values = np.array(
        [
            [_load(h % 24, (50 - days) + h // 24, base) for _name, base in buses]
            for h in range(days * 24)
        ]
    )
    return first, values


def test_a_seeded_agent_retrains_and_forecasts_on_its_first_estimate() -> None:
    spec = ForecastSpec(step_s=3600, horizon_steps=24, refresh_s=6 * 3600, retrain_s=30 * 86400)
    cold = ForecastAgent("t", spec=spec)
    first = cold.observe(_estimate(START + timedelta(days=50), 50, 0))
    assert first.forecast is None and not first.retrained  # no history: weeks to wait
    agent = ForecastAgent("t", spec=spec)
    # the store's bus order (by name) differs from the estimates' order
    buses = [("Bus 3", 0.5), ("Bus 1", 1.0), ("Bus 2", 2.0)]
    start, values = _history(45, buses)
    assert agent.seed(start, step_s=3600, buses=[b for b, _ in buses], p_mw=values) == 45 * 24
    update = agent.observe(_estimate(START + timedelta(days=50), 50, 0))
    assert update.retrained and update.forecast is not None
    assert update.pseudo is not None
    mid = np.array(update.forecast.quantiles["Bus 2"]["0.5"])  # the columns followed the names
    truth = np.array([_load(h, 50, 2.0) for h in range(24)])
    assert np.mean(np.abs(mid - truth)) < 0.15 * np.mean(truth)
    assert 0.2 < update.pseudo["Bus 3"][0] < 0.8


def test_a_seeded_agent_with_a_saved_model_forecasts_from_eight_days_of_history() -> None:
    spec = ForecastSpec(step_s=3600, horizon_steps=24, refresh_s=6 * 3600, retrain_s=30 * 86400)
    buses = [("Bus 1", 1.0), ("Bus 2", 2.0), ("Bus 3", 0.5)]
    start, values = _history(45, buses)
    model = QuantileForecaster(steps_per_day=24, horizon=24).fit(values, start=start, step_s=3600)
    agent = ForecastAgent("t", spec=spec, model=model)
    start9, values9 = _history(9, buses)
    values9[5] = np.nan  # a step the store could not fill is left out, the gap filled forward
    assert agent.seed(start9, step_s=3600, buses=[b for b, _ in buses], p_mw=values9) == 9 * 24 - 1
    update = agent.observe(_estimate(START + timedelta(days=50), 50, 0))
    assert not update.retrained and update.forecast is not None
    assert set(update.forecast.quantiles) == {"Bus 1", "Bus 2", "Bus 3"}


def test_seeding_refuses_a_history_it_cannot_use() -> None:
    spec = ForecastSpec(step_s=3600, horizon_steps=24, history_days=10)
    agent = ForecastAgent("t", spec=spec)
    start, values = _history(20, [("Bus 1", 1.0)])
    with pytest.raises(DsotpError, match="step 900"):
        agent.seed(start, step_s=900, buses=["Bus 1"], p_mw=values)
    with pytest.raises(DsotpError, match="for 2 buses"):
        agent.seed(start, step_s=3600, buses=["Bus 1", "Bus 2"], p_mw=values)
    assert (
        agent.seed(start, step_s=3600, buses=["Bus 1"], p_mw=values) == 10 * 24
    )  # only history_days kept
    agent.observe(_estimate(START + timedelta(days=50), 50, 0))
    with pytest.raises(DsotpError, match="before the first estimate"):
        agent.seed(start, step_s=3600, buses=["Bus 1"], p_mw=values)


def test_a_rejected_forecast_gives_no_pseudo_measurements_until_the_next_one() -> None:
    spec = ForecastSpec(step_s=3600, horizon_steps=24, refresh_s=6 * 3600, retrain_s=30 * 86400)
    buses = [("Bus 1", 1.0), ("Bus 2", 2.0), ("Bus 3", 0.5)]
    start, values = _history(45, buses)
    agent = ForecastAgent("t", spec=spec)
    agent.seed(start, step_s=3600, buses=[b for b, _ in buses], p_mw=values)
    first = agent.observe(_estimate(START + timedelta(days=50), 50, 0))
    assert first.forecast is not None and first.pseudo is not None
    agent.reject_current()
    for hour in range(1, 6):  # the same forecast: nothing for the estimator
        assert (
            agent.observe(_estimate(START + timedelta(days=50, hours=hour), 50, hour)).pseudo
            is None
        )
    refreshed = agent.observe(_estimate(START + timedelta(days=50, hours=6), 50, 6))
    assert refreshed.forecast is not None and refreshed.pseudo is not None  # tried again


def test_estimates_older_than_the_history_start_a_new_one() -> None:
    """A replay of older data after a history of newer loads: no crash, no forecast from the
    other time line; the agent starts its history anew."""
    spec = ForecastSpec(step_s=3600, horizon_steps=24, refresh_s=6 * 3600, retrain_s=30 * 86400)
    buses = [("Bus 1", 1.0), ("Bus 2", 2.0), ("Bus 3", 0.5)]
    start, values = _history(45, buses)
    model = QuantileForecaster(steps_per_day=24, horizon=24).fit(values, start=start, step_s=3600)
    agent = ForecastAgent("t", spec=spec, model=model)
    agent.seed(start, step_s=3600, buses=[b for b, _ in buses], p_mw=values)  # ends at day 50
    update = agent.observe(_estimate(START + timedelta(days=10), 10, 0))
    assert update.forecast is None and update.pseudo is None and not update.retrained
    assert agent.history == {}
    agent.observe(_estimate(START + timedelta(days=10, hours=1), 10, 1))
    assert len(agent.history) == 1  # the new time line's first hour
