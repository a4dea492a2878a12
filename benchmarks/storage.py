"""Sustained write rates of the sinks against the load they must carry.

Run: .venv/bin/python benchmarks/storage.py [--seconds 10]

The load: 50 PMUs at 50 frames/s, each frame a voltage phasor and two current phasors on three
phases (18 readings), i.e. 45,000 `pmu` rows/s, plus the estimates. Each sink (InfluxDB 1.6.7
over v1 `/write`, VictoriaMetrics over v2 with influxdb-client, embedded DuckDB) is fed as fast as
it takes rows through the same RowSink the runtime uses; the ratio to the load is printed.
Starts its own InfluxDB and VictoriaMetrics on loopback (Debian packages `influxdb`,
`victoria-metrics`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from dsotp_streams.adapters.influx import make_writer, to_lines  # noqa: E402
from dsotp_streams.adapters.store import DuckBackend, DuckStore  # noqa: E402
from dsotp_streams.contracts.storage import Row  # noqa: E402
from dsotp_streams.runtime.sinks import RowSink, SinkBackend  # noqa: E402
from dsotp_streams.settings import InfluxSettings  # noqa: E402
from tests.integration.databases import InfluxServer, VictoriaServer  # noqa: E402

log = logging.getLogger("benchmarks.storage")
LOAD_ROWS_S = 50 * 50 * 18
T0_NS = 1_790_000_000_000_000_000


def pmu_rows(count: int, offset: int) -> list[Row]:
    """Rows shaped like the load: 50 devices, 6 components/measurands, 3 phases."""
    out = []
    for k in range(offset, offset + count):
        frame, reading = divmod(k, 18)
        device = frame % 50
        measurand = ("voltmagnitude", "voltangle", "currmagnitude", "currangle")[reading % 4]
        out.append(
            Row(
                "pmu",
                {
                    "area": "bench",
                    "device": f"pmu-{device}",
                    "component": f"Bus {device}",
                    "measurand": measurand,
                    "phase": "ABC"[reading % 3],
                },
                {"value": 1000.0 + k % 997},
                T0_NS + (frame // 50) * 20_000_000 + reading,
            )
        )
    return out


async def sustained(name: str, backend: SinkBackend, seconds: float) -> float:
    """Rows/s a sink writes when fed faster than it can take."""
    sink = RowSink(
        name,
        backend=backend,
        batch_size=5000,
        flush_interval_s=0.05,
        max_buffer_rows=200_000,
        spill_dir=Path(tempfile.mkdtemp()),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    chunk, offset = pmu_rows(20_000, 0), 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        if sink.stats.buffered < 50_000:
            offset += len(chunk)
            sink.submit(pmu_rows(20_000, offset))
        await asyncio.sleep(0.01)
    written = sink.stats.written
    elapsed = time.perf_counter() - start
    stop.set()
    await task
    return written / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = pmu_rows(100_000, 0)
    start = time.perf_counter()
    to_lines(rows)
    encode = len(rows) / (time.perf_counter() - start)
    start = time.perf_counter()
    pmu_rows(100_000, 0)
    build = 100_000 / (time.perf_counter() - start)
    log.info("load to carry: %d pmu rows/s (50 PMUs x 50 frames/s x 18 readings)", LOAD_ROWS_S)
    log.info("building rows        : %9.0f rows/s  %5.1fx the load", build, build / LOAD_ROWS_S)
    log.info("line protocol encode : %9.0f rows/s  %5.1fx the load", encode, encode / LOAD_ROWS_S)
    folder = Path(tempfile.mkdtemp(prefix="dsotp-bench-db-"))
    influx, victoria = InfluxServer(folder / "influx"), VictoriaServer(folder / "victoria")
    influx.start()
    victoria.start()
    try:
        results = {
            "InfluxDB 1.6.7, v1 /write": asyncio.run(
                sustained("v1", make_writer(InfluxSettings(url=influx.url, api="v1")), args.seconds)
            ),
            "VictoriaMetrics, v2 client": asyncio.run(
                sustained(
                    "v2", make_writer(InfluxSettings(url=victoria.url, api="v2")), args.seconds
                )
            ),
            "DuckDB (embedded)": asyncio.run(
                sustained("duckdb", DuckBackend(DuckStore(folder / "bench.duckdb")), args.seconds)
            ),
        }
    finally:
        influx.stop()
        victoria.stop()
    for name, rate in results.items():
        log.info("%-27s: %9.0f rows/s  %5.1fx the load", name, rate, rate / LOAD_ROWS_S)


if __name__ == "__main__":
    main()
