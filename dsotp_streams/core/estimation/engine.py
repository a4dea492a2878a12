"""The estimator an agent holds: built once per area, called once per window, never raises."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping

import numpy as np

from dsotp_streams.contracts.agent import AgentSpec
from dsotp_streams.contracts.messages import (
    BusState,
    EstimateStatus,
    LineFlow,
    StateEstimate,
    TrueState,
    Window,
)
from dsotp_streams.core.estimation.measurements import MeasurementMap, MeasurementSet
from dsotp_streams.core.estimation.reference import solve_pandapower
from dsotp_streams.core.estimation.wls import WlsCache, WlsOptions, WlsResult, solve_wls
from dsotp_streams.core.grid import ComplexArray, GridModel
from dsotp_streams.errors import ConvergenceError, DsotpError, NotObservableError

__all__ = ["Estimator"]

log = logging.getLogger(__name__)


class Estimator:
    """Window in, StateEstimate out; failures become a status with its reason."""

    def __init__(self, spec: AgentSpec, grid: GridModel) -> None:
        self.spec = spec
        self.grid = grid
        self.engine = spec.estimator.engine
        self.mapping = MeasurementMap(spec, grid)
        e = spec.estimator
        self.options = WlsOptions(
            max_iterations=e.max_iterations,
            tolerance=e.tolerance,
            bad_data=e.bad_data,
            chi2_confidence=e.chi2_confidence,
            lnr_threshold=e.lnr_threshold,
            max_bad_data=e.max_bad_data,
        )
        self._last_v: ComplexArray | None = None
        self._cache = WlsCache(grid)

    def estimate(self, window: Window, *, truth: TrueState | None = None) -> StateEstimate:
        """Estimate the state of one window."""
        started = time.perf_counter()
        base = {
            "area": window.area,
            "window_start": window.window_start,
            "engine": self.engine,
            "n_devices": len(window.frames),
            "missing_devices": window.missing_devices,
        }
        try:
            ms = self.mapping.build(window)
            if self.engine == "pandapower":
                v = solve_pandapower(self.grid, ms)
                result = WlsResult(v, 0, math.nan, 0, 0.0, [], ms)
            else:
                result = solve_wls(
                    self.grid,
                    ms,
                    options=self.options,
                    v0=self._last_v,
                    cache=self._cache,
                )
                self._last_v = result.v
        except NotObservableError as exc:
            return self._failed(base, EstimateStatus.NOT_OBSERVABLE, exc, started)
        except ConvergenceError as exc:
            self._last_v = None
            return self._failed(base, EstimateStatus.DIVERGED, exc, started)
        except DsotpError as exc:
            return self._failed(base, EstimateStatus.FAILED, exc, started)
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
            log.exception("estimation of %s failed", window.window_start)
            return self._failed(base, EstimateStatus.FAILED, exc, started)
        status = EstimateStatus.OK if result.passes_chi2 else EstimateStatus.BAD_DATA
        buses, lines = self._states(result.v, truth)
        max_dvm = None
        if truth is not None:
            errs = [abs(b.vm_pu - b.true_vm_pu) for b in buses if b.true_vm_pu is not None]
            max_dvm = max(errs) if errs else None
        final: MeasurementSet | None = result.measurements
        return StateEstimate(
            **base,
            status=status,
            reason=None if status is EstimateStatus.OK else "chi-square test fails",
            buses=buses,
            lines=lines,
            n_measurements=final.size if final is not None else 0,
            iterations=result.iterations,
            chi2=None if math.isnan(result.objective) else result.objective,
            dof=result.dof if self.engine == "wls" else None,
            chi2_threshold=result.chi2_threshold if self.engine == "wls" else None,
            bad_data=result.bad_data,
            runtime_ms=(time.perf_counter() - started) * 1e3,
            max_true_dvm_pu=max_dvm,
        )

    def _failed(
        self,
        base: Mapping[str, object],
        status: EstimateStatus,
        exc: Exception,
        started: float,
    ) -> StateEstimate:
        return StateEstimate.model_validate(
            {
                **base,
                "status": status,
                "reason": f"{type(exc).__name__}: {exc}",
                "runtime_ms": (time.perf_counter() - started) * 1e3,
            }
        )

    def _states(
        self, v: ComplexArray, truth: TrueState | None
    ) -> tuple[list[BusState], list[LineFlow]]:
        grid = self.grid
        # angles relative to each island's reference, as a power flow reports them
        island_ref = np.angle(v[grid.slacks]) - np.angle(grid.v_slacks)
        ref_angle = island_ref[grid.island]
        s_bus = v * np.conj(grid.ybus @ v) * grid.base_mva
        buses = []
        for name, idx in grid.named_buses:
            buses.append(
                BusState(
                    bus=name,
                    vm_pu=float(abs(v[idx])),
                    va_deg=math.degrees(float(np.angle(v[idx]) - ref_angle[idx])),
                    p_mw=float(-s_bus[idx].real),
                    q_mvar=float(-s_bus[idx].imag),
                    true_vm_pu=truth.vm_pu.get(name) if truth else None,
                    true_va_deg=truth.va_deg.get(name) if truth else None,
                )
            )
        i_from = grid.yf @ v
        i_to = grid.yt @ v
        s_from = (grid.cf @ v) * np.conj(i_from) * grid.base_mva
        s_to = (grid.ct @ v) * np.conj(i_to) * grid.base_mva
        lines = []
        for ref in grid.branches.values():
            k = ref.index
            i_from_ka = float(abs(i_from[k]) * grid.i_base_ka(ref.from_bus))
            i_to_ka = float(abs(i_to[k]) * grid.i_base_ka(ref.to_bus))
            loading = None
            if ref.rating_from_ka and ref.rating_to_ka:
                loading = 100.0 * max(i_from_ka / ref.rating_from_ka, i_to_ka / ref.rating_to_ka)
            lines.append(
                LineFlow(
                    line=ref.name,
                    p_from_mw=float(s_from[k].real),
                    q_from_mvar=float(s_from[k].imag),
                    i_from_ka=i_from_ka,
                    p_to_mw=float(s_to[k].real),
                    q_to_mvar=float(s_to[k].imag),
                    i_to_ka=i_to_ka,
                    loading_percent=loading,
                )
            )
        return buses, lines
