"""Quadratic models and nearly-kernel methods (book §11.4.1-§11.4.2; spec/06 §5-§6).

Expected values are computed independently of :mod:`pdlt.learning.nonlinear`: numerical
minimization (Gauss-Newton with minimum-norm steps, scipy least squares) and explicit
gradient-descent loops on the quadratic model (11.105), written out here with plain numpy.
``O(eps)`` pieces are isolated by antisymmetrizing in ``eps``; the truncation error of the
first-order formulas is checked to scale as ``eps^2`` (ratio ~4 when ``eps`` halves).
"""

import numpy as np
import pytest
from scipy.optimize import least_squares

import pdlt.learning as pl
from pdlt.learning import (
    effective_features,
    effective_kernel,
    meta_kernel,
    nearly_kernel_predict,
    nearly_kernel_predict_gd,
    quadratic_model_fit_direct,
    quadratic_model_predict,
    trained_kernel,
    trained_kernel_predict,
)

N_A, N_B, F, N_OUT = 5, 4, 24, 2
EPS = (0.02, 0.01)


def _model(seed=0, n_a=N_A, n_b=N_B, n_f=F, in_span=0):
    """Random features (bias column phi_0 = 1 included), symmetric meta features, targets.

    The last ``in_span`` test inputs get features that are affine combinations of the
    training features (they lie in the training span; meta features stay generic).
    """
    rng = np.random.default_rng(seed)
    n = n_a + n_b
    phi = rng.normal(size=(n, n_f)) / np.sqrt(n_f)
    phi[:, 0] = 1.0
    for r in range(n - in_span, n):
        c = rng.normal(size=n_a)
        c /= c.sum()
        phi[r] = c @ phi[:n_a]
    psi = rng.normal(size=(n, n_f, n_f)) / n_f
    psi = psi + psi.transpose(0, 2, 1)
    y = rng.normal(size=(n_a, N_OUT))
    return phi, psi, y


def _z(W, phi, psi, e):
    """The quadratic model (11.105), written out independently."""
    return phi @ W.T + 0.5 * e * np.einsum("ij,njk,ik->ni", W, psi, W)


def _phiE(Wi, phi, psi, e):
    """Effective features of one output component, (N, F)."""
    return phi + e * np.einsum("k,nkj->nj", Wi, psi)


def _ratio(r1, r2):
    return np.max(np.abs(r1)) / np.max(np.abs(r2))


# ---------------------------------------------------------------------------------------------


def test_meta_kernel_definition_and_symmetry():
    phi, psi, _ = _model(1, n_a=3, n_b=2, n_f=6)
    mu = meta_kernel(phi, psi, 0.3)
    n = phi.shape[0]
    expected = np.zeros((n, n, n))
    for d0 in range(n):
        for d1 in range(n):
            for d2 in range(n):
                expected[d0, d1, d2] = 0.3 * phi[d1] @ psi[d0] @ phi[d2]
    np.testing.assert_allclose(mu, expected, rtol=0, atol=1e-14)
    np.testing.assert_array_equal(mu, np.swapaxes(mu, 1, 2))


def test_direct_fit_matches_pseudoinverse_formulas():
    phi, psi, y = _model(2)
    eps = 0.05
    fit = quadratic_model_fit_direct(phi[:N_A], psi[:N_A], y, eps)
    assert fit.overparameterized and fit.W_F.shape == (N_OUT, F)
    pinv = np.linalg.pinv(phi[:N_A])  # (F, N_A): the a -> 0+ regulated M^{-1} Phi^T
    np.testing.assert_allclose(fit.W_F, (pinv @ y).T, atol=1e-10)
    c = np.einsum("ij,ajk,ik->ai", fit.W_F, psi[:N_A], fit.W_F)
    np.testing.assert_allclose(fit.W_I, -0.5 * eps * (pinv @ c).T, atol=1e-10)
    # (11.117): the free solution interpolates
    np.testing.assert_allclose(phi[:N_A] @ fit.W_F.T, y, atol=1e-10)


