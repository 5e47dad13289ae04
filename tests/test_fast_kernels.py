"""The fast all-pairs path of :func:`pdlt.gaussian.pairwise_moments` against the exact one.

The reference is the general engine :func:`pdlt.gaussian.moments` on each 2x2 sub-block (the
quadrature of spec/02 §11 and spec/03 §1, itself tested against closed forms and mpmath in
``test_gaussian.py``).  The fast path uses the arc-cosine closed forms for the scale-invariant
family and Mehler's Hermite series (with a rigorous tail bound, falling back to the quadrature
per pair) for smooth activations.  Accuracy target: 1e-8 of the kernel scale
``sqrt(<sigma^{(i)2}>_{K_aa} <sigma^{(j)2}>_{K_bb})`` (values like ``<tanh tanh>`` cross zero, so
a relative error is not meaningful for them).
"""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest
import torch

from pdlt import Network, _compiled, flow
from pdlt import gaussian as gaussian_module
from pdlt.activations import Activation, activation
from pdlt.gaussian import moments, pairwise_moments

TOL = 1e-8


@pytest.fixture(params=["compiled", "numpy"])
def path(request, monkeypatch):
    """Run a test on the compiled kernels (numba) and on the numpy path they fuse."""
    if request.param == "compiled" and _compiled.kernels() is None:
        pytest.skip("numba is not installed")
    if request.param == "numpy":
        monkeypatch.setattr(_compiled, "kernels", lambda: None)
    return request.param


