"""The infinite-width kernel recursion, susceptibilities and the delta expansion.

Expected values come from closed forms (linear, quadratic, scale-invariant arc-cosine
recursions), from mpmath integration, or from the exact two-input recursion itself when
testing the perturbative delta expansion against it.
"""

import math

import mpmath as mp
import numpy as np
import pytest

from pdlt import Network, activation, flow
from pdlt.theory.kernel import delta_flow, gamma_components, helpers, kernel_step


def test_helpers_tanh_against_mpmath():
    # g, chi_par = C_W g', chi_perp, h = chi_perp'/2, j = 4K^2 C_W g'' computed with mpmath:
    # g(K) by quadrature, derivatives in K by mpmath.diff (independent of the Stein forms used).
    mp.mp.dps = 30

    def g(K, f=mp.tanh):
        return mp.quad(lambda x: f(mp.sqrt(K) * x) ** 2 * mp.npdf(x), [-mp.inf, 0, mp.inf])

    def dsq(K):
        return mp.quad(lambda x: mp.sech(mp.sqrt(K) * x) ** 4 * mp.npdf(x), [-mp.inf, 0, mp.inf])

    for K, C_W in [(1.0, 1.0), (0.03, 1.3), (7.0, 0.8)]:
        hp = helpers(activation("tanh"), K, C_W)
        assert float(hp.g) == pytest.approx(float(g(K)), rel=1e-12)
        assert float(hp.chi_par) == pytest.approx(C_W * float(mp.diff(g, K)), rel=1e-10)
        assert float(hp.chi_perp) == pytest.approx(C_W * float(dsq(K)), rel=1e-12)
        assert float(hp.h) == pytest.approx(0.5 * C_W * float(mp.diff(dsq, K)), rel=1e-9)
        assert float(hp.j) == pytest.approx(4 * K**2 * C_W * float(mp.diff(g, K, 2)), rel=1e-8)
        s4 = mp.quad(lambda x, K=K: mp.tanh(mp.sqrt(K) * x) ** 4 * mp.npdf(x), [-mp.inf, 0, mp.inf])
        assert float(hp.s_V) == pytest.approx(C_W**2 * float(s4 - g(K) ** 2), rel=1e-11)


def test_helpers_spec_check_values():
    # spec/03 §1.3 check values (tanh, C_W = 1, K = 1), derived independently by the spec author
    hp = helpers(activation("tanh"), 1.0, 1.0)
    assert float(hp.g) == pytest.approx(0.394294490397841, rel=1e-13)
    assert float(hp.chi_par) == pytest.approx(0.181797688140487, rel=1e-12)
    assert float(hp.chi_perp) == pytest.approx(0.464402902448268, rel=1e-13)
    assert float(hp.h) == pytest.approx(-0.089148137443034, rel=1e-11)
    assert float(hp.j) == pytest.approx(-0.685173793508919, rel=1e-11)
    assert float(hp.s_V) == pytest.approx(0.0975237380858573, rel=1e-12)


@pytest.mark.parametrize("name", ["relu", "leaky_relu:0.3", "linear"])
def test_helpers_scale_invariant_closed_forms(name):
    # (5.60)-(5.62), (5.113): g = A2 K, chi_par = chi_perp = A2 C_W, h = 0, j = 0,
    # s_V = C_W^2 (3 A4 - A2^2) K^2
    act = activation(name)
    ap, am = act.scale_invariant
    A2, A4 = (ap**2 + am**2) / 2, (ap**4 + am**4) / 2
    K = np.array([0.3, 1.0, 4.0])
    hp = helpers(act, K, 1.7)
    assert np.allclose(hp.g, A2 * K, rtol=1e-13)
    assert np.allclose(hp.chi_par, A2 * 1.7, rtol=1e-13)
    assert np.allclose(hp.chi_perp, A2 * 1.7, rtol=1e-13)
    assert np.allclose(hp.h, 0.0, atol=1e-13)
    assert np.allclose(hp.j, 0.0, atol=1e-12)
    assert np.allclose(hp.s_V, 1.7**2 * (3 * A4 - A2**2) * K**2, rtol=1e-12)


def test_kernel_linear_and_quadratic_exact():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 6))
    # linear: K^(l+1) = C_b + C_W K^(l) entrywise (L10001-L10004)
    f = flow(Network("linear", depth=5, C_b=0.2, C_W=0.9), x, fields=("K",))
    K = 0.2 + 0.9 * x @ x.T / 6
    for ell in range(5):
        assert np.allclose(f.K[ell], K, rtol=1e-13)
        K = 0.2 + 0.9 * K
    # quadratic sigma = z^2, (5.3): K' = C_b + C_W (K_aa K_bb + 2 K_ab^2)
    K0 = 0.1 + 0.5 * x @ x.T / 6
    d = np.diag(K0)
    expected = 0.1 + 0.5 * (np.outer(d, d) + 2 * K0**2)
    assert np.allclose(kernel_step(activation("quadratic"), K0, 0.1, 0.5), expected, rtol=1e-13)


