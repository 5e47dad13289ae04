"""The ddNTK means R, S, T, U: the last statistics a finite-width network needs to train.

Book §∞.1 and §∞.3; spec/07 §2-§4.  The two ddNTKs (∞.5), (∞.7) have means at order 1/n
(∞.11)-(∞.13):

    E[ddI_{i0 i1 i2 i3; d0 d1 d2 d3}] = (1/n_{l-1}) [d_{i0 i1} d_{i2 i3} R_{0123}
        + d_{i0 i2} d_{i3 i1} R_{0231} + d_{i0 i3} d_{i1 i2} R_{0312}],
    E[ddII_{i1 i2 i3 i4; d1 d2 d3 d4}] = (1/n_{l-1}) [d_{i1 i2} d_{i3 i4} S_{1234}
        + d_{i1 i3} d_{i4 i2} T_{1342} + d_{i1 i4} d_{i2 i3} U_{1423}].

Recursions (∞.177)-(∞.181) at the step ``l -> l+1`` in Stein form (spec/07 §3.1), with
``a_{d;(pq)} = lambda_W [d_{dp} <s''_p s_q> + d_{dq} <s'_p s'_q>] + C_W H_pq [d_{dp} <s'''_p s'_q>
+ d_{dq} <s''_p s''_q>]`` and ``a0_(pq)`` its ``d = p`` part:

* ``R'_{0123} = lambda_W C_W <s''_0 s_1 s'_2 s'_3> H_02 H_03
  + C_W^2 <s'''_0 s'_1 s'_2 s'_3> H_01 H_02 H_03
  + rho C_W <s'_2 s'_3> [a0_(01) B_{0023} + sum_d a_{d;(01)} P_{023d}]
  + rho C_W^2 <s'_0 s'_1><s'_2 s'_3> R_{0123}``;
* ``S'_{1234} = C_W lambda_W <s'_1 s'_2 s'_3 s'_4> H_13 H_24
  + C_W^2 <s''_1 s''_2 s'_3 s'_4> H_12 H_13 H_24
  + rho C_W <s'_3 s'_4> [lambda_W <s'_1 s'_2> + C_W H_12 <s''_1 s''_2>] B_{1234}
  + rho C_W^2 <s'_1 s'_2><s'_3 s'_4> S_{1234}``;
* ``T'_{1342} = lambda_W^2 <s'_1 s'_2 s_3 s_4> H_12 + C_W lambda_W [<s'_1 s''_2 s_3 s'_4> H_12 H_24
  + <s''_1 s'_2 s'_3 s_4> H_12 H_13] + C_W^2 <s''_1 s''_2 s'_3 s'_4> H_12 H_13 H_24
  + rho sum a_{g;(13)} a_{h;(24)} F_{g1h2} + rho C_W <s'_2 s'_4> sum_d a_{d;(13)} Q_{241d}
  + rho C_W <s'_1 s'_3> sum_d a_{d;(24)} Q_{132d} + rho C_W^2 <s'_1 s'_3><s'_2 s'_4> T_{1342}``;
* ``U'_{1423} = C_W^2 <s''_1 s''_2 s'_3 s'_4> H_12 H_13 H_24
  + rho C_W^2 <s'_1 s'_4><s'_2 s'_3> U_{1423}``.

The printed (∞.177) drops the ``lambda_W`` (and ``C_W``) factor of the second P term in each
bracket (spec/07 §13.4); dimensional analysis and the single-input (∞.14) fix it.

Storage: ``R[a, b, c, d] = R_abcd``, ``S[a, b, c, d] = S_abcd``, ``T[a, b, c, d] = T_abcd`` and
``U[a, b, c, d] = U_abcd`` in the book's slot order (so ``T_{1342}`` is ``T[1, 3, 4, 2]``), which
is what :func:`pdlt.empirical.estimators.measure` returns.

Kinked activations (ReLU, leaky ReLU): not defined.  One gradient-descent step is not an
expansion in the learning rate when a preactivation crosses the kink ((∞.41)-(∞.44)), and the
recursions contain ``<s'' s''>``, ``<s''' s'>`` which diverge; the book excludes the class from
its training dynamics (§∞.1, book.txt L34230-L34280).  :func:`require_ddntk` says so.
"""

from __future__ import annotations

import numpy as np

from ..activations import Activation
from .dntk import DntkMoments
from .four_point import four_point_moments

__all__ = ["require_ddntk", "ddntk_step", "linear_ddntk", "kstar0_ddntk"]


