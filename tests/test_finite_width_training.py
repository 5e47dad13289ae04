"""Fully-trained networks at order 1/n (spec/07 §6-§7, §12.3-§12.4).

Expected values are independent of the implementation's eigenbasis closed forms:
(i) the projectors are rebuilt here from their defining sums (∞.107), (∞.110), (∞.135)-(∞.147)
by solving the linear systems directly, and from the single-input closed forms of spec/07 §8.3;
(ii) the closed-form prediction (∞.141) is compared with iterating the truncated dynamics
(∞.81)-(∞.83) to convergence (residual ∝ eps^2, spec/07 §12.3); (iii) real tanh networks are
trained with real tensorial gradient descent and compared with the formula evaluated with each
network's own tensors (spec/07 §12.4).
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import torch

from pdlt import Network
from pdlt.empirical.ensemble import Ensemble, forward
from pdlt.empirical.observables import ddntk, dntk, ntk
from pdlt.empirical.training import train
from pdlt.learning import (
    algorithm_projectors,
    combine_indices,
    finite_time_tensors,
    fully_trained_prediction,
    inverting_tensors,
    mean_prediction,
    simulate_truncated_dynamics,
)

RNG = np.random.default_rng(2026)


def spd(P, rng, lo=0.5, hi=2.0):
    u, _ = np.linalg.qr(rng.normal(size=(P, P)))
    return (u * rng.uniform(lo, hi, size=P)) @ u.T


# --------------------------------------------------------------------------------------------
# projectors from their defining sums


def defining_projectors(Ht, eta):
    """(∞.107), (∞.110), (∞.135)-(∞.147), by direct linear solves (no eigenbasis)."""
    P = Ht.shape[0]
    I = np.eye(P)
    Hi = np.linalg.inv(Ht)
    M2 = np.einsum("ac,bd->abcd", Ht, I) + np.einsum("ac,bd->abcd", I, Ht)
    M2 = M2 - eta * np.einsum("ac,bd->abcd", Ht, Ht)
    X2 = np.linalg.inv(M2.reshape(P * P, P * P)).reshape((P,) * 4)
    k = lambda a, b, c: np.einsum("ad,be,cf->abcdef", a, b, c)  # noqa: E731
    M3 = k(Ht, I, I) + k(I, Ht, I) + k(I, I, Ht)
    M3 = M3 - eta * (k(Ht, Ht, I) + k(Ht, I, Ht) + k(I, Ht, Ht)) + eta**2 * k(Ht, Ht, Ht)
    X3 = np.linalg.inv(M3.reshape(P**3, P**3)).reshape((P,) * 6)
    Y1 = np.einsum("abde,cf->abcdef", X2, Hi) - np.einsum("cg,abgdef->abcdef", Hi, X3)
    Y2 = np.einsum("ac,bd->abcd", Hi, Hi) - np.einsum("be,aecd->abcd", Hi, X2)
    Y3 = (
        np.einsum("ad,be,cf->abcdef", Hi, Hi, Hi)
        - np.einsum("bg,agde,cf->abcdef", Hi, X2, Hi)
        - np.einsum("ad,cg,bgef->abcdef", Hi, Hi, X2)
        + np.einsum("ci,bigh,aghdef->abcdef", Hi, X2, X3)
    )
    Y4 = np.einsum("ad,bcef->abcdef", Hi, X2) - np.einsum("bcgh,aghdef->abcdef", X2, X3)
    Z = {
        "Z_A": Y2,
        "Z_B": Y2 + eta / 2 * X2,
        "Z_IA": -Y3 - eta / 2 * Y4,
        "Z_IB": -Y3 - eta / 2 * Y4 - eta / 2 * Y1 - eta**2 / 6 * X3,
        "Z_IIA": -Y3,
        "Z_IIB": -Y3
        - Y3.transpose(1, 0, 2, 4, 3, 5)
        - Y3.transpose(0, 2, 1, 3, 5, 4)
        - eta * Y4
        - eta * Y1,
    }
    return Hi, X2, X3, Z


NAMES = ("Z_A", "Z_B", "Z_IA", "Z_IB", "Z_IIA", "Z_IIB")


@pytest.mark.parametrize("frac", [0.3, 0.9, 1.8])
def test_projectors_equal_their_defining_sums(frac):
    Ht = spd(4, RNG)
    eta = frac / np.linalg.eigvalsh(Ht)[-1]
    Hi, X2, X3, Zdef = defining_projectors(Ht, eta)
    XI, XII, XIII = inverting_tensors(Ht, eta)
    np.testing.assert_allclose(XI, Hi, atol=1e-12)
    np.testing.assert_allclose(XII, X2, atol=1e-12)
    np.testing.assert_allclose(XIII, X3, atol=1e-12)
    Z = algorithm_projectors(Ht, eta)
    for name in NAMES:
        np.testing.assert_allclose(getattr(Z, name), Zdef[name], atol=1e-11, err_msg=name)
    # only the symmetrized Z_B and Z_IB matter, and they equal the two-step ones (spec/07 §7.4)
    two = algorithm_projectors(Ht, kind="two_step")
    symB = 0.5 * (Z.Z_B + Z.Z_B.transpose(1, 0, 3, 2))
    np.testing.assert_allclose(symB, two.Z_B, atol=1e-12)
    np.testing.assert_allclose(two.Z_B, 0.5 * np.einsum("ac,bd->abcd", Hi, Hi), atol=1e-12)
    perms = list(itertools.permutations(range(3)))
    symIB = sum(Z.Z_IB.transpose(*p, *(3 + q for q in p)) for p in perms) / 6
    np.testing.assert_allclose(symIB, two.Z_IB, atol=1e-11)
    np.testing.assert_allclose(two.Z_IB, -np.einsum("ad,be,cf->abcdef", Hi, Hi, Hi) / 6, atol=1e-12)
    for name in ("Z_A", "Z_IA", "Z_IIA", "Z_IIB"):
        assert not getattr(two, name).any()


def test_ode_limit_is_eta_to_zero():
    Ht = spd(3, RNG)
    _, _, _, Zdef = defining_projectors(Ht, 0.0)
    ode = algorithm_projectors(Ht, kind="ode")
    small = algorithm_projectors(Ht, 1e-7)
    for name in NAMES:
        np.testing.assert_allclose(getattr(ode, name), Zdef[name], atol=1e-11, err_msg=name)
        np.testing.assert_allclose(getattr(small, name), getattr(ode, name), atol=1e-5)


@pytest.mark.parametrize("frac", [0.0, 0.5, 1.5])
def test_single_input_closed_forms(frac):
    # spec/07 §8.3 and (∞.168)-(∞.169)
    H = 1.7
    eta = frac / H
    Z = algorithm_projectors([[H]], eta) if frac else algorithm_projectors([[H]], kind="ode")
    q = 3 - 3 * eta * H + eta**2 * H**2
    expected = {
        "Z_A": (1 - eta * H) / (H**2 * (2 - eta * H)),
        "Z_B": 1 / (2 * H**2),
        "Z_IA": -(1 - eta * H) * (2 - 2 * eta * H + eta**2 * H**2) / (2 * H**3 * (2 - eta * H) * q),
        "Z_IB": -1 / (6 * H**3),
        "Z_IIA": -((1 - eta * H) ** 3) / (H**3 * (2 - eta * H) * q),
        "Z_IIB": -(1 - eta * H) / (H**3 * (2 - eta * H)),
    }
    for name, v in expected.items():
        assert getattr(Z, name).item() == pytest.approx(v, rel=1e-12), name


def test_bad_learning_rates_and_inputs_are_refused():
    Ht = np.diag([1.0, 4.0])
    with pytest.raises(ValueError, match="does not converge"):
        algorithm_projectors(Ht, 0.5)  # eta lambda_max = 2
    with pytest.raises(ValueError, match="does not converge"):
        algorithm_projectors(Ht, -0.1)
    with pytest.raises(ValueError, match="needs the learning rate"):
        algorithm_projectors(Ht)
    with pytest.raises(ValueError, match="kind"):
        algorithm_projectors(Ht, 0.1, kind="adam")
    with pytest.raises(ValueError, match="not positive semidefinite"):
        algorithm_projectors(np.diag([1.0, -1.0]), 0.1)


# --------------------------------------------------------------------------------------------
# closed form vs truncated dynamics, random tensors (spec/07 §12.3)


def split(t, rank, n, N):
    """Inverse of combine_indices: combined (n*N,)*rank -> neurons first, then samples."""
    a = t.reshape((n, N) * rank)
    return a.transpose([2 * k for k in range(rank)] + [2 * k + 1 for k in range(rank)])


def random_problem(rng, n_out=2, n_train=3, n_test=2):
    N = n_train + n_test
    Q = n_out * N
    H = spd(Q, rng, 0.6, 1.6)
    d = rng.normal(size=(Q, Q, Q))
    dH = d + d.transpose(0, 2, 1)
    g = rng.normal(size=(Q,) * 4)
    ddI = sum(g.transpose(0, *p) for p in itertools.permutations((1, 2, 3))) / 6
    w = rng.normal(size=(Q, Q, 3)) / np.sqrt(3)
    ddII = np.einsum("acp,bdp->abcd", w, w)
    z = rng.normal(size=(n_out, N))
    y = 0.5 * rng.normal(size=(n_out, n_train))
    return n_out, N, n_train, H, dH, ddI, ddII, z, y


@pytest.mark.parametrize("frac", [0.5, 1.6])
def test_closed_form_matches_truncated_dynamics(frac):
    n, N, nA, H, dH, ddI, ddII, z, y = random_problem(np.random.default_rng(7))
    A = [i * N + a for i in range(n) for a in range(nA)]
    eta = frac / np.linalg.eigvalsh(H[np.ix_(A, A)])[-1]
    res, inter = [], []
    for eps in (0.001, 0.0005):
        args = (
            split(H, 2, n, N),
            split(eps * dH, 3, n, N),
            split(eps * ddI, 4, n, N),
            split(eps * ddII, 4, n, N),
        )
        sim = simulate_truncated_dynamics(z, *args, y, nA, eta, tol=1e-14)
        pred = fully_trained_prediction(z, *args, y, nA, eta)
        np.testing.assert_allclose(sim.z[:, :nA], y, atol=1e-13)
        # the prediction is fully trained: every perp-bracket vanishes on the training set
        np.testing.assert_allclose(pred.z[:, :nA], y, atol=1e-12)
        res.append(np.abs(sim.z - pred.z)[:, nA:].max())
        inter.append(np.abs(sim.z - pred.free)[:, nA:].max())
    # the interaction is O(eps) and captured; the residual is O(eps^2)
    assert inter[0] / inter[1] == pytest.approx(2, rel=0.1)
    assert res[0] / res[1] == pytest.approx(4, rel=0.25)
    assert res[1] < 0.05 * inter[1]


@pytest.mark.parametrize("t", [1, 6, 40])
def test_finite_time_tensors_match_truncated_dynamics(t):
    # (∞.102) and (∞.117) after t steps against the truncated dynamics (∞.81)-(∞.83) iterated
    # t times (spec/07 §12.3): the change of dH and H is O(eps) and captured, the residual is
    # O(eps^2) (halving eps halves the change and quarters the residual)
    n, N, nA, H, dH, ddI, ddII, z, y = random_problem(np.random.default_rng(11))
    A = [i * N + a for i in range(n) for a in range(nA)]
    eta = 0.9 / np.linalg.eigvalsh(H[np.ix_(A, A)])[-1]
    res, inter = {"H": [], "dH": []}, {"H": [], "dH": []}
    for eps in (0.002, 0.001):
        args = (
            split(H, 2, n, N),
            split(eps * dH, 3, n, N),
            split(eps * ddI, 4, n, N),
            split(eps * ddII, 4, n, N),
        )
        sim = simulate_truncated_dynamics(z, *args, y, nA, eta, steps=t, tol=None)
        ft = finite_time_tensors(z, *args, y, nA, eta, t)
        assert sim.steps == t and ft.t == t
        for key, change, pred in (
            ("H", sim.H - H, ft.H_interaction),
            ("dH", sim.dH - eps * dH, ft.dH - eps * dH),
        ):
            res[key].append(np.abs(change - pred).max())
            inter[key].append(np.abs(change).max())
    for key in res:
        assert inter[key][0] / inter[key][1] == pytest.approx(2, rel=0.1), key
        assert res[key][1] < 0.05 * inter[key][1], key
        if res[key][0] > 1e-12 * inter[key][0]:  # (at t = 1 both are exact to rounding)
            assert res[key][0] / res[key][1] == pytest.approx(4, rel=0.25), (key, res[key])
    # the free solution: a(t) = H~^{-1} [eps(0) - eps^F(t)] (∞.92)
    HA = H[np.ix_(A, A)]
    eps0 = z.reshape(-1)[A] - y.reshape(-1)
    np.testing.assert_allclose(HA @ ft.a, eps0 - ft.eps_free, atol=1e-12)


def test_finite_time_tensors_refuse_bad_steps_and_rates():
    n, N, nA, H, dH, ddI, ddII, z, y = random_problem(np.random.default_rng(3))
    args = (split(H, 2, n, N), split(dH, 3, n, N), split(ddI, 4, n, N), split(ddII, 4, n, N))
    with pytest.raises(ValueError, match="t must be an integer"):
        finite_time_tensors(z, *args, y, nA, 0.1, -1)
    with pytest.raises(ValueError, match="does not converge"):
        finite_time_tensors(z, *args, y, nA, 100.0, 3)
    t0 = finite_time_tensors(z, *args, y, nA, 0.1, 0)  # nothing has moved yet
    assert np.all(t0.a == 0) and np.all(t0.H_interaction == 0)


def test_expanded_free_part_is_second_order_in_delta_H():
    # (∞.154) with the corrected signs: exact minus expanded is O(Delta H^3)
    n, N, nA, H, dH, ddI, ddII, z, y = random_problem(np.random.default_rng(11))
    Hm = spd(N, np.random.default_rng(3), 0.6, 1.6)
    Delta = np.random.default_rng(5).normal(size=H.shape)
    Delta = Delta + Delta.T
    errs = []
    for s in (0.02, 0.01):
        Hs = np.kron(np.eye(n), Hm) + s * Delta
        args = (split(Hs, 2, n, N), 0 * split(dH, 3, n, N))
        args += (0 * split(ddI, 4, n, N), 0 * split(ddII, 4, n, N))
        ex = fully_trained_prediction(z, *args, y, nA, kind="ode", H_mean=Hm)
        xp = fully_trained_prediction(z, *args, y, nA, kind="ode", H_mean=Hm, free="expanded")
        errs.append(np.abs(ex.z - xp.z).max())
    assert errs[0] / errs[1] == pytest.approx(8, rel=0.15)
    assert errs[1] < 1e-4


# --------------------------------------------------------------------------------------------
# real networks trained with real tensorial gradient descent (spec/07 §12.4)


def _trained_vs_formula(width, size, seed, x, y, eta, steps):
    net = Network("tanh", widths=[3, width, width, 2], C_b=0.0, C_W=1.0, lambda_b=0.7, lambda_W=1.3)
    run = train(
        net, x[:1], y.T, x[1:], size=size, seed=seed, steps=steps, eta=eta,
        block_size=size, record_steps=[steps], progress=False,
    )  # fmt: skip
    p = Ensemble(net, size, seed, size).params(0)
    xt = torch.tensor(x)
    z0 = forward(p, xt, net)[-1]  # (M, N, n_L)
    np.testing.assert_allclose(z0.numpy(), run.initial, atol=1e-12)  # same networks
    L = net.depth
    H = ntk(p, xt, net, L)
    dH = dntk(p, xt, net, L, [0, 1])
    dI, dII = ddntk(p, xt, net, L, [0, 1])
    out = []
    for m in range(size):
        pred = fully_trained_prediction(z0[m].T, H[m], dH[m], dI[m], dII[m], y, 1, eta, kind="gd")
        # the same without the ddNTK terms (ddI = ddII = 0)
        no_dd = fully_trained_prediction(z0[m].T, H[m], dH[m], 0 * dI[m], 0 * dII[m], y, 1, eta)
        out.append(
            (run.final[m, 0], pred.z[:, 1], pred.free[:, 1], run.train_loss[-1, m], no_dd.z[:, 1])
        )
    return out


def test_real_networks_trained_by_gd_follow_the_formula():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rng = np.random.default_rng(1)
        x = rng.normal(size=(2, 3))
        y = rng.normal(size=(2, 1))  # [i, alpha]
        rms = {}
        t0 = time.time()
        for width in (128, 512):
            rows = _trained_vs_formula(width, 4, 0, x, y, 0.2, 400)
            actual = np.array([r[0] for r in rows])
            formula = np.array([r[1] for r in rows])
            free = np.array([r[2] for r in rows])
            assert max(r[3] for r in rows) < 0.5e-24  # training error < 1e-12
            no_dd = np.array([r[4] for r in rows])
            rms[width] = (
                np.sqrt(np.mean((actual - formula) ** 2)),
                np.sqrt(np.mean((actual - free) ** 2)),
                np.sqrt(np.mean((actual - no_dd) ** 2)),
            )
        print(rms, time.time() - t0)  # measured numbers, shown with -s
    finally:
        torch.set_num_threads(threads)
    # measured: rms residual 3.1e-5 (n = 128), 4.7e-6 (n = 512); interaction 2.1e-3, 6.4e-4;
    # without the ddNTK terms the residual is 7.5e-4 at n = 128
    for width, (res, inter, res_no_dd) in rms.items():
        assert res < 0.1 * inter, (width, res, inter)
        assert res < 0.2 * res_no_dd, (width, res, res_no_dd)
    assert rms[512][0] < 0.4 * rms[128][0]


# --------------------------------------------------------------------------------------------
# ensemble mean (∞.160)-(∞.165): the expectation of the per-network formula (∞.141)


def _sym(t, perms):
    """Average of t over the group generated by the given axis permutations."""
    group = {tuple(range(t.ndim))}
    while True:
        new = {tuple(g[i] for i in p) for g in group for p in perms} | group
        if new == group:
            break
        group = new
    return sum(t.transpose(g) for g in group) / len(group)


def _mean_problem(rng, nL=2, nA=2, nB=1):
    N = nA + nB
    H, K = spd(N, rng, 0.7, 1.5), spd(N, rng, 0.5, 1.0)
    y = rng.normal(size=(nL, nA))
    g = lambda: rng.normal(size=(N,) * 4)  # noqa: E731
    # symmetries of spec/07 §2 and §3.2
    t = {
        "A": _sym(g(), [(1, 0, 2, 3), (0, 1, 3, 2), (2, 3, 0, 1)]),
        "B": _sym(g(), [(2, 3, 0, 1), (1, 0, 3, 2)]),
        "P": _sym(g(), [(0, 2, 1, 3)]),
        "Q": g(),
        "R": _sym(g(), [(0, 1, 3, 2)]),
        "S": _sym(g(), [(1, 0, 3, 2)]),
        "T": _sym(g(), [(3, 2, 1, 0)]),
        "U": _sym(g(), [(2, 3, 0, 1)]),
    }
    return nL, nA, N, H, K, y, t


def _expected_mean(nL, nA, N, H, K, y, t, n, eta):
    """E[(∞.141) + (∞.154)] over combined indices, from the decompositions (8.82), (11.45),
    (∞.11), (∞.12) and Gaussian z ~ N(0, delta K): an independent route to (∞.160)."""
    d = np.eye(nL)
    e4 = lambda s, X: np.einsum(s, d, d, X)  # noqa: E731
    # E[dH_{I0 I1 I2} z_{I3}] (11.45)
    dHz = e4("wz,xy,abcd->wxyzabcd", t["P"]) + e4("wx,yz,abcd->wxyzabcd", t["Q"])
    dHz += e4("wy,xz,acbd->wxyzabcd", t["Q"])
    # E[DH_{I1 I2} DH_{I3 I4}] (8.82)
    DD = e4("wx,yz,abcd->wxyzabcd", t["A"]) + e4("wy,xz,acbd->wxyzabcd", t["B"])
    DD += e4("wz,xy,adbc->wxyzabcd", t["B"])
    # E[ddI], E[ddII] (∞.11), (∞.12)
    dI = e4("wx,yz,abcd->wxyzabcd", t["R"]) + e4("wy,zx,acdb->wxyzabcd", t["R"])
    dI += e4("wz,xy,adbc->wxyzabcd", t["R"])
    dII = e4("wx,yz,abcd->wxyzabcd", t["S"]) + e4("wy,zx,acdb->wxyzabcd", t["T"])
    dII += e4("wz,xy,adbc->wxyzabcd", t["U"])
    dHz, DD, dI, dII = (combine_indices(x, 4) for x in (dHz, DD, dI, dII))
    # the per-network symmetries hold
    np.testing.assert_allclose(dHz, dHz.transpose(0, 2, 1, 3), atol=1e-13)
    np.testing.assert_allclose(dI, dI.transpose(0, 2, 3, 1), atol=1e-13)
    np.testing.assert_allclose(dI, dI.transpose(0, 1, 3, 2), atol=1e-13)
    np.testing.assert_allclose(dII, dII.transpose(1, 0, 3, 2), atol=1e-13)
    A = [i * N + a for i in range(nL) for a in range(nA)]
    Hc = np.kron(d, H)
    Hi = np.linalg.inv(Hc[np.ix_(A, A)])
    perp = np.eye(nL * N)
    perp[:, A] -= Hc[:, A] @ Hi
    yc = y.reshape(-1)
    C = np.kron(d, K[:nA, :nA])
    Z = algorithm_projectors(Hc[np.ix_(A, A)], eta)
    ix = np.ix_
    all_ = range(nL * N)
    # E[eps eps eps] for eps = z - y, z ~ N(0, C)
    E3 = -np.einsum("a,b,c->abc", yc, yc, yc) - np.einsum("a,bc->abc", yc, C)
    E3 -= np.einsum("b,ac->abc", yc, C) + np.einsum("c,ab->abc", yc, C)
    # E[dH_{XYW} eps_J3 eps_J4] = -E[dH z_J3] y_J4 - y_J3 E[dH z_J4]
    dHA = -(
        np.einsum("xywc,d->xywcd", dHz[..., A], yc) + np.einsum("xywd,c->xywcd", dHz[..., A], yc)
    )
    corr = -np.einsum("Iabc,ab,cd,d->I", DD[ix(all_, A, A, A)], Hi, Hi, yc)
    corr += np.einsum("aIbcd,abcd->I", dHA[A][:, :, A], Z.Z_A)
    corr += np.einsum("Iabcd,abcd->I", dHA[:, A][:, :, A], Z.Z_B)
    corr += np.einsum("aIbc,abcdef,def->I", dI[A][:, :, A][:, :, :, A], Z.Z_IA, E3)
    corr += np.einsum("Iabc,abcdef,def->I", dI[:, A][:, :, A][:, :, :, A], Z.Z_IB, E3)
    corr += np.einsum("abIc,abcdef,def->I", dII[A][:, A][:, :, :, A], Z.Z_IIA, E3)
    corr += np.einsum("Iabc,abcdef,def->I", dII[:, A][:, :, A][:, :, :, A], Z.Z_IIB, E3)
    m = Hc[:, A] @ Hi @ yc + perp @ corr / n
    return m.reshape(nL, N)


@pytest.mark.parametrize("nA", [1, 2])
def test_mean_prediction_is_the_expected_per_network_formula(nA):
    nL, nA, N, H, K, y, t = _mean_problem(np.random.default_rng(20 + nA), nA=nA)
    eta = 0.7 / np.linalg.eigvalsh(H[:nA, :nA])[-1]
    n = 50.0
    got = mean_prediction(H, K, y, nA, n, eta=eta, **t)
    want = _expected_mean(nL, nA, N, H, K, y, t, n, eta)
    np.testing.assert_allclose(got.mean, want, atol=1e-12)
    np.testing.assert_allclose(got.mean[:, :nA], y, atol=1e-12)
    assert np.abs(got.mean - got.ntk).max() > 1e-3  # the 1/n terms are really there


def test_mean_prediction_single_input_ode_closed_forms():
    # spec/07 §8.3: single training input, ODE limit
    rng = np.random.default_rng(4)
    nL = 3
    H, K = np.array([[1.3]]), np.array([[0.8]])
    y = rng.normal(size=(nL, 1))
    v = dict(zip("ABPQRSTU", rng.normal(size=8), strict=True))
    t = {k: np.full((1, 1, 1, 1), x) for k, x in v.items()}
    got = mean_prediction(H, K, y, 1, 10.0, kind="ode", **t)
    h = 1.3
    Yi = y[:, 0] * (y[:, 0] @ y[:, 0] + (nL + 2) * 0.8)
    np.testing.assert_allclose(got.dntk_var[:, 0], (v["A"] + (nL + 1) * v["B"]) * y[:, 0] / h**2)
    np.testing.assert_allclose(
        got.dntk[:, 0], -((nL + 3) * v["P"] + (3 * nL + 5) * v["Q"]) * y[:, 0] / (2 * h**2)
    )
    np.testing.assert_allclose(got.ddI[:, 0], v["R"] * Yi / h**3)
    np.testing.assert_allclose(got.ddII[:, 0], 2 / 3 * (v["S"] + v["T"] + v["U"]) * Yi / h**3)
    np.testing.assert_allclose(got.mean, y, atol=1e-13)  # the training point is fit exactly
