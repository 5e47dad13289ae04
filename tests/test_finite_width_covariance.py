"""Covariance of fully-trained networks at order 1/n (∞.166), derived in full (spec/07 §8.2).

Expected values come from (i) the one term the book prints, (∞.167) (book.txt L37398-L37480),
in a setting where it is the only dNTK term left; (ii) a finite difference of the
kernel-prediction covariance for the ``G^{1}``, ``H^{1}`` parts; (iii) ensembles of real tanh
networks trained to convergence by gradient descent (the whole correction); (iv) the same
bracket computed with every combined-index tensor formed densely (explicit Kronecker deltas),
against the factored tensors of the implementation.

(iii) Estimator.  Per network, ``f = z_B - Theta_{BA} Theta~^{-1} z_A`` is the initial output
projected with the *infinite-width* NTK: a fixed linear map of ``z``, so its covariance is
exactly ``[K + G^{1}/n]_perp``.  ``d = z(T) - f`` is ``O(n^{-1/2})``, and ``Cov[z(T)] - Cov[f]
= Cov[d, d] + Cov[f, d] + Cov[d, f]`` is measured from the same networks, with standard errors
of the per-network products; theory: ``(coefficient - parts["nlo_kernel"]) / n``.  Tolerance:
3 standard errors plus the truncation allowance ``(L/n) |prediction|`` for the ``O(1/n^2)``
terms.  Measured (tanh, depth 3, 2 training and 2 test inputs, n_L = 2, 10000 networks per
width, the 10 independent entries; chi^2 of the theory against the measurement):

    n =  32: chi^2 80.4 / 10  (largest entry: n x meas -0.409 +- 0.016, theory -0.491)
    n =  64: chi^2 34.1 / 10  (-0.422 +- 0.019)
    n = 128: chi^2  3.3 / 10  (-0.482 +- 0.027)

the deviations fall like 1/n (O(1/n^2) terms); the suite runs n = 64 (6000 networks: chi^2
16.2 / 10) and n = 128 (3000: chi^2 5.8 / 10); printed with ``-s``.  GELU, other depths and
the split into NTK-fluctuation and dNTK/ddNTK parts: docs/finite_width_prediction.md
("Covariance").
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from pdlt import Network
from pdlt.empirical.training import train
from pdlt.learning import (
    algorithm_projectors,
    combine_indices,
    covariance_prediction,
    finite_width_predict,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def spd(P, rng, lo=0.5, hi=2.0):
    u, _ = np.linalg.qr(rng.normal(size=(P, P)))
    return (u * rng.uniform(lo, hi, size=P)) @ u.T


def _zero_tensors(N):
    return {k: np.zeros((N,) * 4) for k in "ABDFPQRSTU"}


def _random_tensors(rng, N):
    return {k: rng.normal(size=(N,) * 4) for k in "ABDFPQRSTU"}


def test_the_books_term_167():
    # One training input alpha, two test inputs; K and Theta do not couple train and test, so
    # the perp projection is the identity on the test inputs and the dNTK pairings of a test z
    # with a training eps vanish: only the Z_B term with E[eps eps] survives, which is
    # (∞.167) plus its (1 <-> 2) mirror.  gd at eta = 1/H is the giant leap: Z_A = 0.
    rng = np.random.default_rng(7)
    nL, N, n = 3, 3, 40.0
    H, G = np.eye(N), np.eye(N)
    H[0, 0], G[0, 0] = 1.7, 0.8
    H[1:, 1:], G[1:, 1:] = spd(2, rng), spd(2, rng)
    y = rng.normal(size=(nL, 1))
    t = _zero_tensors(N)
    t["P"], t["Q"] = rng.normal(size=(N,) * 4), rng.normal(size=(N,) * 4)
    eta = 1 / 1.7
    c = covariance_prediction(H, G, y, 1, n, eta=eta, **t)
    ZB = algorithm_projectors(H[:1, :1], eta).Z_B[0, 0, 0, 0]
    assert np.allclose(algorithm_projectors(H[:1, :1], eta).Z_A, 0, atol=1e-15)
    P, Q = t["P"][:, 0, 0, :], t["Q"][:, 0, 0, :]  # [beta1, beta2] with alpha1 = alpha2 = 0
    g, yy = G[0, 0], y[:, 0] @ y[:, 0]
    # (∞.167): delta_{i1 i2} [(n_L P + 2 Q) G + P yy] Z_B + Q Z_B 2 y_{i1} y_{i2}
    X = np.einsum("ij,bc->ibjc", np.eye(nL), ((nL * P + 2 * Q) * g + P * yy) * ZB)
    X += np.einsum("i,j,bc->ibjc", y[:, 0], y[:, 0], 2 * Q * ZB)
    want = X + X.transpose(2, 3, 0, 1)
    got = c.parts["dntk"][:, 1:, :, 1:]
    np.testing.assert_allclose(got, want[:, 1:, :, 1:], rtol=1e-12, atol=1e-14)
    for k in ("ntk", "ntk_z", "ddI", "ddII"):
        assert np.abs(c.parts[k]).max() == 0.0


@pytest.mark.parametrize("kind", ["gd", "ode"])
def test_structure_training_inputs_fit_and_symmetry(kind):
    rng = np.random.default_rng(3)
    nL, nA, N = 2, 3, 5
    H, G = spd(N, rng, 0.7, 1.5), spd(N, rng, 0.5, 1.0)
    y = rng.normal(size=(nL, nA))
    eta = 0.7 / np.linalg.eigvalsh(H[:nA, :nA])[-1] if kind == "gd" else None
    c = covariance_prediction(H, G, y, nA, 30.0, eta=eta, kind=kind, **_random_tensors(rng, N))
    C = c.covariance.reshape(nL * N, nL * N)
    np.testing.assert_array_equal(C, C.T)
    tr = np.zeros((nL, N), bool)
    tr[:, :nA] = True
    tr = tr.reshape(-1)
    assert np.abs(C[tr]).max() < 1e-12  # the training inputs are fit exactly, in every network
    assert np.abs(C[np.ix_(~tr, ~tr)] - c.leading.reshape(C.shape)[np.ix_(~tr, ~tr)]).max() > 1e-3
    # leading order: delta_{i1 i2} (G_BB - H_BA H~^{-1} G_AB - ...)
    M = np.linalg.solve(H[:nA, :nA], H[:nA, nA:]).T
    Pp = np.hstack([-M, np.eye(N - nA)])
    want = np.einsum("ij,bc->ibjc", np.eye(nL), Pp @ G @ Pp.T)
    np.testing.assert_allclose(c.leading[:, nA:, :, nA:], want, atol=1e-13)


def test_bad_shapes_are_refused():
    rng = np.random.default_rng(0)
    N = 3
    t = _random_tensors(rng, N)
    with pytest.raises(ValueError, match="y must have shape"):
        covariance_prediction(np.eye(N), np.eye(N), np.ones((2, 3)), 2, 10.0, kind="ode", **t)
    t["D"] = np.zeros((2, 2, 2, 2))
    with pytest.raises(ValueError, match="D must have shape"):
        covariance_prediction(np.eye(N), np.eye(N), np.ones((1, 2)), 2, 10.0, kind="ode", **t)


def _dense_reference(H, G, y, nA, t, eta, kind):
    """The same covariance bracket with every combined-index tensor formed densely (the
    moments from their decompositions with explicit Kronecker deltas, the projectors on the
    combined training index): a second route through the neuron algebra that
    :func:`covariance_prediction` does with factored tensors.  Returns the parts."""
    nL, N = y.shape[0], H.shape[0]
    d = np.eye(nL)

    def e4(spec, X):
        return combine_indices(np.einsum(spec, d, d, X), 4)

    o = "->wxyzabcd"
    DD = e4("wx,yz,abcd" + o, t["A"]) + e4("wy,xz,acbd" + o, t["B"]) + e4("wz,xy,adbc" + o, t["B"])
    DZ = e4("wx,yz,cdab" + o, t["D"]) + e4("wy,xz,cadb" + o, t["F"]) + e4("wz,xy,dacb" + o, t["F"])
    dHz = e4("wz,xy,abcd" + o, t["P"]) + e4("wx,yz,abcd" + o, t["Q"])
    dHz = dHz + e4("wy,xz,acbd" + o, t["Q"])
    dI = e4("wx,yz,abcd" + o, t["R"]) + e4("wy,zx,acdb" + o, t["R"]) + e4("wz,xy,adbc" + o, t["R"])
    dII = e4("wx,yz,abcd" + o, t["S"]) + e4("wy,zx,acdb" + o, t["T"])
    dII = dII + e4("wz,xy,adbc" + o, t["U"])
    A = np.array([i * N + a for i in range(nL) for a in range(nA)])
    Hc, Gc = np.kron(d, H), np.kron(d, G)
    Hi = np.linalg.inv(Hc[np.ix_(A, A)])
    perp = np.eye(nL * N)
    perp[:, A] -= Hc[:, A] @ Hi
    Z = algorithm_projectors(Hc[np.ix_(A, A)], eta, kind)
    yc = y.reshape(-1)
    GJ = Gc[:, A]
    E2 = Gc[np.ix_(A, A)] + np.outer(yc, yc)
    E4 = np.einsum("Jd,ef->defJ", GJ, E2) + np.einsum("Je,df->defJ", GJ, E2)
    E4 = E4 + np.einsum("Jf,de->defJ", GJ, E2)
    ix, al = np.ix_, np.arange(nL * N)

    def dntk(Zp, u):  # u[I, a, b, K]
        return (
            np.einsum("abcd,IabJ,cd->IJ", Zp, u, E2)
            + np.einsum("abcd,Iabc,Jd->IJ", Zp, u[..., A], GJ)
            + np.einsum("abcd,Iabd,Jc->IJ", Zp, u[..., A], GJ)
        )

    def ddntk(Zp, u):
        return np.einsum("Iabc,abcdef,defJ->IJ", u, Zp, E4)

    cross = {
        "ntk_z": -np.einsum("ab,IabJ->IJ", Hi, DZ[ix(al, A, A, al)]),
        "ntk": np.einsum("Iabc,ab,cd,Jd->IJ", DD[ix(al, A, A, A)], Hi, Hi, GJ)
        + 0.5 * np.einsum("IaJc,ab,cd,bd->IJ", DD[ix(al, A, al, A)], Hi, Hi, E2),
        "dntk": dntk(Z.Z_A, dHz[ix(A, al, A, al)].transpose(1, 0, 2, 3))
        + dntk(Z.Z_B, dHz[ix(al, A, A, al)]),
        "ddI": ddntk(Z.Z_IA, dI[ix(A, al, A, A)].transpose(1, 0, 2, 3))
        + ddntk(Z.Z_IB, dI[ix(al, A, A, A)]),
        "ddII": ddntk(Z.Z_IIA, dII[ix(A, A, al, A)].transpose(2, 0, 1, 3))
        + ddntk(Z.Z_IIB, dII[ix(al, A, A, A)]),
    }
    out = {}
    for k, c in cross.items():
        pc = perp @ c @ perp.T
        out[k] = (pc + pc.T).reshape(nL, N, nL, N)
    return out


@pytest.mark.parametrize(
    "nL, nA, nB, kind", [(1, 1, 1, "gd"), (2, 2, 2, "gd"), (3, 2, 1, "ode"), (2, 3, 2, "two_step")]
)
def test_factored_tensors_equal_the_dense_combined_computation(nL, nA, nB, kind):
    rng = np.random.default_rng(10 * nL + nA)
    N = nA + nB
    H, G = spd(N, rng, 0.7, 1.5), spd(N, rng, 0.5, 1.0)
    y = rng.normal(size=(nL, nA))
    t = _random_tensors(rng, N)
    eta = 0.7 / np.linalg.eigvalsh(H[:nA, :nA])[-1] if kind == "gd" else None
    got = covariance_prediction(H, G, y, nA, 30.0, eta=eta, kind=kind, **t)
    want = _dense_reference(H, G, y, nA, t, eta, kind)
    for k, w in want.items():
        np.testing.assert_allclose(got.parts[k], w, rtol=1e-12, atol=1e-12 * np.abs(w).max())


def _net(width, activation="tanh", depth=3):
    return Network(
        activation,
        widths=[3] + [width] * (depth - 1) + [2],
        C_b=0.0,
        C_W=1.0,
        lambda_b=0.7,
        lambda_W=1.3,
    )


def _data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 3))
    y = 2.0 * rng.normal(size=(2, 2))
    return x[:2], y, x[2:]


def test_nlo_parts_are_the_derivative_of_the_kernel_prediction_covariance():
    xa, ya, xb = _data()
    net = _net(64)
    th = finite_width_predict(net, xa, ya, xb)
    tens = th.tensors
    h = 1e-5

    def leading(s):
        H = tens["Theta"] + s * tens["H1"]
        G = tens["K"] + s * tens["G1"]
        zero = _zero_tensors(H.shape[0])
        c = covariance_prediction(H, G, ya.T, 2, 1.0, eta=th.eta, **zero)
        return c.leading[:, 2:, :, 2:].transpose(1, 0, 3, 2)

    fd = (leading(h) - leading(-h)) / (2 * h)
    got = th.covariance.parts["nlo_kernel"] + th.covariance.parts["nlo_ntk"]
    np.testing.assert_allclose(got, fd, atol=1e-8 * np.abs(fd).max())
    np.testing.assert_allclose(th.covariance.infinite, leading(0.0), atol=1e-15)
    np.testing.assert_allclose(
        th.covariance.covariance, th.covariance.infinite + th.covariance.coefficient / 64
    )
    inf = finite_width_predict(net.replace(width=None), xa, ya, xb)
    assert np.abs(inf.covariance.correction).max() == 0.0
    assert finite_width_predict(net, xa, ya, xb, covariance=False).covariance is None


def _measure(width, size, steps=200):
    xa, ya, xb = _data()
    net = _net(width)
    th = finite_width_predict(net, xa, ya, xb)
    run = train(
        net, xa, ya, xb, size=size, seed=0, steps=steps, eta=th.eta, block_size=2000,
        record_steps=[steps], progress=False,
    )  # fmt: skip
    assert run.train_loss[-1].max() < 1e-12  # converged: far below the effect
    Th = th.tensors["Theta"]
    M = np.linalg.solve(Th[:2, :2], Th[:2, 2:]).T  # Theta_{BA} Theta~^{-1}
    z0 = run.initial  # [m, d, i]
    f = (z0[:, 2:, :] - np.einsum("ba,mai->mbi", M, z0[:, :2, :])).reshape(size, -1)
    d = run.final.reshape(size, -1) - f  # [m, (b, i)]
    d, f = d - d.mean(0), f - f.mean(0)
    prod = np.einsum("mi,mj->mij", d, d) + np.einsum("mi,mj->mij", f, d)
    prod = prod + prod.transpose(0, 2, 1) - np.einsum("mi,mj->mij", d, d)
    meas, se = prod.mean(0), prod.std(0, ddof=1) / np.sqrt(size)
    cov = th.covariance
    pred = (cov.coefficient - cov.parts["nlo_kernel"]).reshape(meas.shape) / width
    return meas, se, pred


def test_trained_ensemble_covariance_shift_matches_the_1_over_n_correction():
    t0 = time.time()
    iu = np.triu_indices(4)
    rows = {}
    for width, size in ((64, 6000), (128, 3000)):
        meas, se, pred = _measure(width, size)
        meas, se, pred = meas[iu], se[iu], pred[iu]
        z = (meas - pred) / se
        rows[width] = (meas, se, pred)
        print(
            f"n={width} M={size}: n x meas {np.round(width * meas, 4)}\n"
            f"  +- {np.round(width * se, 4)}\n  n x theory {np.round(width * pred, 4)}\n"
            f"  chi^2 {np.sum(z**2):.1f} / {z.size}"
        )
        big = np.argmax(np.abs(pred))
        assert abs(meas[big]) > 5 * se[big]  # the 1/n effect is resolved
        assert np.sign(meas[big]) == np.sign(pred[big])
        assert np.all(np.abs(meas - pred) < 3 * se + 3 / width * np.abs(pred) + 1e-12)
    print(f"{time.time() - t0:.1f} s")
    # the largest entry scales like 1/n: n x meas agrees between the widths
    (m1, s1, p1), (m2, s2, _) = rows[64], rows[128]
    big = np.argmax(np.abs(p1))
    c1, c2 = 64 * m1[big], 128 * m2[big]
    assert abs(c1 - c2) < 3 * np.hypot(64 * s1[big], 128 * s2[big]) + 3 / 64 * abs(64 * p1[big])
