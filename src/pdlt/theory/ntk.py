"""The neural tangent kernel at initialization: mean Theta and the statistics A, B, D, F.

Book chapter 8 and §9.1; spec/05 §5 (multi-input, leading order in 1/n).  At the step
``l -> l+1`` (hyperparameters of layer ``l+1``, ``rho = n_l/n_{l-1}``, expectations over
``K = K^(l)``, ``Theta = Theta^(l)``, ``Omega_ab = lambda_W s_a s_b + C_W Theta_ab s'_a s'_b``
(8.74)):

* (8.63) ``Theta'_ab = lambda_b + lambda_W <s_a s_b> + C_W <s'_a s'_b> Theta_ab``;
* (8.89) ``B'[a,b,c,d] = C_W^2 [<s'_a s'_b s'_c s'_d> Theta_ac Theta_bd
  + rho <s'_a s'_b><s'_c s'_d> B[a,b,c,d]]``;
* (8.79) ``F'[a,b,c,d] = C_W^2 <s_a s_c s'_b s'_d> Theta_bd
  + rho C_W^2 sum P1_g[s_a s'_b] P1_h[s_c s'_d] F[g,b,h,d]``;
* (8.77) ``D'[a,b,c,d] = C_W [<s_a s_b Omega_cd> - <s_a s_b><Omega_cd>]
  + rho C_W sum Jn[s s]_{ab;g} V_{(g)(h)} Jn[Omega]_{cd;h}
  + rho C_W^2 sum Jn[s s]_{ab;g} D[g, c, d] <s'_c s'_d>``;
* (8.97) ``A' = <Omega_ab Omega_cd> - <Omega_ab><Omega_cd> + rho sum Jn[Omega] V Jn[Omega]
  + rho C_W^2 <s'_a s'_b><s'_c s'_d> A + rho C_W [sum Jn[Omega_ab] D[., c, d] <s'_c s'_d>
  + sum Jn[Omega_cd] D[., a, b] <s'_a s'_b>]``;

with ``Jn[X] = P2[X]/2`` (:func:`pdlt.theory.four_point.half_projector`) and ``P1`` the
first-order projector (spec/05 §4).  Storage follows spec/05 §1.1: ``B[a,b,c,d] = B_abcd`` (the
first NTK carries samples (a, c), the second (b, d)), ``F[a,b,c,d] = F_abcd``, ``D`` and ``A``
like ``V``.  Initial conditions: ``Theta^(1) = lambda_b + lambda_W X`` (8.23), the others 0.
"""

from __future__ import annotations

import numpy as np

from ..activations import Activation
from ..gaussian import moments
from .four_point import (
    Jacobian,
    _blocks,
    _inverse2,
    four_point_moments,
    half_projector,
    nlo_shift,
)
from .kernel import helpers, pair_moments

__all__ = ["ntk_step", "nlo_ntk_step", "first_projector", "layer_contributions"]