def test_relu_kernel_against_arccos_recursion():
    # (5.147) and (5.160): for equal-norm inputs K_d' = C_b + A2 C_W K_d and
    # K_d' cos psi' = C_b + C_W (K_d/(2 pi)) (a+ - a-)^2 [sin psi - psi cos psi]
    #                 + A2 C_W K_d cos psi
    x = np.array([[1.0, 0.0, 0.0], [math.cos(1.2), math.sin(1.2), 0.0]]) * math.sqrt(3)
    C_b, C_W = 0.05, 1.8
    f = flow(Network("relu", depth=8, C_b=C_b, C_W=C_W), x, fields=("K",))
    Kd = C_b + C_W * 1.0
    cos_psi = (C_b + C_W * math.cos(1.2)) / Kd
    for ell in range(8):
        assert f.K[ell, 0, 0] == pytest.approx(Kd, rel=1e-13)
        assert f.K[ell, 0, 1] == pytest.approx(Kd * cos_psi, rel=1e-12)
        psi = math.acos(cos_psi)
        new_kd = C_b + 0.5 * C_W * Kd
        cos_psi = (
            C_b
            + C_W
            * (
                Kd / (2 * math.pi) * (math.sin(psi) - psi * math.cos(psi))
                + 0.5 * Kd * math.cos(psi)
            )
        ) / new_kd
        Kd = new_kd


def test_scale_invariant_regimes():
    # spec/03 §5: critical K^(l) = K^(1); subcritical K = K* + chi^(l-1) (K1 - K*);
    # semi-critical K = K1 + (l - 1) C_b
    crit = flow(Network("leaky_relu:0.2", depth=6), k1=2.3, fields=("K",)).single("K")
    assert np.allclose(crit, 2.3, rtol=1e-13)
    chi = 0.7 * (1 + 0.04) / 2
    sub = flow(Network("leaky_relu:0.2", depth=6, C_b=0.3, C_W=0.7), k1=2.3, fields=("K",))
    Kstar = 0.3 / (1 - chi)
    assert np.allclose(sub.single("K"), Kstar + chi ** np.arange(6) * (2.3 - Kstar), rtol=1e-12)
    semi = flow(Network("relu", depth=6, C_b=0.3, C_W=2.0), k1=2.3, fields=("K",))
    assert np.allclose(semi.single("K"), 2.3 + 0.3 * np.arange(6), rtol=1e-13)


def test_marginalization_over_samples():
    # spec/02 §6.1: K_ab depends only on inputs a and b
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 4))
    net = Network("gelu", depth=4, C_b=0.1, C_W=1.4)
    full = flow(net, x, fields=("K",)).K
    sub = flow(net, x[[1, 3]], fields=("K",)).K
    assert np.allclose(full[:, [1, 3]][:, :, [1, 3]], sub, rtol=1e-14)


def test_chi_parallel_is_derivative_of_kernel_map():
    # chi_par = d K^(l+1)/d K^(l) (5.8)-(5.9): central difference of the single-input map
    act, C_W = activation("swish"), 1.9
    for K in (0.4, 3.0, 14.0):
        eps = 1e-5 * K
        plus = kernel_step(act, np.array([[K + eps]]), 0.3, C_W)[0, 0]
        minus = kernel_step(act, np.array([[K - eps]]), 0.3, C_W)[0, 0]
        assert float(helpers(act, K, C_W).chi_par) == pytest.approx(
            (plus - minus) / (2 * eps), rel=1e-8
        )


def test_gamma_components_roundtrip():
    K = np.array([[2.0, 0.7], [0.7, 1.5]])
    k0, k1, k2 = gamma_components(K)
    # inverse of (5.17)-(5.19)
    assert k0 + k1 + k2 == pytest.approx(2.0)
    assert k0 - k1 + k2 == pytest.approx(1.5)
    assert k0 - k2 == pytest.approx(0.7)


def test_delta_expansion_converges_to_exact_two_input_kernel():
    # spec/03 §3.4 validation: the delta recursions (5.46)-(5.48) (and the derived dd K_[0])
    # agree with the exact two-input recursion (5.1) up to O(delta^2) relative corrections, so
    # the error drops ~4x when the separation halves.
    rng = np.random.default_rng(3)
    x0 = rng.normal(size=4)
    direction = rng.normal(size=4)
    net = Network("tanh", depth=10, C_b=0.1, C_W=1.5)
    errors = []
    for scale in (0.1, 0.05):
        dx = scale * direction
        exact = flow(net, np.stack([x0 + dx / 2, x0 - dx / 2]), fields=("K",)).K
        approx = delta_flow(net.activation, x0, dx, net.C_b, net.C_W)
        ge, ga = gamma_components(exact), gamma_components(approx.kernel())
        errors.append(np.max(np.abs(ga - ge) / np.abs(ge), axis=0))
    ratio = errors[0] / errors[1]
    assert np.all(errors[1] < 2e-3)
    assert np.all((ratio[1:] > 3.0) & (ratio[1:] < 5.0))


def test_perpendicular_delta_is_product_of_chi_perp():
    # (5.54)/(9.29): with dK_[1] = 0, ddK2^(l) = ddK2^(1) prod_{l'<l} chi_perp(K^(l'))
    x0 = np.array([1.0, 0.0, 0.0])
    dx = np.array([0.0, 1e-3, 0.0])
    net = Network("erf", depth=6, C_b=0.2, C_W=1.1)
    d = delta_flow(net.activation, x0, dx, net.C_b, net.C_W)
    assert np.allclose(d.dK1, 0.0)
    prod = np.concatenate([[1.0], np.cumprod(d.chi_perp[:-1])])
    assert np.allclose(d.ddK2, d.ddK2[0] * prod, rtol=1e-13)


def test_delta_flow_rejects_kinks():
    with pytest.raises(ValueError, match="smooth activation"):
        delta_flow(activation("relu"), np.ones(2), np.ones(2), np.zeros(3), 2 * np.ones(3))
