"""Nonlinear (quadratic) models and nearly-kernel methods (book §11.4.1-§11.4.2; spec/06 §5-§6).

The minimal model of representation learning is the quadratic model (11.105),

    z_i(x; W) = sum_j W_ij phi_j(x) + (eps/2) sum_{j1 j2} W_ij1 W_ij2 psi_{j1 j2}(x),

with fixed *features* ``phi_j`` and symmetric *meta features* ``psi_{j1 j2}``.  Its effective
features ``phi^E_ij = dz_i/dW_ij = phi_j + eps sum_k W_ik psi_kj`` (11.107) move during training,
unlike those of a linear model (§10.4).  Everything here is a standalone tool applied to the
user's own features:

* feature space: :func:`quadratic_model_fit_direct` -- the nearly-linear solution ``W^F``
  (11.115), ``W^I`` (11.118) of direct optimization; :func:`quadratic_model_predict`
  (11.105)/(11.119); :func:`effective_features` (11.107);
* sample space: :func:`meta_kernel` ``mu`` (11.130); :func:`nearly_kernel_predict` (11.132),
  the dual of (11.119); :func:`nearly_kernel_predict_gd`, the gradient-descent solution of
  footnote 21 (11.133)-(11.136); :func:`effective_kernel` (11.138); :func:`trained_kernel`
  (11.140) and :func:`trained_kernel_predict` (11.142).

Conventions
-----------
* ``phi`` has shape ``(N, n_f + 1)``: **the caller supplies every feature column, including the
  bias feature** ``phi_0 = 1`` if wanted.  Nothing is appended; the formulas do not care which
  column (if any) is constant.
* ``psi`` has shape ``(N, n_f + 1, n_f + 1)`` and must be symmetric in its last two axes.
* Weights ``W`` have the book's index order ``W_ij``: shape ``(n_out, n_f + 1)``.
* Targets ``y`` have shape ``(N_A, n_out)`` (a 1-D array is one output component).
* Sample-space functions take the kernel ``k`` (11.126) of shape ``(N_D, N_D)`` and the meta
  kernel ``mu`` of shape ``(N_D, N_D, N_D)`` on ``D = A u B`` **with the N_A training inputs
  first** (the layout of :mod:`pdlt.learning.bayes`); ``N_A`` is read off ``y``.  Predictions are
  returned on all of ``D``, shape ``(N_D, n_out)``: the training rows reproduce ``y`` (up to
  ``O(eps^2)``).
* Overparameterized models (``n_f + 1 >= N_A``) are solved in the dual, with the training kernel
  ``k~ = Phi Phi^T`` (11.125)/(10.131): this is the regulator ``M -> M + 2a I``, ``a -> 0+``
  (10.124), i.e. the minimum-norm choice.  Every solve goes through
  :class:`~pdlt.learning.linalg.SPDSolver` (conditioning warnings, pseudo-inverse fallback).

Truncation: all formulas are first order in ``eps`` (equivalently in ``mu``, which carries the
``eps`` (11.130)); they differ from the exact optimum of the quadratic model at ``O(eps^2)``.

Erratum (spec/06 §6, §10.7): the trained-kernel predictor (11.142) is **not** equal to (11.132)
at ``O(eps)`` in general.  Expanding ``(k~#)^{-1}`` to first order gives

    z#_i(x_b) - z_i^(11.132)(x_b) = 1/2 sum u_a1 u_a2 [mu_{a1 b a2} - sum k_{b a5} k~^{a5 a6}
    mu_{a1 a6 a2}] + O(eps^2),      u = k~^{-1} y_i,

i.e. ``(eps/2) sum_a u_a psi(x_a) [(1 - Pi) phi(x_b)] W^F_i`` with ``Pi`` the projector on
``span{phi(x_a)}``.  It vanishes on training inputs and on test inputs whose features lie in the
training span, but not otherwise.  (11.142) is the footnote-21 form with
``Z_A = Z_B = k~^{-1} (x) k~^{-1} / 2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .bayes import as_targets
from .kernel_learning import kernel_machine, linear_model_fit
from .linalg import SPDSolver

__all__ = [
    "QuadraticFit",
    "effective_features",
    "quadratic_model_fit_direct",
    "quadratic_model_predict",
    "meta_kernel",
    "nearly_kernel_predict",
    "nearly_kernel_predict_gd",
    "effective_kernel",
    "trained_kernel",
    "trained_kernel_predict",
]

_SYM_TOL = 1e-10


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def _check_eps(eps: float) -> float:
    try:
        e = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"eps must be a real number, got {eps!r}") from None
    if not np.isfinite(e):
        raise ValueError(f"eps must be finite, got {eps!r}")
    return e


def _check_phi(phi: Any, name: str = "phi") -> np.ndarray:
    p = np.asarray(phi, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(
            f"{name} must have shape (n_samples, n_f + 1) (features, bias column included by "
            f"the caller), got {p.shape}"
        )
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} contains NaN or infinite entries")
    return p


def _check_psi(psi: Any, n_samples: int, n_feat: int, name: str = "psi") -> np.ndarray:
    s = np.asarray(psi, dtype=np.float64)
    if s.shape != (n_samples, n_feat, n_feat):
        raise ValueError(
            f"{name} must have shape (n_samples, n_f + 1, n_f + 1) = "
            f"({n_samples}, {n_feat}, {n_feat}) to match phi, got {s.shape}"
        )
    if not np.all(np.isfinite(s)):
        raise ValueError(f"{name} contains NaN or infinite entries")
    scale = max(float(np.max(np.abs(s))), np.finfo(float).tiny)
    asym = float(np.max(np.abs(s - np.swapaxes(s, 1, 2))))
    if asym > _SYM_TOL * scale:
        raise ValueError(
            f"{name} must be symmetric in its last two axes (meta features psi_{{j1 j2}} = "
            f"psi_{{j2 j1}}, (11.105)); max |psi - psi^T| = {asym:.3g} (relative "
            f"{asym / scale:.3g})"
        )
    return 0.5 * (s + np.swapaxes(s, 1, 2))


def _check_features(phi: Any, psi: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _check_phi(phi)
    return p, _check_psi(psi, p.shape[0], p.shape[1])


def _check_W(W: Any, n_feat: int, name: str = "W") -> np.ndarray:
    w = np.asarray(W, dtype=np.float64)
    if w.ndim == 1:
        w = w[None, :]
    if w.ndim != 2 or w.shape[1] != n_feat:
        raise ValueError(
            f"{name} must have shape (n_out, n_f + 1) = (n_out, {n_feat}) (book order W_ij), "
            f"got {np.shape(W)}"
        )
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{name} contains NaN or infinite entries")
    return w


def _check_kernels(k: Any, mu: Any, y: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate ``k`` (N_D, N_D), ``mu`` (N_D, N_D, N_D) on D (training first) and ``y``."""
    y = as_targets(y, name="y")
    n_A = y.shape[0]
    kk = np.asarray(k, dtype=np.float64)
    if kk.ndim != 2 or kk.shape[0] != kk.shape[1] or kk.shape[0] < n_A:
        raise ValueError(
            f"k must be a square (N_D, N_D) kernel on D with the {n_A} training inputs first, "
            f"got shape {kk.shape}"
        )
    if not np.all(np.isfinite(kk)):
        raise ValueError("k contains NaN or infinite entries")
    scale = max(float(np.max(np.abs(kk))), np.finfo(float).tiny)
    if float(np.max(np.abs(kk - kk.T))) > _SYM_TOL * scale:
        raise ValueError("k must be symmetric (a kernel, (11.126))")
    n_D = kk.shape[0]
    m = np.asarray(mu, dtype=np.float64)
    if m.shape != (n_D, n_D, n_D):
        raise ValueError(
            f"mu must have shape (N_D, N_D, N_D) = ({n_D}, {n_D}, {n_D}) to match k, got {m.shape}"
        )
    if not np.all(np.isfinite(m)):
        raise ValueError("mu contains NaN or infinite entries")
    mscale = max(float(np.max(np.abs(m))), np.finfo(float).tiny)
    if float(np.max(np.abs(m - np.swapaxes(m, 1, 2)))) > _SYM_TOL * mscale:
        raise ValueError(
            "mu must be symmetric in its last two indices, mu_{d0 d1 d2} = mu_{d0 d2 d1} (11.130)"
        )
    return 0.5 * (kk + kk.T), 0.5 * (m + np.swapaxes(m, 1, 2)), y


