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
from collections.abc import Callable, Sequence
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
_PARALLEL_WORK = 20_000_000  # evaluations from which the buckets run on several threads
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
        out = act.derivatives_at(z, [k for k in ks if k >= 0])
    if -1 in ks:
        out[-1] = z
    return out


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
    """The rules of one variable for an array of coefficients, looked up once per ladder step;
    ``index`` numbers the distinct rules (many steps share one), so covariances with the same
    rules share array shapes."""

    def __init__(self, act: Activation, products: tuple[tuple[int, ...], ...], a: np.ndarray):
        steps, at_step = np.unique(_ladder_steps(a), return_inverse=True)
        per_step = [_rule(act, products, int(v)) for v in steps]
        distinct = list({id(r): r for r in per_step}.values())  # the rules are cached objects
        number = {id(r): n for n, r in enumerate(distinct)}
        self.rules = distinct
        self.index = np.array([number[id(r)] for r in per_step])[at_step.reshape(-1)]
        self.counts = np.array([0 if r is None else len(r[0]) for r in distinct])[self.index]
        self._steps, self._at_step = steps, at_step.reshape(-1)
        self._act, self._products = act, products

    def largest_steps(self) -> np.ndarray:
        h = [_largest_step(self._act, self._products, int(v)) for v in self._steps]
        return np.array(h)[self._at_step]


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


