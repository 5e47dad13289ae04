r"""Residual MLPs (appendix B): the four-point vertex, NLO metric and NTK statistics.

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
(tested), for ``gamma = 0`` the vanilla (4.119).  :func:`residual_nlo_metric` gives ``G^{1}``
by the same conditioning, and :func:`residual_ntk_statistics` the NTK statistics A, B, D, F:
the same functional on the neuron state extended by two tangents, whose covariance is the NTK.
"""

from __future__ import annotations

import math

import numpy as np

from ..activations import Activation
from ..gaussian import expect, moments
from .four_point import (
    Jacobian,
    _blocks,
    _derivative_pair,
    four_point_moments,
    half_projector,
    nlo_shift,
)
from .kernel import helpers, mixed_pair_moments, pair_moments

__all__ = [
    "sigma_squared_modes",
    "residual_vertex",
    "residual_vertex_inputs",
    "residual_nlo_metric",
    "residual_ntk_statistics",
    "A_MAX",
]

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

Label = tuple[int, int, int] | str  # (p, i, j): s^(i)_a s^(j)_b of layer p carried down; "S"


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
    return _extended_vertex(act, K, None, C_W, None, gamma, 1)


def residual_nlo_metric(
    act: Activation,
    K: np.ndarray,
    C_W: np.ndarray,
    gamma: np.ndarray,
    G1_first: np.ndarray,
    C_b1: np.ndarray,
    C_W1: np.ndarray,
    ratio_first: float = 1.0,
) -> np.ndarray:
    r"""NLO metric ``G^{1}(l)`` of a residual MLP, N inputs (smooth activations, ReLU family).

    ``E[z'_a z'_b] = E[G-hat_ab] + gamma^2 E[z_a z_b]``, so
    ``G1' = gamma^2 G1 + C_b1 + C_W1 <Sigma> + C_W M[Sigma]`` with ``M^(l)[f] = n (E[f(z_j)] -
    <f>_K)`` the 1/n shift of one neuron's expectations.  Unlike in a vanilla MLP it is not
    ``(1/2) G1 <dd f> + (1/8) V <dddd f>``: the neuron's own past enters its metric.  Its
    recursion (derived here, the same conditioning as :func:`residual_vertex_inputs`;
    ``gamma = 0`` gives (4.115)):

    .. math::

        M'[f] = M[Sf] + \sum_{cd} \delta G_{cd} (Df)_{cd}
            + C_W \sum_{cd} (\kappa + C)[\Sigma_{cd}, \partial_{cd} Sf]
            + \tfrac18 \sum X_{(cd)(ef)} \langle \partial^4_{cdef} f\rangle,

    with ``delta G = C_b1 + C_W1 <Sigma> + C_W M[Sigma]`` (the mean shift of ``G-hat``),
    ``X = C_W^2 (kappa + C)[Sigma, Sigma]`` (its covariance) and ``d_cd Sf = (1/2) E_u[d_c d_d
    f(u + gamma x)]``: for ``f = Sigma`` of a later layer, second derivatives of ``s_a s_b``
    carried down, whose neuron-neuron covariances the same recursion provides.

    Parameters
    ----------
    K : ndarray, shape (L, N, N)
    C_W, gamma, C_b1, C_W1 : ndarray, shape (L,)
        Per-layer hyperparameters (step ``l -> l+1`` uses entry ``l``).
    G1_first : ndarray, shape (N, N)
        ``G^{1}(1)`` (the 1/n_0 tuning of the first layer).
    ratio_first : float
        ``n_1/n_0``: the hidden widths are equal, the input width need not be.

    Returns
    -------
    ndarray, shape (L, N, N)
    """
    K = np.asarray(K, dtype=np.float64)
    L, N = K.shape[0], K.shape[1]
    second = _second_orders(act, N)
    gam = np.asarray(gamma, dtype=np.float64)
    cw = np.asarray(C_W, dtype=np.float64)
    G1 = np.zeros((L, N, N))
    G1[0] = G1_first
    zero = np.zeros((N,) * 4)
    # M[p]: the shift of <Sigma^(p)> carried down to the current layer m (p >= m)
    M = {
        p: ratio_first * nlo_shift(act, K[p], zero, _gain(gam, p, 0) ** 2 * G1[0], 0)
        for p in range(L - 1)
    }
    pair = [mixed_pair_moments(act, K[m], [(0, 0)])[0] for m in range(L - 1)]
    for m, C in _neuron_covariances(act, K, C_W, gamma, ((0, 0), *second)):
        if m == L - 1:
            break
        c = cw[m + 1]
        shift = C_b1[m + 1] + C_W1[m + 1] * pair[m] + c * M[m]  # n E[G-hat - G]
        G1[m + 1] = gam[m + 1] ** 2 * G1[m] + shift
        X = c**2 * C.kappa_plus("S", m)
        new = {}
        for p in range(m + 1, L - 1):
            g2 = _gain(gam, p, m + 1) ** 2
            T = np.zeros((N, N))
            for (i, j), w in ((ij, {(1, 1): 1.0}.get(ij, 0.5)) for ij in second):
                Y = C.kappa_plus((p, i, j), m)  # [a, b, c, d]: (p, i, j)_ab with Sigma_cd
                a = np.arange(N)
                # pair (p, i, j)_ab with Sigma_{cd}: c = d = a, (a, b) / (b, a), c = d = b
                if (i, j) == (2, 0):
                    T += w * Y[a[:, None], a[None, :], a[:, None], a[:, None]]
                elif (i, j) == (0, 2):
                    T += w * Y[a[:, None], a[None, :], a[None, :], a[None, :]]
                else:
                    T += w * (Y[a[:, None], a[None, :], a[:, None], a[None, :]])
            new[p] = M[p] + nlo_shift(act, K[p], g2**2 * X, g2 * shift, 0) + c * g2 * T
        M = new
    return G1


