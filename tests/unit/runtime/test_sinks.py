"""A sink in front of the embedded DuckDB store (a real backend, in-process): rows are written in
batches, a buffer past its bound spills to disk and the spill is written back, nothing is lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

from dsotp_streams.adapters.store import DuckBackend, DuckStore
from dsotp_streams.contracts.storage import Row
from dsotp_streams.runtime.sinks import RowSink


def rows(n: int, *, start: int = 0) -> list[Row]:
    return [
        Row(
            "pmu",
            {"area": "a", "device": "d", "component": "Bus 1", "measurand": "v", "phase": "A"},
            {"value": float(k)},
            1_700_000_000_000_000_000 + k,
        )
        for k in range(start, start + n)
    ]


async def drive(sink: RowSink, batches: list[list[Row]]) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    for batch in batches:
        sink.submit(batch)
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    stop.set()
    await task


def test_rows_are_written_in_batches_of_at_most_the_batch_size() -> None:
    store = DuckStore(":memory:")
    sink = RowSink(
        "duckdb",
        backend=DuckBackend(store),
        batch_size=100,
        flush_interval_s=0.05,
        max_buffer_rows=10_000,
        spill_dir=None,
    )
    asyncio.run(drive(sink, [rows(70, start=70 * k) for k in range(10)]))
    assert store.count("pmu") == 700
    assert sink.stats.written == 700 and sink.stats.batches >= 7  # never more than 100 at once
    values = [r["value"] for r in store.query('SELECT value FROM "pmu" ORDER BY ts_ns')]
    assert values == [float(k) for k in range(700)]


def test_a_buffer_past_its_bound_spills_to_disk_and_loses_nothing(tmp_path: Path) -> None:
    store = DuckStore(":memory:")
    spill = tmp_path / "spill"
    sink = RowSink(
        "duckdb",
        backend=DuckBackend(store),
        batch_size=50,
        flush_interval_s=0.05,
        max_buffer_rows=200,
        spill_dir=spill,
    )
    sink.submit(rows(1000))  # before the writer runs: 800 and more rows go to disk
    assert sink.stats.spilled >= 800 and list(spill.glob("*.jsonl"))
    assert len(sink._buffer) <= 200
    asyncio.run(drive(sink, [rows(100, start=1000)]))
    assert store.count("pmu") == 1100
    assert sink.stats.unspilled == sink.stats.spilled and not list(spill.glob("*.jsonl"))
    stored = {r["ts_ns"] for r in store.query('SELECT ts_ns FROM "pmu"')}
    assert len(stored) == 1100  # each row once