def test_feature_space_equals_kernel_space():
    """(11.119) second line == (11.132) identically (the dual rewriting is exact)."""
    phi, psi, y = _model(3)
    for eps in (0.1, -0.03):
        fit = quadratic_model_fit_direct(phi[:N_A], psi[:N_A], y, eps)
        zf = fit.predict(phi, psi, truncate=True)
        zk = nearly_kernel_predict(phi @ phi.T, meta_kernel(phi, psi, eps), y)
        np.testing.assert_allclose(zk, zf, rtol=0, atol=1e-10)
        # truncated vs full model at W*: differ only at O(eps^2)
        full = quadratic_model_predict(fit.W, phi, psi, eps)
        np.testing.assert_allclose(full, _z(fit.W, phi, psi, eps), atol=1e-13)


def test_training_residuals_are_order_eps_squared():
    phi, psi, y = _model(4)
    res = []
    for eps in EPS:
        fit = quadratic_model_fit_direct(phi[:N_A], psi[:N_A], y, eps)
        res.append(_z(fit.W, phi[:N_A], psi[:N_A], eps) - y)
        # the sample-space prediction is exact on training inputs
        zk = nearly_kernel_predict(phi @ phi.T, meta_kernel(phi, psi, eps), y)
        np.testing.assert_allclose(zk[:N_A], y, atol=1e-10)
    assert np.max(np.abs(res[0])) < 10 * EPS[0] ** 2
    assert 3.3 < _ratio(*res) < 4.7


def _gauss_newton(phi, psi, y, e, iters=40):
    """Minimize the MSE (11.109) from W = 0 by Gauss-Newton with minimum-norm steps."""
    W = np.zeros((y.shape[1], phi.shape[1]))
    for _ in range(iters):
        for i in range(y.shape[1]):
            r = _z(W, phi, psi, e)[:, i] - y[:, i]
            step = np.linalg.lstsq(_phiE(W[i], phi, psi, e), r, rcond=None)[0]
            W[i] -= step
    assert np.max(np.abs(_z(W, phi, psi, e) - y)) < 1e-12
    return W


def test_direct_solution_against_numerical_minimization():
    phi, psi, y = _model(5)
    k = phi @ phi.T
    full_res, anti_res = [], []
    for eps in EPS:
        zp, zm = (_z(_gauss_newton(phi[:N_A], psi[:N_A], y, e), phi, psi, e) for e in (eps, -eps))
        mu = meta_kernel(phi, psi, eps)
        z = nearly_kernel_predict(k, mu, y)
        z0 = nearly_kernel_predict(k, 0 * mu, y)
        full_res.append(zp - z)
        anti_res.append((zp - zm) / 2 - (z - z0))
        # O(eps) piece is genuinely present and captured
        assert np.max(np.abs(z - z0)) > 30 * np.max(np.abs(anti_res[-1]))
        # weights too: W* = W^F + W^I + O(eps^2)
        fit = quadratic_model_fit_direct(phi[:N_A], psi[:N_A], y, eps)
        W_gn = _gauss_newton(phi[:N_A], psi[:N_A], y, eps)
        assert np.max(np.abs(W_gn - fit.W)) < 20 * eps**2
    assert 3.3 < _ratio(*full_res) < 4.7
    assert 3.3 < _ratio(*anti_res) / 2 < 4.7  # antisymmetric residual is O(eps^3)


def _gd(phi, psi, y, e, eta, tol=1e-13, max_steps=20000):
    """Full-batch gradient descent on (11.109) from W = 0, lambda = I, to convergence."""
    W = np.zeros((y.shape[1], phi.shape[1]))
    for _ in range(max_steps):
        r = _z(W, phi, psi, e) - y  # (N_A, n_out)
        if np.max(np.abs(r)) < tol:
            return W
        grad = r.T @ phi + e * np.einsum("ai,ik,akj->ij", r, W, psi)
        W = W - eta * grad
    raise AssertionError("gradient descent did not converge")


