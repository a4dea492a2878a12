"""Accuracy against the number and placement of PMUs on the real DPsim recording of CIGRE MV.

Run: .venv/bin/python benchmarks/pmu_count.py [--placements 10] [--seed 1]

For 2 to 8 PMUs (always one at the substation, N0; the others drawn at random among the 14
other nodes, `--placements` draws per count), the recording is estimated with the shipped
defaults of `agents/sogno-cigre-mv.yaml` and compared with all 15 recorded nodes. Prints per
count the median and the worst over the placements of the median per-window max |dV|, and the
share of windows estimated; the baseline is the same placements without the load-scale state.
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import time
from pathlib import Path

from dsotp_streams.adapters.grids import load_grid
from dsotp_streams.adapters.villas import read_columns, villas_to_frames
from dsotp_streams.contracts.agent import AgentSpec, DeviceSpec, load_agent_spec
from dsotp_streams.contracts.frames import PmuFrame
from dsotp_streams.contracts.messages import EstimateStatus
from dsotp_streams.core.grid import GridModel
from dsotp_streams.runtime.offline import OfflineEstimator
from dsotp_streams.settings import Settings

log = logging.getLogger("benchmarks.pmu_count")
REPO = Path(__file__).resolve().parents[1]


def accuracy(
    spec: AgentSpec, grid: GridModel, frames: list[PmuFrame], nodes: tuple[int, ...]
) -> tuple[float, float]:
    """(median per-window max |dV|, share of windows estimated) for PMUs at these nodes."""
    devices = [DeviceSpec(id=f"dpsim-n{k}", bus=f"N{k}") for k in nodes]
    estimates = list(
        OfflineEstimator(spec.model_copy(update={"devices": devices}), grid=grid).run(frames)
    )
    ok = [e.max_true_dvm_pu for e in estimates if e.status is EstimateStatus.OK]
    errors = [e for e in ok if e is not None]
    return (statistics.median(errors) if errors else float("inf")), len(ok) / len(estimates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--placements", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("dsotp_streams").setLevel(logging.ERROR)
    data = Settings().data_dir / "sogno-cigre-mv"
    spec = load_agent_spec(REPO / "agents" / "sogno-cigre-mv.yaml")
    grid = load_grid(spec.grid, base_dir=REPO / "agents", data_dir=data.parent)
    columns = read_columns(data / "dpsim_powerflow_record_cigre.columns.txt")
    lines = (data / "dpsim_powerflow_record_cigre.jsonl").read_text().splitlines()
    frames = [f for f in villas_to_frames(lines, columns) if isinstance(f, PmuFrame)]
    fixed = spec.model_copy(
        update={"estimator": spec.estimator.model_copy(update={"load_scale": False})}
    )
    rng = random.Random(args.seed)
    log.info(
        "PMUs | median / worst over placements of the median max |dV| (%%) | estimated | "
        "without load scale: median / worst"
    )
    for count in range(2, 9):
        started = time.perf_counter()
        ours, base, shares = [], [], []
        for _ in range(args.placements):
            nodes = (0, *sorted(rng.sample(range(1, 15), count - 1)))
            error, share = accuracy(spec, grid, frames, nodes)
            ours.append(100 * error)
            shares.append(share)
            base.append(100 * accuracy(fixed, grid, frames, nodes)[0])
        log.info(
            "%4d | %6.3f / %6.3f | %5.1f %% | %6.3f / %6.3f   (%.1f s)",
            count,
            statistics.median(ours),
            max(ours),
            100 * min(shares),
            statistics.median(base),
            max(base),
            time.perf_counter() - started,
        )


if __name__ == "__main__":
    main()