class _Dual:
    """``k~^{-1}`` contractions shared by the sample-space formulas."""

    def __init__(self, k: np.ndarray, n_A: int) -> None:
        self.n = n_A
        self.solver = SPDSolver(k[:n_A, :n_A], name="k~ (training block of the kernel, 11.126)")
        # P_{d a} = sum_a' k_{d a'} k~^{a' a}: the kernel-machine "projector" on D
        self.P = self.solver.solve(k[:n_A, :]).T

    def bracket_B(self, mu: np.ndarray) -> np.ndarray:
        """``mu_{d a1 a2} - sum k_{d a5} k~^{a5 a6} mu_{a6 a1 a2}``, shape (N_D, N_A, N_A)."""
        n = self.n
        return mu[:, :n, :n] - np.einsum("dc,cxy->dxy", self.P, mu[:n, :n, :n])

    def bracket_A(self, mu: np.ndarray) -> np.ndarray:
        """``mu_{a1 d a2} - sum k_{d a5} k~^{a5 a6} mu_{a1 a6 a2}``, shape (N_D, N_A, N_A)."""
        n = self.n
        return np.transpose(mu[:n, :, :n], (1, 0, 2)) - np.einsum(
            "dc,xcy->dxy", self.P, mu[:n, :n, :n]
        )


