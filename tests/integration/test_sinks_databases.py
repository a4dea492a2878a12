"""The InfluxDB sink against real databases: v1 on InfluxDB 1.6.7, v2 on VictoriaMetrics.

The database is killed mid-stream and started again: every point submitted arrives (counted in
the database), through retries, the bounded buffer and its spill files.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from dsotp_streams.adapters.influx import make_writer
from dsotp_streams.contracts.storage import Row
from dsotp_streams.runtime.sinks import RowSink
from dsotp_streams.settings import InfluxSettings
from tests.integration.databases import InfluxServer, VictoriaServer

pytestmark = pytest.mark.broker

T0_NS = 1_790_000_000_000_000_000


@pytest.fixture
def influx(tmp_path: Path) -> Iterator[InfluxServer]:
    server = InfluxServer(tmp_path / "influx")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaServer]:
    server = VictoriaServer(tmp_path / "victoria")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _rows(chunk: int, size: int) -> list[Row]:
    return [
        Row(
            "pmu",
            {
                "area": "t",
                "device": f"pmu-{k % 10}",
                "component": "Bus 1",
                "measurand": "voltmagnitude",
                "phase": "A",
            },
            {"value": float(chunk * size + k)},
            T0_NS + (chunk * size + k) * 1_000_000,
        )
        for k in range(size)
    ]


async def _stream_through_outage(
    sink: RowSink, kill: object, restart: object, *, chunks: int = 30, size: int = 400
) -> int:
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    for chunk in range(chunks):
        if chunk == 8:
            await asyncio.to_thread(kill)  # type: ignore[arg-type]
        if chunk == 20:
            await asyncio.to_thread(restart)  # type: ignore[arg-type]
        sink.submit(_rows(chunk, size))
        await asyncio.sleep(0.1)
    total = chunks * size
    for _ in range(300):  # catch up: buffer and spill files
        if sink.stats.written >= total and sink.stats.spill_files == 0:
            break
        await asyncio.sleep(0.1)
    stop.set()
    await task
    return total


def _sink(url: str, api: str, spill: Path) -> RowSink:
    settings = InfluxSettings(
        url=url,
        api=api,
        database="dsotp",
        bucket="dsotp",
        batch_size=500,
        flush_interval_s=0.1,
        max_buffer_rows=2000,
        spill_dir=spill,
        retry_max_s=0.5,
        timeout_s=2.0,
    )
    return RowSink(
        f"influx-{api}",
        backend=make_writer(settings),
        batch_size=500,
        flush_interval_s=0.1,
        max_buffer_rows=2000,
        spill_dir=spill,
        retry_max_s=0.5,
    )


def test_v1_sink_loses_nothing_when_influxdb_crashes(influx: InfluxServer, tmp_path: Path) -> None:
    sink = _sink(influx.url, "v1", tmp_path / "spill")
    total = asyncio.run(_stream_through_outage(sink, influx.kill, influx.start))
    assert sink.stats.retried > 0 and sink.stats.spilled > 0  # the outage was real
    assert sink.stats.written == total and sink.stats.rejected == 0
    assert influx.count("pmu", "value") == total
    assert not list((tmp_path / "spill").iterdir())


def test_v2_sink_loses_nothing_when_victoriametrics_goes_down(
    victoria: VictoriaServer, tmp_path: Path
) -> None:
    # VictoriaMetrics acknowledges writes before its in-memory part reaches disk (flushed every
    # few seconds), so a SIGKILL loses acknowledged points that no client can save; a stop
    # (SIGTERM) flushes. InfluxDB (WAL) survives SIGKILL: see the v1 test above.
    sink = _sink(victoria.url, "v2", tmp_path / "spill")
    total = asyncio.run(_stream_through_outage(sink, victoria.stop, victoria.start))
    assert sink.stats.retried > 0 and sink.stats.spilled > 0
    assert sink.stats.written == total
    assert victoria.count("pmu_value") == total


def test_spill_files_left_at_stop_are_written_by_the_next_sink(
    influx: InfluxServer, tmp_path: Path
) -> None:
    spill = tmp_path / "spill"
    first = _sink(influx.url, "v1", spill)
    influx.kill()

    async def down() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(first.run(stop))
        first.submit(_rows(0, 1500))
        await asyncio.sleep(0.5)
        stop.set()
        await task

    asyncio.run(down())
    assert first.stats.written == 0 and first.stats.spilled == 1500
    influx.start()
    second = _sink(influx.url, "v1", spill)
    assert second.stats.spill_files >= 1

    async def up() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(second.run(stop))
        for _ in range(100):
            if second.stats.spill_files == 0:
                break
            await asyncio.sleep(0.1)
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(up())
    assert influx.count("pmu", "value") == 1500