@pytest.mark.parametrize("eta_frac", [0.5, 1.5])
def test_gd_variant_against_explicit_gradient_descent(eta_frac):
    phi, psi, y = _model(6)
    k = phi @ phi.T
    eta = eta_frac / np.linalg.eigvalsh(k[:N_A, :N_A])[-1]
    full_res, anti_res = [], []
    for eps in EPS:
        zp, zm = (_z(_gd(phi[:N_A], psi[:N_A], y, e, eta), phi, psi, e) for e in (eps, -eps))
        mu = meta_kernel(phi, psi, eps)
        z = nearly_kernel_predict_gd(k, mu, y, eta)
        z0 = nearly_kernel_predict_gd(k, 0 * mu, y, eta)
        full_res.append(zp - z)
        anti_res.append((zp - zm) / 2 - (z - z0))
        assert np.max(np.abs(z - z0)) > 30 * np.max(np.abs(anti_res[-1]))
        # algorithm dependence: GD differs from direct optimization at O(eps) off training
        zd = nearly_kernel_predict(k, mu, y)
        assert np.max(np.abs(zd[N_A:] - z[N_A:])) > 10 * np.max(np.abs(full_res[-1]))
        np.testing.assert_allclose(z[:N_A], y, atol=1e-10)
    assert 3.3 < _ratio(*full_res) < 4.7
    assert 3.3 < _ratio(*anti_res) / 2 < 4.7


def test_effective_kernel_against_explicit_effective_features():
    phi, psi, y = _model(7)
    k = phi @ phi.T
    res = []
    for eps in EPS:
        fit = quadratic_model_fit_direct(phi[:N_A], psi[:N_A], y, eps)
        kE = effective_kernel(k, meta_kernel(phi, psi, eps), y)
        assert kE.shape == (N_OUT, N_A + N_B, N_A + N_B)
        for i in range(N_OUT):
            # O(eps) part of phi^E(W^F) phi^E(W^F)^T, isolated exactly by antisymmetrizing
            kp, km = (_phiE(fit.W_F[i], phi, psi, e) for e in (eps, -eps))
            np.testing.assert_allclose(kE[i], k + (kp @ kp.T - km @ km.T) / 2, atol=1e-12)
        # at the actual optimum W*: equal up to O(eps^2)
        pE = effective_features(fit.W, phi, psi, eps)
        res.append(kE - np.einsum("nij,mij->inm", pE, pE))
    assert 3.3 < _ratio(*res) < 4.7
    kS = trained_kernel(k, meta_kernel(phi, psi, EPS[0]), y)
    kE = effective_kernel(k, meta_kernel(phi, psi, EPS[0]), y)
    np.testing.assert_allclose(kS, 0.5 * (k + kE), atol=1e-14)