def require_ddntk(act: Activation) -> None:
    """Raise a ValueError saying why the ddNTKs are undefined for a kinked activation."""
    if act.kinks and act.polynomial_degree is None:
        raise ValueError(
            f"R, S, T, U are not defined for {act.name!r}: it has a kink, so one gradient step "
            "is not an expansion in the learning rate (book (∞.41)-(∞.44), L34230-L34280) and "
            "<s'' s''>, <s''' s'> diverge; use a smooth activation (GELU, SWISH, tanh, ...)"
        )
    act.require_smooth(3, "the ddNTK means R, S, T, U")


def _moments4(act: Activation, K: np.ndarray, M2110: np.ndarray) -> dict[str, np.ndarray]:
    """The four-point expectations of (∞.177)-(∞.181), by slot order (``"2011"`` is
    ``<s''_a s_b s'_c s'_d>``), from three integrations and permutations of ``M2110``."""
    M0011 = four_point_moments(act, K, (0, 0, 1, 1))
    return {
        "2110": M2110,
        "2011": np.einsum("acdb->abcd", M2110),
        "1201": np.einsum("badc->abcd", M2110),
        "1100": np.einsum("cdab->abcd", M0011),
        "1111": four_point_moments(act, K, (1, 1, 1, 1)),
        "2211": four_point_moments(act, K, (2, 2, 1, 1)),
        "3111": four_point_moments(act, K, (3, 1, 1, 1)),
    }


def ddntk_step(
    act: Activation,
    K: np.ndarray,
    mom: DntkMoments,
    Theta: np.ndarray,
    prev: dict[str, np.ndarray],
    C_W: float,
    lam_W: float,
    ratio: float,
) -> dict[str, np.ndarray]:
    """One step of (∞.177)-(∞.181): ``R, S, T, U`` of layer ``l+1``.

    Parameters
    ----------
    act : Activation
        Smooth (or linear); see :func:`require_ddntk`.
    K : ndarray, shape (N, N)
        ``K^(l)``.
    mom : DntkMoments
        Expectations over ``K^(l)`` (:func:`pdlt.theory.dntk.dntk_moments`).
    Theta : ndarray, shape (N, N)
        ``Theta^(l)``.
    prev : dict
        Layer-``l`` tensors ``B, F, P, Q, R, S, T, U``, each (N, N, N, N).
    C_W, lam_W, ratio : float
        ``C_W^(l+1)``, ``lambda_W^(l+1)``, ``n_l / n_{l-1}``.

    Returns
    -------
    dict with ``R, S, T, U``, each (N, N, N, N) in storage order.
    """
    M = _moments4(act, K, mom.M2110)
    H, rho = Theta, ratio
    dd, s20, s31, s22 = (mom.pair[o] for o in [(1, 1), (2, 0), (3, 1), (2, 2)])
    ap = lam_W * s20 + C_W * H * s31  # coefficient of slot p in a_{.;(pq)}
    aq = lam_W * dd + C_W * H * s22  # coefficient of slot q
    B, F, P, Q = (prev[k] for k in "BFPQ")
    # natural labels (1, 2, 3, 4) -> axes (a, b, c, d)
    H12, H13, H24 = H[:, :, None, None], H[:, None, :, None], H[None, :, None, :]
    dd12, dd34 = dd[:, :, None, None], dd[None, None]
    dd13, dd24 = dd[:, None, :, None], dd[None, :, None, :]
    HHH = H12 * H13 * H24

    # R_{0123} with (0, 1, 2, 3) -> (a, b, c, d)
    R = (
        lam_W * C_W * M["2011"] * H13 * H[:, None, None, :]
        + C_W**2 * M["3111"] * H12 * H13 * H[:, None, None, :]
    )
    bracket = ap[:, :, None, None] * (
        np.einsum("aacd->acd", B)[:, None] + np.einsum("acda->acd", P)[:, None]
    ) + aq[:, :, None, None] * np.einsum("acdb->abcd", P)
    R = R + rho * C_W * dd34 * bracket + rho * C_W**2 * dd12 * dd34 * prev["R"]

    S = C_W * lam_W * M["1111"] * H13 * H24 + C_W**2 * M["2211"] * HHH
    S = S + rho * C_W * dd34 * (lam_W * dd12 + C_W * H12 * s22[:, :, None, None]) * B
    S = S + rho * C_W**2 * dd12 * dd34 * prev["S"]

    t = lam_W**2 * M["1100"] * H12 + C_W**2 * M["2211"] * HHH
    t = t + C_W * lam_W * (M["1201"] * H12 * H24 + M["2110"] * H12 * H13)
    ap13, aq13 = ap[:, None, :, None], aq[:, None, :, None]
    ap24, aq24 = ap[None, :, None, :], aq[None, :, None, :]
    t = t + rho * (  # sum_{g in (1, 3), h in (2, 4)} a_g a_h F_{g 1 h 2}
        ap13 * ap24 * np.einsum("aabb->ab", F)[:, :, None, None]
        + ap13 * aq24 * np.einsum("aadb->abd", F)[:, :, None, :]
        + aq13 * ap24 * np.einsum("cabb->abc", F)[..., None]
        + aq13 * aq24 * np.einsum("cadb->abcd", F)
    )
    t = t + rho * C_W * dd24 * (
        ap13 * np.einsum("bdaa->abd", Q)[:, :, None, :] + aq13 * np.einsum("bdac->abcd", Q)
    )
    t = t + rho * C_W * dd13 * (
        ap24 * np.einsum("acbb->abc", Q)[..., None] + aq24 * np.einsum("acbd->abcd", Q)
    )
    t = t + rho * C_W**2 * dd13 * dd24 * np.einsum("acdb->abcd", prev["T"])

    u = C_W**2 * M["2211"] * HHH + rho * C_W**2 * dd[:, None, None, :] * dd[None, :, :, None] * (
        np.einsum("adbc->abcd", prev["U"])
    )
    return {
        "R": R,
        "S": S,
        "T": np.einsum("adbc->abcd", t),  # T[1, 3, 4, 2] = t[1, 2, 3, 4]
        "U": np.einsum("acdb->abcd", u),  # U[1, 4, 2, 3] = u[1, 2, 3, 4]
    }


