"""Replaying the DPsim CIGRE MV recording through the Python API (no broker).

Run: .venv/bin/python benchmarks/replay.py

Prints the time to read the 301 VILLASnode samples into 4,500 SOGNO frames, to load the CGMES
model, and to align and estimate the 300 windows, and the whole `dsotp_streams.replay(...)` call
in a fresh and in a warm state of the process.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import dsotp_streams
from dsotp_streams.adapters.grids import load_grid
from dsotp_streams.adapters.recording import read_frames
from dsotp_streams.contracts.agent import load_agent_spec
from dsotp_streams.contracts.frames import PmuFrame
from dsotp_streams.runtime.offline import OfflineEstimator
from dsotp_streams.settings import Settings

log = logging.getLogger("benchmarks.replay")
REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = Settings().data_dir / "sogno-cigre-mv"
    record = data / "dpsim_powerflow_record_cigre.jsonl"
    columns = data / "dpsim_powerflow_record_cigre.columns.txt"
    agent = REPO / "agents" / "sogno-cigre-mv.yaml"
    for attempt in ("first call (cold imports)", "second call"):
        start = time.perf_counter()
        n = sum(
            1
            for _ in dsotp_streams.replay(
                record, columns=columns, agent=agent, data_dir=data.parent
            )
        )
        log.info("replay(): %d estimates in %.2f s, %s", n, time.perf_counter() - start, attempt)
    start = time.perf_counter()
    frames = [f for f in read_frames(record, columns=columns) if isinstance(f, PmuFrame)]
    t_read = time.perf_counter() - start
    start = time.perf_counter()
    spec = load_agent_spec(agent)
    grid = load_grid(spec.grid, base_dir=agent.parent, data_dir=data.parent)
    t_grid = time.perf_counter() - start
    start = time.perf_counter()
    n = sum(1 for _ in OfflineEstimator(spec, grid=grid).run(frames))
    t_est = time.perf_counter() - start
    log.info(
        "read %d frames %.2f s | load the CGMES model %.2f s | align and estimate %d windows "
        "%.2f s (%.1f ms a window)",
        len(frames),
        t_read,
        t_grid,
        n,
        t_est,
        1e3 * t_est / n,
    )


if __name__ == "__main__":
    main()
