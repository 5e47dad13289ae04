"""Solves with symmetric positive (semi)definite kernel matrices, stated regularization.

Every learning formula of chapters 6 and 10 contracts with the inverse of a training-set
block -- ``K~^{a1 a2}`` (6.35) or ``Theta~^{a1 a2}`` (10.26) -- and the tilde convention
(spec/04 §0.1) means: invert the A-block, never slice an inverse.  Such blocks become
ill-conditioned for near-duplicate inputs, many inputs, or deep networks whose kernel is
nearly constant.  :class:`SPDSolver` handles all of them the same way:

1. the matrix is checked (finite, square, symmetric to ``1e-10`` relative) and symmetrized;
2. a Cholesky factorization is tried, with LAPACK's reciprocal condition estimate (``pocon``);
3. if Cholesky fails or the condition number exceeds ``1/rcond``, the matrix is diagonalized
   (``eigh``) and eigenvalues below ``rcond * lambda_max`` are treated as exactly zero: the
   solve is the Moore-Penrose pseudo-inverse, which is the ``ridge -> 0+`` limit of
   ``(A + ridge I)^{-1}`` -- the minimum-norm interpolant of the kernel method (spec/04 §3.9);
4. a :class:`ConditioningWarning` reports any condition number above ``warn_cond`` (digits
   are lost), and a clearly negative eigenvalue is a ValueError (not a kernel).

No result is ever a silent NaN: a non-finite output raises.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla
from scipy.linalg import lapack

__all__ = ["ConditioningWarning", "SPDSolver", "DEFAULT_RCOND", "DEFAULT_WARN_COND"]

DEFAULT_RCOND = 1e-13
DEFAULT_WARN_COND = 1e10
_SYMMETRY_TOL = 1e-10
_NEGATIVE_TOL = 1e-8


class ConditioningWarning(UserWarning):
    """A kernel block is ill-conditioned: results lose about ``log10(cond)`` digits."""


def _as_square(a: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square matrix, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite entries")
    scale = max(float(np.max(np.abs(arr))), np.finfo(float).tiny)
    asym = float(np.max(np.abs(arr - arr.T)))
    if asym > _SYMMETRY_TOL * scale:
        raise ValueError(
            f"{name} must be symmetric (a kernel); max |A - A^T| = {asym:.3g} "
            f"relative {asym / scale:.3g} > {_SYMMETRY_TOL:g}"
        )
    return 0.5 * (arr + arr.T)


@dataclass
class SPDSolver:
    """Factorization of a symmetric positive (semi)definite matrix ``A`` (plus ``ridge I``).

    Parameters
    ----------
    matrix : ndarray, shape (N, N)
        A kernel block, e.g. ``K~`` or ``Theta~`` on the training set.
    ridge : float, default 0
        Added to the diagonal before factoring: observation noise ``sigma_eps^2`` (6.10) or a
        ridge ``2a`` (10.124).
    rcond : float, default 1e-13
        Eigenvalues below ``rcond * lambda_max`` count as zero (pseudo-inverse).
    warn_cond : float, default 1e10
        Condition numbers above this emit a :class:`ConditioningWarning`.
    name : str
        Used in messages.

    Attributes
    ----------
    method : {"cholesky", "eigh"}
        ``"eigh"`` when the pseudo-inverse regularization was needed.
    cond : float
        Condition number (``inf`` when the matrix is singular to working precision).
    rank : int
        Numerical rank.
    """

    matrix: np.ndarray
    ridge: float = 0.0
    rcond: float = DEFAULT_RCOND
    warn_cond: float = DEFAULT_WARN_COND
    name: str = "A"
    method: str = field(init=False, default="cholesky")
    cond: float = field(init=False, default=1.0)
    rank: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        if not np.isfinite(self.ridge) or self.ridge < 0:
            raise ValueError(f"ridge (noise variance) must be finite and >= 0, got {self.ridge!r}")
        if not 0 < self.rcond < 1:
            raise ValueError(f"rcond must be in (0, 1), got {self.rcond!r}")
        a = _as_square(self.matrix, self.name)
        a = a + self.ridge * np.eye(a.shape[0])
        self.matrix = a
        self._chol: np.ndarray | None = None
        try:
            c = sla.cholesky(a, lower=True)
            anorm = float(np.max(np.sum(np.abs(a), axis=0)))
            rc, info = lapack.dpocon(c.T.copy(), anorm, uplo="U")  # type: ignore[attr-defined]
            est = np.inf if info != 0 or rc <= 0 else 1.0 / rc
            if est < 1.0 / self.rcond:
                self._chol, self.cond, self.rank = c, float(est), a.shape[0]
        except np.linalg.LinAlgError:
            pass
        if self._chol is None:
            self._eigh(a)
        if self.cond > self.warn_cond:
            reg = (
                f"eigenvalues below {self.rcond:g} x the largest treated as zero "
                f"(pseudo-inverse, the ridge -> 0+ limit; rank {self.rank} of {a.shape[0]})"
                if self.method == "eigh"
                else "Cholesky"
            )
            warnings.warn(
                f"{self.name} is ill-conditioned (condition number {self.cond:.3g}): results "
                f"lose about {np.log10(self.cond) if np.isfinite(self.cond) else 16:.0f} digits; "
                f"solved by {reg}. Near-duplicate inputs or a nearly constant deep kernel cause "
                "this; observation noise / a ridge regularizes it",
                ConditioningWarning,
                stacklevel=3,
            )

    def _eigh(self, a: np.ndarray) -> None:
        w, u = np.linalg.eigh(a)
        wmax = float(w[-1])
        if wmax <= 0:
            raise ValueError(f"{self.name} has no positive eigenvalue: it is not a kernel")
        if w[0] < -_NEGATIVE_TOL * wmax:
            raise ValueError(
                f"{self.name} is not positive semidefinite (eigenvalue {w[0]:.3g} against "
                f"largest {wmax:.3g}); a kernel matrix must be"
            )
        keep = w > self.rcond * wmax
        self.method = "eigh"
        self.rank = int(np.sum(keep))
        self.cond = wmax / float(w[0]) if self.rank == a.shape[0] else np.inf
        self._u = u[:, keep]
        self._w = w[keep]

    @property
    def size(self) -> int:
        return self.matrix.shape[0]

    @property
    def full_rank(self) -> bool:
        return self.rank == self.size

    def solve(self, b: np.ndarray) -> np.ndarray:
        """``A^{-1} b`` (pseudo-inverse when rank-deficient); ``b`` of shape (N,) or (N, k)."""
        b = np.asarray(b, dtype=np.float64)
        if b.shape[0] != self.size:
            raise ValueError(f"right-hand side has {b.shape[0]} rows, {self.name} has {self.size}")
        if self._chol is not None:
            x = sla.cho_solve((self._chol, True), b)
        else:
            x = self._u @ ((self._u.T @ b) / self._w.reshape((-1,) + (1,) * (b.ndim - 1)))
        return _finite(x, f"solve with {self.name}")

    def inverse(self) -> np.ndarray:
        """``A^{-1}`` (the tilde-inverse when ``A`` is a training block)."""
        return self.solve(np.eye(self.size))

    def logdet(self) -> float:
        """``log det A``; a ValueError when ``A`` is singular to working precision."""
        if self._chol is not None:
            return float(2.0 * np.sum(np.log(np.diag(self._chol))))
        if not self.full_rank:
            raise ValueError(
                f"{self.name} is singular to working precision (rank {self.rank} of "
                f"{self.size}): its Gaussian density has no finite log-determinant; "
                "add observation noise (noise_var > 0)"
            )
        return float(np.sum(np.log(self._w)))

    def quad(self, b: np.ndarray) -> np.ndarray:
        """``b^T A^{-1} b``; for ``b`` of shape (N, k) the (k, k) matrix."""
        b = np.asarray(b, dtype=np.float64)
        return _finite(b.T @ self.solve(b), f"quadratic form with {self.name}")


def _finite(x: np.ndarray, what: str) -> np.ndarray:
    if not np.all(np.isfinite(x)):
        raise FloatingPointError(f"{what} produced non-finite values")
    return x
