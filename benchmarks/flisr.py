"""FLISR sweep: a fault on every line in circuit, located, isolated and restored.

Run: .venv/bin/python benchmarks/flisr.py [--grids cigre-mv,mv_oberrhein]

For each line: a few normal windows teach the detector the pre-fault currents, then the window of
a three-phase fault at the line's far end (emulated PMU frames with their noise) goes through the
FaultDetector and the FlisrPlanner. Counted: hits (the faulted line is in the located section),
isolation that opens exactly the switchable points around that section, restoration plans that
passed the power-flow check (loading, voltages, radial), and the time from window to plan.
CIGRE MV uses its agent spec's 10 PMUs; other grids a PMU on every 3rd bus.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from datetime import timedelta

from _setup import T0, agent_for

from dsotp_streams.contracts.messages import Window
from dsotp_streams.core.flisr import FaultDetector, FlisrPlanner, fault_state
from dsotp_streams.emulator import PmuFleet

log = logging.getLogger("benchmarks.flisr")


def sweep(name: str, limit: int | None) -> None:
    spec, grid = agent_for(name)
    planner = FlisrPlanner(grid, spec=spec.flisr)
    lines = [r.name for r in grid.branches.values() if r.element == "line"]
    lines = [ln for ln in lines if planner.normal.degree(planner.element_of[ln]) >= 2][:limit]
    base = PmuFleet(spec, grid)
    depth = base._depths()
    hits = exact = passed = restored_any = 0
    times, confidences = [], []
    for line in lines:
        fleet, detector = PmuFleet(spec, grid), FaultDetector(spec, grid=grid)
        for k in range(4):
            instant = fleet.step(T0 + k * timedelta(milliseconds=100))
            frames = {f.device: f for f in instant.frames}
            detector.observe(
                Window(
                    area=spec.area,
                    window_start=instant.truth.timestamp,
                    period_s=0.1,
                    frames=frames,
                    closed_at=T0,
                )
            )
        ref = grid.branches[line]
        far = max((ref.from_bus, ref.to_bus), key=lambda b: depth.get(b, 0))
        ts = T0 + timedelta(seconds=1)
        v_fault = fault_state(grid, v_prefault=instant.v, bus=far)
        frames = {f.device: f for f in fleet.frames_for(ts, v_fault)}
        start = time.perf_counter()
        observation = detector.observe(
            Window(area=spec.area, window_start=ts, period_s=0.1, frames=frames, closed_at=ts)
        )
        if observation is None:
            times.append((time.perf_counter() - start) * 1e3)
            continue
        event = planner.plan(observation, area=spec.area, v_prefault=instant.v)
        times.append((time.perf_counter() - start) * 1e3)
        hit = line in event.fault_lines
        hits += hit
        if event.candidates:
            confidences.append(event.candidates[0].confidence)
        section = planner.section_of(planner.element_of[event.fault_lines[0]]) if hit else set()
        expected = {
            e.switch
            for e in planner.ends
            if e.switch
            and e.closed
            and ((e.element in section) != (planner._bus(e.bus) in section))
        }
        opened = {a.switch for a in event.sequence if a.purpose == "isolate"}
        exact += hit and opened == expected
        passed += bool(event.checks.get("passed"))
        restored_any += event.restored_mw > 0
    n = len(lines)
    log.info(
        "%-14s %4d lines | located %5.1f %% (top candidate's confidence median %.2f) | isolation "
        "exact %5.1f %% | plan passes power flow %5.1f %% (restores load in %d) | window -> plan "
        "%.0f ms median, %.0f ms max",
        name,
        n,
        100 * hits / n,
        statistics.median(confidences or [0.0]),
        100 * exact / n,
        100 * passed / n,
        restored_any,
        statistics.median(times),
        max(times),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grids", default="cigre-mv,mv_oberrhein")
    parser.add_argument("--limit", type=int, default=None, help="at most this many lines per grid")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("pandapower").setLevel(logging.ERROR)
    for name in args.grids.split(","):
        sweep(name, args.limit)


if __name__ == "__main__":
    main()