def cholesky(K: np.ndarray, pivot_tol: float) -> np.ndarray:
    """Rank-revealing lower Cholesky factor ``L``, ``K = L L^T``, of (B, d, d) covariances:
    a pivot below ``pivot_tol`` of its variance marks a component that is a linear combination
    of the earlier ones, and its column is zero."""
    B, d, _ = K.shape
    L = np.zeros_like(K)
    for k in range(d):
        piv = K[:, k, k] - np.sum(L[:, k, :k] ** 2, axis=1)
        lkk = np.sqrt(np.where(piv <= pivot_tol * np.maximum(K[:, k, k], 1e-300), 0.0, piv))
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
        # only pivots at rounding level are dropped: inputs 1e-6 apart keep their own
        # direction, on which the other samples have O(1) coefficients (Cholesky is backward
        # stable, so keeping it costs no accuracy)
        L = cholesky(K[:, perm][:, :, perm], 4 * np.finfo(float).eps)
        rho = np.hypot(L[:, 3, 0], L[:, 3, 1])
        safe = np.where(rho > 0, rho, 1.0)
        cs = np.where(rho > 0, L[:, 3, 0] / safe, 1.0)
        sn = np.where(rho > 0, L[:, 3, 1] / safe, 0.0)
        A0 = L[:, :3, 0] * cs[:, None] + L[:, :3, 1] * sn[:, None]
        A1 = -L[:, :3, 0] * sn[:, None] + L[:, :3, 1] * cs[:, None]
        return cls(perm, A0, A1, L[:, 2, 2], rho, L[:, 3, 2], L[:, 3, 3])

    @classmethod
    def pick(cls, options: Sequence[_Geometry], option: np.ndarray, idx: np.ndarray) -> _Geometry:
        """Covariance ``idx[q]`` in the frame of ``options[option[q]]``: the samples in that
        option's order ``(a, b, d, c)``, so ``perm`` is the identity."""
        fields = ("A0", "A1", "l22", "rho", "l32", "sig")
        out = {f: np.empty((len(idx),) + getattr(options[0], f).shape[1:]) for f in fields}
        for o in np.unique(option):
            at = option == o
            for f in fields:
                out[f][at] = getattr(options[o], f)[idx[at]]
        return cls((0, 1, 2, 3), **out)

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

    Each covariance gets its cheapest scheme.  Covariances whose schemes see the same set of
    products (in the scheme's order ``(a, b, d, c)``) are then integrated together, in buckets
    of similar node counts padded to the bucket's largest (zero-weight nodes, or trapezoidal
    nodes beyond ``|u| = 9``, change nothing), so the array work runs in few, large calls.

    Returns
    -------
    values : ndarray, shape (B, len(products))
    covered : ndarray of bool, shape (B,)
        False where no one-dimensional rule reaches the accuracy (values there are NaN).
    """
    asked = [tuple(tuple(int(k) for k in slot) for slot in p) for p in products]
    products = list(dict.fromkeys(asked))  # each distinct product once
    B = K.shape[0]
    flat = tuple(tuple(k for slot in p for k in slot) for p in products)
    slots = _slot_sets(products)
    geometries, costs, rules, steps = [], [], [], []
    for c, d in _OPTIONS:
        g = _Geometry.of(K, c, d)
        a0, a1, a2, aw = g.coefficients
        per_variable = [_Rules(act, flat, a) for a in (a0, a1, a2)]
        per_variable.append(_Rules(act, tuple(slots[c]), aw))
        n0, n1, n2, nw = (r.counts.astype(float) for r in per_variable)
        direct = _EVAL_COST * (n0 * n1 * n2 + n0 * n2 * nw + 2 * n0 * n1) + 2 * n0 * n1 * n2
        h, raw = _lattice_steps(g, [r.largest_steps() for r in per_variable[:3]])
        n0, n1, n2 = raw.T
        lattice = _EVAL_COST * (2 * n0 * n1 + n0 * (n1 + n2) + (n0 + n2) * nw) + n0 * n1 * n2
        feasible = np.all([r.counts > 0 for r in per_variable], axis=0)
        costs += [np.where(feasible, direct, np.inf)]
        costs += [np.where(feasible & (np.max(raw, axis=1) <= _LATTICE[-1]), lattice, np.inf)]
        geometries.append(g)
        rules.append(per_variable)
        steps.append((h, _counts(raw)))
    cost = np.stack(costs)
    best = np.argmin(cost, axis=0)  # 2 * option + (0: direct, 1: lattice)
    covered = np.isfinite(cost[best, np.arange(B)])
    out = np.full((B, len(products)), np.nan)
    table = _RuleTable([r for per_variable in rules for r in per_variable])
    # the products as each option orders them, (a, b, d, c), and their output columns
    seen = [tuple(sorted(tuple(p[s] for s in g.perm) for p in products)) for g in geometries]
    columns = [
        [products.index(tuple(p[g.perm.index(s)] for s in range(4))) for p in seen[o]]
        for o, g in enumerate(geometries)
    ]
    groups: dict[tuple[int, tuple[Product, ...]], list[int]] = {}
    for scheme in np.unique(best[covered]):
        groups.setdefault((scheme % 2, seen[scheme // 2]), []).append(int(scheme))
    tasks = []
    for (lattice_mode, order), schemes in groups.items():
        idx = np.concatenate([np.nonzero(covered & (best == sc))[0] for sc in schemes])
        option = best[idx] // 2
        g = _Geometry.pick(geometries, option, idx)
        number = np.empty((len(idx), 4), dtype=np.int64)  # each variable's rule in the table
        h = np.empty((len(idx), 3))
        counts = np.empty((len(idx), 4), dtype=np.int64)
        for o in np.unique(option):
            at = option == o
            number[at] = np.stack([table.numbers(r, idx[at]) for r in rules[o]], axis=1)
            h[at], counts[at, :3] = steps[o][0][idx[at]], steps[o][1][idx[at]]
        if not lattice_mode:
            counts[:, :3] = table.counts[number[:, :3]]
        counts[:, 3] = table.counts[number[:, 3]]

        def task(
            part: np.ndarray,
            lattice_mode: int = lattice_mode,
            order: tuple = order,
            idx: np.ndarray = idx,
            option: np.ndarray = option,
            g: _Geometry = g,
            number: np.ndarray = number,
            h: np.ndarray = h,
            counts: np.ndarray = counts,
        ) -> None:
            n = np.max(counts[part], axis=0)
            w_rule = table.padded(number[part, 3], n[3])
            if lattice_mode:
                single = counts[part, :3] == 1
                values = _lattice(act, g.take(part), h[part], tuple(n[:3]), single, w_rule, order)
            else:
                nodes = [table.padded(number[part, j], n[j]) for j in range(3)] + [w_rule]
                values = _direct(act, g.take(part), nodes, order)
            for o in np.unique(option[part]):
                mine = option[part] == o
                out[np.ix_(idx[part][mine], columns[o])] = values[mine]  # disjoint rows

        tasks += [(task, part, float(np.sum(_work(counts[part])))) for part in _buckets(counts)]
    _run(tasks)
    if not np.all(np.isfinite(out[covered])):
        raise FloatingPointError("the integrand is not finite at some quadrature nodes")
    return out[:, [products.index(p) for p in asked]], covered


class _RuleTable:
    """The distinct rules of several :class:`_Rules`, as rows of zero-padded node and weight
    tables, so a bucket's rules are gathered as (b, n) arrays."""

    def __init__(self, all_rules: Sequence[_Rules]) -> None:
        distinct: dict[int, Rule] = {}
        for r in all_rules:
            for rule in r.rules:
                if rule is not None:
                    distinct.setdefault(id(rule), rule)
        self._row = {key: n for n, key in enumerate(distinct)}
        width = max(len(x) for x, _ in distinct.values())
        self.x = np.zeros((len(distinct), width))
        self.w = np.zeros((len(distinct), width))
        self.counts = np.zeros(len(distinct), dtype=np.int64)
        for n, (x, w) in enumerate(distinct.values()):
            self.x[n, : len(x)], self.w[n, : len(x)], self.counts[n] = x, w, len(x)

    def numbers(self, r: _Rules, idx: np.ndarray) -> np.ndarray:
        """The table rows of ``r``'s rules at the coefficients ``idx``."""
        rows = np.array([self._row.get(id(rule), -1) for rule in r.rules])
        return rows[r.index[idx]]

    def padded(self, rows: np.ndarray, n: int) -> Rule:
        """Nodes and weights (b, n) of the rules in ``rows``, zero-weight nodes appended."""
        return self.x[rows, :n], self.w[rows, :n]


