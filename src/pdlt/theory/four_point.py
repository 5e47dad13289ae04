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

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product

import numpy as np

from ..activations import Activation
from ..gaussian import moments
from .kernel import helpers, pair_moments

__all__ = [
    "Jacobian",
    "kernel_jacobian",
    "half_projector",
    "vertex_source",
    "vertex_step",
    "nlo_metric_step",
    "nlo_shift",
    "four_point_moments",
    "six_point_second_layer",
]


_MOMENT_CACHE: OrderedDict[tuple, np.ndarray] = OrderedDict()
_MOMENT_CACHE_SIZE = 128


def four_point_moments(
    act: Activation,
    K: np.ndarray,
    orders: tuple[int, int, int, int] | Sequence[tuple[int, int, int, int]] = (0, 0, 0, 0),
) -> np.ndarray | list[np.ndarray]:
    """``<s^(o0)_a s^(o1)_b s^(o2)_c s^(o3)_d>_K`` for all ``a, b, c, d``: shape (N, N, N, N).

    ``orders`` are derivative orders per slot (``(0, 0, 1, 1)`` gives ``<s_a s_b s'_c s'_d>``),
    or a list of such tuples (then a list of tensors is returned).  Each distinct multiset of
    (sample, order) factors is integrated once, in as many dimensions as it has distinct
    samples; all multisets over the same samples share one quadrature grid, and every order
    tuple asked for in one call shares the grids.  Results are kept for the last few kernels,
    so a recursion step that asks again (e.g. the NTK and the ddNTK steps) does not integrate
    twice.
    """
    single = isinstance(orders[0], int | np.integer)
    wanted = [tuple(int(o) for o in orders)] if single else [tuple(map(int, o)) for o in orders]
    K = np.ascontiguousarray(K, dtype=np.float64)
    base_key = (id(act), K.shape, K.tobytes())
    found = {o: _MOMENT_CACHE[(base_key, o)] for o in wanted if (base_key, o) in _MOMENT_CACHE}
    missing = [o for o in dict.fromkeys(wanted) if o not in found]
    if missing:
        found.update(zip(missing, _integrate_four_point(act, K, missing), strict=True))
        _MOMENT_CACHE_REFS[id(act)] = act  # keep id(act) from being reused while cached
    for o in dict.fromkeys(wanted):  # the asked-for entries become the newest
        _MOMENT_CACHE[(base_key, o)] = found[o]
        _MOMENT_CACHE.move_to_end((base_key, o))
    while len(_MOMENT_CACHE) > _MOMENT_CACHE_SIZE:
        _MOMENT_CACHE.popitem(last=False)
    out = [found[o].copy() for o in wanted]
    return out[0] if single else out


_MOMENT_CACHE_REFS: dict[int, Activation] = {}