def _inputs(scale: float) -> np.ndarray:
    """Gram-matrix inputs that stress the fast path: widely different norms, a duplicated
    input, a nearly collinear pair (1e-7 apart), an antiparallel pair and a zero input."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(7, 4)) * np.array([0.2, 0.5, 1.0, 1.5, 2.5, 1.0, 0.7])[:, None]
    x = np.vstack([x, x[2], x[3] + 1e-7 * x[0], -x[4], np.zeros(4)])
    return scale * x @ x.T / 4


def _exact(act: Activation, K: np.ndarray, orders: list[tuple[int, int]]) -> np.ndarray:
    N = K.shape[0]
    out = np.empty((len(orders), N, N))
    for a in range(N):
        for b in range(N):
            if a == b:
                prods = [[(0, i), (0, j)] for i, j in orders]
                out[:, a, a] = moments(act, K[a, a][None, None], prods)
            else:
                prods = [[(0, i), (1, j)] for i, j in orders]
                out[:, a, b] = moments(act, K[np.ix_([a, b], [a, b])], prods)
    return out


def _arc_cosine_mp(act: Activation, K: np.ndarray, orders: list[tuple[int, int]]) -> np.ndarray:
    """Off-diagonal arc-cosine forms at 40 digits, ``theta`` from the exact determinant of the
    float entries (the quadrature's Cholesky loses half the digits of a nearly collinear
    pair, where ``<sigma' sigma'>`` is linear in ``theta``)."""
    mp.mp.dps = 40
    ap, am = (mp.mpf(v) for v in act.scale_invariant)
    N = K.shape[0]
    out = np.full((len(orders), N, N), np.nan)
    for a in range(N):
        for b in range(N):
            kaa, kbb, kab = (mp.mpf(float(v)) for v in (K[a, a], K[b, b], K[a, b]))
            if a == b or kaa == 0 or kbb == 0:
                continue
            sa, sb = mp.sqrt(kaa), mp.sqrt(kbb)
            theta = mp.atan2(mp.sqrt(max(kaa * kbb - kab * kab, 0)), kab)
            rho = mp.cos(theta)
            J = (mp.sin(theta) + (mp.pi - theta) * rho) / (2 * mp.pi)
            forms = {
                (0, 0): sa * sb * ((ap**2 + am**2) * J - 2 * ap * am * (J - rho / 2)),
                (1, 1): ((ap**2 + am**2) * (mp.pi - theta) + 2 * ap * am * theta) / (2 * mp.pi),
                (0, 1): sa * (ap**2 - am**2) * (1 + rho) / (2 * mp.sqrt(2 * mp.pi)),
                (1, 0): sb * (ap**2 - am**2) * (1 + rho) / (2 * mp.sqrt(2 * mp.pi)),
            }
            out[:, a, b] = [float(forms[o]) for o in orders]
    return out


def _scale(act: Activation, K: np.ndarray, orders: list[tuple[int, int]]) -> np.ndarray:
    ks = sorted({k for o in orders for k in o})
    energy = {k: moments(act, np.diag(K)[:, None, None], [[(0, k), (0, k)]])[:, 0] for k in ks}
    return np.stack([np.sqrt(np.outer(energy[i], energy[j])) for i, j in orders])


def _custom_torch() -> Activation:
    return Activation.from_callable(lambda z: z * torch.sigmoid(1.702 * z), name="custom")


def _custom_numpy() -> Activation:
    return Activation.from_callable(lambda z: np.tanh(z) + 0.1 * np.sin(z), name="custom_np")


CASES = [
    ("relu", 0.1, [(0, 0), (1, 1), (0, 1), (1, 0)]),
    ("leaky_relu:0.1", 1.0, [(0, 0), (1, 1), (0, 1), (1, 0)]),
    ("scale_invariant:1,-0.3", 8.0, [(0, 0), (1, 1), (0, 1)]),
    ("tanh", 0.05, [(0, 0), (1, 1)]),
    ("tanh", 1.5, [(0, 0), (1, 1), (2, 0)]),
    ("gelu", 3.0, [(0, 0), (1, 1), (0, 1)]),
    ("swish", 1.0, [(0, 0), (1, 1), (3, 1), (2, 2)]),
    ("custom_torch", 1.0, [(0, 0), (1, 1)]),
    ("custom_numpy", 0.5, [(0, 0)]),  # its sigma' (Cauchy contours) makes the reference slow
]


def _activation(name: str) -> Activation:
    if name == "custom_torch":
        return _custom_torch()
    if name == "custom_numpy":
        return _custom_numpy()
    return activation(name)


@pytest.mark.parametrize(("name", "scale", "orders"), CASES)
def test_fast_path_matches_exact_quadrature(name, scale, orders):
    act = _activation(name)
    K = 0.1 * (name not in {"relu", "leaky_relu:0.1"}) + _inputs(scale)
    fast = pairwise_moments(act, K, orders)
    exact = _exact(act, K, orders)
    if act.scale_invariant is not None:
        closed = _arc_cosine_mp(act, K, orders)
        exact = np.where(np.isnan(closed), exact, closed)
    err = np.abs(fast - exact) / np.maximum(_scale(act, K, orders), 1e-300)
    assert np.max(err) <= TOL, (
        f"worst error {np.max(err):.2e} at {np.unravel_index(np.argmax(err), err.shape)}"
    )


def _count_fallback(monkeypatch) -> list[int]:
    """Record how many 2x2 sub-blocks reach the quadrature from ``pairwise_moments``."""
    calls: list[int] = []
    real = gaussian_module.moments

    def counting(act, K, products, **kw):
        K = np.asarray(K)
        if K.shape[-1] == 2:
            calls.append(int(np.prod(K.shape[:-2])))
        return real(act, K, products, **kw)

    monkeypatch.setattr(gaussian_module, "moments", counting)
    return calls


@pytest.mark.parametrize("name", ["tanh", "gelu", "swish", "custom_torch"])
def test_series_covers_moderate_kernels(monkeypatch, name):
    # at moderate variances (here 0.2..1.1) every pair is summed by the series, duplicated
    # and antiparallel inputs included: nothing reaches the quadrature
    act = _activation(name)
    K = 0.2 + _inputs(0.3)
    calls = _count_fallback(monkeypatch)
    pairwise_moments(act, K, [(0, 0), (1, 1)])
    assert sum(calls) == 0


def test_large_variances_fall_back_and_stay_exact(monkeypatch):
    # tanh at K ~ 50: the Hermite series of a nearly-sign function converges too slowly; those
    # pairs go to the quadrature (and the result is still exact)
    act = activation("tanh")
    K = 0.1 + _inputs(40.0)[np.ix_([0, 2, 4, 7, 9], [0, 2, 4, 7, 9])]  # duplicate, antiparallel
    calls = _count_fallback(monkeypatch)
    fast = pairwise_moments(act, K, [(0, 0), (1, 1)])
    assert sum(calls) > 0
    monkeypatch.undo()
    exact = _exact(act, K, [(0, 0), (1, 1)])
    scale = _scale(act, K, [(0, 0), (1, 1)])
    assert np.max(np.abs(fast - exact) / scale) <= TOL


def test_scale_invariant_needs_no_quadrature_off_the_diagonal(monkeypatch):
    K = _inputs(1.0)[:-1, :-1]  # no zero-variance input
    calls = _count_fallback(monkeypatch)
    pairwise_moments(activation("relu"), K, [(0, 0), (1, 1)])
    assert sum(calls) == 0


@pytest.mark.parametrize("name", ["relu", "tanh"])
def test_flow_K_and_Theta_match_the_exact_recursion(name):
    # (4.118) and (8.63) iterated with the exact quadrature, against pdlt.flow
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3)) * np.array([0.3, 1.0, 2.0, 1.0, 0.5])[:, None]
    x[3] = x[1] + 1e-6
    net = Network(name, depth=4, n_in=3)
    f = flow(net, x, fields=("K", "Theta"))
    act = net.activation
    K = net.C_b[0] + net.C_W[0] * x @ x.T / 3
    Theta = net.lambda_b[0] + net.lambda_W[0] * x @ x.T / 3
    for ell in range(1, net.depth):
        ss, dd = _exact(act, K, [(0, 0), (1, 1)])
        K, Theta = (
            net.C_b[ell] + net.C_W[ell] * ss,
            net.lambda_b[ell] + net.lambda_W[ell] * ss + net.C_W[ell] * dd * Theta,
        )
        assert np.allclose(f.K[ell], K, rtol=TOL, atol=TOL * np.max(K))
        assert np.allclose(f.Theta[ell], Theta, rtol=TOL, atol=TOL * np.max(Theta))


def test_invalid_kernels_raise():
    act = activation("tanh")
    with pytest.raises(ValueError, match="symmetric"):
        pairwise_moments(act, np.array([[1.0, 0.5], [0.2, 1.0]]), [(0, 0)])
    with pytest.raises(ValueError, match="positive semidefinite"):
        pairwise_moments(act, np.array([[1.0, 2.0], [2.0, 1.0]]), [(0, 0)])
    with pytest.raises(ValueError, match=r"shape \(N, N\)"):
        pairwise_moments(act, np.ones((2, 3)), [(0, 0)])


@pytest.mark.parametrize("name", ["tanh", "gelu", "relu"])
def test_duplicated_inputs_give_identical_rows(name):
    """Two identical inputs have identical rows of every pair moment, to the last bit, so a
    kernel with a duplicated input stays exactly singular (the learning solvers rely on it)."""
    K = np.array([[1.3, 1.3, 0.4], [1.3, 1.3, 0.4], [0.4, 0.4, 0.9]])
    out = pairwise_moments(activation(name), K, [(0, 0), (1, 1), (0, 1)])
    np.testing.assert_array_equal(out[:, 0, :], out[:, 1, :])
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 1])


@pytest.mark.parametrize("name", ["relu", "leaky_relu:0.2"])
def test_blocked_threaded_arc_cosine_matches_per_pair_closed_forms(name):
    """N = 301 runs the scale-invariant path on many row blocks and several threads; with the
    stress inputs (duplicate, nearly collinear, antiparallel, zero) in, every off-diagonal
    entry must equal the 40-digit arc-cosine forms and every diagonal (and zero-input) one
    the 1-D engine, to 1e-13 of the kernel scale."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(290, 4))
    K = np.zeros((301, 301))
    K[:290, :290] = x @ x.T / 4
    K[290:, 290:] = _inputs(1.0)  # the last input is zero: its sigma' goes to quadrature
    act = activation(name)
    orders = [(0, 0), (1, 1), (0, 1), (1, 0)]
    fast = pairwise_moments(act, K, orders)
    sub = np.union1d(rng.choice(290, size=20, replace=False), np.arange(290, 301))
    exact = _arc_cosine_mp(act, K[np.ix_(sub, sub)], orders)
    exact = np.where(np.isnan(exact), _exact(act, K[np.ix_(sub, sub)], orders), exact)
    got = fast[:, sub][:, :, sub]
    scale = np.sqrt(np.abs(np.einsum("kaa->ka", exact)))
    bound = 1e-13 * np.maximum(scale[:, :, None] * scale[:, None, :], 1e-300)
    assert np.all(np.abs(got - exact) <= bound + 1e-13 * np.max(np.abs(exact)))
    np.testing.assert_array_equal(fast[:2], np.swapaxes(fast[:2], 1, 2))
    np.testing.assert_array_equal(fast[2], fast[3].T)
    Kbad = K.copy()
    Kbad[250, 10] += 1e-3
    with pytest.raises(ValueError, match="symmetric"):
        pairwise_moments(act, Kbad, orders)