def test_trained_kernel_predictor_erratum():
    """(11.142) = (11.132) on training inputs and in the training span, not in general."""
    n_span = 2
    phi, psi, y = _model(8, in_span=n_span)
    k = phi @ phi.T
    generic = slice(N_A, N_A + N_B - n_span)
    span = slice(N_A + N_B - n_span, N_A + N_B)
    span_diff, generic_diff, generic_res = [], [], []
    for eps in EPS:
        mu = meta_kernel(phi, psi, eps)
        zs = trained_kernel_predict(k, mu, y)
        zk = nearly_kernel_predict(k, mu, y)
        np.testing.assert_allclose(zs[:N_A], y, atol=1e-10)
        np.testing.assert_allclose(zk[:N_A], y, atol=1e-10)
        span_diff.append(zs[span] - zk[span])
        generic_diff.append(zs[generic] - zk[generic])
        # the first-order discrepancy predicted by expanding (k~#)^{-1} (spec/06 §6)
        u = np.linalg.solve(k[:N_A, :N_A], y)
        P = k[:, :N_A] @ np.linalg.inv(k[:N_A, :N_A])
        br = np.transpose(mu[:N_A, :, :N_A], (1, 0, 2)) - np.einsum(
            "dc,xcy->dxy", P, mu[:N_A, :N_A, :N_A]
        )
        pred = 0.5 * np.einsum("dxy,xi,yi->di", br, u, u)
        generic_res.append(zs[generic] - zk[generic] - pred[generic])
        np.testing.assert_allclose(pred[span], 0, atol=1e-12)
        np.testing.assert_allclose(pred[:N_A], 0, atol=1e-12)
    assert 3.3 < _ratio(*span_diff) < 4.7  # O(eps^2): agreement at the book's order
    assert 1.7 < _ratio(*generic_diff) < 2.3  # O(eps): the erratum
    assert np.max(np.abs(generic_diff[1])) > 10 * np.max(np.abs(span_diff[1]))
    assert 3.3 < _ratio(*generic_res) < 4.7


def test_underparameterized_fit_against_least_squares():
    phi, psi, y = _model(9, n_a=12, n_b=3, n_f=5)
    n_a = 12
    res = []
    for eps in EPS:
        fit = quadratic_model_fit_direct(phi[:n_a], psi[:n_a], y, eps)
        assert not fit.overparameterized
        W = np.zeros((N_OUT, phi.shape[1]))
        for i in range(N_OUT):
            sol = least_squares(
                lambda w, i=i, e=eps: _z(w[None], phi[:n_a], psi[:n_a], e)[:, 0] - y[:n_a, i],
                np.zeros(phi.shape[1]),
                jac=lambda w, e=eps: _phiE(w, phi[:n_a], psi[:n_a], e),
                xtol=1e-15,
                ftol=1e-15,
                gtol=1e-15,
            )
            W[i] = sol.x
        res.append(W - fit.W)
        assert np.max(np.abs(fit.W_I)) > 30 * np.max(np.abs(res[-1]))
    assert 3.3 < _ratio(*res) < 4.7


def test_validation_errors():
    phi, psi, y = _model(10, n_a=3, n_b=1, n_f=5)
    with pytest.raises(ValueError, match="symmetric"):
        quadratic_model_fit_direct(phi[:3], psi[:3] + np.triu(np.ones((5, 5)))[None], y, 0.1)
    with pytest.raises(ValueError, match="psi must have shape"):
        quadratic_model_fit_direct(phi[:3], psi[:2], y, 0.1)
    with pytest.raises(ValueError, match="phi must have shape"):
        meta_kernel(phi[0], psi, 0.1)
    with pytest.raises(ValueError, match="rows"):
        quadratic_model_fit_direct(phi[:3], psi[:3], y[:2], 0.1)
    with pytest.raises(ValueError, match="eps"):
        meta_kernel(phi, psi, np.nan)
    with pytest.raises(ValueError, match="W must have shape"):
        quadratic_model_predict(np.zeros((2, 4)), phi, psi, 0.1)
    k = phi @ phi.T
    mu = meta_kernel(phi, psi, 0.1)
    with pytest.raises(ValueError, match="mu must have shape"):
        nearly_kernel_predict(k, mu[:3], y)
    bad = mu.copy()
    bad[0, 1, 2] += 1.0
    with pytest.raises(ValueError, match="symmetric in its last two"):
        effective_kernel(k, bad, y)
    with pytest.raises(ValueError, match="square"):
        trained_kernel_predict(k[:2, :2], mu, y)
    with pytest.raises(ValueError, match="eta must satisfy"):
        nearly_kernel_predict_gd(k, mu, y, 10.0 / np.linalg.eigvalsh(k[:3, :3])[-1])
    for name in ("meta_kernel", "nearly_kernel_predict_gd", "trained_kernel_predict"):
        assert name in pl.__all__