def _work(counts: np.ndarray) -> np.ndarray:
    """Evaluations of sigma per covariance of node counts ``(n_0, n_1, n_2, n_w)`` (b, 4)."""
    n0, n1, n2, nw = counts.T.astype(float)
    return n0 * n2 * (n1 + nw)


def _run(tasks: list[tuple[Callable[[np.ndarray], None], np.ndarray, float]]) -> None:
    """Run the buckets, on the Gaussian engine's worker threads when there is enough work
    (numpy releases the GIL in its loops; the buckets write disjoint rows)."""
    from .gaussian import _IN_POOL, _THREADS, _pool

    total = sum(work for _, _, work in tasks)
    if _THREADS == 1 or total < _PARALLEL_WORK or getattr(_IN_POOL, "flag", False):
        for task, part, _ in tasks:
            task(part)
        return
    tasks = sorted(tasks, key=lambda t: -t[2])  # the long ones first, so the threads end together
    for f in [_pool().submit(task, part) for task, part, _ in tasks]:
        f.result()


def _buckets(counts: np.ndarray, waste: float = 1.3) -> list[np.ndarray]:
    """Split covariances with node counts ``counts`` (b, 4) = ``(n_0, n_1, n_2, n_w)`` into
    buckets whose padded work (the largest counts, times their number) stays within ``waste``
    of the work itself and below ``_CHUNK_POINTS`` evaluations.  Greedy, in lexicographic
    order."""

    def work(n: Sequence[int]) -> int:
        return n[0] * n[2] * (n[1] + n[3])

    order = np.lexsort(counts.T[::-1])
    rows = counts[order].tolist()
    out, start, top, total = [], 0, rows[0], 0
    for pos, n in enumerate(rows):
        new_top = [max(t, v) for t, v in zip(top, n, strict=True)]
        padded = (pos - start + 1) * work(new_top)
        if pos > start and (padded > waste * (total + work(n)) or padded > _CHUNK_POINTS):
            out.append(order[start:pos])
            start, new_top, total = pos, n, 0
        top, total = new_top, total + work(n)
    out.append(order[start:])
    return out


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
    act: Activation, g: _Geometry, rules: list[Rule], order: Sequence[Product]
) -> np.ndarray:
    """The rotated tensor rule, one rule per variable ``(v_0, v_1, u_2, w)`` and covariance:
    nodes and weights (b, n) each; ``order`` the products with their slots as ``(a, b, d, c)``.
    """
    (x0, w0), (x1, w1), (x2, w2), (xw, ww) = rules
    ks = _slot_sets(order)
    A0, A1 = g.A0[:, :, None, None], g.A1[:, :, None, None]
    z01 = A0 * x0[:, None, :, None] + A1 * x1[:, None, None, :]  # (b, 3, n0, n1)
    zd = z01[:, 2, :, :, None] + g.l22[:, None, None, None] * x2[:, None, None, :]
    mc = g.rho[:, None, None] * x0[:, :, None] + g.l32[:, None, None] * x2[:, None, :]
    Fa = _slot_values(act, z01[:, 0], ks[0])
    Fb = _slot_values(act, z01[:, 1], ks[1])
    Fd = _slot_values(act, zd, ks[2])
    Fc = _slot_values(act, mc[..., None] + g.sig[:, None, None, None] * xw[:, None, None], ks[3])
    H = {k: np.einsum("bikw,bw->bik", v, ww) * w2[:, None, :] for k, v in Fc.items()}

    def R(kd: Slot, kc: Slot) -> np.ndarray:  # sum_k f_d H
        return np.einsum("bijk,bik->bij", Fd[kd], H[kc])

    return _contract(w0[:, :, None] * w1[:, None, :], Fa, Fb, R, order)


