"""Load and generation profiles (time x node) from SimBench or from a CSV/Parquet file.

`simbench:<code>` reads the yearly 15-minute profiles that the `simbench` package ships (2016,
real measured load and generation profiles scaled to the benchmark grid's elements), summed per
bus. SimBench stamps local time with daylight saving (repeated and missing stamps); the series is
read as a regular 15-minute grid from 2016-01-01 00:00 UTC. A file holds a `time` column and one
column per node.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from dsotp_streams.core.grid import FloatArray
from dsotp_streams.errors import DsotpError

__all__ = ["Profiles", "load_profiles", "profiles_from_slots"]


@dataclass(frozen=True)
class Profiles:
    """Regular series: values (steps x nodes), node names, start and step."""

    values: FloatArray
    nodes: list[str]
    start: datetime
    step_s: float

    @property
    def steps_per_day(self) -> int:
        """Steps in a day."""
        return round(86400 / self.step_s)


def load_profiles(
    source: str, *, nodes: int | None = None, kind: str = "load", cache_dir: Path | None = None
) -> Profiles:
    """Profiles from `simbench:<grid code>`, `store:<duckdb file>:<area>` (the estimated bus
    loads the platform stored, at 15 min) or a .csv/.parquet file.

    With a `cache_dir`, SimBench profiles are kept there once built (an .npz per grid code,
    kind and simbench version): building them from the package's tables takes 2-5 s here,
    reading the cache a few milliseconds, and the demo's first estimate waits for them."""
    if source.startswith("simbench:"):
        code = source.split(":", 1)[1]
        profiles = _cached(code, kind, cache_dir) if cache_dir else _simbench(code, kind)
    elif source.startswith("store:"):
        path, _sep, area = source.split(":", 1)[1].rpartition(":")
        profiles = _store(Path(path), area)
    else:
        profiles = _file(Path(source))
    if nodes is not None:
        profiles = Profiles(
            profiles.values[:, :nodes], profiles.nodes[:nodes], profiles.start, profiles.step_s
        )
    return profiles


def _cached(code: str, kind: str, cache_dir: Path) -> Profiles:
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("simbench")
    except PackageNotFoundError as exc:
        raise DsotpError("the simbench package is not installed") from exc
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in code)
    path = cache_dir / f"simbench-{safe}-{kind}-{release}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as data:
                return Profiles(
                    np.asarray(data["values"], dtype=float),
                    [str(n) for n in data["nodes"]],
                    datetime.fromtimestamp(float(data["start_s"]), tz=UTC),
                    float(data["step_s"]),
                )
        except (OSError, ValueError, KeyError):  # a damaged cache is built again
            path.unlink(missing_ok=True)
    profiles = _simbench(code, kind)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial.npz")
        np.savez(
            partial,
            values=profiles.values,
            nodes=np.asarray(profiles.nodes, dtype=str),
            start_s=profiles.start.timestamp(),
            step_s=profiles.step_s,
        )
        partial.replace(path)  # whole or not at all
    except OSError:  # a read-only place: the profiles serve uncached
        pass
    return profiles


def _simbench(code: str, kind: str) -> Profiles:
    try:
        import simbench as sb
    except ImportError as exc:
        raise DsotpError("the simbench package is not installed") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net = sb.get_simbench_net(code)
            absolute = sb.get_absolute_values(net, profiles_instead_of_study_cases=True)
    except Exception as exc:  # simbench raises bare exceptions for unknown codes
        raise DsotpError(f"cannot read SimBench grid {code!r}: {exc}") from exc
    table = "sgen" if kind == "sgen" else "load"
    frame = absolute[(table, "p_mw")]
    buses = net[table].bus.reindex(frame.columns)
    per_bus = frame.T.groupby(buses.to_numpy()).sum().T
    names = [str(net.bus.at[b, "name"]) for b in per_bus.columns]
    return Profiles(per_bus.to_numpy(float), names, datetime(2016, 1, 1, tzinfo=UTC), 900.0)


def _store(path: Path, area: str, step_s: float = 900.0) -> Profiles:
    """Estimated bus loads from the embedded store, averaged per 15 minutes."""
    from dsotp_streams.adapters.store import DuckStore

    if not path.exists():
        raise DsotpError(f"no store {path}")
    store = DuckStore(path, read_only=True)
    try:
        rows = store.bus_loads(area, since_ns=0, step_s=step_s)
    finally:
        store.close()
    if not rows:
        raise DsotpError(f"the store holds no estimates of area {area!r}")
    return profiles_from_slots(rows, step_s)


def profiles_from_slots(rows: Sequence[Mapping[str, Any]], step_s: float) -> Profiles:
    """A regular series from rows `{"slot", "bus", "p_mw"}` (slot = epoch seconds // step_s), as
    the stores' `bus_loads` give them; gaps carry the last value forward (0 before the first)."""
    if not rows:
        raise DsotpError("no load rows to build a history from")
    buses = sorted({str(r["bus"]) for r in rows})
    slots = sorted({int(r["slot"]) for r in rows})
    first = slots[0]
    values = np.full((slots[-1] - first + 1, len(buses)), np.nan)
    column = {b: j for j, b in enumerate(buses)}
    for r in rows:
        if r["p_mw"] is not None:
            values[int(r["slot"]) - first, column[str(r["bus"])]] = float(r["p_mw"])
    for j in range(values.shape[1]):  # gaps (process down) carry the last value forward
        col = values[:, j]
        for k in range(1, len(col)):
            if np.isnan(col[k]):
                col[k] = col[k - 1]
        col[np.isnan(col)] = 0.0
    start = datetime.fromtimestamp(first * step_s, tz=UTC)
    return Profiles(values, buses, start, step_s)


def _file(path: Path) -> Profiles:
    import pandas as pd

    if not path.exists():
        raise DsotpError(f"no profile file {path}")
    try:
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DsotpError(f"cannot read profiles {path}: {exc}") from exc
    if "time" not in frame:
        raise DsotpError(f"{path.name}: no 'time' column")
    times = pd.to_datetime(frame.pop("time"), utc=True)
    if len(times) < 2:
        raise DsotpError(f"{path.name}: fewer than two time steps")
    step = float((times.iloc[1] - times.iloc[0]).total_seconds())
    values = frame.to_numpy(float)
    if not np.all(np.isfinite(values)):
        raise DsotpError(f"{path.name}: NaN or infinite values")
    return Profiles(values, [str(c) for c in frame.columns], times.iloc[0].to_pydatetime(), step)