# --------------------------------------------------------------------------------------------
# feature space (§11.4.1)
# --------------------------------------------------------------------------------------------


def effective_features(W: Any, phi: Any, psi: Any, eps: float) -> np.ndarray:
    """Effective features (11.107): ``phi^E_ij(x; W) = phi_j(x) + eps sum_k W_ik psi_kj(x)``.

    Parameters
    ----------
    W : array_like, shape (n_out, n_f + 1)
    phi : array_like, shape (N, n_f + 1)
    psi : array_like, shape (N, n_f + 1, n_f + 1), symmetric in the last two axes
    eps : float

    Returns
    -------
    ndarray, shape (N, n_out, n_f + 1)
        ``[n, i, j] = phi^E_ij(x_n; W) = dz_i(x_n)/dW_ij``.
    """
    p, s = _check_features(phi, psi)
    w = _check_W(W, p.shape[1])
    e = _check_eps(eps)
    return p[:, None, :] + e * np.einsum("ik,nkj->nij", w, s)


def quadratic_model_predict(
    W: Any, phi: Any, psi: Any, eps: float, *, W_I: Any = None
) -> np.ndarray:
    """Outputs of the quadratic model (11.105), or the truncated prediction (11.119).

    Without ``W_I``: ``z_i(x) = sum_j W_ij phi_j(x) + (eps/2) sum W_ij1 W_ij2 psi_j1j2(x)``,
    exact for the given weights.

    With ``W_I`` (then ``W`` is the free solution ``W^F``): the first-order prediction, second
    line of (11.119), ``sum_j (W^F_ij + W^I_ij) phi_j + (eps/2) sum W^F_ij1 W^F_ij2 psi_j1j2``;
    this is what the sample-space formula (11.132) equals identically.

    Parameters
    ----------
    W : array_like, shape (n_out, n_f + 1)
    phi : array_like, shape (N, n_f + 1)
    psi : array_like, shape (N, n_f + 1, n_f + 1), symmetric in the last two axes
    eps : float
    W_I : array_like, shape (n_out, n_f + 1), optional

    Returns
    -------
    ndarray, shape (N, n_out)
    """
    p, s = _check_features(phi, psi)
    w = _check_W(W, p.shape[1])
    e = _check_eps(eps)
    lin_w = w if W_I is None else w + _check_W(W_I, p.shape[1], "W_I")
    if lin_w.shape != w.shape:
        raise ValueError(f"W_I must have the shape of W {w.shape}, got {lin_w.shape}")
    return p @ lin_w.T + 0.5 * e * np.einsum("ij,njk,ik->ni", w, s, w, optimize=True)


