"""WLS state estimation in polar coordinates, with chi-square and LNR bad-data tests."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
import scipy.sparse as sp
from scipy.stats import chi2

from dsotp_streams.core.estimation.measurements import ANGLE_KINDS, Kind, MeasurementSet, Side
from dsotp_streams.core.grid import BoolArray, ComplexArray, FloatArray, GridModel, IntArray
from dsotp_streams.core.linalg import Matrix, Ops
from dsotp_streams.errors import ConvergenceError, NotObservableError

__all__ = [
    "WlsCache",
    "WlsOptions",
    "WlsResult",
    "chi2_threshold",
    "residual_variances",
    "solve_wls",
]

_BRANCH_KINDS = (Kind.P_FLOW, Kind.Q_FLOW, Kind.I_MAG, Kind.I_ANG)


@dataclass(frozen=True)
class WlsOptions:
    """Solver and bad-data settings."""

    max_iterations: int = 30
    tolerance: float = 1e-6
    bad_data: bool = True
    chi2_confidence: float = 0.99
    lnr_threshold: float = 3.0
    # Also test the largest normalised residual when chi2 passes: conservative pseudo-measurement
    # sigmas deflate J(x), so chi2 alone misses single gross errors. None turns this off.
    lnr_detection: float | None = 4.0
    max_bad_data: int = 3
    # every measurement's normalised residual in the result (costs the residual covariance:
    # milliseconds on large grids, so off on the hot path)
    residuals: bool = False


@dataclass(frozen=True, kw_only=True)
class WlsResult:
    """Estimated voltages and the quality of the fit."""

    v: ComplexArray
    iterations: int
    objective: float
    dof: int
    chi2_threshold: float
    bad_data: list[str] = field(default_factory=list)
    measurements: MeasurementSet | None = None
    load_scale: float | None = None  # estimated scale of the nominal loads, when estimated
    normalized_residuals: dict[str, float] | None = None  # label -> r_N, on request

    @property
    def passes_chi2(self) -> bool:
        """True when the weighted residual sum lies below the chi-square threshold."""
        return self.dof <= 0 or self.objective <= self.chi2_threshold


def _csr_rows(m: Matrix, n: int) -> tuple[IntArray, IntArray, ComplexArray]:
    """(row, column, value) triplets of a matrix's nonzeros."""
    coo = sp.coo_matrix(m)
    keep = coo.data != 0
    return (
        coo.row[keep].astype(np.int64),
        coo.col[keep].astype(np.int64),
        coo.data[keep].astype(complex),
    )