def _lattice(
    act: Activation,
    g: _Geometry,
    h: np.ndarray,
    counts: tuple[int, int, int],
    unused: np.ndarray,
    w_rule: Rule,
    order: Sequence[Product],
) -> np.ndarray:
    """The tied-step trapezoidal lattice, steps ``h`` (b, 3), the variables ``unused`` (b, 3)
    and the inner rule (b, n_w) per covariance, node ``counts`` shared: ``z_d = A0_d x_0 +
    delta_d (s j + k)`` and ``m_c = delta_c (i + sign(l_32) k)``, so sigma is evaluated on
    one-dimensional lattices and ``sum_k`` is a sliding-window correlation."""
    n0, n1, n2 = counts
    m0, m1, m2 = n0 // 2, n1 // 2, n2 // 2
    I, J, Kk = (np.arange(-m, m + 1) for m in (m0, m1, m2))
    xw, ww = w_rule
    ks = _slot_sets(order)
    x = [h[:, j, None] * idx for j, idx in enumerate((I, J, Kk))]
    w = [  # a variable a covariance does not use has one node of weight 1, at 0
        np.where(unused[:, j, None], idx == 0, h[:, j, None] * np.exp(-0.5 * xj * xj) / _SQRT_2PI)
        for j, (xj, idx) in enumerate(zip(x, (I, J, Kk), strict=True))
    ]
    A0, A1 = g.A0, g.A1
    za = A0[:, 0, None, None] * x[0][:, :, None] + A1[:, 0, None, None] * x[1][:, None, :]
    zb = A0[:, 1, None, None] * x[0][:, :, None] + A1[:, 1, None, None] * x[1][:, None, :]
    Fa, Fb = _slot_values(act, za, ks[0]), _slot_values(act, zb, ks[1])
    # z_d on the lattice q = s1 j + k of spacing dd (one of the two terms may be absent)
    A1d, l22 = A1[:, 2], g.l22
    s1 = np.where(A1d < 0, -1, 1)
    dd = np.where(l22 > 0, l22 * h[:, 2], np.abs(A1d) * h[:, 1])
    cj = ((A1d != 0) | (l22 == 0)).astype(int)
    ck = (l22 > 0).astype(int)
    Q = np.arange(-(m1 + m2), m1 + m2 + 1)
    Fd = _slot_values(act, A0[:, 2, None, None] * x[0][:, :, None] + dd[:, None, None] * Q, ks[2])
    # m_c on the lattice p = ci i + sc k of spacing dc
    rho, l32 = g.rho, g.l32
    dc = np.where(rho > 0, rho * h[:, 0], np.abs(l32) * h[:, 2])
    ci = (rho > 0).astype(int)
    sc = np.sign(l32).astype(int)
    mc = dc[:, None] * np.arange(-(m0 + m2), m0 + m2 + 1)
    Fc = _slot_values(act, mc[..., None] + g.sig[:, None, None] * xw[:, None, :], ks[3])
    Hc = {k: np.einsum("bpw,bw->bp", v, ww) for k, v in Fc.items()}
    rows = np.arange(h.shape[0])[:, None, None]
    p_idx = ci[:, None, None] * I[None, :, None] + sc[:, None, None] * Kk[None, None, :] + m0 + m2
    generic = bool(np.all(cj == 1) and np.all(ck == 1))
    if not generic:
        q_idx = cj[:, None, None] * s1[:, None, None] * J + ck[:, None, None] * Kk[:, None]
        q_idx = q_idx + m1 + m2  # (b, n2, n1)

    def R(kd: Slot, kc: Slot) -> np.ndarray:  # sum_k f_d H w_2
        G = Hc[kc][rows, p_idx] * w[2][:, None, :]  # (b, n0, n2)
        if generic:  # R[b, i, j] = sum_k Fd[b, i, s1 j + k] G[b, i, k]: a sliding window
            Rj = np.einsum("bijk,bik->bij", sliding_window_view(Fd[kd], n2, axis=-1), G)
            return np.where(s1[:, None, None] < 0, Rj[:, :, ::-1], Rj)
        Fdk = Fd[kd][rows[..., None], np.arange(n0)[None, :, None, None], q_idx[:, None]]
        return np.einsum("bikj,bik->bij", Fdk, G)

    return _contract(w[0][:, :, None] * w[1][:, None, :], Fa, Fb, R, order)


def _contract(
    W01: np.ndarray,
    Fa: dict[Slot, np.ndarray],
    Fb: dict[Slot, np.ndarray],
    R: Callable[[Slot, Slot], np.ndarray],
    order: Sequence[Product],
) -> np.ndarray:
    """``sum_ij W01 f_a f_b R(slot d, slot c)`` for every product, (b, len(order)): the
    distinct outer factors and the distinct ``R`` (the expensive part, shared by the products
    with the same slots ``d, c``) stacked, then one batched matrix product."""
    outer = sorted({o[:2] for o in order})
    inner = sorted({o[2:] for o in order})
    b = W01.shape[0]
    P = np.stack([W01 * Fa[ka] * Fb[kb] for ka, kb in outer], axis=1).reshape(b, len(outer), -1)
    Rs = np.stack([R(kd, kc) for kd, kc in inner], axis=1).reshape(b, len(inner), -1)
    M = P @ Rs.transpose(0, 2, 1)  # (b, outer, inner)
    return M[:, [outer.index(o[:2]) for o in order], [inner.index(o[2:]) for o in order]]


_SQRT_2PI = math.sqrt(2 * math.pi)
