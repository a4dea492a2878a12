"""Where results go besides MQTT: sinks (InfluxDB, DuckDB), the live page and the REST API,
started together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import asdict
from types import TracebackType
from typing import Any

from dsotp_streams.adapters.results import DuckResults, InfluxResults
from dsotp_streams.adapters.store import DuckStore
from dsotp_streams.api.live import LiveHub, create_live_app
from dsotp_streams.api.rest import create_api
from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.contracts.storage import Row
from dsotp_streams.core.grid import GridModel
from dsotp_streams.errors import DsotpError, TransportError
from dsotp_streams.runtime.demo import Wiring
from dsotp_streams.runtime.sinks import RowSink, build_sinks
from dsotp_streams.runtime.stages import LoadHistory, PipelineStats
from dsotp_streams.settings import Settings

__all__ = ["Outputs"]

log = logging.getLogger(__name__)


class Outputs:
    """Sinks and the live page of one process; an async context that starts and drains them."""

    def __init__(self, settings: Settings, *, live: bool) -> None:
        self.settings = settings
        self.live = live and settings.live.enabled
        self.sinks: list[RowSink] = []
        self.store: DuckStore | None = None
        self.counters: Callable[[], dict[str, Any]] = dict
        # the REST API mounted at /api beside the page (no token: the embedded demo only)
        self.specs: dict[str, AgentSpec] = {}
        self.runtime_counters: dict[str, Callable[[], dict[str, float]]] = {}
        self.hub = LiveHub(history_s=settings.live.history_s, counters=lambda: self.counters())
        self.live_url: str | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._server: Any = None

    async def __aenter__(self) -> Outputs:
        self.sinks, self.store = build_sinks(self.settings)
        self._tasks = [
            asyncio.create_task(sink.run(self._stop), name=f"sink-{sink.name}")
            for sink in self.sinks
        ]
        if self.live:
            await self._start_live()
        return self

    async def _start_live(self) -> None:
        import uvicorn

        cfg = self.settings.live
        app = create_live_app(self.hub)
        if self.store is not None:
            api = create_api(
                store=DuckResults(self.store),
                specs=self.specs,
                token=None,
                counters=lambda: {a: f() for a, f in self.runtime_counters.items()},
            )
            app.mount("/api", api)
        config = uvicorn.Config(
            app,
            host=cfg.host,
            port=cfg.port,
            log_level="warning",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        task = asyncio.create_task(self._server.serve(), name="live-page")
        for _ in range(200):
            if self._server.started or task.done():
                break
            await asyncio.sleep(0.05)
        if task.done() or not self._server.started:
            self._server = None
            with contextlib.suppress(BaseException):
                await task
            raise TransportError(f"live page: cannot listen on {cfg.host}:{cfg.port}")
        self._tasks.append(task)
        self.live_url = f"http://{cfg.host}:{cfg.port}/"
        log.info("live page at %s", self.live_url)

    def wiring(self, spec: AgentSpec, grid: GridModel, stats: PipelineStats) -> Wiring:
        """Register an area for the page and the API (its counters are `stats`); what its
        pipeline is handed: the sinks, the page's listeners, the history to start from."""
        self.specs[spec.area] = spec
        self.counters = lambda: _counters(stats)
        self.runtime_counters[spec.area] = lambda: {k: float(v) for k, v in asdict(stats).items()}
        if not self.live:
            return Wiring(sinks=self.sinks, history=self.history())
        self.hub.add_area(spec.area, grid)
        return Wiring(
            sinks=self.sinks,
            listeners=[self.hub.publish],
            forecast_listeners=[self.hub.publish_forecast],
            flisr_listeners=[self.hub.publish_flisr],
            history=self.history(),
        )

    def store_rows(self, rows: list[Row]) -> None:
        """Write rows to the embedded store (a demo's --history-days)."""
        if self.store is None:
            raise DsotpError("--history-days fills the embedded store: run without InfluxDB")
        self.store.append(rows)

    def history(self) -> LoadHistory | None:
        """Where the pipelines' forecasters read their history at start: InfluxDB when it is
        configured, else the embedded store (None without either)."""
        if self.settings.influx.url:
            return InfluxResults(self.settings.influx)
        return self.store

    def sink_stats(self) -> dict[str, dict[str, Any]]:
        """Counters per sink."""
        return {sink.name: asdict(sink.stats) for sink in self.sinks}

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.should_exit = True
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.store is not None:
            self.store.close()


def _counters(p: PipelineStats) -> dict[str, Any]:
    """The counters the live page shows."""
    return {
        "frames": p.frames_valid,
        "dead letters": p.dead_letters,
        "estimates ok": p.estimates_ok,
        "failed": p.estimates_failed,
        "lag ms": round(p.lag_ms, 1),
        "estimate ms": round(p.estimate_ms, 2),
        "forecasts": p.forecasts,
        "set aside": p.forecasts_rejected,
        "FLISR cases": p.flisr_events,
    }
