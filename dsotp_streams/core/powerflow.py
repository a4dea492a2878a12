"""Newton-Raphson power flow on a converted grid (one slack, PQ buses), used by the emulator."""

from __future__ import annotations

import numpy as np

from dsotp_streams.core.grid import ComplexArray, FloatArray, GridModel
from dsotp_streams.core.linalg import Matrix
from dsotp_streams.errors import ConvergenceError

__all__ = ["dsbus_dv", "run_power_flow"]


def dsbus_dv(grid: GridModel, *, v: ComplexArray) -> tuple[Matrix, Matrix]:
    """Partial derivatives of bus injections S = V conj(Ybus V) w.r.t. angles and magnitudes."""
    ops, ybus = grid.ops, grid.ybus
    ibus = ybus @ v
    vnorm = v / np.abs(v)
    ds_dvm = ops.scale_rows(v, ops.scale_cols(ybus, vnorm).conj()) + ops.diag(np.conj(ibus) * vnorm)
    ds_dva = ops.diag(1j * v * np.conj(ibus)) - ops.scale_rows(
        1j * v, ops.scale_cols(ybus, v).conj()
    )
    return ds_dva, ds_dvm


def run_power_flow(
    grid: GridModel,
    *,
    p_pu: FloatArray,
    q_pu: FloatArray,
    v0: ComplexArray | None = None,
    tolerance: float = 1e-9,
    max_iterations: int = 20,
) -> ComplexArray:
    """Complex bus voltages (per unit) for net injections p_pu, q_pu (generation positive)."""
    n = grid.n_bus
    pq = np.setdiff1d(np.arange(n), grid.slacks)
    v = grid.v_nominal.copy() if v0 is None else v0.astype(complex).copy()
    v[grid.slacks] = grid.v_slacks
    s_spec = p_pu + 1j * q_pu
    for _iteration in range(max_iterations + 1):
        mismatch = v * np.conj(grid.ybus @ v) - s_spec
        f = np.concatenate([mismatch.real[pq], mismatch.imag[pq]])
        if np.max(np.abs(f)) < tolerance:
            return v
        ds_dva, ds_dvm = dsbus_dv(grid, v=v)
        a = ds_dva[pq][:, pq]
        m = ds_dvm[pq][:, pq]
        ops = grid.ops
        jac = ops.vstack([ops.hstack([a.real, m.real]), ops.hstack([a.imag, m.imag])])
        dx = ops.solve(jac, -f)
        va = np.angle(v)
        vm = np.abs(v)
        va[pq] += dx[: len(pq)]
        vm[pq] += dx[len(pq) :]
        v = vm * np.exp(1j * va)
    raise ConvergenceError(f"power flow did not converge in {max_iterations} iterations")