@dataclass(frozen=True)
class QuadraticFit:
    """Direct-optimization solution of the quadratic model, ``W* = W^F + W^I + O(eps^2)``.

    Attributes
    ----------
    W_F : ndarray, shape (n_out, n_f + 1)
        Free solution (11.115): the linear model's minimum-norm least-squares weights.
    W_I : ndarray, shape (n_out, n_f + 1)
        Interacting solution (11.118), ``O(eps)``.
    eps : float
    overparameterized : bool
        ``n_f + 1 >= N_A`` (solved in the dual with ``k~``).
    """

    W_F: np.ndarray
    W_I: np.ndarray
    eps: float
    overparameterized: bool

    @property
    def W(self) -> np.ndarray:
        """``W* = W^F + W^I``, shape (n_out, n_f + 1)."""
        return self.W_F + self.W_I

    def predict(self, phi: Any, psi: Any, *, truncate: bool = False) -> np.ndarray:
        """Prediction (11.119) on new inputs, shape (N, n_out).

        ``truncate=False``: the model (11.105) at ``W*`` (first line of (11.119));
        ``truncate=True``: the strict first-order expression (second line), which equals the
        nearly-kernel prediction (11.132) to rounding.
        """
        if truncate:
            return quadratic_model_predict(self.W_F, phi, psi, self.eps, W_I=self.W_I)
        return quadratic_model_predict(self.W, phi, psi, self.eps)


def _min_norm_solve(Phi: np.ndarray, targets: np.ndarray, dual: bool) -> np.ndarray:
    """``sum_a t_{a i} phi_j0(x_a) (M^{-1})_{j0 j}``, shape (n_out, F), ``t`` of shape (N_A, n).

    Dual (overparameterized): ``Phi^T k~^{-1} t`` -- the ``a -> 0+`` limit of (10.124);
    primal: :func:`~pdlt.learning.kernel_learning.linear_model_fit` (``M^{-1} Phi^T t``).
    """
    if dual:
        solver = SPDSolver(Phi @ Phi.T, name="k~ (training kernel Phi Phi^T, 11.126)")
        return (Phi.T @ solver.solve(targets)).T
    return linear_model_fit(Phi, targets).T