def _arc_cosine_flow_mp(act, gram, C_b, C_W, gamma, lam_b, lam_W):
    """K and Theta layer by layer at 40 digits from the arc-cosine forms of
    :func:`_arc_cosine_mp` (each pair's recursion involves only its own 2x2 sub-block and
    Theta_ab: (4.118), (8.63), residual (B.3), (B.11))."""
    L, N = len(C_b), gram.shape[0]
    K = np.empty((L, N, N))
    T = np.empty((L, N, N))
    K[0], T[0] = C_b[0] + C_W[0] * gram, lam_b[0] + lam_W[0] * gram
    a_p, a_m = act.scale_invariant
    for ell in range(1, L):
        m = _arc_cosine_mp(act, K[ell - 1], [(0, 0), (1, 1)])
        # the 1-D closed forms (5.60)-(5.62), <s s> = E K and <s' s'> = E, also at 40 digits
        # (so a duplicated input's pair, theta = 0, rounds to its diagonal)
        E = (mp.mpf(a_p) ** 2 + mp.mpf(a_m) ** 2) / 2
        for a in range(N):
            m[0, a, a], m[1, a, a] = float(E * mp.mpf(float(K[ell - 1, a, a]))), float(E)
        g2 = gamma[ell] ** 2
        K[ell] = C_b[ell] + C_W[ell] * m[0] + g2 * K[ell - 1]
        T[ell] = lam_b[ell] + lam_W[ell] * m[0] + (C_W[ell] * m[1] + g2) * T[ell - 1]
    return K, T


@pytest.mark.parametrize(("name", "gamma"), [("relu", 0.0), ("leaky_relu:0.2", 0.0), ("relu", 0.5)])
def test_depth_blocked_arc_cosine_flow(name, gamma, path):
    """:func:`arc_cosine_flow` runs each cache-sized block of pairs through all layers (N = 301:
    many blocks, several threads), by numpy or by the compiled kernel.  Against the
    layer-by-layer recursion at 40 digits on a subset of inputs (a pair's recursion involves
    only its own entries) including the stress inputs (duplicate, nearly collinear,
    antiparallel), to 1e-13 of the kernel scale (plus the conditioning of theta for Theta at
    the nearly collinear pair); against pdlt's own layer-by-layer path (``kernel_flow``) on all
    of them; symmetric and with identical rows for the duplicated input, to the last bit."""
    from pdlt.theory.kernel import arc_cosine_flow, kernel_flow

    rng = np.random.default_rng(7)
    x = rng.normal(size=(290, 4))
    gram = np.zeros((300, 300))
    gram[:290, :290] = x @ x.T / 4
    gram[290:, 290:] = _inputs(1.0)[:10, :10]  # no zero input (that one goes elsewhere)
    act = activation(name)
    L = 6
    C_b = np.linspace(0.0, 0.2, L)
    C_W = np.linspace(1.9, 1.2, L) * (1 - gamma**2)
    g = np.full(L, gamma)
    g[0] = 0.0
    lam_b, lam_W = np.linspace(1.0, 0.5, L), np.linspace(0.7, 1.3, L)
    K, T = arc_cosine_flow(act, gram, C_b, C_W, g, lam_b, lam_W)
    sub = np.union1d(rng.choice(290, size=6, replace=False), np.arange(290, 300))
    Km, Tm = _arc_cosine_flow_mp(act, gram[np.ix_(sub, sub)], C_b, C_W, g, lam_b, lam_W)
    # Theta_ab depends on theta_ab linearly, and theta = O(r) is ill-conditioned for nearly
    # collinear pairs: a rounding of K_ab (eps) moves it by ~eps/sin(theta), in the reference as
    # in pdlt, so each layer adds an allowance of 2 eps/sin(theta) (relative) for Theta
    s = np.sqrt(np.einsum("laa->la", Km))
    scale = s[:, :, None] * s[:, None, :]
    sine = np.sqrt(np.maximum(1.0 - (Km / scale) ** 2, 1e-300))
    ill = np.cumsum(2 * np.finfo(float).eps / sine, axis=0)
    G = gram[np.ix_(sub, sub)]
    exact_zero = (G == np.diag(G)[:, None]) & (G == np.diag(G)[None, :])  # theta = 0 exactly
    ill[:, exact_zero] = 0.0
    assert np.all(np.abs(K[:, sub][:, :, sub] - Km) <= 1e-13 * scale)
    assert np.all(np.abs(T[:, sub][:, :, sub] - Tm) <= (1e-13 + ill) * np.abs(Tm))
    # pdlt's layer-by-layer path: the same numbers to rounding (the compiled kernel's own
    # arctangent differs from torch's by an ulp; leaky ReLU's <s s> cancels near zero)
    diag = np.sqrt(np.einsum("laa->la", K))
    np.testing.assert_array_less(
        np.abs(K - kernel_flow(act, gram, C_b, C_W, g)), 1e-14 * diag[:, :, None] * diag[:, None]
    )
    for F in (K, T):
        np.testing.assert_array_equal(F, np.swapaxes(F, 1, 2))
        np.testing.assert_array_equal(F[:, 292, :], F[:, 297, :])  # x[2] and its duplicate


