"""Batched, asynchronous sinks: a bounded buffer that never blocks the stream and never drops.

Rows are submitted without waiting; a task writes them in batches (size or time). When the
backend fails (database down) the batch is retried with exponential backoff; while it stays down
the buffer fills up to its bound and then spills its oldest rows to disk (JSON Lines files), which
are written back once the backend accepts data again. At stop, what cannot be written is spilled,
and a restarted sink catches up on spill files found in its directory.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dsotp_streams.adapters.influx import make_writer
from dsotp_streams.adapters.store import DuckBackend, DuckStore
from dsotp_streams.contracts.storage import Row
from dsotp_streams.errors import DsotpError, TransportError
from dsotp_streams.runtime.backoff import Backoff
from dsotp_streams.settings import Settings

__all__ = ["RowSink", "SinkBackend", "SinkStats", "build_sinks"]

log = logging.getLogger(__name__)


class SinkBackend(Protocol):
    """Something that stores a batch of rows, or raises TransportError (retry) / DsotpError."""

    async def write(self, rows: list[Row]) -> None: ...

    async def close(self) -> None: ...


@dataclass
class SinkStats:
    """Counters of a sink."""

    submitted: int = 0
    written: int = 0
    retried: int = 0
    spilled: int = 0
    unspilled: int = 0
    rejected: int = 0
    batches: int = 0
    buffered: int = 0
    spill_files: int = 0
    healthy: bool = True


class RowSink:
    """A backend behind a bounded buffer with batching, retry and spill to disk."""

    def __init__(
        self,
        name: str,
        *,
        backend: SinkBackend,
        batch_size: int,
        flush_interval_s: float,
        max_buffer_rows: int,
        spill_dir: Path | None,
        retry_max_s: float = 10.0,
        store_frames: bool = True,
    ) -> None:
        self.name = name
        self.store_frames = store_frames
        self.backend = backend
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_buffer_rows = max_buffer_rows
        self.spill_dir = spill_dir
        self.retry_max_s = retry_max_s
        self.stats = SinkStats()
        self._buffer: deque[Row] = deque()
        self._wake = asyncio.Event()
        self._seq = itertools.count()
        if spill_dir is not None:
            spill_dir.mkdir(parents=True, exist_ok=True)
            self.stats.spill_files = len(self._spill_files())

    def submit(self, rows: Iterable[Row]) -> None:
        """Queue rows; never blocks. Past the bound, the oldest rows go to disk."""
        before = len(self._buffer)
        self._buffer.extend(rows)
        self.stats.submitted += len(self._buffer) - before
        if len(self._buffer) > self.max_buffer_rows:
            self._spill(len(self._buffer) - self.max_buffer_rows + self.batch_size)
        self.stats.buffered = len(self._buffer)
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Write until stopped; then write or spill what is left."""
        backoff = Backoff(self.retry_max_s)
        while not stop.is_set():
            if not self._buffer and not self.stats.spill_files:
                self._wake.clear()
                wait = asyncio.create_task(self._wake.wait())
                stopping = asyncio.create_task(stop.wait())
                await asyncio.wait(
                    {wait, stopping},
                    timeout=self.flush_interval_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                wait.cancel()
                stopping.cancel()
                continue
            if len(self._buffer) < self.batch_size and not self.stats.spill_files:
                await asyncio.sleep(self.flush_interval_s / 4)
            ok = await self._write_next()
            if ok:
                backoff.reset()
            else:
                await backoff.sleep(stop)
        await self._drain()

    async def _write_next(self) -> bool:
        """One batch: the buffer first (fresh data), then a spill file (catch-up)."""
        if self._buffer:
            batch = [self._buffer.popleft() for _ in range(min(self.batch_size, len(self._buffer)))]
            ok = await self._write(batch)
            if not ok:
                self._buffer.extendleft(reversed(batch))
            self.stats.buffered = len(self._buffer)
            return ok
        files = self._spill_files()
        if not files:
            self.stats.spill_files = 0
            return True
        rows = _read_spill(files[0])
        if await self._write(rows):
            files[0].unlink()
            self.stats.unspilled += len(rows)
            self.stats.spill_files = len(files) - 1
            return True
        return False

    async def _write(self, batch: list[Row]) -> bool:
        try:
            await self.backend.write(batch)
        except TransportError as exc:
            self.stats.retried += 1
            if self.stats.healthy:
                log.warning("%s: %s; buffering and retrying", self.name, exc)
            self.stats.healthy = False
            return False
        except DsotpError as exc:
            self.stats.rejected += len(batch)
            log.error("%s: %d rows rejected: %s", self.name, len(batch), exc)
            return True  # a refused batch is counted, never retried forever
        if not self.stats.healthy:
            log.warning("%s: writing again", self.name)
        self.stats.healthy = True
        self.stats.written += len(batch)
        self.stats.batches += 1
        return True

    async def _drain(self, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self._buffer and time.monotonic() < deadline:
            if not await self._write_next():
                break
        if self._buffer:
            self._spill(len(self._buffer))
        self.stats.buffered = 0
        await self.backend.close()

    def _spill(self, count: int) -> None:
        if self.spill_dir is None:
            raise DsotpError(f"{self.name}: buffer full and no spill directory")
        rows = [self._buffer.popleft() for _ in range(min(count, len(self._buffer)))]
        path = self.spill_dir / f"spill-{time.time_ns():020d}-{next(self._seq):06d}.jsonl"
        with path.open("w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps([row.measurement, row.tags, row.fields, row.ts_ns]) + "\n")
        self.stats.spilled += len(rows)
        self.stats.spill_files += 1
        log.warning("%s: spilled %d rows to %s", self.name, len(rows), path.name)

    def _spill_files(self) -> list[Path]:
        return sorted(self.spill_dir.glob("spill-*.jsonl")) if self.spill_dir else []


def _read_spill(path: Path) -> list[Row]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        measurement, tags, fields, ts = json.loads(line)
        rows.append(Row(measurement, tags, fields, ts))
    return rows


def build_sinks(settings: Settings) -> tuple[list[RowSink], DuckStore | None]:
    """The sinks the settings ask for: InfluxDB when configured; the embedded DuckDB store when
    no InfluxDB is (or when enabled explicitly), returned too for queries."""
    sinks: list[RowSink] = []
    store: DuckStore | None = None
    influx = settings.influx
    if influx.url:
        sinks.append(
            RowSink(
                f"influx-{influx.api}",
                backend=make_writer(influx),
                batch_size=influx.batch_size,
                flush_interval_s=influx.flush_interval_s,
                max_buffer_rows=influx.max_buffer_rows,
                spill_dir=influx.spill_dir,
                retry_max_s=influx.retry_max_s,
                store_frames=influx.store_frames,
            )
        )
    if settings.store.enabled or (settings.store.enabled is None and not influx.url):
        store = DuckStore(settings.store.path, memory_limit=settings.store.memory_limit)
        sinks.append(
            RowSink(
                "duckdb",
                backend=DuckBackend(store),
                batch_size=settings.store.batch_size,
                flush_interval_s=settings.store.flush_interval_s,
                max_buffer_rows=max(settings.store.batch_size * 20, 100_000),
                spill_dir=None,
                store_frames=settings.store.store_frames,
            )
        )
    return sinks, store