def _integrate_four_point(
    act: Activation, K: np.ndarray, orders: list[tuple[int, ...]]
) -> list[np.ndarray]:
    N = K.shape[0]
    grid = np.stack(np.meshgrid(*([np.arange(N)] * 4), indexing="ij"), -1).reshape(-1, 4)
    base = 4 * N
    keys = []
    for o in orders:
        codes = grid * 4 + np.asarray(o)  # (sample, order) -> one integer per factor
        srt = np.sort(codes, axis=1)
        keys.append(((srt[:, 0] * base + srt[:, 1]) * base + srt[:, 2]) * base + srt[:, 3])
    uniq, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    factors = np.stack(
        [uniq // base**3, uniq // base**2 % base, uniq // base % base, uniq % base], 1
    )
    samples = factors // 4  # sorted within each row
    new = np.concatenate([np.ones((len(uniq), 1), bool), samples[:, 1:] != samples[:, :-1]], 1)
    n_distinct = new.sum(axis=1)
    local = (np.cumsum(new, axis=1) - 1) * 4 + factors % 4  # (position in subset, order)
    values = np.empty(len(uniq))
    # by the number d of distinct samples: subsets (rows of K) and local patterns (products)
    for d in range(1, 5):
        rows = np.nonzero(n_distinct == d)[0]
        if rows.size == 0:
            continue
        subsets = samples[rows][new[rows]].reshape(len(rows), d)
        sub_u, sub_idx = np.unique(subsets, axis=0, return_inverse=True)
        pat_u, pat_idx = np.unique(local[rows], axis=0, return_inverse=True)
        blocks = K[sub_u[:, :, None], sub_u[:, None, :]]
        patterns = [[(int(c) // 4, int(c) % 4) for c in p] for p in pat_u]
        res = moments(act, blocks, patterns)  # (subsets, patterns)
        values[rows] = res[sub_idx.reshape(-1), pat_idx.reshape(-1)]
    split = np.cumsum([len(k) for k in keys])[:-1]
    return [values[inv].reshape(N, N, N, N) for inv in np.split(inverse, split)]


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
    """The kernel Jacobian ``J_{ab;gh} = C_W d<s_a s_b>_K/dK_{gh}`` (spec/02 §5.2):
    ``C_W`` times :func:`half_projector` of ``s_a s_b``."""
    P = half_projector(act, K, 0)
    return Jacobian(C_W * P.aa, C_W * P.ab, C_W * P.bb)


def half_projector(act: Activation, K: np.ndarray, order: int) -> Jacobian:
    """``(1/2) P2_{gh}[X_ab]`` for ``X_ab = s^(o)(z_a) s^(o)(z_b)``, ``o = order`` (spec/05 §4).

    ``P2_{gh}[X] = sum K^{g b1} K^{h b2} <(z_b1 z_b2 - K_b1b2) X>`` equals ``<d_g d_h X>``
    (Stein), so ``(1/2) P2[X] = d<X>_K/dK_{gh}`` in the symmetric-gradient convention.  Smooth
    activations use the derivative forms (``<s^(o+2)_a s^(o)_b>/2``, ``<s^(o+1)_a s^(o+1)_b>/2``;
    ``<(X)''>/2`` on the diagonal); kinked ones the moment form on the 2x2 block, which needs no
    derivative beyond ``o``.  ``order = 0`` gives ``J/C_W``; ``order = 1`` on the diagonal gives
    ``2h/C_W`` (5.52).
    """
    N = K.shape[0]
    aa, ab, bb = np.zeros((N, N)), np.zeros((N, N)), np.zeros((N, N))
    diag = np.diag(K)
    hp = helpers(act, diag, 1.0)
    idx = np.arange(N)
    if order == 0:
        aa[idx, idx] = hp.chi_par
    elif order == 1:
        aa[idx, idx] = 2.0 * hp.h
    else:
        raise ValueError("half_projector supports orders 0 and 1")
    if N == 1:
        return Jacobian(aa, ab, bb)
    a, b = np.triu_indices(N, 1)
    blocks = _blocks(K, a, b)
    o = order
    if act.smooth or act.polynomial_degree is not None:
        m = moments(
            act, blocks, [[(0, o + 2), (1, o)], [(0, o + 1), (1, o + 1)], [(0, o), (1, o + 2)]]
        )
        p_aa, p_ab, p_bb = 0.5 * m.T
    else:
        P2 = _projector2(act, blocks, o)  # (b, 2, 2)
        p_aa, p_ab, p_bb = 0.5 * P2[:, 0, 0], 0.5 * P2[:, 0, 1], 0.5 * P2[:, 1, 1]
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
            "two inputs have (nearly) parallel preactivations: the kinked activation's "
            "recursions need the inverse of their 2x2 kernel block; remove duplicate inputs"
        )
    inv = np.empty_like(blocks)
    inv[:, 0, 0], inv[:, 1, 1] = blocks[:, 1, 1] / det, blocks[:, 0, 0] / det
    inv[:, 0, 1] = inv[:, 1, 0] = -blocks[:, 0, 1] / det
    return inv


def _projector2(act: Activation, blocks: np.ndarray, order: int = 0) -> np.ndarray:
    """``K_S^{-1} <(z z^T - K_S) X> K_S^{-1}`` for ``X = s^(o)_a s^(o)_b`` on 2x2 blocks."""
    s = [(0, order), (1, order)]
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
        out[a, b] = out[b, a] = C_W * _nlo_shift_pairs(act, K, V, G1, a, b, 0)
    return C_b1 + C_W1 * ss + ratio * out


def nlo_shift(
    act: Activation, K: np.ndarray, V: np.ndarray, G1: np.ndarray, order: int = 0
) -> np.ndarray:
    r"""The 1/n shift of ``<s^(o)_a s^(o)_b>`` under the nearly-Gaussian distribution (4.104).

    ``E[s^(o)(z_a) s^(o)(z_b)] = <s^(o)_a s^(o)_b>_K + delta_ab / n_{l-1} + O(1/n^2)`` for one
    neuron whose preactivations have mean metric ``K + G1/n_{l-1}`` and connected four-point
    function ``V/n_{l-1}`` (4.76), with

    .. math::

        \delta_{ab} = \tfrac12 \sum G^{\{1\}}_{gh} \langle\partial_g \partial_h X\rangle
            + \tfrac18 \sum V_{(gh)(km)} \langle\partial_g\partial_h\partial_k\partial_m X\rangle,
        \qquad X = s^{(o)}_a s^{(o)}_b,

    the bracket of (4.115) without its ``C_W``.  For smooth activations the derivatives are
    taken literally, ``<d_a^p d_b^q X> = <s^(o+p)_a s^(o+q)_b>``, with orders above three moved
    onto the other factor by Gaussian integration by parts (:func:`_derivative_pair`), so
    nearly collinear inputs lose no precision; kinked activations use the moment form on the
    ``1x1`` (``a = b``) or ``2x2`` block of ``K`` (raised indices, spec/02 §7.4), which needs no
    derivative beyond ``o``.

    Parameters
    ----------
    K, V, G1 : ndarray
        Layer-l kernel (N, N), vertex (N, N, N, N) and NLO metric (N, N).
    order : int
        ``o``: 0 for ``<s s>`` (the metric), 1 for ``<s' s'>`` (the NTK).

    Returns
    -------
    ndarray, shape (N, N)
    """
    N = K.shape[0]
    out = np.empty((N, N))
    idx = np.arange(N)
    out[idx, idx] = _nlo_shift_pairs(act, K, V, G1, idx, idx, order)
    if N > 1:
        a, b = np.triu_indices(N, 1)
        out[a, b] = out[b, a] = _nlo_shift_pairs(act, K, V, G1, a, b, order)
    return out


def _nlo_shift_pairs(
    act: Activation,
    K: np.ndarray,
    V: np.ndarray,
    G1: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    order: int,
) -> np.ndarray:
    """:func:`nlo_shift` for the pairs ``(a[p], b[p])``, all equal (``a = b``) or all distinct."""
    same = bool(np.all(a == b))
    smooth = act.smooth or act.polynomial_degree is not None
    if not smooth:
        S = a[:, None] if same else np.stack([a, b], -1)
        return _nlo_shift_blocks(act, K, V, G1, S, order)
    blocks = K[a, a][:, None, None] if same else _blocks(K, a, b)
    o = order
    E = {
        (p, q): _derivative_pair(act, blocks, o + p, o + q)
        for p in range(5)
        for q in range(5)
        if p + q in (2, 4)
    }
    slots = (a, b)  # slot 0 differentiates s^(o)_a, slot 1 s^(o)_b
    t1 = sum(G1[slots[g], slots[h]] * E[(2 - g - h, g + h)] for g, h in product((0, 1), repeat=2))
    t2 = sum(
        V[slots[g], slots[h], slots[k], slots[m]] * E[(4 - g - h - k - m, g + h + k + m)]
        for g, h, k, m in product((0, 1), repeat=4)
    )
    return 0.5 * t1 + 0.125 * t2


def _derivative_pair(act: Activation, blocks: np.ndarray, i: int, j: int) -> np.ndarray:
    """``<s^(i)(z_0) s^(j)(z_1)>`` over ``blocks`` (P, d, d); ``d = 1``: both on one sample.

    Orders above three are lowered by Gaussian integration by parts along ``z_0`` at fixed
    ``e = z_1 - c z_0`` (``c = K_01/K_00``, ``e`` independent of ``z_0``):
    ``<s^(k+1)_0 z_0^m g(z_1)> = <s^(k)_0 [z_0^{m+1} g/K_00 - m z_0^{m-1} g - c z_0^m g']>``.
    No inverse of the block is taken, so the result keeps full precision as ``det K -> 0``.
    Needs ``i + j <= 6``.
    """
    d = blocks.shape[-1]
    if i < j:
        i, j = j, i
        if d == 2:
            blocks = np.ascontiguousarray(blocks[:, ::-1, ::-1])
    Kaa = blocks[:, 0, 0]
    c = blocks[:, 0, d - 1] / Kaa
    terms: dict[tuple[int, int, int], np.ndarray] = {}
    stack: list[tuple[tuple[int, int, int], np.ndarray]] = [((i, j, 0), np.ones_like(Kaa))]
    while stack:
        (k, l_, m), coef = stack.pop()
        if k <= 3:
            terms[(k, l_, m)] = terms.get((k, l_, m), 0.0) + coef
            continue
        stack.append(((k - 1, l_, m + 1), coef / Kaa))
        if m:
            stack.append(((k - 1, l_, m - 1), -m * coef))
        stack.append(((k - 1, l_ + 1, m), -c * coef))
    keys = list(terms)
    if any(l_ > 3 for _, l_, _ in keys):
        raise ValueError(f"<s^({i}) s^({j})> needs derivatives above the third")
    prods = [[(0, k), (d - 1, l_)] + [(0, -1)] * m for k, l_, m in keys]
    mom = moments(act, blocks, prods)
    return sum(terms[key] * mom[:, n] for n, key in enumerate(keys))


def _nlo_shift_blocks(
    act: Activation,
    K: np.ndarray,
    V: np.ndarray,
    G1: np.ndarray,
    S: np.ndarray,
    order: int,
) -> np.ndarray:
    """:func:`nlo_shift` for the samples ``S[p, 0], S[p, -1]`` on the blocks ``K[S_p, S_p]``.

    ``S`` has shape (P, d), d = 1 (one sample) or 2 (two distinct samples).
    """
    d = S.shape[1]
    blocks = K[S[:, :, None], S[:, None, :]]  # (P, d, d)
    inv = _inverse2(blocks) if d == 2 else 1.0 / blocks
    VS = V[
        S[:, :, None, None, None],
        S[:, None, :, None, None],
        S[:, None, None, :, None],
        S[:, None, None, None, :],
    ]  # (P, d, d, d, d)
    GS = G1[S[:, :, None], S[:, None, :]]
    s = [(0, order), (d - 1, order)]
    # <X z_i z_j> and <X z_i z_j z_k z_l> for i, j, k, l in the block
    two = list(product(range(d), repeat=2))
    four = list(product(range(d), repeat=4))
    prods = [s] + [s + [(i, -1), (j, -1)] for i, j in two]
    prods += [s + [(i, -1), (j, -1), (k, -1), (m, -1)] for i, j, k, m in four]
    mom = moments(act, blocks, prods)
    m0 = mom[:, 0]
    m2 = mom[:, 1 : 1 + d * d].reshape(-1, d, d)
    m4 = mom[:, 1 + d * d :].reshape(-1, d, d, d, d)
    Kb = blocks
    M2 = m2 - Kb * m0[:, None, None]  # <X (z z - K)>
    # <X (z_i z_j - K_ij)(z_k z_l - K_kl)>
    M4 = (
        m4
        - Kb[:, :, :, None, None] * m2[:, None, None, :, :]
        - m2[:, :, :, None, None] * Kb[:, None, None, :, :]
        + Kb[:, :, :, None, None] * Kb[:, None, None, :, :] * m0[:, None, None, None, None]
    )
    Mm = -2.0 * m2 + Kb * m0[:, None, None]  # <X (-2 z z + K)>
    Vr = np.einsum("pai,pbj,pck,pdl,pijkl->pabcd", inv, inv, inv, inv, VS)
    t1 = 0.5 * np.einsum("pij,pij->p", inv @ GS @ inv, M2)
    t2 = 0.125 * np.einsum("pabcd,pabcd->p", Vr, M4)
    t3 = 0.25 * np.einsum("pacbd,pcd,pab->p", Vr, Kb, Mm)
    return t1 + t2 + t3


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