def test_flow_uses_depth_blocked_relu_path_and_falls_back_at_zero_variance(path):
    """``pdlt.flow`` takes the depth-blocked path for K and Theta of ReLU (the same numbers as
    the layer-by-layer NTK recursion, which it uses when B is also requested); a zero input
    at C_b = 0 has a vanishing variance (sigma' at the kink), which the layer-by-layer path
    handles, so the fast path declines."""
    from pdlt.theory.kernel import arc_cosine_flow

    x = np.random.default_rng(2).normal(size=(5, 3))
    net = Network("relu", depth=5, n_in=3, C_b=0.1, C_W=1.8, lambda_b=0.5, lambda_W=1.5)
    fast = flow(net, x, fields=("K", "Theta"))
    slow = flow(net, x, fields=("K", "Theta", "B"))
    np.testing.assert_allclose(fast["K"], slow["K"], rtol=1e-14, atol=0)
    np.testing.assert_allclose(fast["Theta"], slow["Theta"], rtol=1e-13, atol=0)
    x = x.copy()
    x[0] = 0.0
    net0 = Network("relu", depth=3, n_in=3, C_b=0.0, C_W=2.0)
    gram = x @ x.T / 3
    assert arc_cosine_flow(net0.activation, gram, net0.C_b, net0.C_W, None, None, None) is None
    out = flow(net0, x, fields=("K", "Theta"))
    assert np.all(np.isfinite(out["Theta"]))


@pytest.mark.parametrize("name", ["tanh", "gelu"])
def test_many_samples_series_with_interpolated_coefficients(name):
    """N = 300 samples with norms within a factor 1.6: the per-sample Hermite coefficients are
    interpolated from Chebyshev series on 1/8-octave panels of ``s`` (their error estimate
    is accepted) and the series is summed on several row blocks and threads. Against the 2-D
    quadrature on a subset of samples (duplicate, nearly collinear and antiparallel pairs
    included), within the fast path's 1e-8 of the kernel scale; and the interpolated
    coefficients against the per-sample quadrature to 1e-12 of the energy, their tails never
    below it."""
    act = activation(name)
    rng = np.random.default_rng(11)
    x = rng.normal(size=(297, 6))
    x /= np.linalg.norm(x, axis=1, keepdims=True) / rng.uniform(0.8, 1.3, size=(297, 1))
    x = np.vstack([x, x[3], x[4] + 1e-7 * x[5], -x[6]])
    K = 0.1 + 1.5 * x @ x.T / 6
    std = np.sqrt(np.diag(K))
    orders = [(0, 0), (1, 1)]
    *_, estimate = gaussian_module._hermite_interpolated(act, std, orders, 64)
    assert max(estimate.values()) <= gaussian_module._COEF_INTERP_TOL  # interpolation is used
    coef, tail, diag = gaussian_module._hermite_coefficients(act, std, orders, 64)
    c_d, e_d, d_d = gaussian_module._hermite_direct(act, std, orders, 64, float(np.max(std)))
    for k in (0, 1):
        root = np.sqrt(e_d[k])[:, None]
        assert np.max(np.abs(coef[k] - c_d[k]) / root) < 1e-12
        direct_tail = np.maximum(e_d[k][:, None] - np.cumsum(c_d[k] ** 2, axis=1), 0.0)
        assert np.all(tail[k][:, :-1] >= direct_tail - 1e-13 * root**2)
    for key in orders:
        scale = np.sqrt(e_d[key[0]] * e_d[key[1]])
        assert np.max(np.abs(diag[key] - d_d[key]) / scale) < 1e-12
    fast = pairwise_moments(act, K, orders)
    sub = np.union1d(rng.choice(297, size=8, replace=False), [3, 4, 6, 297, 298, 299])
    Ks = K[np.ix_(sub, sub)]
    err = np.abs(fast[:, sub][:, :, sub] - _exact(act, Ks, orders)) / _scale(act, Ks, orders)
    assert np.max(err) <= TOL
    np.testing.assert_array_equal(fast, np.swapaxes(fast, 1, 2))


def test_read_only_kernel_is_accepted_without_warning():
    """A read-only K (pdlt's own results are) goes through the closed forms, whose arctangent
    is torch's, without torch's non-writable-array warning; ``<relu^2>_K = K/2`` (5.60)."""
    import warnings

    K = np.array([[1.0, 0.3], [0.3, 2.0]])
    K.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = pairwise_moments(activation("relu"), K, [(0, 0), (1, 1)])
    np.testing.assert_allclose(np.diag(out[0]), [0.5, 1.0], rtol=1e-15)


def test_compiled_arctangent_matches_libm():
    """The compiled kernels' branch-free ``atan2(r, k)`` (``r >= 0``; Cephes' rational form
    after reduction) against libm's, over 2e5 random angles and scales and the edge cases
    (``r = 0`` both signs of ``k``, ``k = 0``, ``r = k``, tiny and huge ratios): within
    2 ulp of ``theta`` (relative 4.5e-16, or absolute 4.5e-16 * pi near 0 and pi)."""
    fused = _compiled.kernels()
    if fused is None:
        pytest.skip("numba is not installed")
    from numba import njit

    angle = njit(lambda r, k: fused.angle(r, k))
    rng = np.random.default_rng(0)
    theta = np.concatenate([rng.uniform(0, np.pi, 200_000), np.pi * np.array([0, 0.25, 0.5, 1])])
    scale = 10.0 ** rng.uniform(-150, 150, theta.size)
    r, k = np.abs(np.sin(theta)) * scale, np.cos(theta) * scale
    r = np.concatenate([r, [0.0, 0.0, 0.0, 1.0, 1e-300, 1e-20, 3.0]])
    k = np.concatenate([k, [1.0, -1.0, 0.0, 0.0, 1.0, -1.0, 3.0]])
    got = np.array([angle(x, y) for x, y in zip(r, k, strict=True)])
    want = np.arctan2(r, k)
    tol = 4.5e-16 * np.maximum(want, np.pi * (want > 3.0))
    assert np.all(np.abs(got - want) <= np.maximum(tol, 1e-300))