# --------------------------------------------------------------------------------------------
# Closed forms at criticality (single input)
# --------------------------------------------------------------------------------------------


def linear_ddntk(
    ell: np.ndarray, depth: int, K_star: float, lam_b_tilde: float, lam_W_tilde: float
) -> dict[str, np.ndarray]:
    """(∞.46)-(∞.51): deep linear networks at criticality with ``lambda = lambda-tilde / L``.

    Exact in ``ell`` at leading order in 1/n: ``R = U = 0``,
    ``S = ell^2 (ell^2 - 1)/(12 L^3) Lam^2 lt_W``, ``T = ell^2 (ell^2 - 1)/(12 L^3) Lam lt_W^2 K*``
    with ``Lam = lt_b + lt_W K*``; also ``Theta = Lam ell / L`` and the ratios ``n X K/Theta^3``.
    """
    ell = np.asarray(ell, dtype=np.float64)
    Lam = lam_b_tilde + lam_W_tilde * K_star
    Theta = Lam * ell / depth
    c = ell**2 * (ell**2 - 1) / (12 * depth**3)
    S, T = c * Lam**2 * lam_W_tilde, c * Lam * lam_W_tilde**2 * K_star
    zero = np.zeros_like(ell)
    out = {"Theta": Theta, "R": zero, "S": S, "T": T, "U": zero}
    for k in "RSTU":
        out[f"n{k}K/Theta^3"] = out[k] * K_star / Theta**3
    return out


def kstar0_ddntk(
    ell: np.ndarray, taylor: np.ndarray, lam_b_tilde: float, lam_W_tilde: float
) -> dict[str, np.ndarray]:
    """(∞.30)-(∞.37): leading large-``ell`` terms for odd activations of the K* = 0 class.

    Criticality ``C_b = 0``, ``C_W = 1/sigma_1^2`` and learning rates (∞.29) with ``p_perp = 1``:
    ``lambda_b = lt_b/ell``, ``lambda_W = lt_W``.  Returns ``K``, ``Theta``, ``R, S, T, U`` and the
    ratios ``n X K/Theta^3`` (R, S, T grow like ``ell``; U decays like ``1/ell``).
    """
    s1, s2, s3 = taylor[1], taylor[2], taylor[3]
    if abs(s2) > 1e-12 * abs(s1):
        raise ValueError("(∞.30)-(∞.33) are for odd activations (sigma_2 = 0)")
    a1 = s3 / s1
    if a1 >= 0:
        raise ValueError(f"the K* = 0 class needs a1 < 0; a1 = {a1:g}")
    m = -a1
    ell = np.asarray(ell, dtype=np.float64)
    Th = lam_b_tilde + lam_W_tilde * s1**2 / m
    K = 1 / (m * ell)
    R = -(ell**2 / 48) * (3 * lam_b_tilde + 4 * lam_W_tilde * s1**2 / m) * Th**2 * m
    S = (ell**2 / 12) * Th**2 * lam_W_tilde * s1**2
    T = (ell**2 / 32) * Th * m * lam_b_tilde**2
    U = 0.5 * Th**3 * m * np.ones_like(ell)
    out = {"K": K, "Theta": Th * np.ones_like(ell), "R": R, "S": S, "T": T, "U": U}
    for k in "RSTU":
        out[f"n{k}K/Theta^3"] = out[k] * K / Th**3
    return out
