"""The dNTK-preactivation statistics P and Q: how a finite-width network learns features.

Book chapter 11 (§11.2-§11.3); spec/06 §3-§4.  The dNTK ``dH-hat`` (11.8) correlates with the
preactivations at order 1/n (11.45):

    E[dH-hat_{i0 i1 i2; d0 d1 d2} z_{i3; d3}]
        = (1/n_{l-1}) [d_{i0 i3} d_{i1 i2} P_{d0 d1 d2 d3} + d_{i0 i1} d_{i2 i3} Q_{d0 d1 d2 d3}
                       + d_{i0 i2} d_{i1 i3} Q_{d0 d2 d1 d3}].

Recursions at the step ``l -> l+1`` (``C_W``, ``lambda_W`` of layer ``l+1``, ``rho = n_l/n_{l-1}``,
expectations over ``K = K^(l)``, ``H = Theta^(l)``; the G^{-1} contractions of the book are
replaced by Stein's lemma, spec/06 §0):

* (11.49) ``P'_{0123} = C_W^2 <s''_0 s'_1 s'_2 s_3> H_01 H_02 + rho C_W^2 <s'_1 s'_2>
  [<s''_0 s_3> (P_{0120} + B_{0012}) + <s'_0 s'_3> P_{0123}]``;
* (11.52) ``Q'_{0123} = C_W^2 <s''_0 s'_1 s'_2 s_3> H_01 H_02 + (lambda_W / C_W) F'_{1032}
  + rho C_W^2 <s'_0 s'_1> [<s''_2 s_3> Q_{0122} + <s'_2 s'_3> Q_{0123}]
  + rho C_W^2 H_01 sum_{g in {0,1}, h in {2,3}} e_g c_h F_{g 0 h 2}``
  with ``e_0 = <s'''_0 s'_1>``, ``e_1 = <s''_0 s''_1>``, ``c_2 = <s''_2 s_3>``,
  ``c_3 = <s'_2 s'_3>``, and ``F' = F^(l+1)`` the new layer's F (footnote 4 of ch. 11).

The F coefficient is ``lambda_W / C_W`` (the extraction of (11.44), (11.52) flattens the
fraction; spec/06 §3.4 and §10).  (11.51) prints the spectator ``<s'_1 s'_2>`` in the Q
recursion; the right one is ``<s'_0 s'_1>`` (spec/06 §10.2).  At the second layer (``P, Q, B, F``
of layer 1 vanish) the step gives the exact (11.31)-(11.32).

Kinked activations (ReLU family).  The dNTK of a real network is the almost-sure Hessian, in
which ``s''`` vanishes: the terms that come from ``s''`` in the forward equation (11.24) -- the
sources ``<s'' s' s' s> H H``, the B term of P and the F term of Q -- are zero.  The terms that
come from correlating ``dH-hat`` with functions of ``z`` (the replacement rule (11.42)) are
Gaussian integrations by parts and stay, in their moment (``<z ...> K^{-1}``) form.  For one
input this is the book's §11.3.1 (P = 0, Q from F alone); for several inputs the book is silent
(spec/06 §3.7) and this convention is what ensembles of real networks measure (tests).

Storage: ``P[a, b, c, d] = P_abcd``, ``Q[a, b, c, d] = Q_abcd``; ``B``, ``F`` as in
:mod:`pdlt.theory.ntk`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..activations import Activation
from .four_point import four_point_moments
from .kernel import mixed_pair_moments
from .ntk import first_projector

__all__ = ["DntkMoments", "dntk_moments", "dntk_step", "scale_invariant_dntk", "kstar0_dntk"]


@dataclass(frozen=True)
class DntkMoments:
    """The Gaussian expectations the P, Q (and R, S, T, U) recursions share, at one layer.

    ``pair[(i, j)][a, b] = <s^(i)_a s^(j)_b>_K``; ``pa, pb`` the first-order projector of
    ``s_a s'_b`` (:func:`pdlt.theory.ntk.first_projector`); ``M2110[a, b, c, d] =
    <s''_a s'_b s'_c s_d>_K`` (zero for kinked activations, see the module notes).
    """

    pair: dict[tuple[int, int], np.ndarray]
    pa: np.ndarray
    pb: np.ndarray
    M2110: np.ndarray


def dntk_moments(act: Activation, K: np.ndarray) -> DntkMoments:
    """Compute :class:`DntkMoments` at kernel ``K`` (shape (N, N))."""
    N = K.shape[0]
    smooth = act.smooth or act.polynomial_degree is not None
    orders = [(1, 1), (2, 0), (3, 1), (2, 2)] if smooth else [(1, 1)]
    m = mixed_pair_moments(act, K, orders)
    pair = {o: m[k] for k, o in enumerate(orders)}
    if not smooth:  # the almost-sure Hessian of a kinked network has s'' = s''' = 0
        pair.update({o: np.zeros((N, N)) for o in [(2, 0), (3, 1), (2, 2)]})
    pa, pb = first_projector(act, K)
    M2110 = four_point_moments(act, K, (2, 1, 1, 0)) if smooth else np.zeros((N,) * 4)
    return DntkMoments(pair, pa, pb, M2110)


def dntk_step(
    mom: DntkMoments,
    Theta: np.ndarray,
    B: np.ndarray,
    F: np.ndarray,
    F_next: np.ndarray,
    P: np.ndarray,
    Q: np.ndarray,
    C_W: float,
    lam_W: float,
    ratio: float,
) -> tuple[np.ndarray, np.ndarray]:
    """One step of (11.49) and (11.52): ``P^(l+1), Q^(l+1)``.

    Parameters
    ----------
    mom : DntkMoments
        Expectations over ``K^(l)``.
    Theta : ndarray, shape (N, N)
        ``Theta^(l)`` (the NTK mean at leading order).
    B, F, P, Q : ndarray, shape (N, N, N, N)
        Layer-``l`` tensors (zero at ``l = 1``).
    F_next : ndarray, shape (N, N, N, N)
        ``F^(l+1)``.
    C_W, lam_W : float
        ``C_W^(l+1)``, ``lambda_W^(l+1)``.
    ratio : float
        ``n_l / n_{l-1}``.

    Returns
    -------
    P, Q : ndarray, shape (N, N, N, N)
    """
    H, rho = Theta, ratio
    dd, s20 = mom.pair[(1, 1)], mom.pair[(2, 0)]
    e0, e1 = mom.pair[(3, 1)], mom.pair[(2, 2)]
    source = mom.M2110 * H[:, :, None, None] * H[:, None, :, None]
    # derivative of s'_0 s_3: slot 3 gets pa[3, 0], slot 0 gets pb[3, 0]
    c3, c0 = mom.pa.T, mom.pb.T  # [d0, d3]
    P_aa = np.einsum("abca->abc", P)[..., None]  # P_{012 0}
    B_aa = np.einsum("aabc->abc", B)[..., None]  # B_{0012}
    P_new = C_W**2 * (
        source
        + rho
        * dd[None, :, :, None]
        * (c3[:, None, None, :] * P + c0[:, None, None, :] * P_aa + s20[:, None, None, :] * B_aa)
    )
    # derivative of s'_2 s_3: slot 3 gets pa[3, 2], slot 2 gets pb[3, 2]
    Q_cc = np.einsum("abcc->abc", Q)[..., None]  # Q_{0122}
    proj_Q = mom.pa.T[None, None] * Q + mom.pb.T[None, None] * Q_cc
    F_ab = (  # sum_{g, h} e_g c_h F_{g 0 h 2}; coinciding labels add up automatically
        e0[:, :, None, None]
        * (
            s20[None, None] * np.einsum("aacc->ac", F)[:, None, :, None]
            + dd[None, None] * np.einsum("aadc->acd", F)[:, None]
        )
        + e1[:, :, None, None]
        * (s20[None, None] * np.einsum("bacc->abc", F)[..., None] + dd[None, None] * _swap(F))
    )
    Q_new = (
        C_W**2 * source
        + (lam_W / C_W) * _swap(F_next)
        + rho * C_W**2 * (dd[:, :, None, None] * proj_Q + H[:, :, None, None] * F_ab)
    )
    return P_new, Q_new


def _swap(F: np.ndarray) -> np.ndarray:
    """``out[a, b, c, d] = F[b, a, d, c]`` (``F_{1032}`` as a function of ``(0, 1, 2, 3)``)."""
    return np.einsum("badc->abcd", F)


# --------------------------------------------------------------------------------------------
# Closed forms at criticality (single input)
# --------------------------------------------------------------------------------------------


def scale_invariant_dntk(
    ell: np.ndarray,
    depth: int,
    a_plus: float,
    a_minus: float,
    K_star: float,
    lam_b_tilde: float,
    lam_W_tilde: float,
) -> dict[str, np.ndarray]:
    """(11.76)-(11.81): the scale-invariant class at criticality, learning rates ``lambda/L``.

    Returns ``Theta``, ``F``, ``P`` (identically 0, (11.74)), ``Q`` and the ratio
    ``Q/(n Theta^2)`` times ``n`` at layers ``ell``, exact in ``ell`` at leading order in 1/n.
    """
    ell = np.asarray(ell, dtype=np.float64)
    A2, A4 = (a_plus**2 + a_minus**2) / 2, (a_plus**4 + a_minus**4) / 2
    lam = lam_b_tilde + lam_W_tilde * A2 * K_star
    Theta = lam * ell / depth
    F = ell * (ell - 1) / (2 * depth) * (A4 / A2**2) * lam * K_star
    Q = ell * (ell**2 - 1) / (6 * depth**2) * (A4 / A2) * lam_W_tilde * K_star * lam
    return {"Theta": Theta, "F": F, "P": np.zeros_like(ell), "Q": Q, "nQ/Theta^2": Q / Theta**2}


def kstar0_dntk(
    ell: np.ndarray, depth: int, taylor: np.ndarray, lam_b_tilde: float, lam_W_tilde: float
) -> dict[str, np.ndarray]:
    """(11.92)-(11.102): leading large-``ell`` behaviour in the K* = 0 class at criticality.

    ``taylor`` holds ``sigma_0..sigma_3`` (:attr:`Activation.taylor`); learning rates follow
    (11.91), ``lambda_b = lt_b ell^{-p} L^{p-1}``, ``lambda_W = lt_W (L/ell)^{p-1}`` with
    ``p = p_perp = b1/a1``.  Returns ``Theta``, ``P``, ``Q`` and the ratios ``n P/Theta^2``,
    ``n Q/Theta^2`` (which grow like ``ell``, (11.100), (11.102)).
    """
    s1, s2, s3 = taylor[1], taylor[2], taylor[3]
    a1 = s3 / s1 + 0.75 * (s2 / s1) ** 2
    b1 = s3 / s1 + (s2 / s1) ** 2
    if a1 >= 0:
        raise ValueError(f"the K* = 0 class needs a1 < 0 (footnote 10 of ch. 11); a1 = {a1:g}")
    p = b1 / a1
    ell = np.asarray(ell, dtype=np.float64)
    Lam = lam_b_tilde + lam_W_tilde * s1**2 / (-a1)
    Theta = Lam * (depth / ell) ** (p - 1)
    grow = depth ** (2 * p - 2) * Lam**2 * ell ** (3 - 2 * p)
    P = -(1 / 3) * (2 - p) / (5 - p) * grow
    Q = (1 - p - lam_b_tilde / Lam) / (5 - p) ** 2 * grow
    return {"Theta": Theta, "P": P, "Q": Q, "nP/Theta^2": P / Theta**2, "nQ/Theta^2": Q / Theta**2}
