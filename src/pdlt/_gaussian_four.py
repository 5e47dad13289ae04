r"""Gaussian expectations of products of a smooth activation, its derivatives and ``z``
over two to four samples, by rotated sequential conditioning -- part of the Gaussian engine
(:mod:`pdlt.gaussian`), used by :func:`pdlt.gaussian.moments` for every such product (the
kernel, four-point, NTK, dNTK and ddNTK recursions' building blocks: ``<s_a s_b s_c s_d>``,
``<s''_a s'_b s'_c s_d>``, ``<z_a s_a s'_b>``, ...).  Each sample's factors form one *slot*;
fewer than four samples are padded with factor-free samples of zero variance, which cost one
node.

Method, per covariance ``K`` (4 x 4):

* choose a sample ``c`` to eliminate and a sample ``d`` for the third level; the other two
  ``(a, b)`` are outer.  Factor ``K`` by Cholesky in the order ``(a, b, d, c)``, ``z = L u``;
* rotate the outer plane ``(u_0, u_1) -> (v_0, v_1)`` so that the conditional mean of ``z_c``,
  ``m_c = rho v_0 + l_32 u_2``, depends on ``v_0`` and ``u_2`` only;
* then ``<...> = sum_ijk w_i w_j w_k f_a(z_a[ij]) f_b(z_b[ij]) f_d(z_d[ijk]) H(m_c[ik])`` with
  ``H(m) = <f_c(m + l_33 w)>_w`` a one-dimensional smoothed factor needed on the ``(i, k)`` grid
  only: ``n_0 n_1 n_2 + n_0 n_2 n_w`` evaluations of sigma instead of ``n^4``;
* a slot ``f_s`` is the product of its factors (``sigma^{(k)}`` or ``z``), evaluated once per
  node for all the products that share it;
* in the *lattice* variant the trapezoidal steps are tied (``|A_1d| h_1 = l_22 h_2`` and
  ``rho h_0 = |l_32| h_2``) so that ``z_d`` and ``m_c`` fall on one-dimensional lattices:
  sigma is evaluated at ``O(n^2)`` points and the ``O(n^3)`` part is a correlation
  (multiply-adds only) -- the cheap scheme where the variances are O(1);
* of the 24 schemes (12 choices of ``(c, d)``, direct or lattice) the one with the fewest
  predicted operations is taken per covariance, so nearly collinear samples get one or a few
  nodes in their residual direction.

Every variable gets the cheapest one-dimensional rule -- Gauss-Hermite ``n`` or the truncated
trapezoidal rule of step ``h`` on ``[-9, 9]`` -- that passes a self-test at its largest
coefficient ``a`` (rounded up on a 2.5% ladder): ``<prod_s sigma^{(o_s)}(a u + c)>`` at shifts
``c = 0, scale/2, scale, 2 scale``, for every requested product (the collinear worst case of
the integrand along that variable), must match a fine trapezoidal reference to ``1e-13`` of
its L1 norm.  Gauss-Hermite wins at small coefficients (deep layers), the trapezoidal rule
near unit variance (tanh's poles at ``+-i pi/2`` make Gauss-Hermite converge like
``exp(-d sqrt(2n))``, the trapezoidal rule like ``exp(-2 pi d/h)``).
No series is truncated; the error is the rules'.  Checked in ``tests/test_gaussian.py``
against closed forms (``sin``, a user callable) and a brute-force tensor rule in the
eigenvector coordinates of ``K`` (tanh, GELU, SWISH; two to four samples): within 1e-12 of
``<|product|>``, typically 1e-15.

Where no rule passes (a coefficient so large that the trapezoidal step would fall below 0.06:
tanh at variances ~50, SWISH and GELU at ~300), :func:`four_point` reports the covariance as
not covered and the caller uses the general path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import special

from .activations import Activation

Slot = tuple[int, ...]
"""The derivative orders of the factors on one sample, e.g. ``(0, 0)`` for ``sigma(z)^2``,
``(-1, 1)`` for ``z sigma'(z)``, ``()`` for none."""
Product = tuple[Slot, Slot, Slot, Slot]

