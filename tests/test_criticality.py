"""Criticality and universality classes (book §5.2-§5.3, spec/03 §4-§8).

The library computes every number here from the activation alone (Taylor coefficients by
autodiff, susceptibilities by quadrature, roots by bracketing); the expected values are the
book's printed statements (with their book.txt lines), closed forms, or spec/03's corrections
of the book's errata.
"""

import math

import numpy as np
import pytest
import torch

from pdlt import Activation, Network, criticality, flow
from pdlt.theory.criticality import fit_ell0, susceptibility_ratio
from pdlt.theory.kernel import delta_flow, helpers


@pytest.mark.parametrize(
    "name, C_W, a1, a2, b1",
    [
        # book L11952-L11954: tanh a1 = -2, a2 = 17/3, b1 = -2
        ("tanh", 1.0, -2.0, 17 / 3, -2.0),
        # sin z: sigma_1 = 1, sigma_3 = -1, sigma_5 = 1 in (5.86)-(5.88)
        ("sin", 1.0, -1.0, 2 / 3, -1.0),
        # erf: sigma_1 = 2/sqrt(pi), sigma_3/sigma_1 = -2, sigma_5/sigma_1 = 12
        ("erf", math.pi / 4, -2.0, 3 + 5 / 3, -2.0),
        # sigmoid - 1/2 = tanh(z/2)/2 (L11796): C_W = 1/sigma_1^2 = 16, a1 = -1/2, a2 = 17/48
        ("shifted_sigmoid", 16.0, -0.5, 17 / 48, -0.5),
    ],
)
def test_k_star_zero_class(name, C_W, a1, a2, b1):
    c = criticality(name)
    assert c.universality_class == "K*=0"
    assert (c.C_b, c.K_star) == (0.0, 0.0)
    assert c.C_W == pytest.approx(C_W, rel=1e-12)
    assert c.a1 == pytest.approx(a1, rel=1e-12)
    assert c.a2 == pytest.approx(a2, rel=1e-10)
    assert c.b1 == pytest.approx(b1, rel=1e-12)
    # odd activations have p_perp = b1/a1 = 1 (L12353-L12375); V/(nK^2) = (2/3) l/n (5.131)
    assert c.exponents["p_perp"] == pytest.approx(1.0)
    assert c.exponents["V_over_nK2"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    "name, C_W, ratio",
    [
        ("relu", 2.0, 5.0),  # (5.67) Kaiming; 3A4/A2^2 - 1 = 5 (L12836-L12840)
        ("linear", 1.0, 2.0),  # C_W = 1 (L4330); ratio 2 (L12836)
        # leaky ReLU slope s: C_W = 2/(1+s^2); 6(1+s^4)/(1+s^2)^2 - 1 (spec/03 §9.2, derived)
        ("leaky_relu:0.1", 2 / 1.01, 6 * (1 + 1e-4) / 1.01**2 - 1),
    ],
)
def test_scale_invariant_class(name, C_W, ratio):
    c = criticality(name)
    assert c.universality_class == "scale-invariant"
    assert c.C_b == 0.0 and c.C_W == pytest.approx(C_W, rel=1e-14)
    assert c.exponents["V_over_nK2"] == pytest.approx(ratio, rel=1e-13)
    # r(K) = chi_perp/chi_par = 1 for every K (L11725-L11730)
    assert np.allclose(susceptibility_ratio(c_act(name), np.geomspace(1e-3, 1e3, 7)), 1.0)


def c_act(name):
    from pdlt import activation

    return activation(name)


def test_user_callable_scale_invariant_detected():
    act = Activation.from_callable(lambda z: torch.where(z > 0, 1.5 * z, -0.5 * z), name="mine")
    c = criticality(act)
    assert c.universality_class == "scale-invariant"
    assert c.C_W == pytest.approx(1 / ((1.5**2 + 0.25) / 2))