def quadratic_model_fit_direct(
    phi_train: Any, psi_train: Any, y_train: Any, eps: float
) -> QuadraticFit:
    """Nearly-linear solution of the quadratic model by direct optimization (11.112)-(11.118).

    Free solution (11.115): ``W^F_ij = sum y_{i;a} phi_j0(x_a) (M^{-1})_{j0 j}``, with
    ``M = Phi^T Phi`` (11.113).  Interacting solution (11.118):
    ``W^I_ij = -(eps/2) sum W^F_ij1 W^F_ij2 psi_j1j2(x_a) phi_j3(x_a) (M^{-1})_{j3 j}``.

    *Overparameterized* (``n_f + 1 >= N_A``, the book's regime): ``M`` is singular and the book's
    regulator (10.124) ``M -> M + 2a I``, ``a -> 0+`` selects the minimum-norm inverse; it is
    computed in the dual, ``sum_a t_a phi(x_a) M^{-1} = Phi^T k~^{-1} t`` with
    ``k~ = Phi Phi^T``.  ``W^F`` then interpolates (11.117) and ``W* = W^F + W^I`` lies in the
    span of the training features; the training residuals are ``O(eps^2)``.

    *Underparameterized* (``n_f + 1 < N_A``, ``M`` invertible): ``W^F`` does not interpolate, so
    the two terms of (11.116) that cancel in the book's regime are kept:
    ``W^I M = eps sum_a r_{i;a} (W^F psi(x_a))_j - (eps/2) sum_a c_{i;a} phi_j(x_a)``, with
    ``r = y - W^F phi`` and ``c_{i;a} = W^F_i psi(x_a) W^F_i``.  This is the general first-order
    stationary point of (11.109).

    Parameters
    ----------
    phi_train : array_like, shape (N_A, n_f + 1)
        Training features, bias column (``phi_0 = 1``) included by the caller if wanted.
    psi_train : array_like, shape (N_A, n_f + 1, n_f + 1)
        Training meta features, symmetric in the last two axes.
    y_train : array_like, shape (N_A, n_out) or (N_A,)
    eps : float
        The small parameter of (11.105).

    Returns
    -------
    QuadraticFit
        ``W_F``, ``W_I`` of shape (n_out, n_f + 1); ``.W`` and ``.predict``.
    """
    Phi, Psi = _check_features(phi_train, psi_train)
    y = as_targets(y_train, Phi.shape[0], name="y_train")
    e = _check_eps(eps)
    n_A, n_feat = Phi.shape
    over = n_feat >= n_A
    W_F = _min_norm_solve(Phi, y, over)  # (n_out, F)
    # c_{a i} = sum W^F_ij1 W^F_ij2 psi_j1j2(x_a)
    c = np.einsum("ij,ajk,ik->ai", W_F, Psi, W_F, optimize=True)
    W_I = -0.5 * e * _min_norm_solve(Phi, c, over)
    if not over:
        r = y - Phi @ W_F.T  # (N_A, n_out)
        b = e * np.einsum("ai,ik,akj->ij", r, W_F, Psi, optimize=True)  # (n_out, F)
        solver = SPDSolver(Phi.T @ Phi, name="feature matrix M (11.113)")
        W_I = W_I + solver.solve(b.T).T
    return QuadraticFit(W_F, W_I, e, over)


# --------------------------------------------------------------------------------------------
# sample space (§11.4.2)
# --------------------------------------------------------------------------------------------


def meta_kernel(phi: Any, psi: Any, eps: float) -> np.ndarray:
    """Meta kernel (11.130): ``mu_{d0 d1 d2} = eps sum_{j1 j2} psi_j1j2(x_d0) phi_j1(x_d1)
    phi_j2(x_d2)``.

    Symmetric in ``d1 <-> d2``, ``O(eps)`` (the ``eps`` is included); footnote 20 calls it the
    differential of the kernel, ``dk``.  Memory is ``N^3``.

    Parameters
    ----------
    phi : array_like, shape (N_D, n_f + 1)
    psi : array_like, shape (N_D, n_f + 1, n_f + 1), symmetric in the last two axes
    eps : float

    Returns
    -------
    ndarray, shape (N_D, N_D, N_D)
    """
    p, s = _check_features(phi, psi)
    e = _check_eps(eps)
    t = s @ p.T  # (N, F, N): t[d0, j1, d2] = sum_j2 psi_j1j2(x_d0) phi_j2(x_d2)
    mu = e * np.einsum("bj,ajc->abc", p, t, optimize=True)
    return 0.5 * (mu + np.swapaxes(mu, 1, 2))


def nearly_kernel_predict(k: Any, mu: Any, y_train: Any) -> np.ndarray:
    """Nearly-kernel prediction of direct optimization (11.132).

    ``z_i(x_d) = sum k_{d a1} k~^{a1 a2} y_{i;a2} + 1/2 sum [mu_{d a1 a2} - sum k_{d a5}
    k~^{a5 a6} mu_{a6 a1 a2}] u_{i;a1} u_{i;a2} + O(eps^2)``, with ``u_i = k~^{-1} y_i``.

    The sample-space dual of :func:`quadratic_model_fit_direct` + (11.119) (equal to rounding
    with ``truncate=True``).  The first term is the kernel machine (10.132),
    :func:`~pdlt.learning.kernel_learning.kernel_machine`.  Quadratic in ``y``; output
    components do not mix.  On training inputs the bracket vanishes: ``z(x_a) = y_a``.

    Parameters
    ----------
    k : array_like, shape (N_D, N_D)
        Kernel (11.126) on D, training inputs first.
    mu : array_like, shape (N_D, N_D, N_D)
        Meta kernel (11.130) on D, same order.
    y_train : array_like, shape (N_A, n_out) or (N_A,)

    Returns
    -------
    ndarray, shape (N_D, n_out)
        Predictions on all of D (training rows first).
    """
    kk, m, y = _check_kernels(k, mu, y_train)
    d = _Dual(kk, y.shape[0])
    u = d.solver.solve(y)
    quad = 0.5 * np.einsum("dxy,xi,yi->di", d.bracket_B(m), u, u, optimize=True)
    return d.P @ y + quad


