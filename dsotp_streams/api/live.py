"""The live page: recent estimates in memory, pushed to browsers by server-sent events.

`LiveHub` is fed every StateEstimate (a pipeline listener) and keeps the last minutes per area in
a compact, column-wise form; `create_live_app` serves the page, its script, the grid drawing
(bus coordinates from the model's geodata, else a computed layout), the history and the stream.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from dsotp_streams.contracts.messages import FlisrEvent, Forecast, QualityFlag, StateEstimate
from dsotp_streams.contracts.storage import ts_ns
from dsotp_streams.core.grid import GridModel

__all__ = ["LiveHub", "create_live_app", "grid_drawing"]


@dataclass
class _Area:
    drawing: dict[str, Any]
    buses: list[str]
    points: deque[dict[str, Any]] = field(default_factory=deque)
    flisr: dict[str, Any] | None = None
    forecast: dict[str, Any] | None = None


class LiveHub:
    """Recent estimates per area, and the browsers listening to them."""

    def __init__(self, *, history_s: float, counters: Callable[[], dict[str, Any]] | None = None):
        self.history_ns = int(history_s * 1e9)
        self.counters = counters or (lambda: {})
        self._areas: dict[str, _Area] = {}
        self._listeners: set[asyncio.Queue[str]] = set()

    def add_area(self, area: str, grid: GridModel) -> None:
        """Register an area and its drawing."""
        drawing = grid_drawing(grid)
        self._areas[area] = _Area(drawing, [b["name"] for b in drawing["buses"]])

    def areas(self) -> list[str]:
        """Registered areas."""
        return list(self._areas)

    def publish(self, estimate: StateEstimate) -> None:
        """A pipeline listener: keep the point and push it to every open page."""
        area = self._areas.get(estimate.area)
        if area is None:
            return
        point = _point(estimate, area.buses)
        area.points.append(point)
        while area.points and point["t"] - area.points[0]["t"] > self.history_ns / 1e6:
            area.points.popleft()
        self._broadcast(json.dumps(point))

    def publish_flisr(self, event: FlisrEvent) -> None:
        """A pipeline's FLISR listener: keep the last case and push it to every open page."""
        area = self._areas.get(event.area)
        if area is None:
            return
        area.flisr = {"type": "flisr", **json.loads(event.model_dump_json())}
        self._broadcast(json.dumps(area.flisr))

    def publish_forecast(self, forecast: Forecast) -> None:
        """A pipeline's forecast listener: keep the newest forecast (columns in bus order) and
        push it to every open page."""
        area = self._areas.get(forecast.area)
        if area is None:
            return
        area.forecast = _forecast(forecast, area.buses)
        self._broadcast(json.dumps(area.forecast))

    def _broadcast(self, message: str) -> None:
        for queue in list(self._listeners):
            if queue.full():
                queue.get_nowait()  # a slow browser loses old points, never the server
            queue.put_nowait(message)

    def meta(self, area: str) -> dict[str, Any]:
        """The drawing and bus order of an area."""
        if area not in self._areas:
            raise KeyError(area)
        kept = self._areas[area]
        return {"area": area, **kept.drawing, "flisr": kept.flisr, "forecast": kept.forecast}

    def history(self, area: str) -> list[dict[str, Any]]:
        """The kept points of an area, oldest first."""
        if area not in self._areas:
            raise KeyError(area)
        return list(self._areas[area].points)

    async def listen(self) -> AsyncIterator[str]:
        """Every new point as JSON, until the caller stops iterating."""
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=256)
        self._listeners.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._listeners.discard(queue)


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, 6)


def _point(estimate: StateEstimate, order: list[str]) -> dict[str, Any]:
    by_bus = {b.bus: b for b in estimate.buses}
    return {
        "area": estimate.area,
        "t": ts_ns(estimate.window_start) / 1e6,  # ms, for the browser's Date
        "status": estimate.status.value,
        "reason": estimate.reason,
        "chi2": _num(estimate.chi2),
        "bad_data": estimate.bad_data,
        # devices whose data was left out (stale, frozen) in this window
        "stale": sorted(
            d
            for d, flags in (estimate.quality.flags if estimate.quality else {}).items()
            if QualityFlag.STALE in flags
        ),
        "runtime_ms": round(estimate.runtime_ms, 3),
        "vm": [_num(by_bus[n].vm_pu) if n in by_bus else None for n in order],
        "meas": [_num(by_bus[n].measured_vm_pu) if n in by_bus else None for n in order],
        "true": [_num(by_bus[n].true_vm_pu) if n in by_bus else None for n in order],
        "p": [_num(by_bus[n].p_mw) if n in by_bus else None for n in order],
    }


