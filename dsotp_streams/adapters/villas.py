"""VILLASnode JSON records (as DPsim writes them) into SOGNO frames.

A record is a JSON list of samples ``{"ts": {"origin": [s, ns]}, "sequence", "data": [...]}``; a
columns file names each value ``<node>.V.mag`` (volts) or ``<node>.V.phase`` (radians). Each
sample becomes one SOGNO frame per node, from device ``<prefix><node>`` (lower case), with the
node as component: a PMU per node, which an agent spec may use in part.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from dsotp_streams.contracts.frames import Measurand, PmuFrame, Reading, Rejected
from dsotp_streams.errors import FrameError

__all__ = ["VillasColumn", "read_columns", "villas_to_frames"]

_COLUMN = re.compile(r"^(?P<node>[A-Za-z0-9_\-]+)\.(?P<quantity>V|I)\.(?P<part>mag|phase)$")
_MEASURAND = {
    ("V", "mag"): Measurand.VOLTMAGNITUDE,
    ("V", "phase"): Measurand.VOLTANGLE,
    ("I", "mag"): Measurand.CURRMAGNITUDE,
    ("I", "phase"): Measurand.CURRANGLE,
}


@dataclass(frozen=True)
class VillasColumn:
    """What one value of a sample means."""

    node: str
    measurand: Measurand


def read_columns(path: Path) -> list[VillasColumn]:
    """Parse a columns file (one ``<node>.V.mag`` / ``<node>.V.phase`` name per line)."""
    columns = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        name = raw.strip()
        if not name or name.startswith("#"):
            continue
        match = _COLUMN.match(name)
        if match is None:
            raise FrameError(f"{path.name}:{number}: column {name!r} is not <node>.V|I.mag|phase")
        quantity, part = match["quantity"], match["part"]
        columns.append(VillasColumn(match["node"], _MEASURAND[(quantity, part)]))
    if not columns:
        raise FrameError(f"{path.name}: no columns")
    return columns


def villas_to_frames(
    lines: Iterable[str], columns: list[VillasColumn], *, device_prefix: str = "dpsim-"
) -> Iterator[PmuFrame | Rejected]:
    """Frames per node per sample, in record order; unusable samples as Rejected."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield Rejected(number, f"not JSON: {exc.msg} at column {exc.colno}")
            continue
        samples = record if isinstance(record, list) else [record]
        for sample in samples:
            try:
                yield from _sample_frames(sample, columns, device_prefix)
            except FrameError as exc:
                yield Rejected(number, str(exc))


def _sample_frames(sample: object, columns: list[VillasColumn], prefix: str) -> list[PmuFrame]:
    if not isinstance(sample, dict):
        raise FrameError("sample is not a JSON object")
    data = sample.get("data")
    origin = (sample.get("ts") or {}).get("origin")
    if not isinstance(data, list) or len(data) != len(columns):
        got = len(data) if isinstance(data, list) else "no"
        raise FrameError(f"sample has {got} values, the columns file names {len(columns)}")
    if not (isinstance(origin, list) and len(origin) == 2):
        raise FrameError("sample has no ts.origin [seconds, nanoseconds]")
    values = [float(x) for x in data]
    if not all(math.isfinite(x) for x in values):
        raise FrameError("sample holds NaN or infinite values")
    if all(x == 0.0 for x in values):
        raise FrameError("all values are zero (simulator start-up sample)")
    seconds, nanoseconds = int(origin[0]), int(origin[1])
    timestamp = datetime.fromtimestamp(seconds, tz=UTC).replace(microsecond=nanoseconds // 1000)
    readings: dict[str, list[Reading]] = {}
    for column, value in zip(columns, values, strict=True):
        readings.setdefault(column.node, []).append(
            Reading(component=column.node, measurand=column.measurand, data=value)
        )
    return [
        PmuFrame(device=f"{prefix}{node.lower()}", timestamp=timestamp, readings=node_readings)
        for node, node_readings in readings.items()
    ]