@pytest.mark.parametrize(
    "name, K_star, C_b, C_W, minus_a1_tilde",
    [
        # (5.101) L12414-L12419 and L12442
        ("swish", 14.32017362, 0.55514317, 1.98800468, -2.84979219e-6),
        # (5.105) L12485-L12495 and L12503; K* = (3 + sqrt(17))/2 exactly
        ("gelu", (3 + math.sqrt(17)) / 2, 0.17292239, 1.98305826, 1.43626419e-4),
    ],
)
def test_half_stable_class(name, K_star, C_b, C_W, minus_a1_tilde):
    c = criticality(name)
    assert c.universality_class == "half-stable"
    assert c.K_star == pytest.approx(K_star, rel=1e-9)
    assert c.C_b == pytest.approx(C_b, abs=5e-9)
    assert c.C_W == pytest.approx(C_W, abs=5e-9)
    p = [p for p in c.points if p.K_star][0]
    assert -p.a1_tilde == pytest.approx(minus_a1_tilde, rel=1e-7)
    assert p.chi_parallel == pytest.approx(1.0, abs=1e-12)
    assert p.chi_perp == pytest.approx(1.0, abs=1e-12)
    # both also have an unstable K* = 0 point at C_W = 1/sigma_1^2 = 4 (§5.3.4)
    zero = [p for p in c.points if p.K_star == 0.0][0]
    assert zero.stability == "unstable" and zero.C_W == pytest.approx(4.0)


def test_gelu_a1_closed_form():
    # GELU's K*=0 point has a1 = 6/pi (quoted as (-a1) = -6/pi at L12497)
    assert criticality("gelu").a1 == pytest.approx(6 / math.pi, rel=1e-12)


def test_trivial_fixed_points_near_half_stable_erratum():
    # Footnotes 20-21 quote nearby trivial fixed points ~14.5 (SWISH) and ~3.2 (GELU); solving
    # C_b + C_W g(K) = K at the quoted hyperparameters gives 14.59311 and 3.03498 (spec/03 §13.2)
    from scipy.optimize import brentq

    for name, lo, hi, expected in [("swish", 14.4, 14.9, 14.59311), ("gelu", 2.5, 3.3, 3.03498)]:
        c = criticality(name)
        act = c_act(name)

        def f(K, c=c, act=act):
            return c.C_b + c.C_W * float(helpers(act, K, 1.0).g) - K

        root = brentq(f, lo, hi, xtol=1e-12)
        assert root == pytest.approx(expected, abs=2e-5)


@pytest.mark.parametrize(
    "name",
    ["sigmoid", "softplus", "monomial:2", "monomial:3", "perceptron", "sign", "shifted_softplus"],
)
def test_no_criticality_is_an_answer_not_an_exception(name):
    c = criticality(name)
    assert c.universality_class == "none"
    assert c.C_b is None and c.C_W is None and c.reason


def test_sigmoid_needs_negative_bias_variance():
    # L11736-L11748: r -> 1 only as K -> 0, where (5.72) gives C_b -> -(sigma_0/sigma_1)^2 = -4
    c = criticality("sigmoid")
    assert "-4" in c.reason
    assert np.all(susceptibility_ratio(c_act("sigmoid"), np.geomspace(1e-3, 1e2, 20)) > 1)


def test_softplus_ratio_corrected_5_81():
    # r(0+) = sigma_1^2/(sigma_1^2 + sigma_0 sigma_2) = 1/(1 + log 2) with the corrected (5.81)
    # (spec/03 §13.1b); the printed coefficient sigma_1^2 + 2 sigma_0 sigma_2 would give
    # 1/(1 + 2 log 2) = 0.419. Softplus has r < 1 everywhere (Figure 5.2).
    r = susceptibility_ratio(c_act("softplus"), np.array([1e-7, 1.0, 10.0]))
    assert r[0] == pytest.approx(1 / (1 + math.log(2)), rel=1e-6)
    assert r[0] != pytest.approx(1 / (1 + 2 * math.log(2)), rel=1e-2)
    # spec/03 §6 derived values r(1) ~ 0.6472, r(10) ~ 0.7932
    assert r[1] == pytest.approx(0.6472, abs=1e-4)
    assert r[2] == pytest.approx(0.7932, abs=1e-4)


