"""Representation learning at initialization: the dNTK statistics P, Q and the ddNTK means
R, S, T, U (book ch. 11, §∞.1, §∞.3; spec/06, spec/07).

Expected values come from: the deep-linear closed forms derived in spec/06 §4.3b and the book's
(∞.46)-(∞.48); the scale-invariant closed form (11.79); the book's large-depth K*=0 laws
(11.100), (11.102), (∞.34)-(∞.37) (coefficients typed from the book, reached by iterating the
general recursions); and ensembles of real networks whose dNTK and ddNTKs are computed by
autodiff (:mod:`pdlt.empirical.observables`), three inputs, at two widths.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from pdlt import Network, compare, criticality, flow, measure
from pdlt.cli import main
from pdlt.theory.ddntk import linear_ddntk
from pdlt.theory.dntk import scale_invariant_dntk
from pdlt.theory.flow import TruncationWarning, fluctuation_ratios

X3 = np.array([[1.0, 0.3, -0.4, 0.2], [-0.2, 0.9, 0.5, 0.1], [0.6, -0.5, 0.3, -0.8]])
DNTK, DDNTK = ("P", "Q"), ("R", "S", "T", "U")


def quiet_flow(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        return flow(*args, **kw)


# ------------------------------------------------------------------------------------------
# Exact cases
# ------------------------------------------------------------------------------------------


def test_deep_linear_multi_input_closed_forms():
    # spec/06 §4.3b: C_b = 0, C_W = 1, uniform lambdas, g = x x^T / n_0:
    # P = 0 and Q_{0123} = l (l^2 - 1)/6 lam_W g_13 (lam_b + lam_W g_02)
    lam_b, lam_W, L = 0.7, 1.3, 6
    net = Network("linear", depth=L, width=50, C_b=0.0, C_W=1.0, lambda_b=lam_b, lambda_W=lam_W)
    f = quiet_flow(net, X3, fields=DNTK + DDNTK)
    g = X3 @ X3.T / 4
    for ell in range(1, L + 1):
        Q = ell * (ell**2 - 1) / 6 * lam_W * np.einsum("bd,ac->abcd", g, lam_b + lam_W * g)
        assert np.allclose(f.Q[ell - 1], Q, rtol=1e-11, atol=1e-12)
        assert np.all(f.P[ell - 1] == 0)
    # (∞.46): the first ddNTK and U vanish identically for deep linear networks
    assert np.abs(f.R).max() < 1e-12 and np.abs(f.U).max() < 1e-12


def test_deep_linear_ddntk_closed_form_with_depth_scaled_rates():
    # (∞.46)-(∞.48) with lambda = lambda-tilde / L, C_W = 1, K* = x.x/n_0
    L, K_star, lt_b, lt_W = 7, 0.8, 0.6, 1.7
    net = Network(
        "linear", depth=L, width=100, C_b=0.0, C_W=1.0, lambda_b=lt_b / L, lambda_W=lt_W / L
    )
    f = quiet_flow(net, k1=K_star, fields=("Theta",) + DDNTK)
    ell = np.arange(1, L + 1)
    ref = linear_ddntk(ell, L, K_star, lt_b, lt_W)
    for name in ("Theta", "S", "T"):
        assert np.allclose(f.single(name), ref[name], rtol=1e-12), name
    # hand-iterated (spec/07 §4.4): uniform lambda_b = 0.7, lambda_W = 1.3, K* = 1, L = 3
    net = Network("linear", depth=3, width=100, C_b=0.0, C_W=1.0, lambda_b=0.7, lambda_W=1.3)
    f = quiet_flow(net, k1=1.0, fields=DDNTK)
    assert f.single("S")[-1] == pytest.approx(31.2, rel=1e-12)
    assert f.single("T")[-1] == pytest.approx(20.28, rel=1e-12)


@pytest.mark.parametrize("name, ap, am", [("relu", 1.0, 0.0), ("leaky_relu:0.3", 1.0, 0.3)])
def test_scale_invariant_single_input_closed_form(name, ap, am):
    # (11.74), (11.76)-(11.79): P = 0 and Q = l (l^2 - 1)/(6 L^2) (A4/A2) lt_W K* Lam
    L, k1, lt_b, lt_W = 9, 0.9, 0.5, 1.5
    net = Network(name, depth=L, width=100, lambda_b=lt_b / L, lambda_W=lt_W / L)
    f = quiet_flow(net, k1=k1, fields=("Theta", "F") + DNTK)
    # K* = K^(1) = k1 at criticality (9.41)
    ref = scale_invariant_dntk(np.arange(1, L + 1), L, ap, am, k1, lt_b, lt_W)
    assert np.all(f.single("P") == 0)
    for key in ("Theta", "F", "Q"):
        assert np.allclose(f.single(key), ref[key], rtol=1e-10), key


def test_kinked_activations_have_no_ddntk():
    # §∞.1 ((∞.41)-(∞.44)): one GD step is not an expansion in eta across a kink
    net = Network("relu", depth=3, width=64)
    with pytest.raises(ValueError, match=r"not defined for 'relu'.*kink"):
        quiet_flow(net, k1=1.0, fields=("S",))


def test_symmetries_and_marginalization():
    net = Network("gelu", depth=4, width=80, C_b=0.1, C_W=1.6, lambda_b=0.7, lambda_W=1.3)
    f = quiet_flow(net, X3, fields=DNTK + DDNTK)
    # spec/06 §3.1, spec/07 §2: P_abcd = P_acbd, R_abcd = R_abdc, S_abcd = S_badc,
    # T_abcd = T_dcba, U_abcd = U_cdab
    for name, perm in [
        ("P", (0, 2, 1, 3)),
        ("R", (0, 1, 3, 2)),
        ("S", (1, 0, 3, 2)),
        ("T", (3, 2, 1, 0)),
        ("U", (2, 3, 0, 1)),
    ]:
        t = f[name]
        assert np.allclose(t, np.transpose(t, (0,) + tuple(p + 1 for p in perm)), rtol=1e-9), name
    # ... and Q has none: Q_abcd != Q_acbd
    assert not np.allclose(f.Q[3], np.transpose(f.Q[3], (0, 2, 1, 3)), rtol=1e-3)
    # statistics of a subset of inputs do not depend on the other inputs
    sub = quiet_flow(net, X3[[2, 0]], fields=DNTK + DDNTK)
    i = np.ix_(range(4), [2, 0], [2, 0], [2, 0], [2, 0])
    for name in DNTK + DDNTK:
        assert np.allclose(f[name][i], sub[name], rtol=1e-8, atol=1e-12), name


def test_k_star_zero_scaling_laws_from_the_general_recursions():
    # tanh at criticality with (∞.29) rates lambda_b = lt_b/l, lambda_W = lt_W (lt = 1, 1):
    # Theta -> Lam = lt_b + lt_W/2 = 1.5, and the book's ratios (coefficient of l/n):
    # P/(n Theta^2) -> -(1/3)(1/4) (11.100); Q/(n Theta^2) -> -(1/16)(lt_b/Lam) (11.102);
    # R K/(n Theta^3) -> -(1/48)(3 lt_b + 4 lt_W/2)/Lam; S -> (1/12)(lt_W/2)/Lam;
    # T -> (1/32)(lt_b/Lam)^2 (∞.34)-(∞.36); U K/(n Theta^3) -> 1/(2 l n) (∞.37)
    L, n = 600, 1e6
    net = Network(
        "tanh",
        depth=L,
        width=int(n),
        C_b=0.0,
        C_W=1.0,
        lambda_b=1.0 / np.arange(1, L + 1),
        lambda_W=1.0,
    )
    f = quiet_flow(net, k1=1.0, fields=("K", "Theta") + DNTK + DDNTK)
    r = fluctuation_ratios(f)
    Lam = 1.5
    laws = {
        "P/(nTheta^2)": -1 / 12,
        "Q/(nTheta^2)": -1 / 16 / Lam,
        "RK/(nTheta^3)": -(3 + 2) / 48 / Lam,
        "SK/(nTheta^3)": 0.5 / 12 / Lam,
        "TK/(nTheta^3)": 1 / 32 / Lam**2,
    }
    ell = np.array([150, 600])
    for key, c in laws.items():
        got = r[key][ell - 1] * n / ell
        # corrections O(log l / l): ~1-2 % at l = 600 (spec/06 §4.4, spec/07 §4.3)
        assert got[1] == pytest.approx(c, rel=0.03), key
        assert abs(got[1] / c - 1) < abs(got[0] / c - 1) + 0.003, key
    got_U = r["UK/(nTheta^3)"][ell - 1] * n * 2 * ell
    assert got_U[1] == pytest.approx(1.0, rel=0.03)
    exps = criticality("tanh").exponents
    assert exps["p_P"] == exps["p_Q"] == -1.0  # 2 p_perp - 3
    assert (exps["p_R"], exps["p_S"], exps["p_T"], exps["p_U"]) == (-2.0, -2.0, -2.0, 0.0)


# ------------------------------------------------------------------------------------------
# Against ensembles of real networks (autodiff dNTK and ddNTKs)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("act, C_b, C_W", [("tanh", 0.1, 1.2), ("gelu", 0.1, 1.6)])
def test_second_layer_exact_at_any_width(act, C_b, C_W):
    # (11.31)-(11.32) and the l = 2 ddNTK means are exact at any width (spec/06 §3.1, spec/07
    # §3.1): zero truncation allowance at l = 2, 4.5 standard errors, narrow hidden layers
    net = Network(act, widths=[4, 12, 12, 2], C_b=C_b, C_W=C_W, lambda_b=0.7, lambda_W=1.3)
    m = measure(net, X3, size=1200, seed=5, fields=DNTK + DDNTK, neurons=3)
    th = quiet_flow(net, X3, fields=DNTK + DDNTK)
    cmp = compare(th, m, k=4.5)
    for name in DNTK + DDNTK:
        row = cmp.row(name, 2)
        assert row.allowance == 0.0
        assert row.ok, cmp.table()
        # the test resolves the tensors: standard errors at most ~10 % of their size
        assert np.max(m.stderr(name)[1]) < 0.12 * np.max(np.abs(th[name][1])), name


@pytest.mark.parametrize("act, C_W, n", [("tanh", 1.2, 24), ("tanh", 1.2, 48), ("gelu", 1.6, 48)])
def test_deeper_layers_within_l_over_n(act, C_W, n):
    # three inputs, layers 3 and 4: within 4.5 standard errors plus the truncation allowance
    # 3 (l/n) max|theory| of the leading-order recursions (11.49), (11.52), (∞.177)-(∞.181)
    net = Network(act, widths=[4, n, n, n, 2], C_b=0.1, C_W=C_W, lambda_b=0.7, lambda_W=1.3)
    m = measure(net, X3, size=500, seed=7, fields=DNTK + DDNTK, neurons=2)
    th = quiet_flow(net, X3, fields=DNTK + DDNTK)
    cmp = compare(th, m, k=4.5)
    assert cmp.ok, cmp.table()


def test_relu_multi_input_convention():
    # ReLU, three inputs: the almost-sure Hessian has s'' = 0, so P = 0 at leading order and
    # Q keeps the replacement-rule terms with the distributional <s''_a s_b> (module notes of
    # pdlt.theory.dntk).  The measured P is O(1/n): bounded by 3 (l/n) max|Q|.
    n = 48
    net = Network("relu", widths=[4, n, n, n, 2], lambda_b=0.7, lambda_W=1.3)
    m = measure(net, X3, size=1500, seed=9, fields=DNTK, neurons=4)
    th = quiet_flow(net, X3, fields=DNTK)
    cmp = compare(th, m, k=4.5)
    for ell in (2, 3, 4):
        assert cmp.row("Q", ell).ok, cmp.table()
        bound = 4.5 * m.stderr("P")[ell - 1] + 3 * (ell / n) * np.abs(th.Q[ell - 1]).max()
        assert np.all(np.abs(m.P[ell - 1]) <= bound), ell
    assert np.all(th.P == 0)
    # spec/06 §3.7 left the multi-input ReLU convention open; the measurement follows the
    # distributional <s''_2 s_3> closely at layer 3 (rms over all 81 entries; dropping those
    # terms gave rms z = 4.3 in a run at n = 64)
    se = m.stderr("Q")[2]
    assert np.sqrt(np.mean(((m.Q[2] - th.Q[2]) / se) ** 2)) < 2.0


def test_cli_flow_fields(capsys):
    code = main(["flow", "--activation", "gelu", "--depth", "3", "--width", "64", "--json",
                 "--fields", "P,Q,R,S,T,U"])  # fmt: skip
    out, _ = capsys.readouterr()
    assert code == 0
    layers = json.loads(out)["layers"]
    assert np.array(layers["U"]).shape == (3,)  # one input: one number per layer
    code = main(["flow", "--activation", "relu", "--depth", "3", "--fields", "R"])
    _, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and "kink" in err


def test_parity_of_the_dntk_under_flipping_one_neuron():
    # spec/06 §2.4: flipping the sign of row a of (W^(l), b^(l)) sends z_a -> -z_a and
    # dH_{i0 i1 i2} -> (-1)^(number of a among i0, i1, i2) dH, exactly, network by network;
    # hence the Kronecker-delta pattern of (11.45) (e.g. E[dH_abb z_b] = 0 exactly)
    import torch

    from pdlt import Ensemble
    from pdlt.empirical.ensemble import forward
    from pdlt.empirical.observables import dntk

    net = Network("gelu", widths=[3, 5, 4, 4, 2], C_b=0.1, C_W=1.6, lambda_b=0.7, lambda_W=1.3)
    p = Ensemble(net, size=2, seed=8).params(0)
    x = torch.tensor(X3[:2, :3])
    ell, a = 3, 1
    q = {k: v.clone() for k, v in p.items()}
    q[f"W{ell}"][:, a] *= -1
    q[f"b{ell}"][:, a] *= -1
    z, zq = forward(p, x, net)[ell - 1], forward(q, x, net)[ell - 1]
    assert torch.allclose(zq[..., a], -z[..., a], rtol=0, atol=1e-14)
    d, dq = dntk(p, x, net, ell, [0, 1, 2, 3]), dntk(q, x, net, ell, [0, 1, 2, 3])
    idx = torch.arange(4)
    count = sum((i == a).long() for i in torch.meshgrid(idx, idx, idx, indexing="ij"))
    sign = (1 - 2 * (count % 2)).double()[None, :, :, :, None, None, None]
    assert d.abs().max() > 1e-3  # a nonzero dNTK at layer 3
    assert torch.allclose(dq, sign * d, rtol=1e-12, atol=1e-14)


def test_output_rescaling_fixes_the_depth_scaling():
    # (∞.24)-(∞.25): K^(L) ~ 1/((-a1) L) for tanh at criticality, so z L^{p_0/2} has variance
    # L K^(L) -> 1/(-a1) = 1/2 (up to O(log L / L)); ReLU (p_0 = 0) needs no rescaling
    L = 400
    f = quiet_flow(Network("tanh", depth=L), k1=1.0, fields=("K",))
    scale = criticality("tanh").output_scale(L)
    assert scale == pytest.approx(20.0)
    assert scale**2 * f.single("K")[-1] == pytest.approx(0.5, rel=0.03)
    assert criticality("relu").output_scale(L) == 1.0
    with pytest.raises(ValueError, match="positive integer"):
        criticality("tanh").output_scale(0)
