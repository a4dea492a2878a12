"""One seam for matrix work: dense numpy for small grids, scipy sparse for large ones."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

__all__ = ["DENSE_MAX_BUSES", "Ops", "dense_ops", "sparse_ops"]

# Below this size dense BLAS beats sparse bookkeeping by an order of magnitude.
DENSE_MAX_BUSES = 100

Matrix = Any  # numpy ndarray or scipy sparse matrix, as the backend decides


@dataclass(frozen=True)
class Ops:
    """The handful of matrix operations the power flow and the estimator need."""

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

    def factorize(self, a: Matrix) -> Callable[[np.ndarray], np.ndarray]:
        """A solver for a x = b with `a` factorised once (LU; SuperLU with COLAMD if sparse)."""
        if self.dense:
            lu = sla.lu_factor(a, check_finite=False)
            return lambda b: np.asarray(sla.lu_solve(lu, b, check_finite=False))
        factor = spla.splu(sp.csc_matrix(a), permc_spec="COLAMD")
        return lambda b: np.asarray(factor.solve(b))

    def to_dense(self, m: Matrix) -> np.ndarray:
        """A dense copy (for rank checks and residual covariance)."""
        return np.asarray(m.toarray() if sp.issparse(m) else m)


dense_ops = Ops(dense=True)
sparse_ops = Ops(dense=False)
