"""Where N PMUs should go: a greedy search on emulated truth.

Each step adds the candidate PMU that gives the smallest expected max |dV| (the median over the
sample instants of each window's largest voltage-magnitude error against the true state), using
the same measurement map and WLS as the stream. The result says what to expect and how robust
it is: the expected max |dV| with the worst single PMU lost, and whether every such loss still
leaves the grid observable.

Why greedy and not an exact optimum (an integer programme over all placements): the quantity to
minimise is the estimate's error on real-looking windows, with pseudo-measurements, which no
linear model states; greedy selection with single swaps is the usual heuristic for meter
placement in distribution state estimation. Measured on CIGRE MV against all placements
(`tests/unit/core/test_placement.py`): the best of all 105 pairs; 8.7 % above the best of all
1,365 placements of 4; for 3 PMUs 31 % above the best of 455 (two PMUs would have to move at
once, which single swaps do not try).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from dsotp_streams.contracts.agent import AgentSpec, DeviceSpec
from dsotp_streams.contracts.messages import Window
from dsotp_streams.core.estimation import MeasurementMap, WlsCache, WlsOptions, solve_wls
from dsotp_streams.core.grid import FloatArray, GridModel
from dsotp_streams.errors import DsotpError, SpecError

__all__ = ["Placement", "PlacementStep", "Sample", "expected_error", "propose_placement"]

_SEARCH = WlsOptions(bad_data=False)  # clean emulated windows: no bad data to look for


@dataclass(frozen=True)
class Sample:
    """One emulated instant: every candidate's window and the true magnitudes of the named
    buses (in `grid.named_buses` order)."""

    window: Window
    true_vm_pu: FloatArray


@dataclass(frozen=True)
class PlacementStep:
    """One PMU added and the expected max |dV| with it."""

    device: DeviceSpec
    expected_max_dvm_pu: float


@dataclass(frozen=True)
class Placement:
    """A proposal: its devices, what to expect of it, and with one PMU lost."""

    devices: list[DeviceSpec]
    expected_max_dvm_pu: float  # judged on the validation samples
    search_max_dvm_pu: float  # the search's own figure for these devices
    steps: list[PlacementStep]  # the greedy additions, before the swaps
    swaps: int
    one_lost_max_dvm_pu: float  # the worst single loss (inf: some loss leaves it unobservable)
    worst_loss: str | None

    @property
    def observable_with_one_lost(self) -> bool:
        """True when every single PMU lost still leaves an observable grid."""
        return math.isfinite(self.one_lost_max_dvm_pu)


def expected_error(
    spec: AgentSpec, *, grid: GridModel, devices: Sequence[DeviceSpec], samples: Sequence[Sample]
) -> float:
    """The median over the samples of the max |dV| with these devices (inf: not observable)."""
    if not devices:
        return math.inf
    own = spec.model_copy(update={"devices": list(devices)})
    mapping = MeasurementMap(own, grid=grid)
    cache = WlsCache(grid)
    named = np.array([idx for _name, idx in grid.named_buses], dtype=np.int64)
    ids = {d.id for d in devices}
    errors = []
    v0 = None
    for sample in samples:
        frames = {d: f for d, f in sample.window.frames.items() if d in ids}
        window = sample.window.model_copy(update={"frames": frames})
        try:
            result = solve_wls(grid, ms=mapping.build(window), options=_SEARCH, v0=v0, cache=cache)
        except DsotpError:
            return math.inf
        v0 = result.v
        errors.append(float(np.max(np.abs(np.abs(result.v[named]) - sample.true_vm_pu))))
    return statistics.median(errors)


def propose_placement(
    spec: AgentSpec,
    *,
    grid: GridModel,
    candidates: Sequence[DeviceSpec],
    samples: Sequence[Sample],
    budget: int,
    keep: Sequence[DeviceSpec] = (),
    validation: Sequence[Sample] = (),
    max_swap_passes: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> Placement:
    """Greedy placement of `budget` PMUs among `candidates` (after the `keep` ones).

    The search picks the best of many on `samples`, which flatters the winner (on CIGRE MV the
    search's own figure was 0.154 % where a fresh emulated run gave 0.239 %); the accuracy to
    expect, and the one-PMU-lost check, are therefore judged on `validation`, other instants
    with other noise (the search samples when none are given)."""
    if budget < 1 or budget > len(candidates):
        raise SpecError(f"budget {budget}: between 1 and the {len(candidates)} candidates")
    chosen = list(keep)
    left = [c for c in candidates if c.id not in {k.id for k in keep}]
    steps: list[PlacementStep] = []
    total = sum(len(left) - k for k in range(budget)) + budget
    done = 0
    for _ in range(budget):
        best: tuple[float, DeviceSpec] | None = None
        for candidate in left:
            error = expected_error(spec, grid=grid, devices=[*chosen, candidate], samples=samples)
            done += 1
            if progress is not None:
                progress(done, total)
            if best is None or error < best[0]:
                best = (error, candidate)
        assert best is not None
        chosen.append(best[1])
        left.remove(best[1])
        steps.append(PlacementStep(best[1], best[0]))
    # swaps: exchange one chosen PMU for one left while that helps (a PMU chosen early that
    # later ones make redundant): on CIGRE MV with 4 PMUs 0.154 -> 0.132 % (search samples)
    error = steps[-1].expected_max_dvm_pu
    swaps = 0
    for _pass in range(max_swap_passes):
        improved = False
        for i in range(len(keep), len(chosen)):
            for candidate in list(left):
                trial = [*chosen[:i], candidate, *chosen[i + 1 :]]
                trial_error = expected_error(spec, grid=grid, devices=trial, samples=samples)
                if trial_error < error:
                    left.remove(candidate)
                    left.append(chosen[i])
                    chosen, error, improved = trial, trial_error, True
                    swaps += 1
        if not improved:
            break
    judge = validation or samples
    expected = expected_error(spec, grid=grid, devices=chosen, samples=judge)
    worst, worst_loss = 0.0, None
    for device in chosen:
        others = [d for d in chosen if d.id != device.id]
        lost = expected_error(spec, grid=grid, devices=others, samples=judge)
        done += 1
        if progress is not None:
            progress(done, total)
        if lost > worst:
            worst, worst_loss = lost, device.id
    return Placement(
        devices=chosen,
        expected_max_dvm_pu=expected,
        search_max_dvm_pu=error,
        swaps=swaps,
        steps=steps,
        one_lost_max_dvm_pu=worst,
        worst_loss=worst_loss,
    )
