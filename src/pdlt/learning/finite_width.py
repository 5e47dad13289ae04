"""Fully-trained networks at order 1/n: algorithm projectors and the trained prediction (ch. ∞).

Everything here works per network on the *combined* index ``I = (i, delta)`` (output neuron,
input), flattened as ``I = i * N_D + delta``, with the training inputs first
(``delta < n_train``) -- the convention of :func:`pdlt.learning.kernel_learning.kernel_prediction`.
Per-network tensors are accepted in the index order of :mod:`pdlt.empirical.observables`
(one network, no ensemble axis):

* ``z[i, d]`` -- outputs ``z_{i;d}``, shape ``(n_L, N_D)``;
* ``H[i1, i2, d1, d2]`` -- NTK ``H-hat_{i1 i2; d1 d2}`` (8.5);
* ``dH[i0, i1, i2, d0, d1, d2]`` -- dNTK (11.8), symmetric under ``(i1,d1) <-> (i2,d2)``;
* ``ddI[i0, i1, i2, i3, d0, d1, d2, d3]`` and ``ddII[i1, i2, i3, i4, d1, d2, d3, d4]`` --
  the ddNTKs (∞.5), (∞.7).

Contents (spec/07 §6, §7, §11 items 7-11):

* :func:`inverting_tensors` -- ``X_I, X_II, X_III`` (∞.107), (∞.108), (∞.110);
* :func:`algorithm_projectors` -- ``Z_A, Z_B, Z_IA, Z_IB, Z_IIA, Z_IIB`` for gradient descent
  at constant ``eta`` (∞.142)-(∞.147), its ODE limit (∞.149)-(∞.153) and the two-step
  algorithm (∞.148), all from the exact eigenbasis closed forms of spec/07 §7.4;
* :func:`simulate_truncated_dynamics` -- the coupled O(1/n) dynamics (∞.81)-(∞.83) with the
  ddNTKs frozen: an independent reference for the closed forms;
* :func:`finite_time_tensors` -- the dNTK (∞.102) and interaction NTK (∞.117) after ``t``
  steps;
* :func:`fully_trained_prediction` -- ``z_{i;d}(T)`` by (∞.141)/(∞.154) with the corrected
  signs of spec/07 §13.1 (book.txt L36601-L36722, L36908-L37049);
* :func:`mean_prediction` -- the ensemble mean (∞.160)-(∞.165) with the corrections of
  spec/07 §13.1-§13.3 (book.txt L37170-L37400);
* :func:`covariance_prediction` -- the ensemble covariance (∞.166), which the book does not
  print (it shows the term (∞.167)), derived in full (spec/07 §8.2);
* :func:`finite_width_predict` -- both for a :class:`~pdlt.Network` and data, with the
  theory tensors from :func:`pdlt.theory.flow.flow` (spec/07 §8, §11).

Notation: ``H~`` is the matrix whose inverse appears in the projectors -- the training block of
the network's own ``H-hat`` over combined indices (default, spec/07 §7.5 "per-network use") or
``delta_{ij} H_{a1 a2}`` built from a given NTK mean ``H`` (the book's choice, (∞.63)).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .linalg import SPDSolver

__all__ = [
    "Projectors",
    "FullyTrainedPrediction",
    "TruncatedDynamics",
    "FiniteTimeTensors",
    "combine_indices",
    "inverting_tensors",
    "algorithm_projectors",
    "simulate_truncated_dynamics",
    "finite_time_tensors",
    "fully_trained_prediction",
    "MeanPrediction",
    "mean_prediction",
    "CovariancePrediction",
    "covariance_prediction",
    "TrainedCovariance",
    "TrainedPrediction",
    "finite_width_predict",
]

KINDS = ("gd", "ode", "two_step")


# --------------------------------------------------------------------------------------------
# index plumbing


def combine_indices(t: Any, rank: int) -> np.ndarray:
    """Flatten ``rank`` (neuron, sample) pairs into combined indices ``I = i * N_D + d``.

    Parameters
    ----------
    t : array_like, shape ``(n,) * rank + (N,) * rank``
        Neuron indices first, then sample indices (the order of
        :mod:`pdlt.empirical.observables`), e.g. ``dH[i0, i1, i2, d0, d1, d2]``.
    rank : int

    Returns
    -------
    ndarray, shape ``(n * N,) * rank``
    """
    a = np.asarray(t.detach().cpu().numpy() if hasattr(t, "detach") else t, dtype=np.float64)
    if a.ndim != 2 * rank:
        raise ValueError(f"expected a tensor with {2 * rank} axes, got shape {a.shape}")
    n, N = a.shape[0], a.shape[rank]
    if a.shape != (n,) * rank + (N,) * rank:
        raise ValueError(f"expected shape {(n,) * rank + (N,) * rank}, got {a.shape}")
    perm = [ax for k in range(rank) for ax in (k, rank + k)]
    return a.transpose(perm).reshape((n * N,) * rank)


def _train_index(n_out: int, n_data: int, n_train: int) -> np.ndarray:
    return np.array([i * n_data + a for i in range(n_out) for a in range(n_train)], dtype=int)


# --------------------------------------------------------------------------------------------
# inverting tensors and projectors (eigenbasis closed forms, spec/07 §7.4)


def _eig(H_train: Any, name: str) -> tuple[np.ndarray, np.ndarray, SPDSolver]:
    solver = SPDSolver(np.asarray(H_train, dtype=np.float64), name=name)
    if not solver.full_rank:
        raise ValueError(f"{name} is singular: the fully-trained solution needs its inverse")
    h, u = np.linalg.eigh(solver.matrix)
    if h[0] <= 0:
        raise ValueError(f"{name} must be positive definite, smallest eigenvalue {h[0]:.3g}")
    return h, u, solver


def _check_eta(eta: float | None, h_max: float, kind: str) -> float:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind != "gd":
        return 0.0
    if eta is None:
        raise ValueError("gradient descent ('gd') needs the learning rate eta; use kind='ode'")
    eta = float(eta)
    if not np.isfinite(eta) or eta <= 0 or eta * h_max >= 2:
        raise ValueError(
            f"gradient descent with eta = {eta!r} does not converge: need 0 < eta < "
            f"2/lambda_max(H~) = {2 / h_max:.6g} (footnotes 16, 19; spec/07 §13.10)"
        )
    return eta


def _four(zab: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``Z^{a1 a2 a3 a4} = sum_{ab} z(a,b) u_a^{a1} u_a^{a3} u_b^{a2} u_b^{a4}``."""
    return np.einsum("ab,pa,ra,qb,sb->pqrs", zab, u, u, u, u, optimize=True)