def nearly_kernel_predict_gd(k: Any, mu: Any, y_train: Any, eta: float) -> np.ndarray:
    """Nearly-kernel prediction of gradient descent from ``W = 0`` (footnote 21, (11.133)-(11.136)).

    Full-batch GD on the MSE (11.109) with global learning rate ``eta`` (``lambda = I``), run
    to convergence:

    ``z_i(x_d) = sum k_{d a1} k~^{a1 a2} y_{i;a2}
    + sum [mu_{a1 d a2} - sum k_{d a5} k~^{a5 a6} mu_{a1 a6 a2}] Z_A^{a1 a2 a3 a4} y_a3 y_a4
    + sum [mu_{d a1 a2} - sum k_{d a5} k~^{a5 a6} mu_{a6 a1 a2}] Z_B^{a1 a2 a3 a4} y_a3 y_a4``
    (``y_a = y_{i;a}``)

    (note the test sample in the *middle* slot of the first ``mu``), with (11.134)-(11.135)
    ``Z_A = k~^{a1 a3} k~^{a2 a4} - sum_a5 k~^{a2 a5} X_II^{a1 a5 a3 a4}``,
    ``Z_B = Z_A + (eta/2) X_II``, and (11.136) ``X_II = T^{-1}``, the inverse of the
    ``N_A^2 x N_A^2`` matrix ``T_{(a3 a4),(a5 a6)} = k~_{a3 a5} delta_{a4 a6} + delta_{a3 a5}
    k~_{a4 a6} - eta k~_{a3 a5} k~_{a4 a6}`` (symmetric; positive definite for convergent
    ``eta``).  Direct optimization (11.132) is ``Z_A = 0``, ``Z_B = k~^{-1} (x) k~^{-1} / 2``.
    Cost ``O(N_A^6)`` time, ``O(N_A^4)`` memory.

    Parameters
    ----------
    k : array_like, shape (N_D, N_D)
        Kernel on D, training inputs first.
    mu : array_like, shape (N_D, N_D, N_D)
        Meta kernel on D.
    y_train : array_like, shape (N_A, n_out) or (N_A,)
    eta : float
        Global learning rate, ``0 < eta < 2 / lambda_max(k~)`` (GD on the linear part must
        converge).

    Returns
    -------
    ndarray, shape (N_D, n_out)
    """
    kk, m, y = _check_kernels(k, mu, y_train)
    n = y.shape[0]
    eta_f = float(eta)
    kt = kk[:n, :n]
    lam_max = float(np.linalg.eigvalsh(kt)[-1])
    if not (np.isfinite(eta_f) and 0 < eta_f < 2.0 / lam_max):
        raise ValueError(
            f"eta must satisfy 0 < eta < 2 / lambda_max(k~) = {2.0 / lam_max:.6g} for gradient "
            f"descent to converge, got {eta!r}"
        )
    d = _Dual(kk, n)
    kinv = d.solver.inverse()
    eye = np.eye(n)
    T = np.kron(kt, eye) + np.kron(eye, kt) - eta_f * np.kron(kt, kt)
    X = SPDSolver(T, name="T (11.136), N_A^2 x N_A^2").inverse().reshape(n, n, n, n)
    Z_A = np.einsum("ac,bd->abcd", kinv, kinv) - np.einsum("be,aecd->abcd", kinv, X)
    Z_B = Z_A + 0.5 * eta_f * X
    term_A = np.einsum("dxy,xycf,ci,fi->di", d.bracket_A(m), Z_A, y, y, optimize=True)
    term_B = np.einsum("dxy,xycf,ci,fi->di", d.bracket_B(m), Z_B, y, y, optimize=True)
    return d.P @ y + term_A + term_B