class _Model:
    """Measurement functions h(x) and Jacobian H(x), planned once per measurement structure.

    The Jacobian's sparsity pattern is fixed by the structure, so the plan stores its (row,
    column) pairs once; each evaluation computes only the values, with a fixed number of vector
    operations however many measurements there are, and assembles the matrix in one step (dense
    through bincount for small grids, CSR for large). Complex row multipliers pick the real part
    (P, |I|) or the imaginary part (Q, angle) of each row. Rows are in `order`: bus voltages,
    bus injections, branch ends.
    """

    def __init__(self, grid: GridModel, ms: MeasurementSet) -> None:
        self.grid = grid
        n, kind = grid.n_bus, ms.kind
        self.size = ms.size
        # an island's angles are absolute when a PMU angle lies in it; else its slack is fixed
        angle_rows = np.flatnonzero(np.isin(kind, ANGLE_KINDS))
        angle_buses = ms.element[angle_rows].copy()  # a VA row's element is its bus
        current = kind[angle_rows] == Kind.I_ANG
        branch = ms.element[angle_rows][current]
        from_end = ms.side[angle_rows][current] == Side.FROM
        angle_buses[current] = np.where(from_end, grid.f_bus[branch], grid.t_bus[branch])
        referenced = set(grid.island[angle_buses].tolist())
        fixed = [int(b) for k, b in enumerate(grid.slacks) if k not in referenced]
        self.angle_states = np.setdiff1d(np.arange(n), fixed)
        rows_scale = np.flatnonzero(kind == Kind.LOAD_SCALE)
        self.has_scale = len(rows_scale) > 0  # one more state: the scale of nominal loads
        self.n_state = len(self.angle_states) + n + int(self.has_scale)
        self.col_scale = self.n_state - 1
        # state column of every (derivative, bus): angles first, then magnitudes; -1 if fixed
        self.col_va = np.full(n, -1, dtype=np.int64)
        self.col_va[self.angle_states] = np.arange(len(self.angle_states))
        self.col_vm = len(self.angle_states) + np.arange(n, dtype=np.int64)

        rows_vm = np.flatnonzero(kind == Kind.VM)
        rows_va = np.flatnonzero(kind == Kind.VA)
        rows_inj = np.flatnonzero((kind == Kind.P_INJ) | (kind == Kind.Q_INJ))
        rows_br = np.flatnonzero(np.isin(kind, _BRANCH_KINDS))
        self.order = np.concatenate([rows_vm, rows_va, rows_inj, rows_br, rows_scale])
        self.el_vm = ms.element[rows_vm]
        self.el_va = ms.element[rows_va]
        off_inj = len(rows_vm) + len(rows_va)
        off_br = off_inj + len(rows_inj)
        self.n_v, self.n_inj, self.n_br = off_inj, len(rows_inj), len(rows_br)
        off_scale = off_br + len(rows_br)
        # a nominal pseudo-injection reads value + (s - 1) * share: h - (s - 1) * share is
        # fitted to the value, d/ds = -share, constant (the scale's column never changes)
        self.share = ms.load_share[self.order]
        scaled_rows = np.flatnonzero(self.share != 0.0) if self.has_scale else np.zeros(0, int)
        self.scale_values = np.concatenate([-self.share[scaled_rows], np.ones(len(rows_scale))])
        self.n_scale = len(rows_scale)

        # injections S_r = v_e conj(Y_e v): pattern of the Ybus rows, plus the diagonal term
        self.el_inj = ms.element[rows_inj]
        self.alpha_inj = np.where(kind[rows_inj] == Kind.P_INJ, 1.0 + 0j, -1j)
        self.inj_r, self.inj_c, self.inj_y = _csr_rows(grid.ybus[self.el_inj], n)
        # branch ends I_r = Y_end v, S_r = v_end conj(I_r)
        br_kind = kind[rows_br]
        el_br, side_br = ms.element[rows_br], ms.side[rows_br]
        from_side = side_br == Side.FROM
        y_from = sp.csr_matrix(grid.yf)[el_br]
        y_to = sp.csr_matrix(grid.yt)[el_br]
        y_br = (
            sp.diags(from_side.astype(float)) @ y_from + sp.diags((~from_side).astype(float)) @ y_to
        )
        self.br_r, self.br_c, self.br_y = _csr_rows(y_br, n)
        self.end_bus = np.where(from_side, grid.f_bus[el_br], grid.t_bus[el_br])
        self.is_flow = np.isin(br_kind, (Kind.P_FLOW, Kind.Q_FLOW))
        self.is_p_flow = br_kind == Kind.P_FLOW
        self.is_imag = br_kind == Kind.I_MAG
        self.alpha_br = np.select(
            [br_kind == Kind.P_FLOW, br_kind == Kind.Q_FLOW], [1.0 + 0j, -1j], 0.0 + 0j
        )

        # the fixed pattern: for each group of entries, its rows and state columns
        r_inj_diag = np.arange(self.n_inj)
        r_br_diag = np.arange(self.n_br)
        parts_r = [
            np.arange(len(rows_vm)),
            len(rows_vm) + np.arange(len(rows_va)),
            off_inj + self.inj_r,
            off_inj + r_inj_diag,
            off_inj + self.inj_r,
            off_inj + r_inj_diag,
            off_br + self.br_r,
            off_br + r_br_diag,
            off_br + self.br_r,
            off_br + r_br_diag,
            scaled_rows,
            off_scale + np.arange(len(rows_scale)),
        ]
        parts_c = [
            self.col_vm[self.el_vm],
            self.col_va[self.el_va],
            self.col_va[self.inj_c],
            self.col_va[self.el_inj],
            self.col_vm[self.inj_c],
            self.col_vm[self.el_inj],
            self.col_va[self.br_c],
            self.col_va[self.end_bus],
            self.col_vm[self.br_c],
            self.col_vm[self.end_bus],
            np.full(len(scaled_rows) + len(rows_scale), self.col_scale, dtype=np.int64),
        ]
        rows_all = np.concatenate(parts_r)
        cols_all = np.concatenate(parts_c)
        self.keep = cols_all >= 0  # entries on fixed slack angles drop out
        self.rows = rows_all[self.keep]
        self.cols = cols_all[self.keep]
        self.flat = self.rows * self.n_state + self.cols
        self.dense = grid.ops.dense
        self.shape = (self.size, self.n_state)
        self.gain_solver = grid.ops.gain_solver(self.rows, self.cols, self.shape)

    def permute(self, ms: MeasurementSet) -> tuple[FloatArray, FloatArray, BoolArray]:
        """Values, sigmas and angle flags in the model's row order."""
        return (
            ms.value[self.order],
            ms.sigma[self.order],
            np.isin(ms.kind[self.order], ANGLE_KINDS),
        )

    def evaluate(self, v: ComplexArray, scale: float = 1.0) -> tuple[FloatArray, Matrix]:
        """h(v, scale) and the Jacobian, rows in `order`, columns [free angles, magnitudes,
        load scale when the set has its prior]."""
        vm = np.abs(v)
        vnorm = v / vm
        jv = 1j * v
        values: list[FloatArray] = [np.ones(len(self.el_vm)), np.ones(len(self.el_va))]
        h_parts: list[FloatArray] = [vm[self.el_vm], np.angle(v[self.el_va])]

        # injections
        a = self.alpha_inj
        v_el = v[self.el_inj]
        yv = self.inj_y * v[self.inj_c]
        i_el = np.bincount(self.inj_r, weights=yv.real, minlength=self.n_inj) + 1j * np.bincount(
            self.inj_r, weights=yv.imag, minlength=self.n_inj
        )
        h_parts.append(np.real(a * v_el * np.conj(i_el)))
        a_r = a[self.inj_r]
        values += [
            np.real(-a_r * jv[self.el_inj][self.inj_r] * np.conj(yv)),
            np.real(a * jv[self.el_inj] * np.conj(i_el)),
            np.real(a_r * v_el[self.inj_r] * np.conj(self.inj_y * vnorm[self.inj_c])),
            np.real(a * np.conj(i_el) * vnorm[self.el_inj]),
        ]

        # branch ends
        yv = self.br_y * v[self.br_c]
        i_br = np.bincount(self.br_r, weights=yv.real, minlength=self.n_br) + 1j * np.bincount(
            self.br_r, weights=yv.imag, minlength=self.n_br
        )
        v_end = v[self.end_bus]
        s_br = v_end * np.conj(i_br)
        h_parts.append(
            np.where(
                self.is_flow,
                np.where(self.is_p_flow, s_br.real, s_br.imag),
                np.where(self.is_imag, np.abs(i_br), np.angle(i_br)),
            )
        )
        mag = np.maximum(np.abs(i_br), 1e-9)
        # d|I| = Re(conj(I)/|I| dI); d angle(I) = Im(conj(I)/|I|^2 dI) = Re(-j conj(I)/|I|^2 dI)
        beta = np.where(
            self.is_flow,
            0.0 + 0j,
            np.where(self.is_imag, np.conj(i_br) / mag, -1j * np.conj(i_br) / mag**2),
        )
        a = self.alpha_br
        di_va = yv * 1j  # Y_rc * j v_c
        di_vm = self.br_y * vnorm[self.br_c]
        av, b_r = (a * v_end)[self.br_r], beta[self.br_r]
        values += [
            np.real(av * np.conj(di_va) + b_r * di_va),
            np.real(a * np.conj(i_br) * jv[self.end_bus]),
            np.real(av * np.conj(di_vm) + b_r * di_vm),
            np.real(a * np.conj(i_br) * vnorm[self.end_bus]),
            self.scale_values,
        ]
        h_parts.append(np.full(self.n_scale, scale))
        data = np.concatenate(values)[self.keep]
        if self.dense:
            jac: Matrix = np.bincount(
                self.flat, weights=data, minlength=self.size * self.n_state
            ).reshape(self.shape)
        else:
            jac = sp.csr_matrix((data, (self.rows, self.cols)), shape=self.shape)
        h = np.concatenate(h_parts)
        if self.has_scale:
            h -= (scale - 1.0) * self.share
        return h, jac

    def update(self, v: ComplexArray, dx: FloatArray, scale: float) -> tuple[ComplexArray, float]:
        """Apply a state correction."""
        va = np.angle(v)
        vm = np.abs(v)
        na = len(self.angle_states)
        n = len(vm)
        va[self.angle_states] += dx[:na]
        vm += dx[na : na + n]
        v_new: ComplexArray = vm * np.exp(1j * va)
        return v_new, scale + float(dx[-1]) if self.has_scale else scale


