"""Our WLS engine against pandapower's `estimate`, same measurements, same process.

Run: .venv/bin/python benchmarks/estimation.py [--windows 30]
Prints per-snapshot times, the speed ratio and the accuracy of both against the true state.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from dsotp_streams.adapters.grids import load_grid
from dsotp_streams.contracts.agent import load_agent_spec
from dsotp_streams.contracts.messages import Window
from dsotp_streams.core.estimation import Estimator, MeasurementMap, WlsOptions, solve_wls
from dsotp_streams.core.estimation.reference import solve_pandapower
from dsotp_streams.emulator import PmuFleet
from dsotp_streams.errors import DsotpError

log = logging.getLogger("benchmarks.estimation")
REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--windows", type=int, default=30)
    parser.add_argument("--agent", type=Path, default=REPO / "agents" / "cigre-mv.yaml")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    spec = load_agent_spec(args.agent)
    grid = load_grid(spec.grid)
    fleet = PmuFleet(spec, grid)
    mapping = MeasurementMap(spec, grid)
    estimator = Estimator(spec, grid)
    named = [idx for _name, idx in grid.named_buses]
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ours_ms, theirs_ms, full_ms, ours_err, theirs_err = [], [], [], [], []
    estimator.estimate(_window(fleet, t0, spec.area)[0])  # warm-up of both engines
    try:
        solve_pandapower(grid, mapping.build(_window(fleet, t0, spec.area)[0]))
    except DsotpError:
        log.info("pandapower warm-up did not converge")
    observable: set[bytes] = set()
    pp_failed = 0
    for k in range(args.windows):
        window, v_true = _window(fleet, t0 + k * timedelta(milliseconds=100), spec.area)
        ms = mapping.build(window)
        start = time.perf_counter()
        ours = solve_wls(grid, ms, options=WlsOptions(bad_data=False), observable=observable)
        ours_ms.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        try:
            theirs = solve_pandapower(grid, ms)
        except DsotpError as exc:
            pp_failed += 1
            log.debug("pandapower failed on window %d: %s", k, exc)
            theirs = None
        theirs_ms.append((time.perf_counter() - start) * 1e3)
        start = time.perf_counter()
        estimator.estimate(window)
        full_ms.append((time.perf_counter() - start) * 1e3)
        ours_err.append(float(np.max(np.abs(np.abs(ours.v[named]) - np.abs(v_true[named])))))
        if theirs is not None:
            theirs_err.append(float(np.max(np.abs(np.abs(theirs[named]) - np.abs(v_true[named])))))
    o, t, f = statistics.median(ours_ms), statistics.median(theirs_ms), statistics.median(full_ms)
    log.info(
        "grid %s, %d buses, %d measurements per window, %d windows",
        spec.grid.name,
        len(named),
        ms.size,
        args.windows,
    )
    log.info(
        "pandapower estimate (wls)      : %8.2f ms median, max |dV| %.2e pu (median), "
        "%d of %d failed to converge",
        t,
        statistics.median(theirs_err or [float("nan")]),
        pp_failed,
        args.windows,
    )
    log.info(
        "dsotp WLS solve                : %8.2f ms median, max |dV| %.2e pu (median)",
        o,
        statistics.median(ours_err),
    )
    log.info("dsotp Estimator (map+WLS+BDD)  : %8.2f ms median", f)
    log.info("speed-up WLS vs pandapower     : %8.1fx", t / o)
    log.info("speed-up Estimator vs pandapower: %7.1fx", t / f)


def _window(fleet: PmuFleet, ts: datetime, area: str) -> tuple[Window, np.ndarray]:
    instant = fleet.step(ts)
    window = Window(
        area=area,
        window_start=ts,
        period_s=0.1,
        frames={f.device: f for f in instant.frames},
        closed_at=ts,
    )
    return window, instant.v


if __name__ == "__main__":
    main()
