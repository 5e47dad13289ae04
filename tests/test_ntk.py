"""The NTK at initialization: Theta, A, B, D, F (book ch. 8-9; spec/05).

Expected values: the scale-invariant closed forms of spec/05 §9 (book (9.44)-(9.52) and the
exact A solution), the K*=0 large-depth limits of spec/05 §10 (book (9.71)-(9.86)), and
ensembles of real networks (autodiff NTK) at several widths, with three inputs.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pdlt import Network, compare, criticality, flow, measure
from pdlt.theory.flow import TruncationWarning

X3 = np.array([[1.0, 0.3, -0.4, 0.2], [-0.2, 0.9, 0.5, 0.1], [0.6, -0.5, 0.3, -0.8]])
FIELDS = ("K", "V", "Theta", "A", "B", "D", "F")


def quiet_flow(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        return flow(*args, **kw)


@pytest.mark.parametrize("name", ["relu", "leaky_relu:0.2", "linear"])
def test_scale_invariant_closed_forms(name):
    # spec/05 §9 at criticality with uniform lambdas (A2 K* = X):
    # Theta = l (lb + lW X); D = l(l-1)/2 [lb (r-1) K* + lW A2 (4r-2) K*^2];
    # F = l(l-1)/2 r (lb + lW X) K*; B = l(l-1)(2l-1)/6 r (lb + lW X)^2;
    # A = (r-1) lb^2 l(l-1)(2l-1)/6 + (r-1) lb lW X l^2(l-1)
    #     + lW^2 K*^2 l(l-1)[(5 A4 - 3 A2^2) l - A4]/3        (exact solution, spec/05 §9)
    c = criticality(name)
    A2, A4 = c.A2, c.A4
    r = A4 / A2**2
    X, lb, lW, L = 0.6, 0.7, 1.3, 7
    net = Network(name, depth=L, lambda_b=lb, lambda_W=lW)
    f = flow(net, np.array([[np.sqrt(X)]]), fields=FIELDS)
    Ks = X / A2
    ell = np.arange(1, L + 1)
    lam = lb + lW * X
    expected = {
        "K": np.full(L, Ks),
        "Theta": ell * lam,
        "D": ell * (ell - 1) / 2 * (lb * (r - 1) * Ks + lW * A2 * (4 * r - 2) * Ks**2),
        "F": ell * (ell - 1) / 2 * r * lam * Ks,
        "B": ell * (ell - 1) * (2 * ell - 1) / 6 * r * lam**2,
        "A": (r - 1) * lb**2 * ell * (ell - 1) * (2 * ell - 1) / 6
        + (r - 1) * lb * lW * X * ell**2 * (ell - 1)
        + lW**2 * Ks**2 * ell * (ell - 1) * ((5 * A4 - 3 * A2**2) * ell - A4) / 3,
    }
    for name_, exp in expected.items():
        assert np.allclose(f.single(name_), exp, rtol=1e-10, atol=1e-12), name_


def test_scale_invariant_off_critical_theta():
    # spec/05 §9 (from (9.28)): C_b = 0, chi = C_W A2: Theta = lb (1 - chi^l)/(1 - chi)
    # + lW X l chi^(l-1)
    X, lb, lW, C_W = 0.5, 0.4, 1.1, 1.6
    f = flow(
        Network("relu", depth=8, C_b=0.0, C_W=C_W, lambda_b=lb, lambda_W=lW),
        np.array([[np.sqrt(X)]]),
        fields=("Theta",),
    )
    chi = C_W / 2
    ell = np.arange(1, 9)
    assert np.allclose(
        f.single("Theta"),
        lb * (1 - chi**ell) / (1 - chi) + lW * X * ell * chi ** (ell - 1),
        rtol=1e-12,
    )


def test_k_star_zero_large_depth_with_equivalence_learning_rates():
    # (9.70): lambda_b = lb~/l, lambda_W = lW~ (p_perp = 1 for tanh); then (9.71), (9.81),
    # (9.82): Theta -> Lambda = lb~ + lW~ sigma_1^2/(-a1), F/(K Theta) -> l/(5 - p_perp),
    # B/Theta^2 -> l/3 (log l / l corrections: a few per cent at l ~ 10^3, spec/05 §10)
    L = 1200
    ell = np.arange(1, L + 1)
    lb, lW = 0.5, 1.5
    net = Network("tanh", depth=L, lambda_b=lb / ell, lambda_W=lW)
    f = flow(net, np.array([[1.0]]), fields=("K", "Theta", "B", "F"))
    K, T, B, F = (f.single(n) for n in ("K", "Theta", "B", "F"))
    a1 = criticality("tanh").a1
    assert T[-1] == pytest.approx(lb + lW / (-a1), rel=0.03)
    assert F[-1] / (K[-1] * T[-1]) / L == pytest.approx(1 / 4, rel=0.03)
    assert B[-1] / T[-1] ** 2 / L == pytest.approx(1 / 3, rel=0.03)


def test_homogeneity_in_learning_rates():
    # spec/05 §0.1: Theta, D, F are of degree 1 in (lambda_b, lambda_W); A, B of degree 2
    net = Network("gelu", depth=4, C_b=0.1, C_W=1.5, lambda_b=0.3, lambda_W=0.8)
    a = quiet_flow(net, X3, fields=FIELDS)
    b = quiet_flow(net.replace(lambda_b=0.6, lambda_W=1.6), X3, fields=FIELDS)
    for name, deg in (("Theta", 1), ("D", 1), ("F", 1), ("A", 2), ("B", 2)):
        assert np.allclose(b[name], 2**deg * a[name], rtol=1e-10, atol=1e-13), name


def test_symmetries_and_marginalization():
    net = Network("tanh", depth=4, C_b=0.1, C_W=1.2, lambda_b=0.7, lambda_W=1.3)
    f = flow(net, X3, fields=FIELDS)
    B, F, D, A = f.B[3], f.F[3], f.D[3], f.A[3]
    # spec/05 §1.2: B and F keep the joint swap (ab)<->(cd) of their slots; D is symmetric
    # within each pair; A like V
    assert np.allclose(B, B.transpose(2, 3, 0, 1), atol=1e-13)
    assert np.allclose(F, F.transpose(2, 3, 0, 1), atol=1e-13)
    assert np.allclose(D, D.transpose(1, 0, 2, 3)) and np.allclose(D, D.transpose(0, 1, 3, 2))
    assert np.allclose(A, A.transpose(2, 3, 0, 1)) and np.allclose(A, A.transpose(1, 0, 2, 3))
    # ... and B is NOT symmetric under a <-> c alone at l >= 3 (it is at l = 2)
    assert not np.allclose(f.B[2][0, 0, 1, 1], f.B[2][0, 1, 1, 0], rtol=1e-3)
    assert np.isclose(f.B[1][0, 0, 1, 1], f.B[1][0, 1, 1, 0], rtol=1e-12)
    # statistics of a subset of inputs do not depend on the others (spec/02 §6.1)
    sub = flow(net, X3[[0, 2]], fields=FIELDS)
    i = np.ix_(range(4), [0, 2], [0, 2], [0, 2], [0, 2])
    for name in ("A", "B", "D", "F"):
        assert np.allclose(f[name][i], sub[name], rtol=1e-9, atol=1e-12), name
    assert np.allclose(f.Theta[:, [0, 2]][:, :, [0, 2]], sub.Theta, rtol=1e-12)


@pytest.mark.parametrize(
    "act, C_b, C_W", [("tanh", 0.1, 1.2), ("relu", 0.0, 2.0), ("gelu", 0.1, 1.6)]
)
def test_against_networks_three_inputs(act, C_b, C_W):
    # Autodiff NTK of real networks, three inputs: layer 2 exact (zero allowance), deeper
    # layers within 4.5 standard errors plus 3 (l/n) max|theory|, at widths 32 and 96
    for n in (32, 96):
        net = Network(act, widths=[4, n, n, n, 2], C_b=C_b, C_W=C_W, lambda_b=0.7, lambda_W=1.3)
        m = measure(net, X3, size=3000, seed=11, fields=FIELDS[:1] + FIELDS[2:])
        th = quiet_flow(net, X3, fields=FIELDS + ("G1",))
        cmp = compare(th, m, k=4.5)
        assert cmp.ok, cmp.table()
        assert cmp.row("A", 2).allowance == 0.0


def test_b_asymmetry_is_measured():
    # B[a, a, b, b] != B[a, b, b, a] at layer 3 (spec/05 §1.1): theory vs networks; layer 3 is
    # hidden (n = 64) so the pair averages run over 64 neurons
    net = Network("tanh", widths=[4, 64, 64, 64, 2], C_b=0.1, C_W=1.2, lambda_b=0.7, lambda_W=1.3)
    m = measure(net, X3[:2], size=4000, seed=2, fields=("B",))
    th = flow(net, X3[:2], fields=("B",))
    gap_th = th.B[2][0, 0, 1, 1] - th.B[2][0, 1, 1, 0]
    gap_m = m.B[2][0, 0, 1, 1] - m.B[2][0, 1, 1, 0]
    se = np.hypot(m.stderr("B")[2][0, 0, 1, 1], m.stderr("B")[2][0, 1, 1, 0])
    assert abs(gap_th) > 5 * se  # the asymmetry is resolved
    assert abs(gap_m - gap_th) < 4.5 * se + 0.1 * abs(gap_th)


def test_equivalence_principle_learning_rates():
    # (9.94): scale-invariant, lambda = lambda~/L gives Theta^(L) = lambda_b~ + lambda_W~ X with
    # every layer contributing equally (spec/05 §12)
    from pdlt.theory.learning_rates import equivalence_principle, plain_gradient_descent

    X, L = 0.8, 9
    lr = equivalence_principle("relu", L, 0.5, 2.0)
    f = flow(
        Network("relu", depth=L, lambda_b=lr.lambda_b, lambda_W=lr.lambda_W),
        np.array([[np.sqrt(X)]]),
        fields=("Theta",),
    )
    assert f.single("Theta")[-1] == pytest.approx(0.5 + 2.0 * X, rel=1e-12)
    assert np.allclose(np.diff(f.single("Theta")), (0.5 + 2.0 * X) / L, rtol=1e-12)
    # (9.96) for tanh (p_perp = 1): lambda_b = lambda_b~/l, lambda_W = lambda_W~, no L
    lr = equivalence_principle("tanh", 5, 0.5, 2.0)
    assert np.allclose(lr.lambda_b, 0.5 / np.arange(1, 6)) and np.allclose(lr.lambda_W, 2.0)
    with pytest.raises(ValueError, match="half-stable"):
        equivalence_principle("gelu", 5)
    # plain gradient descent is lambda_b = 1, lambda_W = n_{l-1} (L18947)
    pgd = plain_gradient_descent([3, 10, 20, 1])
    assert pgd.lambda_b.tolist() == [1, 1, 1] and pgd.lambda_W.tolist() == [3, 10, 20]


def test_plain_gradient_descent_ntk_is_the_parameter_gradient_gram():
    # with lambda_b = 1 and lambda_W = n_{l-1}, H-hat = sum_mu dz/dtheta_mu dz/dtheta_mu
    import torch

    from pdlt.empirical.ensemble import Ensemble, forward
    from pdlt.empirical.observables import ntk
    from pdlt.theory.learning_rates import plain_gradient_descent

    widths = [3, 6, 5, 2]
    lr = plain_gradient_descent(widths)
    net = Network(
        "tanh", widths=widths, C_b=0.1, C_W=1.2, lambda_b=lr.lambda_b, lambda_W=lr.lambda_W
    )
    p = Ensemble(net, size=1, seed=0).params(0)
    x = torch.tensor(X3[:2, :3])
    q = {k: v[0].clone().requires_grad_(True) for k, v in p.items()}
    z = forward({k: v[None] for k, v in q.items()}, x, net)[-1][0]  # (N, n_L)
    rows = []
    for a in range(2):
        for i in range(2):
            g = torch.autograd.grad(z[a, i], list(q.values()), retain_graph=True)
            rows.append(torch.cat([t.reshape(-1) for t in g]))
    Jm = torch.stack(rows).reshape(2, 2, -1)  # [a, i, mu]
    gram = torch.einsum("aip,bjp->ijab", Jm, Jm)
    assert torch.allclose(ntk(p, x, net, 3)[0], gram, atol=1e-12)


def test_per_layer_contributions_theory_and_networks():
    # (9.28): c_b(l'->L), c_W(l'->L) sum to Theta^(L); each agrees with the neuron-averaged
    # bias/weight parts (8.7) of autodiff NTKs of real networks (n = 64, 400 networks)
    import torch

    from pdlt.empirical.ensemble import Ensemble
    from pdlt.empirical.observables import ntk_layer_contributions
    from pdlt.theory.ntk import layer_contributions

    net = Network("tanh", widths=[2, 64, 64, 64, 1], lambda_b=0.7, lambda_W=1.3)
    x = np.array([[1.0, 0.5]])
    f = flow(net, x, fields=("K", "Theta"))
    c = layer_contributions(net.activation, x @ x.T / 2, f.K, net.C_W, net.lambda_b, net.lambda_W)
    assert np.allclose(c.sum(axis=(0, 1)), f.Theta[-1], rtol=1e-12)
    m = ntk_layer_contributions(
        Ensemble(net, size=400, block_size=400).params(0), torch.tensor(x), net, 4
    ).numpy()[..., 0, 0]
    mean, se = m.mean(0), m.std(0, ddof=1) / np.sqrt(len(m))
    # leading order: O(l/n) corrections allowed, 3 (4/64) relative, plus 4.5 standard errors
    assert np.all(np.abs(mean - c[..., 0, 0]) <= 4.5 * se + 3 * 4 / 64 * np.abs(c[..., 0, 0]))


@pytest.mark.parametrize("name", ["relu", "tanh"])
def test_scaling_laws_all_ratios_grow_like_depth(name):
    # (9.26)-(9.27): p_V - 2p_0 = p_A - 2p_Theta = p_B - 2p_Theta = p_D - p_Theta - p_0
    # = p_F - p_Theta - p_0 = -1: every normalized ratio grows ~ l/n. Exponents of the class
    # (computed from the activation) against log-log slopes of the iterated recursions.
    from pdlt import fluctuation_ratios

    L = 400 if name == "tanh" else 60
    ell = np.arange(1, L + 1)
    c = criticality(name)
    lam = {} if name == "relu" else {"lambda_b": 1.0 / ell, "lambda_W": 1.0}  # (9.70)
    net = Network(name, depth=L, width=10_000, **lam)
    r = fluctuation_ratios(quiet_flow(net, np.array([[1.0]]), fields=FIELDS + ("chi_perp",)))
    e = c.exponents
    assert e["p_V"] - 2 * e["p_0"] == -1 and e["p_A"] - 2 * e["p_Theta"] == -1
    assert e["p_D"] - e["p_Theta"] - e["p_0"] == -1
    for key, v in r.items():
        if key == "grad_factor":
            continue
        slope = np.polyfit(np.log(ell[L // 2 :]), np.log(np.abs(v[L // 2 :])), 1)[0]
        assert slope == pytest.approx(1.0, abs=0.06), (key, slope)
    # at criticality the chain-rule factor neither explodes nor vanishes exponentially
    g = r["grad_factor"]
    assert 1e-3 < g[0] < 1e3


def test_ntk_parameterization_mapping():
    # W = sqrt(C_W/n) w, b = sqrt(C_b) beta, unit step on (w, beta): the Gram matrix of
    # gradients with respect to (w, beta) equals our NTK with lambda_W = C_W, lambda_b = C_b
    import torch

    from pdlt.empirical.ensemble import Ensemble, forward
    from pdlt.empirical.observables import ntk
    from pdlt.theory.learning_rates import ntk_parameterization

    widths, C_b, C_W = [3, 6, 5, 2], [0.2, 0.1, 0.3], [1.5, 1.2, 0.9]
    lr = ntk_parameterization(C_b, C_W)
    net = Network(
        "tanh", widths=widths, C_b=C_b, C_W=C_W, lambda_b=lr.lambda_b, lambda_W=lr.lambda_W
    )
    p = Ensemble(net, size=1, seed=4).params(0)
    scale = {f"W{l}": (C_W[l - 1] / widths[l - 1]) ** 0.5 for l in (1, 2, 3)}
    scale |= {f"b{l}": C_b[l - 1] ** 0.5 for l in (1, 2, 3)}
    unit = {k: (v[0] / scale[k]).clone().requires_grad_(True) for k, v in p.items()}
    x = torch.tensor(X3[:2, :3])
    z = forward({k: (scale[k] * v)[None] for k, v in unit.items()}, x, net)[-1][0]
    rows = []
    for a in range(2):
        for i in range(2):
            g = torch.autograd.grad(z[a, i], list(unit.values()), retain_graph=True)
            rows.append(torch.cat([t.reshape(-1) for t in g]))
    Jm = torch.stack(rows).reshape(2, 2, -1)
    assert torch.allclose(ntk(p, x, net, 3)[0], torch.einsum("aip,bjp->ijab", Jm, Jm), atol=1e-12)
