"""The four-point vertex V and the NLO metric G{1}: the leading finite-width corrections.

Book §4.3-§4.5 and §5.4; spec/02 §5.2, §7.4; spec/03 §9.

* :func:`vertex_source` -- ``C_W^2 [<s_a s_b s_c s_d> - <s_a s_b><s_c s_d>]``, the first term of
  (4.119) (exactly ``V^(2)`` (4.40)), with up to four distinct samples.
* :func:`kernel_jacobian` -- ``J_{ab;gh} = C_W d<s_a s_b>_K / dK_{gh}`` (symmetric-gradient
  convention, spec/02 §5.2), stored as three ``(N, N)`` arrays since only ``g, h in {a, b}``
  contribute.
* :func:`vertex_step` -- (4.119) in the chain-rule form
  ``V' = C_W^2 [<ssss> - <ss><ss>] + (n_l/n_{l-1}) sum J V J``.
* :func:`nlo_metric_step` -- (4.115), with the 1/n-tuned hyperparameters of (5.138)-(5.140):
  ``G1' = [c_b1 + c_W1 <ss>] + (n_l/n_{l-1}) [sum J G1 + (1/2) sum H V]``, where the tuning
  term does not carry the width ratio (spec/03 §9.1).
* :func:`six_point_second_layer` -- the third moment of the second-layer metric (4.59), which
  fixes the connected six-point function there.

Index conventions: ``V[a, b, c, d] = V_{(ab)(cd)}``, normalized by ``n_{l-1}`` (4.76);
``G1[a, b]`` is the coefficient of ``1/n_{l-1}`` in ``G^(l) = K^(l) + G1^(l)/n_{l-1} + ...``
(4.104).  The recursions are leading order: the ``V`` on their right-hand sides is ``V^{0}``
(spec/02 §14.6).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import numpy as np

from ..activations import Activation
from ..gaussian import moments
from .kernel import helpers, pair_moments

__all__ = [
    "Jacobian",
    "kernel_jacobian",
    "vertex_source",
    "vertex_step",
    "nlo_metric_step",
    "four_point_moments",
    "six_point_second_layer",
]


def four_point_moments(act: Activation, K: np.ndarray) -> np.ndarray:
    """``<s_a s_b s_c s_d>_K`` for all ``a, b, c, d``: shape (N, N, N, N), fully symmetric.

    Each multiset of samples is integrated once, in as many dimensions as it has distinct
    samples, batched by pattern.
    """
    N = K.shape[0]
    grid = np.stack(np.meshgrid(*([np.arange(N)] * 4), indexing="ij"), -1).reshape(-1, 4)
    srt = np.sort(grid, axis=1)
    keys = ((srt[:, 0] * N + srt[:, 1]) * N + srt[:, 2]) * N + srt[:, 3]
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    tuples = srt[first]
    values = np.empty(len(uniq))
    # group by the multiplicity pattern of the sorted tuple, e.g. (2, 1, 1)
    patterns: dict[tuple[int, ...], list[int]] = {}
    for i, t in enumerate(tuples):
        _, counts = np.unique(t, return_counts=True)
        patterns.setdefault(tuple(int(c) for c in counts), []).append(i)
    for pattern, rows in patterns.items():
        rows_a = np.array(rows)
        samples = np.array([np.unique(tuples[r]) for r in rows_a])  # (b, d)
        sub = K[samples[:, :, None], samples[:, None, :]]
        factors = [(pos, 0) for pos, c in enumerate(pattern) for _ in range(c)]
        values[rows_a] = moments(act, sub, [factors])[:, 0]
    return values[inverse].reshape(N, N, N, N)


def vertex_source(act: Activation, K: np.ndarray, C_W: float) -> np.ndarray:
    """``C_W^2 [<s_a s_b s_c s_d>_K - <s_a s_b>_K <s_c s_d>_K]``, shape (N, N, N, N).

    This is ``V^(2)`` exactly (4.40) when ``K = K^(1)``, and the source term of (4.119).
    """
    ss = pair_moments(act, K, (0,))[0]
    return C_W**2 * (four_point_moments(act, K) - np.multiply.outer(ss, ss))


@dataclass(frozen=True)
class Jacobian:
    """``J_{ab;gh}`` in three (N, N) arrays: ``aa[a, b] = J_{ab;aa}``, ``ab[a, b] = J_{ab;ab}
    = J_{ab;ba}``, ``bb[a, b] = J_{ab;bb}``; on the diagonal ``aa[a, a] = chi_par(K_aa)`` and
    the other two vanish, so every entry is counted once."""

    aa: np.ndarray
    ab: np.ndarray
    bb: np.ndarray

    def apply(self, T: np.ndarray) -> np.ndarray:
        """``sum_{gh} J_{ab;gh} T[g, h, ...]`` for T symmetric in its first two indices."""
        N = self.aa.shape[0]
        idx = np.arange(N)
        Td = T[idx, idx]  # (N, ...): T[g, g, ...]
        extra = (None,) * (T.ndim - 2)
        return (
            self.aa[(...,) + extra] * Td[:, None]
            + 2.0 * self.ab[(...,) + extra] * T
            + self.bb[(...,) + extra] * Td[None, :]
        )


def kernel_jacobian(act: Activation, K: np.ndarray, C_W: float) -> Jacobian:
    """The kernel Jacobian ``J_{ab;gh} = C_W d<s_a s_b>_K/dK_{gh}`` (spec/02 §5.2).

    Smooth activations use the Stein forms ``J_{ab;aa} = (C_W/2) <s''_a s_b>``,
    ``J_{ab;ab} = (C_W/2) <s'_a s'_b>``; kinked ones the moment form
    ``(C_W/2) K_S^{-1} <(z z^T - K_S) s_a s_b> K_S^{-1}`` on the 2x2 block ``S = {a, b}``
    (spec/05 §4), which needs no second derivative of sigma.
    """
    N = K.shape[0]
    aa, ab, bb = np.zeros((N, N)), np.zeros((N, N)), np.zeros((N, N))
    diag = np.diag(K)
    aa[np.arange(N), np.arange(N)] = helpers(act, diag, C_W).chi_par
    if N == 1:
        return Jacobian(aa, ab, bb)
    a, b = np.triu_indices(N, 1)
    blocks = _blocks(K, a, b)
    if act.smooth or act.polynomial_degree is not None:
        m = moments(act, blocks, [[(0, 2), (1, 0)], [(0, 1), (1, 1)], [(0, 0), (1, 2)]])
        p_aa, p_ab, p_bb = 0.5 * C_W * m.T
    else:
        P2 = _projector2(act, blocks)  # (b, 2, 2)
        p_aa, p_ab, p_bb = 0.5 * C_W * P2[:, 0, 0], 0.5 * C_W * P2[:, 0, 1], 0.5 * C_W * P2[:, 1, 1]
    aa[a, b], ab[a, b], bb[a, b] = p_aa, p_ab, p_bb
    aa[b, a], ab[b, a], bb[b, a] = p_bb, p_ab, p_aa
    return Jacobian(aa, ab, bb)


def _blocks(K: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.stack([np.stack([K[a, a], K[a, b]], -1), np.stack([K[b, a], K[b, b]], -1)], -2)


def _inverse2(blocks: np.ndarray) -> np.ndarray:
    det = blocks[:, 0, 0] * blocks[:, 1, 1] - blocks[:, 0, 1] ** 2
    scale = blocks[:, 0, 0] * blocks[:, 1, 1]
    if np.any(det <= 1e-12 * scale):
        raise ValueError(
            "two inputs have (nearly) parallel preactivations: the kinked activation's vertex "
            "recursion needs the inverse of their 2x2 kernel block; remove duplicate inputs"
        )
    inv = np.empty_like(blocks)
    inv[:, 0, 0], inv[:, 1, 1] = blocks[:, 1, 1] / det, blocks[:, 0, 0] / det
    inv[:, 0, 1] = inv[:, 1, 0] = -blocks[:, 0, 1] / det
    return inv


def _projector2(act: Activation, blocks: np.ndarray) -> np.ndarray:
    """``K_S^{-1} <(z z^T - K_S) s_a s_b> K_S^{-1}`` for 2x2 blocks (spec/05 §4)."""
    s = [(0, 0), (1, 0)]
    m = moments(
        act, blocks, [s + [(0, -1), (0, -1)], s + [(0, -1), (1, -1)], s + [(1, -1), (1, -1)], s]
    )
    zz = np.stack([np.stack([m[:, 0], m[:, 1]], -1), np.stack([m[:, 1], m[:, 2]], -1)], -2)
    centred = zz - blocks * m[:, 3, None, None]
    inv = _inverse2(blocks)
    return inv @ centred @ inv


def vertex_step(
    act: Activation, K: np.ndarray, V: np.ndarray, C_W: float, ratio: float
) -> np.ndarray:
    """One step of (4.119): ``V^(l+1)`` from ``K^(l)``, ``V^(l)``.

    Parameters
    ----------
    K : ndarray, shape (N, N)
    V : ndarray, shape (N, N, N, N)
        ``V^(l)`` (leading order), normalized by ``n_{l-1}``.
    C_W : float
        ``C_W^(l+1)``.
    ratio : float
        ``n_l / n_{l-1}`` (1 for equal widths; 0 is allowed at l = 1, where V vanishes).
    """
    J = kernel_jacobian(act, K, C_W)
    JV = J.apply(V)  # sum_gh J_{ab;gh} V_{(gh)(cd)}
    JVJ = np.moveaxis(J.apply(np.moveaxis(JV, (2, 3), (0, 1))), (0, 1), (2, 3))
    return vertex_source(act, K, C_W) + ratio * JVJ


def nlo_metric_step(
    act: Activation,
    K: np.ndarray,
    V: np.ndarray,
    G1: np.ndarray,
    C_W: float,
    ratio: float,
    C_b1: float = 0.0,
    C_W1: float = 0.0,
) -> np.ndarray:
    """One step of the NLO-metric recursion (4.115) with 1/n tuning (5.140).

    ``G1^(l+1)_{ab} = [C_b1 + C_W1 <s_a s_b>] + (n_l/n_{l-1}) [sum J G1 + (1/2) sum H V]``,
    where ``C_b^(l+1) = C_b + C_b1/n_l`` and ``C_W^(l+1) = C_W + C_W1/n_l``.  Diagonal entries
    use the single-input form ``chi_par G1 + (1/2) C_W g''(K) V`` (spec/03 §9.1); off-diagonal
    ones the book's moment form on the 2x2 block (spec/02 §7.4).

    Parameters
    ----------
    K, V, G1 : ndarray
        Layer-l kernel (N, N), vertex (N, N, N, N) and NLO metric (N, N).
    """
    N = K.shape[0]
    ss = pair_moments(act, K, (0,))[0]
    out = np.empty((N, N))
    idx = np.arange(N)
    d = np.diag(K)
    hp = helpers(act, d, C_W)
    out[idx, idx] = hp.chi_par * G1[idx, idx] + 0.5 * C_W * hp.g2 * V[idx, idx, idx, idx]
    if N > 1:
        a, b = np.triu_indices(N, 1)
        out[a, b] = out[b, a] = _nlo_offdiagonal(act, K, V, G1, C_W, a, b)
    return C_b1 + C_W1 * ss + ratio * out


def _nlo_offdiagonal(
    act: Activation,
    K: np.ndarray,
    V: np.ndarray,
    G1: np.ndarray,
    C_W: float,
    a: np.ndarray,
    b: np.ndarray,
) -> np.ndarray:
    """The bracket of (4.115) for the pairs (a, b), restricted to the 2x2 block S = {a, b}."""
    blocks = _blocks(K, a, b)  # (P, 2, 2)
    inv = _inverse2(blocks)
    S = np.stack([a, b], -1)  # (P, 2): block index -> sample
    VS = V[
        S[:, :, None, None, None],
        S[:, None, :, None, None],
        S[:, None, None, :, None],
        S[:, None, None, None, :],
    ]  # (P, 2, 2, 2, 2)
    GS = G1[S[:, :, None], S[:, None, :]]
    s = [(0, 0), (1, 0)]
    # <s_a s_b z_i z_j> and <s_a s_b z_i z_j z_k z_l> for i, j, k, l in {0, 1}
    two = list(product((0, 1), repeat=2))
    four = list(product((0, 1), repeat=4))
    prods = [s] + [s + [(i, -1), (j, -1)] for i, j in two]
    prods += [s + [(i, -1), (j, -1), (k, -1), (m, -1)] for i, j, k, m in four]
    mom = moments(act, blocks, prods)
    m0 = mom[:, 0]
    m2 = mom[:, 1:5].reshape(-1, 2, 2)
    m4 = mom[:, 5:].reshape(-1, 2, 2, 2, 2)
    Kb = blocks
    M2 = m2 - Kb * m0[:, None, None]  # <ss (z z - K)>
    # <ss (z_i z_j - K_ij)(z_k z_l - K_kl)>
    M4 = (
        m4
        - Kb[:, :, :, None, None] * m2[:, None, None, :, :]
        - m2[:, :, :, None, None] * Kb[:, None, None, :, :]
        + Kb[:, :, :, None, None] * Kb[:, None, None, :, :] * m0[:, None, None, None, None]
    )
    Mm = -2.0 * m2 + Kb * m0[:, None, None]  # <ss (-2 z z + K)>
    Vr = np.einsum("pai,pbj,pck,pdl,pijkl->pabcd", inv, inv, inv, inv, VS)
    t1 = 0.5 * np.einsum("pij,pij->p", inv @ GS @ inv, M2)
    t2 = 0.125 * np.einsum("pabcd,pabcd->p", Vr, M4)
    t3 = 0.25 * np.einsum("pacbd,pcd,pab->p", Vr, Kb, Mm)
    return C_W * (t1 + t2 + t3)


def six_point_second_layer(
    act: Activation, K1: np.ndarray, C_W: float, n1: int, samples: tuple[int, ...]
) -> float:
    """Third joint moment of the second-layer stochastic metric (4.59), exact at any width.

    ``E[dG_{a1a2} dG_{a3a4} dG_{a5a6}] = (C_W^3/n_1^2) [<s1..s6> - <s1s2><s3s4s5s6>
    - <s3s4><s5s6s1s2> - <s5s6><s1s2s3s4> + 2 <s1s2><s3s4><s5s6>]`` over ``K^(1)``; it fixes
    the connected six-point function of ``z^(2)``: for one input and one neuron
    ``kappa_6(z) = 15 kappa_3(G-hat)`` (spec/02 §2.3, §3).

    Parameters
    ----------
    K1 : ndarray, shape (N, N)
        First-layer kernel.
    samples : six sample indices ``(a1, ..., a6)``.
    """
    if len(samples) != 6:
        raise ValueError("give six sample indices (a1, ..., a6)")
    distinct = sorted(set(samples))
    if len(distinct) > 4:
        raise ValueError("at most four distinct samples are supported")
    pos = {a: i for i, a in enumerate(distinct)}
    sub = K1[np.ix_(distinct, distinct)]

    def E(*idx: int) -> float:
        return float(moments(act, sub, [[(pos[samples[i]], 0) for i in idx]])[0])

    s12, s34, s56 = E(0, 1), E(2, 3), E(4, 5)
    value = (
        E(0, 1, 2, 3, 4, 5)
        - s12 * E(2, 3, 4, 5)
        - s34 * E(4, 5, 0, 1)
        - s56 * E(0, 1, 2, 3)
        + 2 * s12 * s34 * s56
    )
    return C_W**3 / n1**2 * value
