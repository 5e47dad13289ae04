r"""Residual MLPs (appendix B): the four-point vertex of a residual network, single input.

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
"""

from __future__ import annotations

import math

import numpy as np

from ..activations import Activation
from ..gaussian import expect
from .kernel import helpers

__all__ = ["sigma_squared_modes", "residual_vertex", "A_MAX"]

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