class WlsCache:
    """A stream's memory between windows: models and observability per measurement structure.

    The set of measurements of a stream rarely changes, so planning the measurement functions and
    the rank check (the costliest steps) run once per structure, not once per window.
    """

    def __init__(self, grid: GridModel, *, max_entries: int = 256) -> None:
        self.grid = grid
        self.max_entries = max_entries
        self._models: dict[bytes, _Model] = {}
        self._observable: set[bytes] = set()

    def model(self, ms: MeasurementSet) -> _Model:
        """The planned model of this structure."""
        key = _structure(ms)
        model = self._models.get(key)
        if model is None:
            if len(self._models) >= self.max_entries:
                self._models.clear()
            model = self._models[key] = _Model(self.grid, ms)
        return model

    def is_observable(self, ms: MeasurementSet) -> bool:
        """True when this structure has passed the rank check before."""
        return _structure(ms) in self._observable

    def mark_observable(self, ms: MeasurementSet) -> None:
        """Remember a structure that passed the rank check."""
        if len(self._observable) >= self.max_entries:
            self._observable.clear()
        self._observable.add(_structure(ms))


@lru_cache(maxsize=1024)
def chi2_threshold(dof: int, *, confidence: float) -> float:
    """The chi-square quantile a weighted residual sum is tested against."""
    return float(chi2.ppf(confidence, dof)) if dof > 0 else 0.0


