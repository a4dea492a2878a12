"""Backpressure: latency and skipped windows with an estimator slower than the windows arrive.

The pandapower reference engine (about 80 ms a CIGRE MV window) at 50 windows/s, through
Mosquitto into the embedded runtime with a window queue of 4, emulator in the same process (as
in tests/integration/test_backpressure.py). Two policies run one after the other in this
process: the window queue alone (`max_window_age_s = 0`, the baseline) and the queue plus the
age limit (the default, 2 s). Printed per policy: latency of the estimated windows (window start
to published estimate), windows skipped by reason, frames dead-lettered as late, the time a stop
took; then the ratios of the age-limited run to the baseline.

    .venv/bin/python benchmarks/backpressure.py [--seconds 20] [--max-age 2.0]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _soak import mosquitto, percentiles

from dsotp_streams.adapters.grids import load_grid
from dsotp_streams.adapters.mqtt import MqttEndpoint
from dsotp_streams.contracts.agent import load_agent_spec
from dsotp_streams.contracts.messages import EstimateStatus, StateEstimate
from dsotp_streams.runtime.embedded import AreaPipeline, Emulator
from dsotp_streams.settings import MqttSettings, RuntimeSettings, Settings

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("backpressure")


@dataclass
class Outcome:
    lags_ms: list[float]
    statuses: Counter[str]
    reasons: Counter[str]
    late: int
    frames: int
    stop_s: float


async def _one(endpoint: MqttEndpoint, *, seconds: float, max_age_s: float) -> Outcome:
    spec = load_agent_spec(REPO / "agents" / "cigre-mv.yaml")
    spec = spec.model_copy(
        update={
            "estimator": spec.estimator.model_copy(update={"engine": "pandapower"}),
            "window": spec.window.model_copy(update={"rate_hz": 50.0}),
            "emulator": spec.emulator.model_copy(update={"profiles": None}),
        }
    )
    grid = load_grid(spec.grid)
    run = f"bp{time.time_ns()}"
    settings = Settings(
        mqtt=MqttSettings(
            host=endpoint.host, port=endpoint.port, client_id_prefix=run, topic_prefix=run
        ),
        runtime=RuntimeSettings(window_queue_size=4, max_window_age_s=max_age_s),
    )
    published: list[tuple[float, StateEstimate]] = []
    pipeline = AreaPipeline(
        spec=spec,
        grid=grid,
        settings=settings,
        endpoint=endpoint,
        listeners=[lambda e: published.append((time.time(), e))],
    )
    emulator = Emulator(spec=spec, grid=grid, settings=settings, endpoint=endpoint)
    stop_pipeline, stop_emulator = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop_pipeline))
    await asyncio.wait_for(pipeline.ready.wait(), timeout=30)
    emulating = asyncio.create_task(emulator.run(stop_emulator))
    await asyncio.sleep(seconds)
    stop_emulator.set()
    stop_pipeline.set()  # while behind: the stop's bound is measured too
    started = time.monotonic()
    await task
    stop_s = time.monotonic() - started
    await emulating
    ok = [(t, e) for t, e in published if e.status is EstimateStatus.OK]
    return Outcome(
        lags_ms=[(t - e.window_start.timestamp()) * 1000 for t, e in ok],
        statuses=Counter(e.status.value for _t, e in published),
        reasons=Counter(
            str(e.reason).split(" (")[0].split(" ago")[0].rstrip("0123456789. s")
            for _t, e in published
            if e.status is EstimateStatus.SKIPPED
        ),
        late=pipeline.stats.late,
        frames=pipeline.stats.messages_in,
        stop_s=stop_s,
    )


def _report(name: str, out: Outcome) -> tuple[float, float, float]:
    p50, p95, p99 = percentiles(out.lags_ms)
    total = sum(out.statuses.values())
    log.info("%s:", name)
    log.info(
        "  estimated %d of %d windows; latency p50 %.0f ms, p95 %.0f ms, p99 %.0f ms, max %.0f ms",
        out.statuses["ok"],
        total,
        p50,
        p95,
        p99,
        max(out.lags_ms, default=float("nan")),
    )
    for reason, count in out.reasons.most_common():
        log.info("  skipped %4d  %s", count, reason)
    log.info(
        "  frames late %d of %d (%.1f %%); stop returned in %.2f s",
        out.late,
        out.frames,
        100 * out.late / max(out.frames, 1),
        out.stop_s,
    )
    return p50, p95, p99


async def main_async(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="dsotp-bp-"))
    try:
        async with mosquitto(folder) as port:
            endpoint = MqttEndpoint("127.0.0.1", port)
            baseline = await _one(endpoint, seconds=args.seconds, max_age_s=0.0)
            limited = await _one(endpoint, seconds=args.seconds, max_age_s=args.max_age)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    base = _report("window queue alone (max_window_age_s = 0)", baseline)
    new = _report(f"window queue and age limit (max_window_age_s = {args.max_age:g})", limited)
    ratios = np.asarray(new) / np.asarray(base)
    log.info(
        "age limit / queue alone: latency p50 %.2fx, p95 %.2fx, p99 %.2fx; estimated %.2fx",
        *ratios,
        limited.statuses["ok"] / max(baseline.statuses["ok"], 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="of streaming per policy")
    parser.add_argument("--max-age", type=float, default=RuntimeSettings().max_window_age_s)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
