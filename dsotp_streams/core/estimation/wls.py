"""WLS state estimation in polar coordinates, with chi-square and LNR bad-data tests."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import chi2

from dsotp_streams.core.estimation.measurements import ANGLE_KINDS, Kind, MeasurementSet, Side
from dsotp_streams.core.grid import ComplexArray, FloatArray, GridModel
from dsotp_streams.core.linalg import Matrix, Ops
from dsotp_streams.core.powerflow import dsbus_dv
from dsotp_streams.errors import ConvergenceError, NotObservableError

__all__ = ["WlsOptions", "WlsResult", "solve_wls"]


@dataclass(frozen=True)
class WlsOptions:
    """Solver and bad-data settings."""

    max_iterations: int = 20
    tolerance: float = 1e-7
    bad_data: bool = True
    chi2_confidence: float = 0.99
    lnr_threshold: float = 3.0
    max_bad_data: int = 3


@dataclass(frozen=True)
class WlsResult:
    """Estimated voltages and the quality of the fit."""

    v: ComplexArray
    iterations: int
    objective: float
    dof: int
    chi2_threshold: float
    bad_data: list[str] = field(default_factory=list)
    measurements: MeasurementSet | None = None

    @property
    def passes_chi2(self) -> bool:
        """True when the weighted residual sum lies below the chi-square threshold."""
        return self.dof <= 0 or self.objective <= self.chi2_threshold


class _Model:
    """Measurement functions h(x) and Jacobian H(x) for one measurement set."""

    def __init__(self, grid: GridModel, ms: MeasurementSet) -> None:
        self.grid = grid
        self.ms = ms
        n = grid.n_bus
        self.has_angles = bool(np.any(np.isin(ms.kind, ANGLE_KINDS)))
        self.angle_states = (
            np.arange(n) if self.has_angles else np.array([i for i in range(n) if i != grid.slack])
        )
        self.n_state = len(self.angle_states) + n
        self.groups = {k: np.flatnonzero(ms.kind == k) for k in Kind}

    def evaluate(self, v: ComplexArray) -> tuple[FloatArray, Matrix]:
        grid, ms, g, ops = self.grid, self.ms, self.groups, self.grid.ops
        n = grid.n_bus
        h = np.zeros(ms.size)
        blocks: list[tuple[np.ndarray, Matrix, Matrix]] = []
        vm = np.abs(v)
        if len(g[Kind.VM]):
            rows = g[Kind.VM]
            h[rows] = vm[ms.element[rows]]
            blocks.append((rows, ops.zeros(len(rows), n), ops.unit_rows(ms.element[rows], n)))
        if len(g[Kind.VA]):
            rows = g[Kind.VA]
            h[rows] = np.angle(v[ms.element[rows]])
            blocks.append((rows, ops.unit_rows(ms.element[rows], n), ops.zeros(len(rows), n)))
        if len(g[Kind.P_INJ]) or len(g[Kind.Q_INJ]):
            s_bus = v * np.conj(grid.ybus @ v)
            ds_dva, ds_dvm = dsbus_dv(grid, v)
            for kind, part in ((Kind.P_INJ, np.real), (Kind.Q_INJ, np.imag)):
                rows = g[kind]
                if len(rows):
                    el = ms.element[rows]
                    h[rows] = part(s_bus[el])
                    blocks.append((rows, part(ds_dva[el]), part(ds_dvm[el])))
        branch_rows = np.concatenate(
            [g[k] for k in (Kind.P_FLOW, Kind.Q_FLOW, Kind.I_MAG, Kind.I_ANG)]
        )
        if len(branch_rows):
            vnorm = v / vm
            jv = 1j * v
            for side, y, c in ((Side.FROM, grid.yf, grid.cf), (Side.TO, grid.yt, grid.ct)):
                sel = branch_rows[ms.side[branch_rows] == side]
                if not len(sel):
                    continue
                i_br = y @ v
                v_end = c @ v
                for kind in (Kind.P_FLOW, Kind.Q_FLOW, Kind.I_MAG, Kind.I_ANG):
                    rows = sel[ms.kind[sel] == kind]
                    if not len(rows):
                        continue
                    el = ms.element[rows]
                    i_el = i_br[el]
                    di_dva = ops.scale_cols(y[el], jv)
                    di_dvm = ops.scale_cols(y[el], vnorm)
                    if kind in (Kind.P_FLOW, Kind.Q_FLOW):
                        dva = ops.scale_rows(np.conj(i_el), ops.scale_cols(c[el], jv)) + (
                            ops.scale_rows(v_end[el], di_dva.conj())
                        )
                        dvm = ops.scale_rows(np.conj(i_el), ops.scale_cols(c[el], vnorm)) + (
                            ops.scale_rows(v_end[el], di_dvm.conj())
                        )
                        part = np.real if kind is Kind.P_FLOW else np.imag
                        h[rows] = part(v_end[el] * np.conj(i_el))
                        blocks.append((rows, part(dva), part(dvm)))
                    elif kind is Kind.I_MAG:
                        w = np.conj(i_el) / np.maximum(np.abs(i_el), 1e-9)
                        h[rows] = np.abs(i_el)
                        blocks.append(
                            (rows, ops.scale_rows(w, di_dva).real, ops.scale_rows(w, di_dvm).real)
                        )
                    else:
                        w = np.conj(i_el) / np.maximum(np.abs(i_el) ** 2, 1e-18)
                        h[rows] = np.angle(i_el)
                        blocks.append(
                            (rows, ops.scale_rows(w, di_dva).imag, ops.scale_rows(w, di_dvm).imag)
                        )
        order = np.concatenate([b[0] for b in blocks])
        dva_all = ops.vstack([b[1] for b in blocks])
        dvm_all = ops.vstack([b[2] for b in blocks])
        jac = ops.hstack([dva_all[:, self.angle_states], dvm_all])
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return h, jac[inverse]

    def update(self, v: ComplexArray, dx: FloatArray) -> ComplexArray:
        va = np.angle(v)
        vm = np.abs(v)
        na = len(self.angle_states)
        va[self.angle_states] += dx[:na]
        vm += dx[na:]
        v_new: ComplexArray = vm * np.exp(1j * va)
        return v_new


def _residual(ms: MeasurementSet, h: FloatArray) -> FloatArray:
    r = ms.value - h
    angles = np.isin(ms.kind, ANGLE_KINDS)
    r[angles] = (r[angles] + np.pi) % (2.0 * np.pi) - np.pi
    return r


def _structure(ms: MeasurementSet) -> bytes:
    return ms.kind.tobytes() + ms.element.tobytes() + ms.side.tobytes()


def _check_observable(
    model: _Model, v0: ComplexArray, observable: set[bytes] | None = None
) -> None:
    key = _structure(model.ms)
    if observable is not None and key in observable:
        return
    if model.ms.size < model.n_state:
        raise NotObservableError(
            f"{model.ms.size} measurements for {model.n_state} state variables"
        )
    _h, jac = model.evaluate(v0)
    if model.n_state <= 2000:
        rank = int(np.linalg.matrix_rank(model.grid.ops.to_dense(jac)))
        if rank < model.n_state:
            raise NotObservableError(
                f"measurement Jacobian has rank {rank} < {model.n_state} state variables"
            )
    if observable is not None:
        if len(observable) > 1024:
            observable.clear()
        observable.add(key)


def _solve_once(
    grid: GridModel,
    ms: MeasurementSet,
    v0: ComplexArray,
    options: WlsOptions,
    observable: set[bytes] | None,
) -> tuple[ComplexArray, int, FloatArray, Matrix, _Model]:
    model = _Model(grid, ms)
    _check_observable(model, v0, observable)
    ops = grid.ops
    weights = 1.0 / ms.sigma**2
    v = v0.copy()
    for iteration in range(1, options.max_iterations + 1):
        h, jac = model.evaluate(v)
        r = _residual(ms, h)
        gain = jac.T @ ops.scale_rows(weights, jac)
        try:
            dx = ops.solve(gain, jac.T @ (weights * r))
        except (RuntimeError, np.linalg.LinAlgError) as exc:
            raise NotObservableError(f"gain matrix is singular: {exc}") from exc
        if not np.all(np.isfinite(dx)):
            raise NotObservableError("gain matrix is singular (non-finite update)")
        v = model.update(v, dx)
        if np.max(np.abs(dx)) < options.tolerance:
            h, jac = model.evaluate(v)
            return v, iteration, _residual(ms, h), jac, model
    raise ConvergenceError(f"WLS did not converge in {options.max_iterations} iterations")


def _normalized_residuals(ms: MeasurementSet, r: FloatArray, jac: Matrix, ops: Ops) -> FloatArray:
    h = ops.to_dense(jac)
    w = 1.0 / ms.sigma**2
    gain = h.T @ (w[:, None] * h)
    cov_r = np.diag(ms.sigma**2) - h @ np.linalg.solve(gain, h.T)
    omega = np.clip(np.diag(cov_r), 0.0, None)
    rn = np.zeros_like(r)
    ok = omega > 1e-12 * ms.sigma**2
    rn[ok] = np.abs(r[ok]) / np.sqrt(omega[ok])
    return rn


def solve_wls(
    grid: GridModel,
    ms: MeasurementSet,
    *,
    options: WlsOptions,
    v0: ComplexArray | None = None,
    observable: set[bytes] | None = None,
) -> WlsResult:
    """Estimate bus voltages; remove bad data by largest normalized residual while chi2 fails.

    `observable` caches measurement structures already shown observable (the rank check is the
    costliest step for a stream whose measurement set rarely changes).
    """
    start = np.ones(grid.n_bus, dtype=complex) * grid.v_slack if v0 is None else v0
    removed: list[str] = []
    while True:
        v, iterations, r, jac, model = _solve_once(grid, ms, start, options, observable)
        objective = float(np.sum((r / ms.sigma) ** 2))
        dof = ms.size - model.n_state
        threshold = float(chi2.ppf(options.chi2_confidence, dof)) if dof > 0 else 0.0
        result = WlsResult(v, iterations, objective, dof, threshold, removed, ms)
        if (
            result.passes_chi2
            or not options.bad_data
            or len(removed) >= options.max_bad_data
            or ms.size > 5000
        ):
            return result
        rn = _normalized_residuals(ms, r, jac, grid.ops)
        rn[ms.exact] = 0.0  # zero injections are physics, never bad data
        worst = int(np.argmax(rn))
        if rn[worst] < options.lnr_threshold:
            return result
        candidate = ms.without(worst)
        try:
            _check_observable(_Model(grid, candidate), start, observable)
        except NotObservableError:
            return result
        removed = [*removed, ms.label[worst]]
        ms = candidate
        start = v
