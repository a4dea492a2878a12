"""Newton-Raphson power flow on a converted grid (one slack, PQ buses), used by the emulator."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from dsotp_streams.core.grid import ComplexArray, FloatArray, GridModel
from dsotp_streams.errors import ConvergenceError

__all__ = ["dsbus_dv", "run_power_flow"]


def dsbus_dv(ybus: sp.csr_matrix, v: ComplexArray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Partial derivatives of bus injections S = V conj(Ybus V) w.r.t. angles and magnitudes."""
    ibus = ybus @ v
    diag_v = sp.diags(v)
    diag_i = sp.diags(ibus)
    diag_vnorm = sp.diags(v / np.abs(v))
    ds_dvm = diag_v @ (ybus @ diag_vnorm).conj() + diag_i.conj() @ diag_vnorm
    ds_dva = 1j * diag_v @ (diag_i - ybus @ diag_v).conj()
    return sp.csr_matrix(ds_dva), sp.csr_matrix(ds_dvm)


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
    pq = np.array([i for i in range(n) if i != grid.slack])
    v = np.ones(n, dtype=complex) if v0 is None else v0.astype(complex).copy()
    v[grid.slack] = grid.v_slack
    if v0 is None:
        v[pq] = v[pq] * np.exp(1j * np.angle(grid.v_slack))
    s_spec = p_pu + 1j * q_pu
    for _iteration in range(max_iterations + 1):
        mismatch = v * np.conj(grid.ybus @ v) - s_spec
        f = np.concatenate([mismatch.real[pq], mismatch.imag[pq]])
        if np.max(np.abs(f)) < tolerance:
            return v
        ds_dva, ds_dvm = dsbus_dv(grid.ybus, v)
        j11 = ds_dva[pq][:, pq].real
        j12 = ds_dvm[pq][:, pq].real
        j21 = ds_dva[pq][:, pq].imag
        j22 = ds_dvm[pq][:, pq].imag
        jac = sp.bmat([[j11, j12], [j21, j22]], format="csc")
        dx = spla.spsolve(jac, -f)
        va = np.angle(v)
        vm = np.abs(v)
        va[pq] += dx[: len(pq)]
        vm[pq] += dx[len(pq) :]
        v = vm * np.exp(1j * va)
    raise ConvergenceError(f"power flow did not converge in {max_iterations} iterations")