def _structure(ms: MeasurementSet) -> bytes:
    # which rows the load scale touches is structure too (a forecast pseudo-injection has none)
    scaled: BoolArray = ms.load_share != 0.0
    return ms.kind.tobytes() + ms.element.tobytes() + ms.side.tobytes() + scaled.tobytes()


def _check_observable(
    model: _Model, ms: MeasurementSet, v0: ComplexArray, cache: WlsCache | None
) -> None:
    if cache is not None and cache.is_observable(ms):
        return
    if ms.size < model.n_state:
        raise NotObservableError(f"{ms.size} measurements for {model.n_state} state variables")
    _h, jac = model.evaluate(v0)
    if model.n_state <= 2000:
        h = model.grid.ops.to_dense(jac)
        rank = int(np.linalg.matrix_rank(h))
        if rank < model.n_state:
            raise NotObservableError(
                f"measurement Jacobian has rank {rank} < {model.n_state} state variables; "
                + observability_advice(model, h, rank)
            )
    if cache is not None:
        cache.mark_observable(ms)


def observability_advice(model: _Model, h: FloatArray, rank: int) -> str:
    """Which buses are not observable and where PMUs (a voltage phasor each) would make them so.

    The buses are those whose states move in the Jacobian's null space (a change there changes
    no measurement); the PMUs are chosen greedily among them, each the one that raises the rank
    most, until the rank is full (at most 10 named)."""
    grid, n = model.grid, model.grid.n_bus
    _u, _s, vt = np.linalg.svd(h, full_matrices=True)
    null = vt[rank:]
    moving = np.max(np.abs(null), axis=0) > 1e-8
    na = len(model.angle_states)
    buses = set(model.angle_states[np.flatnonzero(moving[:na])].tolist())
    buses |= set((np.flatnonzero(moving[na : na + n])).tolist())
    names = {idx: name for name, idx in grid.named_buses}
    unobservable = sorted(buses)
    listed = ", ".join(names.get(b, f"aux {b}") for b in unobservable[:20])
    more = f" and {len(unobservable) - 20} more" if len(unobservable) > 20 else ""
    proposals: list[str] = []
    current, current_rank = h, rank
    candidates = [b for b in unobservable if b in names]  # a PMU goes to a real bus
    while current_rank < model.n_state and candidates and len(proposals) < 10:
        best: tuple[int, int, FloatArray] | None = None
        for bus in candidates:
            rows = np.zeros((2, model.n_state))
            rows[0, model.col_vm[bus]] = 1.0
            if model.col_va[bus] >= 0:
                rows[1, model.col_va[bus]] = 1.0
            trial = np.vstack([current, rows])
            trial_rank = int(np.linalg.matrix_rank(trial))
            if best is None or trial_rank > best[1]:
                best = (bus, trial_rank, trial)
        assert best is not None
        if best[1] == current_rank:
            break
        bus, current_rank, current = best
        candidates.remove(bus)
        proposals.append(names[bus])
    advice = (
        f"a PMU at {', '.join(proposals)} would make it observable"
        if current_rank == model.n_state and proposals
        else "more measurements are needed (injections or flows at them)"
    )
    return f"not observable: {listed}{more} ({len(unobservable)} of {n} buses); {advice}"


