"""Day-ahead load forecasting on a year of real profiles, and what it buys the estimator.

Run: .venv/bin/python benchmarks/forecasting.py [--nodes 100]

Part 1 (SimBench 1-MV-urban--0-sw, 100 bus load profiles, 2016 at 15 min; trained on January to
September, tested day-ahead on October to December): pinball loss, 80 % interval coverage and
nMAE of the LightGBM quantile forecaster against seasonal naive (same process), training time,
and the time of one forecast refresh for all nodes.

Part 2 (CIGRE MV without DER, loads following 18 of those profiles, PMUs at four buses only):
state estimation at the test instants with pseudo-measurements from nominal loads against
pseudo-measurements from the day-ahead forecasts (median, sigma from the 10-90 % spread); errors
at the buses without a PMU.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from datetime import timedelta

import numpy as np

from dsotp_streams.adapters.grids import load_grid
from dsotp_streams.adapters.profiles import load_profiles
from dsotp_streams.contracts.agent import AgentSpec, DeviceSpec, EmulatorSpec, GridSpec
from dsotp_streams.contracts.messages import Window
from dsotp_streams.core.estimation import Estimator
from dsotp_streams.core.forecasting import (
    QUANTILES,
    QuantileForecaster,
    backtest,
    day_ahead_origins,
)
from dsotp_streams.core.powerflow import run_power_flow
from dsotp_streams.emulator import PmuFleet

log = logging.getLogger("benchmarks.forecasting")
Z80 = 2.563  # width of a normal 10-90 % interval in sigmas


def part1(nodes: int) -> None:
    profiles = load_profiles("simbench:1-MV-urban--0-sw", nodes=nodes)
    y, spd = profiles.values, profiles.steps_per_day
    split = int(len(y) * 0.75) // spd * spd
    start = time.perf_counter()
    model = QuantileForecaster(steps_per_day=spd).fit(y[:split], start=profiles.start)
    train_s = time.perf_counter() - start
    result = backtest(model, y=y, steps_per_day=spd, split=split)
    log.info(
        "SimBench MV urban, %d nodes, %d test days (Oct-Dec 2016), day-ahead at 15 min",
        y.shape[1],
        len(result.origins),
    )
    for name, scores in (
        ("seasonal naive (week)", result.naive_scores),
        ("LightGBM quantile", result.ours_scores),
    ):
        mean = result.mean(scores)
        log.info(
            "  %-22s nMAE %.3f  pinball %.4f  CRPS %.4f  80%% coverage %.3f",
            name,
            mean["nmae"],
            mean["pinball"],
            mean["crps"],
            mean["coverage"],
        )
    log.info("  pinball loss %.1f %% lower than seasonal naive", 100 * result.pinball_gain)
    log.info(
        "  training (%d steps x %d nodes): %.1f s; one refresh for all nodes: %.1f ms median",
        split,
        y.shape[1],
        train_s,
        statistics.median(result.predict_ms),
    )


def part2() -> None:
    grid_spec = GridSpec(name="create_cigre_network_mv", kwargs={})
    grid = load_grid(grid_spec)
    devices = [
        DeviceSpec(id="pmu-n0", bus="Bus 0", branches=["Trafo 0-1", "Trafo 0-12"]),
        DeviceSpec(id="pmu-n5", bus="Bus 5"),
        DeviceSpec(id="pmu-n10", bus="Bus 10"),
        DeviceSpec(id="pmu-n14", bus="Bus 14"),
    ]
    spec = AgentSpec(
        area="cigre-mv", grid=grid_spec, devices=devices, emulator=EmulatorSpec(tve_percent=1.0)
    )
    profiles = load_profiles("simbench:1-MV-urban--0-sw")
    spd = profiles.steps_per_day
    n_loads = len(grid.load_p_pu)
    # 18 distinct-looking profiles: every fifth bus of the SimBench grid
    columns = profiles.values[:, ::5][:, :n_loads]
    columns = columns / np.mean(columns, axis=0)
    split = int(len(columns) * 0.75) // spd * spd
    model = QuantileForecaster(steps_per_day=spd).fit(columns[:split], start=profiles.start)
    fleet = PmuFleet(spec, grid)
    nominal, forecast = Estimator(spec, grid=grid), Estimator(spec, grid=grid)
    bus_of_load = grid.load_bus
    names = {idx: name for name, idx in grid.named_buses}
    measured = {grid.bus_index[d.bus] for d in devices}
    unmeasured = [idx for _n, idx in grid.named_buses if idx not in measured and idx != grid.slack]
    errors: dict[str, list[float]] = {"nominal": [], "forecast": []}
    p_errors: dict[str, list[float]] = {"nominal": [], "forecast": []}
    max_err: dict[str, float] = {"nominal": 0.0, "forecast": 0.0}
    for origin in day_ahead_origins(len(columns), steps_per_day=spd, start=split):
        f = model.predict(columns, origin=origin)
        for step in range(0, spd, spd // 4):  # four instants a day
            t = origin + step
            factor = columns[t]
            p = np.zeros(grid.n_bus)
            q = np.zeros(grid.n_bus)
            np.add.at(p, bus_of_load, -grid.load_p_pu * factor)
            np.add.at(q, bus_of_load, -grid.load_q_pu * factor)
            v_true = run_power_flow(grid, p_pu=p, q_pu=q)
            p_true = -p * grid.base_mva  # consumption per bus, MW
            ts = profiles.start + timedelta(seconds=t * profiles.step_s)
            frames = {fr.device: fr for fr in fleet.frames_for(ts, v_true)}
            window = Window(
                area="cigre-mv", window_start=ts, period_s=0.1, frames=frames, closed_at=ts
            )
            per_bus: dict[str, tuple[float, float, float]] = {}
            for i, bus in enumerate(bus_of_load):
                p_mw = grid.load_p_pu[i] * grid.base_mva
                q_mvar = grid.load_q_pu[i] * grid.base_mva
                med, lo, hi = (f[a][step, i] for a in (0.5, QUANTILES[0], QUANTILES[-1]))
                old = per_bus.get(names[bus], (0.0, 0.0, 0.0))
                sigma = p_mw * max(hi - lo, 1e-6) / Z80
                per_bus[names[bus]] = (
                    old[0] + p_mw * med,
                    old[1] + q_mvar * med,
                    float(np.hypot(old[2], sigma)),
                )
            forecast.mapping.set_pseudo_injections(per_bus)
            for name, est in (("nominal", nominal), ("forecast", forecast)):
                result = est.estimate(window)
                vm = {b.bus: b.vm_pu for b in result.buses}
                pm = {b.bus: b.p_mw for b in result.buses}
                errs = [abs(vm[names[i]] - abs(v_true[i])) for i in unmeasured]
                errors[name].append(float(np.mean(errs)))
                p_errors[name].append(
                    float(np.mean([abs(pm[names[i]] - p_true[i]) for i in unmeasured]))
                )
                max_err[name] = max(max_err[name], max(errs))
    n = len(errors["nominal"])
    log.info(
        "CIGRE MV without DER, loads on real profiles, PMUs at Bus 0, 5, 10, 14; %d instants", n
    )
    for name in ("nominal", "forecast"):
        log.info(
            "  pseudo-measurements from %-8s: at unmeasured buses |V| error mean %.5f pu (max "
            "%.5f), load error mean %.3f MW",
            name,
            statistics.mean(errors[name]),
            max_err[name],
            statistics.mean(p_errors[name]),
        )
    gain_v = 1 - statistics.mean(errors["forecast"]) / statistics.mean(errors["nominal"])
    gain_p = 1 - statistics.mean(p_errors["forecast"]) / statistics.mean(p_errors["nominal"])
    log.info(
        "  forecast pseudo-measurements cut the mean |V| error by %.0f %% and the mean load "
        "error by %.0f %%",
        100 * gain_v,
        100 * gain_p,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("pandapower").setLevel(logging.ERROR)
    part1(args.nodes)
    part2()


if __name__ == "__main__":
    main()
