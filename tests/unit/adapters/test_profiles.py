"""Profile sources: the store's estimated loads, files."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from dsotp_streams.adapters.profiles import load_profiles
from dsotp_streams.adapters.store import DuckStore
from dsotp_streams.contracts.messages import BusState, EstimateStatus, StateEstimate
from dsotp_streams.contracts.storage import rows_from_estimate
from dsotp_streams.errors import DsotpError


def test_store_source_averages_estimated_loads_per_quarter_hour(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    store = DuckStore(path)
    start = datetime(2026, 2, 1, tzinfo=UTC)
    rows = []
    for k in range(3 * 90):  # 3 quarter hours of estimates every 10 s
        ts = start + timedelta(seconds=10 * k)
        quarter = k // 90
        buses = [
            BusState(bus=b, vm_pu=1, va_deg=0, p_mw=(1 + quarter) * f, q_mvar=0)
            for b, f in (("Bus 1", 1.0), ("Bus 2", 2.0))
        ]
        rows += rows_from_estimate(
            StateEstimate(
                area="a", window_start=ts, status=EstimateStatus.OK, engine="wls", buses=buses
            )
        )
    store.append(rows)
    store.close()
    profiles = load_profiles(f"store:{path}:a")
    assert profiles.nodes == ["Bus 1", "Bus 2"] and profiles.step_s == 900
    np.testing.assert_allclose(profiles.values, [[1, 2], [2, 4], [3, 6]])
    assert profiles.start == start
    with pytest.raises(DsotpError, match="no estimates"):
        load_profiles(f"store:{path}:other")


def test_file_source_errors_name_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "p.csv"
    bad.write_text("when,a\n2026-01-01,1\n")
    with pytest.raises(DsotpError, match="no 'time' column"):
        load_profiles(str(bad))
    with pytest.raises(DsotpError, match="no profile file"):
        load_profiles(str(tmp_path / "missing.csv"))


def test_simbench_profiles_are_cached_once_built(tmp_path: Path) -> None:
    """The demo's profiles come from the cache after the first build: the same series, and a
    damaged cache file is built again instead of failing."""
    source = "simbench:1-MV-urban--0-sw"
    built = load_profiles(source, cache_dir=tmp_path)
    (cached_file,) = tmp_path.glob("simbench-1-MV-urban--0-sw-load-*.npz")
    cached = load_profiles(source, cache_dir=tmp_path)
    assert cached.nodes == built.nodes
    assert cached.start == built.start and cached.step_s == built.step_s
    np.testing.assert_array_equal(cached.values, built.values)
    assert cached.values.shape[0] == 366 * 96  # 2016, a leap year, at 15 min
    cached_file.write_bytes(b"not an npz")
    rebuilt = load_profiles(source, cache_dir=tmp_path)
    np.testing.assert_array_equal(rebuilt.values, built.values)
    with np.load(cached_file) as written_anew:
        assert written_anew["values"].shape == built.values.shape
    assert not list(tmp_path.glob("*.partial.npz"))
