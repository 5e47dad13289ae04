r"""Residual MLPs (appendix B): the four-point vertex of a residual network.

A residual layer computes ``z^(l+1) = b + W sigma(z^(l)) + gamma z^(l)`` (B.3); the kernel
and NTK recursions only gain ``gamma^2 K^(l)`` and ``gamma^2 Theta^(l)`` (B.11) (see
:mod:`pdlt.theory.flow`).  The vertex is different: the book's (B.25)-(B.26) evaluate the
layer-``l`` correlations with the vanilla interaction structure, but the identity branch carries
each neuron's own past forward, so two neurons' ``sigma^2`` and ``z^2`` are correlated through
every Hermite mode of ``Sigma = sigma^2``, not only the ``z^2`` mode (spec/08 §3.4).  The
corrected single-input recursion (spec/08 §3.4.3), with ``chi = gamma^2 + C_W g'(K)``,

.. math::

    V^{(l+1)} &= \chi^2 V^{(l)} + C_W^2 [\langle\sigma^4\rangle - \langle\sigma^2\rangle^2]
        + 4\gamma^2 C_W g' K^2 + 4 C_W \chi \sum_{a \ne 2} m^{(l)}_a s_a, \\
    m^{(l+1)}_a &= \gamma^a \chi\, m^{(l)}_a + \tfrac{C_W}{2} \gamma^a \tfrac{K^a}{a!} s_a,

where ``s_a = <Sigma^(a)>_K = K^{-a/2} <Sigma(z) He_a(z/sqrt K)>_K``, reduces to (B.26) when the
modes ``m_a`` are dropped, to the vanilla (5.109) at ``gamma = 0``, and is what ensembles of
real residual networks measure (``tests/test_residual.py``).  The modes are carried
normalized, ``nu_a = m_a sqrt(a!) K^{-a/2}``, so nothing overflows at high order.

Modes ``a = 1..a_max`` are kept (default 80).  The neglected variance ``sum_{a > a_max} c_a``
(``c_a = h_a^2``, :func:`sigma_squared_modes`) bounds the truncation: for ReLU it is
``1.8e-6 K^2`` (``1.1e-5 K^2`` at ``a_max = 40``, spec/08 §3.4.3), a relative ``~1e-7`` of
``V``; for tanh at ``K = 1`` it is ``2e-9`` of ``<sigma^4> - <sigma^2>^2`` (the modes of a
function analytic in a strip decay like ``exp(-c sqrt(a))``, so ``a_max = 40`` would leave
``3e-6``), and less at the small kernels of deep critical networks.

Several inputs: :func:`residual_vertex_inputs` carries the covariance of arbitrary functions of
two neurons down the layers instead of modes; for one input it equals the mode recursion
(tested), for ``gamma = 0`` the vanilla (4.119).
"""

from __future__ import annotations

import math

import numpy as np

from ..activations import Activation
from ..gaussian import expect, moments
from .four_point import Jacobian, four_point_moments, half_projector
from .kernel import helpers, pair_moments

__all__ = ["sigma_squared_modes", "residual_vertex", "residual_vertex_inputs", "A_MAX"]

A_MAX = 80
_PANEL = 0.4
_U_MAX = 14.0


