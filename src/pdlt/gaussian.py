r"""Gaussian expectations :math:`\langle F(z)\rangle_K` -- the only place in pdlt where integrals
are done.

``<F(z_1, ..., z_d)>_K`` is the expectation of ``F`` under a zero-mean Gaussian vector with
covariance ``K`` (4.25), for ``d = 1..4`` and any positive semidefinite ``K`` (singular ones
included: duplicated inputs, zero-norm inputs), vectorized over many covariances at once.

Three entry points:

:func:`expect`
    A general integrand ``F`` (a callable on node arrays).
:func:`moments`
    Products of an activation and its derivatives, ``<prod_k sigma^{(d_k)}(z_{a_k})>_K``, the
    building block of every recursion.  It uses closed forms where they exist -- positively
    homogeneous (scale-invariant) activations in one and two dimensions, by the exact polar
    method of spec/03 §10 / spec/02 §11.2; the step family (ReLU, leaky ReLU, the
    scale-invariant family, perceptron, sign) in three and four dimensions, by Gaussian
    integration by parts down to orthant probabilities (closed forms up to three dimensions,
    one 1-D Plackett integral in four; ~1e-13); polynomials, by Gauss-Hermite rules that are
    exact for their degree -- and quadrature otherwise.
:func:`pairwise_moments`
    ``<sigma^{(i)}(z_a) sigma^{(j)}(z_b)>`` for every pair of samples of an ``N x N`` kernel
    (the kernel and NTK recursions (4.118), (8.63)): arc-cosine closed forms for the
    scale-invariant family, Mehler's Hermite series with a rigorous tail bound (1e-10 of the
    kernel scale) for smooth activations, so ``N`` one-dimensional integrals (or 12 per 1/8
    octave of the standard deviation, at Chebyshev points in ``log s``, kept and interpolated)
    replace ``N^2`` two-dimensional ones; pairs neither covers go to :func:`moments`.  With
    numba, the kernel and NTK flows of several inputs run these forms fused over all layers
    (:func:`pdlt.theory.kernel.arc_cosine_flow`, :func:`pdlt.theory.kernel.mehler_flow`).

Quadrature
----------
``K`` is factored as ``K = L L^T`` by a rank-revealing Cholesky decomposition (components that
are linear combinations of earlier ones get no integration variable of their own), and
``z = L u`` with ``u`` standard normal.  The integral over ``u`` is nested, one variable per
level, each with composite Gauss-Legendre panels no wider than ``min(1.5, scale/|L_kj|)`` in
``u`` on ``[-9, 9]`` (``[-7.5, 7.5]`` in three and ``[-7, 7]`` in four dimensions), so the rule
resolves both the Gaussian and the activation's own features (its nearest complex singularity,
for saturating functions) however large the variance -- plain Gauss-Hermite loses accuracy for
``tanh`` at ``K = 10`` (spec/03 §1.2).  Kinks are handled exactly: a kink of component ``z_k``
at ``c`` becomes a panel breakpoint in the innermost variable ``z_k`` depends on, located from
the outer variables, so every panel integrates a smooth function; for nearly collinear inputs
extra breakpoints resolve the sharp (smoothed) transition the kink leaves in the outer
variables.  Positively homogeneous activations (the scale-invariant family, step functions) use
the exact polar method in one and two dimensions, polynomials an exact Gauss-Hermite rule.  In
three and four dimensions, for a smooth activation whose variables all have small coefficients
(the integrand analytic in a strip wide compared with the Gaussian), a tensor Gauss-Hermite rule
replaces the composite one where it is cheaper: its node count per variable is the smallest that
passes a one-dimensional self-test at 1e-12 (:func:`_hermite_rule`), typically 10-30 nodes
instead of 80.  The evaluation is chunked so memory stays bounded.

For a smooth activation, products over two to four samples (any factors ``sigma^{(k)}`` and
``z``: every form the recursions use) go to rotated sequential conditioning
(:mod:`pdlt._gaussian_four`): one sample is integrated out into a smoothed factor needed on a
two-dimensional grid, the others by self-tested Gauss-Hermite or trapezoidal rules (tied into
lattices near unit variance), so ``n^3`` evaluations of sigma (``n^2`` on a lattice, ``n^2`` in
three dimensions) replace ``n^4``.  It is 25-200 times faster than the general rule in four
dimensions and far more accurate: ~1e-13 (tests against closed forms for ``sin`` and a
brute-force rule for tanh, GELU, SWISH).  Where its rules cannot reach that (tanh at variances
~50), and for kinked activations, the general rule is used.

Accuracy (checked in ``tests/test_gaussian.py`` against closed forms and mpmath): relative
error below 1e-10 for smooth integrands and below 1e-8 for kinked ones in one and two
dimensions, over variances from 1e-6 to 1e2 and correlations up to 0.9999; about 1e-8 to 1e-6
in three and four dimensions at variances O(1) (four-dimensional tensor grids are capped at
6e7 nodes per covariance, so at large variances there the accuracy degrades) -- except where
the conditioning above applies, ~1e-13.  ``error=True``
returns an estimate from a refined rule (more nodes, narrower panels, wider domain) alongside
every value.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import numpy as np
import torch
from scipy import special

from . import _gaussian_four
from .activations import Activation

__all__ = ["expect", "moments", "pairwise_moments", "Factor", "DEFAULT_RULE"]

Factor = tuple[int, int]
"""``(a, k)``: the factor ``sigma^{(k)}(z_a)``; ``k = -1`` means ``z_a`` itself."""

_U_MAX = 9.0
_PANEL_MAX = 1.5
_GL_NODES = 14
_POINTS_PER_CHUNK = 1_000_000
_MAX_PANELS = 1024
_MAX_NODES_PER_COVARIANCE = 60_000_000

DEFAULT_RULE = {"gl_nodes": _GL_NODES, "panel": _PANEL_MAX, "u_max": _U_MAX}


# --------------------------------------------------------------------------------------------
# Validation and factorization
# --------------------------------------------------------------------------------------------


def _as_covariances(K: np.ndarray) -> tuple[np.ndarray, tuple[int, ...]]:
    K = np.asarray(K, dtype=np.float64)
    if K.ndim < 2 or K.shape[-1] != K.shape[-2]:
        raise ValueError(f"K must have shape (..., d, d), got {K.shape}")
    d = K.shape[-1]
    if not 1 <= d <= 4:
        raise ValueError(f"Gaussian expectations are implemented for d = 1..4, got d = {d}")
    if not np.all(np.isfinite(K)):
        raise ValueError("K contains NaN or infinite entries")
    batch = K.shape[:-2]
    K = K.reshape(-1, d, d)
    scale = np.maximum(np.max(np.abs(np.diagonal(K, axis1=1, axis2=2)), axis=1), 1e-300)
    asym = np.max(np.abs(K - np.swapaxes(K, 1, 2)), axis=(1, 2))
    if np.any(asym > 1e-10 * scale):
        raise ValueError("K must be symmetric")
    if np.any(np.diagonal(K, axis1=1, axis2=2) < 0):
        raise ValueError("K has a negative variance on its diagonal; it must be PSD")
    if d > 1:
        lam = np.linalg.eigvalsh(0.5 * (K + np.swapaxes(K, 1, 2)))
        if np.any(lam[:, 0] < -1e-9 * scale):
            raise ValueError(
                f"K is not positive semidefinite (smallest eigenvalue {lam[:, 0].min():.3g})"
            )
    return 0.5 * (K + np.swapaxes(K, 1, 2)), batch


def _factor(K: np.ndarray) -> np.ndarray:
    """Rank-revealing lower Cholesky factor ``L`` with ``K = L L^T``; shape (B, d, d).

    A pivot that vanishes (relative to its variance, below 1e-13) marks a component that is a
    linear combination of the earlier ones; its column is zero.
    """
    return _gaussian_four.cholesky(K, 1e-13)


# --------------------------------------------------------------------------------------------
# One-dimensional rules
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=32)
def _gauss_legendre(m: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(m)


@lru_cache(maxsize=32)
def _gauss_hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = special.roots_hermitenorm(n)
    return x, w / math.sqrt(2.0 * math.pi)


def _phi(u: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * u * u) / math.sqrt(2.0 * math.pi)


def _panel_rule(edges: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss-Legendre on sorted panel ``edges`` (..., E) with Gaussian weight."""
    x, w = _gauss_legendre(m)
    lo, hi = edges[..., :-1, None], edges[..., 1:, None]
    half = 0.5 * (hi - lo)
    nodes = (lo + hi) * 0.5 + half * x
    weights = half * w * _phi(nodes)
    shape = edges.shape[:-1] + (-1,)
    return nodes.reshape(shape), weights.reshape(shape)


# --------------------------------------------------------------------------------------------
# Generic expectation
# --------------------------------------------------------------------------------------------


