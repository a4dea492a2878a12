"""A stored history of estimated loads, as a platform that ran for days leaves in its store, and
a forecaster trained on the same daily shape (for the warm-start tests)."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from dsotp_streams.adapters.forecasters import save_forecaster
from dsotp_streams.adapters.grids import load_grid
from dsotp_streams.adapters.store import DuckStore
from dsotp_streams.contracts.agent import load_agent_spec
from dsotp_streams.contracts.storage import Row
from dsotp_streams.core.forecasting.models import QuantileForecaster
from tests.conftest import REPO

STEP_S = 900


def daily_load(slot: int, base: float) -> float:
    """The load of a bus in a 15-minute slot (epoch seconds // 900): a daily sine around base."""
    hour = (slot * STEP_S / 3600) % 24
    return base * (1.0 + 0.4 * np.sin(2 * np.pi * hour / 24))


def bus_base(j: int) -> float:
    """The mean load of the j-th bus (MW)."""
    return 0.2 + 0.1 * j


def state_rows(
    area: str, buses: list[str], start: datetime, seconds: int, every_s: int
) -> list[Row]:
    """`state` rows of estimates every `every_s` seconds, with a +-1 kW ripple that averages out
    over each quarter hour."""
    out = []
    t0 = int(start.timestamp())
    for t in range(t0, t0 + seconds, every_s):
        slot = t // STEP_S
        for j, bus in enumerate(buses):
            p = daily_load(slot, bus_base(j)) + 0.001 * ((t // every_s) % 3 - 1)
            fields = {"vm_pu": 1.0, "va_deg": 0.0, "p_mw": p, "q_mvar": 0.3 * p}
            out.append(Row("state", {"area": area, "bus": bus}, fields, t * 1_000_000_000))
    return out


def trained_model(buses: int, days: int = 44) -> QuantileForecaster:
    """A day-ahead forecaster (15 min, 96 steps) trained on `days` of the daily shape."""
    y = np.array([[daily_load(s, bus_base(j)) for j in range(buses)] for s in range(days * 96)])
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return QuantileForecaster(steps_per_day=96, horizon=96).fit(y, start=start, step_s=STEP_S)


def restarted_demo(folder: Path, days: int = 9) -> tuple[Path, Path, list[str]]:
    """What a demo that ran before leaves: a copy of the demo's agent spec with its trained
    forecaster beside it (`models/`), and a store holding `days` of its estimates (one every
    10 minutes, up to now). Returns the agent file, the store and the area's buses."""
    agents = folder / "agents"
    agents.mkdir()
    agent = agents / "cigre-mv.yaml"
    shutil.copy(REPO / "agents" / "cigre-mv.yaml", agent)
    spec = load_agent_spec(agent)
    buses = [name for name, _idx in load_grid(spec.grid).named_buses]
    save_forecaster(trained_model(len(buses)), folder / "models" / f"forecast-{spec.area}.json")
    store_path = folder / "demo.duckdb"
    store = DuckStore(store_path)
    try:
        start = datetime.now(tz=UTC) - timedelta(days=days)
        store.append(state_rows(spec.area, buses, start, days * 86400, 600))
    finally:
        store.close()
    return agent, store_path, buses