def _second_orders(act: Activation, N: int) -> tuple[tuple[int, int], ...]:
    """The derivative orders of ``d_c d_d (s_a s_b)``: (2, 0), (1, 1), (0, 2).

    For the kinked scale-invariant family ``s'' s = 0`` (``s'' ~ delta(z)`` and ``s(0) = 0``),
    so with one input only ``s' s'`` remains; with several, ``delta(z_a) s(z_b)`` (``a != b``)
    is integrated in moment form (:func:`_kinked_second`).  Other kinks (``s(0) != 0``) are
    refused.
    """
    if act.smooth:
        return ((2, 0), (1, 1), (0, 2))
    if act.scale_invariant is not None:
        return ((1, 1),) if N == 1 else ((2, 0), (1, 1), (0, 2))
    raise ValueError(
        f"G1 of a residual network needs a smooth activation or the ReLU family (its "
        f"recursion takes s''(z_a) s(z_b) across layers); {act.name} has a kink where it "
        f"does not vanish"
    )


def _gain(gamma: np.ndarray, p: int, m: int) -> float:
    """``prod_{q=m+1}^{p} gamma_q``: how much of a neuron at layer ``m`` reaches layer ``p``."""
    return float(np.prod(gamma[m + 1 : p + 1]))


class _Covariances:
    """``C^(m)[A, B]`` at one layer (``[a, b, c, d]``: ``A_ab`` with ``B_cd``) and the
    same-neuron covariances with ``Sigma^(m)`` that the next step needs."""

    def __init__(self, values: dict, kappa: dict, N: int) -> None:
        self.values, self.kappa, self.zero = values, kappa, np.zeros((N,) * 4)

    def get(self, A: Label, B: Label) -> np.ndarray:
        if (A, B) in self.values:
            return self.values[(A, B)]
        if (B, A) in self.values:
            return self.values[(B, A)].transpose(2, 3, 0, 1)
        return self.zero

    def kappa_plus(self, A: Label, m: int) -> np.ndarray:
        """``kappa[A, Sigma^(m)] + C[A, Sigma^(m)]``; ``A = "S"`` is ``Sigma^(m)`` itself."""
        key = (m, 0, 0) if A == "S" else A
        return self.kappa[A] + self.get(key, (m, 0, 0))


def _neuron_covariances(
    act: Activation,
    K: np.ndarray,
    C_W: np.ndarray,
    gamma: np.ndarray,
    orders: tuple[tuple[int, int], ...],
):
    """Iterate the neuron-neuron covariance functional of :func:`residual_vertex_inputs` for
    the derivative labels :func:`residual_nlo_metric` needs.

    Yields ``(m, C)`` for layers ``m = 0..L-1`` (0-based), ``C`` a :class:`_Covariances`
    holding ``C^(m)[A, B]`` for the labels ``(p, i, j)`` (``s^(i)_a s^(j)_b`` of layer
    ``p >= m`` carried down), ``(i, j)`` in ``orders``.
    """
    L, N = K.shape[0], K.shape[1]
    cw = np.asarray(C_W, dtype=np.float64)
    gam = np.asarray(gamma, dtype=np.float64)
    D = {(p, i, j): _pair_jacobian(act, K[p], i, j) for p in range(L - 1) for i, j in orders}
    ss = {(p, i, j): _pair_mean(act, K[p], i, j) for (p, i, j) in D}
    values: dict = {}
    for m in range(L):
        kappa = {}
        if m < L - 1:
            kappa["S"] = _cross_layer(act, K, gam, ss, (m, 0, 0), m)
            for p in range(m + 1, L - 1):
                for i, j in orders:
                    kappa[(p, i, j)] = _cross_layer(act, K, gam, ss, (p, i, j), m)
        C = _Covariances(values, kappa, N)
        yield m, C
        if m == L - 1:
            return
        c = cw[m + 1]
        labels = [(p, i, j) for p in range(m + 1, L - 1) for i, j in orders]
        # X_A = kappa[SA, Sigma^m] + C[SA, Sigma^m]; S keeps every label
        X = {A: C.kappa_plus(A, m) for A in labels}
        XSS = C.kappa_plus("S", m)
        Dn = {A: (_gain(gam, A[0], m + 1) ** 2, D[A]) for A in labels}
        new = {}
        for a, A in enumerate(labels):
            for B in labels[a:]:
                term = C.get(A, B)
                term = term + c * _apply_last(Dn[B], X[A])
                term = term + c * _apply_first(Dn[A], X[B].transpose(2, 3, 0, 1))
                term = term + c**2 * _apply_first(Dn[A], _apply_last(Dn[B], XSS))
                new[(A, B)] = term
        values = new


def _pair_mean(act: Activation, K: np.ndarray, i: int, j: int) -> np.ndarray:
    """``<s^(i)_a s^(j)_b>_K``; with a kink and ``i = 2`` (``j = 2``) by Stein,
    ``<s''_a s_b> = 2 (1/2)<d_a d_a (s_a s_b)>`` from :func:`half_projector` (0 for ``a = b``,
    where ``s'' s = 0``)."""
    if act.smooth or 2 not in (i, j):
        return mixed_pair_moments(act, K, [(i, j)])[0]
    J = half_projector(act, K, 0)
    out = 2.0 * (J.aa if i == 2 else J.bb)
    np.fill_diagonal(out, 0.0)
    return out