_TOL = 1e-13
_STEP = 1.025  # coefficients are rounded up on this geometric ladder
_U = 9.0  # the trapezoidal rules run over |u| <= 9
_GH_LADDER = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 18, 20, 22, 24, 28, 32, 36, 40, 48)
_GH_LADDER += (56, 64, 80)
_H_LADDER = (1.2, 1.1, 1.0, 0.9, 0.8, 0.72, 0.65, 0.58, 0.52, 0.46, 0.41, 0.37, 0.33, 0.3)
_H_LADDER += (0.27, 0.24, 0.21, 0.19, 0.17, 0.15, 0.13, 0.11, 0.1, 0.09, 0.08, 0.07, 0.06)
_H_FINE = tuple(1.3 * 0.96**i for i in range(80))  # lattice steps: 1.3 down to 0.05
_LATTICE = np.unique(np.ceil(9 * 1.12 ** np.arange(60)).astype(int) | 1)  # odd node counts
_EVAL_COST = 12.0  # one evaluation of sigma ~ 12 multiply-adds (for the choice of scheme only)
_CHUNK_POINTS = 4_000_000
_OPTIONS = [(c, d) for c in range(4) for d in range(4) if c != d]  # (eliminated, third level)
_NO_RULE = -(10**6)

_RULES: dict[tuple, tuple[np.ndarray, np.ndarray] | None] = {}
_STEPS: dict[tuple, float | None] = {}
_REFS: dict[int, Activation] = {}  # keep id(act) from being reused while cached

Rule = tuple[np.ndarray, np.ndarray]


def covers(act: Activation) -> bool:
    """Whether the method applies: a smooth, non-polynomial activation of finite ``scale``."""
    return not act.kinks and math.isfinite(act.scale) and act.polynomial_degree is None


# --------------------------------------------------------------------------------------------
# One-dimensional rules
# --------------------------------------------------------------------------------------------


@cache
def _gauss_hermite(n: int) -> Rule:
    if n == 1:
        return np.zeros(1), np.ones(1)
    x, w = special.roots_hermitenorm(n)
    return x, w / math.sqrt(2 * math.pi)


