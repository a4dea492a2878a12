"""Recordings of the databus and the frame formats a replay reads.

A recording is JSON Lines, one message per line: `{"topic", "received_at", "payload"}` (the
payload as the text that arrived), or Parquet with the same columns. Readers yield PmuFrames
in file order from: recordings (.jsonl with `payload`, .parquet), SOGNO JSON Lines (one frame per
line), VILLASnode JSON (with a columns file), and CSV of readings (`timestamp, device, component,
measurand, phase, data`). Lines that are not valid frames come back as `Rejected` with the reason.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from dsotp_streams.adapters.villas import read_columns, villas_to_frames
from dsotp_streams.contracts.frames import PmuFrame, Reading, Rejected, parse_frame
from dsotp_streams.errors import DsotpError, FrameError

__all__ = ["RecordingWriter", "Rejected", "read_frames", "read_recording"]


class RecordingWriter:
    """Appends messages with their receive time, as JSON Lines or (at close) Parquet."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._parquet = path.suffix == ".parquet"
        self._rows: list[dict[str, Any]] = []
        self._file: IO[str] | None = None if self._parquet else path.open("w", encoding="utf-8")

    def write(self, topic: str, payload: bytes | str, received_at: datetime) -> None:
        """One message."""
        text = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else payload
        row = {"topic": topic, "received_at": received_at.isoformat(), "payload": text}
        self.count += 1
        if self._file is not None:
            self._file.write(json.dumps(row) + "\n")
        else:
            self._rows.append(row)

    def close(self) -> None:
        """Flush (Parquet is written here)."""
        if self._file is not None:
            self._file.close()
        elif self._parquet:
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.Table.from_pylist(self._rows), self.path)


def read_recording(path: Path) -> Iterator[tuple[datetime, str, str]]:
    """(received_at, topic, payload) of every recorded message, in order."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for row in pq.read_table(path).to_pylist():
            yield datetime.fromisoformat(row["received_at"]), row["topic"], row["payload"]
        return
    with path.open(encoding="utf-8") as handle:
        for raw in handle:
            if raw.strip():
                row = json.loads(raw)
                yield datetime.fromisoformat(row["received_at"]), row["topic"], row["payload"]


def read_frames(path: Path, *, columns: Path | None = None) -> Iterator[PmuFrame | Rejected]:
    """Frames from any supported format, in file order."""
    if not path.exists():
        raise DsotpError(f"no recording {path}")
    if columns is not None:
        lines = path.read_text(encoding="utf-8").splitlines()
        yield from villas_to_frames(lines, read_columns(columns))
        return
    if path.suffix == ".parquet":
        for k, (_at, _topic, payload) in enumerate(read_recording(path), start=1):
            yield _parse(k, payload)
        return
    if path.suffix == ".csv":
        yield from _csv_frames(path)
        return
    with path.open(encoding="utf-8") as handle:
        for k, raw in enumerate(handle, start=1):
            text = raw.strip()
            if not text:
                continue
            if text.startswith('{"topic"'):
                try:
                    text = json.loads(text)["payload"]
                except (ValueError, KeyError) as exc:
                    yield Rejected(k, f"not a recording line: {exc}")
                    continue
            elif text.startswith("["):
                raise DsotpError(
                    f"{path.name} looks like VILLASnode JSON: give its columns file (--columns)"
                )
            yield _parse(k, text)


def _parse(line: int, text: str) -> PmuFrame | Rejected:
    try:
        return parse_frame(text)
    except FrameError as exc:
        return Rejected(line, str(exc))


def _csv_frames(path: Path) -> Iterator[PmuFrame | Rejected]:
    """Rows of readings grouped into frames by (device, timestamp), in order of appearance."""
    current: tuple[str, str] | None = None
    readings: list[Reading] = []
    first_line = 0
    with path.open(encoding="utf-8", newline="") as handle:
        rows = csv.DictReader(handle)
        required = {"timestamp", "device", "component", "measurand", "data"}
        if rows.fieldnames is None or not required <= set(rows.fieldnames):
            raise DsotpError(f"{path.name}: needs the columns {sorted(required)}")
        for k, row in enumerate(rows, start=2):
            key = (row["device"], row["timestamp"])
            if current is not None and key != current:
                yield _frame(first_line, current, readings)
                readings = []
            if not readings:
                first_line = k
            current = key
            try:
                readings.append(
                    Reading.model_validate(
                        {
                            "component": row["component"],
                            "measurand": row["measurand"],
                            "phase": row.get("phase") or "A",
                            "data": row["data"],
                        }
                    )
                )
            except ValueError as exc:
                yield Rejected(
                    k,
                    f"invalid reading: {exc.errors()[0]['msg'] if hasattr(exc, 'errors') else exc}",
                )
    if current is not None and readings:
        yield _frame(first_line, current, readings)


def _frame(line: int, key: tuple[str, str], readings: list[Reading]) -> PmuFrame | Rejected:
    device, timestamp = key
    try:
        return PmuFrame.model_validate(
            {"device": device, "timestamp": timestamp, "readings": readings}
        )
    except ValueError as exc:
        return Rejected(line, f"invalid frame: {exc}")
