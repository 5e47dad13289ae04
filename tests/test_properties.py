"""Property-based tests (hypothesis) of the Gaussian engine and the recursions.

The Gaussian engine: expectations are invariant under relabelling the components, moment
matrices are positive semidefinite, and values agree with Monte Carlo.  The recursions: the
kernel K and the NTK Theta are positive semidefinite at every layer, V and A (covariances of
the metric and the NTK) are positive semidefinite on pairs, the four-index tensors have the
symmetries of their definitions, and relabelling the inputs relabels every field.

Every test is derandomized (the same examples on every run) with small example counts.
"""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pdlt
from pdlt import gaussian


def profile(examples: int) -> settings:
    """Reproducible and quick: fixed examples, no deadline, no example database."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


SMOOTH = ["tanh", "gelu", "erf", "softplus", "sin", "swish"]
KINKED = ["relu", "leaky_relu:0.1", "perceptron"]

unit = st.floats(-1.0, 1.0, allow_nan=False, allow_infinity=False)


@st.composite
def covariances(draw, d_min: int = 1, d_max: int = 3, singular: bool = True) -> np.ndarray:
    """A d x d PSD matrix ``A A^T`` with variances O(1); rank-deficient when ``singular``."""
    d = draw(st.integers(d_min, d_max))
    r = draw(st.integers(1 if singular else d, d))
    A = np.array(draw(st.lists(unit, min_size=d * r, max_size=d * r))).reshape(d, r)
    A += np.eye(d, r)  # keep every variance away from zero
    scale = draw(st.floats(0.2, 3.0))
    return scale * (A @ A.T)


@st.composite
def inputs(draw, n_max: int = 4) -> np.ndarray:
    """``N`` inputs of dimension ``n_0``, entries O(1)."""
    N = draw(st.integers(1, n_max))
    n0 = draw(st.integers(1, 4))
    x = np.array(draw(st.lists(unit, min_size=N * n0, max_size=N * n0))).reshape(N, n0)
    return 1.5 * x + 0.1 * np.eye(N, n0)


def assert_psd(M: np.ndarray, rtol: float = 1e-9) -> None:
    """Symmetric with eigenvalues above ``-rtol`` times the largest magnitude."""
    assert np.allclose(M, M.T, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(M).max()))
    lam = np.linalg.eigvalsh(0.5 * (M + M.T))
    assert lam[0] >= -rtol * max(np.abs(lam).max(), 1e-300), lam


# --------------------------------------------------------------------------------------------
# The Gaussian engine
# --------------------------------------------------------------------------------------------


@profile(60)
@given(
    K=covariances(),
    act=st.sampled_from(SMOOTH + KINKED),
    seed=st.integers(0, 2**16),
)
def test_moments_are_invariant_under_relabelling(K, act, seed):
    a = pdlt.activation(act)
    d = K.shape[0]
    rng = np.random.default_rng(seed)
    order = 0 if a.kinks else 1
    products = [
        [(0, 0)] * 2,
        [(i, 0) for i in range(d)],
        [(d - 1, order), (0, 0)],
        [(i, order if i % 2 else 0) for i in range(d)],
    ]
    perm = rng.permutation(d)  # component i of the new vector is component perm[i] of z
    inv = np.argsort(perm)
    permuted = [[(int(inv[i]), k) for i, k in prod] for prod in products]
    before = gaussian.moments(a, K, products)
    after = gaussian.moments(a, K[np.ix_(perm, perm)], permuted)
    assert np.allclose(before, after, rtol=1e-7, atol=1e-10)


@profile(50)
@given(K=covariances(d_min=2, d_max=5), act=st.sampled_from(SMOOTH + KINKED))
def test_moment_matrices_are_psd(K, act):
    a = pdlt.activation(act)
    ss = gaussian.pairwise_moments(a, K, [(0, 0)])[0]
    assert_psd(ss, rtol=1e-8)
    assert np.all(np.diag(ss) >= 0)
    if not a.kinks:
        dd = gaussian.pairwise_moments(a, K, [(1, 1)])[0]
        assert_psd(dd, rtol=1e-8)


@profile(30)
@given(
    K=covariances(d_min=1, d_max=3),
    act=st.sampled_from(SMOOTH + KINKED),
    seed=st.integers(0, 2**16),
)
def test_moments_agree_with_monte_carlo(K, act, seed):
    a = pdlt.activation(act)
    d = K.shape[0]
    products = [[(0, 0), (0, 0)], [(0, 0), (d - 1, 0)], [(i, 0) for i in range(d)]]
    exact = gaussian.moments(a, K, products)
    z = np.random.default_rng(seed).multivariate_normal(np.zeros(d), K, size=100_000)
    s = a(z)
    samples = np.stack([s[:, 0] ** 2, s[:, 0] * s[:, d - 1], np.prod(s, axis=1)], axis=1)
    mean = samples.mean(axis=0)
    err = samples.std(axis=0) / np.sqrt(len(z))
    assert np.all(np.abs(mean - exact) <= 6 * err + 1e-12), (mean, exact, err)


@profile(30)
@given(K=covariances(d_min=1, d_max=1), act=st.sampled_from(["tanh", "erf", "sin"]))
def test_odd_activations_have_mean_zero(K, act):
    assert abs(float(gaussian.moments(pdlt.activation(act), K, [[(0, 0)]])[0])) < 1e-12


# --------------------------------------------------------------------------------------------
# The recursions
# --------------------------------------------------------------------------------------------


@profile(50)
@given(
    x=inputs(n_max=5),
    act=st.sampled_from(SMOOTH + ["relu", "leaky_relu:0.1"]),
    depth=st.integers(1, 5),
    C_b=st.floats(0.0, 1.0),
    C_W=st.floats(0.5, 2.5),
    lambda_b=st.floats(0.0, 2.0),
    lambda_W=st.floats(0.1, 2.0),
)
def test_kernel_and_ntk_are_psd_at_every_layer(x, act, depth, C_b, C_W, lambda_b, lambda_W):
    net = pdlt.Network(act, depth=depth, C_b=C_b, C_W=C_W, lambda_b=lambda_b, lambda_W=lambda_W)
    f = pdlt.flow(net, x, fields=("K", "Theta"))
    for ell in range(depth):
        assert_psd(f["K"][ell])
        assert_psd(f["Theta"][ell])


# The symmetries of the definitions: V_(ab)(cd) and A_(ab)(cd) (4.76), (8.82) are symmetric
# within each pair and under exchanging the pairs; D_abcd within each pair; B_abcd and F_abcd
# (spec/05 §1.1, printed slot order) under exchanging (ab) with (cd), B also under reversing
# all four slots; P_abcd (11.49) in its two middle slots (the symmetric second derivative).
SYMMETRIES = {
    "V": [(1, 0, 2, 3), (0, 1, 3, 2), (2, 3, 0, 1)],
    "A": [(1, 0, 2, 3), (0, 1, 3, 2), (2, 3, 0, 1)],
    "D": [(1, 0, 2, 3), (0, 1, 3, 2)],
    "B": [(2, 3, 0, 1), (3, 2, 1, 0)],
    "F": [(2, 3, 0, 1)],
    "P": [(0, 2, 1, 3)],
}
FIELDS = ("K", "Theta", "V", "A", "B", "D", "F", "P", "Q")


def relabelled(T: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """``T[l, perm[a], perm[b], ...]``: a per-layer field of the inputs ``x[perm]``."""
    n = T.ndim - 1
    return T[
        (slice(None), *(perm.reshape((1,) * k + (-1,) + (1,) * (n - 1 - k)) for k in range(n)))
    ]


@profile(6)
@given(
    x=st.integers(2, 3).flatmap(
        lambda N: st.lists(unit, min_size=3 * N, max_size=3 * N).map(
            lambda v: np.array(v).reshape(-1, 3) + np.eye(len(v) // 3, 3)
        )
    ),
    act=st.sampled_from(["tanh", "gelu"]),
    seed=st.integers(0, 2**16),
)
def test_four_index_fields_symmetries_and_relabelling(x, act, seed):
    net = pdlt.Network(act, depth=3, width=1000)
    f = pdlt.flow(net, x, fields=FIELDS)
    for name, perms in SYMMETRIES.items():
        T = f[name]
        scale = max(np.abs(T).max(), 1e-300)
        for p in perms:
            swapped = np.transpose(T, (0, *(i + 1 for i in p)))
            assert np.allclose(T, swapped, rtol=1e-9, atol=1e-11 * scale), (name, p)
    N = len(x)
    for name in ("V", "A"):  # covariances of the metric and of the NTK: PSD on pairs
        for ell in range(3):
            assert_psd(f[name][ell].reshape(N * N, N * N), rtol=1e-8)
    perm = np.random.default_rng(seed).permutation(N)
    g = pdlt.flow(net, x[perm], fields=FIELDS)
    for name in FIELDS:
        assert np.allclose(g[name], relabelled(f[name], perm), rtol=1e-9, atol=1e-12), name