def test_compiled_kernels_can_be_switched_off(monkeypatch):
    """``PDLT_NUMBA=0`` selects the numpy paths (what runs without numba)."""
    monkeypatch.setenv("PDLT_NUMBA", "0")
    assert _compiled.kernels.__wrapped__() is None
    monkeypatch.setenv("PDLT_NUMBA", "1")
    try:
        import numba  # noqa: F401
    except ImportError:
        assert _compiled.kernels.__wrapped__() is None
    else:
        assert _compiled.kernels.__wrapped__() is not None


def _layer_by_layer(act, gram, C_b, C_W, g, lam_b, lam_W):
    """K and Theta by pdlt's layer-by-layer path (``pairwise_moments`` at each layer)."""
    from pdlt.theory.kernel import kernel_flow

    pair: list[np.ndarray] = []
    K = kernel_flow(act, gram, C_b, C_W, g, derivative_moments=pair)
    T = np.empty_like(K)
    T[0] = lam_b[0] + lam_W[0] * gram
    for ell in range(1, len(C_b)):
        ss, dd = pair[ell - 1]
        T[ell] = lam_b[ell] + lam_W[ell] * ss + (C_W[ell] * dd + g[ell] ** 2) * T[ell - 1]
    return K, T


def _mehler_case(gamma: float, n: int = 40):
    """Inputs with a duplicate, a nearly collinear pair (1e-7), an antiparallel pair and a zero
    input among ``n`` random ones; depth-6 hyperparameters varying by layer."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(n, 4)) * rng.uniform(0.5, 1.5, size=(n, 1))
    x = np.vstack([x, x[2], x[3] + 1e-7 * x[0], -x[4], np.zeros(4)])
    L = 6
    g = np.full(L, gamma)
    g[0] = 0.0
    hyper = (np.linspace(0.0, 0.2, L), np.linspace(1.2, 0.9, L) * (1 - gamma**2), g)
    gram = x @ x.T / 4
    gram[n], gram[:, n] = gram[2], gram[:, 2]  # BLAS may round the copy's products apart
    gram[n, n] = gram[2, 2]
    return gram, hyper, (np.linspace(1.0, 0.5, L), np.linspace(0.7, 1.3, L))


@pytest.mark.parametrize(
    ("name", "gamma", "n"),
    [
        ("tanh", 0.0, 40),
        ("gelu", 0.0, 40),
        ("custom_torch", 0.0, 40),
        ("tanh", 0.6, 40),
        ("gelu", 0.0, 240),
    ],
)
def test_fused_mehler_flow_matches_layer_by_layer(name, gamma, n):
    """:func:`mehler_flow` (compiled, each tile of pairs through all layers) against the
    layer-by-layer path through ``pairwise_moments``: both sum Mehler's series to a 1e-10
    tail bound per layer, so they agree to 1e-9 of the kernel scale; symmetric, with the
    duplicated input's rows identical, to the last bit.  With 240 inputs the first rows go
    through the series two at a time (``_TWO_ROWS_FROM`` pairs), among them the duplicated
    input's, whose copy near the end goes alone: the same arithmetic, the same bits."""
    from pdlt.theory.kernel import mehler_flow

    if _compiled.kernels() is None:
        pytest.skip("numba is not installed")
    assert n < 200 or n > _compiled.kernels()._TWO_ROWS_FROM
    act = _activation(name)
    gram, (C_b, C_W, g), lam = _mehler_case(gamma, n)
    K, T = mehler_flow(act, gram, C_b, C_W, g, *lam)
    Kr, Tr = _layer_by_layer(act, gram, C_b, C_W, g, *lam)
    for F, R in ((K, Kr), (T, Tr)):
        s = np.sqrt(np.einsum("laa->la", R))
        assert np.all(np.abs(F - R) <= 1e-9 * s[:, :, None] * s[:, None] + 1e-15)
        np.testing.assert_array_equal(F, np.swapaxes(F, 1, 2))
        np.testing.assert_array_equal(F[:, 2], F[:, -4])  # x[2] and its duplicate
    K_alone, none = mehler_flow(act, gram, C_b, C_W, g)  # without learning rates: K alone,
    assert none is None  # the same to the last bit (each series is truncated on its own)
    np.testing.assert_array_equal(K_alone, K)
    if n > 200:  # one more input in front: every row moves one down (two rows at a time
        y = np.random.default_rng(9).normal(size=4)  # pair the other way), every pair the same
        ext = np.block([[y @ y / 4, np.zeros((1, len(gram)))], [np.zeros((len(gram), 1)), gram]])
        K1, T1 = mehler_flow(act, ext, C_b, C_W, g, *lam)
        np.testing.assert_array_equal(K1[:, 1:, 1:], K)
        np.testing.assert_array_equal(T1[:, 1:, 1:], T)