def _pair_jacobian(act: Activation, K: np.ndarray, i: int, j: int) -> Jacobian:
    """``(1/2) <d_g d_h (s^(i)_a s^(j)_b)>_K`` as a :class:`Jacobian` (not mirrored if i != j)."""
    if i == j and (i == 0 or not act.smooth):
        return half_projector(act, K, i)  # the moment form for kinks
    if not act.smooth:  # s''_a s_b = d_a d_a (s_a s_b) for a != b: a fourth-order Hermite form
        return _kinked_second_jacobian(act, K, i == 2)
    N = K.shape[0]
    aa, ab, bb = np.zeros((N, N)), np.zeros((N, N)), np.zeros((N, N))
    idx = np.arange(N)
    diag = K[idx, idx][:, None, None]
    aa[idx, idx] = 0.5 * (
        _derivative_pair(act, diag, i + 2, j)
        + 2 * _derivative_pair(act, diag, i + 1, j + 1)
        + _derivative_pair(act, diag, i, j + 2)
    )
    if N > 1:
        a, b = np.nonzero(~np.eye(N, dtype=bool))
        blocks = _blocks(K, a, b)
        aa[a, b] = 0.5 * _derivative_pair(act, blocks, i + 2, j)
        ab[a, b] = 0.5 * _derivative_pair(act, blocks, i + 1, j + 1)
        bb[a, b] = 0.5 * _derivative_pair(act, blocks, i, j + 2)
    return Jacobian(aa, ab, bb)


def _apply_first(D: tuple[float, Jacobian], X: np.ndarray) -> np.ndarray:
    """``sum_cd (Df)_{ab;cd} X[c, d, e, f]``."""
    scale, J = D
    return scale * J.apply(X)


def _apply_last(D: tuple[float, Jacobian], X: np.ndarray) -> np.ndarray:
    """``sum_cd X[a, b, c, d] (Df)_{ef;cd}``."""
    scale, J = D
    return scale * np.moveaxis(J.apply(np.moveaxis(X, (2, 3), (0, 1))), (0, 1), (2, 3))


def _cross_layer(
    act: Activation,
    K: np.ndarray,
    gamma: np.ndarray,
    ss: dict,
    label: tuple[int, int, int],
    m: int,
) -> np.ndarray:
    """``Cov(s^(i)(z^(p)_a) s^(j)(z^(p)_b), s(z^(m)_c) s(z^(m)_d))`` for one neuron, p >= m.

    At leading order ``z^(p) = (prod gamma) z^(m) + independent Gaussian``, so the four
    preactivations are jointly Gaussian with ``Cov(z^(p)_a, z^(m)_c) = Gamma K^(m)_ac``
    (``p = m``: the four-point source ``<s s s s> - <s s><s s>``).  For derivative labels
    (``(i, j) != (0, 0)``) only the entries with ``{c, d}`` inside ``{a, b}`` are computed: the
    recursion of :func:`residual_nlo_metric` never mixes them with the others.
    """
    p, i, j = label
    N = K.shape[1]
    if p == m and (i, j) == (0, 0):
        return four_point_moments(act, K[m]) - np.multiply.outer(ss[label], ss[label])
    Gam = _gain(gamma, p, m)
    if Gam == 0.0:  # no identity path from layer m to layer p: independent
        return np.zeros((N,) * 4)
    if (i, j) == (0, 0):
        pairs = [(c, d) for c in range(N) for d in range(c, N)]
        quads = [(a, b, c, d) for a, b in pairs for c, d in pairs]
    else:  # only {c, d} within {a, b} is ever needed (residual_nlo_metric); the rest stays 0
        quads = list(
            dict.fromkeys(
                (a, b, min(c, d), max(c, d))
                for a in range(N)
                for b in range(N)
                for c, d in ((a, a), (a, b), (b, b))
            )
        )
    if not act.smooth and 2 in (i, j):  # s'' s with a kink: zero at a = b, else Stein
        mom_q = np.zeros(len(quads))
        off = [n for n, (a, b, _, _) in enumerate(quads) if a != b]
        mom_q[off] = _kinked_second_cross(act, K[p], K[m], Gam, i == 2, [quads[n] for n in off])
        return _fill_cross(quads, mom_q, ss[label], ss[(m, 0, 0)], (i, j), N)
    idx_p = np.array([[a, b] for a, b, _, _ in quads])
    idx_m = np.array([[c, d] for _, _, c, d in quads])
    Kp, Km = K[p], K[m]
    blocks = np.empty((len(quads), 4, 4))
    blocks[:, :2, :2] = Kp[idx_p[:, :, None], idx_p[:, None, :]]
    blocks[:, 2:, 2:] = Km[idx_m[:, :, None], idx_m[:, None, :]]
    blocks[:, :2, 2:] = Gam * Km[idx_p[:, :, None], idx_m[:, None, :]]
    blocks[:, 2:, :2] = blocks[:, :2, 2:].transpose(0, 2, 1)
    mom = moments(act, blocks, [[(0, i), (1, j), (2, 0), (3, 0)]])[:, 0]
    return _fill_cross(quads, mom, ss[label], ss[(m, 0, 0)], (i, j), N)


def _fill_cross(
    quads: list, mom: np.ndarray, s_p: np.ndarray, s_m: np.ndarray, ij: tuple[int, int], N: int
) -> np.ndarray:
    """The covariances ``mom - <.>_p <.>_m`` of :func:`_cross_layer` placed in an (N,)*4
    tensor, mirrored where the label is symmetric."""
    out = np.zeros((N,) * 4)
    for (a, b, c, d), v in zip(quads, mom, strict=True):
        val = v - s_p[a, b] * s_m[c, d]
        sym = ((a, b), (b, a)) if ij == (0, 0) else ((a, b),)
        for x, y in sym:
            out[x, y, c, d] = out[x, y, d, c] = val
    return out


