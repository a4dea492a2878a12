"""The REST API over a real DuckDB store filled with estimates of emulated windows."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis.checks import not_a_server_error

from dsotp_streams.adapters.results import DuckResults, InfluxResults, ResultStore
from dsotp_streams.adapters.store import DuckStore
from dsotp_streams.api.rest import create_api, openapi_document
from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.contracts.messages import Window
from dsotp_streams.contracts.storage import Row, rows_from_estimate
from dsotp_streams.core.estimation import Estimator
from dsotp_streams.core.grid import GridModel
from dsotp_streams.emulator import PmuFleet
from tests.conftest import REPO
from tests.integration.databases import InfluxServer

TOKEN = "test-token-5f2c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WINDOWS = 12


@pytest.fixture(scope="module")
def rows(spec: AgentSpec, grid: GridModel) -> list[Row]:
    """The rows of 12 estimated windows of the last seconds."""
    fleet = PmuFleet(spec, grid)
    estimator = Estimator(spec, grid=grid)
    start = datetime.now(tz=UTC).replace(microsecond=0) - timedelta(seconds=5)
    out: list[Row] = []
    for k in range(WINDOWS):
        ts = start + k * timedelta(milliseconds=100)
        frames = {f.device: f for f in fleet.step(ts).frames}
        window = Window(area=spec.area, window_start=ts, period_s=0.1, frames=frames, closed_at=ts)
        out += rows_from_estimate(estimator.estimate(window), lag_ms=42.0)
    return out


def duck_results(rows: list[Row], folder: Path) -> Iterator[ResultStore]:
    store = DuckStore(folder / "store.duckdb")
    store.append(rows)
    store.close()
    yield DuckResults(DuckStore(folder / "store.duckdb", read_only=True))


def influx_results(rows: list[Row], folder: Path) -> Iterator[ResultStore]:
    with InfluxServer(folder / "influx") as server:
        yield InfluxResults(server.fill(rows))


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(duck_results, id="duckdb"),
        pytest.param(influx_results, id="influxdb-1.6", marks=pytest.mark.broker),
    ],
)
def app(
    request: pytest.FixtureRequest,
    rows: list[Row],
    spec: AgentSpec,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FastAPI]:
    """The API over each real store the platform reads: DuckDB (demo) and InfluxDB (deployed)."""
    backend: Callable[[list[Row], Path], Iterator[ResultStore]] = request.param
    for store in backend(rows, tmp_path_factory.mktemp("api")):
        yield create_api(store=store, specs={spec.area: spec}, token=TOKEN, max_page=50)


@pytest.fixture
def client(app: FastAPI) -> TestClient:
    return TestClient(app)


def test_v1_needs_the_token_and_says_so_as_problem_json(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = client.get("/v1/areas", headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["title"] == "Unauthorized"
    assert client.get("/healthz").json()["status"] == "ok"  # probes need no token
    assert client.get("/readyz").status_code == 200


def test_areas_and_spec(client: TestClient, spec: AgentSpec) -> None:
    areas = client.get("/v1/areas", headers=AUTH).json()
    assert [a["area"] for a in areas] == [spec.area]
    assert areas[0]["devices"] == len(spec.devices)
    detail = client.get(f"/v1/areas/{spec.area}", headers=AUTH).json()
    assert AgentSpec.model_validate(detail) == spec
    missing = client.get("/v1/areas/nowhere", headers=AUTH)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert "nowhere" in missing.json()["detail"]


def test_state_pages_walk_every_row_once(client: TestClient, spec: AgentSpec, grid: GridModel):
    seen: list[tuple[str, str]] = []
    url = f"/v1/areas/{spec.area}/state?limit=7"
    pages = 0
    while url:
        response = client.get(url, headers=AUTH)
        assert response.status_code == 200, response.text
        body = response.json()
        seen += [(row["time"], row["bus"]) for row in body["items"]]
        pages += 1
        if body["next_cursor"] is None:
            assert "link" not in response.headers
            break
        assert 'rel="next"' in response.headers["link"]
        url = f"/v1/areas/{spec.area}/state?limit=7&cursor={body['next_cursor']}"
    buses = len(grid.named_buses)
    assert len(seen) == WINDOWS * buses
    assert len(set(seen)) == len(seen)
    assert seen == sorted(seen)
    assert pages == -(-WINDOWS * buses // 7)


def test_latest_state_and_filters(client: TestClient, spec: AgentSpec, grid: GridModel) -> None:
    latest = client.get(f"/v1/areas/{spec.area}/state/latest", headers=AUTH).json()
    assert len(latest["buses"]) == len(grid.named_buses)
    assert all(0.9 < b["vm_pu"] < 1.1 for b in latest["buses"])
    one = client.get(f"/v1/areas/{spec.area}/state?bus=Bus 5&limit=50", headers=AUTH).json()
    assert {row["bus"] for row in one["items"]} == {"Bus 5"}
    assert len(one["items"]) == WINDOWS
    quality = client.get(f"/v1/areas/{spec.area}/quality", headers=AUTH).json()["items"]
    assert len(quality) == WINDOWS
    assert all(q["status"] == "ok" and q["lag_ms"] == 42.0 for q in quality)
    assert client.get(f"/v1/areas/{spec.area}/flisr", headers=AUTH).json()["items"] == []


def test_bad_ranges_and_cursors_are_client_errors(client: TestClient, spec: AgentSpec) -> None:
    base = f"/v1/areas/{spec.area}/state"
    cases = {
        "?start=2026-01-02T00:00:00Z&end=2026-01-01T00:00:00Z": 400,
        "?start=2026-01-01T00:00:00": 422,  # no offset: ambiguous
        "?cursor=not-a-cursor": 400,
        "?limit=0": 422,
        "?limit=51": 422,
        "?start=9999-12-31T23:59:59Z&end=9999-12-31T23:59:59.5Z": 400,
    }
    for query, status in cases.items():
        response = client.get(base + query, headers=AUTH)
        assert response.status_code == status, (query, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["status"] == status


def test_metrics_report_rates_lag_and_runtime(client: TestClient, spec: AgentSpec) -> None:
    text = client.get("/metrics").text
    assert f'dsotp_estimates_last_minute{{area="{spec.area}",status="ok"}} {WINDOWS}' in text
    assert f'dsotp_lag_ms{{area="{spec.area}"}} 42.0' in text
    assert "dsotp_estimate_runtime_ms" in text
    assert 'dsotp_api_requests_total{path="/v1/areas",code="401"}' in text


def test_committed_openapi_document_matches_the_code() -> None:
    committed = (REPO / "docs" / "openapi.json").read_text(encoding="utf-8")
    assert committed == openapi_document(), "run: dsotp api --export-openapi docs/openapi.json"
    paths = json.loads(committed)["paths"]
    assert "/v1/areas/{area}/state" in paths


def test_schemathesis_finds_no_server_error(app: FastAPI) -> None:
    """Property-based requests generated from the OpenAPI document, with and without the token:
    every answer is documented and none is a server error."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 11

    statuses: list[int] = []
    for operation in operations:

        @hypothesis.given(case=operation.as_strategy())
        @hypothesis.settings(
            max_examples=25, deadline=None, suppress_health_check=list(hypothesis.HealthCheck)
        )
        def check(case: schemathesis.Case) -> None:
            response = case.call_and_validate(headers=AUTH, checks=[not_a_server_error])
            statuses.append(response.status_code)

        check()
    assert len(statuses) >= 5 * len(operations)
    assert {200, 404} <= set(statuses), sorted(set(statuses))