def test_fused_mehler_flow_retries_with_more_terms_and_declines_large_variances(monkeypatch):
    """Pairs that 64 terms do not cover go on alone from the layer where that happened, with
    coefficients to 256 on their samples (``mehler_pairs``).  A pair injected as not covered
    at layer 3 is recomputed from there to the first run's values to the last bit, at every
    layer, also when only the last layer is kept (``mehler_pairs`` repeats ``mehler_rows``'
    arithmetic).  With the first ladder cut to m = 8, or with pairs 1e-7 apart and
    antiparallel (|rho| ~ 1), some pairs, not all, are retried, and the flow matches the
    layer-by-layer path; more than ``_SERIES_RETRY_MAX`` of them, or a variance above
    (3 scale)^2, makes it decline (None), and ``flow`` then takes the layer-by-layer path."""
    from pdlt.theory import kernel as kernel_module

    if _compiled.kernels() is None:
        pytest.skip("numba is not installed")
    act = activation("tanh")
    gram, (C_b, C_W, g), lam = _mehler_case(0.0, n=10)
    runs: list[tuple[np.ndarray, np.ndarray] | None] = []
    real = kernel_module._MehlerTables.run
    inject: list[tuple[np.ndarray, np.ndarray]] = []

    def recording(self, fused, X, K, Theta, var, inv, f64, slot):
        found = real(self, fused, X, K, Theta, var, inv, f64, slot)
        if inject and found is not None:
            found = tuple(np.concatenate([f, i]) for f, i in zip(found, inject[0], strict=True))
        runs.append(found)
        return found

    monkeypatch.setattr(kernel_module._MehlerTables, "run", recording)
    # without the pairs 1e-7 apart and antiparallel (|rho| ~ 1 needs more than 64 terms)
    far = np.delete(np.delete(gram, [11, 12], axis=0), [11, 12], axis=1)
    K0, T0 = kernel_module.mehler_flow(act, far, C_b, C_W, g, *lam)
    assert len(runs) == 1 and len(runs[0][0]) == 0  # every pair covered by 64 terms
    # pair (4, 7) as if not covered at layer 3: it goes on from K^(3), Theta^(3) (index 2)
    inject.append((np.array([[4, 7, 3]]), np.array([[K0[2, 4, 7], T0[2, 4, 7]]])))
    for keep in (None, np.array([len(C_b) - 1])):
        K, T = kernel_module.mehler_flow(act, far, C_b, C_W, g, *lam, keep=keep)
        sel = slice(None) if keep is None else keep
        np.testing.assert_array_equal(K, K0[sel])
        np.testing.assert_array_equal(T, T0[sel])
    inject.clear()
    Kr, Tr = _layer_by_layer(act, far, C_b, C_W, g, *lam)
    for F, R in ((K0, Kr), (T0, Tr)):
        np.testing.assert_allclose(F, R, rtol=0, atol=1e-9 * np.max(R))
    Kr, Tr = _layer_by_layer(act, gram, C_b, C_W, g, *lam)
    N = len(gram)
    for first in (64, 8):
        monkeypatch.setattr(kernel_module, "_SERIES_FIRST", first)
        runs.clear()
        K, T = kernel_module.mehler_flow(act, gram, C_b, C_W, g, *lam)
        pairs = runs[0][0]
        assert 0 < len(pairs) < N * (N - 1) // 2  # some pairs retried, not all
        assert np.all(pairs[:, 0] < pairs[:, 1]) and len(np.unique(pairs[:, :2], axis=0)) == len(
            pairs
        )
        np.testing.assert_allclose(K, Kr, rtol=0, atol=1e-9 * np.max(Kr))
        np.testing.assert_allclose(T, Tr, rtol=0, atol=1e-9 * np.max(Tr))
        monkeypatch.setattr(kernel_module, "_SERIES_RETRY_MAX", len(pairs) - 1)
        assert kernel_module.mehler_flow(act, gram, C_b, C_W, g, *lam) is None
        monkeypatch.setattr(kernel_module, "_SERIES_RETRY_MAX", 4096)
    monkeypatch.undo()
    big = 20.0 * gram  # variances ~ 20 > 3^2
    assert kernel_module.mehler_flow(act, big, C_b, C_W, g, *lam) is None
    x = np.random.default_rng(0).normal(size=(4, 3)) * 5.0
    net = Network("tanh", depth=3, n_in=3, lambda_b=0.5, lambda_W=1.0)
    f = flow(net, x, fields=("K", "Theta"))
    Kr, Tr = _layer_by_layer(
        act, x @ x.T / 3, net.C_b, net.C_W, np.zeros(3), net.lambda_b, net.lambda_W
    )
    np.testing.assert_allclose(f.K, Kr, rtol=1e-14)
    np.testing.assert_allclose(f.Theta, Tr, rtol=1e-14)


@pytest.mark.parametrize("name", ["tanh", "gelu"])
def test_panel_tables_interpolate_the_hermite_coefficients(name):
    """Standard deviations over four octaves (0.3..2.5): each 1/8-octave panel's table is
    computed once per order and kept (a second call only interpolates), and the interpolated
    coefficients, energies and 1-D moments (the mixed one too) agree with the per-sample
    quadrature to 1e-12 of the energy."""
    act = activation(name)
    std = np.sort(np.random.default_rng(4).uniform(0.3, 2.5, size=200))
    orders = [(0, 0), (1, 1), (0, 1)]
    coef, energy, diag, estimate = gaussian_module._hermite_interpolated(act, std, orders, 64)
    assert max(estimate.values()) <= gaussian_module._COEF_INTERP_TOL
    hits = gaussian_module._hermite_panel.cache_info().hits
    gaussian_module._hermite_interpolated(act, std[::-1], orders, 64)
    panels = np.unique(np.floor(8 * np.log2(std)))  # [2^(g/8), 2^((g+1)/8)] per panel g
    assert gaussian_module._hermite_panel.cache_info().hits == hits + 2 * len(panels)
    c_d, e_d, d_d = gaussian_module._hermite_direct(act, std, orders, 64, float(np.max(std)))
    for k in (0, 1):
        root = np.sqrt(e_d[k])
        assert np.max(np.abs(coef[k] - c_d[k]) / root[:, None]) < 1e-12
        assert np.max(np.abs(energy[k] - e_d[k]) / root**2) < 1e-12
    for i, j in orders:
        scale = np.sqrt(e_d[i] * e_d[j])
        assert np.max(np.abs(diag[(i, j)] - d_d[(i, j)]) / scale) < 1e-12


