"""One seam for matrix work: dense numpy for small grids, scipy sparse for large ones."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import qdldl
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

__all__ = ["DENSE_MAX_BUSES", "Ops", "dense_ops", "sparse_ops"]

# Below this size dense BLAS beats sparse bookkeeping by an order of magnitude.
DENSE_MAX_BUSES = 100

Matrix = Any  # numpy ndarray or scipy sparse matrix, as the backend decides


@dataclass(frozen=True)
class Ops:
    """The handful of matrix operations the power flow and the estimator need (positional
    arguments, as the numpy and scipy calls they stand for)."""

    dense: bool

    def matrix(self, m: Any) -> Matrix:
        """A grid matrix in this backend's form."""
        if self.dense:
            return m.toarray() if sp.issparse(m) else np.asarray(m)
        return sp.csr_matrix(m)

    def scale_rows(self, x: np.ndarray, m: Matrix) -> Matrix:
        """diag(x) @ m."""
        return x[:, None] * m if self.dense else sp.csr_matrix(sp.diags(x) @ m)

    def scale_cols(self, m: Matrix, x: np.ndarray) -> Matrix:
        """m @ diag(x)."""
        return m * x[None, :] if self.dense else sp.csr_matrix(m @ sp.diags(x))

    def diag(self, x: np.ndarray) -> Matrix:
        """A diagonal matrix."""
        return np.diag(x) if self.dense else sp.csr_matrix(sp.diags(x))

    def zeros(self, rows: int, cols: int) -> Matrix:
        """An all-zero block."""
        return np.zeros((rows, cols)) if self.dense else sp.csr_matrix((rows, cols))

    def unit_rows(self, index: np.ndarray, n: int) -> Matrix:
        """Rows of the identity."""
        if self.dense:
            out = np.zeros((len(index), n))
            out[np.arange(len(index)), index] = 1.0
            return out
        return sp.csr_matrix(
            (np.ones(len(index)), (np.arange(len(index)), index)), shape=(len(index), n)
        )

    def vstack(self, blocks: list[Matrix]) -> Matrix:
        """Stack row blocks."""
        return np.vstack(blocks) if self.dense else sp.vstack(blocks, format="csr")

    def hstack(self, blocks: list[Matrix]) -> Matrix:
        """Stack column blocks."""
        return np.hstack(blocks) if self.dense else sp.hstack(blocks, format="csr")

    def solve(self, a: Matrix, b: np.ndarray) -> np.ndarray:
        """Solve a x = b; a singular matrix raises numpy's LinAlgError or gives non-finite x."""
        if self.dense:
            return np.asarray(np.linalg.solve(a, b))
        return np.asarray(spla.spsolve(sp.csc_matrix(a), b))

    def gain_solver(self, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> GainSolver:
        """A solver of (H^T W H) x = b for Jacobians H with this fixed (row, col) pattern."""
        return GainSolver(self.dense, rows=rows, cols=cols, shape=shape)

    def to_dense(self, m: Matrix) -> np.ndarray:
        """A dense copy (for rank checks and residual covariance)."""
        return np.asarray(m.toarray() if sp.issparse(m) else m)


dense_ops = Ops(dense=True)
sparse_ops = Ops(dense=False)


class GainSolver:
    """Solves the WLS normal equations; on sparse grids with one symbolic factorisation.

    The gain's sparsity pattern follows from the Jacobian's, fixed per measurement structure, so
    the sparse path orders and analyses it once (an LDL^T factorisation with AMD ordering) and
    each iteration only refactors numerically. Entries that happen to be zero keep their place
    (a 1e-300 floor), so the pattern never changes between iterations.
    """

    def __init__(
        self, dense: bool, *, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]
    ) -> None:
        self.dense = dense
        self._solver: Any = None
        if not dense:
            ones = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)
            self._floor = sp.csc_matrix(ones.T @ ones) * 1e-300

    def solve(self, jac: Matrix, *, weights: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        """x of (jac^T diag(weights) jac) x = rhs."""
        if self.dense:
            gain = jac.T @ (weights[:, None] * jac)
            return np.asarray(sla.solve(gain, rhs, assume_a="pos", check_finite=False))
        gain = sp.csc_matrix(jac.T @ sp.diags(weights) @ jac) + self._floor
        gain.sort_indices()
        if self._solver is None:
            self._solver = qdldl.Solver(gain)
        else:
            self._solver.update(gain)
        return np.asarray(self._solver.solve(rhs))