def first_projector(act: Activation, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``P1_g[s_a s'_b] = <d_g (s_a s'_b)>`` for ``g = a`` and ``g = b`` (spec/05 §4).

    Returns
    -------
    pa, pb : ndarray, shape (N, N)
        ``pa[a, b] = P1_a[s_a s'_b]``, ``pb[a, b] = P1_b[s_a s'_b]``; on the diagonal ``pa``
        holds ``<s'^2 + s s''> = chi_par/C_W`` and ``pb`` is 0.
    """
    N = K.shape[0]
    pa, pb = np.zeros((N, N)), np.zeros((N, N))
    idx = np.arange(N)
    pa[idx, idx] = helpers(act, np.diag(K), 1.0).chi_par
    if N == 1:
        return pa, pb
    a, b = np.nonzero(~np.eye(N, dtype=bool))
    blocks = _blocks(K, a, b)
    if act.smooth or act.polynomial_degree is not None:
        m = moments(act, blocks, [[(0, 1), (1, 1)], [(0, 0), (1, 2)]])
        pa[a, b], pb[a, b] = m[:, 0], m[:, 1]
    else:
        m = moments(act, blocks, [[(0, -1), (0, 0), (1, 1)], [(1, -1), (0, 0), (1, 1)]])
        p = np.einsum("pij,pj->pi", _inverse2(blocks), m)
        pa[a, b], pb[a, b] = p[:, 0], p[:, 1]
    return pa, pb


def _scaled(J: Jacobian, c: float, Theta: np.ndarray, J1: Jacobian, lam_W: float) -> Jacobian:
    """``Jn[Omega_ab] = lambda_W Jn[s s] + C_W Theta_ab Jn[s' s']``."""
    return Jacobian(
        *(lam_W * x + c * Theta * y for x, y in ((J.aa, J1.aa), (J.ab, J1.ab), (J.bb, J1.bb)))
    )


def _sandwich(L: Jacobian, T: np.ndarray, R: Jacobian) -> np.ndarray:
    """``sum_{gh} L_{ab;g} T[g, h] R_{cd;h}`` for a 4-index T symmetric within its pairs."""
    LT = L.apply(T)
    return np.moveaxis(R.apply(np.moveaxis(LT, (2, 3), (0, 1))), (0, 1), (2, 3))


def ntk_step(
    act: Activation,
    K: np.ndarray,
    Theta: np.ndarray,
    V: np.ndarray,
    stats: dict[str, np.ndarray],
    C_W: float,
    lam_b: float,
    lam_W: float,
    ratio: float,
    fields: set[str],
    pair: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """One step of the NTK recursions for the requested ``fields`` (Theta, A, B, D, F).

    ``stats`` holds the layer-``l`` tensors among A, B, D, F that the requested ones need
    (A needs D; D and A need V).  ``pair``: ``pair_moments(act, K, (0, 1))`` if already
    computed.
    """
    ss, dd = pair_moments(act, K, (0, 1)) if pair is None else pair
    out: dict[str, np.ndarray] = {}
    if "Theta" in fields:
        out["Theta"] = lam_b + lam_W * ss + C_W * dd * Theta
    rho = ratio
    if "B" in fields:
        M1111 = four_point_moments(act, K, (1, 1, 1, 1))
        src = M1111 * np.einsum("ac,bd->abcd", Theta, Theta)
        out["B"] = C_W**2 * (src + rho * np.multiply.outer(dd, dd) * stats["B"])
    if "F" in fields:
        M0011 = four_point_moments(act, K, (0, 0, 1, 1))  # <s_a s_b s'_c s'_d>
        src = np.einsum("acbd->abcd", M0011) * Theta[None, :, None, :]
        pa, pb = first_projector(act, K)
        F = stats["F"]
        Fdiag_h = np.einsum("abdd->abd", F)  # F[a, b, d, d] (h = d)
        Fdiag_g = np.einsum("bbcd->bcd", F)  # F[b, b, c, d] (g = b)
        Fdiag_gh = np.einsum("bbdd->bd", F)  # F[b, b, d, d]
        contr = (
            pa[:, :, None, None] * pa[None, None] * F
            + pa[:, :, None, None] * pb[None, None] * Fdiag_h[:, :, None, :]
            + pb[:, :, None, None] * pa[None, None] * Fdiag_g[None, :, :, :]
            + pb[:, :, None, None] * pb[None, None] * Fdiag_gh[None, :, None, :]
        )
        out["F"] = C_W**2 * (src + rho * contr)
    if "D" in fields or "A" in fields:
        M0000 = four_point_moments(act, K, (0, 0, 0, 0))
        M0011 = four_point_moments(act, K, (0, 0, 1, 1))
        J0 = half_projector(act, K, 0)
        J1 = half_projector(act, K, 1)
        JO = _scaled(J0, C_W, Theta, J1, lam_W)
        Om = lam_W * ss + C_W * Theta * dd  # <Omega_ab>
        s_Om = lam_W * M0000 + C_W * M0011 * Theta[None, None]  # <s_a s_b Omega_cd>
        D_prev = stats["D"]
        D_new = C_W * (s_Om - np.multiply.outer(ss, Om))
        D_new += rho * C_W * _sandwich(J0, V, JO)
        D_new += rho * C_W**2 * J0.apply(D_prev) * dd[None, None]
        if "D" in fields:
            out["D"] = D_new
        if "A" in fields:
            M1111 = four_point_moments(act, K, (1, 1, 1, 1))
            TT = Theta[:, :, None, None] * Theta[None, None]
            OmOm = (
                lam_W**2 * M0000
                + lam_W
                * C_W
                * (
                    M0011 * Theta[None, None]
                    + np.einsum("cdab->abcd", M0011) * Theta[:, :, None, None]
                )
                + C_W**2 * TT * M1111
            )
            A = OmOm - np.multiply.outer(Om, Om)
            A += rho * _sandwich(JO, V, JO)
            A += rho * C_W**2 * np.multiply.outer(dd, dd) * stats["A"]
            JD = JO.apply(D_prev)  # sum_g Jn[Omega_ab]_g D[g, c, d]
            A += (
                rho
                * C_W
                * (JD * dd[None, None] + np.einsum("cdab->abcd", JD) * dd[:, :, None, None])
            )
            out["A"] = A
    return out


def nlo_ntk_step(
    act: Activation,
    K: np.ndarray,
    Theta: np.ndarray,
    V: np.ndarray,
    G1: np.ndarray,
    D: np.ndarray,
    F: np.ndarray,
    H1: np.ndarray,
    C_W: float,
    lam_W: float,
    ratio: float,
    C_W1: float = 0.0,
    pair: np.ndarray | None = None,
) -> np.ndarray:
    r"""One step of the NLO NTK mean ``H^{1}``: ``E[H-hat^(l)] = Theta^(l) + H^{1}(l)/n_{l-1}``.

    The book names ``H^{1}`` (9.3) and needs it in the fully-trained mean (∞.63) but does not
    give it (footnote 7, book.txt L34614-L34620; spec/07 §8.4).  Its recursion follows from the
    mean of the NTK forward equation (8.12) over the weights of layer ``l+1``,
    ``E[H-hat'_ab] = lambda_b + lambda_W E[s_a s_b] + C_W E[s'_a s'_b H-hat_{jj;ab}]`` (one
    neuron ``j`` of layer ``l``), expanded to order ``1/n`` exactly as (4.115) expands the
    metric:

    .. math::

        H^{\{1\}\prime}_{ab} = C_W^{\{1\}} \langle s'_a s'_b\rangle \Theta_{ab}
            + \rho\,\bigl[\lambda_W \delta\langle s_a s_b\rangle
            + C_W \bigl(\delta\langle s'_a s'_b\rangle \Theta_{ab}
            + \langle s'_a s'_b\rangle H^{\{1\}}_{ab}
            + \tfrac12 \sum_{gh} X_{gh;ab} \langle \partial_g \partial_h (s'_a s'_b)\rangle
            \bigr)\bigr],

    where ``delta<.>`` is the 1/n shift from ``G1`` and ``V`` (:func:`nlo_shift`), ``rho =
    n_l/n_{l-1}``, ``C_W^(l+1) = C_W + C_W1/n_l`` (5.138), and ``X`` is the same-neuron
    NTK-preactivation cross-correlation, ``n E[dH_{jj;ab} z_{j;g} z_{j;h}] = X_{gh;ab}`` with
    ``X[g,h,a,b] = D[g,h,a,b] + F[g,a,h,b] + F[h,a,g,b]`` (the three Wick structures of
    (8.67) at ``i1 = i2 = i3 = i4``).  The last term uses ``E[dH f(z)] = (1/2) sum X <d d f>``,
    exact at this order because ``E[H-hat_jj | z_j]`` is quadratic in ``z_j`` given the layer
    below.  ``H^{1}`` vanishes at ``l = 1`` and (without the 1/n tuning) at ``l = 2``, where
    ``z^(1)`` is exactly Gaussian.

    Parameters
    ----------
    K, Theta, G1, H1 : ndarray, shape (N, N)
        Layer-l kernel, frozen NTK, NLO metric and NLO NTK mean.
    V, D, F : ndarray, shape (N, N, N, N)
        Layer-l vertex and NTK-preactivation cross-correlations (storage of the module notes).
    C_W, lam_W : float
        ``C_W^(l+1)`` (leading part), ``lambda_W^(l+1)``.
    ratio : float
        ``n_l / n_{l-1}``.
    C_W1 : float
        The 1/n tuning of ``C_W^(l+1)`` (5.138).
    pair : ndarray, optional
        ``pair_moments(act, K, (0, 1))`` if already computed.

    Returns
    -------
    ndarray, shape (N, N)
        ``H^{1}(l+1)``, the coefficient of ``1/n_l``.
    """
    _, dd = pair_moments(act, K, (0, 1)) if pair is None else pair
    X = D + np.einsum("gahb->ghab", F) + np.einsum("hagb->ghab", F)
    cross = np.einsum("abab->ab", half_projector(act, K, 1).apply(X))
    inner = dd * H1 + nlo_shift(act, K, V, G1, 1) * Theta + cross
    return C_W1 * dd * Theta + ratio * (lam_W * nlo_shift(act, K, V, G1, 0) + C_W * inner)


def layer_contributions(
    act: Activation,
    gram: np.ndarray,
    K: np.ndarray,
    C_W: np.ndarray,
    lambda_b: np.ndarray,
    lambda_W: np.ndarray,
) -> np.ndarray:
    """Contributions of each layer's biases and weights to the output frozen NTK (9.28).

    ``c_b(l' -> L) = lambda_b^(l') prod_{l''=l'}^{L-1} C_W^(l''+1) <s' s'>_{K^(l'')}`` and
    ``c_W(l' -> L) = lambda_W^(l') <s s>_{K^(l'-1)} prod ...`` with ``<s s>_{K^(0)} = X``
    (spec/05 §8); their sum over ``l'`` is ``Theta^(L)``.

    Parameters
    ----------
    gram : ndarray (N, N)
        ``X``.
    K : ndarray (L, N, N)
        The kernel at every layer.

    Returns
    -------
    ndarray, shape (L, 2, N, N)
        ``[l' - 1, 0]`` biases and ``[l' - 1, 1]`` weights of layer ``l'``.
    """
    L = K.shape[0]
    ss = [np.asarray(gram, dtype=np.float64)]
    chi = []
    for ell in range(L - 1):
        s, d = pair_moments(act, K[ell], (0, 1))
        ss.append(s)
        chi.append(C_W[ell + 1] * d)
    out = np.empty((L,) + (2,) + K.shape[1:])
    prod = np.ones(K.shape[1:])
    for lp in range(L, 0, -1):  # l' = L .. 1; prod = prod_{l''=l'}^{L-1} chi^(l'')
        out[lp - 1, 0] = lambda_b[lp - 1] * prod
        out[lp - 1, 1] = lambda_W[lp - 1] * ss[lp - 1] * prod
        if lp > 1:
            prod = prod * chi[lp - 2]
    return out
