"""The Grafana dashboards: current with their generator, and every query answered by a real
InfluxDB 1.6.7 that the platform's sink filled from an emulated run."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dsotp_streams.adapters.influx import make_writer
from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.contracts.frames import Measurand, PmuFrame, Reading
from dsotp_streams.contracts.messages import Window
from dsotp_streams.contracts.storage import SCHEMA, Row, rows_from_estimate, rows_from_frame, ts_ns
from dsotp_streams.core.estimation import Estimator
from dsotp_streams.core.grid import GridModel
from dsotp_streams.emulator import PmuFleet
from dsotp_streams.runtime.sinks import RowSink
from dsotp_streams.settings import InfluxSettings
from tests.integration.databases import InfluxServer

REPO = Path(__file__).resolve().parents[2]
BUILDER = REPO / "deploy" / "grafana" / "build_dashboards.py"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "dsotp-overview.json"


def _builder() -> Any:
    spec = importlib.util.spec_from_file_location("build_dashboards", BUILDER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [t["query"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [a["query"] for a in dashboard["annotations"]["list"]]
    queries += [v["query"] for v in dashboard["templating"]["list"]]
    return queries


def test_dashboard_json_is_generated_from_code() -> None:
    assert json.loads(DASHBOARD.read_text()) == _builder().overview()


def test_every_query_names_measurements_and_fields_of_the_schema() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    for query in _queries(dashboard):
        measurement = re.search(r'FROM "(\w+)"', query)
        assert measurement and measurement.group(1) in SCHEMA, query
        m = SCHEMA[measurement.group(1)]
        for name in re.findall(r'"(\w+)"', query):
            assert name == m.name or name in m.tags or name in m.fields, (name, query)


@pytest.fixture(scope="module")
def filled(
    tmp_path_factory: pytest.TempPathFactory, spec: AgentSpec, grid: GridModel
) -> Iterator[InfluxServer]:
    """30 s of an emulated CIGRE MV run (one window with a gross error) through the v1 sink."""
    server = InfluxServer(tmp_path_factory.mktemp("influx-dash"))
    server.start()
    fleet, estimator = PmuFleet(spec, grid), Estimator(spec, grid=grid)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    rows: list[Row] = []
    for k in range(150):
        ts = start + timedelta(milliseconds=200 * k)
        instant = fleet.step(ts)
        frames = {f.device: f for f in instant.frames}
        if k == 75:  # a voltage magnitude 10 % off: bad data to flag
            f = frames["pmu-n3"]
            readings = [
                Reading(
                    component=r.component,
                    measurand=r.measurand,
                    phase=r.phase,
                    data=r.data * 1.1 if r.measurand is Measurand.VOLTMAGNITUDE else r.data,
                )
                for r in f.readings
            ]
            frames["pmu-n3"] = PmuFrame(device=f.device, timestamp=f.timestamp, readings=readings)
        window = Window(area=spec.area, window_start=ts, period_s=0.2, frames=frames, closed_at=ts)
        estimate = estimator.estimate(window, truth=instant.truth)
        for frame in frames.values():
            rows.extend(rows_from_frame(spec.area, frame))
        rows.extend(rows_from_estimate(estimate, lag_ms=50.0))
        for q, factor in (("0.1", 0.8), ("0.5", 1.0), ("0.9", 1.2)):
            rows.append(
                Row(
                    "forecast",
                    {"area": spec.area, "node": "Bus 1", "quantity": "p_mw", "quantile": q},
                    {"value": 15.0 * factor, "horizon_s": 900.0, "issued_ns": ts_ns(start)},
                    ts_ns(ts),
                )
            )
    rows.append(
        Row(
            "flisr",
            {"area": spec.area, "kind": "plan"},
            {"section": "Line 3-4", "text": "fault on Line 3-4: open S2"},
            ts_ns(start),
        )
    )
    settings = InfluxSettings(url=server.url, api="v1")
    sink = RowSink(
        "influx-v1",
        backend=make_writer(settings),
        batch_size=5000,
        flush_interval_s=0.1,
        max_buffer_rows=10**6,
        spill_dir=None,
    )

    async def write() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(sink.run(stop))
        sink.submit(rows)
        for _ in range(600):  # the sink's counters are polled: it has no completion event
            if sink.stats.written + sink.stats.rejected >= len(rows):
                break
            await asyncio.sleep(0.05)
        stop.set()
        await task

    asyncio.run(write())
    assert sink.stats.rejected == 0
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.broker
def test_every_dashboard_query_returns_data(filled: InfluxServer) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    substitutions = {
        "$timeFilter": "time > now() - 10m",
        "$__interval": "1s",
        "$area": "cigre-mv",
        "$bus": "Bus 1",
    }
    for query in _queries(dashboard):
        for key, value in substitutions.items():
            query = query.replace(key, value)
        series = filled.query(query)
        assert series and any(s.get("values") for s in series), query


@pytest.mark.broker
def test_bad_data_window_shows_on_the_bad_data_panel(filled: InfluxServer) -> None:
    series = filled.query(
        'SELECT "bad_data" FROM "se_quality" WHERE "n_bad_data" > 0 AND time > now() - 10m'
    )
    flagged = [row[1] for s in series for row in s["values"]]
    assert any("pmu-n3:Bus 3:voltmagnitude" in text for text in flagged)