def expect(
    fn: Callable[[np.ndarray], np.ndarray],
    K: np.ndarray,
    *,
    kinks: Sequence[float] = (),
    scale: float = 1.0,
    error: bool = False,
    gl_nodes: int | None = None,
    u_max: float | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    r"""Gaussian expectation :math:`\langle F(z)\rangle_K` of a general integrand.

    Parameters
    ----------
    fn : callable
        ``fn(z)`` with ``z`` of shape ``(B, Q, d)`` (``B`` covariances, ``Q`` nodes) returning
        ``(B, Q)`` or ``(B, Q, m)`` for ``m`` integrands at once.  ``z[..., a]`` is the
        component ``a`` of the Gaussian vector.
    K : array_like, shape (..., d, d)
        Covariance matrices, ``d = 1..4``, symmetric positive semidefinite.
    kinks : sequence of float
        Points where the integrand, as a function of any one component, is not smooth.
    scale : float
        Length in z over which the integrand's non-polynomial factors vary (see
        :attr:`pdlt.activations.Activation.scale`); ``inf`` for polynomials.
    error : bool
        Also return an error estimate: the difference from a rule with more nodes.
    gl_nodes : int, optional
        Gauss-Legendre nodes per panel (default 14 in one and two dimensions, 8 in three and
        four).
    u_max : float, optional
        Half-width of the domain in standard-normal units (default 9 in one and two
        dimensions, 7.5 in three, 7 in four); wider for integrands that grow like
        ``exp(u^2/4)``, e.g. high-order Hermite functions.

    Returns
    -------
    value : ndarray, shape (...) or (..., m)
    err : ndarray, same shape, only if ``error`` is True
    """
    Kb, batch = _as_covariances(K)
    kinks_t = tuple(float(c) for c in kinks)
    value = _expect(fn, Kb, kinks_t, float(scale), gl_nodes, u_max=u_max)
    out_shape = batch + value.shape[1:]
    if not error:
        return value.reshape(out_shape)
    fine = _expect(fn, Kb, kinks_t, float(scale), gl_nodes, fine=True, u_max=u_max)
    return fine.reshape(out_shape), np.abs(fine - value).reshape(out_shape)


@dataclass(frozen=True)
class _Rule:
    """Composite Gauss-Legendre rule: ``nodes`` per panel, panels at most ``panel`` wide in u,
    domain ``[-u_max, u_max]`` per variable."""

    nodes: int
    u_max: float
    panel: float

    def refined(self) -> _Rule:
        """More nodes, narrower panels and a wider domain: the error estimate's comparison."""
        return _Rule(self.nodes + 6, self.u_max + 3.0, self.panel / 1.5)


def _default_rule(r: int, gl_nodes: int | None, u_max: float | None = None) -> _Rule:
    """1-2 dimensions: 14 nodes on panels <= 1.5 over [-9, 9] (error ~1e-12); 3 dimensions:
    8 nodes, [-7.5, 7.5]; 4 dimensions: 8 nodes on panels <= 2 over [-7, 7] (~1e-8)."""
    if r <= 2:
        return _Rule(gl_nodes or _GL_NODES, u_max or _U_MAX, _PANEL_MAX)
    if r == 3:
        return _Rule(gl_nodes or 8, u_max or 7.5, _PANEL_MAX)
    return _Rule(gl_nodes or 8, u_max or 7.0, 2.0)


def _expect(
    fn: Callable[[np.ndarray], np.ndarray],
    K: np.ndarray,
    kinks: tuple[float, ...],
    scale: float,
    gl_nodes: int | None,
    fine: bool = False,
    u_max: float | None = None,
    hermite: Callable[[float], int | None] | None = None,
) -> np.ndarray:
    """``hermite``: for an integrand analytic in a strip around the real axis, maps the
    largest coefficient ``|L_kj|`` of a variable to the Gauss-Hermite node count that
    integrates it to the engine's accuracy (None: not enough); see :func:`_hermite_rule`."""
    B, d, _ = K.shape
    L = _factor(K)
    active = np.diagonal(L, axis1=1, axis2=2) > 0
    result: np.ndarray | None = None
    # group covariances by which components carry their own integration variable
    patterns, inverse = np.unique(active, axis=0, return_inverse=True)
    for p, pattern in enumerate(patterns):
        idx = np.nonzero(inverse.reshape(-1) == p)[0]
        dims = tuple(int(j) for j in np.nonzero(pattern)[0])
        Lp = L[idx][:, :, list(dims)]  # (b, d, r): z = Lp u
        if not kinks and math.isinf(scale):
            vals = _hermite(fn, Lp, len(dims), fine)
        else:
            rule = _default_rule(len(dims), gl_nodes, u_max)
            rule = rule.refined() if fine else rule
            vals = _smooth_or_composite(fn, Lp, kinks, scale, rule, None if fine else hermite)
        if result is None:
            result = np.zeros((B,) + vals.shape[1:])
        result[idx] = vals
    assert result is not None
    return result


def _hermite(
    fn: Callable[[np.ndarray], np.ndarray], L: np.ndarray, r: int, fine: bool
) -> np.ndarray:
    """Tensor Gauss-Hermite for polynomial integrands (exact up to degree 2n - 1 per axis)."""
    if r == 0:
        return _evaluate(fn, L, np.zeros((1, 1, 0)), np.ones((1, 1)))
    x, w = _gauss_hermite(24 if fine else 16)
    grids = np.meshgrid(*([x] * r), indexing="ij")
    u = np.stack([g.reshape(-1) for g in grids], axis=-1)[None]
    wts = np.prod(np.meshgrid(*([w] * r), indexing="ij"), axis=0).reshape(1, -1)
    return _evaluate(fn, L, u, wts)


_HERMITE_LADDER = (6, 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64)
_HERMITE_TOL = 1e-12
_HERMITE_CACHE: dict[tuple, int | None] = {}
_HERMITE_REFS: dict[int, Activation] = {}


def _hermite_rule(act: Activation, orders: Sequence[int]) -> Callable[[float], int | None] | None:
    """Node counts for tensor Gauss-Hermite on products of ``sigma^{(k)}``, ``k in orders``.

    For a smooth activation the integrand along one variable ``u_j`` is a product of
    ``sigma^{(k)}(L_kj u_j + c)``.  Gauss-Hermite converges geometrically when ``sigma`` is
    analytic in a strip and the strip, in ``u``, is wide (``scale/|L_kj|`` large), and then
    needs far fewer nodes than the composite rule, which must resolve the Gaussian weight
    itself.  The node count is not guessed: for a coefficient ``a`` (rounded up on a 5% ladder;
    the error grows with ``a``) the smallest ``n`` on a ladder is taken for which
    ``<sigma^{(k)}(a u + c)^4>`` at shifts ``c = 0, scale/2, scale`` match the refined composite
    rule (error ~1e-15) to ``1e-12`` relative for every ``k``; None when no ``n <= 64`` does.
    Returns None (use the composite rule) for kinked, polynomial or scale-invariant
    activations.
    """
    if act.kinks or not math.isfinite(act.scale) or act.polynomial_degree is not None:
        return None
    ks = tuple(sorted({k for k in orders if k >= 0}))
    if not ks or not all(act.has_derivative(k) for k in ks):
        return None
    _HERMITE_REFS[id(act)] = act  # keep id(act) from being reused while cached

    def nodes(a: float) -> int | None:
        step = round(math.ceil(math.log(max(a, 1e-6)) / math.log(1.05)))
        key = (id(act), ks, step)
        if key not in _HERMITE_CACHE:
            _HERMITE_CACHE[key] = _hermite_nodes(act, ks, 1.05**step)
        return _HERMITE_CACHE[key]

    return nodes


def _hermite_nodes(act: Activation, ks: tuple[int, ...], a: float) -> int | None:
    shifts = np.array([0.0, 0.5, 1.0]) * act.scale

    def tests(u: np.ndarray) -> np.ndarray:  # (..., Q) -> (..., Q, len(ks) * 3)
        z = a * u[..., None] + shifts
        return np.concatenate([act.derivative(z, k) ** 4 for k in ks], axis=-1)

    rule = _default_rule(1, None).refined()
    ref = _composite(lambda z: tests(z[..., 0] / a), np.array([[[a]]]), (), act.scale, rule)[0]
    for n in _HERMITE_LADDER:
        x, w = _gauss_hermite(n)
        if np.all(np.abs(w @ tests(x) - ref) <= _HERMITE_TOL * np.maximum(np.abs(ref), 1e-300)):
            return n
    return None


def _smooth_or_composite(
    fn: Callable[[np.ndarray], np.ndarray],
    L: np.ndarray,
    kinks: tuple[float, ...],
    scale: float,
    rule: _Rule,
    hermite: Callable[[float], int | None] | None,
) -> np.ndarray:
    """Tensor Gauss-Hermite where ``hermite`` says it is accurate and cheaper than the
    composite rule (per covariance), the composite rule elsewhere."""
    if hermite is None or kinks:
        return _composite(fn, L, kinks, scale, rule)
    b, d, r = L.shape
    coef = np.max(np.abs(L), axis=1)  # (b, r)
    counts = np.array([[hermite(float(c)) or 0 for c in row] for row in coef], dtype=int)
    composite = np.prod(_composite_panels(coef, scale, rule) * rule.nodes, axis=1)
    use = np.all(counts > 0, axis=1) & (np.prod(counts, axis=1) < composite)
    out: np.ndarray | None = None
    groups = [(np.nonzero(~use)[0], None)] if np.any(~use) else []
    if np.any(use):
        keys, inv = np.unique(counts[use], axis=0, return_inverse=True)
        groups += [(np.nonzero(use)[0][inv.reshape(-1) == g], key) for g, key in enumerate(keys)]
    for sel, key in groups:
        if key is None:
            vals = _composite(fn, L[sel], kinks, scale, rule)
        else:
            vals = _tensor_hermite(fn, L[sel], tuple(int(n) for n in key))
        if out is None:
            out = np.zeros((b,) + vals.shape[1:])
        out[sel] = vals
    assert out is not None
    return out


def _tensor_hermite(
    fn: Callable[[np.ndarray], np.ndarray], L: np.ndarray, counts: tuple[int, ...]
) -> np.ndarray:
    """Tensor Gauss-Hermite with ``counts[j]`` nodes on variable ``j``, chunked over ``L``."""
    rules = [_gauss_hermite(n) for n in counts]
    grids = np.meshgrid(*[x for x, _ in rules], indexing="ij")
    u = np.stack([g.reshape(-1) for g in grids], axis=-1)[None]
    w = np.prod(np.meshgrid(*[wt for _, wt in rules], indexing="ij"), axis=0).reshape(1, -1)
    step = max(1, _POINTS_PER_CHUNK // u.shape[1])
    parts = [_evaluate(fn, L[s : s + step], u, w) for s in range(0, L.shape[0], step)]
    return np.concatenate(parts, axis=0)


def _composite_panels(coef: np.ndarray, scale: float, rule: _Rule) -> np.ndarray:
    """Panels per variable so that each is at most ``min(panel, scale/|L_kj|)`` wide in u."""
    width = np.minimum(rule.panel, scale / np.maximum(coef, 1e-300))
    return np.minimum(np.ceil(2.0 * rule.u_max / width), _MAX_PANELS)


def _composite(
    fn: Callable[[np.ndarray], np.ndarray],
    L: np.ndarray,
    kinks: tuple[float, ...],
    scale: float,
    rule: _Rule,
) -> np.ndarray:
    """Nested composite Gauss-Legendre over the active variables, kinks as breakpoints."""
    b, d, r = L.shape
    if r == 0:
        return _evaluate(fn, L, np.zeros((b, 1, 0)), np.ones((b, 1)))
    # level of each component: the last active variable it depends on
    nz = np.abs(L) > 0
    comp_level = np.full(d, -1)
    for k in range(d):
        cols = np.nonzero(nz[:, k, :].any(axis=0))[0]
        comp_level[k] = cols.max() if cols.size else -1
    # panels per level from the largest coefficient of any component on that variable
    coef = np.max(np.abs(L), axis=1)  # (b, r)
    panels = _composite_panels(coef, scale, rule)
    # in 3-4 dimensions keep the tensor grid within budget (the error estimate shows the cost)
    per_cov = np.prod(panels * rule.nodes, axis=1)
    shrink = np.maximum(1.0, (per_cov / _MAX_NODES_PER_COVARIANCE) ** (1.0 / r))
    panels = np.maximum(np.ceil(panels / shrink[:, None]), 4).astype(int)
    # bucket covariances by their panel counts (rounded up on a 1.25x ladder) so each bucket
    # shares a grid size
    ladder = np.unique(np.ceil(4 * 1.25 ** np.arange(40)).astype(int))
    buckets = ladder[np.searchsorted(ladder, panels)]
    keys, inv = np.unique(buckets, axis=0, return_inverse=True)
    out: np.ndarray | None = None
    for q, key in enumerate(keys):
        sel = np.nonzero(inv.reshape(-1) == q)[0]
        grid = _Grid(L[sel], comp_level, kinks, tuple(int(v) for v in key), rule)
        vals = grid.integrate(fn)
        if out is None:
            out = np.zeros((b,) + vals.shape[1:])
        out[sel] = vals
    assert out is not None
    return out


_SHADOW = np.array([0.0, -0.5, 0.5, -1.0, 1.0, -2.0, 2.0, -4.0, 4.0, -8.0, 8.0])
_SHARP = 0.1  # a smoothed kink narrower than 0.1 panel widths gets shadow breakpoints


class _Grid:
    """Nested composite rule for one bucket of covariances, evaluated in memory-bounded chunks.

    Level ``j`` integrates ``u_j``.  A component ``z_k`` whose last variable is ``u_j`` has its
    kinks as exact breakpoints there.  Where ``z_k`` also depends on an outer variable ``u_i``
    only weakly through the inner ones (nearly collinear inputs), the outer integrand has a
    smoothed kink of width ``s = |L_{k,>i}|/|L_ki|``; "shadow" breakpoints at multiples of
    ``s`` around it resolve that sharp transition.
    """

    def __init__(
        self,
        L: np.ndarray,
        comp_level: np.ndarray,
        kinks: tuple[float, ...],
        panels: tuple[int, ...],
        rule: _Rule,
    ) -> None:
        self.L, self.kinks, self.panels, self.rule = L, kinks, panels, rule
        r = L.shape[2]
        self.own = [np.nonzero(comp_level == j)[0] for j in range(r)]
        self.shadow: list[np.ndarray] = []
        for j in range(r):
            comps = [k for k in range(L.shape[1]) if comp_level[k] > j]
            if kinks and comps:
                lkj = np.abs(L[:, comps, j])
                inner = np.sqrt(np.sum(L[:, comps, j + 1 :] ** 2, axis=2))
                sharp = (lkj > 0) & (inner < _SHARP * rule.panel * lkj)
                comps = [c for i, c in enumerate(comps) if np.any(sharp[:, i])]
            self.shadow.append(np.array(comps if kinks else [], dtype=int))
        self.sizes = [
            (panels[j] + len(kinks) * (len(self.own[j]) + len(_SHADOW) * len(self.shadow[j])))
            * rule.nodes
            for j in range(r)
        ]

    def integrate(self, fn: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        b = self.L.shape[0]
        u = np.zeros((b, 1, 0))
        w = np.ones((b, 1))
        return self._level(fn, np.arange(b), u, w, 0)

    def _level(
        self, fn: Callable, rows: np.ndarray, u: np.ndarray, w: np.ndarray, j: int
    ) -> np.ndarray:
        r = self.L.shape[2]
        Lc = self.L[rows]
        if j == r:
            return _evaluate(fn, Lc, u, w)
        remaining = math.prod(self.sizes[j:])
        b, q = w.shape
        if b * q * remaining > _POINTS_PER_CHUNK and (b > 1 or q > 1):
            # split the covariances, or else the outer nodes, and add the partial integrals
            if b > 1:
                step = max(1, _POINTS_PER_CHUNK // (q * remaining))
                parts = [
                    self._level(fn, rows[s : s + step], u[s : s + step], w[s : s + step], j)
                    for s in range(0, b, step)
                ]
                return np.concatenate(parts, axis=0)
            step = max(1, _POINTS_PER_CHUNK // remaining)
            return sum(  # type: ignore[return-value]
                self._level(fn, rows, u[:, s : s + step], w[:, s : s + step], j)
                for s in range(0, q, step)
            )
        nodes, wts = self._rule_at(Lc, u, j)
        q_new = nodes.shape[-1]
        u = np.concatenate([np.repeat(u, q_new, axis=1), nodes.reshape(b, q * q_new, 1)], axis=-1)
        w = (w[:, :, None] * wts).reshape(b, q * q_new)
        return self._level(fn, rows, u, w, j + 1)

    def _rule_at(self, Lc: np.ndarray, u: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray]:
        U = self.rule.u_max
        base = np.linspace(-U, U, self.panels[j] + 1)
        edges = [np.broadcast_to(base, u.shape[:2] + base.shape)]
        for comps, spread in ((self.own[j], None), (self.shadow[j], _SHADOW)):
            if not (self.kinks and comps.size):
                continue
            # z_k = sum_{i<j} L[k, i] u_i + L[k, j] u_j (+ inner) = c
            partial = np.einsum("bqi,bki->bqk", u, Lc[:, comps, :j])
            lkj = Lc[:, comps, j][:, None, :]
            safe = np.where(lkj != 0, lkj, 1.0)
            for c in self.kinks:
                at = np.where(lkj != 0, (c - partial) / safe, U)
                if spread is None:
                    edges.append(at)
                else:
                    width = np.sqrt(np.sum(Lc[:, comps, j + 1 :] ** 2, axis=2))[:, None, :]
                    width = width / np.abs(safe)
                    edges.append(
                        (at[..., None] + width[..., None] * spread).reshape(
                            at.shape[0], at.shape[1], -1
                        )
                    )
        all_edges = np.clip(np.concatenate(edges, axis=-1), -U, U)
        return _panel_rule(np.sort(all_edges, axis=-1), self.rule.nodes)


def _evaluate(
    fn: Callable[[np.ndarray], np.ndarray], L: np.ndarray, u: np.ndarray, w: np.ndarray
) -> np.ndarray:
    """``sum_q w_q fn(L u_q)`` for nodes ``u`` (b or 1, Q, r) and weights (b or 1, Q)."""
    z = np.einsum("bkr,bqr->bqk", L, np.broadcast_to(u, (L.shape[0],) + u.shape[1:]))
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        f = np.asarray(fn(z), dtype=np.float64)
    if f.shape[:2] != z.shape[:2] or f.ndim > 3:
        raise ValueError(f"integrand returned shape {f.shape}, expected {z.shape[:2]} + (m,)")
    wb = np.broadcast_to(w, z.shape[:2])
    if not np.all(np.isfinite(f[wb > 0])):
        raise FloatingPointError("the integrand is not finite at some quadrature nodes")
    if f.ndim == 2:
        return np.einsum("bq,bq->b", wb, np.where(wb > 0, f, 0.0))
    return np.einsum("bq,bqm->bm", wb, np.where((wb > 0)[..., None], f, 0.0))


# --------------------------------------------------------------------------------------------
# Products of an activation and its derivatives
# --------------------------------------------------------------------------------------------


def _check_products(act: Activation, products: Sequence[Sequence[Factor]], d: int) -> None:
    if not products:
        raise ValueError("products must contain at least one product of factors")
    for prod in products:
        for a, k in prod:
            if not 0 <= a < d:
                raise ValueError(f"factor sample index {a} outside 0..{d - 1}")
            if k < -1 or k > 3:
                raise ValueError(f"derivative order {k} outside -1..3 (-1 means z itself)")
            if k >= 0 and not act.has_derivative(k):
                raise ValueError(f"activation {act.name!r} has no ordinary derivative of order {k}")
            if k >= 2 and act.kinks and act.polynomial_degree is None:
                raise ValueError(
                    f"sigma^({k}) of {act.name!r} contains a delta function at its kink; "
                    "use the (zz - K) moment forms instead"
                )


def _product_fn(act: Activation, products: Sequence[Sequence[Factor]]) -> Callable:
    needed = sorted({f for prod in products for f in prod})
    samples = sorted({a for a, _ in needed})

    def fn(z: np.ndarray) -> np.ndarray:
        cache: dict[Factor, np.ndarray] = {}
        for a in samples:
            values = act.derivatives_at(z[..., a], [k for b, k in needed if b == a and k >= 0])
            cache.update({(a, k): v for k, v in values.items()})
            cache[(a, -1)] = z[..., a]
        out = np.ones(z.shape[:-1] + (len(products),))
        for m, prod in enumerate(products):
            for f in prod:
                out[..., m] *= cache[f]
        return out

    return fn


def moments(
    act: Activation,
    K: np.ndarray,
    products: Sequence[Sequence[Factor]],
    *,
    error: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    r"""Expectations of products of sigma, its derivatives and z under covariances ``K``.

    Parameters
    ----------
    act : Activation
    K : array_like, shape (..., d, d)
        Covariances over the ``d <= 4`` distinct samples involved.
    products : sequence of sequences of (a, k)
        Each product is a list of factors ``(a, k)`` meaning ``sigma^{(k)}(z_a)`` (``k = 0..3``)
        or ``z_a`` (``k = -1``); e.g. ``[[(0, 0), (1, 0)], [(0, 1), (1, 1)]]`` asks for
        ``<sigma_0 sigma_1>`` and ``<sigma'_0 sigma'_1>``.
    error : bool
        Also return an error estimate (zero for closed forms).

    Returns
    -------
    ndarray, shape (..., len(products))

    Examples
    --------
    >>> from pdlt.activations import activation
    >>> K = [[1.0, 0.5], [0.5, 1.0]]
    >>> float(moments(activation("relu"), K, [[(0, 0), (1, 0)]])[0])  # arc-cosine kernel
    0.3044...
    """
    Kb, batch = _as_covariances(K)
    d = Kb.shape[-1]
    _check_products(act, products, d)
    if Kb.shape[0] == 0:  # an empty batch of covariances
        value = err = np.empty((0, len(products)))
    elif act.homogeneous is not None and d <= 2 and act.polynomial_degree is None:
        value = _polar(act, Kb, products)
        err = np.zeros_like(value)
    elif act.polynomial_degree is not None:
        value = _polynomial(act, Kb, products)
        err = np.zeros_like(value)
    elif d >= 3 and not error and _is_step_family(act):
        value = _step_family(act, Kb, products)
        err = None
    elif d >= 3 and not error:
        value = _conditioned(act, Kb, products, _eliminated)
        err = None
    elif d == 2 and not error:
        value = _conditioned(act, Kb, products, _general)
        err = None
    else:
        res = expect(_product_fn(act, products), Kb, kinks=act.kinks, scale=act.scale, error=error)
        value, err = res if error else (res, None)
    shape = batch + (len(products),)
    if error:
        return value.reshape(shape), np.asarray(err).reshape(shape)
    return value.reshape(shape)


def _conditioned(
    act: Activation,
    K: np.ndarray,
    products: Sequence[Sequence[Factor]],
    general: Callable[[Activation, np.ndarray, Sequence[Sequence[Factor]]], np.ndarray],
) -> np.ndarray:
    """Two to four samples of a smooth activation by rotated sequential conditioning
    (:mod:`pdlt._gaussian_four`; fewer samples are padded with factor-free ones of zero
    variance, which cost one node) where its self-tested rules reach the accuracy; ``general``
    for the rest."""
    if not _gaussian_four.covers(act):
        return general(act, K, products)
    B, d, _ = K.shape
    K4 = np.zeros((B, 4, 4))
    K4[:, :d, :d] = K
    slots = []
    for prod in products:
        per: list[list[int]] = [[] for _ in range(4)]
        for a, k in prod:
            per[a].append(k)
        slots.append(tuple(tuple(sorted(ks)) for ks in per))
    value, covered = _gaussian_four.four_point(act, K4, slots)
    if not np.all(covered):
        value[~covered] = general(act, K[~covered], products)
    return value


def _general(act: Activation, K: np.ndarray, products: Sequence[Sequence[Factor]]) -> np.ndarray:
    return expect(_product_fn(act, products), K, kinks=act.kinks, scale=act.scale)


_TABLE_NODES = 12
_MIN_CONDITIONAL_STD = 0.05


def _eliminated(act: Activation, K: np.ndarray, products: Sequence[Sequence[Factor]]) -> np.ndarray:
    r"""``<prod_a f_a(z_a)>`` in ``d >= 3`` dimensions with one dimension done in advance.

    The sample ``e`` with the largest conditional standard deviation ``s`` given the others is
    split as ``z_e = mu + s u`` (``mu`` a linear function of the other components); its factor
    is replaced by the Gaussian-smoothed ``g(mu) = <f_e(mu + s u)>_u``, an entire function
    tabulated by piecewise Chebyshev interpolation (panels of width ``s/2``, 12 nodes: error
    ~1e-11).  What remains is a ``(d - 1)``-dimensional integral over the other samples, on
    one grid shared by all ``products``.  Falls back to the full rule when every conditional
    deviation is tiny (nearly dependent samples).

    Returns
    -------
    ndarray, shape (B, len(products))
    """
    B, d, _ = K.shape
    out = np.empty((B, len(products)))
    # conditional variance of each sample given the rest: 1 / (K^{-1})_aa
    with np.errstate(all="ignore"):
        prec = np.diagonal(np.linalg.pinv(K, hermitian=True), axis1=1, axis2=2)
        cond = np.where(prec > 0, 1.0 / prec, 0.0)
        e_all = np.argmax(cond / np.maximum(np.diagonal(K, axis1=1, axis2=2), 1e-300), axis=1)
    ok = cond[np.arange(B), e_all] > _MIN_CONDITIONAL_STD**2 * K[np.arange(B), e_all, e_all]
    lam = np.linalg.eigvalsh(K)
    ok &= lam[:, 0] > 1e-10 * np.maximum(lam[:, -1], 1e-300)  # singular K: the full rule
    if np.any(~ok):
        fn = _product_fn(act, products)
        out[~ok] = expect(fn, K[~ok], kinks=act.kinks, scale=act.scale)
    for e in np.unique(e_all[ok]):
        rows = np.nonzero(ok & (e_all == e))[0]
        out[rows] = _eliminate_one(act, K[rows], products, int(e), cond[rows, e])
    return out


def _eliminate_one(
    act: Activation,
    K: np.ndarray,
    products: Sequence[Sequence[Factor]],
    e: int,
    cond_var: np.ndarray,
) -> np.ndarray:
    B, d, _ = K.shape
    s = np.sqrt(cond_var)  # (B,)
    o = [a for a in range(d) if a != e]
    Koo = K[:, o][:, :, o]
    # mu = E[z_e | z_o] = w . z_o
    w = np.linalg.solve(Koo, K[:, o, e][..., None])[..., 0]  # (B, d-1)
    var_mu = np.maximum(K[:, e, e] - cond_var, 0.0)
    # table of g(mu) on [-R, R], R covering the Gaussian range of mu
    R = 9.0 * np.sqrt(var_mu) + 1e-12
    width = 0.5 * np.minimum(s, act.scale)
    P = int(np.clip(np.ceil(np.max(2 * R / width)), 1, 4096))
    x = np.cos(np.pi * (np.arange(_TABLE_NODES) + 0.5) / _TABLE_NODES)  # Chebyshev points
    h = 2 * R / P  # (B,)
    centers = -R[:, None] + h[:, None] * (np.arange(P) + 0.5)  # (B, P)
    mu = centers[:, :, None] + 0.5 * h[:, None, None] * x  # (B, P, m)
    Tm = np.cos(np.outer(np.arange(_TABLE_NODES), np.arccos(x)))  # (k, m)
    # one table per distinct set of factors at e; the other factors per product
    pos = {a: i for i, a in enumerate(o)}
    at_e = [tuple(sorted(k for a, k in prod if a == e)) for prod in products]
    tables = sorted(set(at_e))
    which = [tables.index(t) for t in at_e]
    others = [[(pos[a], k) for a, k in prod if a != e] for prod in products]
    coefs = []
    for t in tables:
        vals = _smoothed(act, [(0, k) for k in t], mu.reshape(B, -1), s).reshape(mu.shape)
        coef = 2.0 / _TABLE_NODES * np.einsum("bpm,km->bpk", vals, Tm)
        coef[..., 0] *= 0.5
        coefs.append(coef)
    out = np.empty((B, len(products)))
    # the integration runs over (z_o, mu): mu = w . z_o is a dependent last component, so the
    # rule sees how fast the tabulated factor varies along each variable as well
    Kaug = np.zeros((B, d, d))
    Kaug[:, : d - 1, : d - 1] = Koo
    Kaug[:, : d - 1, d - 1] = Kaug[:, d - 1, : d - 1] = np.einsum("bij,bj->bi", Koo, w)
    Kaug[:, d - 1, d - 1] = var_mu
    hermite = _hermite_rule(act, [k for prod in products for _, k in prod])
    for b in range(B):  # one covariance per call: the tables belong to it

        def fn(z: np.ndarray, b: int = b) -> np.ndarray:
            t = (z[..., d - 1] + R[b]) / h[b]
            idx = np.clip(np.floor(t).astype(int), 0, P - 1)
            y = np.clip(2 * (t - idx) - 1, -1.0, 1.0)
            g = [
                np.polynomial.chebyshev.chebval(y, c[b][idx].transpose(2, 0, 1), tensor=False)
                for c in coefs
            ]
            cache: dict[Factor, np.ndarray] = {}
            res = []
            for tab, fs in zip(which, others, strict=True):
                r = g[tab]
                for a, k in fs:
                    if (a, k) not in cache:
                        cache[(a, k)] = z[..., a] if k == -1 else act.derivative(z[..., a], k)
                    r = r * cache[(a, k)]
                res.append(r)
            return np.stack(res, axis=-1)

        out[b] = _expect(fn, Kaug[b : b + 1], act.kinks, act.scale, None, hermite=hermite)[0]
    return out


def _smoothed(act: Activation, local: list[Factor], mu: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``g(mu) = <prod_k sigma^{(k)}(mu + s u)>_u`` at nodes ``mu`` (B, Q), one deviation per
    row: composite Gauss-Legendre in ``u`` with the kinks (at ``u = (c - mu)/s``) as
    breakpoints."""
    if not local:
        return np.ones_like(mu)
    B, Q = mu.shape
    panel = np.minimum(_PANEL_MAX, act.scale / s)  # (B,)
    P = int(np.clip(np.ceil(np.max(2 * _U_MAX / panel)), 12, _MAX_PANELS))
    out = np.empty((B, Q))
    fn = _product_fn(act, [local])
    step = max(1, _POINTS_PER_CHUNK // ((P + len(act.kinks)) * _GL_NODES))
    base = np.linspace(-_U_MAX, _U_MAX, P + 1)
    for b in range(B):
        for q0 in range(0, Q, step):
            m = mu[b, q0 : q0 + step]
            edges = [np.broadcast_to(base, (len(m), P + 1))]
            edges += [np.clip((c - m) / s[b], -_U_MAX, _U_MAX)[:, None] for c in act.kinks]
            nodes, w = _panel_rule(np.sort(np.concatenate(edges, axis=1), axis=1), _GL_NODES)
            vals = fn((m[:, None] + s[b] * nodes)[..., None])[..., 0]
            out[b, q0 : q0 + step] = np.sum(w * vals, axis=1)
    return out


def _degree(act: Activation, k: int) -> int:
    if k == -1:
        return 1
    deg = act.polynomial_degree if act.polynomial_degree is not None else 1
    return max(deg - k, 0)


def _polynomial(act: Activation, K: np.ndarray, products: Sequence[Sequence[Factor]]) -> np.ndarray:
    """Exact Gauss-Hermite for polynomial integrands (degree per variable <= 2n - 1)."""
    total = max(sum(_degree(act, k) for _, k in prod) for prod in products)
    n = total // 2 + 1
    x, w = _gauss_hermite(n)
    L = _factor(K)
    d = K.shape[-1]
    grids = np.meshgrid(*([x] * d), indexing="ij")
    u = np.stack([g.reshape(-1) for g in grids], axis=-1)[None]
    wts = np.prod(np.meshgrid(*([w] * d), indexing="ij"), axis=0).reshape(1, -1)
    return _evaluate(_product_fn(act, products), L, u, wts)


def _homogeneous_degree(act: Activation, prod: Sequence[Factor]) -> int:
    """Degree of a product: ``z`` has degree 1 and ``sigma^{(k)}`` degree ``p - k``."""
    assert act.homogeneous is not None
    return sum(1 if k == -1 else act.homogeneous - k for _, k in prod)


def _polar(act: Activation, K: np.ndarray, products: Sequence[Sequence[Factor]]) -> np.ndarray:
    r"""Exact expectations for positively homogeneous sigma in one or two dimensions.

    Covers the scale-invariant family (degree 1) and step functions (degree 0).

    With ``z = L u`` and ``u = r (cos phi, sin phi)``, a product of degree ``p`` satisfies
    ``F(r w) = r^p F(w)``, so ``<F> = E[r^p] (1/2pi) int F(L w(phi)) dphi`` with
    ``E[r^p] = 2^{p/2} Gamma(p/2 + 1)``.  Between the kink angles (where ``(L w)_a = 0``) the
    angular integrand is a trigonometric polynomial, integrated by Gauss-Legendre to machine
    precision (spec/02 §11.2).  In one dimension the "angle" takes the two values +-1.
    """
    fn = _product_fn(act, products)
    degrees = np.array([_homogeneous_degree(act, p) for p in products], dtype=np.float64)
    L = _factor(K)
    B, d, _ = K.shape
    if d == 1:
        u = np.array([[[1.0], [-1.0]]])
        f = _evaluate_raw(fn, L, u)  # (B, 2, m)
        radial = 2.0 ** (degrees / 2) * special.gamma((degrees + 1) / 2) / math.sqrt(math.pi)
        return 0.5 * (f[:, 0] + f[:, 1]) * radial
    # kink angles of each component: L[a,0] cos + L[a,1] sin = 0
    ang = np.arctan2(-L[:, :, 0], L[:, :, 1]) % math.pi  # (B, 2), in [0, pi)
    edges = np.concatenate(
        [np.zeros((B, 1)), ang, ang + math.pi, np.full((B, 1), 2 * math.pi)], axis=1
    )
    edges = np.sort(edges, axis=1)
    x, w = _gauss_legendre(24)
    lo, hi = edges[:, :-1, None], edges[:, 1:, None]
    half = 0.5 * (hi - lo)
    phi = ((lo + hi) * 0.5 + half * x).reshape(B, -1)
    wts = (half * w).reshape(B, -1) / (2 * math.pi)
    u = np.stack([np.cos(phi), np.sin(phi)], axis=-1)
    f = _evaluate_raw(fn, L, u)
    radial = 2.0 ** (degrees / 2) * special.gamma(degrees / 2 + 1)
    return np.einsum("bq,bqm->bm", wts, f) * radial


def _evaluate_raw(fn: Callable, L: np.ndarray, u: np.ndarray) -> np.ndarray:
    z = np.einsum("bkr,bqr->bqk", L, np.broadcast_to(u, (L.shape[0],) + u.shape[1:]))
    return np.asarray(fn(z), dtype=np.float64)


# --------------------------------------------------------------------------------------------
# The step family in three and four dimensions: reduction to orthant probabilities
# --------------------------------------------------------------------------------------------

Atom = tuple[int, int]
"""``(p, q)``: the function ``z^p H(z)^q`` of one sample (``H`` the unit step)."""

_ORTHANT_MIN_EIGEN = 1e-6  # smallest eigenvalue of the correlation matrix for the closed form
_ORTHANT_PANELS = (8, 12, 16, 24, 32, 40)  # graded panels toward the end of the Plackett path
_ORTHANT_NODES = 8


def _is_step_family(act: Activation) -> bool:
    """Positively homogeneous of degree 0 or 1 with its only kink at 0 (ReLU, leaky ReLU, the
    scale-invariant family, perceptron, sign): every factor is ``a + b z`` plus ``c + e z``
    times a step, and the orthant method applies."""
    return act.homogeneous in (0, 1) and act.kinks == (0.0,) and act.polynomial_degree is None


def _atoms(act: Activation, k: int) -> dict[Atom, float]:
    """``sigma^{(k)}`` (``k = -1``: ``z``) as a combination of ``z^p H(z)^q``.

    A positively homogeneous ``f`` of degree 1 is ``-f(-1) z + (f(1) + f(-1)) z H(z)``, one of
    degree 0 is ``f(-1) + (f(1) - f(-1)) H(z)``.
    """
    if k == -1:
        return {(1, 0): 1.0}
    assert act.homogeneous is not None
    f_plus, f_minus = float(act.derivative(1.0, k)), float(act.derivative(-1.0, k))
    if act.homogeneous - k == 1:
        atoms = {(1, 0): -f_minus, (1, 1): f_plus + f_minus}
    else:
        atoms = {(0, 0): f_minus, (0, 1): f_plus - f_minus}
    return {a: c for a, c in atoms.items() if c != 0.0}


def _expand(act: Activation, prod: Sequence[Factor], d: int) -> dict[tuple[Atom, ...], float]:
    """A product of factors as ``sum_c c prod_a z_a^{p_a} H(z_a)^{q_a}``: ``{(p, q) per
    sample: c}``."""
    terms: dict[tuple[Atom, ...], float] = {((0, 0),) * d: 1.0}
    for a, k in prod:
        new: dict[tuple[Atom, ...], float] = {}
        for pq, c in terms.items():
            for (p, q), ca in _atoms(act, k).items():
                key = list(pq)
                key[a] = (pq[a][0] + p, max(pq[a][1], q))
                new[tuple(key)] = new.get(tuple(key), 0.0) + c * ca
        terms = new
    return terms


@lru_cache(maxsize=4)
def _graded_rule(panels: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre on ``[0, 1]`` over panels ``[1 - 2^-k, 1 - 2^-(k+1)]``, graded toward 1
    (the end of the Plackett path, where a nearly singular correlation matrix puts its
    square-root behaviour)."""
    edges = np.concatenate([1.0 - 0.5 ** np.arange(panels), [1.0]])
    x, w = _gauss_legendre(m)
    lo, hi = edges[:-1, None], edges[1:, None]
    return ((lo + hi) / 2 + (hi - lo) / 2 * x).reshape(-1), ((hi - lo) / 2 * w).reshape(-1)


_PAIRINGS = np.array([[0, 1, 2, 3], [0, 2, 1, 3], [0, 3, 1, 2]])
_CROSS = ((0, 2, 1, 3), (0, 3, 1, 2), (1, 2, 0, 3), (1, 3, 0, 2))  # (i, j, k, l)


def _orthant4(R: np.ndarray) -> np.ndarray:
    r"""``P(z > 0)`` for correlation matrices ``R`` (B, 4, 4), by Plackett's reduction.

    The variables are paired as ``(0 1)(2 3)`` (after the permutation whose cross
    correlations are smallest); along ``R(t)``, the cross correlations scaled by ``t``,
    ``dP/d rho_ij = phi_2(0, 0; rho_ij) P(z_k, z_l > 0 | z_i = z_j = 0)`` (Price's theorem),
    and at ``t = 0`` the pairs are independent.  With ``theta = asin(t rho_ij)`` the density
    factor is absorbed exactly:

    ``P = P_2(rho_01) P_2(rho_23) + sum_{ij cross} (1/2pi) int_0^{asin rho_ij}
    P_2(c_kl|ij(t)) d theta``,

    ``P_2(c) = 1/4 + asin(c)/2pi`` and ``c_kl|ij`` the partial correlation.  The integrand is
    analytic along the path for positive definite ``R``; a rule graded toward ``t = 1``, with
    panels down to ~1/256 of the smallest eigenvalue, resolves the square-root behaviour there of
    a nearly singular one (accuracy ~1e-13).
    """
    # panels down to ~lambda_min / 256, where a nearly singular R has its square-root feature
    lam = np.maximum(np.linalg.eigvalsh(R)[:, 0], 1e-300)
    need = np.ceil(np.log2(1.0 / lam)) + 8
    ladder = np.array(_ORTHANT_PANELS)
    panels = ladder[np.minimum(np.searchsorted(ladder, need), len(ladder) - 1)]
    out = np.empty(len(R))
    for P in np.unique(panels):
        sel = np.nonzero(panels == P)[0]
        rule = _graded_rule(int(P), _ORTHANT_NODES)
        step = max(1, _POINTS_PER_CHUNK // rule[0].size)  # bounded memory
        for s in range(0, len(sel), step):
            out[sel[s : s + step]] = _plackett(R[sel[s : s + step]], *rule)
    return out


def _plackett(R: np.ndarray, s: np.ndarray, ws: np.ndarray) -> np.ndarray:
    """:func:`_orthant4` on the rule ``(s, ws)`` of ``[0, 1]``."""
    cross = np.abs(R[:, [0, 0, 1, 1, 0, 0, 1, 2, 0, 0, 2, 1], [2, 3, 2, 3, 1, 3, 2, 3, 1, 2, 3, 3]])
    choice = np.argmin(cross.reshape(-1, 3, 4).max(axis=2), axis=1)
    perm = _PAIRINGS[choice]
    R = R[np.arange(len(R))[:, None, None], perm[:, :, None], perm[:, None, :]]
    total = (0.25 + np.arcsin(R[:, 0, 1]) / (2 * math.pi)) * (
        0.25 + np.arcsin(R[:, 2, 3]) / (2 * math.pi)
    )
    within = {frozenset((0, 1)), frozenset((2, 3))}
    for i, j, k, l in _CROSS:
        rho = R[:, i, j]
        top = np.arcsin(rho)
        safe = np.where(rho == 0.0, 1.0, rho)
        t = np.sin(top[:, None] * s) / safe[:, None]  # (B, Q)

        def entry(a: int, b: int, t: np.ndarray = t) -> np.ndarray:
            r = R[:, a, b, None]
            return r if frozenset((a, b)) in within else r * t

        a = entry(i, j)
        inv = 1.0 / (1.0 - a * a)
        ki, kj, li, lj = entry(k, i), entry(k, j), entry(l, i), entry(l, j)
        c_kl = entry(k, l) - (ki * li + kj * lj - a * (ki * lj + kj * li)) * inv
        c_kk = 1.0 - (ki * ki + kj * kj - 2 * a * ki * kj) * inv
        c_ll = 1.0 - (li * li + lj * lj - 2 * a * li * lj) * inv
        c = np.clip(c_kl / np.sqrt(np.maximum(c_kk * c_ll, 1e-300)), -1.0, 1.0)
        total += top / (2 * math.pi) * ((0.25 + np.arcsin(c) / (2 * math.pi)) @ ws)
    return total


def _orthant(S: np.ndarray) -> np.ndarray:
    """``P(z > 0)`` for ``z ~ N(0, S)``, ``S`` (B, n, n) with ``n <= 4``: closed forms up to
    three dimensions (``1/8 + sum asin(rho)/4pi``), :func:`_orthant4` in four."""
    B, n, _ = S.shape
    if n == 0:
        return np.ones(B)
    sd = np.sqrt(np.diagonal(S, axis1=1, axis2=2))
    R = np.clip(S / (sd[:, :, None] * sd[:, None, :]), -1.0, 1.0)
    if n == 4:
        return _orthant4(R)
    iu = np.triu_indices(n, 1)
    return 0.5**n + np.sum(np.arcsin(R[:, iu[0], iu[1]]), axis=1) / (2.0 ** (n - 1) * math.pi)


class _SteinReduction:
    r"""``<prod_a z_a^{p_a} H(z_a)^{q_a}>_K`` in closed form, vectorized over ``K`` (B, d, d).

    Gaussian integration by parts, ``<z_i G> = sum_j K_ij <d_j G>``, lowers the powers; the
    derivative of a step is a delta function, ``<delta(z_j) X> = <X | z_j = 0> / sqrt(2 pi
    K_jj)``, which conditions on ``z_j = 0`` (the covariance becomes a Schur complement).
    Only orthant probabilities of conditional covariances remain (:func:`_orthant`).
    Subproblems are memoized by (conditioned samples, powers).
    """

    def __init__(self, K: np.ndarray) -> None:
        self.K = K
        self.memo: dict[tuple, np.ndarray] = {}
        self.conditioned: dict[frozenset[int], tuple[np.ndarray, np.ndarray]] = {}

    def _given(self, C: frozenset[int]) -> tuple[np.ndarray, np.ndarray]:
        """Covariance given ``z_C = 0`` and the density of ``z_C`` at 0."""
        if C not in self.conditioned:
            K = self.K
            B, d, _ = K.shape
            if not C:
                self.conditioned[C] = (K, np.ones(B))
            else:
                c = sorted(C)
                Kcc = K[:, c][:, :, c]
                Kca = K[:, c, :]
                S = K - np.einsum("bci,bcj->bij", Kca, np.linalg.solve(Kcc, Kca))
                S[:, c, :] = 0.0
                S[:, :, c] = 0.0
                density = 1.0 / np.sqrt((2 * math.pi) ** len(c) * np.linalg.det(Kcc))
                self.conditioned[C] = (S, density)
        return self.conditioned[C]

    def __call__(self, pq: tuple[Atom, ...], C: frozenset[int] = frozenset()) -> np.ndarray:
        key = (C, pq)
        if key in self.memo:
            return self.memo[key]
        S, density = self._given(C)
        active = [a for a in range(len(pq)) if a not in C and pq[a] != (0, 0)]
        if all(pq[a][0] == 0 for a in active):
            value = density * _orthant(S[:, active][:, :, active])
        else:
            i = next(a for a in active if pq[a][0] > 0)
            G = list(pq)
            G[i] = (pq[i][0] - 1, pq[i][1])
            value = np.zeros(len(S))
            for j in active:
                p, q = G[j]
                if p > 0:
                    lower = list(G)
                    lower[j] = (p - 1, q)
                    value = value + S[:, i, j] * p * self(tuple(lower), C)
                elif q:
                    rest = list(G)
                    rest[j] = (0, 0)
                    value = value + S[:, i, j] * self(tuple(rest), C | {j})
        self.memo[key] = value
        return value


def _step_family(
    act: Activation, K: np.ndarray, products: Sequence[Sequence[Factor]]
) -> np.ndarray:
    """:func:`_orthant_moments` where the correlation matrix is well conditioned (smallest
    eigenvalue above 1e-6), :func:`_eliminated` for the nearly singular rest."""
    sd = np.sqrt(np.maximum(np.diagonal(K, axis1=1, axis2=2), 1e-300))
    lam = np.linalg.eigvalsh(K / (sd[:, :, None] * sd[:, None, :]))[:, 0]
    ok = np.all(np.diagonal(K, axis1=1, axis2=2) > 0, axis=1) & (lam > _ORTHANT_MIN_EIGEN)
    out = np.empty((len(K), len(products)))
    if np.any(ok):
        out[ok] = _orthant_moments(act, K[ok], products)
    if np.any(~ok):
        out[~ok] = _eliminated(act, K[~ok], products)
    return out


def _orthant_moments(
    act: Activation, K: np.ndarray, products: Sequence[Sequence[Factor]]
) -> np.ndarray:
    """:func:`moments` for the step family (:func:`_is_step_family`) in closed form: each
    product expanded into ``z^p H^q`` terms, each reduced by :class:`_SteinReduction`.

    Returns
    -------
    ndarray, shape (B, len(products))
    """
    B, d, _ = K.shape
    reduce = _SteinReduction(K)
    out = np.zeros((B, len(products)))
    for m, prod in enumerate(products):
        for pq, c in _expand(act, prod, d).items():
            out[:, m] += c * reduce(pq)
    return out


# --------------------------------------------------------------------------------------------
# Every pair of samples of a kernel matrix
# --------------------------------------------------------------------------------------------

_SERIES_TOL = 1e-10
_SERIES_LADDER = (8, 16, 32, 64, 128, 256)  # 8 << i: the compiled kernels rely on it
_SERIES_FIRST = 64
_SERIES_MAX_STD = 3.0
_SERIES_GL_NODES = 16
_SERIES_U_MAX = 13.0
_SERIES_PAIRS_PER_CHUNK = 16_384
_SERIES_BLOCK_ENTRIES = 65_536
_THREADS = max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))
_SERIES_BLOCK_SHARE = 0.99
# of a two-way cut, the share of the block the calling thread runs: the pool's thread starts
# some 20-50 us later (measured at N = 100: 0.53 beat 0.5 and 0.56 by 3% on smooth flows)
_FIRST_SHARE = 0.53
_COEF_PANELS = 8  # panels per octave of s on which the coefficients are interpolated
_COEF_NODES = 12  # Chebyshev points per panel (doubled while the error estimate is too large)
_COEF_INTERP_MIN = 48  # samples from which interpolating in s beats evaluating at each
_COEF_INTERP_TOL = 1e-12  # largest accepted error estimate, relative to the energy


def pairwise_moments(
    act: Activation, K: np.ndarray, orders: Sequence[tuple[int, int]]
) -> np.ndarray:
    r"""``<sigma^{(i)}(z_a) sigma^{(j)}(z_b)>`` for every ordered pair of samples of a kernel.

    The expectation for the pair ``(a, b)`` is over the 2x2 sub-block of ``K`` (4.118), (8.63).
    All pairs are done at once, by the fastest exact method available:

    * the scale-invariant family (2.13)-(2.14), orders 0 and 1: the closed arc-cosine forms
      (:func:`_arc_cosine`), exact, the diagonal included (5.60)-(5.62);
    * other smooth activations (user callables included): Mehler's formula, the Hermite
      series in the correlation ``rho_ab`` with per-sample coefficients (:func:`_mehler`).
      Each pair is truncated where a rigorous bound on the remaining tail is below 1e-10 of
      the kernel scale ``sqrt(<sigma^{(i)2}>_{K_aa} <sigma^{(j)2}>_{K_bb})``; the diagonal is
      the one-dimensional quadrature on the coefficients' grid (error ~1e-14);
    * everything else -- kinked activations outside that family, polynomials, samples of zero
      variance at a kink, and pairs the series does not cover (a variance above
      ``(3 scale)^2``, or a correlation too close to +-1 for the series to converge within
      256 terms) -- goes through :func:`moments` on its 1x1 or 2x2 sub-blocks, with the
      accuracy stated there (1e-10 relative for smooth, 1e-8 for kinked integrands).

    Parameters
    ----------
    act : Activation
    K : array_like, shape (N, N)
        Symmetric kernel; each 2x2 sub-block must be positive semidefinite.
    orders : sequence of (int, int)
        Derivative orders ``(i, j)``, each ``0..3``, of the factors at ``a`` and at ``b``.

    Returns
    -------
    ndarray, shape (len(orders), N, N)
        ``[k, a, b] = <sigma^{(i_k)}_a sigma^{(j_k)}_b>``; the diagonal is the one-dimensional
        ``<sigma^{(i)} sigma^{(j)}>_{K_aa}``.
    """
    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"K must have shape (N, N), got {K.shape}")
    N = K.shape[0]
    orders = [(int(i), int(j)) for i, j in orders]
    _check_products(act, [[(0, i), (1, j)] for i, j in orders], 2)
    var = np.diag(K).copy()
    std = np.sqrt(np.maximum(var, 0.0))
    with np.errstate(divide="ignore"):
        inv = np.where(std > 0, 1.0 / std, 0.0)
    if act.scale_invariant is not None and {i for key in orders for i in key} <= {0, 1}:
        out = _arc_cosine(act, orders, K, var)
        zero = std == 0  # sigma' at a kink with zero variance: left to the quadrature
        if not np.any(zero):
            return out
        out[:, zero, :] = np.nan
        out[:, :, zero] = np.nan
    else:
        _check_pairs(K, var)
        if (
            N > 1
            and act.smooth
            and act.polynomial_degree is None
            and act.homogeneous is None
            and min(k for key in orders for k in key) >= 0  # z itself (k = -1): quadrature
        ):
            rho = np.clip(K * np.multiply.outer(inv, inv), -1.0, 1.0)
            out = _mehler(act, orders, std, rho)
        else:
            out = np.full((len(orders), N, N), np.nan)
    idx = np.arange(N)
    lone = np.nonzero(np.isnan(out[:, idx, idx]).any(axis=0))[0]
    if lone.size:
        prods = [[(0, i), (0, j)] for i, j in orders]
        out[:, lone, lone] = moments(act, var[lone, None, None], prods).T
    # duplicated inputs (K_ab = K_aa = K_bb): z_a = z_b, so the pair's value is the diagonal's
    # one-dimensional one exactly, and duplicated rows of K stay identical to the last bit (a
    # singular kernel stays singular)
    a, b = np.divmod(np.flatnonzero((K == var[:, None]) & (K == var[None, :])), N)
    off = a != b
    out[:, a[off], b[off]] = out[:, a[off], a[off]]
    a, b = np.divmod(np.flatnonzero(np.isnan(out).any(axis=0)), N)  # NaN stays symmetric
    a, b = np.minimum(a, b), np.maximum(a, b)
    keep = a < b
    a, b = np.unique(np.stack([a[keep], b[keep]]), axis=1)
    if a.size:  # (i, j) at (a, b) and (j, i) at (b, a) from one quadrature of the pair
        keys = sorted(set(orders) | {(j, i) for i, j in orders})
        blocks = np.stack([np.stack([K[a, a], K[a, b]], -1), np.stack([K[b, a], K[b, b]], -1)], -2)
        vals = moments(act, blocks, [[(0, i), (1, j)] for i, j in keys])
        for k, (i, j) in enumerate(orders):
            out[k, a, b] = vals[:, keys.index((i, j))]
            out[k, b, a] = vals[:, keys.index((j, i))]
    return out


def _rows_per_block(N: int) -> int:
    """Rows of an (N, N) matrix per block, so that a block (~65k entries) stays in cache."""
    return max(1, _SERIES_BLOCK_ENTRIES // max(N, 1))


def _check_pairs(K: np.ndarray, var: np.ndarray) -> None:
    """Check that ``K`` is finite and symmetric and every 2x2 sub-block positive semidefinite."""
    _check_finite_diagonal(K, var)
    scale = max(float(np.max(var)), 1e-300)
    if np.max(np.abs(K - K.T)) > 1e-10 * scale:
        raise ValueError("K must be symmetric")
    det = np.multiply.outer(var, var)
    det -= K * K
    if np.min(det) < -1e-9 * scale * scale:
        raise ValueError("a 2x2 sub-block of K is not positive semidefinite")


def _check_finite_diagonal(K: np.ndarray, var: np.ndarray) -> None:
    if not np.all(np.isfinite(K)):
        raise ValueError("K contains NaN or infinite entries")
    if np.any(var < 0):
        raise ValueError("K has a negative variance on its diagonal; it must be PSD")


def _product_error(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``x y - fl(x y)`` exactly, by Veltkamp splitting (Dekker's two-product)."""

    def split(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = 134217729.0 * v  # 2^27 + 1
        hi = c - (c - v)
        return hi, v - hi

    xh, xl = split(x)
    yh, yl = split(y)
    return ((xh * yh - x * y) + xh * yl + xl * yh) + xl * yl


def arc_cosine_constants(act: Activation) -> tuple[float, float, float]:
    """``(A, B, E)`` with ``<sigma_a sigma_b> = A [(pi - theta) K_ab + r_ab] + B K_ab`` and
    ``<sigma'_a sigma'_b> = E - A theta`` for ``sigma = a_+ z`` (``z >= 0``), ``a_- z``
    (``z < 0``): ``A = (a_+ - a_-)^2/(2 pi)``, ``B = a_+ a_-``, ``E = (a_+^2 + a_-^2)/2``."""
    assert act.scale_invariant is not None
    ap, am = act.scale_invariant
    return (ap - am) ** 2 / (2 * math.pi), ap * am, (ap * ap + am * am) / 2


def arc_cosine_angle(
    Kb: np.ndarray, vr: np.ndarray, vc: np.ndarray, r: np.ndarray, theta: np.ndarray
) -> None:
    r"""The angle ``theta_ab = arccos(rho_ab)`` and ``r_ab = sqrt(K_aa K_bb - K_ab^2) =
    s_a s_b sin(theta_ab)`` of a block of pairs, written into ``r`` and ``theta``.

    ``theta = atan2(r, K_ab)`` needs no normalization (atan2 depends on the ratio only), and
    for nearly collinear pairs (``r^2 < 1e-4 K_aa K_bb``) the cancelling determinant is redone
    with the rounding errors of both products (Dekker's two-product), so ``theta = O(r)``
    keeps its digits.  A duplicated pair (``K_ab = K_aa = K_bb``) gets ``r = theta = 0``
    exactly.  Every operation is symmetric in ``a, b``, so a symmetric ``K`` gives symmetric
    results to the last bit.  The arctangent is torch's vectorized one (SLEEF, 1 ulp; numpy's
    is ~4x slower).

    Parameters
    ----------
    Kb : ndarray, shape (m, n)
        ``K_ab``.
    vr, vc : ndarray, broadcasting to (m, n)
        ``K_aa`` and ``K_bb``: shapes (m, 1) and (1, n) for a block of rows ``a`` and columns
        ``b``, or both (m, 1) for the diagonal-like pairs ``(a, a)``.
    r, theta : ndarray, shape (m, n)
        Outputs (C-contiguous).
    """
    vv = theta  # scratch until the angle is written
    np.multiply(vr, vc, out=vv)
    np.multiply(Kb, Kb, out=r)
    np.subtract(vv, r, out=r)
    near = np.flatnonzero(r < 1e-4 * vv)  # (flat indices: 2-D nonzero is 15x slower)
    if near.size:
        a, b = np.divmod(near, r.shape[1])
        kab, va, vb = Kb[a, b], _entries(vr, a, b), _entries(vc, a, b)
        lo, hi = np.minimum(va, vb), np.maximum(va, vb)  # (a, b) and (b, a) round alike
        r.reshape(-1)[near] = (lo * hi - kab * kab) + (
            _product_error(lo, hi) - _product_error(kab, kab)
        )
        np.maximum(r, 0.0, out=r)
    np.sqrt(r, out=r)
    if not (Kb.flags.c_contiguous and Kb.flags.writeable):  # torch wraps writable arrays only
        Kb = np.array(Kb, order="C")
    torch.atan2(torch.from_numpy(r), torch.from_numpy(Kb), out=torch.from_numpy(theta))


def _entries(v: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.broadcast_to(v, shape)[a, b]`` for a 2-D ``v`` with unit axes, without the view."""
    return v[a if v.shape[0] > 1 else 0, b if v.shape[1] > 1 else 0]


def _arc_cosine(
    act: Activation, orders: Sequence[tuple[int, int]], K: np.ndarray, var: np.ndarray
) -> np.ndarray:
    r"""Closed forms for ``sigma = a_+ z`` (``z >= 0``), ``a_- z`` (``z < 0``), orders 0 and 1.

    With ``theta = arccos(rho)`` and ``r = sqrt(K_aa K_bb - K_ab^2)`` (:func:`arc_cosine_angle`;
    the arc-cosine kernel, spec/02 §11.2; (5.60)-(5.62) on the diagonal), and the constants
    ``A, B, E`` of :func:`arc_cosine_constants`:

    * ``<sigma_a sigma_b> = A [(pi - theta) K_ab + r] + B K_ab``;
    * ``<sigma'_a sigma'_b> = E - A theta``;
    * ``<sigma_a sigma'_b> = s_a (a_+^2 - a_-^2)(1 + rho)/(2 sqrt(2 pi))``.

    A duplicated pair gets ``theta = r = 0`` exactly, so duplicated inputs stay identical to
    the last bit.  Also validates ``K`` (finite, symmetric, every 2x2 sub-block PSD).  The
    work is done on blocks of rows of the upper triangle that stay in cache, each mirrored to
    the lower one.

    Parameters
    ----------
    K : ndarray, shape (N, N)
    var : ndarray, shape (N,)
        The diagonal of ``K``, ``s_a^2``.

    Returns
    -------
    ndarray, shape (len(orders), N, N)
    """
    _check_finite_diagonal(K, var)
    A, B, E = arc_cosine_constants(act)
    ap, am = act.scale_invariant  # type: ignore[misc]
    c01 = (ap * ap - am * am) / (2 * math.sqrt(2 * math.pi))
    N = len(var)
    std = np.sqrt(var)
    with np.errstate(divide="ignore"):
        inv = np.where(std > 0, 1.0 / std, 0.0)
    scale = max(float(np.max(var)), 1e-300)
    out = np.empty((len(orders), N, N))

    def block(r0: int, r1: int) -> None:
        Kb = K[r0:r1, r0:]
        if np.max(np.abs(Kb - K[r0:, r0:r1].T)) > 1e-10 * scale:
            raise ValueError("K must be symmetric")
        vr, vc = var[r0:r1], var[r0:]
        if np.min(vr[:, None] * vc[None, :] - Kb * Kb) < -1e-9 * scale * scale:
            raise ValueError("a 2x2 sub-block of K is not positive semidefinite")
        r, theta = np.empty(Kb.shape), np.empty(Kb.shape)
        arc_cosine_angle(Kb, vr[:, None], vc[None, :], r, theta)
        for k, key in enumerate(orders):
            if key == (0, 0):
                v = math.pi - theta
                v *= Kb
                v += r
                v *= A
                v += B * Kb
            elif key == (1, 1):
                v = E - A * theta
            else:  # (0, 1): s_a c (1 + rho); its mirror (b, a) has s_b
                rho = np.clip(Kb * (inv[r0:r1, None] * inv[None, r0:]), -1.0, 1.0)
                one = upper_mirrored(c01 * (1 + rho))
                s_first = std[r0:r1, None] if key == (0, 1) else std[None, r0:]
                s_mirror = std[None, r0:] if key == (0, 1) else std[r0:r1, None]
                out[k, r0:r1, r0:] = one * s_first
                out[k, r0:, r0:r1] = (one * s_mirror).T
                continue
            v = upper_mirrored(v)
            out[k, r0:r1, r0:] = v
            out[k, r0:, r0:r1] = v.T

    row_blocks(block, N)
    return out


def upper_mirrored(v: np.ndarray) -> np.ndarray:
    """A block of rows ``r0:r1`` right of the diagonal with its leading square made symmetric
    from its upper triangle, so the output is symmetric to the last bit even when ``K`` is
    symmetric only to rounding."""
    m = v.shape[0]
    lower = _strict_lower(m)
    v[:, :m][lower] = v[:, :m].T[lower]
    return v


@lru_cache(maxsize=8)
def _upper_triangle(m: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.triu_indices(m)``, built once per block size."""
    return np.triu_indices(m)


@lru_cache(maxsize=8)
def _strict_lower(m: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.tril_indices(m, -1)``, built once per block size (it was a tenth of a ReLU layer's
    time at N = 100)."""
    return np.tril_indices(m, -1)


def row_blocks(
    block: Callable[[int, int], None], N: int, threaded_from: int = 256, row_cost: float = 0.0
) -> None:
    """Run ``block(r0, r1)`` over row blocks of an (N, N) upper triangle (~65k entries each,
    cache-sized), on several threads from ``N = threaded_from`` on: numpy and the compiled
    kernels release the GIL in their loops, and the blocks write disjoint parts of the output
    (rows ``r0:r1`` right of the diagonal and their mirror, columns ``r0:r1`` below it).  An
    ``N`` too small for two blocks is cut in two when threaded, the calling thread's a little
    larger (``_FIRST_SHARE`` of the work): row ``a`` costs its ``N - a`` pairs plus
    ``row_cost`` (the block's fixed work per row, in pairs)."""
    step = _rows_per_block(N)
    bounds = [(r0, min(r0 + step, N)) for r0 in range(0, N, step)]
    if len(bounds) == 1 and N >= threaded_from and _THREADS > 1:
        work = np.cumsum(N - np.arange(N) + row_cost)  # rows 0..h-1 hold half the work
        h = min(max(int(np.searchsorted(work, work[-1] * _FIRST_SHARE)), 1), N - 1)
        bounds = [(0, h), (h, N)]
    if N < threaded_from:
        for r0, r1 in bounds:
            block(r0, r1)
        return
    # interleave long (top) and short (bottom) blocks so the threads finish together
    order = [b for pair in zip(bounds, bounds[::-1], strict=True) for b in pair][: len(bounds)]
    in_parallel([functools.partial(block, r0, r1) for r0, r1 in order])


def in_parallel(tasks: Sequence[Callable[[], object]]) -> None:
    """Run ``tasks`` on the engine's threads (:func:`_pool`), or in turn when there is one
    thread, one task, or the caller is itself one of those threads (nested)."""
    if _THREADS == 1 or len(tasks) < 2 or getattr(_IN_POOL, "flag", False):
        for task in tasks:
            task()
        return
    futures = [_pool().submit(task) for task in tasks[1:]]
    tasks[0]()
    for f in futures:
        f.result()


_IN_POOL = threading.local()


@cache
def _pool() -> ThreadPoolExecutor:
    """The worker threads of :func:`row_blocks`, started once (starting them took ~2 ms a
    call); a worker runs nested ``row_blocks`` serially, so it never waits on its own pool."""
    return ThreadPoolExecutor(_THREADS, initializer=lambda: setattr(_IN_POOL, "flag", True))


os.register_at_fork(after_in_child=_pool.cache_clear)  # a forked child has none of the threads


@cache
def _blas_threads() -> Any:
    """threadpoolctl's controller of the loaded BLAS libraries (found once), or None without
    threadpoolctl."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def one_blas_thread(work: float) -> contextlib.AbstractContextManager[Any]:
    """BLAS on one thread for a call of ``work`` multiply-adds of at least ``2^22``: OpenBLAS's
    threads spin for a while after each call it spreads over them, and take the cores from
    the :func:`row_blocks` threads that run next (measured: a flow on 1000 inputs took 25%
    longer on 2 cores after its Gram matrix).  A no-op for less work, or without
    threadpoolctl (``pip install pdlt[fast]``)."""
    controller = _blas_threads() if work >= 2**22 else None
    if controller is None:
        return contextlib.nullcontext()
    return controller.limit(limits=1, user_api="blas")


@lru_cache(maxsize=8)
def _hermite_functions(M: int, panel: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Composite Gauss-Legendre nodes ``u`` and weights ``w`` (Q,) on ``|u| <= 13`` and the
    Hermite functions ``psi_n(u) = He_n(u) phi(u)^(1/2) /
    sqrt(n!)`` for ``n = 0..M``, shape (M + 1, Q), by their stable three-term recurrence.

    Since ``|psi_n| < 1`` for every ``n``, an integrand ``f(u) psi_n(u) phi(u)^(1/2)`` is below
    ``|f| exp(-u^2/4) < 5e-19 |f|`` outside the domain."""
    P = int(math.ceil(2 * _SERIES_U_MAX / panel))
    x, wx = _gauss_legendre(_SERIES_GL_NODES)
    edges = np.linspace(-_SERIES_U_MAX, _SERIES_U_MAX, P + 1)
    half = 0.5 * (edges[1:] - edges[:-1])[:, None]
    u = ((edges[1:] + edges[:-1])[:, None] * 0.5 + half * x).reshape(-1)
    w = (half * wx).reshape(-1)
    root = np.sqrt(_phi(u))
    psi = np.empty((M + 1, u.size))
    psi[0] = root
    psi[1] = u * root
    for n in range(1, M):
        psi[n + 1] = (u * psi[n] - math.sqrt(n) * psi[n - 1]) / math.sqrt(n + 1)
    return u, w, psi


def _hermite_direct(
    act: Activation,
    std: np.ndarray,
    keys: Sequence[tuple[int, int]],
    M: int,
    smax: float,
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], dict[tuple[int, int], np.ndarray]]:
    """Coefficients ``c_n``, energies ``<sigma^{(k)}(s u)^2>`` and the 1-D moments of ``keys``
    at each ``s`` in ``std`` by the quadrature of :func:`_hermite_coefficients` (panels from
    ``smax``); shapes (n, M + 1), (n,), (n,)."""
    panel = min(1.0, act.scale / smax, 16.0 / math.sqrt(4 * M + 2))
    # a power of two (cached grids), allowed 1% over the bound: M = 64 (bound 0.996) gets 1
    u, w, psi = _hermite_functions(M, 2.0 ** math.floor(math.log2(panel) + 0.015))
    weight = w * psi[0] ** 2  # Gauss-Legendre weights times phi(u)
    f = act.derivatives_at(std[:, None] * u, [k for ij in keys for k in ij])
    diag = {(i, j): (f[i] * f[j]) @ weight for i, j in keys}
    coef = {k: (fk * (w * psi[0])) @ psi.T for k, fk in f.items()}
    energy = {k: (fk * fk) @ weight for k, fk in f.items()}
    return coef, energy, diag


_PARITY_TOL = 1e-13  # relative size of a series' orders of the other parity that may be dropped


@dataclass(frozen=True)
class _PanelLayout:
    """The columns of an order's panel table (:func:`_hermite_panel`) to ``M``: the
    coefficients ``c_0..c_M`` (from ``coef``), the energy ``<sigma^{(k)2}>`` (at ``energy``),
    then the tails ``T_m`` at the rungs ``m`` of ``ladder`` (from ``tails``); ``width`` in all.
    """

    M: int
    ladder: tuple[int, ...]

    @classmethod
    def of(cls, M: int) -> _PanelLayout:
        return cls(M, tuple(m for m in _SERIES_LADDER if m <= M))

    coef = 0

    @property
    def energy(self) -> int:
        return self.M + 1

    @property
    def tails(self) -> int:
        return self.M + 2

    @property
    def width(self) -> int:
        return self.M + 2 + len(self.ladder)

    @property
    def split(self) -> np.ndarray:
        """The columns with the even orders' coefficients first, then the odd ones' (``M // 2 +
        1`` even ones), then the rest: the order of :class:`_HermiteTable`'s columns."""
        n = np.arange(self.M + 1)
        return np.r_[n[::2], n[1::2], np.arange(self.M + 1, self.width)]


@dataclass(frozen=True)
class _Panel:
    """The Chebyshev series in ``log s`` of a panel's quantities: coefficients ``A`` (P, Q) in
    ``x = 2 t - 1``, ``t = 8 log2(s) - g`` in ``[0, 1)`` (:func:`panel_of`), the error estimate
    ``err`` relative to the energy, and the ``parity`` of the coefficients at every node: ``p``
    = 0 or 1 when the orders of the other parity but its lowest (``1 - p``) are below
    ``_PARITY_TOL`` (tanh: ``sigma`` odd, 1; GELU, SWISH: ``sigma`` is ``z/2`` plus an even
    function, 0, and ``sigma'`` 1), else -1."""

    A: np.ndarray
    err: float
    parity: int


def panel_of(std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The panel ``g`` of each ``s`` in ``std`` (all positive and finite) and where it lies in
    it, ``x = 2 t - 1`` with ``t = 8 log2(s) - g`` (``_COEF_PANELS`` panels per octave, equal in
    ``log s``: panel ``g`` is ``[2^(g/8), 2^((g+1)/8)]``); shapes as ``std``."""
    t = _COEF_PANELS * np.log2(std)
    g = np.floor(t)
    return g.astype(np.int64), 2.0 * (t - g) - 1.0


def _chebyshev_series(
    g: int, values: Callable[[np.ndarray], np.ndarray], scale: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, float]:
    """The Chebyshev series (P, Q) on panel ``g`` of the quantities ``values(s)`` (P, Q) at
    Chebyshev points in ``log s``, from ``_COEF_NODES`` points, doubled (to 4 times) while the
    error estimate is above ``_COEF_INTERP_TOL``; and that estimate: ten times the largest of
    the last four Chebyshev coefficients of every quantity relative to ``scale(values)`` (Q,).
    The quantities are analytic in ``s`` on ``Re s > 0`` and a panel spans 1/8 octave, so
    their series decay fast and the interpolation error is of the size of the last
    coefficients (measured: 1e-14 where the estimate says 4e-13)."""
    for P in (_COEF_NODES, 2 * _COEF_NODES, 4 * _COEF_NODES):
        angle = np.pi * np.arange(P) / (P - 1)
        v = values(2.0 ** ((g + 0.5 + 0.5 * np.cos(angle)) / _COEF_PANELS))
        half = np.ones(P)
        half[[0, -1]] = 0.5
        A = (2.0 / (P - 1)) * (np.cos(np.outer(np.arange(P), angle)) * half) @ v
        A[[0, -1]] *= 0.5  # the DCT-I: Chebyshev coefficients of the interpolant
        err = 10.0 * float(np.max(np.abs(A[-4:]) / scale(v)))
        if err <= _COEF_INTERP_TOL:
            break
    return A, err


@lru_cache(maxsize=2048)
def _hermite_panel(act: Activation, k: int, M: int, g: int) -> _Panel:
    """The coefficients to ``M``, the energy and the tails at the rungs (:class:`_PanelLayout`)
    of ``sigma^{(k)}(s u)`` on panel ``g`` of ``s`` as Chebyshev series in ``log s``
    (:func:`_chebyshev_series`; quadrature by :func:`_hermite_direct`, its panels from the
    upper end of ``g``), each order on its own, so its values do not depend on which other
    orders are asked for.  Callers must not modify ``A`` (it is cached)."""
    lay = _PanelLayout.of(M)
    hi = 2.0 ** ((g + 1) / _COEF_PANELS)
    last: list[np.ndarray] = []

    def values(s: np.ndarray) -> np.ndarray:
        c, e, _ = _hermite_direct(act, s, [(k, k)], M, hi)
        head = np.cumsum(c[k] * c[k], axis=1)[:, list(lay.ladder)]
        last[:] = [c[k], e[k]]
        return np.concatenate([c[k], e[k][:, None], e[k][:, None] - head], axis=1)

    def scale(v: np.ndarray) -> np.ndarray:
        E = max(float(np.min(v[:, lay.energy])), 1e-300)  # the smallest energy: conservative
        out = np.full(lay.width, E)
        out[: lay.energy] = math.sqrt(E)
        return out

    A, err = _chebyshev_series(g, values, scale)
    c, e = last
    # the other parity's orders above its lowest (GELU, SWISH: sigma = z/2 + an even function)
    quiet = [np.all(np.sum(c[:, 3 - p :: 2] ** 2, axis=1) <= _PARITY_TOL**2 * e) for p in (0, 1)]
    parity = 0 if quiet[0] else (1 if quiet[1] else -1)
    if parity >= 0:  # those orders are exactly 0, and so is the lowest where it is as small
        low = 1 - parity
        A[:, low + 2 : lay.M + 1 : 2] = 0.0
        if np.all(c[:, low] ** 2 <= _PARITY_TOL**2 * e):
            A[:, low] = 0.0
    return _Panel(A, err, parity)


@lru_cache(maxsize=2048)
def _moment_panel(act: Activation, key: tuple[int, int], M: int, g: int) -> _Panel:
    """The 1-D moment ``<sigma^{(i)} sigma^{(j)}>`` (``key = (i, j)``, ``i != j``; for ``i = j``
    it is the energy of :func:`_hermite_panel`) on panel ``g`` as a Chebyshev series in
    ``log s``, relative to ``sqrt(<sigma^{(i)2}> <sigma^{(j)2}>)`` (parity -1)."""
    hi = 2.0 ** ((g + 1) / _COEF_PANELS)
    scales: list[float] = []

    def values(s: np.ndarray) -> np.ndarray:
        _, e, d = _hermite_direct(act, s, [key], M, hi)
        scales[:] = [max(float(np.min(np.sqrt(e[key[0]] * e[key[1]]))), 1e-300)]
        return d[key][:, None]

    A, err = _chebyshev_series(g, values, lambda v: np.full(1, scales[0]))
    return _Panel(A, err, -1)


class _HermiteTable:
    """The panels (:func:`_hermite_panel`) of ``sigma`` and ``sigma'`` to ``M`` side by side for
    the compiled kernels, loaded as they are needed: Chebyshev coefficients ``A`` (G + 1, P,
    2 Q), order ``k``'s quantities in columns ``k Q + ...`` (:class:`_PanelLayout`, its
    coefficients split into the even orders, then the odd ones), of panels
    ``g0..g0 + G - 1`` in slots ``0..G-1`` (zero-padded to the largest ``P``) and in the last
    slot the constant values at ``s = 0``; per slot the number of ``nodes`` (0: not loaded),
    the error estimate ``err`` (the larger of the two orders') and the ``parity`` (G + 1, 2),
    as :class:`_Panel`'s (2 at ``s = 0``: ``c_0`` alone fits either parity).
    Kept per activation (:func:`_hermite_table`), so later flows only interpolate."""

    def __init__(self, act: Activation, M: int) -> None:
        self.act, self.M = act, M
        self.layout = lay = _PanelLayout.of(M)
        self.g0 = 0
        self.A = np.zeros((1, _COEF_NODES, 2 * lay.width))
        self.nodes = np.ones(1, dtype=np.int64)
        self.err = np.zeros(1)
        at0 = act.derivatives_at(np.zeros(1), [0, 1])
        for k in (0, 1):  # sigma^{(k)}(0): c_0 alone, no tail
            self.A[0, 0, k * lay.width + lay.coef] = at0[k][0]
            self.A[0, 0, k * lay.width + lay.energy] = at0[k][0] ** 2
        # c_n = 0 for n > 0: either parity (2; c_0 is the odd orders' lowest exception)
        self.parity = np.full((1, 2), 2, dtype=np.int64)

    def load(self, panels: np.ndarray) -> bool:
        """Compute the ``panels`` not loaded yet (growing the arrays to cover them); False
        when one's error estimate stays above ``_COEF_INTERP_TOL``."""
        g = np.unique(panels)
        new = [[_hermite_panel(self.act, k, self.M, int(gi)) for k in (0, 1)] for gi in g]
        if any(p.err > _COEF_INTERP_TOL for pair in new for p in pair):
            return False
        G, Q = len(self.nodes) - 1, self.layout.width
        lo = min(int(g[0]), self.g0) if G else int(g[0])
        hi = max(int(g[-1]) + 1, self.g0 + G) if G else int(g[-1]) + 1
        P = max([self.A.shape[1]] + [len(p.A) for pair in new for p in pair])
        A = np.zeros((hi - lo + 1, P, 2 * Q))
        nodes, err = np.zeros(hi - lo + 1, dtype=np.int64), np.zeros(hi - lo + 1)
        parity = np.zeros((hi - lo + 1, 2), dtype=np.int64)
        # the panels loaded before, and the zero-variance slot, keep their values
        keep = np.r_[np.arange(self.g0 - lo, self.g0 - lo + G), hi - lo]
        A[keep, : self.A.shape[1]] = self.A
        nodes[keep], err[keep], parity[keep] = self.nodes, self.err, self.parity
        for gi, pair in zip(g, new, strict=True):
            for k, p in enumerate(pair):
                A[gi - lo, : len(p.A), k * Q : (k + 1) * Q] = p.A[:, self.layout.split]
            nodes[gi - lo] = max(len(p.A) for p in pair)
            err[gi - lo] = max(p.err for p in pair)
            parity[gi - lo] = [p.parity for p in pair]
        self.g0, self.A, self.nodes, self.err, self.parity = lo, A, nodes, err, parity
        return True


@lru_cache(maxsize=16)
def _hermite_table(act: Activation, M: int) -> _HermiteTable:
    """The :class:`_HermiteTable` of ``act`` to ``M``, kept (it grows as flows need more
    panels)."""
    return _HermiteTable(act, M)


def _chebyshev_basis(x: np.ndarray, P: int) -> np.ndarray:
    """``T_p(x)`` for ``p < P``, shape (len(x), P), by the three-term recurrence."""
    T = np.empty((len(x), P))
    T[:, 0] = 1.0
    if P > 1:
        T[:, 1] = x
    for p in range(2, P):
        T[:, p] = 2.0 * x * T[:, p - 1] - T[:, p - 2]
    return T


# coefficients and energies per order, 1-D moments per key, error estimates per order
_Hermite1D = tuple[
    dict[int, np.ndarray],
    dict[int, np.ndarray],
    dict[tuple[int, int], np.ndarray],
    dict[int, float],
]


def _hermite_interpolated(
    act: Activation, std: np.ndarray, keys: Sequence[tuple[int, int]], M: int
) -> _Hermite1D:
    """:func:`_hermite_direct` interpolated in ``s`` from the Chebyshev series of each panel
    (1/8 octave) that ``std`` touches (:func:`_hermite_panel` per order, :func:`_moment_panel`
    per mixed key; computed once per activation and kept, so later layers and calls only
    interpolate), with per order the error estimate relative to its energy (the largest over
    those panels; a mixed key's counts for both its orders); ``inf`` for all when the
    interpolation does not apply (a zero or non-finite ``s``)."""
    orders = sorted({k for ij in keys for k in ij})
    if not (np.all(np.isfinite(std)) and np.min(std) > 0):
        return {}, {}, {}, dict.fromkeys(orders, math.inf)
    lay = _PanelLayout.of(M)
    panel, x = panel_of(std)
    coef = {o: np.empty((len(std), M + 1)) for o in orders}
    energy = {o: np.empty(len(std)) for o in orders}
    diag = {key: np.empty(len(std)) for key in keys}
    err = dict.fromkeys(orders, 0.0)
    for g in np.unique(panel):
        at = np.flatnonzero(panel == g)
        for o in orders:
            table = _hermite_panel(act, o, M, int(g))
            err[o] = max(err[o], table.err)
            v = _chebyshev_basis(x[at], len(table.A)) @ table.A[:, : lay.energy + 1]
            coef[o][at], energy[o][at] = v[:, : lay.energy], v[:, lay.energy]
        for i, j in keys:
            if i == j:
                diag[(i, j)][at] = energy[i][at]
                continue
            table = _moment_panel(act, (i, j), M, int(g))
            err[i] = err[j] = max(err[i], err[j], table.err)
            diag[(i, j)][at] = _chebyshev_basis(x[at], len(table.A)) @ table.A[:, 0]
    return coef, energy, diag, err


def _hermite_quadrature(
    act: Activation, std: np.ndarray, keys: Sequence[tuple[int, int]], M: int
) -> _Hermite1D:
    """:func:`_hermite_interpolated` when there are enough samples and its error estimates are
    below ``_COEF_INTERP_TOL``, else :func:`_hermite_direct` (error estimates 0)."""
    if len(std) >= _COEF_INTERP_MIN:
        out = _hermite_interpolated(act, std, keys, M)
        if max(out[3].values()) <= _COEF_INTERP_TOL:
            return out
    smax = max(float(np.max(std)), 1e-300)
    coef, energy, diag = _hermite_direct(act, std, keys, M, smax)
    return coef, energy, diag, dict.fromkeys(coef, 0.0)


def _hermite_coefficients(
    act: Activation,
    std: np.ndarray,
    keys: Sequence[tuple[int, int]],
    M: int,
    at: Sequence[int] | None = None,
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], dict[tuple[int, int], np.ndarray]]:
    r"""Normalized Hermite coefficients of ``sigma^{(k)}(s u)``, their tail energies, and the
    one-dimensional moments ``<sigma^{(i)} sigma^{(j)}>`` of the pairs of orders in ``keys``.

    ``c_n = <sigma^{(k)}(s u) He_n(u)>_u / sqrt(n!)`` for ``n = 0..M``, and
    ``T_m = <sigma^{(k)}(s u)^2>_u - sum_{n <= m} c_n^2`` (Parseval), by composite
    Gauss-Legendre with 16 nodes on panels no wider than ``min(1, scale/s, 16/sqrt(4M + 2))``
    over ``|u| <= 13`` (resolving both sigma and the oscillations of ``psi_M``, 2.5
    wavelengths per panel at most; a finer rule than :func:`moments` uses in one dimension,
    error ~1e-14 relative).  From ``_COEF_INTERP_MIN`` samples on, the quadrature is done at 12
    Chebyshev points on each panel ``[2^(g/8), 2^((g+1)/8)]`` of ``s`` that ``std`` touches
    (once per activation; the tables are kept) and interpolated
    (:func:`_hermite_interpolated`; the coefficients are analytic in ``s`` on ``Re s > 0``),
    when the last Chebyshev coefficients put the error below 1e-12 of the energy; otherwise
    at every sample.  The
    tails are widened by ten times that estimate, so the truncation bound of :func:`_mehler`
    stays an upper bound.

    Parameters
    ----------
    std : ndarray, shape (n,)
        Standard deviations ``s = sqrt(K_aa)``.
    at : sequence of int, optional
        The increasing orders ``m`` at which the tails are wanted (default ``0..M``).

    Returns
    -------
    coef : dict of ndarray, shape (n, M + 1), one per order in ``keys``
    tail : dict of ndarray, shape (n, len(at) + 1)
        ``T_m`` for ``m`` in ``at``, then the energy ``<sigma^{(k)}(s u)^2>_u`` itself.
    diag : dict of ndarray, shape (n,)
        ``<sigma^{(i)}(s u) sigma^{(j)}(s u)>_u`` for ``(i, j)`` in ``keys``.
    """
    coef, energy, diag, err = _hermite_quadrature(act, std, keys, M)
    tail = {}
    for k, c in coef.items():  # the error estimate widens the tails, so the bound stays one
        E = energy[k][:, None]
        if at is None:
            head = np.cumsum(c * c, axis=1)
        else:  # the sums between the orders asked for, then their running sum
            head = np.add.reduceat(c * c, np.r_[0, np.asarray(at[:-1]) + 1], axis=1)
            head = np.cumsum(head, axis=1)
        t = np.maximum(E - head, 0.0) + (1e-16 + 10 * err[k]) * E
        tail[k] = np.concatenate([t, E], axis=1)
    return coef, tail, diag


def _mehler(
    act: Activation, keys: Sequence[tuple[int, int]], std: np.ndarray, rho: np.ndarray
) -> np.ndarray:
    r"""Mehler's formula for smooth ``sigma``: the Hermite series in the correlation.

    ``<f(z_a) g(z_b)> = sum_n c_n[f](a) c_n[g](b) rho_ab^n`` with the per-sample coefficients of
    :func:`_hermite_coefficients` (one-dimensional integrals, so ``N`` quadratures replace
    ``N^2``).  By Cauchy-Schwarz the tail after ``m`` terms is at most
    ``|rho|^(m+1) sqrt(T_m[f](a) T_m[g](b))``; a pair is summed to the first ``m`` on the
    ladder (8, 16, ..., 256) that brings this bound below ``1e-10 sqrt(<f_a^2><g_b^2>)``.

    Coefficients go to ``m = 64`` for every sample with ``s <= 3 scale``.  The upper triangle
    (``a <= b``, for ``(i, j)`` and ``(j, i)``) is summed in blocks of rows, each to the ``m``
    that covers 99% of its pairs; the other pairs are summed one by
    one with coefficients to ``m = 256`` (:func:`_series`), and those that need more still,
    or involve a sample with ``s > 3 scale``, are left as NaN for the caller.

    Parameters
    ----------
    std : ndarray, shape (N,)
    rho : ndarray, shape (N, N)
        Correlations ``K_ab / (s_a s_b)`` (0 where a variance vanishes).

    Returns
    -------
    ndarray, shape (len(keys), N, N), NaN where the series was not used
    """
    N = len(std)
    with np.errstate(divide="ignore"):
        log_rho = np.log(np.abs(rho))
    both = sorted(set(keys) | {(j, i) for i, j in keys})
    # each (i, j) summed over a <= b fills [(i, j), a, b] and, transposed, [(j, i), b, a]
    direct = [[k for k, key in enumerate(keys) if key == ij] for ij in both]
    mirror = [[k for k, key in enumerate(keys) if key == ij[::-1]] for ij in both]
    out = np.empty((len(keys), N, N))
    samples = np.nonzero(std <= _SERIES_MAX_STD * act.scale)[0]
    coef, ell, diag = _series_coefficients(act, both, std, samples, _SERIES_FIRST)
    ladder = [m for m in _SERIES_LADDER if m <= _SERIES_FIRST]
    log_tol = math.log(_SERIES_TOL)
    pending: list[list[np.ndarray]] = [[] for _ in both]

    def covered(q: int, m: int, a: np.ndarray | slice, b: np.ndarray | slice) -> np.ndarray:
        """Whether the tail bound of ``both[q]`` after ``m`` terms is below the tolerance, for
        the pairs ``(a, b)``: index arrays, or slices of rows and columns."""
        i, j = both[q]
        ea = ell[i][m, a, None] if isinstance(a, slice) else ell[i][m, a]
        with np.errstate(invalid="ignore"):
            return (m + 1) * log_rho[a, b] + ea + ell[j][m, b] <= log_tol

    def block(r0: int, r1: int) -> None:
        rows, cols = slice(r0, r1), slice(r0, N)
        rb = rho[rows, cols]
        acc, term = np.empty(rb.shape), np.empty(rb.shape)
        iu, ju = _upper_triangle(r1 - r0)
        for q, (i, j) in enumerate(both):
            # each series to its own m (so one key's values do not depend on the others)
            for m in ladder:
                ok = covered(q, m, rows, cols)
                if ok.mean() >= _SERIES_BLOCK_SHARE:
                    break
            ci, cj = coef[i][:, rows, None], coef[j][:, None, cols]
            np.multiply(ci[m], cj[m], out=acc)
            for n in range(m - 1, -1, -1):
                acc *= rb
                acc += np.multiply(ci[n], cj[n], out=term)
            acc[~ok] = np.nan
            # right of the leading square as is; in it, the upper triangle only (a <= b), so
            # the output is symmetric (for i = j) even when K is so only to rounding
            for k in direct[q]:
                out[k, rows, r1:] = acc[:, r1 - r0 :]
                out[k, r0 + iu, r0 + ju] = acc[iu, ju]
            for k in mirror[q]:
                out[k, r1:, rows] = acc[:, r1 - r0 :].T
                out[k, r0 + ju, r0 + iu] = acc[iu, ju]
            # (flat indices: 2-D nonzero is 15x slower); list.append is atomic under threads
            fa, fb = np.divmod(np.flatnonzero(~ok), N - r0)
            pending[q].append(np.stack([fa + r0, fb + r0]))

    row_blocks(block, N)
    idx = np.arange(N)
    for q, key in enumerate(both):  # the diagonal: one-dimensional, on the coefficients' grid
        for k in direct[q]:
            out[k, idx, idx] = diag[key]
    todo = [np.concatenate(p, axis=1) for p in pending]
    todo = [ab[:, ab[0] < ab[1]] for ab in todo]
    samples = np.intersect1d(samples, np.unique(np.concatenate([ab.ravel() for ab in todo])))
    if samples.size:
        M = _SERIES_LADDER[-1]
        coef, ell, _ = _series_coefficients(act, both, std, samples, M)
        for q, (a, b) in enumerate(todo):
            for m in _SERIES_LADDER:
                ok = covered(q, m, a, b)
                vals = _series(coef, [both[q]], a[ok], b[ok], rho[a[ok], b[ok]], m)[0]
                for k in direct[q]:
                    out[k, a[ok], b[ok]] = vals
                for k in mirror[q]:
                    out[k, b[ok], a[ok]] = vals
                a, b = a[~ok], b[~ok]
    return out


def _series_coefficients(
    act: Activation,
    keys: Sequence[tuple[int, int]],
    std: np.ndarray,
    samples: np.ndarray,
    M: int,
) -> tuple[dict[int, np.ndarray], np.ndarray, dict[tuple[int, int], np.ndarray]]:
    """:func:`_hermite_coefficients` of ``samples`` placed among all ``N`` samples, with the
    log of each order's normalized tail ``sqrt(T_m / <sigma^{(k)2}>)``.

    Returns
    -------
    coef : dict of ndarray, shape (M + 1, N)
        Zero for samples not in ``samples``.
    ell : dict of ndarray, shape (M + 1, N)
        ``+inf`` for samples not in ``samples``, ``-inf`` where the tail vanishes.
    diag : dict of ndarray, shape (N,)
        One-dimensional moments per key, NaN for samples not in ``samples``.
    """
    N = len(std)
    c, tail, d = _hermite_coefficients(act, std[samples], keys, M)
    coef = {k: np.zeros((M + 1, N)) for k in c}
    ell = {k: np.full((M + 1, N), np.inf) for k in c}
    for k in c:
        coef[k][:, samples] = c[k].T
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(tail[k][:, -1:] > 0, tail[k][:, :-1] / tail[k][:, -1:], 0.0)
            ell[k][:, samples] = 0.5 * np.log(ratio).T
    diag = {key: np.full(N, np.nan) for key in d}
    for key, v in d.items():
        diag[key][samples] = v
    return coef, ell, diag


def _series(
    coef: dict[int, np.ndarray],
    keys: Sequence[tuple[int, int]],
    a: np.ndarray,
    b: np.ndarray,
    rho: np.ndarray,
    m: int,
) -> np.ndarray:
    """``sum_{n <= m} c_n[i](a) c_n[j](b) rho^n`` by Horner's rule, in cache-sized chunks.

    Parameters
    ----------
    coef : dict of ndarray, shape (M + 1, N), M >= m
    a, b, rho : ndarray, shape (P,)
        The pairs and their correlations.

    Returns
    -------
    ndarray, shape (len(keys), P)
    """
    out = np.empty((len(keys), len(a)))
    ct = {k: c[: m + 1] for k, c in coef.items()}
    for s in range(0, len(a), _SERIES_PAIRS_PER_CHUNK):
        ia, ib, r = (x[s : s + _SERIES_PAIRS_PER_CHUNK] for x in (a, b, rho))
        ga = {k: c[:, ia] for k, c in ct.items()}
        gb = {k: c[:, ib] for k, c in ct.items()}
        for q, (i, j) in enumerate(keys):
            acc = ga[i][m] * gb[j][m]
            for n in range(m - 1, -1, -1):
                acc *= r
                acc += ga[i][n] * gb[j][n]
            out[q, s : s + len(ia)] = acc
    return out