# --------------------------------------------------------------------------------------------
# the NTK statistics A, B, D, F: the covariance functional on an extended neuron state

COORDINATE_TYPES = {"V": 1, "D": 2, "F": 2, "A": 3, "B": 3}
"""How many coordinate types of the extended state each field needs: ``z``; ``z, zeta``;
``z, zeta, zeta'``."""


def residual_ntk_statistics(
    act: Activation,
    K: np.ndarray,
    Theta: np.ndarray,
    C_W: np.ndarray,
    lambda_W: np.ndarray,
    gamma: np.ndarray,
    fields: tuple[str, ...] = ("A", "B", "D", "F"),
) -> dict[str, np.ndarray]:
    r"""``V``, ``A``, ``B``, ``D``, ``F`` of a residual MLP at every layer, N inputs.

    The book gives the NTK statistics only for vanilla MLPs (8.77)-(8.97); with an identity
    branch a neuron's own past NTK and preactivations are carried forward, and the vanilla
    recursions miss the same-neuron correlations across layers (as (B.25) does for ``V``,
    spec/08 §3.4).  Derived here by writing the NTK as a covariance over a random tangent:
    for ``eps`` a Gaussian direction in parameter space with variances ``lambda_b`` and
    ``lambda_W/n`` (the learning rates), the tangent ``zeta = J eps`` obeys
    ``zeta'_i = eps_b + sum_j eps_W,ij s_j + sum_j W_ij s'_j zeta_j + gamma zeta_i`` and
    ``H-hat_{i1 i2} = E_eps[zeta_i1 zeta_i2]`` (8.12).  With a second independent tangent
    ``zeta'`` (replica), the per-neuron state ``Y = (z, zeta, zeta')`` of ``3N`` coordinates
    is again a residual network: conditional on layer ``l``, ``Y^(l+1)_i = gamma Y^(l)_i +
    U_i`` with ``U_i`` i.i.d. Gaussian of covariance ``C + (1/n) sum_j Phi(Y_j)``,

    .. math::

        \Phi_{z_a z_b} = C_W s_a s_b,\quad \Phi_{z_a \zeta_b} = C_W s_a s'_b \zeta_b,\quad
        \Phi_{\zeta_a \zeta_b} = C_W s'_a s'_b \zeta_a \zeta_b + \lambda_W s_a s_b,\quad
        \Phi_{\zeta_a \zeta'_b} = C_W s'_a s'_b \zeta_a \zeta'_b,

    so the connected four-point function of ``Y`` is the four-point vertex ``V_ext`` of this
    network, computed by the covariance functional of :func:`residual_vertex_inputs` with
    ``Sigma`` replaced by ``Phi``.  Then, with the storage of :mod:`pdlt.theory.ntk`,
    ``D[c,d,a,b] = V_ext[z_c, z_d, zeta_a, zeta_b]``,
    ``F[c,a,d,b] = V_ext[z_c, zeta_a, z_d, zeta_b]``,
    ``A[a,b,c,d] = V_ext[zeta_a, zeta_b, zeta'_c, zeta'_d]`` and
    ``B[a,b,c,d] = V_ext[zeta_a, zeta'_b, zeta_c, zeta'_d]`` (the tangents are linear in
    ``eps``, so ``E_eps[zeta zeta zeta zeta]`` is a sum of three NTK products and the two
    replicas separate A from B).  At leading order one neuron's ``Y`` is Gaussian with
    ``Cov(z, zeta) = 0``, ``Cov(zeta_a, zeta_b) = Theta_ab``, ``Cov(zeta, zeta') = 0``, and
    across layers ``Cov(Y^(p), Y^(m)) = (prod_{q=m+1}^p gamma_q) Cov(Y^(m), Y^(m))``; the
    ``zeta`` are integrated in closed form (Wick), the ``z`` by the Gaussian engine (one
    neuron at two layers: four-dimensional integrals over ``z^p_a, z^p_b, z^m_c, z^m_d``,
    closed forms for the ReLU family).  At ``gamma = 0`` this reproduces the vanilla
    (8.77)-(8.97) (tested), and its ``V`` block is :func:`residual_vertex_inputs`.

    Cost: dense ``(M, M, M, M)`` tensors per pair of layers still to come, ``M = 3N`` (``2N``
    for D, F alone), and about ``L^2 N^4 / 8`` four-dimensional integrals; e.g. ReLU, depth
    10, three inputs: 0.5 s; tanh, depth 10, two inputs: 6 s.

    Parameters
    ----------
    act : Activation
    K, Theta : ndarray, shape (L, N, N)
        The kernel and the frozen NTK at every layer.
    C_W, lambda_W, gamma : ndarray, shape (L,)
        Per-layer hyperparameters; step ``l -> l+1`` uses entry ``l``.
    fields : tuple of str
        Among ``V``, ``A``, ``B``, ``D``, ``F``.

    Returns
    -------
    dict of str to ndarray, each of shape (L, N, N, N, N)
        Layer 1 is zero.  Equal hidden widths.
    """
    unknown = [f for f in fields if f not in COORDINATE_TYPES]
    if unknown or not fields:
        raise ValueError(
            f"fields must be among {', '.join(COORDINATE_TYPES)}, got {', '.join(fields) or 'none'}"
        )
    K = np.asarray(K, dtype=np.float64)
    Theta = np.asarray(Theta, dtype=np.float64)
    N = K.shape[1]
    n_types = max(COORDINATE_TYPES[f] for f in fields)
    Vx = _extended_vertex(act, K, Theta, C_W, lambda_W, gamma, n_types)
    z, h, h2 = (slice(t * N, (t + 1) * N) for t in range(3))
    views = {
        "V": lambda x: x[:, z, z, z, z],
        "D": lambda x: x[:, z, z, h, h],
        "F": lambda x: x[:, z, h, z, h],
        "A": lambda x: x[:, h, h, h2, h2],
        "B": lambda x: x[:, h, h2, h, h2],
    }
    return {f: np.ascontiguousarray(views[f](Vx)) for f in fields}


