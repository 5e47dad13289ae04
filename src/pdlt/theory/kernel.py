"""The infinite-width kernel: its recursion, susceptibilities and the delta expansion.

Book §4.6 and §5.1; spec/02 §5.1, spec/03 §1-§3.

* :func:`kernel_step`, :func:`kernel_flow` -- ``K^(l+1) = C_b + C_W <sigma sigma>_{K^(l)}``
  (4.118) for ``N`` inputs, from ``K^(1) = C_b + C_W X`` (4.8).
* :func:`helpers` -- the single-input functions ``g, chi_par, chi_perp, h, j, s_V`` (5.49)-
  (5.52), (5.109), (5.111) at any kernel values.
* :func:`gamma_components` -- the ``gamma``-basis components ``K_[0], K_[1], K_[2]`` of a
  two-input kernel (5.17)-(5.19).
* :func:`delta_flow` -- the delta expansion for infinitesimally separated inputs
  (5.46)-(5.48), with the ``dd K_[0]`` recursion derived in spec/03 §3.4.

All Gaussian expectations go through :mod:`pdlt.gaussian`.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from .. import _compiled
from ..activations import Activation
from ..gaussian import (
    _COEF_PANELS,
    _SERIES_FIRST,
    _SERIES_LADDER,
    _SERIES_MAX_STD,
    _SERIES_TOL,
    _hermite_table,
    arc_cosine_angle,
    arc_cosine_constants,
    in_parallel,
    moments,
    pairwise_moments,
    row_blocks,
    upper_mirrored,
)

__all__ = [
    "Helpers",
    "helpers",
    "first_layer_kernel",
    "kernel_step",
    "kernel_flow",
    "arc_cosine_flow",
    "mehler_flow",
    "gamma_components",
    "DeltaFlow",
    "delta_flow",
    "pair_moments",
    "mixed_pair_moments",
]


# --------------------------------------------------------------------------------------------
# Pairwise expectations over a kernel matrix
# --------------------------------------------------------------------------------------------


def pair_moments(act: Activation, K: np.ndarray, orders: tuple[int, ...] = (0,)) -> np.ndarray:
    """``<sigma^{(k)}_a sigma^{(k)}_b>_K`` for every pair of inputs and every ``k`` in orders.

    Parameters
    ----------
    act : Activation
    K : ndarray, shape (N, N)
        Kernel of the current layer.
    orders : tuple of int
        Derivative orders ``k`` (0 for ``<sigma sigma>``, 1 for ``<sigma' sigma'>``).

    Returns
    -------
    ndarray, shape (len(orders), N, N)
        Symmetric in the last two axes.  Diagonal entries are one-dimensional integrals,
        off-diagonal ones two-dimensional over the 2x2 sub-block (4.118).
    """
    return mixed_pair_moments(act, K, [(k, k) for k in orders])


def mixed_pair_moments(
    act: Activation, K: np.ndarray, orders: Sequence[tuple[int, int]]
) -> np.ndarray:
    """``<sigma^{(i)}_a sigma^{(j)}_b>_K`` for every ordered pair of inputs and ``(i, j)``.

    Parameters
    ----------
    act : Activation
    K : ndarray, shape (N, N)
    orders : sequence of (int, int)
        Derivative orders of the first and the second factor, e.g. ``(2, 0)`` for
        ``<sigma''_a sigma_b>``.

    Returns
    -------
    ndarray, shape (len(orders), N, N)
        ``[k, a, b]``; the diagonal ``a = b`` is the one-dimensional ``<sigma^{(i)} sigma^{(j)}>``.
        Computed by :func:`pdlt.gaussian.pairwise_moments` (closed forms, Mehler series or
        quadrature per pair).
    """
    return pairwise_moments(act, np.asarray(K, dtype=np.float64), orders)


# --------------------------------------------------------------------------------------------
# Kernel recursion
# --------------------------------------------------------------------------------------------


def first_layer_kernel(gram: np.ndarray, C_b: float, C_W: float) -> np.ndarray:
    """``K^(1)_{ab} = C_b^(1) + C_W^(1) X_{ab}`` (4.8), exact at any width."""
    return C_b + C_W * np.asarray(gram, dtype=np.float64)


def kernel_step(act: Activation, K: np.ndarray, C_b: float, C_W: float) -> np.ndarray:
    """One step of (4.118): ``K^(l+1)_{ab} = C_b + C_W <sigma_a sigma_b>_{K^(l)}``.

    Parameters
    ----------
    K : ndarray, shape (N, N)
    C_b, C_W : float
        Hyperparameters of layer ``l + 1``.
    """
    return C_b + C_W * pair_moments(act, K, (0,))[0]


def kernel_flow(
    act: Activation,
    gram: np.ndarray,
    C_b: np.ndarray,
    C_W: np.ndarray,
    gamma: np.ndarray | None = None,
    *,
    derivative_moments: list[np.ndarray] | None = None,
) -> np.ndarray:
    """The kernel at every layer, ``K^(l)`` for ``l = 1..L``; residual layers add
    ``gamma^2 K^(l-1)`` (B.11).

    Parameters
    ----------
    act : Activation
    gram : ndarray, shape (N, N)
        Normalized input Gram matrix ``X``.
    C_b, C_W : ndarray, shape (L,)
        Per-layer hyperparameters.
    gamma : ndarray, shape (L,), optional
        Residual strengths (default: none).
    derivative_moments : list, optional
        If given, ``<sigma_a sigma_b>`` and ``<sigma'_a sigma'_b>`` at ``K^(l)``,
        ``l = 1..L-1``, are appended to it (shape (2, N, N) each), from the same pass: the
        NTK recursion (8.63) needs both, and integrating once serves both recursions.

    Returns
    -------
    ndarray, shape (L, N, N)
    """
    L = len(C_b)
    K = np.empty((L,) + gram.shape)
    K[0] = first_layer_kernel(gram, C_b[0], C_W[0])
    for ell in range(1, L):
        if derivative_moments is None:
            K[ell] = kernel_step(act, K[ell - 1], C_b[ell], C_W[ell])
        else:
            derivative_moments.append(pair_moments(act, K[ell - 1], (0, 1)))
            K[ell] = C_b[ell] + C_W[ell] * derivative_moments[-1][0]
        if gamma is not None and gamma[ell]:
            K[ell] += gamma[ell] ** 2 * K[ell - 1]
    return K


def arc_cosine_flow(
    act: Activation,
    gram: np.ndarray,
    C_b: np.ndarray,
    C_W: np.ndarray,
    gamma: np.ndarray | None = None,
    lambda_b: np.ndarray | None = None,
    lambda_W: np.ndarray | None = None,
    keep: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None] | None:
    r"""``K^(l)`` (4.118) and, given learning rates, ``Theta^(l)`` (8.63) for ``l = 1..L``, for
    the scale-invariant family (ReLU, leaky ReLU, ``a_+ z`` / ``a_- z``) in closed form.

    With the arc-cosine forms of :func:`pdlt.gaussian.pairwise_moments` (``theta_ab``,
    ``r_ab = sqrt(K_aa K_bb - K_ab^2)``, constants ``A, B, E``)

    * ``K'_ab = C_b + C_W {A [(pi - theta) K_ab + r_ab] + B K_ab} + gamma^2 K_ab``,
    * ``Theta'_ab = lambda_b + lambda_W <sigma_a sigma_b> + C_W (E - A theta) Theta_ab
      + gamma^2 Theta_ab`` (residual layers (B.3), (B.11)),

    so a pair's recursion needs only its own ``K_ab, Theta_ab`` and the diagonal.  The diagonal
    is run through the depth first; then each cache-sized block of pairs of the upper triangle
    runs through all ``L`` layers while in cache and is mirrored to the lower one -- the same
    numbers as the layer-by-layer recursion (to rounding), about 3x faster.  The diagonal is
    computed by the same arithmetic as the blocks (``theta = r = 0`` there), so it is the same
    to the last bit, and so are duplicated inputs.  With numba (:mod:`pdlt._compiled`) the same
    recursion runs fused, a row of pairs through all layers in registers (another 3-6x).

    Parameters
    ----------
    act : Activation
        ``act.scale_invariant`` must be set.
    gram : ndarray, shape (N, N)
        Normalized input Gram matrix ``X``.
    C_b, C_W : ndarray, shape (L,)
    gamma : ndarray, shape (L,), optional
        Residual strengths (default: none).
    lambda_b, lambda_W : ndarray, shape (L,), optional
        Learning rates; ``Theta`` is computed only when both are given.
    keep : ndarray of int, shape (S,), optional
        The layers to return, as sorted indices ``0..L-1`` of the layer axis (default: all).
        With numba only these are ever written: the last layer alone is ``1/L`` of the memory.

    Returns
    -------
    (K, Theta) : ndarray, shape (S, N, N) each (``Theta`` None without learning rates), or
    None when a variance vanishes at some layer (``sigma'`` at the kink is then left to the
    quadrature of the layer-by-layer recursion).
    """
    A, B, E = arc_cosine_constants(act)
    L, N = len(C_b), gram.shape[0]
    g2 = np.zeros(L) if gamma is None else np.asarray(gamma, dtype=np.float64) ** 2
    ntk = lambda_b is not None and lambda_W is not None
    fused = _compiled.kernels()
    if fused is not None:
        f64 = _per_layer(C_b, C_W, g2, lambda_b, lambda_W)
        var0 = first_layer_kernel(np.diagonal(gram), C_b[0], C_W[0])
        var = fused.arc_cosine_variances(var0, *f64[:3], A, B)
        if np.any(var <= 0):
            return None
        X = np.ascontiguousarray(gram, dtype=np.float64)
        slot, S = _slots(L, keep)
        K = np.empty((S, N, N))
        Theta = np.empty((S, N, N)) if ntk else None
        T = K if Theta is None else Theta

        def block(i0: int, i1: int) -> None:
            fused.arc_cosine_rows(X, K, T, var, *f64, A, B, E, slot, i0, i1, ntk)

        row_blocks(block, N)  # one thread below N = 256: faster for the closed forms
        return K, Theta
    K = np.empty((L, N, N))
    Theta = np.empty((L, N, N)) if ntk else None
    K[0] = first_layer_kernel(gram, C_b[0], C_W[0])
    if Theta is not None:
        Theta[0] = lambda_b[0] + lambda_W[0] * gram  # type: ignore[index]  # (8.23)

    def run(
        K0: np.ndarray,
        T0: np.ndarray | None,
        vr: np.ndarray,
        vc: np.ndarray,
        ell: int,
        out: tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray],
    ) -> None:
        """Layer ``ell - 1 -> ell`` of a block, into ``out = (K1, T1, r, theta)`` (the last two
        scratch; no allocation, so the block stays in cache)."""
        K1, T1, r, theta = out
        arc_cosine_angle(K0, vr, vc, r, theta)
        if T1 is not None:  # C_W (E - A theta) Theta + gamma^2 Theta, before theta is reused
            np.multiply(theta, -A * C_W[ell], out=T1)
            T1 += E * C_W[ell] + g2[ell]
            T1 *= T0
        ss = np.subtract(np.pi, theta, out=theta)  # <sigma sigma> = A [(pi - theta) K + r] + B K
        ss *= K0
        ss += r
        ss *= A
        if B:
            ss += np.multiply(K0, B, out=r)
        np.multiply(ss, C_W[ell], out=K1)
        K1 += C_b[ell]
        if g2[ell]:
            K1 += np.multiply(K0, g2[ell], out=r)
        if T1 is not None:
            T1 += np.multiply(ss, lambda_W[ell], out=r)  # type: ignore[index]
            T1 += lambda_b[ell]  # type: ignore[index]

    # the diagonal, by the blocks' own arithmetic with theta = r = 0 (so it is the blocks'
    # diagonal to the last bit): ss = pi K (times A, plus B K), K' = C_W ss + C_b (+ g2 K)
    var = np.empty((L, N))
    var[0] = np.diagonal(K[0])
    for ell in range(1, L):
        v = var[ell - 1]
        ss = np.pi * v
        ss *= A
        if B:
            ss += B * v
        var[ell] = ss * C_W[ell] + C_b[ell]
        if g2[ell]:
            var[ell] += g2[ell] * v
    if np.any(var <= 0):
        return None

    def block(r0: int, r1: int) -> None:
        Kb = upper_mirrored(K[0, r0:r1, r0:].copy())
        Tb = None if Theta is None else upper_mirrored(Theta[0, r0:r1, r0:].copy())
        Kn, r, theta = np.empty_like(Kb), np.empty_like(Kb), np.empty_like(Kb)
        Tn = None if Tb is None else np.empty_like(Kb)
        for ell in range(1, L):
            v = var[ell - 1]
            run(Kb, Tb, v[r0:r1, None], v[None, r0:], ell, (Kn, Tn, r, theta))
            Kb, Kn, Tb, Tn = Kn, Kb, Tn, Tb
            for out, new in ((K, Kb), (Theta, Tb)):
                if out is not None:  # symmetric in its leading square (run is symmetric)
                    out[ell, r0:r1, r0:] = new
                    out[ell, r0:, r0:r1] = new.T

    row_blocks(block, N)
    if keep is None:
        return K, Theta
    return K[keep], None if Theta is None else Theta[keep]


# inputs from which the compiled series use all threads (measured at N = 100: tanh 0.80 ->
# 0.76 ms, GELU 1.45 -> 1.23 ms; the closed forms of ReLU got slower, so they keep 256)
_THREADED_FROM = 64


def _slots(L: int, keep: np.ndarray | None) -> tuple[np.ndarray, int]:
    """Where each layer goes in the compiled kernels' output (-1: not kept), shape (L,), and
    the number of layers kept."""
    if keep is None:
        return np.arange(L, dtype=np.int64), L
    slot = np.full(L, -1, dtype=np.int64)
    slot[keep] = np.arange(len(keep))
    return slot, len(keep)


def _per_layer(
    C_b: np.ndarray,
    C_W: np.ndarray,
    g2: np.ndarray,
    lambda_b: np.ndarray | None,
    lambda_W: np.ndarray | None,
) -> list[np.ndarray]:
    """``C_b, C_W, gamma^2, lambda_b, lambda_W`` as contiguous float64 arrays (L,) for the
    compiled kernels; zero learning rates when there are none."""
    zero = np.zeros(len(C_b))
    lam = (zero, zero) if lambda_b is None or lambda_W is None else (lambda_b, lambda_W)
    return [np.ascontiguousarray(v, dtype=np.float64) for v in (C_b, C_W, g2, *lam)]


def mehler_flow(
    act: Activation,
    gram: np.ndarray,
    C_b: np.ndarray,
    C_W: np.ndarray,
    gamma: np.ndarray | None = None,
    lambda_b: np.ndarray | None = None,
    lambda_W: np.ndarray | None = None,
    keep: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None] | None:
    r"""``K^(l)`` (4.118) and, given learning rates, ``Theta^(l)`` (8.63) for ``l = 1..L`` of a
    smooth activation, by Mehler's series, fused over all layers (needs numba).

    The same mathematics as the layer-by-layer path through
    :func:`pdlt.gaussian.pairwise_moments`: the diagonal ``K^(l)_aa`` runs first (its
    one-dimensional moments on the Hermite coefficients' grid); then, with the coefficients of
    ``sigma`` and ``sigma'`` of every sample at every layer in hand, each tile of pairs runs
    through all layers while in cache (``mehler_rows`` of :mod:`pdlt._compiled`),

    * ``K'_ab = C_b + C_W sum_n c_n(a) c_n(b) rho_ab^n + gamma^2 K_ab``,
    * ``Theta'_ab = lambda_b + lambda_W <sigma_a sigma_b> + (C_W sum_n c'_n(a) c'_n(b)
      rho_ab^n + gamma^2) Theta_ab``,

    each pair summed to the first ``m`` of (8, 16, 32, 64) whose rigorous tail bound is below
    1e-10 of the kernel scale.  A pair that needs more (a correlation near +-1) goes on from
    that layer alone (``mehler_pairs``), with the tables extended to 256 terms on the samples
    of such pairs.  Parameters are those of :func:`arc_cosine_flow`.

    Returns
    -------
    (K, Theta) : ndarray, shape (S, N, N) each (``Theta`` None without learning rates), or
    None where the fused path does not apply: no numba, an activation the series does not
    cover, a variance above ``(3 scale)^2`` at some layer, a pair no ``m <= 256`` covers, or
    more than ``_SERIES_RETRY_MAX`` pairs per thread that need more than 64 terms -- the
    layer-by-layer path then handles it (per-pair quadrature where needed).
    """
    fused = _compiled.kernels()
    series = act.smooth and act.polynomial_degree is None and act.homogeneous is None
    if fused is None or not series or act.scale_invariant is not None:
        return None
    L = len(C_b)
    g2 = np.zeros(L) if gamma is None else np.asarray(gamma, dtype=np.float64) ** 2
    ntk = lambda_b is not None and lambda_W is not None
    f64 = _per_layer(C_b, C_W, g2, lambda_b, lambda_W)
    X = np.ascontiguousarray(gram, dtype=np.float64)
    N = X.shape[0]
    slot, S = _slots(L, keep)
    K = np.empty((S, N, N))
    Theta = np.empty((S, N, N)) if ntk else None
    var = np.empty((L, N))
    var[0] = first_layer_kernel(np.diagonal(X), C_b[0], C_W[0])
    tables = _MehlerTables.empty(L, N, _SERIES_FIRST)
    if not tables.fill(act, var, f64, ntk, _SERIES_FIRST, 0):
        return None
    with np.errstate(divide="ignore"):
        inv = np.where(var > 0, 1.0 / np.sqrt(var), 0.0)
    found = tables.run(fused, X, K, Theta, var, inv, f64, slot)
    if found is None:
        return None
    pairs, kt = found
    if len(pairs) == 0:
        return K, Theta
    # the pairs no rung covered, each from the layer where that happened, with coefficients
    # to 256 there and above, on their samples only (a pair covered keeps its value)
    samples, M = np.unique(pairs[:, :2]), _SERIES_LADDER[-1]
    more = tables.subset(samples, M)
    if not more.fill(act, var[:, samples], f64, ntk, M, int(pairs[:, 2].min()) - 1):
        return None
    pos = np.full(N, -1, dtype=np.int64)
    pos[samples] = np.arange(len(samples))
    c, tau, d = more.c, more.tau, more.d
    T = K if Theta is None else Theta
    lost = fused.mehler_pairs(
        pairs, kt, var, inv, *c, *tau, more.rungs, *d, more.parity, pos, *f64, _SERIES_TOL,
        slot, K, T, ntk,
    )  # fmt: skip
    return None if lost else (K, Theta)


_ROW_COST = 28.0  # mehler_rows' fixed work per row and layer, in pairs (measured at N = 100:
# it balances the two threads' halves, 0.23 ms each, where 0 left them at 0.19 and 0.27 ms)
_SERIES_RETRY_MAX = 4096  # pairs per thread that the series continues to 256 terms, else the
# layer-by-layer path takes the flow (per-pair quadrature where needed)
_WORKSPACE = threading.local()
_WORKSPACE_MAX = 2**22  # float64 entries (32 MB) a thread keeps between calls


def _workspace(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialized float64 array of ``shape`` in a buffer this thread keeps between calls
    (up to ``_WORKSPACE_MAX`` entries; larger ones are fresh): allocating the coefficient tables
    afresh cost page faults on every call (on this machine's VM ~1 us a page: a tanh flow of
    all ten layers at N = 100 took 1.4 ms against 0.75 ms).  Only one array at a time per
    thread may live in it."""
    size = math.prod(shape)
    if size > _WORKSPACE_MAX:
        return np.empty(shape)
    buf = getattr(_WORKSPACE, "buf", None)
    if buf is None or buf.size < size:
        buf = _WORKSPACE.buf = np.empty(size)
    return buf[:size].reshape(shape)


