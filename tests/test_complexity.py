"""Epilogue ε: coupling counts, six-point vertex, aspect ratio (spec/08 §1).

Expected values are computed independently of the code under test:

* coupling counts by brute force: orbits of index tuples under each tensor's symmetry group,
  and -- without assuming the symmetries -- the dimension of the space of correlators the
  book's decompositions (4.77), (8.67), (8.82), (11.45), (∞.11), (∞.12) can produce once the
  correlator's own permutation symmetry is imposed (the symmetry of each tensor is *derived*
  here from the decomposition); the action couplings (ε.18) by the rank of the map to
  polynomials in the preactivations;
* the six-point vertex against the book's ReLU recursion (ε.20) book.txt L39305-L39313 typed in
  literally, its critical solution and the ``75 l^2`` of (ε.21) L39315-L39318, the exact deep
  linear network (``pdlt.theory.deep_linear``, spec/01 §6.4), the second-layer cumulant (4.59)
  (``six_point_second_layer``, quadrature code), quadrature of ``<sigma^{2m}>``, and ensembles
  of real ReLU / leaky-ReLU networks (numpy, float64, fixed seed).
"""

from __future__ import annotations

import itertools
import math
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from scipy import integrate

import pdlt
from pdlt.activations import activation
from pdlt.complexity import (
    aspect_ratio,
    count_action_couplings,
    count_couplings,
    six_point_vertex,
)
from pdlt.theory import deep_linear
from pdlt.theory.four_point import six_point_second_layer
from pdlt.theory.kernel import helpers

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# aspect ratio (ε.1)
# --------------------------------------------------------------------------------------------


def test_aspect_ratio():
    assert aspect_ratio(3, 12) == 0.25
    assert pdlt.aspect_ratio(10, 10) == 1.0
    for bad in [(0, 10), (3, 0), (2.0, 10), (3, -1), (True, 4)]:
        with pytest.raises(ValueError, match="positive integer"):
            aspect_ratio(*bad)


# --------------------------------------------------------------------------------------------
# coupling counts (ε.13)-(ε.15), (ε.18), (ε.23)
# --------------------------------------------------------------------------------------------