def _extended_vertex(
    act: Activation,
    K: np.ndarray,
    Theta: np.ndarray | None,
    C_W: np.ndarray,
    lambda_W: np.ndarray | None,
    gamma: np.ndarray,
    n_types: int,
) -> np.ndarray:
    """The four-point vertex ``V_ext^(l)``, ``l = 1..L``, of the extended state, shape
    ``(L, M, M, M, M)`` with ``M = n_types N`` (``n_types = 1``: ``z`` only, no Theta needed).

    The covariance functional of :func:`residual_vertex_inputs` on the extended state:
    labels ``"Q"`` (``Y_alpha Y_beta``) and ``p`` (``Phi^(p)`` carried down), values dense
    ``(M, M, M, M)`` tensors; ``V_ext^(m) = C^(m)[Q, Q]``.
    """
    L, N = K.shape[0], K.shape[1]
    cw = np.asarray(C_W, dtype=np.float64)
    lw = np.zeros(L) if lambda_W is None else np.asarray(lambda_W, dtype=np.float64)
    Th = np.zeros_like(K) if Theta is None else Theta
    gam = np.asarray(gamma, dtype=np.float64)
    M = n_types * N
    Kx = np.zeros((L, M, M))
    for t in range(n_types):
        Kx[:, t * N : (t + 1) * N, t * N : (t + 1) * N] = K if t == 0 else Th
    # Phi^(p) feeds layer p + 1: hyperparameters of entry p + 1
    J = {p: _phi_jacobian(act, K[p], Th[p], cw[p + 1], lw[p + 1], n_types) for p in range(L - 1)}
    values: dict = {}
    zero = np.zeros((M,) * 4)
    Vx = np.zeros((L, M, M, M, M))
    for m in range(L):
        C = _ExtendedCovariances(values, zero)
        Vx[m] = C.get("Q", "Q")
        if m == L - 1:
            break
        g = gam[m + 1]
        labels: list = ["Q"] + list(range(m, L - 1))
        feats_m = _phi_features(cw[m + 1], lw[m + 1], n_types)
        kappa = {"Q": 2.0 * np.einsum("ae,bh,cdeh->abcd", Kx[m], Kx[m], J[m], optimize=True)}
        for p in range(m, L - 1):
            Gam = _gain(gam, p, m)
            if p > m and Gam == 0.0:
                kappa[p] = zero
                continue
            feats_p = _phi_features(cw[p + 1], lw[p + 1], n_types)
            kappa[p] = _cross_layer_extended(
                act, K[p], K[m], Th[p], Th[m], Gam, feats_p, feats_m, n_types, p == m
            )
        X = {A: (g**2 if A == "Q" else 1.0) * (kappa[A] + C.get(A, m)) for A in labels}
        XSS = kappa[m] + C.get(m, m)
        new_labels = ["Q"] + list(range(m + 1, L - 1))
        f = {A: g**2 if A == "Q" else 1.0 for A in new_labels}
        Dn = {A: None if A == "Q" else _gain(gam, A, m + 1) ** 2 * J[A] for A in new_labels}
        new = {}
        for a, A in enumerate(new_labels):
            for B in new_labels[a:]:
                term = f[A] * f[B] * C.get(A, B)
                term = term + _dense_last(Dn[B], X[A])
                term = term + _dense_first(Dn[A], X[B].transpose(2, 3, 0, 1))
                term = term + _dense_first(Dn[A], _dense_last(Dn[B], XSS))
                new[(A, B)] = term
        values = new
    return Vx


class _ExtendedCovariances:
    """``C^(m)[A, B]`` on the extended state (``[alpha, beta, gamma, delta]``: ``A`` with
    ``B``)."""

    def __init__(self, values: dict, zero: np.ndarray) -> None:
        self.values, self.zero = values, zero

    def get(self, A, B) -> np.ndarray:
        if (A, B) in self.values:
            return self.values[(A, B)]
        if (B, A) in self.values:
            return self.values[(B, A)].transpose(2, 3, 0, 1)
        return self.zero


def _dense_first(J: np.ndarray | None, X: np.ndarray) -> np.ndarray:
    """``sum_{gd} J[a, b, g, d] X[g, d, ...]``; ``None`` is the identity (``f = Y Y``)."""
    return X if J is None else np.tensordot(J, X, axes=([2, 3], [0, 1]))


def _dense_last(J: np.ndarray | None, X: np.ndarray) -> np.ndarray:
    """``sum_{gd} X[..., g, d] J[a, b, g, d]``."""
    return X if J is None else np.tensordot(X, J, axes=([2, 3], [2, 3]))


def _phi_features(C_W: float, lam_W: float, n_types: int) -> list[dict]:
    """Per coordinate type, its features ``k -> (coefficient, derivative order, tangent)``:
    ``Phi_{alpha beta} = sum_k f^k_alpha f^k_beta``.  Type 0 is ``z`` (``sqrt(C_W) s``); a
    tangent type ``t`` has ``sqrt(C_W) s' zeta_t`` (feature ``"W"``, shared with ``z``: the
    same weights) and ``sqrt(lambda_W) s`` (feature ``t``: its own direction ``eps_W``)."""
    cw, lw = math.sqrt(C_W), math.sqrt(lam_W)
    feats = [{"W": (cw, 0, None)}]
    for t in range(1, n_types):
        feats.append({"W": (cw, 1, t), t: (lw, 0, None)})
    return feats


