"""The NLO NTK mean H^{1} (derived by pdlt; the book names it in (9.3) and footnote 7 of ch. ∞
but does not give it) and the 1/n shift of Gaussian expectations it is built from."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pdlt import Network, activation, flow
from pdlt.theory.four_point import nlo_shift
from pdlt.theory.kernel import pair_moments

X3 = np.array([[1.0, 0.3, -0.5], [0.2, -1.0, 0.7], [-0.4, 0.6, 0.9]])
K3 = np.array([[1.1, 0.35, -0.2], [0.35, 0.8, 0.3], [-0.2, 0.3, 1.3]])
U3 = np.array([[0.4, -0.3, 0.2], [-0.3, 0.7, 0.1], [0.2, 0.1, -0.5]])  # a symmetric direction


def _pair(act, K, order):
    return pair_moments(act, K, (order,))[0]


@pytest.mark.parametrize("name", ["tanh", "gelu", "swish", "relu", "leaky_relu"])
@pytest.mark.parametrize("order", [0, 1])
def test_nlo_shift_against_finite_differences(name, order):
    # nlo_shift = (1/2) sum G1 <dd X> + (1/8) sum V <dddd X>, X = s^(o)_a s^(o)_b.  With G1 = u
    # and V = 0 it is d/dt <X>_{K + t u}; with G1 = 0 and V = u (x) u it is (1/2) d^2/dt^2 of
    # the same: checked by central differences of the 2-D Gaussian integrals (an independent
    # computation: no derivatives of sigma, no raised indices), smooth (integration-by-parts
    # path) and kinked (moment path) activations alike
    act = activation(name)
    zero2, zero4 = np.zeros((3, 3)), np.zeros((3, 3, 3, 3))
    h = 1e-3
    plus, minus = _pair(act, K3 + h * U3, order), _pair(act, K3 - h * U3, order)
    mid = _pair(act, K3, order)
    first = (plus - minus) / (2 * h)
    second = (plus - 2 * mid + minus) / h**2
    got1 = nlo_shift(act, K3, zero4, U3, order)
    got2 = nlo_shift(act, K3, np.einsum("gh,km->ghkm", U3, U3), zero2, order)
    scale1, scale2 = np.max(np.abs(first)), np.max(np.abs(second))
    assert np.max(np.abs(got1 - first)) < 1e-6 * scale1, (got1, first)
    assert np.max(np.abs(got2 - 0.5 * second)) < 1e-4 * scale2, (got2, 0.5 * second)


@pytest.mark.parametrize("name", ["tanh", "sigmoid"])
def test_nlo_shift_nearly_collinear_inputs(name):
    # two inputs at correlation 1 - 1e-9: the raised-index (moment) form of the V term divides
    # by det(K)^4 and returns ~1e19 here (deep sigmoid networks collapse their inputs like this;
    # the off-diagonal G1 of pdlt <= 0.4 came out as 1e9); the derivative form keeps every
    # digit.  Expected: the same finite differences as above
    act = activation(name)
    rho = 1.0 - 1e-9
    K = np.array([[0.9, rho * np.sqrt(0.9 * 0.95)], [rho * np.sqrt(0.9 * 0.95), 0.95]])
    v = np.sqrt(np.diag(K))
    u = np.outer(v, v)  # keeps K + t u positive definite at this correlation
    h = 1e-3
    for order in (0, 1):
        plus, mid, minus = (_pair(act, K + t * u, order) for t in (h, 0.0, -h))
        first, second = (plus - minus) / (2 * h), (plus - 2 * mid + minus) / h**2
        got1 = nlo_shift(act, K, np.zeros((2, 2, 2, 2)), u, order)
        got2 = nlo_shift(act, K, np.einsum("gh,km->ghkm", u, u), np.zeros((2, 2)), order)
        assert np.max(np.abs(got1 - first)) < 1e-6 * np.max(np.abs(first)), (got1, first)
        assert np.max(np.abs(got2 - 0.5 * second)) < 1e-5 * np.max(np.abs(second)), got2


def test_relu_single_input_ntk_mean_is_exact():
    # ReLU, one input: flipping the signs of one neuron's incoming weights and bias flips z_j and
    # leaves H-hat_jj alone, so E[s'(z_j)^2 H-hat_jj] = E[H-hat_jj]/2 and E[s(z_j)^2] = E[z_j^2]/2
    # = K/2 exactly: the NTK mean has no 1/n correction at any width, although D, F and V do not
    # vanish
    net = Network("relu", depth=6, width=8, C_b=0.0, C_W=2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = flow(net, X3[:1], fields=("Theta", "H1", "D", "F"))
    assert np.max(np.abs(f.H1)) < 1e-12 * np.max(np.abs(f.Theta))
    assert np.max(np.abs(f.D[-1])) > 1.0 and np.max(np.abs(f.F[-1])) > 1.0


def test_first_two_layers_and_tuning():
    # H1 = 0 at l = 1 (Theta^(1) is deterministic) and, untuned, at l = 2 (z^(1) is exactly
    # Gaussian); with C_W^(2) = C_W + C_W1/n_1 the second layer's mean NTK is exactly
    # lambda_b + lambda_W <ss> + (C_W + C_W1/n_1) <s's'> Theta^(1), so
    # H1^(2) = C_W1 <s's'> Theta^(1)
    # (C_b1 tunes K^(1) too: its shift enters through nlo_shift, checked above)
    act = activation("tanh")
    net = Network(act, depth=3, width=16, C_b=0.1, C_W=1.3, lambda_b=0.7, lambda_W=1.2)
    f = flow(net, X3, fields=("Theta", "H1"))
    assert np.all(f.H1[:2] == 0.0)
    assert np.max(np.abs(f.H1[2])) > 1e-3
    tuned = Network(act, depth=3, width=16, C_b=0.1, C_W=1.3, C_W1=[0.0, 0.8, 0.0])
    ft = flow(tuned, X3, fields=("K", "Theta", "H1"))
    dd = _pair(act, ft.K[0], 1)
    np.testing.assert_allclose(ft.H1[1], 0.8 * dd * ft.Theta[0], rtol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, lambda_b, lambda_W",
    [("gelu", 0.0, 1.0), ("relu", 1.0, 0.0)],  # the smooth and the kinked (moment-form) paths
)
def test_nlo_ntk_mean_against_width_extrapolation(name, lambda_b, lambda_W):
    # E[H-hat](n) = Theta + H1/n + O(1/n^2), fitted over n = 16, 32, 64 with 6000 real networks
    # per width (NTKs by autodiff), three inputs, layers 3 and 4 (H1 vanishes below): within
    # 4.5 standard errors plus a 15% allowance for the O(1/n^2) terms the linear fit absorbs.
    # The learning rates are chosen where H1 is large against the NTK's fluctuations sqrt(A)
    from pdlt.empirical.estimators import nlo_ntk_mean

    net = Network(name, depth=4, width=16, C_b=0.0, C_W=2.0, lambda_b=lambda_b, lambda_W=lambda_W)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the aspect-ratio warning at width 16
        th = flow(net, X3, fields=("Theta", "H1"))
    fit = nlo_ntk_mean(net, X3, widths=(16, 32, 64), size=8000, seed=3)
    for ell in (3, 4):
        H1, se = th.H1[ell - 1], fit.stderr("H1")[ell - 1]
        tol = 4.5 * se + 0.15 * np.max(np.abs(H1))
        assert np.all(np.abs(fit.H1[ell - 1] - H1) <= tol), (ell, fit.H1[ell - 1], H1, se)
    assert np.max(np.abs(th.H1[3]) / fit.stderr("H1")[3]) > 4  # resolved: the test can fail