def sigma_squared_modes(act: Activation, K: np.ndarray, a_max: int = A_MAX) -> np.ndarray:
    r"""Normalized Hermite coefficients of ``sigma^2``: ``h_a = <sigma(z)^2 psi_a(z/sqrt K)>_K``.

    ``psi_a = He_a / sqrt(a!)`` (orthonormal under the standard Gaussian), so
    ``s_a = <(sigma^2)^{(a)}>_K = K^{-a/2} sqrt(a!) h_a`` and
    ``<sigma^4>_K - <sigma^2>_K^2 = sum_{a >= 1} h_a^2``.

    Parameters
    ----------
    act : Activation
    K : ndarray, shape (L,)
        Single-input kernel values, ``K > 0``.
    a_max : int
        Highest mode.

    Returns
    -------
    ndarray, shape (L, a_max + 1)
        ``[l, a] = h_a`` at ``K[l]``.
    """
    K = np.asarray(K, dtype=np.float64)
    out = np.empty((K.size, a_max + 1))
    for i, k in enumerate(K.reshape(-1)):  # one integral per kernel value: fn sees one scale
        root = math.sqrt(k)

        def fn(z: np.ndarray, root: float = root) -> np.ndarray:
            x = z[..., 0] / root
            psi = [np.ones_like(x), x]
            for a in range(1, a_max):
                psi.append((x * psi[a] - math.sqrt(a) * psi[a - 1]) / math.sqrt(a + 1))
            s2 = act.derivative(z[..., 0], 0) ** 2
            return np.stack(psi[: a_max + 1], axis=-1) * s2[..., None]

        # panels at most 0.4 wide in z / sqrt(K) resolve psi_80's oscillations (wavelength
        # ~0.5), and |z / sqrt(K)| <= 14 its extent (|psi_a| sqrt(phi) <= 1 leaves
        # sqrt(phi(14)) ~ 1e-21 outside); polynomial activations take the same composite rule
        # (their Gauss-Hermite rule is exact only to degree 31)
        scale = min(act.scale, _PANEL * root)
        out[i] = expect(fn, np.array([[k]]), kinks=act.kinks, scale=scale, u_max=_U_MAX)
    return out


def residual_vertex(
    act: Activation,
    K: np.ndarray,
    C_W: np.ndarray,
    gamma: np.ndarray,
    *,
    corrected: bool = True,
    a_max: int = A_MAX,
) -> np.ndarray:
    r"""Single-input four-point vertex ``V^(l)``, ``l = 1..L``, of a residual MLP.

    Parameters
    ----------
    act : Activation
    K : ndarray, shape (L,)
        The single-input kernel at every layer (B.11).
    C_W, gamma : ndarray, shape (L,)
        Per-layer ``C_W^(l)`` and ``gamma^(l)``; step ``l -> l+1`` uses entry ``l``.
    corrected : bool
        True (default): the corrected recursion (spec/08 §3.4.3), which real networks follow;
        False: the book's (B.26).
    a_max : int
        Highest Hermite mode of ``sigma^2`` kept in the correction.

    Returns
    -------
    ndarray, shape (L,)
        ``V^(1) = 0``; equal hidden widths are assumed (residual layers need them, (B.4)).
    """
    K = np.asarray(K, dtype=np.float64)
    L = K.size
    V = np.zeros(L)
    if L == 1:
        return V
    cw_next = np.asarray(C_W, dtype=np.float64)[1:]
    g_next = np.asarray(gamma, dtype=np.float64)[1:]
    hp = helpers(act, K[:-1], cw_next)
    if corrected:
        h = sigma_squared_modes(act, K[:-1], a_max)
        modes = np.array([a for a in range(1, a_max + 1) if a != 2])
    nu = np.zeros(a_max + 1)  # normalized modes nu_a = m_a sqrt(a!) K^{-a/2} at layer l
    for ell in range(1, L):  # step l -> l + 1, index ell - 1
        i = ell - 1
        gam, cw, k = g_next[i], cw_next[i], K[i]
        g_prime = hp.chi_par[i] / cw
        chi = gam**2 + hp.chi_par[i]
        V[ell] = chi**2 * V[i] + hp.s_V[i] + 4.0 * gam**2 * cw * g_prime * k**2
        if corrected:
            # m_a s_a = nu_a h_a (both at layer l)
            V[ell] += 4.0 * cw * chi * float(np.dot(nu[modes], h[i, modes]))
            # nu_a at layer l+1: (gamma^2 K_l / K_{l+1})^{a/2} [chi nu_a + (C_W/2) h_a]
            a = np.arange(a_max + 1)
            shrink = (gam**2 * k / K[ell]) ** (a / 2.0) if gam else (a == 0).astype(float)
            nu = shrink * (chi * nu + 0.5 * cw * h[i])
            nu[0] = nu[2] = 0.0
    return V


# --------------------------------------------------------------------------------------------
# several inputs: the neuron-neuron covariance functional