@cache
def _trapezoid(h: float, U: float = _U) -> Rule:
    x = h * np.arange(-math.floor(U / h), math.floor(U / h) + 1)
    return x, h * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _derivatives(act: Activation, z: np.ndarray, ks: Sequence[int]) -> dict[int, np.ndarray]:
    """``{k: sigma^{(k)}(z)}``, ``k = -1`` meaning ``z`` itself."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        return {k: z if k == -1 else act.derivative(z, k) for k in ks}


def _slot_values(act: Activation, z: np.ndarray, slots: Sequence[Slot]) -> dict[Slot, np.ndarray]:
    """``{slot: prod_k sigma^{(k)}(z)}``, each derivative evaluated once."""
    D = _derivatives(act, z, sorted({k for slot in slots for k in slot}))
    out = {}
    for slot in slots:
        v = D[slot[0]] if slot else np.ones_like(z)
        for k in slot[1:]:
            v = v * D[k]
        out[slot] = v
    return out


class _SelfTest:
    """The test integrands ``prod_s sigma^{(o_s)}(a u + c)`` at coefficient ``a``,
    and their fine trapezoidal reference (step 0.04 on ``[-14, 14]``: below 1e-20 wherever a
    tested rule could pass) with its L1 norm."""

    def __init__(self, act: Activation, products: tuple[tuple[int, ...], ...], a: float) -> None:
        self.act, self.products, self.a = act, products, a
        self.shifts = np.array([0.0, 0.5, 1.0, 2.0]) * act.scale
        x, w = _trapezoid(0.04, 14.0)
        values = self(x)
        self.ref = w @ values
        self.norm = np.maximum(w @ np.abs(values), 1e-300)

    def __call__(self, u: np.ndarray) -> np.ndarray:
        z = self.a * u[:, None] + self.shifts
        values = _slot_values(self.act, z, self.products)
        return np.concatenate([values[p] for p in self.products], axis=1)

    def passes(self, rule: Rule) -> bool:
        x, w = rule
        return bool(np.all(np.abs(w @ self(x) - self.ref) <= _TOL * self.norm))


def _key(act: Activation, products: tuple[tuple[int, ...], ...], s: int) -> tuple:
    _REFS[id(act)] = act
    return (id(act), tuple(sorted({tuple(sorted(p)) for p in products})), s)


def _rule(act: Activation, products: tuple[tuple[int, ...], ...], s: int) -> Rule | None:
    """The cheapest passing rule at coefficient ``STEP**s`` (one node for ``a = 0``); None when
    none on the ladders passes."""
    if s == _NO_RULE:
        return _gauss_hermite(1)
    key = _key(act, products, s)
    if key not in _RULES:
        test = _SelfTest(act, key[1], _STEP**s)
        best = next((_gauss_hermite(n) for n in _GH_LADDER if test.passes(_gauss_hermite(n))), None)
        for h in _H_LADDER:
            rule = _trapezoid(h)
            if best is not None and len(rule[0]) >= len(best[0]):
                break
            if test.passes(rule):
                best = rule
                break
        _RULES[key] = best
    return _RULES[key]


def _largest_step(act: Activation, products: tuple[tuple[int, ...], ...], s: int) -> float:
    """The largest trapezoidal step on the fine ladder passing at ``STEP**s`` (inf for ``a = 0``,
    0 when none does)."""
    if s == _NO_RULE:
        return math.inf
    key = _key(act, products, s)
    if key not in _STEPS:
        test = _SelfTest(act, key[1], _STEP**s)
        _STEPS[key] = next((h for h in _H_FINE if test.passes(_trapezoid(h))), 0.0)
    return _STEPS[key]


def _ladder_steps(a: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        s = np.ceil(np.log(np.maximum(a, 1e-300)) / math.log(_STEP))
    return np.where(a > 0, s, _NO_RULE).astype(np.int64)


class _Rules:
    """The rules of one variable for an array of coefficients, looked up once per ladder step."""

    def __init__(self, act: Activation, products: tuple[tuple[int, ...], ...], a: np.ndarray):
        s = _ladder_steps(a)
        steps, self.index = np.unique(s, return_inverse=True)
        self.index = self.index.reshape(-1)
        self.rules = [_rule(act, products, int(v)) for v in steps]
        n = np.array([0 if r is None else len(r[0]) for r in self.rules])
        self.counts = n[self.index]  # 0: no rule
        self._steps, self._act, self._products = steps, act, products

    def largest_steps(self) -> np.ndarray:
        h = [_largest_step(self._act, self._products, int(v)) for v in self._steps]
        return np.array(h)[self.index]


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


def _cholesky(K: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of (B, 4, 4) covariances, dropping only pivots at rounding level
    (4 eps of the variance): inputs 1e-6 apart keep their own direction, whose coefficients
    on the other samples are O(1) (Cholesky is backward stable, so this costs no accuracy)."""
    B, d, _ = K.shape
    L = np.zeros_like(K)
    for k in range(d):
        piv = K[:, k, k] - np.sum(L[:, k, :k] ** 2, axis=1)
        lkk = np.sqrt(np.where(piv <= 4 * np.finfo(float).eps * K[:, k, k], 0.0, piv))
        L[:, k, k] = lkk
        safe = np.where(lkk > 0, lkk, 1.0)
        for i in range(k + 1, d):
            off = K[:, i, k] - np.sum(L[:, i, :k] * L[:, k, :k], axis=1)
            L[:, i, k] = np.where(lkk > 0, off / safe, 0.0)
    return L