@dataclass(frozen=True)
class _Fit:
    v: ComplexArray
    scale: float
    iterations: int
    residual: FloatArray  # in model row order
    sigma: FloatArray  # in model row order
    jac: Matrix
    model: _Model


def _solve_once(
    grid: GridModel,
    ms: MeasurementSet,
    v0: ComplexArray,
    options: WlsOptions,
    cache: WlsCache | None,
    scale0: float = 1.0,
) -> _Fit:
    model = cache.model(ms) if cache is not None else _Model(grid, ms)
    _check_observable(model, ms, v0, cache)
    value, sigma, angle = model.permute(ms)
    weights = 1.0 / sigma**2
    v, scale = v0.copy(), scale0
    for iteration in range(1, options.max_iterations + 1):
        h, jac = model.evaluate(v, scale)
        r = value - h
        r[angle] = (r[angle] + np.pi) % (2.0 * np.pi) - np.pi
        try:
            dx = model.gain_solver.solve(jac, weights=weights, rhs=jac.T @ (weights * r))
        except (RuntimeError, np.linalg.LinAlgError, ValueError) as exc:
            raise NotObservableError(f"gain matrix is singular: {exc}") from exc
        if not np.all(np.isfinite(dx)):
            raise NotObservableError("gain matrix is singular (non-finite update)")
        v, scale = model.update(v, dx, scale)
        if np.max(np.abs(dx)) < options.tolerance:
            # the step is below tolerance: the linearised residual is exact to O(dx^2)
            return _Fit(v, scale, iteration, r - jac @ dx, sigma, jac, model)
    raise ConvergenceError(f"WLS did not converge in {options.max_iterations} iterations")


def _normalized_residuals(sigma: FloatArray, r: FloatArray, jac: Matrix, ops: Ops) -> FloatArray:
    h = ops.to_dense(jac)
    w = 1.0 / sigma**2
    gain = h.T @ (w[:, None] * h)
    # diag(H G^-1 H^T) without forming the m x m product
    omega = np.clip(sigma**2 - np.einsum("ij,ji->i", h, np.linalg.solve(gain, h.T)), 0.0, None)
    rn = np.zeros_like(r)
    ok = omega > 1e-12 * sigma**2
    rn[ok] = np.abs(r[ok]) / np.sqrt(omega[ok])
    return rn


def _with_residuals(
    result: WlsResult, fit: _Fit, ms: MeasurementSet, grid: GridModel, options: WlsOptions
) -> WlsResult:
    """The result with every measurement's normalised residual, when the options ask for it."""
    if not options.residuals:
        return result
    rn = _normalized_residuals(fit.sigma, fit.residual, fit.jac, grid.ops)
    order = fit.model.order
    values = {ms.label[int(order[row])]: round(float(rn[row]), 4) for row in range(len(order))}
    return replace(result, normalized_residuals=values)


