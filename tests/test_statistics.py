"""Tests for pdlt.empirical.statistics.

Every expected value is computed independently of the code under test: by a closed form, or by a
direct numpy/scipy computation on all the samples at once.  Statistical checks use fixed seeds
and tolerances stated in standard errors.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats

from pdlt.empirical.statistics import (
    Accumulator,
    Estimate,
    connected_correlator,
    covariance_estimate,
    cumulant_from_moments,
    excess_kurtosis,
    fit_inverse_width,
    set_partitions,
)

# --------------------------------------------------------------------------------------------
# helpers


def _random_features(rng: np.random.Generator, m: int) -> dict[str, np.ndarray]:
    """Features of three shapes with a large offset, to exercise numerical stability."""
    return {
        "s": 1e3 + rng.normal(size=m),
        "v": rng.exponential(size=(m, 3)),
        "g": rng.normal(size=(m, 2, 2)) * np.array([[1.0, 2.0], [3.0, 4.0]]),
    }


def _blocked_data(seed: int, sizes: list[int]) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [_random_features(rng, m) for m in sizes]


def _accumulate(data: list[dict[str, np.ndarray]], blocks: list[int]) -> Accumulator:
    acc = Accumulator()
    for b in blocks:
        acc.add(b, data[b])
    return acc


def _ratio(means):
    return means["y"] / means["x"]


def _isserlis(cov: np.ndarray, t: tuple[int, ...]) -> float:
    """E[y_{t_1} ... y_{t_k}] for zero-mean Gaussian y, by recursive Wick pairing."""
    if not t:
        return 1.0
    if len(t) % 2:
        return 0.0
    first, rest = t[0], t[1:]
    return sum(
        cov[first, rest[j]] * _isserlis(cov, rest[:j] + rest[j + 1 :]) for j in range(len(rest))
    )


def _shifted_gaussian_moment(mean: np.ndarray, cov: np.ndarray):
    """Exact raw moments of N(mean, cov): expand prod(mean + y) over subsets of positions."""

    def moment(t: tuple[int, ...]) -> float:
        total = 0.0
        for chosen in itertools.product((False, True), repeat=len(t)):
            gaussian = tuple(i for i, c in zip(t, chosen, strict=True) if c)
            constant = math.prod(mean[i] for i, c in zip(t, chosen, strict=True) if not c)
            total += constant * _isserlis(cov, gaussian)
        return total

    return moment


def _exponential_mixture_moment(a: np.ndarray):
    """Exact raw moments of z = a @ e with e_j i.i.d. Exp(1), E[e^r] = r!.

    E[z_{t_1} ... z_{t_k}] = sum over assignments (j_1..j_k) of prod_l a[t_l, j_l]
    times prod_j (multiplicity of j)!.
    """

    def moment(t: tuple[int, ...]) -> float:
        total = 0.0
        for js in itertools.product(range(a.shape[1]), repeat=len(t)):
            weight = math.prod(a[i, j] for i, j in zip(t, js, strict=True))
            total += weight * math.prod(math.factorial(js.count(j)) for j in set(js))
        return total

    return moment


def _exponential_mixture_cumulant(a: np.ndarray, t: tuple[int, ...]) -> float:
    """Closed form: cumulants are multilinear and additive, and kappa_k(Exp(1)) = (k-1)!."""
    return math.factorial(len(t) - 1) * float(np.sum(np.prod(a[list(t), :], axis=0)))


# --------------------------------------------------------------------------------------------
# 1. mean / var / stderr


def test_mean_var_stderr_match_concatenated_samples():
    rng = np.random.default_rng(1)
    acc = Accumulator()
    chunks: list[dict[str, np.ndarray]] = []
    # unequal blocks, several added in sub-chunks, blocks added out of order
    for block, m in [(3, 7), (0, 1), (3, 5), (1, 20), (7, 2), (0, 13), (3, 1)]:
        chunk = _random_features(rng, m)
        acc.add(block, chunk)
        chunks.append(chunk)
    assert acc.blocks == (0, 1, 3, 7)
    assert acc.count == 49
    assert acc.names == ("g", "s", "v")
    for name in acc.names:
        everything = np.concatenate([c[name] for c in chunks])
        # expected: direct numpy on all samples at once
        np.testing.assert_allclose(acc.mean(name), np.mean(everything, axis=0), rtol=1e-12)
        np.testing.assert_allclose(acc.var(name), np.var(everything, axis=0, ddof=1), rtol=1e-12)
        np.testing.assert_allclose(
            acc.stderr(name), np.std(everything, axis=0, ddof=1) / np.sqrt(49), rtol=1e-12
        )
        assert acc.mean(name).shape == everything.shape[1:]


def test_mean_returns_a_copy():
    acc = Accumulator()
    acc.add(0, {"x": np.ones((2, 3))})
    mean = acc.mean("x")
    mean[:] = 5.0
    np.testing.assert_array_equal(acc.mean("x"), np.ones(3))


# --------------------------------------------------------------------------------------------
# 2. merge exactness


def test_merge_is_bitwise_independent_of_distribution_and_order():
    data = _blocked_data(2, [4, 9, 1, 6, 6, 3, 11, 2, 5])
    fn = lambda m: {"r": m["v"] / m["s"], "q": m["g"] @ m["g"]}  # noqa: E731
    splits = [
        ([0, 1, 2], [3, 4, 5], [6, 7, 8]),
        ([8, 0, 4], [7, 1], [6, 3, 5, 2]),
        ([5], [2, 8, 1, 0, 3], [7, 6, 4]),
    ]
    results = []
    for a_blocks, b_blocks, c_blocks in splits:
        a, b, c = (_accumulate(data, blocks) for blocks in (a_blocks, b_blocks, c_blocks))
        for merged in (a.merge(b).merge(c), c.merge(a.merge(b)), b.merge(c).merge(a)):
            results.append(merged)
    results.append(_accumulate(data, list(range(9))[::-1]))
    reference = results[0]
    ref_estimate = reference.estimate(fn)
    for acc in results[1:]:
        assert acc.blocks == tuple(range(9))
        assert acc.count == reference.count
        for name in reference.names:
            assert np.array_equal(acc.mean(name), reference.mean(name))
            assert np.array_equal(acc.var(name), reference.var(name))
        for key, est in acc.estimate(fn).items():
            assert np.array_equal(est.value, ref_estimate[key].value)
            assert np.array_equal(est.stderr, ref_estimate[key].stderr)
            assert np.array_equal(est.bias_corrected, ref_estimate[key].bias_corrected)


def test_merge_leaves_operands_unchanged_and_rejects_overlap():
    data = _blocked_data(3, [3, 4, 5])
    a = _accumulate(data, [0, 1])
    b = _accumulate(data, [2])
    mean_before = a.mean("v")
    merged = a.merge(b)
    assert merged.blocks == (0, 1, 2)
    assert a.blocks == (0, 1)
    assert np.array_equal(a.mean("v"), mean_before)
    with pytest.raises(ValueError, match=r"share blocks \[1\]"):
        a.merge(_accumulate(data, [1, 2]))
    other = Accumulator()
    other.add(5, {"w": np.ones(2)})
    with pytest.raises(ValueError, match="feature names"):
        a.merge(other)
    assert Accumulator().merge(a).blocks == (0, 1)


# --------------------------------------------------------------------------------------------
# 3. jackknife


def test_jackknife_of_linear_fn_equal_blocks_is_stderr_of_block_means():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(10, 8, 3))  # 10 blocks of 8 instances
    acc = Accumulator()
    for b in range(10):
        acc.add(b, {"x": x[b]})
    est = acc.estimate(lambda m: 2.0 * m["x"] + 1.0)
    block_means = x.mean(axis=1)
    # closed form: linear fn of the mean -> stderr of the mean of equal-size block means
    expected = 2.0 * np.std(block_means, axis=0, ddof=1) / np.sqrt(10)
    np.testing.assert_allclose(est.value, 2.0 * x.reshape(-1, 3).mean(axis=0) + 1.0, rtol=1e-12)
    np.testing.assert_allclose(est.stderr, expected, rtol=1e-12)
    np.testing.assert_allclose(est.bias_corrected, est.value, rtol=1e-12)


def test_jackknife_of_linear_fn_unequal_blocks_closed_form():
    rng = np.random.default_rng(5)
    sizes = [3, 10, 1, 7, 25, 4]
    xs = [rng.normal(size=m) for m in sizes]
    acc = Accumulator()
    for b, x in enumerate(xs):
        acc.add(b, {"x": x})
    est = acc.estimate(lambda m: m["x"])
    m_j = np.array(sizes, dtype=float)
    total = m_j.sum()
    mu = np.concatenate(xs).mean()
    mu_j = np.array([x.mean() for x in xs])
    # closed form of the weighted delete-m jackknife (Busing et al. 1999) for the mean:
    # pseudo-values are the block means, so var = (1/g) sum_j m_j/(M - m_j) (mu_j - mu)^2
    expected = np.sqrt(np.sum(m_j / (total - m_j) * (mu_j - mu) ** 2) / len(sizes))
    np.testing.assert_allclose(est.stderr, expected, rtol=1e-12)
    np.testing.assert_allclose(est.bias_corrected, mu, rtol=1e-12)


def test_jackknife_bias_correction_of_squared_mean():
    rng = np.random.default_rng(6)
    x = 0.3 + rng.normal(size=(12, 5))  # 12 equal blocks
    acc = Accumulator()
    for b in range(12):
        acc.add(b, {"x": x[b]})
    est = acc.estimate(lambda m: m["x"] ** 2)
    block_means = x.mean(axis=1)
    # closed form: for equal blocks, the jackknife of xbar^2 is the unbiased
    # xbar^2 - s_B^2 / g, with s_B^2 the sample variance of the block means
    expected = block_means.mean() ** 2 - np.var(block_means, ddof=1) / 12
    np.testing.assert_allclose(est.value, x.mean() ** 2, rtol=1e-12)
    np.testing.assert_allclose(est.bias_corrected, expected, rtol=1e-12)


def _assert_honest_zscores(zscores: np.ndarray, n_blocks: int) -> None:
    """Assert z-scores look like Student t with n_blocks - 1 dof.

    Tolerances are 4 standard errors: of the mean, std(z) / sqrt(R); of the sample std,
    std * sqrt((excess_kurtosis + 2) / (4 R)) with the t excess kurtosis 6 / (nu - 4).
    """
    reps = zscores.size
    nu = n_blocks - 1
    expected_std = np.sqrt(nu / (nu - 2))
    se_mean = expected_std / np.sqrt(reps)
    se_std = expected_std * np.sqrt((6.0 / (nu - 4) + 2.0) / (4 * reps))
    assert abs(zscores.mean()) < 4 * se_mean
    assert abs(zscores.std(ddof=1) - expected_std) < 4 * se_std


def test_jackknife_ratio_errors_are_honest():
    rng = np.random.default_rng(7)
    n_blocks, block_size, reps = 20, 50, 400
    truth = 5.0  # E[X^2] / E[X] = (4 + 16) / 4 for X ~ Gamma(4, 1)
    zscores = np.empty(reps)
    for r in range(reps):
        acc = Accumulator()
        x = rng.gamma(4.0, size=(n_blocks, block_size))
        for b in range(n_blocks):
            acc.add(b, {"x": x[b], "y": x[b] ** 2})
        zscores[r] = acc.estimate(_ratio).zscore(truth)
    _assert_honest_zscores(zscores, n_blocks)


def test_covariance_errors_are_honest_with_unequal_blocks():
    rng = np.random.default_rng(8)
    sizes = [20, 40, 60, 80] * 6
    cov = np.array([[1.0, 0.6], [0.6, 2.0]])
    reps = 400
    edges = np.cumsum([0, *sizes])
    zscores = np.empty(reps)
    for r in range(reps):
        z = rng.normal(size=(edges[-1], 2)) @ np.linalg.cholesky(cov).T + [1.0, -2.0]
        acc = Accumulator()
        for b in range(len(sizes)):
            x, y = z[edges[b] : edges[b + 1]].T
            acc.add(b, {"x": x, "y": y, "xy": x * y})
        zscores[r] = covariance_estimate(acc, "x", "y", "xy").zscore(cov[0, 1])
    _assert_honest_zscores(zscores, len(sizes))


def test_estimate_dict_output_and_names_subset():
    data = _blocked_data(9, [5, 6, 7, 8])
    acc = _accumulate(data, [0, 1, 2, 3])
    seen = []

    def fn(means):
        seen.append(sorted(means))
        return {"a": means["s"] * 2.0, "b": means["v"].sum()}

    result = acc.estimate(fn, names=["s", "v"])
    assert set(result) == {"a", "b"}
    assert all(keys == ["s", "v"] for keys in seen)
    single = acc.estimate(lambda m: m["s"] * 2.0)
    assert np.array_equal(result["a"].stderr, single.stderr)
    # expected: direct numpy on all samples at once
    everything = np.concatenate([d["v"] for d in data])
    np.testing.assert_allclose(result["b"].value, everything.mean(axis=0).sum(), rtol=1e-12)


# --------------------------------------------------------------------------------------------
# 4. covariance


def test_covariance_estimate_bivariate_normal():
    rng = np.random.default_rng(10)
    cov = np.array([[2.0, -0.7, 0.3], [-0.7, 1.0, 0.2], [0.3, 0.2, 0.5]])
    acc = Accumulator()
    samples = []
    for b in range(16):
        z = rng.multivariate_normal([3.0, 0.0, -1.0], cov, size=500 + 10 * b)
        samples.append(z)
        acc.add(b, {"z": z, "zz": z[:, :, None] * z[:, None, :]})
    est = covariance_estimate(acc, "z", "z", "zz", scale=2.0)
    everything = np.concatenate(samples)
    # expected value: numpy's unbiased sample covariance on all samples at once
    np.testing.assert_allclose(est.value, 2.0 * np.cov(everything.T, ddof=1), rtol=1e-10)
    # expected: the known population covariance, within 4 standard errors
    assert np.all(np.abs(est.zscore(2.0 * cov)) < 4.0)
    with pytest.raises(ValueError, match="neither the outer shape nor the broadcast"):
        covariance_estimate(acc, "zz", "zz", "z")


def test_covariance_estimate_broadcast_layout():
    rng = np.random.default_rng(20)
    z = rng.normal(size=(8, 300, 2)) @ np.array([[1.0, 0.4], [0.0, 0.8]])
    acc = Accumulator()
    for b in range(8):
        acc.add(b, {"a": z[b, :, 0], "v": z[b], "av": z[b, :, 0, None] * z[b]})
    est = covariance_estimate(acc, "a", "v", "av")
    flat = z.reshape(-1, 2)
    # expected: numpy's unbiased sample covariance of (a, v_0) and (a, v_1), all samples at once
    np.testing.assert_allclose(est.value, np.cov(flat.T, ddof=1)[0], rtol=1e-10)


# --------------------------------------------------------------------------------------------
# 5. cumulants from moments


def test_set_partitions_are_complete_and_distinct():
    bell = [1, 1, 2, 5, 15, 52, 203]  # closed form: Bell numbers
    for m, expected in enumerate(bell):
        partitions = set_partitions(m)
        assert len(partitions) == expected
        canonical = {frozenset(frozenset(block) for block in p) for p in partitions}
        assert len(canonical) == expected
        for p in partitions:
            assert sorted(k for block in p for k in block) == list(range(m))


def test_cumulants_of_a_gaussian_vanish_beyond_second_order():
    rng = np.random.default_rng(11)
    a = rng.normal(size=(3, 3))
    cov = a @ a.T
    mean = np.array([0.5, -1.0, 2.0])
    zero_mean = _shifted_gaussian_moment(np.zeros(3), cov)
    shifted = _shifted_gaussian_moment(mean, cov)
    scale = np.max(np.abs(cov)) ** 3
    for moment in (zero_mean, shifted):
        # expected (Wick/Isserlis): kappa_2 = covariance, kappa_{3,4,5,6} = 0
        assert cumulant_from_moments(moment, (0, 2)) == pytest.approx(cov[0, 2], rel=1e-12)
        for idx in [(0, 1, 2), (0, 1, 2, 2), (1, 1, 1, 1), (0, 0, 1, 2, 2), (0, 0, 1, 1, 2, 2)]:
            assert abs(cumulant_from_moments(moment, idx)) < 1e-11 * scale
    # expected: kappa_1 is the mean
    assert cumulant_from_moments(shifted, (2,)) == pytest.approx(mean[2], rel=1e-14)


def test_cumulants_of_exponential_mixture_closed_form():
    a = np.array([[1.0, 0.5, 0.0], [0.2, -1.0, 0.3], [0.0, 0.4, 2.0]])
    moment = _exponential_mixture_moment(a)
    for idx in [(0,), (1, 2), (0, 0, 2), (0, 1, 2, 2), (2, 2, 2, 2, 1), (0, 0, 1, 1, 2, 2)]:
        expected = _exponential_mixture_cumulant(a, idx)
        assert cumulant_from_moments(moment, idx) == pytest.approx(expected, rel=1e-9, abs=1e-9)


# --------------------------------------------------------------------------------------------
# 6. connected correlators and kurtosis of samples


def test_connected_correlator_of_gaussian_samples():
    rng = np.random.default_rng(12)
    cov = np.array([[1.0, 0.5, 0.2], [0.5, 2.0, -0.3], [0.2, -0.3, 1.5]])
    z = rng.multivariate_normal([0.3, 0.0, -0.5], cov, size=100_000)
    two = connected_correlator(z, (1, 2))
    # expected value: numpy's plug-in (ddof=0) covariance on all samples at once
    np.testing.assert_allclose(two.value, np.cov(z.T, ddof=0)[1, 2], rtol=1e-10)
    assert abs(two.zscore(cov[1, 2])) < 4.0
    # expected (Wick): higher connected correlators of a Gaussian vanish
    for idx in [(0, 1, 2), (0, 1, 2, 2), (1, 1, 1, 1), (0, 0, 1, 1, 2, 2), (2,) * 6]:
        est = connected_correlator(z, idx)
        assert abs(est.zscore(0.0)) < 4.0, (idx, est)


def test_connected_correlator_of_exponential_mixture():
    rng = np.random.default_rng(13)
    a = np.array([[1.0, 0.5, 0.0], [0.2, -1.0, 0.3], [0.0, 0.4, 2.0]])
    z = rng.exponential(size=(200_000, 3)) @ a.T
    centered = z - z.mean(axis=0)
    four = connected_correlator(z, (0, 1, 2, 2))
    # expected value: the plug-in 4th cumulant of centered data on all samples at once,
    # E[abcd] - E[ab]E[cd] - E[ac]E[bd] - E[ad]E[bc]
    c0, c1, c2 = centered.T
    direct = np.mean(c0 * c1 * c2 * c2) - (
        np.mean(c0 * c1) * np.mean(c2 * c2) + 2 * np.mean(c0 * c2) * np.mean(c1 * c2)
    )
    np.testing.assert_allclose(four.value, direct, rtol=1e-10)
    np.testing.assert_allclose(connected_correlator(z, (1,)).value, z[:, 1].mean(), rtol=1e-12)
    # expected: closed-form cumulants (k-1)! sum_j prod a, within 4 standard errors
    for idx in [(0, 2), (0, 1, 2), (0, 1, 2, 2), (0, 0, 1, 2, 2), (0, 0, 1, 1, 2, 2)]:
        est = connected_correlator(z, idx)
        assert abs(est.zscore(_exponential_mixture_cumulant(a, idx))) < 4.0, (idx, est)


@pytest.mark.parametrize(
    ("draw", "truth"),
    [
        (lambda rng, m: rng.normal(2.0, 3.0, size=m), 0.0),  # Gaussian
        (lambda rng, m: rng.exponential(size=m), 6.0),  # Exp: kappa_4 / kappa_2^2 = 3! / 1
        (lambda rng, m: rng.uniform(size=m), -1.2),  # uniform: -6/5
    ],
)
def test_excess_kurtosis(draw, truth):
    x = draw(np.random.default_rng(14), 100_000)
    est = excess_kurtosis(x, n_blocks=40)
    # expected value: scipy's biased (plug-in) excess kurtosis on all samples at once
    np.testing.assert_allclose(
        est.value, scipy.stats.kurtosis(x, fisher=True, bias=True), rtol=1e-10, atol=1e-12
    )
    # expected: closed-form excess kurtosis, within 4 standard errors
    assert abs(est.zscore(truth)) < 4.0


# --------------------------------------------------------------------------------------------
# 7. fits in 1/n


def test_fit_inverse_width_recovers_noise_free_coefficients():
    widths = np.array([8.0, 16.0, 32.0, 64.0, 128.0])
    rng = np.random.default_rng(15)
    coef = rng.normal(size=(3, 2, 4))
    for order in (1, 2):
        powers = widths[:, None] ** -np.arange(order + 1)  # (W, p)
        values = np.einsum("wp,p...->w...", powers, coef[: order + 1])
        stderrs = rng.uniform(0.1, 1.0, size=values.shape)
        fit = fit_inverse_width(widths, values, stderrs, order=order)
        # expected: the coefficients the noise-free data were generated from
        np.testing.assert_allclose(fit.value, coef[: order + 1], rtol=1e-9, atol=1e-10)
        assert fit.stderr.shape == (order + 1, 2, 4)
        assert fit.covariance.shape == (order + 1, order + 1, 2, 4)
        assert fit.dof == 5 - (order + 1)
        assert np.all(fit.chi2 < 1e-12)
        np.testing.assert_array_equal(fit.coefficient(1).value, fit.value[1])


def test_fit_inverse_width_matches_polyfit():
    widths = np.array([4.0, 6.0, 10.0, 16.0, 30.0, 64.0])
    rng = np.random.default_rng(16)
    sigma = rng.uniform(0.01, 0.05, size=widths.size)
    values = 1.0 - 2.0 / widths + 3.0 / widths**2 + sigma * rng.normal(size=widths.size)
    fit = fit_inverse_width(widths, values, sigma, order=2)
    # expected: numpy.polyfit in x = 1/n with weights 1/sigma (highest power first)
    poly, poly_cov = np.polyfit(1.0 / widths, values, 2, w=1.0 / sigma, cov="unscaled")
    np.testing.assert_allclose(fit.value, poly[::-1], rtol=1e-8)
    np.testing.assert_allclose(fit.covariance, poly_cov[::-1, ::-1], rtol=1e-7)
    residual = (values - np.polyval(poly, 1.0 / widths)) / sigma
    np.testing.assert_allclose(fit.chi2, np.sum(residual**2), rtol=1e-7)


def test_fit_inverse_width_stderrs_match_monte_carlo():
    widths = np.array([4.0, 8.0, 16.0, 32.0, 64.0, 128.0])
    truth = np.array([1.0, -3.0, 5.0])
    sigma = 0.02 * np.sqrt(widths / 4.0)
    reps = 4000
    rng = np.random.default_rng(17)
    exact = truth @ widths[None, :] ** -np.arange(3)[:, None]
    values = exact[:, None] + sigma[:, None] * rng.normal(size=(widths.size, reps))
    fit = fit_inverse_width(widths, values, sigma[:, None], order=2)
    stderr = fit.stderr[:, 0]
    # Gaussian noise -> Gaussian coefficients: SE of the sample mean is stderr / sqrt(R),
    # SE of the sample std is stderr / sqrt(2 (R - 1)); tolerances are 4 SE.
    assert np.all(np.abs(fit.value.mean(axis=1) - truth) < 4 * stderr / np.sqrt(reps))
    assert np.all(
        np.abs(fit.value.std(axis=1, ddof=1) - stderr) < 4 * stderr / np.sqrt(2 * (reps - 1))
    )
    # chi2 ~ chi2(dof): mean dof, SE sqrt(2 dof / R)
    assert abs(fit.chi2.mean() - fit.dof) < 4 * np.sqrt(2 * fit.dof / reps)


def test_fit_inverse_width_rejects_too_few_widths():
    with pytest.raises(ValueError, match="fewer widths than coefficients"):
        fit_inverse_width([8, 16], [1.0, 2.0], [0.1, 0.1], order=2)
    with pytest.raises(ValueError, match="fewer widths than coefficients"):
        fit_inverse_width([8, 8, 16], [1.0, 1.1, 2.0], [0.1, 0.1, 0.1], order=2)
    with pytest.raises(ValueError, match="stderrs"):
        fit_inverse_width([8, 16, 32], [1.0, 2.0, 3.0], [0.1, 0.0, 0.1])


# --------------------------------------------------------------------------------------------
# 8. checkpoints


def test_state_round_trip_through_npz(tmp_path):
    data = _blocked_data(18, [4, 7, 2, 9])
    acc = Accumulator()
    acc.add(2, data[2])
    acc.add(0, data[0])
    acc.add(0, data[1])  # two sub-chunks in block 0
    acc.add(5, data[3])
    path = tmp_path / "acc.npz"
    np.savez(path, **acc.to_state())
    with np.load(path) as loaded:  # allow_pickle=False: the state holds plain arrays only
        restored = Accumulator.from_state(loaded)
    assert restored.blocks == acc.blocks
    assert restored.count == acc.count
    assert restored.names == acc.names
    fn = lambda m: m["g"] @ m["v"][:2] / m["s"]  # noqa: E731
    for name in acc.names:
        assert np.array_equal(restored.mean(name), acc.mean(name))
        assert np.array_equal(restored.var(name), acc.var(name))
    for got, want in [(restored.estimate(fn), acc.estimate(fn))]:
        assert np.array_equal(got.value, want.value)
        assert np.array_equal(got.stderr, want.stderr)
    # accumulation continues identically after a restore
    extra = _blocked_data(19, [3])[0]
    restored.add(5, extra)
    acc.add(5, extra)
    assert np.array_equal(restored.mean("g"), acc.mean("g"))
    # an empty accumulator round-trips too
    assert Accumulator.from_state(Accumulator().to_state()).blocks == ()


# --------------------------------------------------------------------------------------------
# 9. bad input, Estimate


def test_bad_input_raises_clear_errors():
    acc = Accumulator()
    acc.add(0, {"G": np.ones((3, 2, 2)), "x": np.ones(3)})
    with pytest.raises(ValueError, match=r"feature 'G' has per-instance shape \(3, 2\)"):
        acc.add(1, {"G": np.ones((3, 3, 2)), "x": np.ones(3)})
    with pytest.raises(ValueError, match="feature names"):
        acc.add(1, {"G": np.ones((3, 2, 2))})
    with pytest.raises(ValueError, match="different numbers of instances"):
        acc.add(1, {"G": np.ones((3, 2, 2)), "x": np.ones(4)})
    with pytest.raises(ValueError, match="features is empty"):
        acc.add(1, {})
    with pytest.raises(ValueError, match=r"has shape \(0"):
        acc.add(1, {"G": np.ones((0, 2, 2)), "x": np.ones(0)})
    bad = np.ones((3, 2, 2))
    bad[1, 0, 1] = np.nan
    with pytest.raises(ValueError, match="feature 'G' contains non-finite"):
        acc.add(1, {"G": bad, "x": np.ones(3)})
    assert acc.blocks == (0,) and acc.count == 3  # failed adds change nothing
    with pytest.raises(ValueError, match="at least 2 blocks are needed for a jackknife"):
        acc.estimate(lambda m: m["x"])
    with pytest.raises(ValueError, match="at least 2 blocks are needed for a jackknife"):
        covariance_estimate(acc, "x", "x", "x")
    with pytest.raises(KeyError, match="unknown feature 'y'"):
        acc.mean("y")
    single = Accumulator()
    single.add(0, {"x": np.ones(1)})
    with pytest.raises(ValueError, match="at least 2 instances"):
        single.var("x")
    with pytest.raises(ValueError, match="empty"):
        Accumulator().mean("x")
    with pytest.raises(ValueError, match="at least 2 blocks"):
        connected_correlator(np.ones((1, 2)), (0, 1))
    with pytest.raises(ValueError, match="order must be between 1 and 6"):
        connected_correlator(np.ones((10, 2)), (0,) * 7)
    with pytest.raises(ValueError, match="out of range"):
        connected_correlator(np.ones((10, 2)), (0, 2))


def test_estimate_zscore_and_repr():
    est = Estimate(np.array([1.0, 2.0]), np.array([0.3, 0.4]))
    # closed form: (value - reference) / sqrt(stderr^2 + allowance^2)
    np.testing.assert_allclose(est.zscore([0.7, 2.0], allowance=0.4), [0.6, 0.0], rtol=1e-14)
    np.testing.assert_allclose(est.zscore(0.0), [1.0 / 0.3, 5.0], rtol=1e-14)
    assert "shape=(2,)" in repr(est)
    assert repr(Estimate(1.5, 0.25, 1.4)) == "Estimate(1.5 ± 0.25, bias_corrected=1.4)"
    with pytest.raises(ValueError, match="stderr shape"):
        Estimate(np.ones(2), np.ones(3))