def test_infinite_width_count_is_eps14():
    # (ε.14) book.txt L39145-L39170: n_out N_A + N_D(N_D+1)/2 + N_D(N_D+1)/2
    for N_D, N_A, n_out in [(1, 1, 1), (5, 3, 2), (100, 80, 10)]:
        c = pdlt.count_couplings(N_D, N_A, n_out)
        assert c.total == n_out * N_A + N_D * (N_D + 1)
        assert c.tensors == {"y": n_out * N_A, "K": N_D * (N_D + 1) // 2, "Theta": c.tensors["K"]}
        assert (c.order, c.leading_power, c.leading_coefficient) == (0, 2, 1.0)


def _orbits(N: int, k: int, generators: list[tuple[int, ...]]) -> int:
    """Number of orbits of {0..N-1}^k under the permutations of positions ``generators``."""
    seen: set[tuple[int, ...]] = set()
    orbits = 0
    for t in itertools.product(range(N), repeat=k):
        if t in seen:
            continue
        orbits += 1
        seen.add(t)
        stack = [t]
        while stack:
            u = stack.pop()
            for g in generators:
                v = tuple(u[g[i]] for i in range(k))
                if v not in seen:
                    seen.add(v)
                    stack.append(v)
    return orbits


# index-position permutations generating each symmetry group (table in count_couplings)
_SYMMETRIES = {
    "G": [(1, 0)],
    "H": [(1, 0)],
    "V": [(1, 0, 2, 3), (0, 1, 3, 2), (2, 3, 0, 1)],
    "A": [(1, 0, 2, 3), (0, 1, 3, 2), (2, 3, 0, 1)],
    "B": [(1, 0, 3, 2), (2, 3, 0, 1)],
    "D": [(1, 0, 2, 3), (0, 1, 3, 2)],
    "F": [(2, 3, 0, 1)],
    "P": [(0, 2, 1, 3)],
    "Q": [],
    "R": [(0, 1, 3, 2)],
    "S": [(1, 0, 3, 2)],
    "T": [(3, 2, 1, 0)],
    "U": [(2, 3, 0, 1)],
}


@pytest.mark.parametrize("N_D", [1, 2, 3, 4])
def test_order1_counts_are_orbit_counts(N_D):
    c = count_couplings(N_D, 1, n_out=3, order=1)
    assert list(c.tensors) == ["y", "G", "H", *"VABDFPQRSTU"]
    assert c.tensors["y"] == 3
    for name, gens in _SYMMETRIES.items():
        assert c.tensors[name] == _orbits(N_D, len(gens[0]) if gens else 4, gens), name
    assert c.total == sum(c.tensors.values())


@pytest.mark.parametrize("N_D", [1, 2, 3])
def test_action_counts_are_orbit_counts(N_D):
    within = [(1, 0, 2, 3, 4, 5)]
    pairs = [(2, 3, 0, 1, 4, 5), (0, 1, 4, 5, 2, 3)]
    c = count_action_couplings(N_D, 2)
    assert c.tensors["g"] == _orbits(N_D, 2, [(1, 0)])
    assert c.tensors["v"] == _orbits(N_D, 4, _SYMMETRIES["V"])
    assert c.tensors["u"] == _orbits(N_D, 6, within + pairs)
    assert count_action_couplings(N_D, 1).tensors == {"g": c.tensors["g"], "v": c.tensors["v"]}
    assert count_action_couplings(N_D, 0).total == c.tensors["g"]


def _group(generators: list[tuple[int, ...]], k: int) -> list[tuple[int, ...]]:
    group = {tuple(range(k))}
    frontier = list(group)
    while frontier:
        g = frontier.pop()
        for h in generators:
            gh = tuple(g[h[i]] for i in range(k))
            if gh not in group:
                group.add(gh)
                frontier.append(gh)
    return sorted(group)


def _decomposition_counts(
    N: int, terms: list[tuple[str, tuple[int, int, int, int], tuple[int, int, int, int]]], legs
) -> dict[str, int]:
    """Independent entries of each tensor of a four-leg decomposition, derived by linear algebra.

    A term ``(X, (a, b, c, d), p)`` is ``delta_{i_a i_b} delta_{i_c i_d} X_{alpha_p0 .. alpha_p3}``.
    The correlator built from free tensors is symmetrized over the permutations ``legs`` of its
    legs ``(i, alpha)`` (the symmetry of the correlator itself, e.g. of the NTK); the rank of
    that map, per tensor, is the number of tensor entries a symmetric correlator determines.
    """
    n = 2  # two neurons separate the three Kronecker structures
    dn, dN = np.eye(n), np.eye(N)
    group = _group(legs, 4)
    ranks: dict[str, int] = {}
    for name in dict.fromkeys(t[0] for t in terms):
        M = np.zeros((n,) * 4 + (N,) * 4 + (N,) * 4)
        for X, (a, b, c, d), p in terms:
            if X != name:
                continue
            # M[i0..i3, al0..al3, be0..be3] += d(i_a,i_b) d(i_c,i_d) prod_m d(be_m, al_{p_m})
            ii, al, be = "ijkl", "mnop", "qrst"
            spec = f"{ii[a]}{ii[b]},{ii[c]}{ii[d]}," + ",".join(
                f"{be[m]}{al[p[m]]}" for m in range(4)
            )
            M += np.einsum(f"{spec}->{ii}{al}{be}", dn, dn, dN, dN, dN, dN)
        sym = sum(M.transpose(*g, *(4 + x for x in g), 8, 9, 10, 11) for g in group)
        ranks[name] = int(np.linalg.matrix_rank(sym.reshape(n**4 * N**4, N**4)))
    return ranks


_DECOMPOSITIONS = {
    # (4.77) L8125: E[z z z z]_conn, all four preactivations commute
    "(4.77)": (
        [
            ("V", (0, 1, 2, 3), (0, 1, 2, 3)),
            ("V", (0, 2, 1, 3), (0, 2, 1, 3)),
            ("V", (0, 3, 1, 2), (0, 3, 1, 2)),
        ],
        [(1, 0, 2, 3), (0, 1, 3, 2), (2, 3, 0, 1), (0, 2, 1, 3)],
    ),
    # (8.67) L21025: E[z_{i1;a1} z_{i2;a2} dH_{i3 i4;a3 a4}]: z's commute, NTK symmetric
    "(8.67)": (
        [
            ("D", (0, 1, 2, 3), (0, 1, 2, 3)),
            ("F", (0, 2, 1, 3), (0, 2, 1, 3)),
            ("F", (0, 3, 1, 2), (0, 3, 1, 2)),
        ],
        [(1, 0, 2, 3), (0, 1, 3, 2)],
    ),
    # (8.82) L21752: E[dH_{i1 i2;a1 a2} dH_{i3 i4;a3 a4}]
    "(8.82)": (
        [
            ("A", (0, 1, 2, 3), (0, 1, 2, 3)),
            ("B", (0, 2, 1, 3), (0, 2, 1, 3)),
            ("B", (0, 3, 1, 2), (0, 3, 1, 2)),
        ],
        [(1, 0, 2, 3), (0, 1, 3, 2), (2, 3, 0, 1)],
    ),
    # (11.45) L30476: E[dH_{i0 i1 i2;d0 d1 d2} z_{i3;d3}], dNTK symmetric in its last two legs
    "(11.45)": (
        [
            ("P", (0, 3, 1, 2), (0, 1, 2, 3)),
            ("Q", (0, 1, 2, 3), (0, 1, 2, 3)),
            ("Q", (0, 2, 1, 3), (0, 2, 1, 3)),
        ],
        [(0, 2, 1, 3)],
    ),
    # (∞.11) L33700: E[ddIH_{i0 i1 i2 i3}], totally symmetric in its last three legs
    "(∞.11)": (
        [
            ("R", (0, 1, 2, 3), (0, 1, 2, 3)),
            ("R", (0, 2, 3, 1), (0, 2, 3, 1)),
            ("R", (0, 3, 1, 2), (0, 3, 1, 2)),
        ],
        [(0, 2, 1, 3), (0, 1, 3, 2)],
    ),
    # (∞.12) L33718: E[ddIIH_{i1 i2 i3 i4}], symmetric only under (1 <-> 2, 3 <-> 4) jointly
    "(∞.12)": (
        [
            ("S", (0, 1, 2, 3), (0, 1, 2, 3)),
            ("T", (0, 2, 3, 1), (0, 2, 3, 1)),
            ("U", (0, 3, 1, 2), (0, 3, 1, 2)),
        ],
        [(1, 0, 3, 2)],
    ),
}


@pytest.mark.parametrize("N_D", [2, 3])
@pytest.mark.parametrize("eq", list(_DECOMPOSITIONS))
def test_order1_counts_follow_from_the_book_decompositions(eq, N_D):
    terms, legs = _DECOMPOSITIONS[eq]
    counts = count_couplings(N_D, 1, order=1).tensors
    for name, rank in _decomposition_counts(N_D, terms, legs).items():
        assert counts[name] == rank, (eq, name)


def _action_rank(N: int, legs: int) -> int:
    """Dimension of the polynomials ``sum_{i's} c_{d1..d(2 legs)} z_{i1;d1} z_{i1;d2} ...``
    (3 neurons) spanned by all coefficient tensors ``c`` -- the number of couplings that act."""
    n = 3
    rows: dict[tuple, int] = {}
    cols = []
    for deltas in itertools.product(range(N), repeat=2 * legs):
        col: dict[int, float] = {}
        for neurons in itertools.product(range(n), repeat=legs):
            mono = tuple(sorted((neurons[m // 2], deltas[m]) for m in range(2 * legs)))
            r = rows.setdefault(mono, len(rows))
            col[r] = col.get(r, 0.0) + 1.0
        cols.append(col)
    A = np.zeros((len(rows), len(cols)))
    for j, col in enumerate(cols):
        for r, v in col.items():
            A[r, j] = v
    return int(np.linalg.matrix_rank(A))


@pytest.mark.parametrize("N_D", [1, 2, 3])
def test_action_counts_are_the_couplings_that_act(N_D):
    c = count_action_couplings(N_D, 2).tensors
    assert [c["g"], c["v"], c["u"]] == [_action_rank(N_D, k) for k in (1, 2, 3)]


def test_leading_power_and_coefficient():
    # the counts are polynomials in N_D: the p-th finite difference / p! is the leading
    # coefficient, the (p+1)-th vanishes; (ε.14) N^2, (ε.15) N^4, (ε.23) N^6
    def check(count, p, coef):
        vals = [Fraction(count(N)) for N in range(1, p + 3)]
        for _ in range(p):
            vals = [b - a for a, b in itertools.pairwise(vals)]
        assert vals[0] == vals[1] == coef * math.factorial(p)

    for order, coef in [(0, 1), (1, Fraction(19, 4))]:
        c = count_couplings(5, 2, order=order)
        assert c.leading_power == 2 * order + 2 and c.leading_coefficient == float(coef)
        check(lambda N, o=order: count_couplings(N, 1, order=o).total, 2 * order + 2, coef)
    for order, coef in [(0, Fraction(1, 2)), (1, Fraction(1, 8)), (2, Fraction(1, 48))]:
        c = count_action_couplings(5, order)
        assert c.leading_power == 2 * order + 2 and c.leading_coefficient == float(coef)
        check(lambda N, o=order: count_action_couplings(N, o).total, 2 * order + 2, coef)


def test_count_validation():
    with pytest.raises(ValueError, match="N_A must be <= N_D"):
        count_couplings(3, 4)
    with pytest.raises(ValueError, match="N_D must be a positive integer"):
        count_couplings(0, 1)
    with pytest.raises(ValueError, match="n_out must be a positive integer"):
        count_couplings(3, 1, n_out=1.5)
    with pytest.raises(ValueError, match=r"order must be 0 .* or 1 .*count_action_couplings"):
        count_couplings(3, 1, order=2)
    for order in (True, 1.0, -1):
        with pytest.raises(ValueError, match="order must be 0"):
            count_couplings(3, 1, order=order)
    with pytest.raises(ValueError, match=r"order must be 0 \(Gaussian\), 1 .* or 2"):
        count_action_couplings(3, 3)


# --------------------------------------------------------------------------------------------
# six-point vertex (ε.20)-(ε.21)
# --------------------------------------------------------------------------------------------


def test_relu_critical_solution_and_eps21():
    r = six_point_vertex(1.0, 0.0, C_W=2.0, K1=0.7, depth=200)
    ell, K = r.ell.astype(float), 0.7
    np.testing.assert_allclose(r.K, K)
    np.testing.assert_allclose(r.V, 5 * (ell - 1) * K**2, rtol=1e-13)
    np.testing.assert_allclose(r.U6, (ell - 1) * (75 * ell - 106) * K**3, rtol=1e-12)
    # (ε.21): U6/(n^2 K^3) = 75 l^2/n^2 + ...: leading coefficient of a quadratic fit
    coef = np.polyfit(ell, r.U6 / K**3, 2)
    np.testing.assert_allclose(coef, [75, -181, 106], rtol=1e-9, atol=1e-7)


def test_relu_is_the_books_recursion_eps20():
    # (ε.20) typed in literally, away from criticality, with the book's K and V recursions
    # (5.109) for ReLU: K' = (C_W/2) K, V' = (C_W/2)^2 V + C_W^2 (3/2 - 1/4) K^2
    C_W, K1, L = 1.7, 0.8, 12
    r = six_point_vertex(1.0, 0.0, C_W=C_W, K1=K1, depth=L)
    K, V, U = K1, 0.0, 0.0
    for ell in range(1, L):
        assert r.K[ell - 1] == pytest.approx(K, rel=1e-14)
        assert r.V[ell - 1] == pytest.approx(V, rel=1e-14, abs=1e-300)
        assert r.U6[ell - 1] == pytest.approx(U, rel=1e-14, abs=1e-300)
        K, V, U = (
            C_W / 2 * K,
            (C_W / 2) ** 2 * V + C_W**2 * 1.25 * K**2,
            C_W**3 / 8 * (U + 30 * V * K + 44 * K**3),
        )
    assert (r.chi, r.v2, r.k3) == pytest.approx((C_W / 2, 5 * C_W**2 / 4, 11 * C_W**3 / 2))


@pytest.mark.parametrize("slopes", [(1.0, 0.2), (1.3, -0.4), (0.5, 2.0)])
def test_coefficients_by_quadrature_and_V_against_the_vertex_recursion(slopes):
    ap, am = slopes
    C_W, K1 = 1.1, 0.9

    def moment(m):  # <sigma^{2m}> over N(0, 1), by quadrature
        f = lambda z, a: (a * z) ** (2 * m) * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
        return (
            integrate.quad(f, 0, np.inf, args=(ap,))[0]
            + integrate.quad(f, -np.inf, 0, args=(am,))[0]
        )

    s2, s4, s6 = moment(1), moment(2), moment(3)
    r = six_point_vertex(ap, am, C_W=C_W, K1=K1, depth=6)
    assert r.chi == pytest.approx(C_W * s2, rel=1e-10)
    assert r.v2 == pytest.approx(C_W**2 * (s4 - s2**2), rel=1e-10)  # n Var(Y)
    assert r.k3 == pytest.approx(C_W**3 * (s6 - 3 * s4 * s2 + 2 * s2**3), rel=1e-10)  # n^2 k3(Y)
    # K and V against the library's vertex recursion (5.109) for this activation
    act = activation(f"scale_invariant:{ap},{am}")
    V = 0.0
    for ell in range(1, 6):
        hp = helpers(act, r.K[ell - 1], C_W)
        V = float(hp.chi_par) ** 2 * V + float(hp.s_V)
        assert r.K[ell] == pytest.approx(C_W * float(hp.g), rel=1e-10)
        assert r.V[ell] == pytest.approx(V, rel=1e-9)


@pytest.mark.parametrize("act_name", ["relu", "leaky_relu:0.2", "scale_invariant:1.3,-0.4"])
def test_second_layer_is_exact_and_matches_4_59(act_name):
    # for l = 2 the six-point vertex is the third cumulant of the second-layer metric, with no
    # 1/n corrections; compare with (4.59) evaluated by the library's Gaussian integrals
    act = activation(act_name)
    ap, am = act.scale_invariant
    C_W, K1, n = 1.4, 0.6, 7
    r = six_point_vertex(ap, am, C_W=C_W, K1=K1, depth=2, n=n)
    assert r.U6_exact[1] == r.U6[1]
    expected = six_point_second_layer(act, np.array([[K1]]), C_W, n, (0,) * 6)
    assert r.U6[1] / n**2 == pytest.approx(expected, rel=1e-8)


def test_linear_against_the_exact_deep_linear_network():
    # a_+ = a_- = 1: Y = C_W chi2_n/n, whose cumulants give v2 = 2 C_W^2, k3 = 8 C_W^3;
    # exact finite-width connected 4- and 6-point coefficients (3.29), (3.57) of spec/01 §6.4
    C_W, K1, n, L = 1.3, 0.7, 5, 7
    r = six_point_vertex(1.0, 1.0, C_W=C_W, K1=K1, depth=L, n=n)
    assert (r.chi, r.v2, r.k3) == pytest.approx((C_W, 2 * C_W**2, 8 * C_W**3), rel=1e-14)
    widths = [3] + [n] * (L - 1) + [1]
    c4, c6 = deep_linear.connected(widths, C_W, K1 / C_W)
    np.testing.assert_allclose(r.K, deep_linear.moments_2m(widths, C_W, K1 / C_W, 1), rtol=1e-13)
    np.testing.assert_allclose(r.V_exact / n, c4, rtol=1e-12)
    np.testing.assert_allclose(r.U6_exact / n**2, c6, rtol=1e-11, atol=1e-12)
    # leading order at criticality: 4 (l - 1)(3 l - 4) K^3 (spec/01 §6.4)
    crit = six_point_vertex(1.0, 1.0, C_W=1.0, K1=K1, depth=L)
    ell = crit.ell
    np.testing.assert_allclose(crit.U6, 4 * (ell - 1) * (3 * ell - 4) * K1**3, rtol=1e-13)


def test_exact_values_closed_forms_and_large_width_limit():
    ell = np.arange(1, 9)
    # ReLU at C_W = 2 (spec/08 §2.5): E[Y^2] = 1 + 5/n, E[Y^3] = 1 + 15/n + 44/n^2
    for n in (3, 16, 64):
        r = six_point_vertex(1.0, 0.0, C_W=2.0, K1=1.0, depth=8, n=n)
        m2, m3 = (1 + 5 / n) ** (ell - 1), (1 + 15 / n + 44 / n**2) ** (ell - 1)
        np.testing.assert_allclose(r.V_exact / n, m2 - 1, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(r.U6_exact / n**2, m3 - 3 * m2 + 2, rtol=1e-10, atol=1e-15)
    # leaky ReLU at criticality: w = V/(n K^2) = (1 + nu/n)^(l-1) - 1, nu = 3 A4/A2^2 - 1;
    # U6 = [3 nu^2 (l-1)(l-2) + k3 (l-1)] K^3; the exact values approach it as O(l/n)
    a = 0.2
    A2, A4 = (1 + a**2) / 2, (1 + a**4) / 2
    nu = 3 * A4 / A2**2 - 1
    scaled = []
    for n in (10, 1000, 100_000):
        r = six_point_vertex(1.0, a, C_W=1 / A2, K1=2.0, depth=8, n=n)
        w = (1 + nu / n) ** (ell - 1) - 1
        np.testing.assert_allclose(r.V_exact / (n * 4.0), w, rtol=1e-10)
        lead = (3 * nu**2 * (ell - 1) * (ell - 2) + r.k3 * (ell - 1)) * 8.0
        np.testing.assert_allclose(r.U6, lead, rtol=1e-12)
        scaled.append((r.U6_exact[1:] / r.U6[1:] - 1) * n / ell[1:])
    # relative corrections O(l/n): (exact/leading - 1) n/l converges as n grows
    np.testing.assert_allclose(scaled[1], scaled[2], rtol=0.03)
    assert scaled[2][0] == 0 and np.all((scaled[2][1:] > 1) & (scaled[2][1:] < 5))  # l = 2 exact
    assert r.v2 == pytest.approx(nu, rel=1e-14)  # v2 = nu at criticality (spec/08 §1.5)


def test_six_point_vertex_validation():
    ok = dict(C_W=2.0, K1=1.0, depth=3)
    for kwargs, msg in [
        (dict(ok, C_W=0.0), "C_W must be a finite positive number"),
        (dict(ok, K1=-1.0), "K1 must be a finite positive number"),
        (dict(ok, K1=math.inf), "K1 must be a finite positive number"),
        (dict(ok, depth=0), "depth must be a positive integer"),
        (dict(ok, n=2.5), "n must be a positive integer"),
    ]:
        with pytest.raises(ValueError, match=msg):
            six_point_vertex(1.0, 0.0, **kwargs)
    with pytest.raises(ValueError, match="must not both be zero"):
        six_point_vertex(0.0, 0.0, **ok)
    with pytest.raises(ValueError, match="a_minus must be a real number"):
        six_point_vertex(1.0, "0", **ok)
    assert six_point_vertex(1.0, 0.0, **ok).V_exact is None


# --------------------------------------------------------------------------------------------
# six-point vertex against real networks
# --------------------------------------------------------------------------------------------


def _ensemble(n, size, seed, a_minus, C_W, K1, block=25_000):
    """Single-input ensembles of scale-invariant MLPs with C_b = 0 and real Gaussian weights
    in layers 2 and 3 (layer 1 is exactly N(0, K1) i.i.d.).  Returns the per-network metrics
    ``G-hat^(l) = (C_W/n) sum_j sigma(z_j^(l-1))^2`` for l = 2, 3, 4 and the preactivations
    ``z^(l)`` for l = 2, 3."""
    rng = np.random.default_rng(seed)
    G, Z = [[], [], []], [[], []]
    for start in range(0, size, block):
        B = min(block, size - start)
        z = math.sqrt(K1) * rng.standard_normal((B, n))
        for layer in range(3):
            s = np.where(z > 0, z, a_minus * z)
            G[layer].append(C_W * np.mean(s * s, axis=1))
            if layer < 2:
                W = math.sqrt(C_W / n) * rng.standard_normal((B, n, n))
                z = np.matmul(W, s[:, :, None])[:, :, 0]
                Z[layer].append(z)
    return [np.concatenate(g) for g in G], [np.concatenate(z) for z in Z]


def _third_cumulant(T, P, G):
    """``mean T - 3 mean P mean G + 2 mean G^3`` and its delta-method standard error."""
    t, p, g = T.mean(), P.mean(), G.mean()
    psi = (T - t) - 3 * g * (P - p) + (6 * g**2 - 3 * p) * (G - g)
    return t - 3 * p * g + 2 * g**3, psi.std() / math.sqrt(len(T))


def _from_preactivations(z):
    """spec/08 §1.5 estimator from distinct-neuron averages of one layer's preactivations."""
    n = z.shape[1]
    z2 = z * z
    S1, S2, S3 = z2.sum(1), (z2 * z2).sum(1), (z2**3).sum(1)
    T = (S1**3 - 3 * S1 * S2 + 2 * S3) / (n * (n - 1) * (n - 2))
    P = (S1**2 - S2) / (n * (n - 1))
    return _third_cumulant(T, P, S1 / n)


@pytest.mark.parametrize(
    ("a_minus", "size"),
    [(0.0, 100_000), (0.2, 50_000)],
)
def test_six_point_vertex_against_networks(a_minus, size):
    # width 32, critical C_W; kappa_3 of the stochastic metric, measured two ways: from the
    # metric G-hat^(l) of each network (the conditional expectation of the preactivation
    # estimator given layer l-1: same mean, less noise) and from the preactivations z^(l).
    # Compared with the exact finite-width values (no truncation allowance needed) within
    # 4.5 standard errors; the leading-order U6 differs from them by O(l/n) = 10-20 %, which
    # this ensemble resolves at l = 4.
    n, K1 = 32, 1.3
    C_W = 2 / (1 + a_minus**2)
    theory = six_point_vertex(1.0, a_minus, C_W=C_W, K1=K1, depth=4, n=n)
    exact, lead = theory.U6_exact / n**2, theory.U6 / n**2
    G, Z = _ensemble(n, size, seed=20240607, a_minus=a_minus, C_W=C_W, K1=K1)
    for ell in (2, 3, 4):
        g = G[ell - 2]
        val, se = _third_cumulant(g**3, g**2, g)
        assert abs(val - exact[ell - 1]) < 4.5 * se, (ell, val, se, exact[ell - 1])
        assert abs(g.mean() - K1) < 4 * g.std() / math.sqrt(size)
    # the check can fail: at l = 4 the signal and its O(l/n) correction are both resolved
    assert exact[3] > 20 * se and exact[3] - lead[3] > 6 * se
    for ell in (2, 3):
        val, se = _from_preactivations(Z[ell - 2])
        assert abs(val - exact[ell - 1]) < 4.5 * se, (ell, val, se, exact[ell - 1])


# --------------------------------------------------------------------------------------------
# documentation
# --------------------------------------------------------------------------------------------


def test_complexity_doc_examples_run():
    text = (ROOT / "docs" / "complexity.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    namespace: dict = {"__name__": "__docs__"}
    for block in blocks:
        exec(compile(block, str(ROOT / "docs" / "complexity.md"), "exec"), namespace)