@pytest.mark.parametrize("name", ["relu", "tanh", "gelu"])
def test_fused_flows_against_real_networks(name):
    """The fused K, Theta flows (compiled when numba is there) against 3000 real networks of
    width 64 measured by autodiff (``measure``), 3 inputs, depth 4: within 4.5 standard errors
    plus the leading-order truncation allowance 2 (l/n) |theory| (K at layer 1 is exact)."""
    from pdlt import measure

    x = np.random.default_rng(8).normal(size=(3, 4))
    x[2] = 0.9 * x[0] + 0.2 * x[1]  # a correlated pair
    net = Network(name, widths=[4, 64, 64, 64, 1], lambda_b=0.5, lambda_W=1.2)
    theory = flow(net, x, fields=("K", "Theta"))
    m = measure(net, x, size=3000, seed=3, fields=("K", "Theta"))
    for field in ("K", "Theta"):
        t, se = theory[field], m.stderr(field)
        allow = 2 * (np.arange(4) / 64)[:, None, None] * np.abs(t)
        assert np.all(np.abs(m[field] - t) <= 4.5 * se + allow + 1e-12), field


@pytest.mark.parametrize("name", ["relu", "tanh", "gelu"])
def test_flow_keeps_only_the_layers_asked_for(name, path):
    """``flow(..., layers=...)`` returns the full flow's layers, to the last bit, on both
    paths (also K asked for with chi_perp, i.e. without Theta: each series is truncated by
    its own tail, so K does not depend on Theta being computed); for K and Theta alone the
    fused flows never allocate the other layers (the peaks of numpy's allocations, by
    tracemalloc, differ by exactly those layers)."""
    import tracemalloc

    x = np.random.default_rng(5).normal(size=(90, 6))
    x[7] = x[3]
    L = 6
    net = Network(name, depth=L, n_in=6, lambda_b=0.3, lambda_W=1.2)
    full = flow(net, x, fields=("K", "Theta"))
    part = flow(net, x, fields=("K", "Theta"), layers=[-1, 2])
    np.testing.assert_array_equal(part.layers, [2, L])
    for f in ("K", "Theta"):
        np.testing.assert_array_equal(part[f], full[f][[1, L - 1]])
    other = flow(net, x, fields=("K", "chi_perp"), layers=[3])
    chi_perp = flow(net, x, fields=("chi_perp",)).chi_perp
    np.testing.assert_array_equal(other["chi_perp"], chi_perp[[2]])
    np.testing.assert_array_equal(other["K"], full["K"][[2]])
    if path == "compiled":  # the peaks of numpy's allocations differ by the layers not kept

        def peak(**kwargs: object) -> int:
            tracemalloc.start()
            flow(net, x, fields=("K", "Theta"), **kwargs)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            return peak

        saved = peak() - peak(layers=[-1])
        N2 = 8 * len(x) ** 2  # bytes of one layer of one field
        assert 0.98 * 2 * (L - 1) * N2 <= saved < (2 * (L - 1) + 0.5) * N2, (saved, N2)


def test_layers_are_checked_and_kept_by_results(tmp_path):
    """Bad ``layers`` raise with the allowed range; ``Flow.layers`` survives save and load;
    the memory estimate counts only the kept layers of K and Theta."""
    from pdlt import load
    from pdlt.theory.flow import estimate_work

    net = Network("tanh", depth=5, n_in=3)
    x = np.random.default_rng(0).normal(size=(4, 3))
    for bad, err in (([0], "1..5"), ([6], "1..5"), ([-6], "1..5"), ([], "non-empty")):
        with pytest.raises(ValueError, match=err):
            flow(net, x, fields=("K",), layers=bad)
    with pytest.raises(TypeError, match="sequence"):
        flow(net, x, fields=("K",), layers=2)  # type: ignore[arg-type]
    f = flow(net, x, fields=("K", "chi_perp"), layers=[4, 2, -1, 2])
    np.testing.assert_array_equal(f.layers, [2, 4, 5])
    assert f.table().splitlines()[1].split()[0] == "2"
    for ext in ("npz", "json"):
        f.save(tmp_path / f"r.{ext}")
        g = load(tmp_path / f"r.{ext}")
        np.testing.assert_array_equal(g.layers, [2, 4, 5])
        np.testing.assert_array_equal(g["K"], f["K"])
    assert flow(net, x, fields=("K",), layers=range(1, 6)).layers.tolist() == [1, 2, 3, 4, 5]
    big = np.random.default_rng(1).normal(size=(300, 3))
    all_layers = estimate_work(net, big, fields=("K", "Theta")).bytes
    last = estimate_work(net, big, fields=("K", "Theta"), layers=[-1]).bytes
    assert all_layers - last == 2 * (5 - 1) * 8 * 300**2  # K and Theta at 4 layers fewer
    assert estimate_work(net, big, fields=("K", "V"), layers=[-1]).bytes > 0