@pytest.mark.parametrize("p", [2, 3, 4])
def test_monomial_ratio(p):
    # (5.77)-(5.78): r(K) = p/(2p - 1) for every K
    r = susceptibility_ratio(c_act(f"monomial:{p}"), np.array([0.1, 1.0, 5.0]))
    assert np.allclose(r, p / (2 * p - 1), rtol=1e-12)


def test_tanh_kernel_power_law_with_log_corrections():
    # (5.92), (5.94): K ~ 1/((-a1) l) with log corrections. Convergence of 2 l K at
    # l = 10, 100, 1000 (spec/03 §7.2 computed values: 1.160, 1.0241, 1.00333).
    L = 3000
    f = flow(Network("tanh", depth=L), k1=1.0, fields=("K",))
    K = f.single("K")
    for ell, expected in [(10, 1.160), (100, 1.0241), (1000, 1.00333)]:
        assert 2 * ell * K[ell - 1] == pytest.approx(expected, abs=6e-4)
    c = criticality("tanh")
    ell = np.arange(1000, L + 1)
    ell0 = fit_ell0(ell, K[ell - 1], c.a1, c.a2)
    asym = c.asymptotic_kernel(ell, ell0)
    # with the fitted l_0 the residual is O(1/l^3), far below the log/l^2 term it corrects
    log_term = abs((c.a2 - c.a1**2) / c.a1**3) * np.log(ell / ell0) / ell**2
    assert np.max(np.abs(asym - K[ell - 1]) / log_term) < 0.05
    # and it falls faster than the 1/l^2 order it corrects (1/l^3 up to logs: 27x from l = 1000
    # to 3000; a leftover log l/l^2 term would give ~7x)
    residual = np.abs(asym - K[ell - 1])
    assert residual[0] / residual[-1] > 10


@pytest.mark.parametrize(
    "fn, p_perp",
    [
        ("tanh", 1.0),
        # spec/03 §13.4: sigma = tanh z + tanh^2 z / 4 has p_perp = b1/a1 = 28/29
        (lambda z: torch.tanh(z) + 0.25 * torch.tanh(z) ** 2, 28 / 29),
    ],
)
def test_delta_exponents_k_star_zero(fn, p_perp):
    # (5.97), (5.99): dK_[1] ~ l^-2 (parallel) and ddK_[2] ~ l^(-b1/a1) (perpendicular)
    act = c_act(fn) if isinstance(fn, str) else Activation.from_callable(fn, name="t")
    c = criticality(act)
    assert c.exponents["p_perp"] == pytest.approx(p_perp, rel=1e-12)
    L = 2000
    cb, cw = np.zeros(L), np.full(L, c.C_W)
    perp = delta_flow(act, np.array([1.0, 0.0]), np.array([0.0, 1e-3]), cb, cw)
    par = delta_flow(act, np.array([1.0, 0.0]), np.array([1e-3, 0.0]), cb, cw)
    ell = np.array([1000, 2000])
    slope_perp = -np.diff(np.log(perp.ddK2[ell - 1])) / np.diff(np.log(ell))
    slope_par = -np.diff(np.log(np.abs(par.dK1[ell - 1]))) / np.diff(np.log(ell))
    # log(l)/l corrections: a few per mille at l ~ 1500
    assert slope_perp[0] == pytest.approx(p_perp, abs=0.005)
    assert slope_par[0] == pytest.approx(2.0, abs=0.005)


def test_designer_exponent():
    # L12285-L12296: a1 = 0, a2 < 0 gives K ~ [2 (-a2) l]^(-1/2) (spec/03 §7.2, derived)
    act = Activation.from_callable(lambda z: z - z**5 / 40, name="designer")
    c = criticality(act)
    assert c.universality_class == "K*=0" and c.exponents["p_0"] == 0.5
    assert c.a1 == pytest.approx(0.0, abs=1e-14) and c.a2 == pytest.approx(-0.75)
    K = flow(Network(act, depth=5000), k1=0.2, fields=("K",)).single("K")
    ell = 5000
    assert K[-1] * math.sqrt(2 * 0.75 * ell) == pytest.approx(1.0, abs=0.005)