def residual_vertex_inputs(
    act: Activation, K: np.ndarray, C_W: np.ndarray, gamma: np.ndarray
) -> np.ndarray:
    r"""Four-point vertex ``V^(l)_{(ab)(cd)}``, ``l = 1..L``, of a residual MLP, N inputs.

    With an identity branch a neuron carries its own past forward, so two neurons ``j != k``
    are correlated beyond what ``V`` says: ``n Cov(f(z_j), g(z_k)) =: C^(l)[f, g]`` is not
    ``sum V (Df)(Dg)`` for a general ``f`` (spec/08 §3.4).  Conditioning layer ``l+1`` on layer
    ``l`` (``z_j' = u_j + gamma z_j``, ``u`` Gaussian with the stochastic metric ``G-hat``)
    gives, to order 1/n, the recursion (derived here; its single-input case is the corrected
    recursion of :func:`residual_vertex`, its ``gamma = 0`` case (4.119))

    .. math::

        C'[f, g] = C[Sf, Sg] + C_W \sum_{cd} (\kappa[Sf, \Sigma_{cd}]
            + C[Sf, \Sigma_{cd}]) (Dg)_{cd} + (f \leftrightarrow g)
            + C_W^2 \sum (\kappa[\Sigma_{cd}, \Sigma_{ef}] + C[\Sigma_{cd}, \Sigma_{ef}])
            (Df)_{cd} (Dg)_{ef},

    where ``Sf(x) = E_u[f(u + gamma x)]`` (the same neuron one layer down), ``Sigma_cd =
    s(x_c) s(x_d)``, ``kappa`` the same-neuron covariance under ``K^(l)`` and ``(Df)_cd =
    d<f>_{K^(l+1)} / dK_cd`` (symmetric gradient, :func:`half_projector`).  ``V = C[zz, zz]``.
    The functions that occur are the quadratics ``z_a z_b`` (``S`` keeps them quadratic) and
    ``Sigma`` of a layer ``p`` carried down to layer ``m``, whose same-neuron covariance with
    ``Sigma`` of layer ``m`` is a four-dimensional Gaussian integral over one neuron at two
    layers, ``Cov(z^(p)_a, z^(m)_c) = (prod_{q=m+1}^{p} gamma_q) K^(m)_ac``.

    Parameters
    ----------
    act : Activation
    K : ndarray, shape (L, N, N)
        The kernel at every layer (B.11).
    C_W, gamma : ndarray, shape (L,)
        Per-layer ``C_W^(l)`` and ``gamma^(l)``; step ``l -> l+1`` uses entry ``l``.

    Returns
    -------
    ndarray, shape (L, N, N, N, N)
        ``V[l-1, a, b, c, d] = V^(l)_{(ab)(cd)}``; ``V^(1) = 0``.  Equal hidden widths.
    """
    K = np.asarray(K, dtype=np.float64)
    L, N = K.shape[0], K.shape[1]
    V = np.zeros((L, N, N, N, N))
    cw = np.asarray(C_W, dtype=np.float64)
    gam = np.asarray(gamma, dtype=np.float64)
    if L == 1:
        return V
    J = [half_projector(act, K[m], 0) for m in range(L - 1)]  # D of Sigma at layer m
    ss = [pair_moments(act, K[m], (0,))[0] for m in range(L - 1)]
    zero = np.zeros((N,) * 4)
    C: dict[tuple[object, object], np.ndarray] = {}  # C at layer m (0-based), zero at m = 0

    def get(A: object, B: object) -> np.ndarray:
        if (A, B) in C:
            return C[(A, B)]
        if (B, A) in C:
            return C[(B, A)].transpose(2, 3, 0, 1)
        return zero

    for m in range(L - 1):  # step layer m -> m + 1 (0-based)
        g, c = gam[m + 1], cw[m + 1]
        kSS = four_point_moments(act, K[m]) - np.multiply.outer(ss[m], ss[m])
        kQS = _quadratic_covariance(K[m], J[m])  # Cov(x_a x_b, Sigma_cd) under K^(m)
        cross = {p: _cross_layer_covariance(act, K, gam, ss, p, m) for p in range(m + 1, L - 1)}
        labels = ["Q", *range(m + 1, L - 1)]  # functions of layer m + 1 that are needed
        # X_A[a, b, c, d] = kappa[SA_ab, Sigma_cd] + C[SA_ab, Sigma_cd] at layer m
        X = {"Q": g**2 * (kQS + get("Q", m))}
        X.update({p: cross[p] + get(p, m) for p in labels[1:]})
        XSS = kSS + get(m, m)
        D = {"Q": None}
        D.update({p: (np.prod(gam[m + 2 : p + 1]) ** 2, J[p]) for p in labels[1:]})
        f = {"Q": g**2, **{p: 1.0 for p in labels[1:]}}
        new: dict[tuple[object, object], np.ndarray] = {}
        for i, A in enumerate(labels):
            for B in labels[i:]:
                term = f[A] * f[B] * get(A, B)
                term = term + c * _apply_last(D[B], X[A])
                term = term + c * _apply_first(D[A], X[B].transpose(2, 3, 0, 1))
                term = term + c**2 * _apply_first(D[A], _apply_last(D[B], XSS))
                new[(A, B)] = term
        C = new
        V[m + 1] = C[("Q", "Q")]
    return V


