"""Learning at infinite width: Bayesian posterior and evidence (ch. 6), kernel learning (ch. 10).

Expected values come from independent computations: direct linear algebra on the full kernel
(numpy inverses, Schur complements, scipy's Gaussian density), Monte Carlo over exact Gaussian
prior samples, explicit step-by-step iteration of the function-space dynamics, closed forms
(ReLU single-input kernel, deep linear networks, the book's large-depth asymptotics), and
the linear-model primal solved with numpy's least squares.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from pdlt import Network, flow
from pdlt.learning import (
    ConditioningWarning,
    SPDSolver,
    bayes_factor,
    bayes_learning_rates,
    bayes_predict,
    bias_variance,
    block_inverse,
    evidence,
    evidence_scan,
    gamma_targets,
    gd_operator,
    gd_predict,
    infinite_width_step,
    infinite_width_training,
    kernel_machine,
    kernel_prediction,
    linear_model_fit,
    log_evidence,
    log_evidence_two_inputs,
    newton_step,
    one_train_one_test,
    posterior,
    star_polation,
)
from pdlt.theory.learning_rates import equivalence_principle

XA = np.eye(3) * 1.5 + 0.4
XB = np.array([[1.0, 0.5, -0.5], [0.2, 1.2, 0.7]])
YA = np.array([[0.5, -1.0], [-0.3, 0.2], [0.8, 0.4]])


def assert_less(a: np.ndarray, b: np.ndarray) -> None:
    a, b = np.broadcast_arrays(np.asarray(a), np.asarray(b))
    assert np.all(a < b), f"{a} not < {b}"


def random_kernel(n: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(n, n + 2))
    return a @ a.T / (n + 2) + 0.1 * np.eye(n)


def tanh_kernels(depth: int = 3) -> tuple[np.ndarray, np.ndarray]:
    f = flow(Network("tanh", depth=depth), np.concatenate([XA, XB]), fields=("K", "Theta"))
    return f["K"][-1], f["Theta"][-1]


# ---------------------------------------------------------------------------------------------
# Linear algebra
# ---------------------------------------------------------------------------------------------


def test_solver_cholesky_matches_numpy():
    A = random_kernel(6, 1)
    b = np.arange(12.0).reshape(6, 2)
    s = SPDSolver(A)
    assert s.method == "cholesky"
    np.testing.assert_allclose(s.solve(b), np.linalg.solve(A, b), rtol=1e-12)
    np.testing.assert_allclose(s.logdet(), np.linalg.slogdet(A)[1], rtol=1e-12)
    np.testing.assert_allclose(s.cond, np.linalg.cond(A, 1), rtol=0.5)  # LAPACK estimate


def test_solver_near_duplicates_warns_and_returns_min_norm():
    # two identical inputs: the kernel is singular; the answer is the pseudo-inverse solve
    x = np.array([[1.0, 0.2], [1.0, 0.2], [-0.3, 1.0]])
    K = flow(Network("tanh", depth=4), x, fields=("K",))["K"][-1]
    y = np.array([0.3, 0.3, -0.5])
    with pytest.warns(ConditioningWarning, match="ill-conditioned"):
        s = SPDSolver(K, name="K~")
    assert s.method == "eigh" and s.rank == 2
    np.testing.assert_allclose(s.solve(y), np.linalg.pinv(K, rcond=1e-10) @ y, rtol=1e-8)
    with pytest.raises(ValueError, match="singular"):
        s.logdet()
    # the posterior at a duplicated training input is the target, variance zero: no NaN
    with pytest.warns(ConditioningWarning):
        Kfull = flow(Network("tanh", depth=4), np.vstack([x, x[:1]]), fields=("K",))["K"][-1]
        p = posterior(Kfull, y)
    assert np.all(np.isfinite(p.mean)) and np.all(np.isfinite(p.cov))
    np.testing.assert_allclose(p.mean[0, 0], 0.3, atol=1e-8)
    assert abs(p.cov[0, 0]) < 1e-8


def test_solver_rejects_bad_matrices():
    with pytest.raises(ValueError, match="symmetric"):
        SPDSolver(np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="positive semidefinite"):
        SPDSolver(np.array([[1.0, 0.0], [0.0, -1.0]]))
    with pytest.raises(ValueError, match="NaN"):
        SPDSolver(np.array([[np.nan]]))
    with pytest.raises(ValueError, match="ridge"):
        SPDSolver(np.eye(2), ridge=-1.0)


def test_deep_nearly_constant_kernel_is_handled():
    # deep ReLU off criticality (C_W < 2): the kernel decays to a nearly constant matrix
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    net = Network("relu", depth=60, C_b=0.1, C_W=1.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConditioningWarning)
        p = bayes_predict(net, x, [0.2, -0.1, 0.4], [[0.5, 0.5]])
        g = gd_predict(net, x, [0.2, -0.1, 0.4], [[0.5, 0.5]])
    for pred in (p, g):
        assert np.all(np.isfinite(pred.mean)) and np.all(np.isfinite(pred.cov))


# ---------------------------------------------------------------------------------------------
# Bayesian posterior (6.53)-(6.66)
# ---------------------------------------------------------------------------------------------


def test_block_inverse_matches_numpy_inverse():
    K = random_kernel(5, 2)
    parts = block_inverse(K, 3)
    inv = np.linalg.inv(K)
    np.testing.assert_allclose(parts["AA"], inv[:3, :3], rtol=1e-10)
    np.testing.assert_allclose(parts["AB"], inv[:3, 3:], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(parts["BB"], inv[3:, 3:], rtol=1e-10)
    # the tilde convention: the inverse of the A-block is not the A-block of the inverse
    assert not np.allclose(np.linalg.inv(K[:3, :3]), inv[:3, :3], rtol=1e-3)


def test_posterior_is_conditioning_of_the_full_inverse():
    K = random_kernel(5, 3)
    y = YA
    p = posterior(K, y)
    inv = np.linalg.inv(K)  # precision matrix: conditional of a Gaussian from its blocks
    cov = np.linalg.inv(inv[3:, 3:])
    mean = -cov @ inv[3:, :3] @ y
    np.testing.assert_allclose(p.cov, cov, rtol=1e-10)
    np.testing.assert_allclose(p.mean, mean, rtol=1e-10, atol=1e-12)
    assert p.mean.shape == (2, 2)


def test_posterior_with_noise_matches_importance_sampled_prior():
    # exact prior draws z_D ~ N(0, K), weighted by the likelihood N(y; z_A, s^2) (6.10)
    K, _ = tanh_kernels()
    y = YA[:, :1]
    s2 = 0.05
    p = posterior(K, y, noise_var=s2)
    rng = np.random.default_rng(7)
    z = rng.multivariate_normal(np.zeros(5), K, size=400_000)
    logw = -0.5 * np.sum((z[:, :3] - y[:, 0]) ** 2, axis=1) / s2
    w = np.exp(logw - logw.max())
    w /= w.sum()
    mean = w @ z[:, 3:]
    cov = (z[:, 3:] - mean).T @ ((z[:, 3:] - mean) * w[:, None])
    ess = 1.0 / np.sum(w**2)
    se_mean = np.sqrt(np.diag(p.cov) / ess)
    assert ess > 1000
    assert_less(np.abs(mean - p.mean[:, 0]), 5 * se_mean)
    se_cov = np.sqrt(2.0 / ess) * np.sqrt(np.outer(np.diag(p.cov), np.diag(p.cov)))
    assert_less(np.abs(cov - p.cov), 5 * se_cov)


def test_posterior_samples_match_exact_conditioning():
    # Matheron's rule: z_B - K_BA K~^{-1} (z_A - y) for prior draws is a posterior draw
    K, _ = tanh_kernels()
    y = YA
    p = posterior(K, y)
    rng = np.random.default_rng(11)
    z = rng.multivariate_normal(np.zeros(5), K, size=(50_000, 2)).transpose(0, 2, 1)
    cond = z[:, 3:] - K[3:, :3] @ np.linalg.solve(K[:3, :3], z[:, :3] - y)
    draws = p.sample(50_000, seed=3)
    for s in (cond, draws):
        se = np.sqrt(np.diag(p.cov) / s.shape[0])[:, None]
        assert_less(np.abs(s.mean(0) - p.mean), 5 * se)
        c = np.mean([np.cov(s[:, :, i].T) for i in range(2)], axis=0)
        np.testing.assert_allclose(c, p.cov, atol=5 * np.sqrt(2 / 1e5) * p.cov.max())


def test_bayes_predict_multi_output_has_no_wiring():
    net = Network("relu", depth=3, n_out=2)
    p = bayes_predict(net, XA, YA, XB)
    for i in range(2):
        pi = bayes_predict(net.replace(n_out=1), XA, YA[:, i], XB)
        np.testing.assert_allclose(p.mean[:, i], pi.mean[:, 0], rtol=1e-12)
        np.testing.assert_allclose(p.cov, pi.cov, rtol=1e-12)
    with pytest.raises(ValueError, match="output columns"):
        bayes_predict(net, XA, YA[:, 0], XB)


# ---------------------------------------------------------------------------------------------
# Evidence and model comparison (6.30)-(6.48)
# ---------------------------------------------------------------------------------------------


def test_log_evidence_equals_gaussian_density():
    K = random_kernel(3, 4)
    want = sum(multivariate_normal(np.zeros(3), K).logpdf(YA[:, i]) for i in range(2))
    assert log_evidence(K, YA) == pytest.approx(want, rel=1e-12)
    want_noise = multivariate_normal(np.zeros(3), K + 0.2 * np.eye(3)).logpdf(YA[:, 0])
    assert log_evidence(K, YA[:, 0], noise_var=0.2) == pytest.approx(want_noise, rel=1e-12)
    want_shared = multivariate_normal(np.zeros(3), K + 0.2).logpdf(YA[:, 0])
    assert log_evidence(K, YA[:, 0], 0.2, shared_noise=True) == pytest.approx(want_shared)
    K2 = random_kernel(3, 5)
    assert bayes_factor(K, K2, YA) == pytest.approx(
        want - sum(multivariate_normal(np.zeros(3), K2).logpdf(YA[:, i]) for i in range(2))
    )


def test_two_input_evidence_gamma_basis():
    yp, ym = np.array([0.4, -1.0, 0.3]), np.array([0.1, 0.5, 0.9])
    for K in (random_kernel(2, 6), np.array([[1.3, 0.4], [0.4, 1.3]])):  # general, equal norms
        g = ((K[0, 0] + K[1, 1] + 2 * K[0, 1]) / 4, (K[0, 0] - K[1, 1]) / 2)
        g += ((K[0, 0] + K[1, 1] - 2 * K[0, 1]) / 4,)
        want = log_evidence(K, np.stack([yp, ym]))
        assert log_evidence_two_inputs(g, yp, ym) == pytest.approx(want, rel=1e-12)
    # (6.45): equal norms factorize into [0] and [2] parts, maximized at K_[k] = Y_[k]/n_L
    Y0, _, Y2 = gamma_targets(yp, ym)
    best = log_evidence_two_inputs((Y0 / 3, 0, Y2 / 3), yp, ym)
    for k0, k2 in ((1.1, 1), (0.9, 1), (1, 1.1), (1, 0.9)):
        assert log_evidence_two_inputs((k0 * Y0 / 3, 0, k2 * Y2 / 3), yp, ym) < best


def test_evidence_for_criticality_relu_single_input():
    # ReLU, C_b = 0: K^(L) = (C_W/2)^(L-1) C_W |x|^2/n_0 exactly; with sum_i y^2 = n_L K*
    # (K* = 2|x|^2/n_0, the critical kernel) the evidence (6.36) is maximal at K^(L) = K*,
    # i.e. at the critical C_W = 2
    x = np.array([[1.0, 1.0]])  # |x|^2/n_0 = 1
    y = np.array([[np.sqrt(2.0), -np.sqrt(2.0)]])  # n_L = 2, sum_i y^2 = 4 = n_L K*
    net = Network("relu", depth=20, n_out=2)
    grid = np.array([1.8, 1.9, 1.95, 2.0, 2.05, 2.1, 2.2])
    scan = evidence_scan(net, x, y, [0.0], grid)[0]
    KL = (grid / 2) ** 19 * grid
    want = -np.log(2 * np.pi * KL) - np.sum(y**2) / (2 * KL)
    np.testing.assert_allclose(scan, want, rtol=1e-9)
    assert grid[np.argmax(scan)] == 2.0
    assert evidence(net, x, y) == pytest.approx(want[3], rel=1e-9)


def test_evidence_prefers_critical_tanh_for_two_inputs():
    # §6.3.1: deep tanh networks away from C_W = 1 lose the K_[2] component (or blow it up)
    x = np.array([[1.0, 0.3], [0.3, 1.0]])
    net = Network("tanh", depth=30)
    K_crit = flow(net, x, fields=("K",))["K"][-1]
    rng = np.random.default_rng(0)
    y = rng.multivariate_normal(np.zeros(2), K_crit, size=50).T  # data from the critical prior
    net50 = net.replace(n_out=50)
    scan = evidence_scan(net50, x, y, [0.0], [0.7, 0.85, 1.0, 1.2, 1.5])[0]
    assert np.argmax(scan) == 2
    assert scan[0] < scan[2] - 50 and scan[-1] < scan[2] - 50


# ---------------------------------------------------------------------------------------------
# Kernel learning (10.3)-(10.49)
# ---------------------------------------------------------------------------------------------


def test_gd_operator_equals_explicit_iteration():
    K, Theta = tanh_kernels()
    eta = 1.0 / np.linalg.eigvalsh(Theta[:3, :3])[-1]
    z0 = np.random.default_rng(1).multivariate_normal(np.zeros(5), K, size=(4, 2))
    z0 = z0.transpose(0, 2, 1)
    z = z0.copy()
    for t in range(1, 31):
        z = z - eta * Theta[:, :3] @ (z[:, :3] - YA)  # (10.3) with MSE, written out
        if t in (1, 7, 30):
            O, _ = gd_operator(Theta[:3, :3], eta, t)
            np.testing.assert_allclose(z0 - Theta[:, :3] @ O @ (z0[:, :3] - YA), z, atol=1e-12)
    zt = infinite_width_training(Theta, z0, YA, eta, 30)
    np.testing.assert_allclose(zt, z, atol=1e-12)
    np.testing.assert_allclose(gd_operator(Theta[:3, :3])[0], np.linalg.inv(Theta[:3, :3]))
    O, _ = gd_operator(Theta[:3, :3], eta, 20000)
    np.testing.assert_allclose(O, np.linalg.inv(Theta[:3, :3]), rtol=1e-9)
    with pytest.raises(ValueError, match="never converges"):
        gd_operator(Theta[:3, :3], 2.5 / np.linalg.eigvalsh(Theta[:3, :3])[-1])


def test_newton_memorizes_and_algorithm_independence():
    K, Theta = tanh_kernels()
    rng = np.random.default_rng(2)
    z0 = rng.multivariate_normal(np.zeros(5), K, size=(3, 2)).transpose(0, 2, 1)
    final = newton_step(Theta, z0, YA)
    np.testing.assert_allclose(final[:, :3], np.broadcast_to(YA, (3, 3, 2)), atol=1e-12)
    # (10.33)-(10.35): any sequence of steps, then one Newton step, gives the same outputs
    z = z0
    for _ in range(15):
        kappa = np.diag(rng.integers(0, 2, size=3).astype(float))  # mini-batch (SGD)
        kappa = kappa + 0.1 * np.ones((3, 3))  # plus a generalized-MSE tensor (10.22)
        z = infinite_width_step(Theta, z, YA, rng.uniform(0.01, 0.2), kappa=kappa)
    np.testing.assert_allclose(newton_step(Theta, z, YA), final, atol=1e-12)
    z = infinite_width_training(Theta, z0, YA, 0.1, 40, batch_size=2, seed=3)
    np.testing.assert_allclose(newton_step(Theta, z, YA), final, atol=1e-12)
    # one Newton step is (10.20) with eta kappa = Theta~^{-1} (10.26)
    z1 = infinite_width_step(Theta, z0, YA, 1.0, kappa=np.linalg.inv(Theta[:3, :3]))
    np.testing.assert_allclose(z1, final, atol=1e-12)


def test_gd_converges_to_newton():
    K, Theta = tanh_kernels()
    z0 = np.random.default_rng(5).multivariate_normal(np.zeros(5), K, size=(2, 2))
    z0 = z0.transpose(0, 2, 1)
    eta = 1.0 / np.linalg.eigvalsh(Theta[:3, :3])[-1]
    z = infinite_width_training(Theta, z0, YA, eta, 3000)
    np.testing.assert_allclose(z, newton_step(Theta, z0, YA), atol=1e-10)


def test_cross_entropy_aside_softmax_of_shifted_targets():
    # (10.36)-(10.38): CE training reaches q = p; the z's differ from y by a per-sample shift
    # c_a, and the prediction of (10.35) with targets y + c has the same softmax
    K, Theta = tanh_kernels()
    K3 = 3 * np.kron(np.eye(1), K)
    z0 = np.random.default_rng(8).multivariate_normal(np.zeros(5), K3, size=3).T  # n_L = 3
    y = np.array([[1.0, -0.5, 0.2], [0.0, 0.4, -0.8], [0.3, 0.3, -1.0]])
    z = infinite_width_training(Theta, z0, y, 0.5, 4000, loss="cross_entropy")
    q = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    p = np.exp(y) / np.exp(y).sum(-1, keepdims=True)
    np.testing.assert_allclose(q[:3], p, atol=1e-6)
    c = np.mean(z0[:3] - y, axis=1, keepdims=True)  # conserved: sum_i eps_i = 0
    pred = newton_step(Theta, z0, y + c)
    qp = np.exp(pred) / np.exp(pred).sum(-1, keepdims=True)
    np.testing.assert_allclose(q[3:], qp[3:], atol=1e-5)


def test_kernel_prediction_is_the_law_of_the_stochastic_prediction():
    # (10.40)-(10.41) against Monte Carlo of (10.39) applied to exact Gaussian initial outputs
    K, Theta = tanh_kernels()
    p = kernel_prediction(Theta, K, YA)
    rng = np.random.default_rng(9)
    M = 100_000
    z0 = rng.multivariate_normal(np.zeros(5), K, size=(M, 2)).transpose(0, 2, 1)
    zT = newton_step(Theta, z0, YA)[:, 3:]
    se = np.sqrt(np.diag(p.cov) / M)[:, None]
    assert_less(np.abs(zT.mean(0) - p.mean), 5 * se)
    c = np.mean([np.cov(zT[:, :, i].T) for i in range(2)], axis=0)
    np.testing.assert_allclose(c, p.cov, atol=5 * np.sqrt(1 / M) * p.cov.max())
    # at a finite number of steps, against the same Monte Carlo of (10.3)
    eta = 0.8 / np.linalg.eigvalsh(Theta[:3, :3])[-1]
    p5 = kernel_prediction(Theta, K, YA, steps=5, eta=eta)
    z5 = infinite_width_training(Theta, z0[:20000], YA, eta, 5)[:, 3:]
    assert_less(np.abs(z5.mean(0) - p5.mean), 5 * np.sqrt(p5.cov.max() / 2e4))
    # bias-variance (10.52) against the Monte Carlo test loss
    yB = np.array([[0.1, 0.2], [-0.3, 0.0]])
    bv = bias_variance(p, yB)
    mc = 0.5 * np.mean(np.sum((zT - yB) ** 2, axis=(1, 2)))
    assert bv["expected_loss"] == pytest.approx(mc, rel=0.02)
    assert bv["variance_total"] == pytest.approx(0.5 * 2 * np.trace(p.cov))


def test_bayes_is_last_layer_training():
    # (10.44)-(10.49): lambda = (C_b, C_W) in the last layer only => Theta = K, GD = posterior
    net = bayes_learning_rates(Network("gelu", depth=4, C_b=0.1, C_W=1.6))
    x = np.concatenate([XA, XB])
    f = flow(net, x, fields=("K", "Theta"))
    np.testing.assert_allclose(f["Theta"][-1], f["K"][-1], rtol=1e-12)
    assert np.all(f["Theta"][:-1] == 0)
    g = gd_predict(net, XA, YA[:, 0], XB)
    b = bayes_predict(net, XA, YA[:, 0], XB)
    np.testing.assert_allclose(g.mean, b.mean, rtol=1e-12)
    np.testing.assert_allclose(g.cov, b.cov, rtol=1e-10, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# Generalization (§10.3) and linear models (§10.4)
# ---------------------------------------------------------------------------------------------


def test_one_train_one_test_variance_identity():
    net = Network("tanh", depth=5, lambda_b=0.5, lambda_W=1.5)
    o = one_train_one_test(net, [1.0, 0.2], [0.8, 0.4], y_plus=[0.7], y_minus=[0.5])
    r = o.robustness + 1
    K = o.K
    g0 = (K[:, 0, 0] + K[:, 1, 1] + 2 * K[:, 0, 1]) / 4
    g2 = (K[:, 0, 0] + K[:, 1, 1] - 2 * K[:, 0, 1]) / 4
    g1 = (K[:, 0, 0] - K[:, 1, 1]) / 2
    # Var = K_[0](1-r)^2 + K_[2](1+r)^2 - K_[1](1-r^2) (gamma basis, unequal norms)
    np.testing.assert_allclose(o.variance, g0 * (1 - r) ** 2 + g2 * (1 + r) ** 2 - g1 * (1 - r**2))
    p = gd_predict(net, [[1.0, 0.2]], [[0.7]], [[0.8, 0.4]])
    assert o.variance[-1] == pytest.approx(p.cov[0, 0], rel=1e-12)
    assert o.bias[-1, 0] == pytest.approx(p.mean[0, 0] - 0.5, rel=1e-12)


def test_scale_invariant_criticality_generalization_limits():
    # (10.93)-(10.95): ReLU at criticality with lambda/L: cos zeta -> 1/4, so robustness
    # -> -3/4 and variance -> (9/16) K*_d, whatever the separation; approach ~ 1/L
    xp, xm = np.array([1.0, 0.0]), np.array([np.cos(0.5), np.sin(0.5)])
    err = []
    for L in (50, 400):
        lr = equivalence_principle("relu", L)
        net = Network("relu", depth=L, lambda_b=lr.lambda_b, lambda_W=lr.lambda_W)
        o = one_train_one_test(net, xp, xm)
        err.append((o.robustness[-1] + 0.75, o.variance[-1] / o.K[-1, 0, 0] - 9 / 16))
    assert abs(err[1][0]) < 0.015 and abs(err[1][1]) < 0.03
    assert abs(err[1][0]) < abs(err[0][0]) / 3 and abs(err[1][1]) < abs(err[0][1]) / 3


def test_deep_linear_cos_zeta_is_exact():
    # (10.96)-(10.98): linear, C_b = 0, lambda/L: cos zeta = (lb + lW x+.x-/n0)/(lb + lW |x|^2/n0)
    xp, xm = np.array([1.0, 0.5]), np.array([-0.5, 1.0])
    L = 12
    net = Network("linear", depth=L, C_b=0.0, C_W=1.0, lambda_b=0.7 / L, lambda_W=1.3 / L)
    o = one_train_one_test(net, xp, xm)
    want = (0.7 + 1.3 * xp @ xm / 2) / (0.7 + 1.3 * xp @ xp / 2) - 1
    np.testing.assert_allclose(o.robustness, want, rtol=1e-12, atol=1e-15)


def test_k_star_zero_robustness_erratum_10_80():
    # tanh, constant learning rates: -2 ddTheta_[2]/Theta_00 -> -4 ddK_[2] [lW/lb + 1]
    # (spec/04 erratum 7); the book's (10.80) has [lW/lb] only, off by a factor 2 here
    x0, dx = np.array([1.0, 0.0]), np.array([0.0, 0.1])
    ratios = []
    for L in (25, 100):
        net = Network("tanh", depth=L, lambda_b=1.0, lambda_W=1.0)
        o = one_train_one_test(net, x0 + dx / 2, x0 - dx / 2)
        K = o.K[-1]
        ddK2 = (K[0, 0] + K[1, 1] - 2 * K[0, 1]) / 4
        ratios.append(o.robustness[-1] / (-4 * ddK2 * (1.0 + 1.0)))
    assert abs(ratios[1] - 1) < 0.03 and abs(ratios[1] - 1) < abs(ratios[0] - 1)
    # equivalence-principle rates (10.74): robustness O(1) in depth; constant rates: ~1/L
    rob = {}
    for L in (25, 50):
        lr = equivalence_principle("tanh", L)
        eq = Network("tanh", depth=L, lambda_b=lr.lambda_b, lambda_W=lr.lambda_W)
        const = Network("tanh", depth=L)
        rob[L] = [
            one_train_one_test(n, x0 + dx / 2, x0 - dx / 2).robustness[-1] for n in (eq, const)
        ]
    assert rob[50][0] / rob[25][0] == pytest.approx(1.0, abs=0.1)
    assert rob[50][1] / rob[25][1] == pytest.approx(0.5, abs=0.05)


def test_star_polation_deep_linear_is_linear():
    # (10.101)-(10.104): deep linear nets interpolate and extrapolate linearly, variance 0
    net = Network("linear", depth=4, C_b=0.2, C_W=1.0, n_out=2)
    s = np.array([-1.0, 0.0, 0.3, 0.5, 1.0, 2.0])
    r = star_polation(net, [1.0, 0.3], [0.2, -1.0], [0.4, 1.0], [-0.6, 0.5], s)
    np.testing.assert_allclose(r.mean, r.linear, atol=1e-10)
    np.testing.assert_allclose(r.variance, 0.0, atol=1e-10)


def test_star_polation_midpoint_erratum():
    # equal norms, tanh: m(1/2) = (y+ + y-)/2 (1 - ddTheta_[0]/(2 Theta_00)) + O(d^4)
    # (spec/04 erratum 8); the book's (10.113) coefficient is 4x larger
    net = Network("tanh", depth=4)
    x0, dx = np.array([1.0, 0.0]), np.array([0.0, 0.2])
    yp, ym = 0.6, 0.9
    r = star_polation(net, x0 + dx / 2, x0 - dx / 2, [yp], [ym], [0.5])
    T = flow(net, np.stack([x0 + dx / 2, x0 - dx / 2, x0]), fields=("Theta",))["Theta"][-1]
    T0 = (T[0, 0] + T[1, 1] + 2 * T[0, 1]) / 4
    ddT0 = T0 - T[2, 2]  # Theta_[0] = Theta_00 + ddTheta_[0] + O(d^4)
    dev = r.mean[0, 0] - (yp + ym) / 2
    corrected = -(yp + ym) / 2 * ddT0 / (2 * T[2, 2])
    book = -4 * 0.25 * (yp + ym) * ddT0 / T[2, 2]
    assert abs(dev - corrected) < 0.02 * abs(corrected)
    assert abs(dev - book) > 0.5 * abs(book)


def test_linear_model_and_kernel_machine_duality():
    rng = np.random.default_rng(4)
    Phi_A, Phi_B = rng.normal(size=(5, 8)), rng.normal(size=(2, 8))  # overparameterized
    y = rng.normal(size=(5, 2))
    for ridge in (0.3, 0.0):
        with warnings.catch_warnings():  # ridge 0: the primal's M is singular (n_f > N_A)
            warnings.simplefilter("ignore", ConditioningWarning)
            W = linear_model_fit(Phi_A, y, ridge)
        k = kernel_machine(Phi_B @ Phi_A.T, Phi_A @ Phi_A.T, y, ridge)
        np.testing.assert_allclose(Phi_B @ W, k, rtol=1e-9, atol=1e-12)
    # ridge -> 0+: the minimum-norm interpolant (numpy's least squares)
    W0 = np.linalg.lstsq(Phi_A, y, rcond=None)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConditioningWarning)
        np.testing.assert_allclose(linear_model_fit(Phi_A, y), W0, rtol=1e-8, atol=1e-10)
    # underparameterized primal: normal equations (10.123)
    Phi = rng.normal(size=(10, 3))
    np.testing.assert_allclose(
        linear_model_fit(Phi, y[:1].repeat(10, 0) + Phi[:, :2]),
        np.linalg.lstsq(Phi, y[:1].repeat(10, 0) + Phi[:, :2], rcond=None)[0],
    )


def test_bad_input_messages():
    K = random_kernel(4, 0)
    with pytest.raises(ValueError, match="training inputs first"):
        posterior(K, np.zeros((4, 1)))
    with pytest.raises(ValueError, match="noise_var"):
        posterior(K, np.zeros((2, 1)), noise_var=-1)
    with pytest.raises(ValueError, match="eta"):
        kernel_prediction(K, K, np.zeros(2), steps=3)
    with pytest.raises(ValueError, match="steps"):
        kernel_prediction(K, K, np.zeros(2), steps=-1, eta=0.1)
    with pytest.raises(ValueError, match="loss"):
        infinite_width_step(K, np.zeros((4, 1)), np.zeros(2), 0.1, loss="hinge")
    with pytest.raises(ValueError, match="NaN"):
        bayes_predict(Network("relu", depth=2), XA, [np.nan, 0, 0], XB)
    with pytest.raises(ValueError, match="same n_0"):
        gd_predict(Network("relu", depth=2), XA, [0, 0, 0], [[1.0, 2.0]])


# ---------------------------------------------------------------------------------------------
# CLI: pdlt predict
# ---------------------------------------------------------------------------------------------


def test_cli_predict(tmp_path, capsys):
    import json

    from pdlt.cli import main

    train_file, test_file = tmp_path / "train.csv", tmp_path / "test.csv"
    np.savetxt(train_file, np.hstack([XA, YA[:, :1]]), delimiter=",")
    np.savetxt(test_file, XB, delimiter=",")
    net = Network("tanh", depth=3)
    for method, want in (
        ("gd", gd_predict(net, XA, YA[:, :1], XB)),
        ("bayes", bayes_predict(net, XA, YA[:, :1], XB, noise_var=0.01)),
    ):
        args = ["predict", "--activation", "tanh", "--depth", "3", "--method", method]
        args += ["--train", str(train_file), "--test", str(test_file), "--json"]
        if method == "bayes":
            args += ["--noise", "0.01"]
        assert main(args) == 0
        out = json.loads(capsys.readouterr().out)
        np.testing.assert_allclose(out["mean"], want.mean, rtol=1e-12)
        np.testing.assert_allclose(out["cov"], want.cov, rtol=1e-12)
    # test targets given: the bias-variance split (10.52) is reported
    np.savetxt(test_file, np.hstack([XB, [[0.1], [0.2]]]), delimiter=",")
    assert (
        main(
            [
                "predict",
                "--activation",
                "tanh",
                "--depth",
                "3",
                "--train",
                str(train_file),
                "--test",
                str(test_file),
            ]
        )
        == 0
    )
    assert "expected test loss" in capsys.readouterr().out
    bad = [
        (["--steps", "4"], "eta"),
        (["--width", "64", "--method", "bayes"], "not implemented for --method bayes"),
        (["--k1", "1.0"], "--train and --test"),
    ]
    for extra, msg in bad:
        args = ["predict", "--activation", "tanh", "--depth", "3", "--train", str(train_file)]
        assert main([*args, "--test", str(test_file), *extra]) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    np.savetxt(test_file, np.ones((2, 5)), delimiter=",")
    assert (
        main(
            [
                "predict",
                "--activation",
                "tanh",
                "--depth",
                "3",
                "--train",
                str(train_file),
                "--test",
                str(test_file),
            ]
        )
        == 2
    )
    assert "input columns" in capsys.readouterr().err
