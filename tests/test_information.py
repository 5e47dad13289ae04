"""Appendix A: entropy, mutual information and the optimal aspect ratio (spec/08 §2).

Expected values are independent of the code under test:

* Gaussian entropies and informations from ``scipy.stats.multivariate_normal`` (A.26)-(A.28);
* the finite-width formulas (A.52), (A.53), (A.66), (A.67), (A.75) against the *exact* entropy
  of a rotation-invariant log-normal Gaussian scale mixture ``z | s ~ N(0, s 1_m)`` (the
  large-width limit of a scale-invariant MLP's single-input distribution, spec/08 §2.4-§2.5),
  computed here by direct quadrature: its exact ``G = E[s]`` and ``w = Var(s)/E[s]^2`` are
  known, so the residual must shrink like ``w^4`` (NLO) and ``w^3`` (LO);
* ``nu`` against hand-derived class values (``3 A_4/A_2^2 - 1`` from ``A_k = (a_+^k + a_-^k)/2``)
  and the book's printed ``nu = 2/3`` (A.69) book.txt L41259-L41262, ``nu = 2`` (linear) and
  ``nu = 5`` (ReLU) (footnote 26) book.txt L41298, and for GELU/SWISH against a direct scipy
  quadrature of ``C_W^2 Var(sigma^2)/K*^2``;
* ``r*`` against a numerical maximization of (A.71), and the book's closed forms (A.72)-(A.74)
  book.txt L41305-L41367, including the ratio ``r*_tanh / r*_ReLU = 5/(2/3) = 7.5`` implied by
  the text at book.txt L41327-L41330 (tanh networks should be deeper than ReLU networks).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate, optimize, special, stats

import pdlt
from pdlt.information import (
    aspect_ratio_summary,
    format_aspect_ratio,
    gamma_pair_information,
    gaussian_entropy,
    gaussian_mutual_information,
    information_curve,
    input_information_flow,
    input_pair_information,
    nearly_gaussian_entropy,
    nearly_gaussian_mutual_information,
    nearly_gaussian_tripartite_information,
    network_information,
    normalized_vertex,
    optimal_aspect_ratio,
    plot_information_curve,
    recommend_architectures,
    running_couplings,
    vertex_growth,
)

# --------------------------------------------------------------------------------------------
# Infinite width (A.26)-(A.29)
# --------------------------------------------------------------------------------------------

K3 = np.array([[1.3, 0.4, -0.2], [0.4, 0.9, 0.3], [-0.2, 0.3, 2.1]])


def test_gaussian_entropy_matches_scipy():
    for m in (1, 4):
        expected = m * stats.multivariate_normal(cov=K3).entropy()
        assert gaussian_entropy(K3, m=m) == pytest.approx(expected, rel=1e-13)
    batch = np.stack([K3, 2 * K3])
    np.testing.assert_allclose(
        gaussian_entropy(batch), [stats.multivariate_normal(cov=k).entropy() for k in batch]
    )


def test_gaussian_mutual_information_matches_entropies():
    def h(idx):
        return stats.multivariate_normal(cov=K3[np.ix_(idx, idx)]).entropy()

    expected = h([0]) + h([1, 2]) - h([0, 1, 2])
    assert gaussian_mutual_information(K3, a=[0], b=[1, 2]) == pytest.approx(expected, rel=1e-12)
    assert gaussian_mutual_information(K3, a=[0], b=[1, 2], m=3) == pytest.approx(3 * expected)
    # (A.28) is the two-sample case
    pair = K3[:2, :2]
    assert input_pair_information(pair) == pytest.approx(h([0]) + h([1]) - h([0, 1]))


def test_gamma_form_and_limits():
    K0, K2 = 0.8, 0.05  # equal norms: K++ = K-- = K0 + K2, K+- = K0 - K2 (5.17), (5.19)
    K = np.array([[K0 + K2, K0 - K2], [K0 - K2, K0 + K2]])
    assert gamma_pair_information(K0, K2) == pytest.approx(input_pair_information(K), rel=1e-13)
    assert gamma_pair_information(1.0, 1.0) == pytest.approx(0.0, abs=1e-15)  # K+- = 0
    assert gamma_pair_information(1.0, 0.0) == math.inf  # identical preactivations
    assert input_pair_information(np.eye(2)) == 0.0


def test_infinite_width_information_between_neurons_vanishes():
    # (A.27): entropy is extensive in the number of neurons
    for m1, m2 in ((1, 2), (3, 3)):
        total = gaussian_entropy(K3, m=m1) + gaussian_entropy(K3, m=m2)
        assert total - gaussian_entropy(K3, m=m1 + m2) == pytest.approx(0.0, abs=1e-12)


def test_input_information_linear_network_is_depth_independent():
    # linear, C_b = 0: K^(l) = C_W^(l-1) K^(1), so the correlation and (A.28) never change
    x = np.array([[1.0, 0.0], [0.6, 0.8]])
    info = input_information_flow(pdlt.Network("linear", depth=6), x)
    np.testing.assert_allclose(info.I, -0.5 * math.log(1 - 0.6**2), rtol=1e-12)


def test_input_information_relu_matches_arccosine_recursion():
    # ReLU at criticality, equal norms: rho' = [sqrt(1 - rho^2) + (pi - arccos rho) rho]/pi
    # (the arc-cosine kernel, (5.158)); I = -(1/2) log(1 - rho^2) (A.28)
    L = 25
    x = np.array([[1.0, 0.0], [0.6, 0.8]])
    rho = [0.6]
    for _ in range(L - 1):
        r = rho[-1]
        rho.append((math.sqrt(1 - r * r) + (math.pi - math.acos(r)) * r) / math.pi)
    expected = -0.5 * np.log1p(-np.square(rho))
    info = input_information_flow(pdlt.Network("relu", depth=L), x)
    np.testing.assert_allclose(info.I, expected, rtol=1e-9)
    np.testing.assert_allclose(info.chi_perp, 1.0, rtol=1e-12)


def test_input_information_criticality_argument():
    # §A.2, L40158-L40170: ordered (chi_perp < 1) -> I grows without bound, chaotic
    # (chi_perp > 1) -> I -> 0, critical -> I changes only slowly
    x = np.array([[1.0, 0.0], [0.6, 0.8]])
    L = 20
    ordered = input_information_flow(pdlt.Network("tanh", depth=L, C_b=0.3, C_W=0.5), x)
    chaotic = input_information_flow(pdlt.Network("tanh", depth=L, C_b=0.0, C_W=4.0), x)
    critical = input_information_flow(pdlt.Network("tanh", depth=L), x)
    assert ordered.chi_perp[-1] < 1 < chaotic.chi_perp[-1]
    assert ordered.I[-1] > 2 * ordered.I[L // 2 - 1] > 5  # linear growth in l
    assert chaotic.I[-1] < 0.15 * chaotic.I[L // 2 - 1] < 0.15 * chaotic.I[0]  # exponential decay
    assert 0.5 * critical.I[0] < critical.I[-1] < critical.I[0]
    assert abs(critical.I[-1] - critical.I[L // 2 - 1]) < 0.02


# --------------------------------------------------------------------------------------------
# Finite width (A.52)-(A.75) against an exact nearly-Gaussian distribution
# --------------------------------------------------------------------------------------------


def _exact_deficit(m: int, w: float) -> float:
    """``KL(p || N(0, G 1_m)) = S_Gauss - S[p]`` for the log-normal scale mixture.

    ``z | s ~ N(0, s 1_m)``, ``log s ~ N(-tau^2/2, tau^2)``, ``tau^2 = log(1 + w)``: ``G = E s =
    1`` and ``E[z_i^2 z_j^2] - G^2 = Var s = w`` (so ``V/(n G^2) = w``).  With ``u = |z|^2``
    (``chi^2_m`` under the Gaussian ``q``) and ``t = p/q``,
    ``KL = E_q[t log t - t + 1]``, a 1-D integral over ``v = |z|`` (Gauss-Legendre panels),
    ``t(u) = E_s[s^{-m/2} exp(-(u/2)(1/s - 1))]`` by Gauss-Hermite in ``log s``.
    """
    tau = math.sqrt(math.log1p(w))
    xh, wh = np.polynomial.hermite_e.hermegauss(80)
    logs = tau * xh - 0.5 * tau**2
    logw = np.log(wh / math.sqrt(2 * math.pi))
    g, gw = np.polynomial.legendre.leggauss(40)
    edges = np.linspace(0.0, 25.0, 61)
    a, b = edges[:-1, None], edges[1:, None]
    v = (0.5 * (b - a) * g + 0.5 * (a + b)).ravel()
    dv = (0.5 * (b - a) * gw).ravel()
    u = v * v
    lt = special.logsumexp(
        logw - 0.5 * m * logs - 0.5 * u[:, None] * np.expm1(-logs), axis=1
    )  # log t
    f = lt * np.exp(lt) - np.expm1(lt)
    logq = (m - 1) * np.log(v) - 0.5 * u - (m / 2 - 1) * math.log(2) - special.gammaln(m / 2)
    return float(np.sum(dv * np.exp(logq) * f))


@pytest.fixture(scope="module")
def deficits():
    return {w: {m: _exact_deficit(m, w) for m in (1, 2, 3, 4)} for w in (0.01, 0.02)}


def test_exact_testbed_is_converged():
    # the quadrature behind the reference values: a finer rule changes nothing that matters
    coarse = _exact_deficit(2, 0.02)
    tau = math.sqrt(math.log1p(0.02))

    xh, wh = np.polynomial.hermite_e.hermegauss(160)
    s, wts = np.exp(tau * xh - 0.5 * tau**2), wh / math.sqrt(2 * math.pi)

    def t(u):
        return float(np.sum(wts / s * np.exp(-0.5 * u * (1 / s - 1))))

    def integrand(u):
        tt = t(u)
        return stats.chi2.pdf(u, 2) * (tt * math.log(tt) - tt + 1)

    fine, _ = integrate.quad(integrand, 0, 400, epsabs=1e-16, epsrel=1e-12, limit=200)
    assert coarse == pytest.approx(fine, rel=1e-8)


@pytest.mark.parametrize("m", [1, 2, 3])
def test_entropy_expansion_against_exact(deficits, m):
    G = 1.0
    for w, d in deficits.items():
        exact = 0.5 * m * math.log(2 * math.pi * math.e * G) - d[m]
        nlo = nearly_gaussian_entropy(m, G=G, w=w)  # (A.66)
        lo = nearly_gaussian_entropy(m, G=G, w=w, order=2)  # (A.52)
        assert abs(exact - nlo) < 25 * w**4
        # the LO residual is the printed cubic term, up to O(w^4)
        cubic = (m**3 + 10 * m**2 + 16 * m) / 48
        assert (exact - lo) / w**3 == pytest.approx(cubic, rel=30 * w)


@pytest.mark.parametrize("m1,m2", [(1, 1), (1, 2), (2, 2)])
def test_mutual_information_expansion_against_exact(deficits, m1, m2):
    errs = []
    for w, d in deficits.items():
        exact = d[m1 + m2] - d[m1] - d[m2]  # S1 + S2 - S12; the Gaussian parts cancel
        nlo = nearly_gaussian_mutual_information(m1, m2, w=w)  # (A.67)
        lo = nearly_gaussian_mutual_information(m1, m2, w=w, order=2)  # (A.53)
        assert lo == pytest.approx(m1 * m2 * w**2 / 8)
        cubic = -m1 * m2 * (20 + 3 * m1 + 3 * m2) / 48
        assert (exact - lo) / w**3 == pytest.approx(cubic, rel=30 * w)
        errs.append(abs(exact - nlo))
        assert errs[-1] < 20 * w**4
    assert 8 < errs[1] / errs[0] < 24  # the NLO residual is O(w^4): x16 when w doubles


def test_tripartite_information_against_exact(deficits):
    for w, d in deficits.items():
        # I3 = S1 + S2 + S3 - S12 - S23 - S13 + S123 for single neurons (A.24)
        exact = -3 * d[1] + 3 * d[2] - d[3]
        assert exact == pytest.approx(
            nearly_gaussian_tripartite_information(1, 1, 1, w=w), rel=20 * w
        )
    assert nearly_gaussian_tripartite_information(1, 2, 3, w=0.1) == pytest.approx(6e-3 / 8)


def _action_moments(m: int, g: float, v: float, u: float) -> tuple[float, float]:
    """Exact ``G`` and ``V/n`` of ``p(z) ~ exp(-S)``, ``S = (g/2) rho^2 - (v/8) rho^4 +
    (u/24) rho^6`` (``rho = |z|``, m neurons), by radial quadrature; rotation invariance gives
    ``E[rho^2] = m G`` and ``E[rho^4] = m (m + 2) E[z_i^2 z_j^2]`` for ``i != j``."""

    def mom(k):
        def f(r):
            return r ** (m - 1 + k) * math.exp(-g * r * r / 2 + v * r**4 / 8 - u * r**6 / 24)

        return integrate.quad(f, 0, 30, epsabs=0, epsrel=1e-13, limit=200)[0]

    z0, z2, z4 = mom(0), mom(2), mom(4)
    G = z2 / z0 / m
    return G, z4 / z0 / (m * (m + 2)) - G * G


@pytest.mark.parametrize("m", [1, 3])
def test_running_couplings_invert_an_exact_action(m):
    # the m-neuron action with couplings (g, v, u) is its own variational action, so (A.59),
    # (A.63) must return (g, v) from its exact G and V/n up to O(v^3) (u = O(v^2), like 1/n^2)
    g = 1.3
    errs = {2: [], 3: []}
    for v in (0.005, 0.01):
        u = 2 * v * v
        G, Vn = _action_moments(m, g, v, u)
        for order in (2, 3):
            gm, vm = running_couplings(m, G=G, V_over_n=Vn, u=u, order=order)
            errs[order].append(max(abs(gm - g), abs(vm - v)))
    assert errs[3][1] < 0.1 * errs[2][1]
    assert 6 < errs[3][1] / errs[3][0] < 10  # O(v^3): x8 when v doubles
    assert 3 < errs[2][1] / errs[2][0] < 5  # O(v^2): x4


def test_network_information_relu_closed_form():
    # ReLU at criticality: V = 5 (l-1) K^2 (5.120), G1 = 0, so w = 5 (l-1)/n
    n, L = 64, 6
    info = network_information(pdlt.Network("relu", depth=L, width=n, n_out=4), k1=1.3)
    ell = np.arange(1, L + 1)
    w = 5.0 * (ell - 1) / n
    np.testing.assert_allclose(info.w, w, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(info.G, 1.3, rtol=1e-12)
    np.testing.assert_allclose(info.I_leading, 4 * w**2 / 8, rtol=1e-10, atol=1e-18)
    np.testing.assert_allclose(info.I, 4 * w**2 / 8 - 4 * 32 / 48 * w**3, rtol=1e-9, atol=1e-18)
    assert (info.m1, info.m2) == (2, 2)
    assert normalized_vertex(5.0, 2.0, 10) == pytest.approx(0.125)


# --------------------------------------------------------------------------------------------
# nu (A.68)-(A.70) and r* (A.72)-(A.74)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,expected",
    [
        ("relu", 5.0),  # footnote 26, book.txt L41298
        ("linear", 2.0),  # footnote 26
        ("leaky_relu:0.1", 6 * (1 + 0.1**4) / (1 + 0.1**2) ** 2 - 1),  # (A.70) by hand
    ],
)
def test_nu_scale_invariant(name, expected):
    g = vertex_growth(name)
    assert g.universality_class == "scale-invariant"
    assert g.nu == pytest.approx(expected, rel=1e-12)
    assert g.nu_class == pytest.approx(expected, rel=1e-12)


def test_nu_k_star_zero_from_iteration():
    # (A.69) book.txt L41259-L41262: nu = 2/3 for every K*=0 activation; the iteration never
    # uses that number, and converges like 1/l, which the extrapolation removes
    g = vertex_growth("tanh")
    assert g.universality_class == "K*=0"
    assert g.nu == pytest.approx(2 / 3, abs=2e-4)
    assert g.nu_error < 2e-3
    assert vertex_growth("tanh", k1=0.3, segment=64).nu == pytest.approx(2 / 3, abs=5e-4)
    erf = vertex_growth("erf", segment=64)  # another member, sigma = erf(z)
    assert erf.universality_class == "K*=0"
    assert erf.nu == pytest.approx(2 / 3, abs=5e-4)


@pytest.mark.parametrize("name,spec03", [("gelu", 4.9042), ("swish", 4.9232)])
def test_nu_half_stable_against_direct_quadrature(name, spec03):
    crit = pdlt.criticality(name)
    act = pdlt.activation(name)
    K = crit.K_star

    def moment(p):
        def f(z):
            return float(act(np.array([z]))[0]) ** p * math.exp(-z * z / (2 * K))

        return integrate.quad(f, -60 * math.sqrt(K), 60 * math.sqrt(K), epsabs=0, limit=400)[0] / (
            math.sqrt(2 * math.pi * K)
        )

    expected = crit.C_W**2 * (moment(4) - moment(2) ** 2) / K**2
    g = vertex_growth(name)
    assert g.K1 == pytest.approx(K)
    assert g.nu == pytest.approx(expected, rel=1e-7)
    assert g.nu == pytest.approx(spec03, abs=1e-4)  # spec/03 §8 [derived]


def test_vertex_growth_rejects_activation_without_criticality():
    with pytest.raises(ValueError, match="no critical initialization"):
        vertex_growth("sigmoid")
    with pytest.raises(ValueError, match="k1"):
        vertex_growth("tanh", k1=-1.0)


def test_optimal_aspect_ratio_book_formulas():
    relu = optimal_aspect_ratio("relu", n_out=10)
    # (A.73): r* = 4/((20 + 3 n_L) nu); (A.74): I* = (1/6)(n_L/(20 + 3 n_L))^2
    assert relu.r_star == pytest.approx(4 / (50 * 5.0))
    assert relu.I_star == pytest.approx((10 / 50) ** 2 / 6)
    assert relu.x_star == pytest.approx(4 / 50)
    assert relu.r_star_consistent == pytest.approx(4 / (44 * 5.0))
    tanh = optimal_aspect_ratio("tanh", n_out=10)
    assert tanh.r_star == pytest.approx(4 / (50 * 2 / 3), rel=5e-4)
    assert tanh.r_star / relu.r_star == pytest.approx(7.5, rel=5e-4)
    assert tanh.I_star == pytest.approx(relu.I_star)  # nu-independent (A.74)
    assert tanh.r_star_consistent is None
    # (A.72) with explicit groups; the group sizes enter only through m1 + m2 in r*
    g = optimal_aspect_ratio(nu=2.0, m1=1, m2=3)
    assert g.r_star == pytest.approx(4 / (32 * 2.0))
    assert g.I_star == pytest.approx(3 / 24 * (4 / 32) ** 2)
    assert optimal_aspect_ratio(nu=2.0, n_out=4).I_star > g.I_star  # equal halves are best


def test_r_star_maximizes_objective():
    for n_out in (2, 7, 20):
        opt = optimal_aspect_ratio(nu=5.0, n_out=n_out)
        res = optimize.minimize_scalar(
            lambda r, n=n_out: -information_curve(nu=5.0, n_out=n, r=[r]).I[0],
            bounds=(1e-6, 1.0),
            method="bounded",
            options={"xatol": 1e-12},
        )
        assert res.x == pytest.approx(opt.r_star, rel=1e-6)
        assert -res.fun == pytest.approx(opt.I_star, rel=1e-10)
    # the consistent-order cubic (spec/08 §2.6): w = x + x^2/2 inside (A.67), kept to x^3
    m1 = m2 = 1
    res = optimize.minimize_scalar(
        lambda x: -(m1 * m2 / 8 * (x * x + x**3) - m1 * m2 * 26 / 48 * x**3),
        bounds=(1e-6, 2.0),
        method="bounded",
        options={"xatol": 1e-12},
    )
    assert res.x / 5.0 == pytest.approx(optimal_aspect_ratio("relu").r_star_consistent, rel=1e-6)


def test_information_curve_data_and_plot():
    curve = information_curve("relu", n_out=4, num=11)
    assert curve.r.shape == curve.I.shape == curve.I_leading.shape == (11,)
    assert curve.r[-1] == pytest.approx(2 * curve.optimum.r_star)
    np.testing.assert_allclose(curve.I_leading, (4 / 8) * (5.0 * curve.r) ** 2)
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    ax = plot_information_curve(curve)
    assert len(ax.lines) >= 3
    fig, ax2 = plt.subplots()
    assert curve.plot(ax=ax2) is ax2
    plt.close("all")


def test_recommend_architectures_budget():
    budget, n_in, n_out = 10**6, 784, 10
    archs = recommend_architectures("relu", budget=budget, n_in=n_in, n_out=n_out)
    r_star = optimal_aspect_ratio("relu", n_out=n_out).r_star

    def params(L, n):  # (2.7) via the Network class
        return pdlt.Network("relu", widths=[n_in] + [n] * (L - 1) + [n_out]).num_params

    assert len(archs) == 5
    assert [a.information for a in archs] == sorted((a.information for a in archs), reverse=True)
    for a in archs:
        assert a.params == params(a.depth, a.width) <= budget
        assert params(a.depth, a.width + 1) > budget  # widest that fits
        assert a.aspect_ratio == pytest.approx(a.depth / a.width)
    best = archs[0]
    # the best depth is one of the two integer depths around r* at the budget-limited width
    assert abs(best.aspect_ratio - r_star) < 1.5 / best.width
    with pytest.raises(ValueError, match="too small"):
        recommend_architectures("relu", budget=10, n_in=n_in, n_out=n_out)


def test_summary_json_and_text():
    s = aspect_ratio_summary("tanh", n_out=4, budget=200_000, n_in=32)
    json.dumps(s)
    assert s["universality_class"] == "K*=0"
    assert s["r_star"] == pytest.approx(4 / (32 * 2 / 3), rel=5e-4)
    assert len(s["architectures"]) == 5
    text = format_aspect_ratio(s)
    assert "r* = L/n" in text and "(A.73)" in text and "depth" in text
    with pytest.raises(ValueError, match="n_in"):
        aspect_ratio_summary("relu", budget=1000)


def test_bad_input_messages():
    with pytest.raises(ValueError, match="n_out must be >= 2"):
        optimal_aspect_ratio("relu", n_out=1)
    with pytest.raises(ValueError, match="not both"):
        optimal_aspect_ratio("relu", nu=5.0)
    with pytest.raises(ValueError, match="positive number"):
        optimal_aspect_ratio(nu=-1.0)
    with pytest.raises(ValueError, match="either n_out"):
        optimal_aspect_ratio(nu=1.0, n_out=4, m1=1)
    with pytest.raises(ValueError, match="order must be 2"):
        nearly_gaussian_entropy(2, G=1.0, w=0.1, order=4)
    with pytest.raises(ValueError, match="m must be a positive integer"):
        gaussian_entropy(K3, m=0)
    with pytest.raises(ValueError, match="disjoint"):
        gaussian_mutual_information(K3, a=[0, 1], b=[1])
    with pytest.raises(ValueError, match="positive definite"):
        gaussian_entropy(-K3)
    with pytest.raises(ValueError, match="cannot be split"):
        network_information(pdlt.Network("relu", depth=3, width=8))
    assert "r*=0.0307692" in repr(optimal_aspect_ratio("relu"))


# ---- discrete distributions (A.1)-(A.24) --------------------------------------------------


def test_discrete_entropy_kl_and_mutual_information_closed_forms():
    from pdlt.information import (
        cross_entropy,
        entropy,
        kl_divergence,
        mutual_information,
        tripartite_information,
    )

    assert entropy([1.0, 0.0, 0.0]) == 0.0  # (A.2)
    assert entropy(np.full(6, 1 / 6)) == pytest.approx(math.log(6), rel=1e-14)  # (A.3)
    # Bernoulli KL, by hand: a log(a/b) + (1-a) log((1-a)/(1-b))
    a, b = 0.3, 0.6
    kl = a * math.log(a / b) + (1 - a) * math.log((1 - a) / (1 - b))
    assert kl_divergence([a, 1 - a], [b, 1 - b]) == pytest.approx(kl, rel=1e-14)
    assert cross_entropy([a, 1 - a], [b, 1 - b]) == pytest.approx(
        kl + entropy([a, 1 - a]), rel=1e-14
    )
    assert kl_divergence([0.5, 0.5], [1.0, 0.0]) == math.inf  # q = 0 < p
    # independent variables: I = 0 (A.15); a copied fair bit: log 2
    pxy = np.multiply.outer([0.2, 0.8], [0.1, 0.3, 0.6])
    assert abs(mutual_information(pxy)) < 1e-15
    assert mutual_information([[0.5, 0], [0, 0.5]]) == pytest.approx(math.log(2), rel=1e-14)
    # (A.24): z = x XOR y of two fair bits is synergistic, -log 2; x = y = z redundant, +log 2
    xor = np.zeros((2, 2, 2))
    for x in (0, 1):
        for y in (0, 1):
            xor[x, y, x ^ y] = 0.25
    assert tripartite_information(xor) == pytest.approx(-math.log(2), rel=1e-14)
    copy = np.zeros((2, 2, 2))
    copy[0, 0, 0] = copy[1, 1, 1] = 0.5
    assert tripartite_information(copy) == pytest.approx(math.log(2), rel=1e-14)
    # and it is symmetric in its three variables
    rng = np.random.default_rng(0)
    p = rng.random((2, 3, 4))
    p /= p.sum()
    values = [
        tripartite_information(p.transpose(perm)) for perm in ((0, 1, 2), (2, 0, 1), (1, 2, 0))
    ]
    np.testing.assert_allclose(values, values[0], rtol=1e-12)


@pytest.mark.parametrize(
    ("p", "match"),
    [([0.5, 0.6], "sum to 1"), ([1.5, -0.5], ">= 0"), ([np.nan, 1.0], "finite"), ([], "non-empty")],
)
def test_discrete_distributions_are_validated(p, match):
    from pdlt.information import entropy

    with pytest.raises(ValueError, match=match):
        entropy(p)