def _phi_terms(feats: list[dict], t1: int, t2: int) -> list[tuple[float, tuple, tuple]]:
    """``Phi_{t1, t2}`` as ``[(c, (order, tangent), (order, tangent))]``."""
    return [
        (feats[t1][k][0] * feats[t2][k][0], feats[t1][k][1:], feats[t2][k][1:])
        for k in feats[t1]
        if k in feats[t2]
    ]


def _place(T: np.ndarray, i: int, j: int, N: int) -> np.ndarray:
    """The matrix ``T[x_i, x_j]`` broadcast over four sample axes (``i < j``)."""
    shape = [1, 1, 1, 1]
    shape[i] = shape[j] = N
    return T.reshape(shape)


def _wick(tangents: list, cov) -> np.ndarray | float:
    """``E[prod zeta]`` over the slots that carry a tangent (Wick); ``cov(i, j)`` the
    covariance of slots ``i < j`` (0 for different replicas)."""
    slots = [i for i, t in enumerate(tangents) if t is not None]
    if not slots:
        return 1.0
    if len(slots) % 2:
        return 0.0

    def pair(i: int, j: int):
        return cov(i, j) if tangents[i] == tangents[j] else 0.0

    if len(slots) == 2:
        return pair(*slots)
    a, b, c, d = slots
    return pair(a, b) * pair(c, d) + pair(a, c) * pair(b, d) + pair(a, d) * pair(b, c)


def _cross_layer_extended(
    act: Activation,
    Kp: np.ndarray,
    Km: np.ndarray,
    Theta_p: np.ndarray,
    Theta_m: np.ndarray,
    Gam: float,
    feats_p: list[dict],
    feats_m: list[dict],
    n_types: int,
    same: bool,
) -> np.ndarray:
    """``Cov(Phi^(p)_{alpha beta}(Y^(p)), Phi^(m)_{gamma delta}(Y^(m)))`` for one neuron.

    Slots 0, 1 at layer ``p``, slots 2, 3 at layer ``m <= p``; ``Cov(z^(p)_a, z^(m)_c) = Gam
    K^(m)_ac`` and ``Cov(zeta^(p)_a, zeta^(m)_c) = Gam Theta^(m)_ac`` (one replica).
    """
    N = Km.shape[0]
    M = n_types * N

    def cov(i: int, j: int) -> np.ndarray:
        if j <= 1:
            return _place(Theta_p, i, j, N)
        if i >= 2:
            return _place(Theta_m, i, j, N)
        return Gam * _place(Theta_m, i, j, N)

    used = {f[1] for feats in (feats_p, feats_m) for t in feats for f in t.values()}
    orders = [o for o in _ORDERS4 if set(o) <= used]
    if same:
        four = dict(zip(orders, four_point_moments(act, Km, orders), strict=True))
    else:
        four = _two_layer_moments(act, Kp, Km, Gam, orders)
    pairs = [o for o in _PAIR_ORDERS if set(o) <= used]
    two_p = dict(zip(pairs, mixed_pair_moments(act, Kp, pairs), strict=True))
    two_m = dict(zip(pairs, mixed_pair_moments(act, Km, pairs), strict=True))
    out = np.zeros((M,) * 4)
    for ta in range(n_types):
        for tb in range(n_types):
            terms_p = _phi_terms(feats_p, ta, tb)
            for tc in range(n_types):
                for td in range(n_types):
                    total = np.zeros((N,) * 4)
                    for c1, (o1, e1), (o2, e2) in terms_p:
                        for c2, (o3, e3), (o4, e4) in _phi_terms(feats_m, tc, td):
                            w4 = _wick([e1, e2, e3, e4], cov)
                            if not np.isscalar(w4) or w4:
                                total = total + c1 * c2 * four[(o1, o2, o3, o4)] * w4
                            wp = _wick([e1, e2], cov)
                            wm = _wick([None, None, e3, e4], cov)
                            if (not np.isscalar(wp) or wp) and (not np.isscalar(wm) or wm):
                                mean_p = _place(two_p[(o1, o2)], 0, 1, N) * wp
                                mean_m = _place(two_m[(o3, o4)], 2, 3, N) * wm
                                total = total - c1 * c2 * mean_p * mean_m
                    out[
                        ta * N : (ta + 1) * N,
                        tb * N : (tb + 1) * N,
                        tc * N : (tc + 1) * N,
                        td * N : (td + 1) * N,
                    ] = total
    return out


_PAIR_ORDERS = [(0, 0), (0, 1), (1, 0), (1, 1)]
_ORDERS4 = [(a, b, c, d) for a in (0, 1) for b in (0, 1) for c in (0, 1) for d in (0, 1)]


