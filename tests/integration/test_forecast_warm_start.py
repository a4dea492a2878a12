"""Forecasts resume at once after a restart: the forecaster's history is read back from the
store the platform wrote (the embedded DuckDB store, or InfluxDB 1.6.7 where deployed)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from dsotp_streams.adapters.forecasters import save_forecaster
from dsotp_streams.adapters.results import InfluxResults
from dsotp_streams.adapters.store import DuckStore
from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.contracts.messages import EstimateStatus, Window
from dsotp_streams.contracts.storage import Row
from dsotp_streams.core.grid import GridModel
from dsotp_streams.emulator import PmuFleet
from dsotp_streams.runtime.stages import LoadHistory, Processed, WindowProcessor
from dsotp_streams.settings import InfluxSettings
from tests.integration.databases import InfluxServer
from tests.integration.history import STEP_S, bus_base, daily_load, state_rows, trained_model


def duck_backend(rows: list[Row], folder: Path) -> Iterator[LoadHistory]:
    store = DuckStore(folder / "store.duckdb")
    try:
        store.append(rows)
        yield store
    finally:
        store.close()


def influx_backend(rows: list[Row], folder: Path) -> Iterator[LoadHistory]:
    with InfluxServer(folder / "influx") as server:
        yield InfluxResults(server.fill(rows))


BACKENDS = [
    pytest.param(duck_backend, id="duckdb"),
    pytest.param(influx_backend, id="influxdb-1.6", marks=pytest.mark.broker),
]
Backend = Callable[[list[Row], Path], Iterator[LoadHistory]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_bus_loads_are_the_mean_of_each_step_since_a_time(backend: Backend, tmp_path: Path) -> None:
    start = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
    rows = state_rows("a", ["Bus 1", "Bus 2"], start, 3 * 3600, 10)
    rows += state_rows("other", ["Bus 1"], start, 3600, 60)  # another area stays out
    since = start + timedelta(hours=1)
    for history in backend(rows, tmp_path):
        got = history.bus_loads("a", since_ns=int(since.timestamp() * 1e9), step_s=STEP_S)
        first = int(since.timestamp()) // STEP_S
        assert [(r["slot"], r["bus"]) for r in got] == [
            (first + k, bus) for k in range(8) for bus in ("Bus 1", "Bus 2")
        ]
        for r in got:  # the +-0.001 ripple averages out over each quarter hour
            base = bus_base(0 if r["bus"] == "Bus 1" else 1)
            assert r["p_mw"] == pytest.approx(daily_load(r["slot"], base), abs=2e-5)


async def _first_forecast(processor: WindowProcessor, fleet: PmuFleet, windows: int) -> int | None:
    """Process live windows; the index of the first one that brought a forecast."""
    now = datetime.now(tz=UTC)
    for k in range(windows):
        ts = now + k * timedelta(milliseconds=100)
        frames = {f.device: f for f in fleet.step(ts).frames}
        window = Window(
            area=processor.spec.area, window_start=ts, period_s=0.1, frames=frames, closed_at=ts
        )
        result: Processed = await processor.process(window)
        assert result.estimate.status is EstimateStatus.OK
        if result.forecast is not None:
            return k
        await asyncio.sleep(0.02)
    return None


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_restarted_processor_forecasts_at_once_from_the_stored_history(
    backend: Backend, spec: AgentSpec, grid: GridModel, tmp_path: Path
) -> None:
    buses = [name for name, _idx in grid.named_buses]
    agents = tmp_path / "agents"
    agents.mkdir()
    save_forecaster(trained_model(len(buses)), tmp_path / "models" / f"forecast-{spec.area}.json")
    now = datetime.now(tz=UTC)
    days = 9
    history_start = now - timedelta(days=days)
    rows = state_rows(spec.area, buses, history_start, days * 86400, 300)  # an estimate per 5 min
    for history in backend(rows, tmp_path):
        # without the stored history, the same processor waits for eight days of its own
        cold = WindowProcessor(spec, grid, agents)
        assert asyncio.run(_first_forecast(cold, PmuFleet(spec, grid), 30)) is None
        warm = WindowProcessor(spec, grid, agents, history)
        first = asyncio.run(_first_forecast(warm, PmuFleet(spec, grid), 300))
        assert first is not None, "no forecast from the stored history"
        assert days * 96 - 1 <= warm.history_steps <= days * 96 + 1
        assert warm.forecaster is not None and warm.forecaster.current is not None
        forecast = warm.forecaster.current
        assert set(forecast.quantiles) == set(buses)
        assert forecast.times[0] <= now + timedelta(seconds=STEP_S)
        # the median follows the stored daily shape of a bus (the model learnt that shape)
        j = 5
        slot0 = int(forecast.times[0].timestamp()) // STEP_S
        expected = np.array([daily_load(slot0 + k, bus_base(j)) for k in range(96)])
        median = np.array(forecast.quantiles[buses[j]]["0.5"])
        assert np.mean(np.abs(median - expected)) < 0.1 * np.mean(expected)
        # and the estimator's pseudo-measurements now come from it
        pseudo = warm.forecaster.pseudo(slot0)
        assert pseudo is not None and set(pseudo) == set(buses)


def test_a_store_that_fails_leaves_forecasting_as_without_one(
    spec: AgentSpec, grid: GridModel, tmp_path: Path
) -> None:
    with socket.socket() as sock:  # a port nothing listens on: InfluxDB unreachable
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = InfluxResults(InfluxSettings(url=f"http://127.0.0.1:{port}"))
    processor = WindowProcessor(spec, grid, tmp_path, down)
    assert asyncio.run(_first_forecast(processor, PmuFleet(spec, grid), 20)) is None
    assert processor.history_steps == 0
    assert processor.forecaster is not None and processor.forecaster.buses  # fed all the same


def test_a_replay_of_older_data_takes_no_history_from_after_it(
    spec: AgentSpec, grid: GridModel, tmp_path: Path
) -> None:
    """Event time: a replay of last year's stream on a store of this week's estimates reads
    no history from after its own time, and estimates every window."""
    buses = [name for name, _idx in grid.named_buses]
    now = datetime.now(tz=UTC)
    rows = state_rows(spec.area, buses, now - timedelta(days=9), 9 * 86400, 600)
    for history in duck_backend(rows, tmp_path):
        processor = WindowProcessor(spec, grid, tmp_path / "agents", history)
        start = now - timedelta(days=365)
        results = asyncio.run(_windows(processor, PmuFleet(spec, grid), start, 30))
        assert all(r.estimate.status is EstimateStatus.OK for r in results)
        assert processor.history_steps == 0 and all(r.forecast is None for r in results)
        assert processor.forecaster is not None and processor.forecaster.buses == buses


async def _windows(
    processor: WindowProcessor, fleet: PmuFleet, start: datetime, count: int
) -> list[Processed]:
    """Process `count` emulated windows from `start`, 100 ms apart."""
    out = []
    for k in range(count):
        ts = start + k * timedelta(milliseconds=100)
        frames = {f.device: f for f in fleet.step(ts).frames}
        window = Window(
            area=processor.spec.area, window_start=ts, period_s=0.1, frames=frames, closed_at=ts
        )
        out.append(await processor.process(window))
        await asyncio.sleep(0.01)
    return out