def _forecast(forecast: Forecast, order: list[str]) -> dict[str, Any]:
    """A forecast for the page: times in ms, and per quantile one list per bus (None where the
    forecast has no such bus)."""
    levels = sorted({q for per_bus in forecast.quantiles.values() for q in per_bus}, key=float)
    return {
        "type": "forecast",
        "area": forecast.area,
        "issued": ts_ns(forecast.issued_at) / 1e6,
        "step_ms": forecast.step_s * 1000,
        "times": [ts_ns(t) / 1e6 for t in forecast.times],
        "quantity": forecast.quantity,
        "levels": levels,
        "values": {
            q: [
                [_num(v) for v in forecast.quantiles[n][q]] if n in forecast.quantiles else None
                for n in order
            ]
            for q in levels
        },
    }


def grid_drawing(grid: GridModel) -> dict[str, Any]:
    """Bus positions (geodata, else a spring layout) and branches, in the page's coordinates."""
    net = grid.net
    names = {idx: name for name, idx in grid.named_buses}
    xy: dict[str, tuple[float, float]] = {}
    if "geo" in net.bus:
        for (name, _idx), geo in zip(grid.named_buses, net.bus["geo"], strict=True):
            if isinstance(geo, str) and geo:
                coords = json.loads(geo).get("coordinates")
                if isinstance(coords, list) and len(coords) == 2:
                    xy[name] = (float(coords[0]), float(coords[1]))
    branches = [
        (ref.name, names.get(ref.from_bus), names.get(ref.to_bus)) for ref in grid.branches.values()
    ]
    if len(xy) < len(names):
        import networkx as nx

        graph = nx.Graph()
        graph.add_nodes_from(names.values())
        graph.add_edges_from((a, b) for _n, a, b in branches if a and b)
        layout = nx.spring_layout(graph, seed=1)
        xy = {name: (float(p[0]), float(p[1])) for name, p in layout.items()}
    xs = [p[0] for p in xy.values()] or [0.0]
    ys = [p[1] for p in xy.values()] or [0.0]
    span_x = (max(xs) - min(xs)) or 1.0
    span_y = (max(ys) - min(ys)) or 1.0

    def scale(p: tuple[float, float]) -> tuple[float, float]:
        return (round((p[0] - min(xs)) / span_x, 4), round(1 - (p[1] - min(ys)) / span_y, 4))

    return {
        "buses": [
            {"name": name, "x": scale(xy[name])[0], "y": scale(xy[name])[1]}
            for name, _idx in grid.named_buses
        ],
        "lines": [{"name": n, "from": a, "to": b} for n, a, b in branches if a and b],
    }


def _static(name: str) -> str:
    return resources.files("dsotp_streams.api").joinpath("static", name).read_text("utf-8")


def create_live_app(hub: LiveHub) -> FastAPI:
    """The page, its script, and its JSON/SSE endpoints."""
    app = FastAPI(title="dsotp live", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return _static("live.html")

    @app.get("/static/live.js")
    async def script() -> Response:
        return Response(_static("live.js"), media_type="text/javascript")

    @app.get("/api/live/areas")
    async def areas() -> dict[str, Any]:
        return {"areas": hub.areas(), "counters": hub.counters()}

    @app.get("/api/live/{area}/meta")
    async def meta(area: str) -> dict[str, Any]:
        try:
            return hub.meta(area)
        except KeyError:
            raise HTTPException(404, f"no area {area!r}") from None

    @app.get("/api/live/{area}/history")
    async def history(area: str) -> dict[str, Any]:
        try:
            return {"points": hub.history(area)}
        except KeyError:
            raise HTTPException(404, f"no area {area!r}") from None

    @app.get("/api/live/stream")
    async def stream() -> StreamingResponse:
        async def events() -> AsyncIterator[str]:
            yield "retry: 2000\n\n"
            async for message in hub.listen():
                yield f"data: {message}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app