def _two_layer_moments(
    act: Activation,
    Kp: np.ndarray,
    Km: np.ndarray,
    Gam: float,
    orders: list[tuple[int, int, int, int]],
) -> dict[tuple[int, ...], np.ndarray]:
    """``<s^(o0)(z^p_a) s^(o1)(z^p_b) s^(o2)(z^m_c) s^(o3)(z^m_d)>`` for all ``a, b, c, d`` and
    the order tuples asked for (closed under exchanging o0, o1 and o2, o3), for one neuron at
    layers ``p > m``.

    Only ``a <= b``, ``c <= d`` are integrated (the rest by exchanging factors), each in as many
    dimensions as it has distinct variables (``a = b`` or ``c = d`` merge factors), every order
    tuple of a quadruple on one grid; ``Cov(z^p_a, z^m_c) = Gam K^m_ac``.
    """
    N = Km.shape[0]
    out = {o: np.empty((N,) * 4) for o in orders}
    grid = np.stack(np.meshgrid(*([np.arange(N)] * 4), indexing="ij"), -1).reshape(-1, 4)
    for same_p in (False, True):
        for same_m in (False, True):
            keep = (grid[:, 0] <= grid[:, 1]) & (grid[:, 2] <= grid[:, 3])  # the rest by symmetry
            sel = grid[keep & ((grid[:, 0] == grid[:, 1]) == same_p)]
            sel = sel[(sel[:, 2] == sel[:, 3]) == same_m]
            if sel.size == 0:
                continue
            # variables: (layer, sample) of slots, with merged duplicates
            slot_var = [0, 0 if same_p else 1]
            slot_var += [slot_var[-1] + 1, slot_var[-1] + (1 if same_m else 2)]
            cols = [0] + ([] if same_p else [1]) + [2] + ([] if same_m else [3])
            layer = np.array([0 if c < 2 else 1 for c in cols])
            idx = sel[:, cols]  # (Q, d) sample of each variable
            Ka = np.where(layer[:, None] == layer[None, :], 1.0, Gam)
            Kl = np.where((layer[:, None] == 0) & (layer[None, :] == 0), 1.0, 0.0)
            blocks = (
                Kl * Kp[idx[:, :, None], idx[:, None, :]]
                + (1 - Kl) * Ka * Km[idx[:, :, None], idx[:, None, :]]
            )
            products = [[(slot_var[i], o[i]) for i in range(4)] for o in orders]
            values = moments(act, blocks, products)  # (Q, len(orders))
            a, b, c, d = sel.T
            for k, (o0, o1, o2, o3) in enumerate(orders):
                v = values[:, k]
                out[(o0, o1, o2, o3)][a, b, c, d] = v
                out[(o1, o0, o2, o3)][b, a, c, d] = v
                out[(o0, o1, o3, o2)][a, b, d, c] = v
                out[(o1, o0, o3, o2)][b, a, d, c] = v
    return out


def _dense(J: Jacobian) -> np.ndarray:
    """A :class:`Jacobian` as a dense ``[a, b, g, h]`` tensor, symmetric in ``(g, h)``."""
    N = J.aa.shape[0]
    eye = np.eye(N)
    sym = 0.5 * (np.einsum("gi,hj->ghij", eye, eye) + np.einsum("gj,hi->ghij", eye, eye))
    return J.apply(sym)


def _phi_jacobian(
    act: Activation, K: np.ndarray, Theta: np.ndarray, C_W: float, lam_W: float, n_types: int
) -> np.ndarray:
    """``d<Phi_{alpha beta}>/dK_ext[gamma, delta]`` (symmetric gradient) at the block-diagonal
    extended kernel, dense ``(M, M, M, M)``.

    Built from :func:`half_projector` (``J0`` of ``s s``, ``J1`` of ``s' s'``), the first-order
    projector ``P1_g[s_a s'_b]`` (:func:`pdlt.theory.ntk.first_projector`) and ``<s' s'>``;
    all kink-safe.
    """
    from .ntk import first_projector

    N = K.shape[0]
    M = n_types * N
    J = np.zeros((M,) * 4)
    J0 = _dense(half_projector(act, K, 0))
    J[:N, :N, :N, :N] = C_W * J0
    if n_types == 1:
        return J
    J1 = _dense(half_projector(act, K, 1))
    _, dd = pair_moments(act, K, (0, 1))
    pa, pb = first_projector(act, K)
    eye = np.eye(N)
    P1 = pa[:, :, None] * eye[:, None, :] + pb[:, :, None] * eye[None, :, :]  # [a, b, g]
    half_cross = 0.5 * C_W * np.einsum("abg,hb->abgh", P1, eye)  # z_a, t_b; z_g, t_h
    half_cross_t = 0.5 * C_W * np.einsum("bag,ha->abgh", P1, eye)  # t_a, z_b; z_g, t_h
    tt = 0.5 * C_W * dd[:, :, None, None] * np.einsum("ga,hb->abgh", eye, eye)

    def s(t: int) -> slice:
        return slice(t * N, (t + 1) * N)

    z = s(0)
    for t in range(1, n_types):
        J[s(t), s(t), z, z] = C_W * Theta[:, :, None, None] * J1 + lam_W * J0
        J[s(t), s(t), s(t), s(t)] = tt + tt.transpose(0, 1, 3, 2)
        J[z, s(t), z, s(t)] = half_cross
        J[z, s(t), s(t), z] = half_cross.transpose(0, 1, 3, 2)
        J[s(t), z, z, s(t)] = half_cross_t
        J[s(t), z, s(t), z] = half_cross_t.transpose(0, 1, 3, 2)
        for u in range(1, n_types):
            if u != t:  # zeta_a zeta'_b: d/dK[zeta_a, zeta'_b] and its mirror
                J[s(t), s(u), s(t), s(u)] = tt
                J[s(t), s(u), s(u), s(t)] = tt.transpose(0, 1, 3, 2)
    return J


def _linear_moments(
    act: Activation, blocks: np.ndarray, base: list, coefs: list[np.ndarray]
) -> np.ndarray:
    """``E[base * prod_r (c_r . x)]`` over Gaussian ``x`` with covariances ``blocks`` (Q, d, d).

    ``base``: factors ``(variable, order)`` of :func:`pdlt.gaussian.moments`; ``coefs``: one
    (Q, d) array per linear factor.  The product is expanded in monomials ``x_j1 .. x_jk``,
    each integrated by the engine (closed forms for the ReLU family).
    """
    d = blocks.shape[-1]
    k = len(coefs)
    if k == 0:
        return moments(act, blocks, [base])[:, 0]
    combos = np.array(np.meshgrid(*([np.arange(d)] * k), indexing="ij")).reshape(k, -1).T
    keys = sorted({tuple(sorted(c)) for c in combos})
    values = moments(act, blocks, [base + [(j, -1) for j in key] for key in keys])
    index = {key: n for n, key in enumerate(keys)}
    out = np.zeros(blocks.shape[0])
    for combo in combos:
        weight = np.prod([coefs[r][:, combo[r]] for r in range(k)], axis=0)
        out += weight * values[:, index[tuple(sorted(combo))]]
    return out