def effective_kernel(k: Any, mu: Any, y_train: Any) -> np.ndarray:
    """Effective kernel at the direct-optimization solution (11.137)-(11.138).

    ``k^E_{ii;d1 d2}(theta*) = k_{d1 d2} + sum (mu_{d1 d2 a1} + mu_{d2 d1 a1}) k~^{a1 a2}
    y_{i;a2} + O(eps^2)`` -- one kernel per output component ``i`` (footnote 23).

    Parameters
    ----------
    k : array_like, shape (N_D, N_D)
        Kernel on D, training inputs first.
    mu : array_like, shape (N_D, N_D, N_D)
    y_train : array_like, shape (N_A, n_out) or (N_A,)

    Returns
    -------
    ndarray, shape (n_out, N_D, N_D)
    """
    kk, m, y = _check_kernels(k, mu, y_train)
    n = y.shape[0]
    u = SPDSolver(kk[:n, :n], name="k~ (training block of the kernel, 11.126)").solve(y)
    shift = np.einsum("pqa,ai->ipq", m[:, :, :n], u)
    return kk[None] + shift + np.swapaxes(shift, 1, 2)


def trained_kernel(k: Any, mu: Any, y_train: Any) -> np.ndarray:
    """Trained kernel (11.140): ``k#_{ii;d1 d2} = [k_{d1 d2} + k^E_{ii;d1 d2}(theta*)] / 2``.

    Returns
    -------
    ndarray, shape (n_out, N_D, N_D)
        ``k + 1/2 sum (mu_{d1 d2 a} + mu_{d2 d1 a}) u_{i;a}``, ``u = k~^{-1} y``.
    """
    kE = effective_kernel(k, mu, y_train)
    return 0.5 * (np.asarray(k, dtype=np.float64)[None] + kE)


def trained_kernel_predict(k: Any, mu: Any, y_train: Any) -> np.ndarray:
    """Trained-kernel prediction (11.141)-(11.142): ``z_i = k#_{ii;d a1} (k~#_ii)^{a1 a2} y_a2``.

    A kernel machine (:func:`~pdlt.learning.kernel_learning.kernel_machine`) per output
    component with the trained kernel ``k#_ii`` of :func:`trained_kernel`.

    .. warning::
       The book (and its footnote 25) claims this equals the nearly-kernel prediction (11.132)
       up to ``O(eps^2)``.  It does so on training inputs (both give ``y`` exactly) and on test
       inputs whose features lie in the span of the training features, but **not** for
       generic test inputs: expanding the inverse gives the ``O(eps)`` difference
       ``1/2 sum u_a1 u_a2 [mu_{a1 d a2} - sum k_{d a5} k~^{a5 a6} mu_{a1 a6 a2}]``,
       ``u = k~^{-1} y_i`` (spec/06 §6 and §10 item 7; see the module docstring).  Use
       :func:`nearly_kernel_predict` for the direct-optimization prediction.

    Parameters
    ----------
    k : array_like, shape (N_D, N_D)
        Kernel on D, training inputs first.
    mu : array_like, shape (N_D, N_D, N_D)
    y_train : array_like, shape (N_A, n_out) or (N_A,)

    Returns
    -------
    ndarray, shape (N_D, n_out)
    """
    _, _, y = _check_kernels(k, mu, y_train)
    n = y.shape[0]
    ks = trained_kernel(k, mu, y)
    out = np.empty((ks.shape[1], y.shape[1]))
    for i in range(y.shape[1]):
        out[:, i] = kernel_machine(ks[i][:, :n], ks[i][:n, :n], y[:, i])[:, 0]
    return out