@dataclass
class _MehlerTables:
    """Per-layer inputs of ``mehler_rows``: Hermite coefficients ``c`` (2, L - 1, top + 1, N) of
    ``sigma`` and ``sigma'``, their normalized tails ``tau`` (2, L - 1, J, N) at the rungs
    ``ladder`` (J,) up to ``top``, the rungs each layer may use (``rungs``, (L - 1,)), the
    one-dimensional moments ``d`` (2, L - 1, N) and the ``parity`` (2, L - 1) of each series:
    0 or 1 when only its even or odd orders are there, else -1."""

    c: np.ndarray
    tau: np.ndarray
    d: np.ndarray
    ladder: np.ndarray
    rungs: np.ndarray
    parity: np.ndarray

    @classmethod
    def empty(cls, L: int, N: int, top: int, reuse: bool = True) -> _MehlerTables:
        """Tables for ``L`` layers and ``N`` samples to ``top``; the coefficients in this
        thread's workspace when ``reuse`` (:func:`_workspace`)."""
        ladder = np.array([m for m in _SERIES_LADDER if m <= top])
        J = max(L - 1, 0)
        shape = (2, J, top + 1, N)
        return cls(  # the coefficients are read only where written (below each layer's top,
            _workspace(shape) if reuse else np.empty(shape),  # of its parity): not zeroed
            np.zeros((2, J, len(ladder), N)),
            np.zeros((2, J, N)),
            ladder,
            np.zeros(J, dtype=np.int64),
            np.full((2, J), -1, dtype=np.int64),
        )

    def subset(self, samples: np.ndarray, top: int) -> _MehlerTables:
        """The tables of ``samples`` only, with room for coefficients to ``top``."""
        _, J, m, _ = self.c.shape
        new = _MehlerTables.empty(J + 1, len(samples), top, reuse=False)  # self.c: workspace
        new.c[:, :, :m] = self.c[:, :, :, samples]
        new.tau[:, :, : len(self.ladder)] = self.tau[:, :, :, samples]
        new.d[:] = self.d[:, :, samples]
        new.rungs[:] = self.rungs
        new.parity[:] = self.parity
        return new

    def fill(
        self,
        act: Activation,
        var: np.ndarray,
        f64: list[np.ndarray],
        ntk: bool,
        M: int,
        j0: int,
    ) -> bool:
        """Layers ``j >= j0``: the tables to ``M`` terms at ``K^(j)_aa = var[j]``, interpolated
        from the activation's panel tables (:class:`pdlt.gaussian._HermiteTable`, panels
        computed as they are first needed) by the compiled kernels; False when a variance
        leaves the series' range or a panel's interpolation is not accurate enough.

        The first fill runs the diagonal through the depth first (``var[j + 1]`` from the 1-D
        moments ``d``, ``hermite_diagonal``); then each layer gets its tails at the rungs, the
        first rung that covers every pair whatever its correlation (its coefficients go no
        further), its parity and its coefficients (``hermite_tables``).  A later fill (to
        ``M = 256``) only gives the layers that used all rungs the orders and rungs above (the
        rest stays as it was, so a pair the old rungs cover keeps its value to the last bit).
        """
        fused = _compiled.kernels()
        C_b, C_W, g2 = f64[:3]
        if len(self.rungs) == j0:
            return True
        table = _hermite_table(act, M)  # sigma' too without Theta: K is the same to the bit
        lay = table.layout
        start = int(self.rungs[j0])  # rungs filled before: 0, or all of the old ladder
        missing = np.empty(len(var[0]) + 1, dtype=np.int64)
        j, smax = 0, _SERIES_MAX_STD * act.scale
        Q = lay.width
        energy = np.array([lay.energy, Q + lay.energy])  # <sigma^2>, <sigma'^2>
        while start == 0:  # the first fill: the diagonal, loading panels as it goes
            j = fused.hermite_diagonal(
                var, table.A, table.nodes, table.g0, _COEF_PANELS, energy, C_b, C_W, g2,
                self.d, j, smax, missing,
            )  # fmt: skip
            if j == -1:
                break
            if j < -1 or not table.load(missing[: np.argmin(missing > -(2**62))]):
                return False
        cols = [np.array([lay.coef, Q + lay.coef]), energy, np.array([lay.tails, Q + lay.tails])]
        ladder = np.array(lay.ladder)
        # the layers are independent once the diagonal is known: two halves on two threads,
        # the larger one first (the calling thread's: the other thread starts later)
        J, N = len(self.rungs), len(var[0])
        mid = (j0 + J + 1) // 2 if N >= _THREADED_FROM and J - j0 >= 2 else J
        parts = [(lo, hi) for lo, hi in ((j0, mid), (mid, J)) if hi > lo]
        spare = [missing, np.empty_like(missing)]
        lost = [-1] * len(parts)

        def part(k: int) -> None:
            lost[k] = fused.hermite_tables(
                var, table.A, table.nodes, table.g0, _COEF_PANELS, table.err, table.parity,
                *cols, ladder, start, _SERIES_TOL, 2 if ntk else 1, M // 2 + 1, self.c, self.tau,
                self.rungs, self.parity, *parts[k], spare[k],
            )  # fmt: skip

        while True:  # a layer done stays done (its rungs moved on from start)
            in_parallel([functools.partial(part, k) for k in range(len(parts))])
            if max(lost) < 0:
                return True
            gone = np.concatenate([spare[k][:n] for k, n in enumerate(lost) if n >= 0])
            if not table.load(gone):
                return False

    def run(
        self,
        fused: ModuleType,
        X: np.ndarray,
        K: np.ndarray,
        Theta: np.ndarray | None,
        var: np.ndarray,
        inv: np.ndarray,
        f64: list[np.ndarray],
        slot: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """``mehler_rows`` over all rows, layer ``l`` into slot ``slot[l]``: the pairs no
        rung covers, ``(a, b, l)`` (P, 3) with the first such layer ``l``, and ``(K_ab,
        Theta_ab)`` (P, 2) of the layer below; None when there are more than
        ``_SERIES_RETRY_MAX`` per thread (``inv``: ``1/sqrt(var)``, 0 where it vanishes)."""
        T = K if Theta is None else Theta
        tables = (*self.c, *self.tau, self.rungs, *self.d, self.parity)
        args = (X, K, T, var, inv, *tables, *f64, _SERIES_TOL, slot)
        N, ntk = len(X), Theta is not None
        found: list[tuple[np.ndarray, np.ndarray, int]] = []

        def block(i0: int, i1: int) -> None:
            work = np.empty((fused.MEHLER_WORK, N))
            iwork = np.zeros((4 + fused.TILE, N), dtype=np.int64)
            pairs = np.empty((_SERIES_RETRY_MAX, 3), dtype=np.int64)
            kt = np.empty((_SERIES_RETRY_MAX, 2))
            n = fused.mehler_rows(*args, i0, i1, ntk, work, iwork, pairs, kt)
            found.append((pairs[:n], kt[:n], n))

        row_blocks(block, N, threaded_from=_THREADED_FROM, row_cost=_ROW_COST)
        if any(n > _SERIES_RETRY_MAX for _, _, n in found):
            return None
        return np.concatenate([p for p, _, _ in found]), np.concatenate([v for _, v, _ in found])


# --------------------------------------------------------------------------------------------
# Single-input helper functions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Helpers:
    r"""Single-input functions of the kernel (spec/03 §1.3), elementwise in ``K``.

    Attributes
    ----------
    g : ``<sigma^2>_K`` (5.5)
    chi_par : ``C_W g'(K)`` (5.50)
    chi_perp : ``C_W <sigma'^2>_K`` (5.51)
    h : ``(1/2) d chi_perp / dK`` (5.52)
    j : ``C_W <sigma^2 [(z^2/K)^2 - 6 z^2/K + 3]>_K = 4 K^2 C_W g''(K)`` (5.111)
    s_V : ``C_W^2 (<sigma^4>_K - g^2)``, the source of the vertex recursion (5.109)
    g2 : ``g''(K)``
    """

    g: np.ndarray
    chi_par: np.ndarray
    chi_perp: np.ndarray
    h: np.ndarray
    j: np.ndarray
    s_V: np.ndarray
    g2: np.ndarray


def helpers(act: Activation, K: np.ndarray | float, C_W: np.ndarray | float) -> Helpers:
    """Evaluate ``g, chi_par, chi_perp, h, j, s_V`` at kernel values ``K > 0``.

    Smooth activations use integrated-by-parts ("heat equation") forms that do not cancel at
    small ``K`` (spec/03 §1.1): ``chi_par = C_W <sigma'^2 + sigma sigma''>``,
    ``h = (C_W/2) <sigma''^2 + sigma' sigma'''>``, ``g'' = <z (sigma^2)'''>/(4K)``.  Kinked
    activations use the book's moment forms (5.50)-(5.52), (5.111), which need no
    derivative beyond ``sigma'``.

    Parameters
    ----------
    K : array_like
        Kernel values (any shape), ``K >= 0``.
    C_W : array_like
        Broadcast against ``K``.
    """
    K = np.asarray(K, dtype=np.float64)
    C_W = np.broadcast_to(np.asarray(C_W, dtype=np.float64), K.shape)
    if np.any(K < 0) or not np.all(np.isfinite(K)):
        raise ValueError("kernel values must be finite and non-negative")
    Kc = K.reshape(-1, 1, 1)
    one = [(0, 0)]
    if act.smooth or act.polynomial_degree is not None:
        prods = [
            one * 2,  # sigma^2
            [(0, 1)] * 2,  # sigma'^2
            [(0, 0), (0, 2)],  # sigma sigma''
            [(0, 2)] * 2,  # sigma''^2
            [(0, 1), (0, 3)],  # sigma' sigma'''
            one * 4,  # sigma^4
            [(0, -1), (0, 0), (0, 3)],  # z sigma sigma'''
            [(0, -1), (0, 1), (0, 2)],  # z sigma' sigma''
        ]
        m = moments(act, Kc, prods)
        g, d2, sdd, dd2, d1d3, s4, zsd3, zd1d2 = m.T
        chi_par = d2 + sdd
        h = 0.5 * (dd2 + d1d3)
        with np.errstate(divide="ignore", invalid="ignore"):
            g2 = (2.0 * zsd3 + 6.0 * zd1d2) / (4.0 * Kc[:, 0, 0])
        zero = Kc[:, 0, 0] == 0
        if np.any(zero):
            g2 = np.where(zero, _g2_at_zero(act), g2)
    else:
        if not act.has_derivative(1):
            raise ValueError(
                f"susceptibilities need sigma', which {act.name!r} does not have "
                "(its derivative is a delta function)"
            )
        if np.any(K == 0):
            raise ValueError(f"helpers of the kinked activation {act.name!r} need K > 0")
        prods = [
            one * 2,
            [(0, 1)] * 2,
            [(0, -1), (0, 0), (0, 1)],  # z sigma sigma'
            [(0, -1), (0, -1), (0, 1), (0, 1)],  # z^2 sigma'^2
            one * 4,
            [(0, -1)] * 2 + one * 2,  # z^2 sigma^2
            [(0, -1)] * 4 + one * 2,  # z^4 sigma^2
        ]
        m = moments(act, Kc, prods)
        g, d2, zsd, z2d2, s4, z2s2, z4s2 = m.T
        k = Kc[:, 0, 0]
        chi_par = zsd / k
        h = (z2d2 - k * d2) / (2.0 * k * k)
        g2 = (z4s2 / k**2 - 6.0 * z2s2 / k + 3.0 * g) / (4.0 * k * k)
    cw = C_W.reshape(-1)
    k = Kc[:, 0, 0]
    shape = K.shape
    return Helpers(
        g=g.reshape(shape),
        chi_par=(cw * chi_par).reshape(shape),
        chi_perp=(cw * d2).reshape(shape),
        h=(cw * h).reshape(shape),
        j=(4.0 * k * k * cw * g2).reshape(shape),
        s_V=(cw**2 * (s4 - g * g)).reshape(shape),
        g2=g2.reshape(shape),
    )


def _g2_at_zero(act: Activation) -> float:
    """``g''(0) = (sigma^2)''''(0)/4`` from the Taylor coefficients."""
    s = act.taylor
    if s is None or len(s) < 5:
        raise ValueError(f"g''(0) needs sigma'''' at 0, unavailable for {act.name!r}")
    return (2 * s[0] * s[4] + 8 * s[1] * s[3] + 6 * s[2] ** 2) / 4.0


# --------------------------------------------------------------------------------------------
# Two inputs: gamma basis and the delta expansion
# --------------------------------------------------------------------------------------------


def gamma_components(K: np.ndarray) -> np.ndarray:
    """``(K_[0], K_[1], K_[2])`` of 2x2 kernels (5.17)-(5.19).

    Parameters
    ----------
    K : ndarray, shape (..., 2, 2)
        Rows and columns ordered ``(+, -)``.

    Returns
    -------
    ndarray, shape (..., 3)
        ``K_[0] = (K++ + K-- + 2K+-)/4``, ``K_[1] = (K++ - K--)/2``,
        ``K_[2] = (K++ + K-- - 2K+-)/4``.
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape[-2:] != (2, 2):
        raise ValueError(f"gamma components need 2x2 kernels, got shape {K.shape}")
    pp, mm, pm = K[..., 0, 0], K[..., 1, 1], 0.5 * (K[..., 0, 1] + K[..., 1, 0])
    return np.stack([(pp + mm + 2 * pm) / 4, (pp - mm) / 2, (pp + mm - 2 * pm) / 4], axis=-1)


@dataclass(frozen=True)
class DeltaFlow:
    """Delta expansion of two nearby inputs ``x_+- = x_0 +- dx/2`` (5.21)-(5.48).

    Attributes (each shape (L,))
    ----------------------------
    K00 : midpoint kernel ``K^(l)_{00}`` (5.46)
    dK1 : ``delta K_[1]`` (5.47), first order in ``dx``
    ddK2 : ``delta delta K_[2]`` (5.48), second order
    ddK0 : ``delta delta K_[0]`` (derived, spec/03 §3.4)
    chi_par, chi_perp, h : susceptibilities at ``K00`` of each layer
    """

    K00: np.ndarray
    dK1: np.ndarray
    ddK2: np.ndarray
    ddK0: np.ndarray
    chi_par: np.ndarray
    chi_perp: np.ndarray
    h: np.ndarray

    def kernel(self) -> np.ndarray:
        """The 2x2 kernels rebuilt from the components, shape (L, 2, 2), to O(dx^2)."""
        k0 = self.K00 + self.ddK0
        kpp = k0 + self.dK1 + self.ddK2
        kmm = k0 - self.dK1 + self.ddK2
        kpm = k0 - self.ddK2
        return np.stack([np.stack([kpp, kpm], -1), np.stack([kpm, kmm], -1)], -2)


def delta_flow(
    act: Activation, x0: np.ndarray, dx: np.ndarray, C_b: np.ndarray, C_W: np.ndarray
) -> DeltaFlow:
    """Iterate the delta-expansion recursions (5.46)-(5.48) for ``x_+- = x_0 +- dx/2``.

    ``K00' = C_b + C_W g(K00)``; ``dK1' = chi_par dK1``;
    ``ddK2' = chi_perp ddK2 + h dK1^2``;
    ``ddK0' = chi_par ddK0 + (chi_par - chi_perp) ddK2 + (C_W g''/2 - h) dK1^2`` (derived).
    Initial conditions are exact from (5.2): ``K00 = C_b + C_W x0.x0/n0``,
    ``dK1 = C_W x0.dx/n0``, ``ddK2 = C_W dx.dx/(4 n0)``, ``ddK0 = 0``.  Valid for smooth
    activations (footnote 5, L10590).

    Parameters
    ----------
    x0, dx : ndarray, shape (n_0,)
    C_b, C_W : ndarray, shape (L,)
    """
    if not act.smooth:
        raise ValueError(
            f"the delta expansion assumes a smooth activation (book footnote 5); {act.name!r} "
            "has kinks -- use the exact two-input kernel instead"
        )
    x0 = np.asarray(x0, dtype=np.float64).ravel()
    dx = np.asarray(dx, dtype=np.float64).ravel()
    if x0.shape != dx.shape:
        raise ValueError("x0 and dx must have the same length")
    n0 = len(x0)
    L = len(C_b)
    K00, dK1, ddK2, ddK0 = (np.empty(L) for _ in range(4))
    chi_par, chi_perp, hh = (np.empty(L) for _ in range(3))
    K00[0] = C_b[0] + C_W[0] * x0 @ x0 / n0
    dK1[0] = C_W[0] * x0 @ dx / n0
    ddK2[0] = C_W[0] * dx @ dx / (4 * n0)
    ddK0[0] = 0.0
    for ell in range(L):
        cw_next = C_W[ell + 1] if ell + 1 < L else C_W[ell]
        hp = helpers(act, K00[ell], cw_next)
        chi_par[ell], chi_perp[ell], hh[ell] = hp.chi_par, hp.chi_perp, hp.h
        if ell + 1 == L:
            break
        K00[ell + 1] = C_b[ell + 1] + cw_next * hp.g
        dK1[ell + 1] = hp.chi_par * dK1[ell]
        ddK2[ell + 1] = hp.chi_perp * ddK2[ell] + hp.h * dK1[ell] ** 2
        ddK0[ell + 1] = (
            hp.chi_par * ddK0[ell]
            + (hp.chi_par - hp.chi_perp) * ddK2[ell]
            + (0.5 * cw_next * hp.g2 - hp.h) * dK1[ell] ** 2
        )
    return DeltaFlow(K00, dK1, ddK2, ddK0, chi_par, chi_perp, hh)
