"""What the soak benchmarks share: ports, percentiles, lost windows and the closing figures."""

from __future__ import annotations

import asyncio
import itertools
import logging
import shutil
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def mosquitto(folder: Path, *, options: str = "") -> AsyncIterator[int]:
    """A Mosquitto on a free loopback port (its port), stopped on exit; `options` are more lines
    of its configuration."""
    port = free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{options}"
    )
    broker = await asyncio.create_subprocess_exec(
        shutil.which("mosquitto") or "/usr/sbin/mosquitto",
        "-c",
        str(conf),
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await asyncio.sleep(0.3)
        yield port
    finally:
        broker.terminate()
        await broker.wait()


def percentiles(lags_ms: list[float]) -> tuple[float, float, float]:
    """p50, p95, p99 (NaN for an empty interval)."""
    if not lags_ms:
        return (float("nan"),) * 3
    p50, p95, p99 = np.percentile(lags_ms, [50, 95, 99])
    return float(p50), float(p95), float(p99)


def missing_windows(starts: list[datetime], rate_hz: float) -> int:
    """Windows absent from the sequence of window starts (lost or never emulated)."""
    period = timedelta(seconds=1 / rate_hz)
    ordered = sorted(set(starts))
    return sum(round((b - a) / period) - 1 for a, b in itertools.pairwise(ordered))


def log_run(log: logging.Logger, lags_ms: list[float], memory: list[float], what: str) -> None:
    """The latency over the whole run and the memory growth after the first interval."""
    all_lags = np.asarray(lags_ms)
    log.info(
        "latency over the run: p50 %.1f ms, p95 %.1f ms, p99 %.1f ms, max %.1f ms",
        *np.percentile(all_lags, [50, 95, 99]),
        all_lags.max(),
    )
    if len(memory) > 1:
        log.info(
            "%s: %.1f MiB after the first interval, %.1f MiB at the end (%+.1f MiB), peak %.1f MiB",
            what,
            memory[0],
            memory[-1],
            memory[-1] - memory[0],
            max(memory),
        )


async def intervals(
    lags_ms: list[float], interval_s: float, running: Callable[[], bool]
) -> AsyncIterator[tuple[float, list[float]]]:
    """Every `interval_s` while `running()`: seconds since the start and the latencies that came
    in during the interval (a line of the table each)."""
    seen, t0 = 0, time.monotonic()
    while running():
        await asyncio.sleep(interval_s)
        window, seen = lags_ms[seen:], len(lags_ms)
        yield time.monotonic() - t0, window