def _six(zabc: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``Z^{a1..a6} = sum_{abc} z(a,b,c) u_a^{a1} u_a^{a4} u_b^{a2} u_b^{a5} u_c^{a3} u_c^{a6}``."""
    return np.einsum("abc,pa,sa,qb,tb,rc,uc->pqrstu", zabc, u, u, u, u, u, u, optimize=True)


def inverting_tensors(
    H_train: Any, eta: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The inverting tensors ``X_I, X_II, X_III`` of gradient descent (∞.107)-(∞.110).

    ``X_I = H~^{-1}`` (∞.108); ``X_II`` inverts ``H~ x 1 + 1 x H~ - eta H~ x H~`` (∞.107) and
    ``X_III`` the three-slot analogue (∞.110); index ``k`` pairs with index ``k + 2``
    (``X_II``) or ``k + 3`` (``X_III``).  Computed in the eigenbasis ``H~ = sum_a h_a u_a u_a^T``:
    ``X_II = 1/D2(a,b)``, ``X_III = 1/D3(a,b,c)`` with ``D2 = h_a + h_b - eta h_a h_b`` and
    ``D3 = [1 - (1 - eta h_a)(1 - eta h_b)(1 - eta h_c)]/eta`` (spec/07 §7.4).

    Parameters
    ----------
    H_train : array_like, shape (P, P)
        Symmetric positive definite training block (sample or combined indices).
    eta : float, optional
        Learning rate; ``None`` is the ODE limit ``eta -> 0`` (∞.149)-(∞.153).

    Returns
    -------
    X_I : ndarray (P, P); X_II : ndarray (P,)*4; X_III : ndarray (P,)*6

    Raises
    ------
    ValueError
        If ``H_train`` is not positive definite or ``eta`` is outside ``(0, 2/lambda_max)``.
    """
    h, u, solver = _eig(H_train, "H~ (training block of the NTK)")
    e = 0.0 if eta is None else _check_eta(eta, float(h[-1]), "gd")
    D2, D3 = _denominators(h, e)
    return solver.inverse(), _four(1.0 / D2, u), _six(1.0 / D3, u)


def _denominators(h: np.ndarray, eta: float) -> tuple[np.ndarray, np.ndarray]:
    a, b = h[:, None], h[None, :]
    D2 = a + b - eta * a * b
    ha, hb, hc = h[:, None, None], h[None, :, None], h[None, None, :]
    D3 = (
        ha + hb + hc - eta * (ha * hb + ha * hc + hb * hc) + eta**2 * ha * hb * hc
    )  # = [1 - prod(1 - eta h)]/eta
    return D2, D3


@dataclass(frozen=True, eq=False)
class Projectors:
    """Algorithm projectors (∞.141) on a training index of size ``P``.

    Attributes
    ----------
    Z_A, Z_B : ndarray, shape (P,)*4
    Z_IA, Z_IB, Z_IIA, Z_IIB : ndarray, shape (P,)*6
    kind : str
        ``"gd"``, ``"ode"`` or ``"two_step"``.
    eta : float or None
    eigen : dict
        The eigenvalues ``h`` and the eigen-space coefficients ``z_A(a,b)`` ... ``z_IIB(a,b,c)``.
    """

    Z_A: np.ndarray
    Z_B: np.ndarray
    Z_IA: np.ndarray
    Z_IB: np.ndarray
    Z_IIA: np.ndarray
    Z_IIB: np.ndarray
    kind: str
    eta: float | None
    eigen: dict[str, np.ndarray] = field(default_factory=dict)


def algorithm_projectors(H_train: Any, eta: float | None = None, kind: str = "gd") -> Projectors:
    """The six algorithm projectors ``Z`` of (∞.141), from the eigenbasis of ``H~``.

    With ``H~ = sum_a h_a u_a u_a^T`` every projector is diagonal in the product eigenbasis,
    ``Z^{a1 a2 a3 a4} = sum_{ab} z(a,b) u_a^{a1} u_a^{a3} u_b^{a2} u_b^{a4}`` and
    ``Z^{a1..a6} = sum_{abc} z(a,b,c) u_a^{a1} u_a^{a4} u_b^{a2} u_b^{a5} u_c^{a3} u_c^{a6}``,
    with (spec/07 §7.4; ``D2, D3`` as in :func:`inverting_tensors`)::

        z_A   = (1 - eta h_a) / (h_a D2(a,b))
        z_B   = (1 - eta h_a / 2) / (h_a D2(a,b))
        z_IA  = -(1 - eta h_a)[1 + (1 - eta h_a)(1 - eta h_b)] / (2 h_a D2(a,b) D3(a,b,c))
        z_IB  = -(6 - 6 eta h_a - 3 eta h_b + eta^2 h_a^2 + 4 eta^2 h_a h_b - eta^3 h_a^2 h_b)
                / (6 h_a D2(a,b) D3(a,b,c))
        z_IIA = -(1 - eta h_a)^2 (1 - eta h_b) / (h_a D2(a,b) D3(a,b,c))     (= -Y_3)
        z_IIB = -(1 - eta h_a) / (h_a h_b D2(a,c))

    equal to the definitions (∞.142)-(∞.147) through ``X_II, X_III`` and ``Y_1..Y_4``
    (∞.135)-(∞.140) (checked in the tests).  ``kind="ode"`` is ``eta -> 0`` (∞.149)-(∞.153);
    ``kind="two_step"`` is (∞.148): ``Z_B = H~^{a1a3} H~^{a2a4}/2``,
    ``Z_IB = -H~^{a1a4} H~^{a2a5} H~^{a3a6}/6``, all others zero.

    Parameters
    ----------
    H_train : array_like, shape (P, P)
        SPD training block: ``H~`` on training inputs (P = N_A) or on combined indices
        (P = n_L N_A, block-diagonal ``delta_{ij} H~`` for the mean NTK).
    eta : float, optional
        Learning rate (``kind="gd"`` only; required there, ``0 < eta < 2/lambda_max``).
    kind : {"gd", "ode", "two_step"}

    Returns
    -------
    Projectors
    """
    h, u, _ = _eig(H_train, "H~ (training block of the NTK)")
    e = _check_eta(eta, float(h[-1]), kind)
    D2, D3 = _denominators(h, e)
    ha2, hb2 = h[:, None], h[None, :]
    ha, hb = h[:, None, None], h[None, :, None]
    D2_ab = D2[:, :, None]
    if kind == "two_step":
        zero4, zero6 = np.zeros_like(D2), np.zeros_like(D3)
        zA, zB = zero4, 0.5 / (ha2 * hb2)
        zIA, zIIA, zIIB = zero6, zero6, zero6
        zIB = -1.0 / (6.0 * ha * hb * h[None, None, :]) + zero6
    else:
        zA = (1 - e * ha2) / (ha2 * D2)
        zB = (1 - e * ha2 / 2) / (ha2 * D2)
        den = ha * D2_ab * D3
        zIA = -(1 - e * ha) * (1 + (1 - e * ha) * (1 - e * hb)) / (2 * den)
        num = 6 - 6 * e * ha - 3 * e * hb + e**2 * ha**2 + 4 * e**2 * ha * hb - e**3 * ha**2 * hb
        zIB = -num / (6 * den)
        zIIA = -((1 - e * ha) ** 2) * (1 - e * hb) / den
        zIIB = -(1 - e * ha) / (ha * hb * D2[:, None, :]) + np.zeros_like(D3)
    eig = {"h": h, "z_A": zA, "z_B": zB, "z_IA": zIA, "z_IB": zIB, "z_IIA": zIIA, "z_IIB": zIIB}
    return Projectors(
        Z_A=_four(zA, u),
        Z_B=_four(zB, u),
        Z_IA=_six(zIA, u),
        Z_IB=_six(zIB, u),
        Z_IIA=_six(zIIA, u),
        Z_IIB=_six(zIIB, u),
        kind=kind,
        eta=None if kind != "gd" else e,
        eigen=eig,
    )


# --------------------------------------------------------------------------------------------
# truncated dynamics (∞.81)-(∞.83)


@dataclass(frozen=True, eq=False)
class TruncatedDynamics:
    """Result of :func:`simulate_truncated_dynamics` (combined indices, ``Q = n_L N_D``).

    Attributes
    ----------
    z : ndarray, shape (n_L, N_D)
        Outputs after the last step.
    H, dH : ndarray, shapes (Q, Q), (Q, Q, Q)
        NTK and dNTK after the last step (combined indices).
    steps : int
        Steps taken.
    train_error : float
        ``max |z_{i;a} - y_{i;a}|`` over the training set after the last step.
    trajectory : ndarray, shape (steps + 1, n_L, N_D) or None
        The outputs at every step when ``record=True``.
    """

    z: np.ndarray
    H: np.ndarray
    dH: np.ndarray
    steps: int
    train_error: float
    trajectory: np.ndarray | None = None


def _inputs(z, H, dH, ddI, ddII, y, n_train):
    zc = np.asarray(z.detach().cpu().numpy() if hasattr(z, "detach") else z, dtype=np.float64)
    if zc.ndim != 2:
        raise ValueError(f"z must have shape (n_L, N_D), got {zc.shape}")
    n_out, n_data = zc.shape
    if not isinstance(n_train, int | np.integer) or not 0 < n_train <= n_data:
        raise ValueError(f"n_train must be an integer in 1..{n_data}, got {n_train!r}")
    yt = np.asarray(y, dtype=np.float64)
    if yt.shape != (n_out, n_train):
        raise ValueError(f"y must have shape (n_L, N_A) = {(n_out, n_train)}, got {yt.shape}")
    Hc = combine_indices(H, 2)
    dHc = combine_indices(dH, 3)
    dIc = combine_indices(ddI, 4)
    dIIc = combine_indices(ddII, 4)
    Q = n_out * n_data
    for name, t in (("H", Hc), ("dH", dHc), ("ddI", dIc), ("ddII", dIIc)):
        if t.shape[0] != Q:
            raise ValueError(f"{name} has {t.shape[0]} combined indices, z has {Q}")
    return zc, Hc, dHc, dIc, dIIc, yt, _train_index(n_out, n_data, int(n_train))


def simulate_truncated_dynamics(
    z: Any,
    H: Any,
    dH: Any,
    ddI: Any,
    ddII: Any,
    y: Any,
    n_train: int,
    eta: float,
    *,
    steps: int = 100_000,
    tol: float | None = 1e-13,
    record: bool = False,
) -> TruncatedDynamics:
    """Iterate the coupled O(1/n) gradient-descent dynamics (∞.81)-(∞.83), ddNTKs frozen.

    With ``eps_A(t) = z_A(t) - y`` on the training combined indices ``A``::

        z(t+1)  = z - eta H_{I A} eps_A + eta^2/2 dH_{I A B} eps_A eps_B
                  - eta^3/6 ddI_{I A B C} eps_A eps_B eps_C
        H(t+1)  = H - eta (dH_{I1 I2 A} + dH_{I2 I1 A}) eps_A
                  + eta^2/2 (ddI_{I1 I2 A B} + ddI_{I2 I1 A B} + 2 ddII_{I1 I2 A B}) eps_A eps_B
        dH(t+1) = dH - eta (ddI_{I0 I1 I2 A} + ddII_{I0 I1 I2 A} + ddII_{I0 I2 I1 A}) eps_A

    (book.txt L35137-L35278; spec/07 §7.1).  A reference for :func:`fully_trained_prediction`.

    Parameters
    ----------
    z, H, dH, ddI, ddII : array_like
        Initial values in the index order of :mod:`pdlt.empirical.observables` (see module
        docstring); ``z`` of shape (n_L, N_D), training inputs first.
    y : array_like, shape (n_L, N_A)
        Targets ``y_{i;a}``.
    n_train : int
        Number of training inputs ``N_A`` (the first ``N_A`` of the ``N_D``).
    eta : float
        Learning rate (> 0).
    steps : int
        Maximum number of steps.
    tol : float or None
        Stop once ``max |eps_A| < tol`` (``None``: always take ``steps`` steps).
    record : bool
        Keep the output trajectory.

    Returns
    -------
    TruncatedDynamics

    Raises
    ------
    FloatingPointError
        If the dynamics diverge (non-finite outputs).
    """
    zc, Hc, dHc, dIc, dIIc, yt, A = _inputs(z, H, dH, ddI, ddII, y, n_train)
    if not np.isfinite(eta) or eta <= 0:
        raise ValueError(f"eta must be finite and > 0, got {eta!r}")
    shape = zc.shape
    zf, yf = zc.reshape(-1).copy(), yt.reshape(-1)
    Hc, dHc = Hc.copy(), dHc.copy()
    dIA = dIc[:, :, :, A]  # [I0, I1, I2, A]
    dH_upd = dIA + dIIc[:, :, :, A] + dIIc[:, :, :, A].transpose(0, 2, 1, 3)
    dIAB = dIc[:, :, A][:, :, :, A]  # [I1, I2, A, B]
    H_quad = dIAB + dIAB.transpose(1, 0, 2, 3) + 2 * dIIc[:, :, A][:, :, :, A]
    dI3 = dIc[:, A][:, :, A][:, :, :, A]  # [I, A, B, C]
    traj = [zf.reshape(shape).copy()] if record else None
    t = 0
    err = float(np.max(np.abs(zf[A] - yf)))
    while t < steps and (tol is None or err >= tol):
        e = zf[A] - yf
        dHA = dHc[:, A][:, :, A]
        z_new = (
            zf
            - eta * Hc[:, A] @ e
            + 0.5 * eta**2 * np.einsum("iab,a,b->i", dHA, e, e)
            - eta**3 / 6 * np.einsum("iabc,a,b,c->i", dI3, e, e, e)
        )
        dHe = dHc[:, :, A] @ e
        Hc = Hc - eta * (dHe + dHe.T) + 0.5 * eta**2 * np.einsum("ijab,a,b->ij", H_quad, e, e)
        dHc = dHc - eta * dH_upd @ e
        zf = z_new
        t += 1
        err = float(np.max(np.abs(zf[A] - yf)))
        if not np.isfinite(err):
            raise FloatingPointError(f"the truncated dynamics diverged after {t} steps")
        if traj is not None:
            traj.append(zf.reshape(shape).copy())
    return TruncatedDynamics(
        z=zf.reshape(shape),
        H=Hc,
        dH=dHc,
        steps=t,
        train_error=err,
        trajectory=None if traj is None else np.stack(traj),
    )


@dataclass(frozen=True, eq=False)
class FiniteTimeTensors:
    """The O(1/n) solution of gradient descent at a finite step ``t`` (∞.84)-(∞.117).

    Combined indices (``Q = n_L N_D``; ``A``: the training ones, in the order of
    :func:`combine_indices`).

    Attributes
    ----------
    t : int
        The step.
    eps_free : ndarray, shape (n_L * N_A,)
        The free training error ``eps^F(t) = (1 - eta H~)^t eps(0)`` (∞.88).
    a, b : ndarray, shapes (n_L * N_A,), (n_L * N_A, n_L * N_A)
        The helper sums ``a(t) = eta sum_{s<t} eps^F(s)`` (∞.92) and
        ``b(t) = eta sum_{s<t} eps^F(s) eps^F(s)`` (∞.106).
    z_free : ndarray, shape (n_L, N_D)
        The free outputs ``z^F(t) = z - H-hat_{I A} a_A(t)`` (∞.91).
    dH : ndarray, shape (Q, Q, Q)
        The dynamical dNTK ``dH-hat(t)`` (∞.102).
    H_interaction : ndarray, shape (Q, Q)
        The interaction NTK ``H^I(t) = H-hat(t) - H-hat`` (∞.117).
    """

    t: int
    eps_free: np.ndarray
    a: np.ndarray
    b: np.ndarray
    z_free: np.ndarray
    dH: np.ndarray
    H_interaction: np.ndarray


def finite_time_tensors(
    z: Any,
    H: Any,
    dH: Any,
    ddI: Any,
    ddII: Any,
    y: Any,
    n_train: int,
    eta: float,
    t: int,
) -> FiniteTimeTensors:
    """The dNTK (∞.102) and the interaction NTK (∞.117) of one network after ``t`` GD steps.

    To first order in the dNTK and ddNTKs (ddNTKs frozen), with ``H~ = H-hat_{AA}`` the
    network's own training block and ``a``, ``b`` the helper sums of the free solution
    (book.txt L35615-L35632, L35936-L35978; spec/07 §7.3)::

        dH(t)_{I0 I1 I2} = dH - sum_A (ddI_{I0 I1 I2 A} + ddII_{I0 I1 I2 A}
                                       + ddII_{I0 I2 I1 A}) a_A(t)
        H^I(t)_{I1 I2} = - sum_A (dH_{I1 I2 A} + dH_{I2 I1 A}) a_A(t)
            + sum G_{I1 I2 A B} H~^{-1}_{B C} [eps_C(0) a_A(t) - b_{A C}(t)]
            + eta/2 sum (ddI_{I1 I2 A B} + ddI_{I2 I1 A B} + 2 ddII_{I1 I2 A B}) b_{A B}(t)

    with ``G_{I1 I2 J K} = ddI_{I1 I2 J K} + ddII_{I1 I2 J K} + ddII_{I1 J I2 K} + (I1 <-> I2)``.
    The error against :func:`simulate_truncated_dynamics` after ``t`` steps is second order in
    the interaction (tested).  At ``t -> infinity`` ``a -> H~^{-1} eps(0)`` (∞.114).

    Parameters
    ----------
    z, H, dH, ddI, ddII, y, n_train
        As for :func:`simulate_truncated_dynamics`.
    eta : float
        Learning rate, ``0 < eta < 2/lambda_max(H~)``.
    t : int
        Number of steps (>= 0).

    Returns
    -------
    FiniteTimeTensors
    """
    zc, Hc, dHc, dIc, dIIc, yt, A = _inputs(z, H, dH, ddI, ddII, y, n_train)
    if not isinstance(t, int | np.integer) or t < 0:
        raise ValueError(f"t must be an integer >= 0, got {t!r}")
    HA = Hc[np.ix_(A, A)]
    h, _, solver = _eig(HA, "H~ (training block of the NTK)")
    eta = _check_eta(eta, float(h[-1]), "gd")
    eps0 = zc.reshape(-1)[A] - yt.reshape(-1)
    step = np.eye(len(A)) - eta * HA
    a, b, e = np.zeros_like(eps0), np.zeros((len(A), len(A))), eps0.copy()
    for _ in range(int(t)):
        a += eta * e
        b += eta * np.outer(e, e)
        e = step @ e
    z_free = zc.reshape(-1) - Hc[:, A] @ a
    dd = dIc[:, :, :, A] + dIIc[:, :, :, A] + dIIc[:, :, :, A].transpose(0, 2, 1, 3)
    dH_t = dHc - dd @ a
    dHa = dHc[:, :, A] @ a
    G = (
        dIc[:, :, A][:, :, :, A]
        + dIIc[:, :, A][:, :, :, A]
        + dIIc[:, A][:, :, :, A].transpose(0, 2, 1, 3)
    )
    G = G + G.transpose(1, 0, 2, 3)
    inv_eps = solver.solve(eps0)  # H~^{-1} eps(0)
    inv_b = solver.solve(b.T).T  # b_{A C} H~^{-1}_{C B}, i.e. [b H~^{-1}]_{A B}
    H_quad = dIc[:, :, A][:, :, :, A]
    H_quad = H_quad + H_quad.transpose(1, 0, 2, 3) + 2 * dIIc[:, :, A][:, :, :, A]
    H_I = (
        -(dHa + dHa.T)
        + np.einsum("ijab,a,b->ij", G, a, inv_eps)
        - np.einsum("ijab,ab->ij", G, inv_b)
        + 0.5 * eta * np.einsum("ijab,ab->ij", H_quad, b)
    )
    return FiniteTimeTensors(
        t=int(t),
        eps_free=e,
        a=a,
        b=b,
        z_free=z_free.reshape(zc.shape),
        dH=dH_t,
        H_interaction=H_I,
    )


# --------------------------------------------------------------------------------------------
# the fully-trained prediction (∞.141), (∞.154)


@dataclass(frozen=True, eq=False)
class FullyTrainedPrediction:
    """Per-network fully-trained outputs at order 1/n (∞.141)/(∞.154).

    Attributes
    ----------
    z : ndarray, shape (n_L, N_D)
        Predicted ``z_{i;d}(T)`` on all inputs (equal to ``y`` on training inputs up to the
        accuracy of the expansion).
    free : ndarray, shape (n_L, N_D)
        The NTK part: ``z - H-hat_{dA} (H-hat^{-1}) eps`` (``free="exact"``, (∞.93)) or its
        second-order expansion in ``Delta H`` (``free="expanded"``, (∞.154) lines 1-2).
    terms : dict of ndarray (n_L, N_D)
        The six projector contributions ``"A", "B", "IA", "IB", "IIA", "IIB"`` of (∞.141).
    projectors : Projectors
    """

    z: np.ndarray
    free: np.ndarray
    terms: dict[str, np.ndarray]
    projectors: Projectors

    @property
    def interaction(self) -> np.ndarray:
        """Sum of the dNTK/ddNTK terms, shape (n_L, N_D)."""
        return sum(self.terms.values())  # type: ignore[return-value]


def fully_trained_prediction(
    z: Any,
    H: Any,
    dH: Any,
    ddI: Any,
    ddII: Any,
    y: Any,
    n_train: int,
    eta: float | None = None,
    *,
    kind: str = "gd",
    H_mean: Any = None,
    free: str = "exact",
) -> FullyTrainedPrediction:
    """``z_{i;d}(T)`` of one network after training to convergence, to order 1/n (∞.141).

    With ``eps = z_A - y`` the initial training error over combined training indices and
    ``[X]_perp = X_{..d..} - sum H_{d a} H~^{a a'} X_{..a'..}`` on the slot carrying ``d``::

        z(T)_I = z_I - H-hat_{I A1} (H-hat^{-1})^{A1 A2} eps_{A2}
               + [dH_{J1 I J2}]_perp  Z_A^{J1 J2 J3 J4} eps_J3 eps_J4
               + [dH_{I J1 J2}]_perp  Z_B^{J1 J2 J3 J4} eps_J3 eps_J4
               + [ddI_{J1 I J2 J3}]_perp  Z_IA^{J1..J6} eps_J4 eps_J5 eps_J6
               + [ddI_{I J1 J2 J3}]_perp  Z_IB^{J1..J6} eps eps eps
               + [ddII_{J1 J2 I J3}]_perp Z_IIA^{J1..J6} eps eps eps
               + [ddII_{I J1 J2 J3}]_perp Z_IIB^{J1..J6} eps eps eps

    (book.txt L36601-L36722; indices ``J`` run over combined training indices).  With
    ``free="expanded"`` the first line is replaced by its expansion to second order in
    ``Delta H = H-hat - delta_{ij} H`` with the signs corrected in spec/07 §13.1 ((∞.154), book
    prints them flipped)::

        z_I - H_{I A} H~^{-1} eps - [Delta H_{I A1}]_perp H~^{A1A2} eps_A2
            + [Delta H_{I A1}]_perp H~^{A1A2} Delta H_{A2 A3} H~^{A3A4} eps_A4

    Parameters
    ----------
    z, H, dH, ddI, ddII : array_like
        One network's tensors at initialization in the index order of
        :mod:`pdlt.empirical.observables` on ``D = A u B`` (training inputs first).
    y : array_like, shape (n_L, N_A)
        Targets.
    n_train : int
        ``N_A``.
    eta : float, optional
        Learning rate for ``kind="gd"``; must satisfy ``0 < eta lambda_max(H~) < 2``.
    kind : {"gd", "ode", "two_step"}
        The algorithm (:func:`algorithm_projectors`).
    H_mean : array_like, shape (N_D, N_D), optional
        NTK mean ``H_{d1 d2}``.  Given: ``H~ = delta_{ij} H_AA`` in the projectors and the
        ``perp`` brackets (the book's (∞.141)); default: the network's own ``H-hat`` over
        combined indices (spec/07 §7.5, the accurate per-network choice).
    free : {"exact", "expanded"}
        First line exact (stochastic inverse) or expanded to ``O(Delta H^2)`` (needs
        ``H_mean``).

    Returns
    -------
    FullyTrainedPrediction
    """
    zc, Hc, dHc, dIc, dIIc, yt, A = _inputs(z, H, dH, ddI, ddII, y, n_train)
    n_out, n_data = zc.shape
    if free not in ("exact", "expanded"):
        raise ValueError(f"free must be 'exact' or 'expanded', got {free!r}")
    if H_mean is None:
        if free == "expanded":
            raise ValueError("free='expanded' expands around the NTK mean: give H_mean")
        Hbar = Hc
    else:
        Hm = np.asarray(H_mean, dtype=np.float64)
        if Hm.shape != (n_data, n_data):
            raise ValueError(f"H_mean must have shape {(n_data, n_data)}, got {Hm.shape}")
        Hbar = np.kron(np.eye(n_out), Hm)
    eps = zc.reshape(-1)[A] - yt.reshape(-1)
    bar_solver = SPDSolver(Hbar[np.ix_(A, A)], name="H~ (training block of the NTK)")
    # perp projector on the d-slot: P[d, d'] = delta - H_{d a} H~^{-1}_{a d'} (d' in A)
    perp = np.eye(Hc.shape[0])
    perp[:, A] -= bar_solver.solve(Hbar[A, :]).T
    if free == "exact":
        hat_solver = SPDSolver(Hc[np.ix_(A, A)], name="H-hat (training block, one network)")
        free_part = zc.reshape(-1) - Hc[:, A] @ hat_solver.solve(eps)
    else:
        dlt = Hc - Hbar
        v = bar_solver.solve(eps)
        free_part = (
            zc.reshape(-1)
            - Hbar[:, A] @ v
            - perp @ (dlt[:, A] @ v)
            + perp @ (dlt[:, A] @ bar_solver.solve(dlt[np.ix_(A, A)] @ v))
        )
    Z = algorithm_projectors(Hbar[np.ix_(A, A)], eta, kind)
    ee = np.multiply.outer(eps, eps)
    eee = np.multiply.outer(ee, eps)
    WA = np.tensordot(Z.Z_A, ee, axes=2)  # [J1, J2]
    WB = np.tensordot(Z.Z_B, ee, axes=2)
    WIA, WIB = np.tensordot(Z.Z_IA, eee, axes=3), np.tensordot(Z.Z_IB, eee, axes=3)
    WIIA, WIIB = np.tensordot(Z.Z_IIA, eee, axes=3), np.tensordot(Z.Z_IIB, eee, axes=3)
    ix = np.ix_
    raw = {
        "A": np.einsum("aIb,ab->I", dHc[ix(A, range(dHc.shape[1]), A)], WA),
        "B": np.einsum("Iab,ab->I", dHc[:, A][:, :, A], WB),
        "IA": np.einsum("aIbc,abc->I", dIc[A][:, :, A][:, :, :, A], WIA),
        "IB": np.einsum("Iabc,abc->I", dIc[:, A][:, :, A][:, :, :, A], WIB),
        "IIA": np.einsum("abIc,abc->I", dIIc[A][:, A][:, :, :, A], WIIA),
        "IIB": np.einsum("Iabc,abc->I", dIIc[:, A][:, :, A][:, :, :, A], WIIB),
    }
    terms = {k: (perp @ v).reshape(n_out, n_data) for k, v in raw.items()}
    total = free_part.reshape(n_out, n_data) + sum(terms.values())
    return FullyTrainedPrediction(
        z=total, free=free_part.reshape(n_out, n_data), terms=terms, projectors=Z
    )


# --------------------------------------------------------------------------------------------
# ensemble mean of the fully-trained outputs (∞.160)-(∞.165), corrected (spec/07 §8.1, §13)


def _statistics_inputs(
    H: Any,
    second: tuple[str, Any],
    y: Any,
    n_train: int,
    n_hidden: float,
    four: dict[str, Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Checked float64 ``H``, the second ``(N_D, N_D)`` matrix (named ``second[0]``), ``y`` and
    the 4-index tensors of :func:`mean_prediction` / :func:`covariance_prediction`."""
    Hm = np.asarray(H, dtype=np.float64)
    name2, M2 = second[0], np.asarray(second[1], dtype=np.float64)
    yt = np.asarray(y, dtype=np.float64)
    if yt.ndim != 2 or yt.shape[1] != n_train:
        raise ValueError(f"y must have shape (n_L, N_A = {n_train}), got {yt.shape}")
    N = Hm.shape[0]
    if Hm.shape != (N, N) or M2.shape != (N, N) or not 0 < n_train <= N:
        raise ValueError(f"H and {name2} must be (N_D, N_D) with N_D >= n_train")
    if not np.isfinite(n_hidden) or n_hidden <= 0:
        raise ValueError(f"n_hidden must be > 0, got {n_hidden!r}")
    tens = {}
    for name, t in four.items():
        a = np.asarray(t, dtype=np.float64)
        if a.shape != (N,) * 4:
            raise ValueError(f"{name} must have shape {(N,) * 4}, got {a.shape}")
        tens[name] = a
    return Hm, M2, yt, tens


@dataclass(frozen=True, eq=False)
class MeanPrediction:
    """Ensemble mean ``m_{i;d} = E[z_{i;d}(T)]`` to order 1/n (∞.160), with its parts.

    Attributes
    ----------
    mean : ndarray, shape (n_L, N_D)
        ``m_{i;d}`` on every input (``= y`` on the training inputs).
    ntk, dntk_var, dntk, ddI, ddII : ndarray, shape (n_L, N_D)
        ``m^NTK`` (∞.161), ``m^{Delta NTK}`` (∞.162), ``m^dNTK`` (∞.163), ``m^ddI`` (∞.164),
        ``m^ddII`` (∞.165) on every input, before the ``[.]_perp`` projection and the ``1/n``.
    projectors : Projectors
    """

    mean: np.ndarray
    ntk: np.ndarray
    dntk_var: np.ndarray
    dntk: np.ndarray
    ddI: np.ndarray
    ddII: np.ndarray
    projectors: Projectors


def mean_prediction(
    H: Any,
    K: Any,
    y: Any,
    n_train: int,
    n_hidden: float,
    *,
    A: Any,
    B: Any,
    P: Any,
    Q: Any,
    R: Any,
    S: Any,
    T: Any,
    U: Any,
    eta: float | None = None,
    kind: str = "gd",
) -> MeanPrediction:
    """Mean fully-trained output of the ensemble at order ``1/n`` (∞.160)-(∞.165).

    With ``X = -m^{Delta NTK} + m^dNTK + m^ddI + m^ddII`` (spec/07 §8.1; the book adds
    ``m^{Delta NTK}`` with a ``+``, erratum §13.1)::

        m_{i;d} = H_{d a1} H~^{a1 a2} y_{i;a2}
                  + (1/n_{L-1}) [X_{i;d} - H_{d a1} H~^{a1 a2} X_{i;a2}]

    ``m^{Delta NTK}`` (∞.162); ``m^dNTK`` (∞.163) with the symmetrized
    ``Z_B^{a1a2a3a4} + Z_B^{a2a1a4a3}`` (erratum §13.3); ``m^ddI`` (∞.164) and ``m^ddII``
    (∞.165) with the T/U assignment of the Z_IIB line corrected (erratum §13.2), contracted
    with ``Y_{i;a4a5a6} = y_{i;a4}(sum_j y_{j;a5} y_{j;a6} + n_L K_{a5a6}) + y_{i;a5} K_{a6a4}
    + y_{i;a6} K_{a4a5}``.

    Parameters
    ----------
    H, K : array_like, shape (N_D, N_D)
        NTK mean (including its 1/n part, spec/07 §8.4) and kernel of the output layer on
        ``D``, training inputs first.
    y : array_like, shape (n_L, N_A)
        Targets ``y_{i;a}``.
    n_train : int
        ``N_A``.
    n_hidden : float
        ``n_{L-1}``.
    A, B, P, Q, R, S, T, U : array_like, shape (N_D,)*4
        The 1/n tensors, each stored as ``X[a, b, c, d] = X_{abcd}`` exactly as the symbol
        appears in its decomposition: (8.82) for ``A_{(d1d2)(d3d4)}``, ``B``; (11.45) for ``P``,
        ``Q``; (∞.11)-(∞.12) for ``R``, ``S``, ``T``, ``U`` (spec/07 §2, §3.2).
    eta, kind
        The algorithm, as in :func:`algorithm_projectors`.

    Returns
    -------
    MeanPrediction
    """
    four = {"A": A, "B": B, "P": P, "Q": Q, "R": R, "S": S, "T": T, "U": U}
    Hm, Km, yt, tens = _statistics_inputs(H, ("K", K), y, n_train, n_hidden, four)
    nL = yt.shape[0]
    a_ = slice(0, n_train)
    Ht = Hm[a_, a_]
    solver = SPDSolver(Ht, name="H~ (training block of the NTK mean)")
    Hi = solver.inverse()
    Z = algorithm_projectors(Ht, eta, kind)
    Av, Bv, Pv, Qv = (tens[k] for k in "ABPQ")
    Rv, Sv, Tv, Uv = (tens[k] for k in "RSTU")
    tr = lambda t: t[:, a_, a_, a_]  # noqa: E731  [d, a1, a2, a3]
    m_ntk = yt @ solver.solve(Hm[a_, :])  # (n_L, N_D)
    # (∞.162)
    g = tr(Av) + tr(Bv).transpose(0, 2, 1, 3) + nL * tr(Bv).transpose(0, 2, 3, 1)
    m_dv = np.einsum("dabc,ab,ce,ie->id", g, Hi, Hi, yt)
    # (∞.163)
    ZBs = Z.Z_B + Z.Z_B.transpose(1, 0, 3, 2)
    PQ1 = tr(Pv) + tr(Qv) + nL * tr(Qv).transpose(0, 2, 1, 3)
    Pm = np.moveaxis(Pv[a_, :, a_, a_], 1, 0)  # P_{a1 d a2 a3} -> [d, a1, a2, a3]
    Qm = np.moveaxis(Qv[a_, :, a_, a_], 1, 0)  # Q_{a1 d a2 a3}
    Qm2 = np.moveaxis(Qv[a_, a_, :, a_], 2, 0)  # Q_{a1 a2 d a3}
    m_d = -(
        np.einsum("dabc,abce,ie->id", PQ1, ZBs, yt)
        + np.einsum("dabc,abce,ie->id", nL * Pm + Qm + Qm2, Z.Z_A, yt)
        + np.einsum("dabc,abec,ie->id", Pm + nL * Qm + Qm2, Z.Z_A, yt)
    )
    # target bracket
    KA = Km[a_, a_]
    Yb = np.einsum("iu,vw->iuvw", yt, yt.T @ yt + nL * KA)
    Yb = Yb + np.einsum("iv,wu->iuvw", yt, KA) + np.einsum("iw,uv->iuvw", yt, KA)
    # (∞.164)
    ZIB = Z.Z_IB
    # Z_IB^{a1..a6} + Z_IB^{a2 a3 a1 a5 a6 a4} + Z_IB^{a3 a1 a2 a6 a4 a5}
    ZIBs = ZIB + np.einsum("bcaefd->abcdef", ZIB) + np.einsum("cabfde->abcdef", ZIB)
    R1 = np.moveaxis(Rv[a_, :, a_, a_], 1, 0)  # R_{a1 d a2 a3}
    R2 = np.moveaxis(Rv[a_, a_, a_, :], 3, 0)  # R_{a1 a2 a3 d} -> [d, a1, a2, a3]
    R3 = np.moveaxis(Rv[a_, a_, :, a_], 2, 0)  # R_{a1 a3 d a2} -> [d, a1, a3, a2]
    ZIA = Z.Z_IA
    m_I = -(
        np.einsum("dabc,abcuvw,iuvw->id", tr(Rv), ZIBs, Yb)
        + np.einsum("dabc,abcuvw,iuvw->id", R1, ZIA, Yb)
        + np.einsum("dabc,abcvwu,iuvw->id", R2, ZIA, Yb)
        + np.einsum("dacb,abcwuv,iuvw->id", R3, ZIA, Yb)
    )
    # (∞.165), corrected
    ZB2, ZA2 = Z.Z_IIB, Z.Z_IIA
    S2 = np.moveaxis(Sv[a_, a_, :, a_], 2, 0)  # S_{a1 a2 d a3} -> [d, a1, a2, a3]
    T2 = np.moveaxis(Tv[a_, :, a_, a_], 1, 0)  # T_{a1 d a3 a2} -> [d, a1, a3, a2]
    U2 = np.moveaxis(Uv[a_, a_, a_, :], 3, 0)  # U_{a1 a3 a2 d} -> [d, a1, a3, a2]
    m_II = -(
        np.einsum("dabc,abcuvw,iuvw->id", tr(Sv), ZB2, Yb)
        + np.einsum("dabc,cabwuv,iuvw->id", tr(Tv), ZB2, Yb)
        + np.einsum("dabc,bcavwu,iuvw->id", tr(Uv), ZB2, Yb)
        + np.einsum("dabc,abcvwu,iuvw->id", S2, ZA2, Yb)
        + np.einsum("dacb,abcuvw,iuvw->id", T2, ZA2, Yb)
        + np.einsum("dacb,abcwuv,iuvw->id", U2, ZA2, Yb)
    )
    X = -m_dv + m_d + m_I + m_II
    corr = X - X[:, a_] @ solver.solve(Hm[a_, :])
    return MeanPrediction(
        mean=m_ntk + corr / float(n_hidden),
        ntk=m_ntk,
        dntk_var=m_dv,
        dntk=m_d,
        ddI=m_I,
        ddII=m_II,
        projectors=Z,
    )


# --------------------------------------------------------------------------------------------
# ensemble covariance of the fully-trained outputs (∞.166), derived (spec/07 §8.2)


# Tensors over combined indices ``I = (i, d)`` kept factored: a sum of terms, each a product of
# small arrays over the neuron half ("n", k) or the sample half ("s", k) of slot k -- Kronecker
# deltas and targets ``y_{i;a}`` over neurons, the 4- and 6-index tensors over samples.  A
# contraction over combined indices is then one einsum per combination of terms, and nothing of
# size ``(n_L N)^4`` or ``(n_L N_A)^6`` is ever formed.

_Factor = tuple[np.ndarray, tuple[tuple[str, int], ...]]


@dataclass(frozen=True, eq=False)
class _Factored:
    """``T = sum_terms prod_factors``, of ``rank`` combined slots."""

    rank: int
    terms: tuple[tuple[_Factor, ...], ...]

    def __add__(self, other: _Factored) -> _Factored:
        return _Factored(self.rank, self.terms + other.terms)

    def permuted(self, order: tuple[int, ...]) -> _Factored:
        """Slot ``k`` of the result is slot ``order[k]`` of ``self``."""
        new = {old: k for k, old in enumerate(order)}
        return _Factored(
            self.rank,
            tuple(
                tuple((a, tuple((h, new[s]) for h, s in ax)) for a, ax in term)
                for term in self.terms
            ),
        )

    def outer(self, other: _Factored) -> _Factored:
        shift = self.rank
        return _Factored(
            self.rank + other.rank,
            tuple(
                t1 + tuple((a, tuple((h, s + shift) for h, s in ax)) for a, ax in t2)
                for t1 in self.terms
                for t2 in other.terms
            ),
        )


def _delta_kron(pairs: tuple[tuple[int, int], ...], sample: np.ndarray, n_out: int) -> _Factored:
    """``prod delta_{i_p i_q}`` over the neuron halves of ``pairs`` times ``sample``."""
    eye = np.eye(n_out)
    term = tuple((eye, (("n", p), ("n", q))) for p, q in pairs)
    ax = tuple(("s", k) for k in range(sample.ndim))
    return _Factored(sample.ndim, (term + ((sample, ax),),))


def _targets_outer(y: np.ndarray) -> _Factored:
    """``y_{i1;a1} y_{i2;a2}``, ``y`` of shape ``(n_L, N_A)``."""
    return _Factored(2, (((y, (("n", 0), ("s", 0))), (y, (("n", 1), ("s", 1)))),))


def _contract(spec: str, *ops: _Factored) -> np.ndarray:
    """``einsum`` over combined letters; the result has the neuron halves of the output letters
    first, then their sample halves."""
    ins, out = spec.split("->")
    letters = ins.split(",")
    ids = {c: 2 * k for k, c in enumerate(dict.fromkeys(spec.replace(",", "").replace("->", "")))}
    half = {"n": 0, "s": 1}
    out_sub = [ids[c] for c in out] + [ids[c] + 1 for c in out]

    def one(combo: tuple[tuple[_Factor, ...], ...]) -> np.ndarray:
        args: list[Any] = []
        for lets, term in zip(letters, combo, strict=True):
            for arr, ax in term:
                args += [arr, [ids[lets[s]] + half[h] for h, s in ax]]
        return np.einsum(*args, out_sub, optimize="greedy")

    combos = itertools.product(*(op.terms for op in ops))
    return np.sum([one(combo) for combo in combos], axis=0)


def _factored_moments(n_out: int, t: dict[str, np.ndarray]) -> dict[str, _Factored]:
    """``n_{L-1}`` times the moments the covariance needs, factored (rank 4 each).

    ``DD = E[dH_{I1I2} dH_{I3I4}]`` (8.82), ``DZ = E[dH_{I1I2} z_{I3} z_{I4}]`` (8.67),
    ``dHz = E[dH-hat_{I0I1I2} z_{I3}]`` (11.45), ``dI = E[ddI]`` (∞.11), ``dII = E[ddII]``
    (∞.12); ``dH = H-hat - E[H-hat]``.  The sample slots follow each tensor's own decomposition
    (``D_{abcd}``: ``z_a z_b`` then ``H_cd``; ``F_{abcd} = N E[z_{i;a} H_{ij;bd} z_{j;c}]``).
    """

    def k(pairs: tuple[tuple[int, int], ...], X: np.ndarray, order: str) -> _Factored:
        return _delta_kron(pairs, np.einsum(f"abcd->{order}", X), n_out)

    p01_23, p02_13, p03_12 = ((0, 1), (2, 3)), ((0, 2), (1, 3)), ((0, 3), (1, 2))
    return {
        "DD": k(p01_23, t["A"], "abcd") + k(p02_13, t["B"], "acbd") + k(p03_12, t["B"], "acdb"),
        "DZ": k(p01_23, t["D"], "cdab") + k(p02_13, t["F"], "bdac") + k(p03_12, t["F"], "bdca"),
        "dHz": k(p03_12, t["P"], "abcd") + k(p01_23, t["Q"], "abcd") + k(p02_13, t["Q"], "acbd"),
        "dI": k(p01_23, t["R"], "abcd") + k(p02_13, t["R"], "adbc") + k(p03_12, t["R"], "acdb"),
        "dII": k(p01_23, t["S"], "abcd") + k(p02_13, t["T"], "adbc") + k(p03_12, t["U"], "acdb"),
    }


@dataclass(frozen=True, eq=False)
class CovariancePrediction:
    """Ensemble covariance of fully-trained outputs to order 1/n (∞.166), with its parts.

    Every array has shape ``(n_L, N_D, n_L, N_D)``: ``C[i1, d1, i2, d2] =
    Cov[z_{i1;d1}(T), z_{i2;d2}(T)]`` (zero on the training inputs, which are fit exactly).

    Attributes
    ----------
    covariance : ndarray
        ``leading + sum(parts) / n_{L-1}``.
    leading : ndarray
        ``[G]_perp = (z - H_{dA} H~^{-1} z_A)``'s covariance with ``E[z z] = delta G``: the
        kernel-prediction covariance (10.41) when ``H = Theta`` and ``G = K``.
    parts : dict of ndarray
        The bracketed 1/n terms (before dividing by ``n_{L-1}``): ``"ntk_z"`` (``D, F``: the NTK
        fluctuation correlated with the initial outputs), ``"ntk"`` (``A, B``), ``"dntk"``
        (``P, Q`` with ``Z_A, Z_B``), ``"ddI"`` (``R``), ``"ddII"`` (``S, T, U``).
    projectors : Projectors
        On the training samples (the neurons enter as Kronecker deltas).
    """

    covariance: np.ndarray
    leading: np.ndarray
    parts: dict[str, np.ndarray]
    projectors: Projectors


def covariance_prediction(
    H: Any,
    G: Any,
    y: Any,
    n_train: int,
    n_hidden: float,
    *,
    A: Any,
    B: Any,
    D: Any,
    F: Any,
    P: Any,
    Q: Any,
    R: Any,
    S: Any,
    T: Any,
    U: Any,
    eta: float | None = None,
    kind: str = "gd",
) -> CovariancePrediction:
    """Covariance of the fully-trained outputs of the ensemble at order ``1/n`` (∞.166).

    The book prints only one contribution, (∞.167).  pdlt derives the whole of it (spec/07
    §8.2) from the per-network solution (∞.141) with its first line expanded to second order
    in ``dH = H-hat - H`` ((∞.154), signs of spec/07 §13.1)::

        z(T) = [z]_perp + H_{dA} H~^{-1} y + [u]_perp,
        u = - dH_{dA} v + dH_{dA} H~^{-1} dH_{AA} v + dNTK (Z_A, Z_B) + ddNTK (Z_I*, Z_II*),

    ``v = H~^{-1} eps``, ``eps = z_A - y``, ``[X]_perp = X_d - H_{dA} H~^{-1} X_A``.  With the
    order counting of the book (a connected correlator of ``k`` fields is ``O(n^{1-k/2})``;
    ``H-hat`` counts as two fields, the dNTK as three, the ddNTKs as four) and the parity of
    the output sign flip (``E[dNTK] = E[dNTK z z] = E[dH z] = 0``), the covariance to
    ``O(1/n)`` is::

        Cov = [G]_perp + (1/n) [ sum_u (Cov(u, z) + Cov(z, u)) + Cov(u1, u1) ]_perp

    with, on combined indices (``E2 = G_AA + y y``, the second moment of ``eps``)::

        n Cov(u1_I, z_J) = - H~^{ab} E[dH_{Ia} z_b z_J]                    (D, F)
        n Cov(u2_I, z_J) = H~^{ab} H~^{cd} E[dH_{Ia} dH_{bc}] G_{dJ}        (A, B)
        n Cov(u1_I, u1_J) = H~^{ab} H~^{cd} E[dH_{Ia} dH_{Jc}] E2_{bd}      (A, B)
        n Cov(dNTK_I, z_J) = Z^{abcd} (E[dH-hat_{..} z_J] E2_{cd}
                              + E[dH-hat_{..} z_c] G_{Jd} + E[dH-hat_{..} z_d] G_{Jc})   (P, Q)
        n Cov(ddNTK_I, z_J) = E[ddNTK_{..}] Z^{a..f} E[eps_d eps_e eps_f z_J]      (R, S, T, U)

    (the dNTK and ddNTK slots exactly as in :func:`fully_trained_prediction`).  The Z_B
    term with the ``E2`` pairing is the book's (∞.167); the other two pairings are the pieces
    "where dH-hat correlates with one of the eps" that the book mentions (spec/07 §8.2).  The
    variance of the dNTK term itself, the ddNTK fluctuations and every higher cumulant are
    ``O(1/n^2)``.

    Parameters
    ----------
    H, G : array_like, shape (N_D, N_D)
        NTK mean and two-point function ``E[z z] = G`` (``K + G^{1}/n``) of the output layer
        on ``D``, training inputs first.
    y : array_like, shape (n_L, N_A)
    n_train : int
    n_hidden : float
        ``n_{L-1}``.
    A, B, D, F, P, Q, R, S, T, U : array_like, shape (N_D,)*4
        The 1/n tensors with ``1/n_{L-1}`` taken out, in the slot order of their
        decompositions (8.82), (8.67), (11.45), (∞.11)-(∞.12).
    eta, kind
        The algorithm, as in :func:`algorithm_projectors`.

    Returns
    -------
    CovariancePrediction

    Notes
    -----
    Works with the combined (neuron, sample) tensors factored into Kronecker deltas, targets
    and sample tensors (``_Factored``), so the cost is that of the mean: the six-index
    projectors on the ``N_A`` training samples, whatever ``n_L``.
    """
    four = dict(zip("ABDFPQRSTU", (A, B, D, F, P, Q, R, S, T, U), strict=True))
    Hm, Gm, yt, tens = _statistics_inputs(H, ("G", G), y, n_train, n_hidden, four)
    N, n_out = Hm.shape[0], yt.shape[0]
    mom = _factored_moments(n_out, tens)
    A_ = slice(0, n_train)
    solver = SPDSolver(Hm[A_, A_], name="H~ (training block of the NTK mean)")
    Z = algorithm_projectors(Hm[A_, A_], eta, kind)  # samples only: the neurons are deltas
    perp_s = np.eye(N)
    perp_s[:, A_] -= solver.solve(Hm[A_, :]).T

    def dk(pairs: tuple[tuple[int, int], ...], X: np.ndarray) -> _Factored:
        return _delta_kron(pairs, X, n_out)

    Hi = dk(((0, 1),), solver.inverse())
    GJ = dk(((0, 1),), Gm[:, A_])  # G_{J a}
    E2 = dk(((0, 1),), Gm[A_, A_]) + _targets_outer(yt)  # E[eps_a eps_b]
    # E[eps_d eps_e eps_f z_J] (Gaussian z at this order), slots (d, e, f, J)
    GE = GJ.outer(E2)  # (J, d, e, f)
    E4 = GE.permuted((1, 2, 3, 0)) + GE.permuted((2, 1, 3, 0)) + GE.permuted((2, 3, 1, 0))
    ZA, ZB = dk(((0, 2), (1, 3)), Z.Z_A), dk(((0, 2), (1, 3)), Z.Z_B)
    six = ((0, 3), (1, 4), (2, 5))
    ZIA, ZIB, ZIIA, ZIIB = (dk(six, z) for z in (Z.Z_IA, Z.Z_IB, Z.Z_IIA, Z.Z_IIB))

    def sl(name: str, slots: str) -> _Factored:  # restrict the sample halves: D = all, A = train
        T = mom[name]
        cut = tuple(slice(None) if c == "D" else A_ for c in slots)
        terms = tuple(
            tuple((a, ax) if ax[0][0] == "n" else (a[cut], ax) for a, ax in term)
            for term in T.terms
        )
        return _Factored(T.rank, terms)

    c = _contract
    cross = {  # n Cov(u_I, z_J), un-projected, [i, j, d_I, d_J]
        "ntk_z": -c("ab,IabJ->IJ", Hi, sl("DZ", "DAAD")),
        "ntk": c("Iabc,ab,cd,Jd->IJ", sl("DD", "DAAA"), Hi, Hi, GJ),
        "dntk": c("aIbJ,abcd,cd->IJ", sl("dHz", "ADAD"), ZA, E2)
        + c("aIbc,abcd,Jd->IJ", sl("dHz", "ADAA"), ZA, GJ)
        + c("aIbd,abcd,Jc->IJ", sl("dHz", "ADAA"), ZA, GJ)
        + c("IabJ,abcd,cd->IJ", sl("dHz", "DAAD"), ZB, E2)
        + c("Iabc,abcd,Jd->IJ", sl("dHz", "DAAA"), ZB, GJ)
        + c("Iabd,abcd,Jc->IJ", sl("dHz", "DAAA"), ZB, GJ),
        "ddI": c("aIbc,abcdef,defJ->IJ", sl("dI", "ADAA"), ZIA, E4)
        + c("Iabc,abcdef,defJ->IJ", sl("dI", "DAAA"), ZIB, E4),
        "ddII": c("abIc,abcdef,defJ->IJ", sl("dII", "AADA"), ZIIA, E4)
        + c("Iabc,abcdef,defJ->IJ", sl("dII", "DAAA"), ZIIB, E4),
    }
    cross["ntk"] = cross["ntk"] + 0.5 * c("IaJc,ab,cd,bd->IJ", sl("DD", "DADA"), Hi, Hi, E2)
    parts = {}
    for k, X in cross.items():
        pc = np.einsum("ijpq,dp,eq->idje", X, perp_s, perp_s)
        parts[k] = pc + pc.transpose(2, 3, 0, 1)
    lead = perp_s @ Gm @ perp_s.T
    leading = np.einsum("ij,de->idje", np.eye(n_out), 0.5 * (lead + lead.T))
    return CovariancePrediction(
        covariance=leading + sum(parts.values()) / float(n_hidden),
        leading=leading,
        parts=parts,
        projectors=Z,
    )


# --------------------------------------------------------------------------------------------
# the ensemble mean for a network and data: flow + mean_prediction (spec/07 §8, §11)


_NOT_INCLUDED = (
    "the O(1/n^2) terms are not included (the NLO NTK mean H^{1}, which the book does not give, "
    "is included from pdlt's derived recursion, pdlt.theory.ntk.nlo_ntk_step)"
)


@dataclass(frozen=True, eq=False)
class TrainedCovariance:
    """Covariance of fully-trained test outputs over the ensemble, to order 1/n (∞.166).

    Every array has shape ``(N_B, n_L, N_B, n_L)``: ``[b1, i1, b2, i2]`` is
    ``Cov[z_{i1;b1}(T), z_{i2;b2}(T)]`` (the index order of the mean, ``(N_B, n_L)``, twice).

    Attributes
    ----------
    infinite : ndarray
        ``delta_{i1 i2} [K]_perp`` with ``Theta``: the kernel-prediction covariance (10.41).
    coefficient : ndarray
        ``c`` of the correction ``c / n_{L-1}``: the sum of ``parts``.
    correction : ndarray
        ``coefficient / n_{L-1}`` (zero at infinite width).
    covariance : ndarray
        ``infinite + correction``.
    parts : dict of ndarray
        ``"nlo_kernel"`` (``G^{1}``) and ``"nlo_ntk"`` (``H^{1}``): the 1/n shifts of
        ``E[z z]`` and of the NTK mean in the kernel-prediction covariance; and the bracket of
        :func:`covariance_prediction`:
        ``"ntk_z"`` (``D, F``), ``"ntk"`` (``A, B``), ``"dntk"`` (``P, Q``), ``"ddI"``,
        ``"ddII"`` (``R..U``).
    """

    infinite: np.ndarray
    coefficient: np.ndarray
    correction: np.ndarray
    covariance: np.ndarray
    parts: dict[str, np.ndarray]

    @property
    def std(self) -> np.ndarray:
        """Standard deviation of each test output, ``(N_B, n_L)``."""
        nb, nl = self.covariance.shape[:2]
        var = np.diagonal(self.covariance.reshape(nb * nl, nb * nl)).reshape(nb, nl)
        return np.sqrt(np.maximum(var, 0.0))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "index_order": "[test b1][output i1][test b2][output i2]",
            "infinite": self.infinite.tolist(),
            "coefficient": self.coefficient.tolist(),
            "correction": self.correction.tolist(),
            "covariance": self.covariance.tolist(),
            "std": self.std.tolist(),
            "parts": {k: v.tolist() for k, v in self.parts.items()},
        }


@dataclass(frozen=True, eq=False)
class TrainedPrediction:
    """Ensemble mean and covariance of fully-trained networks on test inputs, to order 1/n.

    The mean (spec/07 §8.1) arrays have shape ``(N_B, n_L)`` (one row per test input, as
    ``y_train``); ``covariance`` holds the covariance (∞.166) (spec/07 §8.2).

    Attributes
    ----------
    infinite : ndarray
        ``m^NTK = Theta_{B A} Theta~^{-1} y`` (∞.161) with the infinite-width NTK ``Theta``: the
        fully-trained infinite-width mean (10.40), independent of the algorithm.
    coefficient : ndarray
        ``c`` of the 1/n correction ``c / n_{L-1}``: ``X_B - Theta_{BA} Theta~^{-1} X_A`` with
        ``X = -m^{Delta NTK} + m^dNTK + m^ddI + m^ddII`` (∞.160)-(∞.165), errata of spec/07 §13.
    correction : ndarray
        ``coefficient / n_{L-1}`` at the network's width (zero at infinite width).
    mean : ndarray
        ``infinite + correction``.
    parts : dict of ndarray
        The projected coefficients ``"nlo_ntk"`` (the NLO NTK mean ``H^{1}`` in ``m^NTK``) and
        ``"dntk_var"`` (``-m^{Delta NTK}``), both algorithm-independent, and ``"dntk"``,
        ``"ddI"``, ``"ddII"`` (algorithm-dependent); they sum to ``coefficient``.
    width : float
        ``n_{L-1}`` (``inf`` for an infinite-width network).
    eta : float or None
        The learning rate used in the algorithm projectors (``None`` for ``kind="ode"`` and
        ``"two_step"``).
    kind : str
    not_included : str
        What the expansion leaves out (see :func:`finite_width_predict`).
    tensors : dict of ndarray
        ``K, Theta, H1`` (and ``G1``) ``(N_D, N_D)`` and ``A, B, P, Q, R, S, T, U`` (and
        ``D, F``) ``(N_D,)*4`` of the output layer on ``D = train u test`` (training inputs
        first), as passed to :func:`mean_prediction` (and :func:`covariance_prediction`).
    covariance : TrainedCovariance or None
        The covariance of the test outputs; ``None`` when not asked for.
    """

    infinite: np.ndarray
    coefficient: np.ndarray
    correction: np.ndarray
    mean: np.ndarray
    parts: dict[str, np.ndarray]
    width: float
    eta: float | None
    kind: str
    not_included: str
    tensors: dict[str, np.ndarray]
    covariance: TrainedCovariance | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no tensors)."""
        cov = None if self.covariance is None else self.covariance.to_dict()
        return {
            "width": None if not np.isfinite(self.width) else self.width,
            "eta": self.eta,
            "kind": self.kind,
            "infinite": self.infinite.tolist(),
            "coefficient": self.coefficient.tolist(),
            "correction": self.correction.tolist(),
            "mean": self.mean.tolist(),
            "parts": {k: v.tolist() for k, v in self.parts.items()},
            "not_included": self.not_included,
            "covariance": cov,
        }


def finite_width_predict(
    network: Any,
    x_train: Any,
    y_train: Any,
    x_test: Any,
    *,
    eta: float | None = None,
    kind: str = "gd",
    covariance: bool = True,
) -> TrainedPrediction:
    """Mean and covariance of the test predictions of fully-trained networks of finite width,
    to order 1/n (∞.160), (∞.166).

    Computes ``K, Theta, H1, A, B, P, Q, R, S, T, U`` of the output layer with
    :func:`pdlt.theory.flow.flow` on ``D = train u test`` and evaluates :func:`mean_prediction`
    with ``H = Theta``::

        m_{i;b} = m^NTK_{i;b} + (1/n_{L-1}) [X_{i;b} - Theta_{b a1} Theta~^{a1 a2} X_{i;a2}]

    **Included:** the NLO NTK mean (``X = H^{1} Theta~^{-1} y``: ``m^NTK`` (∞.161) takes the
    full mean ``H = Theta + H^{1}/n``, footnote 7 of chapter ∞; the book does not give
    ``H^{1}``, pdlt derives it, :func:`pdlt.theory.ntk.nlo_ntk_step`), the NTK-fluctuation term
    ``-m^{Delta NTK}`` (``A, B``; sign corrected, spec/07 §13.1), the dNTK term (``P, Q``) and
    the ddNTK terms (``R, S, T, U``), with the algorithm projectors of ``kind``/``eta``; the
    flow's 4-index tensors are the book's (8.82), (11.45), (∞.11)-(∞.12) in their slot order
    with the ``1/n_{L-1}`` taken out -- the convention of :func:`mean_prediction`.  The
    ``H^{1}`` part is O(1/n) but not depth-enhanced; the others grow like ``L/n``.

    **Covariance** (:func:`covariance_prediction`, derived in full: the book prints one
    term): ``delta_{i1i2} [K]_perp`` plus ``1/n_{L-1}`` times its linear change under
    ``K -> K + G^{1}/n``, ``Theta -> Theta + H^{1}/n`` (parts ``"nlo_kernel"``,
    ``"nlo_ntk"``) and the bracket of
    :func:`covariance_prediction` with ``H = Theta``, ``G = K`` (``D, F`` enter here).

    **Not included in the mean:** the 1/n shift ``G^{1}`` of the kernel (it enters only at
    O(1/n^2) there; 1/n-tuned ``C_W1`` does enter through ``H^{1}``) and every O(1/n^2) term.

    Parameters
    ----------
    network : Network
        A smooth activation (the ddNTK means ``R..U`` are undefined with a kink, spec/07 §5);
        ``n_{L-1} = network.widths[-2]`` sets ``correction`` (infinite width: zero).
    x_train, x_test : array_like, shape (N_A, n_0), (N_B, n_0)
    y_train : array_like, shape (N_A, n_L) or (N_A,)
    eta : float, optional
        Global learning rate of gradient descent with the learning-rate tensor (8.6).  Default
        for ``kind="gd"``: ``1/lambda_max(Theta~)``, the default of :func:`pdlt.train`.
    kind : {"gd", "ode", "two_step"}
    covariance : bool
        Compute the covariance too (it needs ``G1, D, F`` of the flow besides).

    Returns
    -------
    TrainedPrediction

    Raises
    ------
    ValueError
        A kinked activation, bad shapes, a singular training NTK, or ``eta`` outside
        ``(0, 2/lambda_max)``.
    """
    from ..theory.flow import flow

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    xa = np.asarray(x_train, dtype=np.float64)
    xb = np.asarray(x_test, dtype=np.float64)
    if xa.ndim != 2 or xb.ndim != 2 or xa.shape[1] != xb.shape[1] or 0 in xa.shape + xb.shape:
        raise ValueError(
            f"x_train and x_test must be non-empty (N, n_0) tables with the same n_0, "
            f"got {xa.shape} and {xb.shape}"
        )
    yt = np.asarray(y_train, dtype=np.float64)
    if yt.ndim == 1:
        yt = yt[:, None]
    n_a = xa.shape[0]
    if yt.shape != (n_a, network.n_out):
        raise ValueError(
            f"y_train must have shape (N_A, n_L) = {(n_a, network.n_out)}, got {yt.shape}"
        )
    fields = ("K", "Theta", "H1", "A", "B", "P", "Q", "R", "S", "T", "U")
    if covariance:
        fields += ("G1", "D", "F")
    f = flow(network, np.concatenate([xa, xb]), fields=fields)
    tens = {k: np.asarray(f[k][-1], dtype=np.float64) for k in fields}
    Theta = tens["Theta"]
    if kind == "gd":
        if eta is None:
            lam = float(np.linalg.eigvalsh(0.5 * (Theta[:n_a, :n_a] + Theta[:n_a, :n_a].T))[-1])
            if not lam > 0:
                raise ValueError("the training NTK vanishes: gradient descent does not move")
            eta = 1.0 / lam
    else:
        eta = None
    widths = network.widths
    n_hidden = widths[-2] if len(widths) > 1 else None
    width = float("inf") if n_hidden is None else float(n_hidden)
    four = {k: tens[k] for k in "ABPQRSTU"}
    m = mean_prediction(Theta, tens["K"], yt.T, n_a, 1.0, eta=eta, kind=kind, **four)
    solve = SPDSolver(Theta[:n_a, :n_a], name="Theta~ (training block of the NTK)")
    proj = solve.solve(Theta[:n_a, :])  # Theta~^{-1} Theta_{a d}

    def perp(X: np.ndarray) -> np.ndarray:  # (n_L, N_D) -> (N_B, n_L)
        return (X - X[:, :n_a] @ proj)[:, n_a:].T

    alpha = solve.solve(yt)  # Theta~^{-1} y, (N_A, n_L)
    parts = {
        "nlo_ntk": perp((tens["H1"][:, :n_a] @ alpha).T),
        "dntk_var": perp(-m.dntk_var),
        "dntk": perp(m.dntk),
        "ddI": perp(m.ddI),
        "ddII": perp(m.ddII),
    }
    coef = (m.mean - m.ntk)[:, n_a:].T + parts["nlo_ntk"]  # n_hidden = 1 above
    infinite = m.ntk[:, n_a:].T
    corr = coef / width if np.isfinite(width) else np.zeros_like(coef)
    cov = None
    if covariance:
        cov = _test_covariance(tens, yt, n_a, width, eta, kind)
    return TrainedPrediction(
        infinite=infinite,
        coefficient=coef,
        correction=corr,
        mean=infinite + corr,
        parts=parts,
        width=width,
        eta=None if eta is None else float(eta),
        kind=kind,
        not_included=_NOT_INCLUDED,
        tensors=tens,
        covariance=cov,
    )


def _test_covariance(
    tens: dict[str, np.ndarray],
    y: np.ndarray,
    n_a: int,
    width: float,
    eta: float | None,
    kind: str,
) -> TrainedCovariance:
    """:class:`TrainedCovariance` on the test inputs from the flow's output-layer tensors."""
    Theta, K = tens["Theta"], tens["K"]
    n_out, N = y.shape[1], Theta.shape[0]
    four = {k: tens[k] for k in "ABDFPQRSTU"}
    c = covariance_prediction(Theta, K, y.T, n_a, 1.0, eta=eta, kind=kind, **four)
    # linear change of [G]_perp = perp G perp^T under G -> K + G1/n, H -> Theta + H1/n
    a_ = _train_index(n_out, N, n_a)
    eye = np.eye(n_out)
    Tc, Kc, H1c = np.kron(eye, Theta), np.kron(eye, K), np.kron(eye, tens["H1"])
    solver = SPDSolver(Tc[np.ix_(a_, a_)], name="Theta~ (training block of the NTK)")
    perp = np.eye(n_out * N)
    perp[:, a_] -= solver.solve(Tc[a_, :]).T
    d_perp = np.zeros_like(perp)
    d_perp[:, a_] = -solver.solve((perp @ H1c[:, a_]).T).T
    lin = d_perp @ Kc @ perp.T
    g1 = perp @ np.kron(eye, tens["G1"]) @ perp.T
    shape = (n_out, N, n_out, N)
    parts = {
        "nlo_kernel": (0.5 * (g1 + g1.T)).reshape(shape),
        "nlo_ntk": (lin + lin.T).reshape(shape),
        **c.parts,
    }

    def test(C: np.ndarray) -> np.ndarray:  # (n_L, N_D, n_L, N_D) -> (N_B, n_L, N_B, n_L)
        return C[:, n_a:, :, n_a:].transpose(1, 0, 3, 2)

    parts = {k: test(v) for k, v in parts.items()}
    coef = sum(parts.values())
    corr = coef / width if np.isfinite(width) else np.zeros_like(coef)
    infinite = test(c.leading)
    return TrainedCovariance(
        infinite=infinite,
        coefficient=coef,
        correction=corr,
        covariance=infinite + corr,
        parts=parts,
    )
