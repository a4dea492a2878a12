"""The REST API (`dsotp api`, and inside `dsotp demo`): areas and their specs, state estimates,
forecasts, FLISR events, estimation quality; health, readiness and Prometheus metrics.

Conventions: versioned paths (`/v1/...`), time ranges as ISO-8601 `start`/`end` (end excluded,
the last hour by default), keyset pagination (`limit`, `cursor`, `next_cursor` in the body and a
`Link: <...>; rel="next"` header), errors as `application/problem+json` (RFC 9457), bearer-token
authentication on every `/v1` path when a token is configured."""

import logging
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel, Field
from starlette.exceptions import HTTPException

from dsotp_streams import __version__
from dsotp_streams.adapters.results import Cursor, Page, ResultStore, TimeRange
from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.contracts.storage import ts_ns
from dsotp_streams.errors import CursorError, DsotpError

__all__ = ["create_api", "openapi_document"]

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
_NS_MIN, _NS_MAX = -(2**63), 2**63 - 1  # the store's nanosecond times


class Problem(BaseModel):
    """An error (RFC 9457 problem details)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


class AreaSummary(BaseModel):
    """One grid area served by the platform."""

    area: str
    description: str
    devices: int
    rate_hz: float
    buses: list[str]


class ResultPage(BaseModel):
    """One page of results, oldest first."""

    items: list[dict[str, Any]]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


class LatestState(BaseModel):
    """The newest estimate of an area, one entry per bus."""

    area: str
    window_start: datetime | None
    buses: list[dict[str, Any]]


class Health(BaseModel):
    """Liveness or readiness."""

    status: str
    version: str
    detail: str | None = None


def _problem(status: int, title: str, detail: str | None, instance: str) -> JSONResponse:
    body = Problem(title=title, status=status, detail=detail, instance=instance)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=status, media_type=PROBLEM, headers=headers
    )


_PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {PROBLEM: {}}, "description": text}
    for code, text in (
        (400, "invalid time range or cursor"),
        (401, "missing or wrong token"),
        (404, "no such area"),
        (422, "invalid parameter"),
        (503, "the store cannot answer"),
    )
}


def create_api(
    *,
    store: ResultStore,
    specs: dict[str, AgentSpec],
    token: str | None,
    counters: Callable[[], dict[str, dict[str, float]]] | None = None,
    max_page: int = 1000,
) -> FastAPI:
    """The API app. `token` None: no authentication (only the embedded demo does that);
    `counters`: live per-area counters of the runtime in the same process, for /metrics."""
    app = FastAPI(
        title="dsotp-streams API",
        version=__version__,
        description=__doc__,
        responses=_PROBLEM_RESPONSES,
    )
    requests_total: dict[tuple[str, int], int] = {}

    @app.exception_handler(HTTPException)
    async def http_problem(request: Request, exc: HTTPException) -> JSONResponse:
        return _problem(exc.status_code, _title(exc.status_code), exc.detail, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def validation_problem(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return _problem(422, "Invalid parameter", detail, request.url.path)

    @app.exception_handler(DsotpError)
    async def store_problem(request: Request, exc: DsotpError) -> JSONResponse:
        log.warning("API %s: %s", request.url.path, exc)
        return _problem(503, "Store unavailable", str(exc), request.url.path)

    @app.middleware("http")
    async def count_requests(request: Request, call_next: Callable[[Request], Any]) -> Any:
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        key = (path, response.status_code)
        requests_total[key] = requests_total.get(key, 0) + 1
        return response

    bearer = HTTPBearer(auto_error=False, description="the API token (DSOTP_API__TOKEN)")

    def authorised(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> None:
        if token is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "a valid bearer token is required")

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorised)] if token is not None else [])

    # parameter types (inside: the page limit is a setting)
    Start = Annotated[  # noqa: N806
        AwareDatetime | None, Query(description="ISO-8601 with offset; default: end - 1 h")
    ]
    End = Annotated[  # noqa: N806
        AwareDatetime | None, Query(description="ISO-8601 with offset; default: now")
    ]
    Limit = Annotated[int, Query(ge=1, le=max_page, description="rows per page")]  # noqa: N806
    CursorQ = Annotated[  # noqa: N806
        str | None, Query(description="`next_cursor` of the previous page")
    ]

    def area_spec(area: str) -> AgentSpec:
        spec = specs.get(area)
        if spec is None:
            raise HTTPException(404, f"no area {area!r}; known: {sorted(specs)}")
        return spec

    def time_range(start: datetime | None, end: datetime | None) -> TimeRange:
        end = end or datetime.now(tz=UTC)
        start = start or end - timedelta(hours=1)
        if start >= end:
            raise HTTPException(400, "start must be before end")
        try:
            window = TimeRange(ts_ns(start), ts_ns(end))
        except (OverflowError, ValueError) as exc:
            raise HTTPException(400, f"time out of range: {exc}") from exc
        if not (window.start_ns >= _NS_MIN and window.end_ns <= _NS_MAX):
            raise HTTPException(400, "times must lie between 1677-09-22 and 2262-04-11 (UTC)")
        return window

    def cursor(text: str | None) -> Cursor | None:
        if text is None:
            return None
        try:
            return Cursor.decode(text)
        except CursorError as exc:
            raise HTTPException(400, str(exc)) from exc

    def respond(page: Page, request: Request) -> JSONResponse:
        body = ResultPage(items=[_row(r) for r in page.items], next_cursor=page.next_cursor)
        headers = {}
        if page.next_cursor is not None:
            url = request.url.include_query_params(cursor=page.next_cursor)
            headers["Link"] = f'<{url}>; rel="next"'
        return JSONResponse(body.model_dump(mode="json"), headers=headers)

    def results(
        measurement: str,
        key: str,
        area: str,
        start: datetime | None,
        end: datetime | None,
        limit: int,
        after: str | None,
        filters: dict[str, str | None],
        request: Request,
    ) -> JSONResponse:
        area_spec(area)
        page = store.page(
            measurement,
            area,
            time_range(start, end),
            key_column=key,
            filters={k: v for k, v in filters.items() if v is not None},
            limit=limit,
            after=cursor(after),
        )
        return respond(page, request)

    @app.get("/healthz", tags=["health"])
    def health() -> Health:
        """Liveness: the process answers."""
        return Health(status="ok", version=__version__)

    @app.get(
        "/readyz",
        tags=["health"],
        responses={503: {"model": Health, "description": "the store cannot answer"}},
    )
    def ready() -> JSONResponse:
        """Readiness: the store answers."""
        try:
            store.ping()
        except DsotpError as exc:
            body = Health(status="unavailable", version=__version__, detail=str(exc))
            return JSONResponse(body.model_dump(), status_code=503)
        return JSONResponse(Health(status="ok", version=__version__).model_dump())

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse)
    def metrics() -> str:
        """Prometheus text format: estimates per status in the last minute, newest lag, mean
        estimation time and bad data per area (from the store); the runtime's own counters
        (frames, dead letters, skipped windows) when it runs in this process; API requests."""
        now = time.time_ns()
        lines = [
            "# TYPE dsotp_estimates_last_minute gauge",
            "# TYPE dsotp_lag_ms gauge",
            "# TYPE dsotp_estimate_runtime_ms gauge",
            "# TYPE dsotp_bad_data_last_minute gauge",
        ]
        try:
            summary = store.quality_summary(now - 60_000_000_000)
        except DsotpError:
            summary = []
        for row in summary:
            labels = f'area="{_esc(row["area"])}",status="{_esc(row["status"])}"'
            lines.append(f"dsotp_estimates_last_minute{{{labels}}} {row['n']}")
            if row["status"] == "ok":
                area = f'area="{_esc(row["area"])}"'
                lines.append(f"dsotp_lag_ms{{{area}}} {_num(row['lag_ms'])}")
                lines.append(f"dsotp_estimate_runtime_ms{{{area}}} {_num(row['runtime_ms'])}")
                lines.append(f"dsotp_bad_data_last_minute{{{area}}} {_num(row['bad_data'])}")
        if counters is not None:
            for area, values in sorted(counters().items()):
                for name, value in sorted(values.items()):
                    metric = f"dsotp_runtime_{name}"
                    lines.append(f'{metric}{{area="{_esc(area)}"}} {_num(value)}')
        lines.append("# TYPE dsotp_api_requests_total counter")
        for (path, status), n in sorted(requests_total.items()):
            lines.append(f'dsotp_api_requests_total{{path="{_esc(path)}",code="{status}"}} {n}')
        return "\n".join(lines) + "\n"

    @v1.get("/areas", tags=["areas"])
    def areas() -> list[AreaSummary]:
        """Every area with its description, device count, reporting rate and buses."""
        return [
            AreaSummary(
                area=name,
                description=spec.description,
                devices=len(spec.devices),
                rate_hz=spec.window.rate_hz,
                buses=sorted({d.bus for d in spec.devices}),
            )
            for name, spec in sorted(specs.items())
        ]

    @v1.get("/areas/{area}", tags=["areas"])
    def area(area: str) -> dict[str, Any]:
        """The area's agent spec as loaded (grid, devices, window, estimator, FLISR, ...)."""
        return area_spec(area).model_dump(mode="json")

    @v1.get("/areas/{area}/state/latest", tags=["state"])
    def latest(area: str) -> LatestState:
        """The newest estimate of every bus."""
        area_spec(area)
        rows = store.latest_state(area)
        start = _time(int(rows[0]["ts_ns"])) if rows else None
        return LatestState(area=area, window_start=start, buses=[_row(r) for r in rows])

    @v1.get("/areas/{area}/state", tags=["state"])
    def state(
        area: str,
        request: Request,
        start: Start = None,
        end: End = None,
        bus: Annotated[str | None, Query(description="one bus only")] = None,
        limit: Limit = 100,
        cursor: CursorQ = None,
    ) -> ResultPage:
        """Estimated bus voltages and injections (with the measured voltage where a PMU is)."""
        return results(  # type: ignore[return-value]
            "state", "bus", area, start, end, limit, cursor, {"bus": bus}, request
        )

    @v1.get("/areas/{area}/branches", tags=["state"])
    def branches(
        area: str,
        request: Request,
        start: Start = None,
        end: End = None,
        line: Annotated[str | None, Query(description="one branch only")] = None,
        limit: Limit = 100,
        cursor: CursorQ = None,
    ) -> ResultPage:
        """Estimated branch flows and loading."""
        return results(  # type: ignore[return-value]
            "branch", "line", area, start, end, limit, cursor, {"line": line}, request
        )

    @v1.get("/areas/{area}/quality", tags=["state"])
    def quality(
        area: str,
        request: Request,
        start: Start = None,
        end: End = None,
        limit: Limit = 100,
        cursor: CursorQ = None,
    ) -> ResultPage:
        """Estimation quality per window: status, chi-square and its threshold, bad data,
        iterations, estimation time, lag."""
        return results(  # type: ignore[return-value]
            "se_quality", "status", area, start, end, limit, cursor, {}, request
        )

    @v1.get("/areas/{area}/forecasts", tags=["forecasts"])
    def forecasts(
        area: str,
        request: Request,
        start: Start = None,
        end: End = None,
        node: Annotated[str | None, Query(description="one node only")] = None,
        limit: Limit = 100,
        cursor: CursorQ = None,
    ) -> ResultPage:
        """Quantile forecasts per node (by forecast time)."""
        return results(  # type: ignore[return-value]
            "forecast", "node", area, start, end, limit, cursor, {"node": node}, request
        )

    @v1.get("/areas/{area}/flisr", tags=["flisr"])
    def flisr(
        area: str,
        request: Request,
        start: Start = None,
        end: End = None,
        limit: Limit = 100,
        cursor: CursorQ = None,
    ) -> ResultPage:
        """FLISR events: the faulted section, isolation and restoration plan."""
        return results(  # type: ignore[return-value]
            "flisr", "kind", area, start, end, limit, cursor, {}, request
        )

    app.include_router(v1)
    return app


def _title(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _time(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // 1_000_000_000, tz=UTC) + timedelta(
        microseconds=(ns % 1_000_000_000) // 1000
    )


def _row(row: dict[str, Any]) -> dict[str, Any]:
    out = {"time": _time(int(row["ts_ns"])).isoformat()}
    out.update((k, v) for k, v in row.items() if k != "ts_ns" and k != "time")
    return out


def _num(value: object) -> str:
    if value is None:
        return "NaN"
    return repr(float(value))  # type: ignore[arg-type]


def _esc(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def openapi_document() -> str:
    """The API's OpenAPI document as committed in `docs/openapi.json` (stable text)."""
    import json

    from dsotp_streams.adapters.results import DuckResults
    from dsotp_streams.adapters.store import DuckStore

    app = create_api(store=DuckResults(DuckStore(":memory:")), specs={}, token="-")
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"
