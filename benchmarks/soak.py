"""Soak: the demo load (CIGRE MV, 10 PMUs at 50 frames/s) through Mosquitto into the embedded
runtime for a long run; memory, latency and lost windows per interval.

Run: .venv/bin/python benchmarks/soak.py [--minutes 10] [--rate 50] [--pmus 10] [--interval 30]

The emulated PMUs run in a process of their own (`dsotp emulate`), the area pipeline (align,
estimate, FLISR, publish, the embedded store) in this one. Every interval prints this process's
resident memory, the CPU this process used (share of one core), the estimates of the interval
and their latency percentiles (estimate published minus window start), skipped and incomplete
windows, frames late (dead-lettered) and the longest garbage-collector pause; at the end: windows
missing from the sequence of window starts (lost), and the memory growth after the first
interval (warm-up). `--pmus 20` adds PMUs with the same channels under other names.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from _soak import free_port, intervals, log_run, missing_windows, percentiles

from dsotp_streams.adapters.grids import load_grid
from dsotp_streams.adapters.mqtt import MqttEndpoint
from dsotp_streams.contracts.agent import load_agent_spec
from dsotp_streams.contracts.messages import StateEstimate
from dsotp_streams.runtime.embedded import AreaPipeline
from dsotp_streams.runtime.sinks import build_sinks
from dsotp_streams.settings import MqttSettings, Settings, StoreSettings

log = logging.getLogger("benchmarks.soak")
REPO = Path(__file__).resolve().parents[1]


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def soak(args: argparse.Namespace, folder: Path) -> None:
    port = free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 100000\nmax_inflight_messages 0\n"
    )
    broker = await asyncio.create_subprocess_exec(
        shutil.which("mosquitto") or "/usr/sbin/mosquitto",
        "-c",
        str(conf),
        stderr=asyncio.subprocess.DEVNULL,
    )
    await asyncio.sleep(0.3)
    spec = load_agent_spec(REPO / "agents" / "cigre-mv.yaml")
    devices = list(spec.devices)
    while len(devices) < args.pmus:  # more PMUs: the same channels again, under other names
        base = spec.devices[len(devices) % len(spec.devices)]
        devices.append(base.model_copy(update={"id": f"{base.id}-{len(devices)}"}))
    spec = spec.model_copy(
        update={
            "devices": devices[: args.pmus],
            "window": spec.window.model_copy(update={"rate_hz": args.rate}),
        }
    )
    agent = folder / "soak-agent.yaml"
    agent.write_text(yaml.safe_dump(spec.model_dump(mode="json")), encoding="utf-8")
    grid = load_grid(spec.grid)
    settings = Settings(
        mqtt=MqttSettings(port=port, client_id_prefix="soak"),
        store=StoreSettings(
            path=folder / "soak.duckdb",
            enabled=not args.no_store,
            memory_limit=args.store_memory_limit or StoreSettings().memory_limit,
        ),
    )
    sinks, store = build_sinks(settings)
    lags: list[float] = []
    starts: list[datetime] = []

    def listen(estimate: StateEstimate) -> None:
        now = datetime.now(tz=UTC)
        lags.append((now - estimate.window_start) / timedelta(milliseconds=1))
        starts.append(estimate.window_start)

    pipeline = AreaPipeline(
        spec=spec,
        grid=grid,
        settings=settings,
        endpoint=MqttEndpoint("127.0.0.1", port),
        sinks=sinks,
        listeners=[listen],
    )
    stop = asyncio.Event()
    sink_tasks = [asyncio.create_task(s.run(stop)) for s in sinks]
    running = asyncio.create_task(pipeline.run(stop))
    await pipeline.ready.wait()
    emulator = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "dsotp_streams",
        "emulate",
        "--agent",
        str(agent),
        "--mqtt-url",
        f"mqtt://127.0.0.1:{port}",
        "--rate",
        str(args.rate),
        "--duration",
        str(args.minutes * 60),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    log.info(
        "%5s %9s %8s %6s %9s %8s %8s %8s %8s %10s %6s %7s",
        "t_s",
        "rss_MiB",
        "duck_MiB",
        "cpu_%",
        "estimates",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "skipped",
        "incomplete",
        "late",
        "gc_ms",
    )
    memory: list[float] = []
    pauses = _GcPauses()
    cpu_before, wall_before = time.process_time(), time.monotonic()
    async for elapsed_s, window in intervals(
        lags, args.interval, lambda: emulator.returncode is None
    ):
        memory.append(rss_mib())
        duck_mib = store.memory_bytes() / 2**20 if store is not None else 0.0
        p50, p95, p99 = percentiles(window)
        cpu_now, wall_now = time.process_time(), time.monotonic()
        share = (cpu_now - cpu_before) / (wall_now - wall_before)
        cpu_before, wall_before = cpu_now, wall_now
        log.info(
            "%5.0f %9.1f %8.1f %6.1f %9d %8.1f %8.1f %8.1f %8d %10d %6d %7.1f",
            elapsed_s,
            memory[-1],
            duck_mib,
            100 * share,
            len(window),
            p50,
            p95,
            p99,
            pipeline.stats.windows_skipped,
            pipeline.stats.windows_incomplete,
            pipeline.stats.late,
            pauses.take_max_ms(),
        )
    pauses.close()
    out = await emulator.stdout.read() if emulator.stdout else b""
    emulated = out.decode().strip()
    await asyncio.sleep(2.0)
    stop.set()
    await running
    await asyncio.gather(*sink_tasks)
    broker.send_signal(signal.SIGTERM)
    await broker.wait()
    missing = missing_windows(starts, args.rate)
    log.info("emulator: %s", emulated)
    log.info(
        "estimates %d (ok %d, failed/skipped %d), windows missing in the sequence %d, "
        "dead letters %d, late %d",
        len(lags),
        pipeline.stats.estimates_ok,
        pipeline.stats.estimates_failed,
        missing,
        pipeline.stats.dead_letters,
        pipeline.stats.late,
    )
    log_run(log, lags, memory, "memory")
    p99 = percentiles(lags)[2]
    log.info(
        "bars (p99 <= 100 ms, 0 skipped, 0 late, 0 missing): p99 %.1f ms %s, skipped %d, "
        "late %d, missing %d: %s",
        p99,
        "met" if p99 <= 100 else f"missed by {p99 - 100:.1f} ms",
        pipeline.stats.windows_skipped,
        pipeline.stats.late,
        missing,
        "all met"
        if p99 <= 100 and not (pipeline.stats.windows_skipped or pipeline.stats.late or missing)
        else "NOT all met",
    )
    if store is not None:
        store.close()


class _GcPauses:
    """The longest garbage-collector pause since the last look (gc.callbacks)."""

    def __init__(self) -> None:
        self._started = 0.0
        self._max_s = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self._max_s = max(self._max_s, time.perf_counter() - self._started)

    def take_max_ms(self) -> float:
        longest, self._max_s = self._max_s, 0.0
        return longest * 1e3

    def close(self) -> None:
        gc.callbacks.remove(self._on_gc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=50.0, help="frames/s per PMU")
    parser.add_argument("--pmus", type=int, default=10, help="PMUs (the demo has 10)")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds per line")
    parser.add_argument(
        "--store-memory-limit", help="DuckDB's memory limit (default: the store setting's)"
    )
    parser.add_argument(
        "--no-store", action="store_true", help="without the embedded store (memory attribution)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("dsotp_streams").setLevel(logging.ERROR)
    folder = Path(tempfile.mkdtemp(prefix="dsotp-soak-"))
    try:
        asyncio.run(soak(args, folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