@pytest.mark.parametrize(
    ("name", "parity"),
    [("tanh", (1, 0)), ("gelu", (0, 1)), ("swish", (0, 1)), ("odd", (1, 0)), ("mixed", (-1, -1))],
)
def test_fused_mehler_flow_sums_one_parity_where_it_can(monkeypatch, request, name, parity):
    """An odd activation (tanh; a user callable ``sin z``) has only odd orders in ``sigma``'s
    series and even ones in ``sigma'``'s; GELU and SWISH are ``z/2`` plus an even function, so
    ``sigma``'s series has even orders and ``c_1``, ``sigma'``'s odd ones and ``c_0`` (the
    other orders' energy is below 1e-13 of the total at every sample).  The flow sums those
    alone, in ``rho^2``, and agrees with the full sums (parity detection off) to 1e-12 of the
    scale.  A user callable ``sin z + cos z`` has both parities in full; forcing one on it is
    off by far more, so the check can fail."""
    from pdlt.theory import kernel as kernel_module

    if _compiled.kernels() is None:
        pytest.skip("numba is not installed")
    callables = {"odd": torch.sin, "mixed": lambda z: torch.sin(z) + torch.cos(z)}
    if name in callables:
        act = Activation.from_callable(callables[name], name=name)
    else:
        act = activation(name)
    gram, (C_b, C_W, g), lam = _mehler_case(0.0, n=30)
    seen: list[np.ndarray] = []
    real = kernel_module._MehlerTables.run

    def recording(self, *args):
        seen.append(self.parity.copy())
        return real(self, *args)

    def fresh_tables() -> None:  # the panels are kept with their parities: start afresh
        gaussian_module._hermite_panel.cache_clear()
        gaussian_module._hermite_table.cache_clear()

    request.addfinalizer(fresh_tables)
    monkeypatch.setattr(kernel_module._MehlerTables, "run", recording)
    K, T = kernel_module.mehler_flow(act, gram, C_b, C_W, g, *lam)
    assert all((seen[0][k] == parity[k]).all() for k in (0, 1))
    monkeypatch.setattr(gaussian_module, "_PARITY_TOL", 0.0)  # no parity: every order summed
    fresh_tables()
    K0, T0 = kernel_module.mehler_flow(act, gram, C_b, C_W, g, *lam)
    assert (seen[-1] == -1).all()
    for F, R in ((K, K0), (T, T0)):
        np.testing.assert_allclose(F, R, rtol=0, atol=1e-12 * np.max(np.abs(R)))
    if name == "mixed":
        monkeypatch.setattr(gaussian_module, "_PARITY_TOL", 1e100)  # both "quiet": even forced
        fresh_tables()
        Kf, _ = kernel_module.mehler_flow(act, gram, C_b, C_W, g, *lam)
        assert (seen[-1][0] == 0).all()
        assert np.max(np.abs(Kf - K0)) > 1e-3 * np.max(np.abs(K0))


def test_gram_runs_blas_on_one_thread_for_large_inputs():
    """The Gram matrix of many inputs is computed with BLAS on one thread (OpenBLAS's threads
    would spin afterwards and slow the compiled kernels' threads down): inside
    ``one_blas_thread`` every BLAS library reports one thread, the thread counts are restored
    after, small work is left alone, and the Gram matrix is ``x x^T / n_0`` either way."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from pdlt.gaussian import one_blas_thread
    from pdlt.network import Inputs

    before = [lib["num_threads"] for lib in threadpoolctl.threadpool_info()]
    with one_blas_thread(2**22):
        inside = threadpoolctl.threadpool_info()
    assert all(lib["num_threads"] == 1 for lib in inside if lib["user_api"] == "blas")
    assert [lib["num_threads"] for lib in threadpoolctl.threadpool_info()] == before
    with one_blas_thread(2**22 - 1):
        assert [lib["num_threads"] for lib in threadpoolctl.threadpool_info()] == before
    x = np.random.default_rng(2).normal(size=(1100, 4))
    np.testing.assert_allclose(Inputs(x).gram, x @ x.T / 4, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize(
    ("N", "threaded_from", "row_cost"),
    [(100, 64, 0.0), (100, 64, 28.0), (100, 256, 0.0), (2, 1, 0.0), (700, 64, 0.0)],
)
def test_row_blocks_cover_every_row_once(N, threaded_from, row_cost):
    """``row_blocks`` hands out every row of the triangle exactly once, in blocks of rows; an
    ``N`` that fits one block is cut in two (pairs ``a <= b``, plus ``row_cost`` a row) when
    it runs threaded, the first (the calling thread's) with ``_FIRST_SHARE`` of the work."""
    from pdlt.gaussian import _FIRST_SHARE, _THREADS, row_blocks

    seen: list[tuple[int, int]] = []
    row_blocks(lambda r0, r1: seen.append((r0, r1)), N, threaded_from, row_cost)
    rows = np.concatenate([np.arange(r0, r1) for r0, r1 in seen])
    np.testing.assert_array_equal(np.sort(rows), np.arange(N))
    if N == 100 and threaded_from == 64 and _THREADS > 1:
        work = [sum(N - r + row_cost for r in range(r0, r1)) for r0, r1 in sorted(seen)]
        assert len(work) == 2 and abs(work[0] - _FIRST_SHARE * sum(work)) <= N + row_cost


def test_mehler_flows_reuse_their_workspace_without_crosstalk():
    """The coefficient tables live in a per-thread workspace that later flows reuse: flows of
    different sizes and activations, one after another, give the same numbers to the last
    bit as each run first in a fresh workspace."""
    from pdlt.theory import kernel as kernel_module

    if _compiled.kernels() is None:
        pytest.skip("numba is not installed")
    x = np.random.default_rng(12).normal(size=(70, 5))
    cases = [("tanh", x[:70]), ("gelu", x[:33]), ("tanh", x[:20]), ("gelu", x[:70])]
    alone = []
    for name, inputs in cases:
        kernel_module._WORKSPACE.__dict__.clear()
        net = Network(name, depth=4, n_in=5, lambda_b=0.5, lambda_W=1.0)
        alone.append(flow(net, inputs, fields=("K", "Theta")))
    kernel_module._WORKSPACE.__dict__.clear()
    for (name, inputs), ref in zip(cases, alone, strict=True):
        net = Network(name, depth=4, n_in=5, lambda_b=0.5, lambda_W=1.0)
        got = flow(net, inputs, fields=("K", "Theta"))
        np.testing.assert_array_equal(got.K, ref.K)
        np.testing.assert_array_equal(got.Theta, ref.Theta)
    assert kernel_module._WORKSPACE.buf.size >= 2 * 3 * 65 * 70  # it was used


def test_series_ladder_is_the_one_the_kernels_assume():
    """The compiled rung search (``_orders``, ``_pair_order``) computes ``|rho|^(m + 1)`` by
    squaring from ``|rho|^8`` and maps the number of failed rungs ``f`` to ``m = 8 << f``: the
    ladder must be 8, 16, 32, ... (a guard for whoever changes it)."""
    from pdlt.gaussian import _SERIES_LADDER

    assert _SERIES_LADDER == tuple(8 << i for i in range(len(_SERIES_LADDER)))