@dataclass
class _Geometry:
    """Coefficients of one scheme ``(c, d)``: rows ``(a, b, d)`` of ``z`` on ``v_0`` (``A0``)
    and ``v_1`` (``A1``), shape (B, 3); ``l22``, ``rho``, ``l32``, ``sig`` (B,); and the
    largest coefficient per variable ``a0, a1, a2, aw`` (B,)."""

    perm: tuple[int, int, int, int]
    A0: np.ndarray
    A1: np.ndarray
    l22: np.ndarray
    rho: np.ndarray
    l32: np.ndarray
    sig: np.ndarray

    @classmethod
    def of(cls, K: np.ndarray, c: int, d: int) -> _Geometry:
        a, b = [s for s in range(4) if s not in (c, d)]
        perm = (a, b, d, c)
        L = _cholesky(K[:, perm][:, :, perm])
        rho = np.hypot(L[:, 3, 0], L[:, 3, 1])
        safe = np.where(rho > 0, rho, 1.0)
        cs = np.where(rho > 0, L[:, 3, 0] / safe, 1.0)
        sn = np.where(rho > 0, L[:, 3, 1] / safe, 0.0)
        A0 = L[:, :3, 0] * cs[:, None] + L[:, :3, 1] * sn[:, None]
        A1 = -L[:, :3, 0] * sn[:, None] + L[:, :3, 1] * cs[:, None]
        return cls(perm, A0, A1, L[:, 2, 2], rho, L[:, 3, 2], L[:, 3, 3])

    def take(self, idx: np.ndarray) -> _Geometry:
        return _Geometry(
            self.perm, *(getattr(self, f)[idx] for f in ("A0", "A1", "l22", "rho", "l32", "sig"))
        )

    @property
    def coefficients(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        a0 = np.maximum(np.max(np.abs(self.A0), axis=1), self.rho)
        a1 = np.max(np.abs(self.A1), axis=1)
        a2 = np.maximum(np.abs(self.l22), np.abs(self.l32))
        return a0, a1, a2, self.sig


# --------------------------------------------------------------------------------------------
# The expectation
# --------------------------------------------------------------------------------------------


def four_point(
    act: Activation, K: np.ndarray, products: Sequence[Product]
) -> tuple[np.ndarray, np.ndarray]:
    """``<prod_s prod_{k in p_s} sigma^{(k)}(z_s)>_K`` for covariances ``K`` (B, 4, 4) and
    products ``p`` (one :data:`Slot` of factors per sample).

    Returns
    -------
    values : ndarray, shape (B, len(products))
    covered : ndarray of bool, shape (B,)
        False where no one-dimensional rule reaches the accuracy (values there are NaN).
    """
    products = [tuple(tuple(int(k) for k in slot) for slot in p) for p in products]
    B = K.shape[0]
    flat = tuple(tuple(k for slot in p for k in slot) for p in products)
    slots = _slot_sets(products)
    candidates = []  # (cost, mode, (c, d), geometry, rules)
    for c, d in _OPTIONS:
        g = _Geometry.of(K, c, d)
        a0, a1, a2, aw = g.coefficients
        inner = _Rules(act, tuple(slots[c]), aw)
        outer = [_Rules(act, flat, a) for a in (a0, a1, a2)]
        n0, n1, n2 = (r.counts.astype(float) for r in outer)
        nw = inner.counts
        cost = _EVAL_COST * (n0 * n1 * n2 + n0 * n2 * nw + 2 * n0 * n1) + 2 * n0 * n1 * n2
        feasible = (n0 > 0) & (n1 > 0) & (n2 > 0) & (nw > 0)
        candidates.append((np.where(feasible, cost, np.inf), "direct", (c, d), g, (outer, inner)))
        h, raw = _lattice_steps(g, [r.largest_steps() for r in outer])
        n0, n1, n2 = raw.T
        cost = _EVAL_COST * (2 * n0 * n1 + n0 * (n1 + n2) + (n0 + n2) * nw) + n0 * n1 * n2
        feasible = (np.max(raw, axis=1) <= _LATTICE[-1]) & (nw > 0)
        candidates.append(
            (np.where(feasible, cost, np.inf), "lattice", (c, d), g, ((h, raw), inner))
        )
    costs = np.stack([cand[0] for cand in candidates])
    best = np.argmin(costs, axis=0)
    covered = np.isfinite(costs[best, np.arange(B)])
    out = np.full((B, len(products)), np.nan)
    for ci in np.unique(best[covered]):
        _, mode, (c, d), g, (extra, inner) = candidates[ci]
        sel = np.nonzero(covered & (best == ci))[0]
        if mode == "direct":
            keys = np.stack([r.index[sel] for r in extra] + [inner.index[sel]], axis=1)
        else:
            keys = np.concatenate([_counts(extra[1][sel]), inner.index[sel, None]], axis=1)
        groups, which = np.unique(keys, axis=0, return_inverse=True)
        which = which.reshape(-1)
        for q, key in enumerate(groups):
            idx = sel[which == q]
            w_rule = inner.rules[key[-1]]
            if mode == "direct":
                rules = [extra[j].rules[key[j]] for j in range(3)] + [w_rule]
                out[idx] = _direct(act, g.take(idx), rules, products, c, d)
            else:
                counts = tuple(int(v) for v in key[:3])
                out[idx] = _lattice(act, g.take(idx), extra[0][idx], counts, w_rule, products, c, d)
    if not np.all(np.isfinite(out[covered])):
        raise FloatingPointError("the integrand is not finite at some quadrature nodes")
    return out, covered


def _lattice_steps(g: _Geometry, largest: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Tied trapezoidal steps ``h`` (B, 3) as large as the self-tested ``largest`` allow, and
    the node counts they need (B, 3); an unused variable gets one node."""
    h0m, h1m, h2m = largest
    A1d, l22, rho, l32 = np.abs(g.A1[:, 2]), g.l22, g.rho, np.abs(g.l32)
    tie_d = (A1d > 0) & (l22 > 0)
    tie_c = (rho > 0) & (l32 > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h2 = np.min(
            np.stack(
                [
                    h2m,
                    np.where(tie_d, A1d * h1m / np.where(tie_d, l22, 1.0), np.inf),
                    np.where(tie_c, rho * h0m / np.where(tie_c, l32, 1.0), np.inf),
                ]
            ),
            axis=0,
        )
        h1 = np.where(tie_d, l22 * h2 / np.where(tie_d, A1d, 1.0), h1m)
        h0 = np.where(tie_c, l32 * h2 / np.where(tie_c, rho, 1.0), h0m)
    a0, a1, a2, _ = g.coefficients
    used = np.stack([a0 > 0, a1 > 0, a2 > 0], axis=1)
    h = np.stack([h0, h1, h2], axis=1)
    h = np.where(used & np.isfinite(h), h, 1.0)
    raw = np.where(used, 2 * np.floor(_U / np.maximum(h, 1e-300)) + 1, 1)
    return h, np.minimum(raw, 1e9)


def _counts(raw: np.ndarray) -> np.ndarray:
    """Node counts (B, 3) padded up to the lattice ladder (more trapezoidal nodes farther out
    change nothing) so that covariances share array shapes; unused variables keep one."""
    padded = _LATTICE[np.minimum(np.searchsorted(_LATTICE, raw), len(_LATTICE) - 1)]
    return np.where(raw == 1, 1, padded).astype(np.int64)


def _slot_sets(products: Sequence[Product]) -> list[list[Slot]]:
    """The distinct slots of each sample over the products."""
    return [sorted({p[s] for p in products}) for s in range(4)]


def _direct(
    act: Activation,
    g: _Geometry,
    rules: list[Rule],
    products: Sequence[Product],
    c: int,
    d: int,
) -> np.ndarray:
    """The rotated tensor rule with rules ``(v_0, v_1, u_2, w)`` shared by the covariances."""
    (x0, w0), (x1, w1), (x2, w2), (xw, ww) = rules
    a, b = g.perm[:2]
    ks = _slot_sets(products)
    B = len(g.rho)
    step = max(1, _CHUNK_POINTS // (len(x0) * len(x2) * (len(x1) + len(xw))))
    out = np.empty((B, len(products)))
    W01 = w0[:, None] * w1[None, :]
    for s in range(0, B, step):
        sl = slice(s, s + step)
        A0, A1 = g.A0[sl, :, None, None], g.A1[sl, :, None, None]
        z01 = A0 * x0[:, None] + A1 * x1[None, :]  # (b, 3, n0, n1)
        zd = z01[:, 2, :, :, None] + g.l22[sl, None, None, None] * x2
        mc = g.rho[sl, None, None] * x0[:, None] + g.l32[sl, None, None] * x2[None, :]
        Fa = _slot_values(act, z01[:, 0], ks[a])
        Fb = _slot_values(act, z01[:, 1], ks[b])
        Fd = _slot_values(act, zd, ks[d])
        Fc = _slot_values(act, mc[..., None] + g.sig[sl, None, None, None] * xw, ks[c])
        H = {k: (v @ ww) * w2 for k, v in Fc.items()}  # (b, n0, n2)
        for m, o in enumerate(products):
            P = W01 * Fa[o[a]] * Fb[o[b]]  # (b, n0, n1)
            G = np.einsum("bij,bijk->bik", P, Fd[o[d]])
            out[sl, m] = np.einsum("bik,bik->b", G, H[o[c]])
    return out


def _lattice(
    act: Activation,
    g: _Geometry,
    h: np.ndarray,
    counts: tuple[int, int, int],
    w_rule: Rule,
    products: Sequence[Product],
    c: int,
    d: int,
) -> np.ndarray:
    """The tied-step trapezoidal lattice for covariances sharing the node ``counts``:
    ``z_d = A0_d x_0 + delta_d (s j + k)`` and ``m_c = delta_c (i + sign(l_32) k)``, so sigma
    is evaluated on one-dimensional lattices and ``sum_j`` is a sliding-window correlation."""
    n0, n1, n2 = counts
    m0, m1, m2 = n0 // 2, n1 // 2, n2 // 2
    I, J, Kk = (np.arange(-m, m + 1) for m in (m0, m1, m2))
    xw, ww = w_rule
    a, b = g.perm[:2]
    ks = _slot_sets(products)
    B = len(g.rho)
    out = np.empty((B, len(products)))
    step = max(1, _CHUNK_POINTS // (2 * n0 * n1 * n2))
    for s in range(0, B, step):
        sl = slice(s, s + step)
        hb = h[sl]
        x = [hb[:, j, None] * idx for j, idx in enumerate((I, J, Kk))]
        w = [
            np.ones_like(xj) if n == 1 else hb[:, j, None] * np.exp(-0.5 * xj * xj) / _SQRT_2PI
            for j, (xj, n) in enumerate(zip(x, counts, strict=True))
        ]
        A0, A1 = g.A0[sl], g.A1[sl]
        za = A0[:, 0, None, None] * x[0][:, :, None] + A1[:, 0, None, None] * x[1][:, None, :]
        zb = A0[:, 1, None, None] * x[0][:, :, None] + A1[:, 1, None, None] * x[1][:, None, :]
        Fa, Fb = _slot_values(act, za, ks[a]), _slot_values(act, zb, ks[b])
        # z_d on the lattice q = s1 j + k of spacing dd (one of the two terms may be absent)
        A1d, l22 = A1[:, 2], g.l22[sl]
        s1 = np.where(A1d < 0, -1, 1)
        dd = np.where(l22 > 0, l22 * hb[:, 2], np.abs(A1d) * hb[:, 1])
        cj = ((A1d != 0) | (l22 == 0)).astype(int)
        ck = (l22 > 0).astype(int)
        Q = np.arange(-(m1 + m2), m1 + m2 + 1)
        Fd = _slot_values(
            act, A0[:, 2, None, None] * x[0][:, :, None] + dd[:, None, None] * Q, ks[d]
        )
        # m_c on the lattice p = ci i + sc k of spacing dc
        rho, l32 = g.rho[sl], g.l32[sl]
        dc = np.where(rho > 0, rho * hb[:, 0], np.abs(l32) * hb[:, 2])
        ci = (rho > 0).astype(int)
        sc = np.sign(l32).astype(int)
        mc = dc[:, None] * np.arange(-(m0 + m2), m0 + m2 + 1)
        Hc = {
            k: v @ ww
            for k, v in _slot_values(act, mc[..., None] + g.sig[sl, None, None] * xw, ks[c]).items()
        }
        rows = np.arange(hb.shape[0])[:, None, None]
        p_idx = (
            ci[:, None, None] * I[None, :, None] + sc[:, None, None] * Kk[None, None, :] + m0 + m2
        )
        generic = bool(np.all(cj == 1) and np.all(ck == 1))
        if not generic:
            q_idx = cj[:, None, None] * s1[:, None, None] * J + ck[:, None, None] * Kk[:, None]
            q_idx = q_idx + m1 + m2  # (b, n2, n1)
        W01 = w[0][:, :, None] * w[1][:, None, :]
        for m, o in enumerate(products):
            P = W01 * Fa[o[a]] * Fb[o[b]]  # (b, n0, n1)
            if generic:  # T[b, i, k] = sum_j P[b, i, j] Fd[b, i, s1 j + k]: a sliding window
                P = np.where(s1[:, None, None] < 0, P[:, :, ::-1], P)
                T = np.einsum("bij,bikj->bik", P, sliding_window_view(Fd[o[d]], n1, axis=-1))
            else:
                Fdk = Fd[o[d]][rows[..., None], np.arange(n0)[None, :, None, None], q_idx[:, None]]
                T = np.einsum("bij,bikj->bik", P, Fdk)
            out[sl, m] = np.einsum("bik,bik,bk->b", T, Hc[o[c]][rows, p_idx], w[2])
    return out


_SQRT_2PI = math.sqrt(2 * math.pi)