def _apply_first(D: tuple[float, Jacobian] | None, X: np.ndarray) -> np.ndarray:
    """``sum_cd (Df)_{ab;cd} X[c, d, e, f]``; ``None`` is ``f = z z`` (the identity)."""
    if D is None:
        return X
    scale, J = D
    return scale * J.apply(X)


def _apply_last(D: tuple[float, Jacobian] | None, X: np.ndarray) -> np.ndarray:
    """``sum_cd X[a, b, c, d] (Df)_{ef;cd}``."""
    if D is None:
        return X
    scale, J = D
    return scale * np.moveaxis(J.apply(np.moveaxis(X, (2, 3), (0, 1))), (0, 1), (2, 3))


def _quadratic_covariance(K: np.ndarray, J: Jacobian) -> np.ndarray:
    """``Cov(x_a x_b, s_c s_d) = 2 sum_gh K_ag K_bh (1/2)<d_g d_h s_c s_d>``, ``x ~ N(0, K)``."""
    T = 0.5 * (np.einsum("ag,bh->ghab", K, K) + np.einsum("ah,bg->ghab", K, K))
    return 2.0 * J.apply(T).transpose(2, 3, 0, 1)


def _cross_layer_covariance(
    act: Activation,
    K: np.ndarray,
    gamma: np.ndarray,
    ss: list[np.ndarray],
    p: int,
    m: int,
) -> np.ndarray:
    """``Cov(s(z^(p)_a) s(z^(p)_b), s(z^(m)_c) s(z^(m)_d))`` for one neuron, ``p > m`` (0-based).

    At leading order ``z^(p) = (prod gamma) z^(m) + independent Gaussian``, so the four
    preactivations are jointly Gaussian with ``Cov(z^(p)_a, z^(m)_c) = Gamma K^(m)_ac``.
    """
    N = K.shape[1]
    Gam = float(np.prod(gamma[m + 1 : p + 1]))
    if Gam == 0.0:  # no identity path from layer m to layer p: independent
        return np.zeros((N,) * 4)
    out = np.empty((N,) * 4)
    pairs = [(a, b) for a in range(N) for b in range(a, N)]
    quads = [(a, b, c, d) for a, b in pairs for c, d in pairs]
    idx_p = np.array([[a, b] for a, b, _, _ in quads])
    idx_m = np.array([[c, d] for _, _, c, d in quads])
    Kp, Km = K[p], K[m]
    blocks = np.empty((len(quads), 4, 4))
    blocks[:, :2, :2] = Kp[idx_p[:, :, None], idx_p[:, None, :]]
    blocks[:, 2:, 2:] = Km[idx_m[:, :, None], idx_m[:, None, :]]
    blocks[:, :2, 2:] = Gam * Km[idx_p[:, :, None], idx_m[:, None, :]]
    blocks[:, 2:, :2] = blocks[:, :2, 2:].transpose(0, 2, 1)
    mom = moments(act, blocks, [[(0, 0), (1, 0), (2, 0), (3, 0)]])[:, 0]
    for (a, b, c, d), v in zip(quads, mom, strict=True):
        val = v - ss[p][a, b] * ss[m][c, d]
        for x, y in ((a, b), (b, a)):
            out[x, y, c, d] = out[x, y, d, c] = val
    return out