def _hermite_moments(
    act: Activation,
    blocks: np.ndarray,
    base: list,
    W: np.ndarray,
    P: np.ndarray,
    slots: tuple[int, ...],
) -> np.ndarray:
    """``E[base * He_slots]``: the Hermite tensor of a Gaussian ``v`` with precision ``P``
    (Q, t, t), ``w = P v = W x`` (``W`` (Q, t, d): ``v`` as linear in the block's ``x``),
    ``He_gh = w_g w_h - P_gh``, ``He_ghkl = w_g w_h w_k w_l - (6 P w w) + (3 P P)``.  When the
    rest of ``base`` is independent of ``v`` given the other variables, Stein gives
    ``E[f He_slots] = E[d_slots f]`` (derivatives along ``v``), which needs no derivative of a
    kink."""

    def mom(idx: tuple[int, ...]) -> np.ndarray:
        return _linear_moments(act, blocks, base, [W[:, g, :] for g in idx])

    if len(slots) == 2:
        g, h = slots
        return mom((g, h)) - P[:, g, h] * mom(())
    g, h, k, m = slots
    out = mom(slots)
    for (x, y), (u, v) in (
        ((g, h), (k, m)),
        ((g, k), (h, m)),
        ((g, m), (h, k)),
        ((h, k), (g, m)),
        ((h, m), (g, k)),
        ((k, m), (g, h)),
    ):
        out = out - P[:, x, y] * mom((u, v))
    base_mean = mom(())
    for (x, y), (u, v) in (((g, h), (k, m)), ((g, k), (h, m)), ((g, m), (h, k))):
        out = out + P[:, x, y] * P[:, u, v] * base_mean
    return out


def _kinked_second_jacobian(act: Activation, K: np.ndarray, first: bool) -> Jacobian:
    """``(1/2) <d_g d_h (s''_a s_b)>`` (``first``) or of ``s_a s''_b`` for the kinked
    scale-invariant family: ``(1/2) E[s_a s_b He_{g h c c}]`` with ``c = a`` (``b``) on the
    (a, b) block, ``a != b``; 0 on the diagonal (``s'' s = 0``)."""
    N = K.shape[0]
    aa, ab, bb = np.zeros((N, N)), np.zeros((N, N)), np.zeros((N, N))
    if N == 1:
        return Jacobian(aa, ab, bb)
    a, b = np.nonzero(~np.eye(N, dtype=bool))
    blocks = _blocks(K, a, b)
    P = np.linalg.inv(blocks)
    c = 0 if first else 1
    base = [(0, 0), (1, 0)]
    aa[a, b] = 0.5 * _hermite_moments(act, blocks, base, P, P, (0, 0, c, c))
    ab[a, b] = 0.5 * _hermite_moments(act, blocks, base, P, P, (0, 1, c, c))
    bb[a, b] = 0.5 * _hermite_moments(act, blocks, base, P, P, (1, 1, c, c))
    return Jacobian(aa, ab, bb)


def _kinked_second_cross(
    act: Activation,
    Kp: np.ndarray,
    Km: np.ndarray,
    Gam: float,
    first: bool,
    quads: list[tuple[int, int, int, int]],
) -> np.ndarray:
    """``E[s''(z^p_a) s(z^p_b) s(z^m_c) s(z^m_d)]`` (``first``; else ``s_a s''_b``) for one
    neuron at layers ``p > m`` and the kinked scale-invariant family, ``a != b``, ``{c, d}``
    within ``{a, b}``.

    Given ``y = (z^m_c, z^m_d)`` the pair ``z^p`` is ``B y + v`` with ``v`` Gaussian and
    independent of ``y`` (covariance ``R = Cov(z^p | y) > 0``, the noise of layers ``m+1..p``),
    so ``E[s''(z^p_a) ...] = E[s_a s_b s_c s_d He_aa(v)]`` (Stein along ``v``).
    """
    out = np.empty(len(quads))
    for a_c_d in {(c == d) for _, _, c, d in quads}:
        rows = [n for n, (_, _, c, d) in enumerate(quads) if (c == d) == a_c_d]
        q = np.array([quads[n] for n in rows])
        ys = q[:, 2:3] if a_c_d else q[:, 2:4]  # the distinct layer-m samples
        zp = q[:, :2]
        t, k = 2, ys.shape[1]
        blocks = np.empty((len(q), t + k, t + k))
        blocks[:, :t, :t] = Kp[zp[:, :, None], zp[:, None, :]]
        blocks[:, t:, t:] = Km[ys[:, :, None], ys[:, None, :]]
        blocks[:, :t, t:] = Gam * Km[zp[:, :, None], ys[:, None, :]]
        blocks[:, t:, :t] = blocks[:, :t, t:].transpose(0, 2, 1)
        B = blocks[:, :t, t:] @ np.linalg.inv(blocks[:, t:, t:])
        R = blocks[:, :t, :t] - B @ blocks[:, t:, :t]
        P = np.linalg.inv(R)
        W = np.concatenate([P, -P @ B], axis=2)  # w = P v = P (z^p - B y)
        g = 0 if first else 1
        base = [(0, 0), (1, 0), (t, 0), (t + k - 1, 0)]
        out[rows] = _hermite_moments(act, blocks, base, W, P, (g, g))
    return out