def residual_variances(grid: GridModel, *, ms: MeasurementSet, v: ComplexArray) -> FloatArray:
    """Variance of each measurement's residual at state v (in the set's order).

    Near zero for a critical measurement: an error in it cannot show in any residual.
    """
    model = _Model(grid, ms)
    _h, jac = model.evaluate(v)
    _value, sigma, _angle = model.permute(ms)
    h = grid.ops.to_dense(jac)
    gain = h.T @ ((1.0 / sigma**2)[:, None] * h)
    omega = np.clip(sigma**2 - np.einsum("ij,ji->i", h, np.linalg.solve(gain, h.T)), 0.0, None)
    out: FloatArray = np.empty_like(omega)
    out[model.order] = omega
    return out


def solve_wls(
    grid: GridModel,
    *,
    ms: MeasurementSet,
    options: WlsOptions,
    v0: ComplexArray | None = None,
    scale0: float | None = None,
    cache: WlsCache | None = None,
) -> WlsResult:
    """Estimate bus voltages; remove bad data by largest normalized residual while chi2 fails.

    Starts from `v0` and `scale0` (the previous window's state and load scale in a stream) or
    the grid's nominal power flow;
    `cache` keeps planned models and observability per measurement structure between calls.
    """
    if not np.any(~ms.pseudo & ~ms.exact):
        raise NotObservableError("no real measurement in the window, only pseudo-measurements")
    start = grid.v_nominal if v0 is None else v0
    scale = 1.0 if scale0 is None or not np.isfinite(scale0) else scale0
    removed: list[str] = []
    while True:
        try:
            fit = _solve_once(grid, ms, start, options, cache, scale)
        except ConvergenceError:
            if v0 is None or start is grid.v_nominal:
                raise
            start, scale = grid.v_nominal, 1.0  # a stale warm start: once more from nominal
            fit = _solve_once(grid, ms, start, options, cache, scale)
        objective = float(np.sum((fit.residual / fit.sigma) ** 2))
        dof = ms.size - fit.model.n_state
        threshold = chi2_threshold(dof, confidence=options.chi2_confidence)
        result = WlsResult(
            v=fit.v,
            iterations=fit.iterations,
            objective=objective,
            dof=dof,
            chi2_threshold=threshold,
            bad_data=removed,
            measurements=ms,
            load_scale=fit.scale if fit.model.has_scale else None,
        )
        # the normalised-residual test needs the residual covariance: every window on small
        # (dense) grids; on large ones only when a plain weighted residual already exceeds the
        # limit (r_N >= |r| / sigma, so that is a sure sign of bad data)
        lnr_test = options.lnr_detection is not None and (
            grid.ops.dense
            or float(np.max(np.abs(fit.residual) / fit.sigma)) >= options.lnr_detection
        )
        if (
            (result.passes_chi2 and not lnr_test)
            or not options.bad_data
            or len(removed) >= options.max_bad_data
            or ms.size > 5000
        ):
            return _with_residuals(result, fit, ms, grid, options)
        rn = _normalized_residuals(fit.sigma, fit.residual, fit.jac, grid.ops)
        rn[ms.never_bad[fit.model.order]] = 0.0  # physics and the scale prior: never bad data
        worst_row = int(np.argmax(rn))
        limit = options.lnr_threshold
        if result.passes_chi2 and options.lnr_detection is not None:
            limit = max(limit, options.lnr_detection)
        if rn[worst_row] < limit:
            return _with_residuals(result, fit, ms, grid, options)
        worst = int(fit.model.order[worst_row])
        candidate = ms.without(worst)
        try:
            _check_observable(_Model(grid, candidate), candidate, fit.v, cache)
        except NotObservableError:
            return _with_residuals(result, fit, ms, grid, options)
        removed = [*removed, ms.label[worst]]
        ms = candidate
        start, scale = fit.v, fit.scale
