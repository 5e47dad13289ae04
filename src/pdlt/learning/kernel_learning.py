"""Gradient-based learning at infinite width: kernel learning (book ch. 7, 10; spec/04 §2-§3).

At infinite width the NTK is frozen, ``H_{i1 i2; d1 d2} -> delta_{i1 i2} Theta^(L)_{d1 d2}``,
and a gradient step moves the outputs linearly (10.3): ``dz_{i;d} = -eta sum_a Theta_{d a}
eps_{i;a}``.  Consequences implemented here:

* small steps (10.3)-(10.6) and generalized MSE / Newton tensors (10.19)-(10.26):
  :func:`infinite_width_step`, :func:`infinite_width_training`;
* Newton's method (10.31) and algorithm independence (10.33)-(10.35): :func:`newton_step`
  maps the initial outputs to the fully-trained ones whatever optimizer ran before;
* the fully-trained prediction, mean (10.40) and covariance (10.41), and its value after
  ``t`` full-batch GD steps with MSE: :func:`kernel_prediction`, :func:`gd_predict`;
* Bayes = last-layer training (10.44)-(10.49): :func:`bayes_learning_rates`;
* generalization: bias-variance (10.52) :func:`bias_variance`; one training input and a nearby
  test input (10.56)-(10.65) :func:`one_train_one_test`; interpolation and extrapolation
  (10.99)-(10.117) :func:`star_polation`;
* linear models and kernel methods (10.118)-(10.141): :func:`linear_model_fit`,
  :func:`kernel_machine`.

Layout as in :mod:`pdlt.learning.bayes`: targets ``(N_A, n_L)``, kernels on ``D`` with the
training inputs first, outputs ``z`` of shape ``(..., N_D, n_L)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..network import Network
from .bayes import (
    Prediction,
    _check_noise,
    _kernel_blocks,
    _stack_inputs,
    as_targets,
)
from .linalg import SPDSolver

__all__ = [
    "error_factor",
    "infinite_width_step",
    "infinite_width_training",
    "newton_step",
    "gd_operator",
    "kernel_prediction",
    "gd_predict",
    "bayes_learning_rates",
    "bias_variance",
    "OneTrainOneTest",
    "one_train_one_test",
    "StarPolation",
    "star_polation",
    "linear_model_fit",
    "kernel_machine",
]

LOSSES = ("mse", "cross_entropy")


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def error_factor(z_train: np.ndarray, y_train: np.ndarray, loss: str = "mse") -> np.ndarray:
    """``eps_{i;a} = dL_A/dz_{i;a}`` for the extensive losses (7.15), (10.6).

    MSE: ``z - y``.  Cross-entropy with target distributions ``p = softmax(y)`` (10.37):
    ``softmax(z) - softmax(y)``; targets ``y`` are logits (per-sample shifts do not matter).

    Parameters
    ----------
    z_train, y_train : ndarray, shape (..., N_A, n_L)
    """
    if loss == "mse":
        return z_train - y_train
    if loss == "cross_entropy":
        return _softmax(z_train) - _softmax(y_train)
    raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")


def _check_theta(Theta: np.ndarray, n_train: int) -> np.ndarray:
    T = np.asarray(Theta, dtype=np.float64)
    if T.ndim != 2 or T.shape[0] != T.shape[1] or T.shape[0] < n_train:
        raise ValueError(
            f"Theta must be a square (N_D, N_D) kernel with the {n_train} training inputs first, "
            f"got shape {T.shape}"
        )
    if not np.all(np.isfinite(T)):
        raise ValueError("Theta contains NaN or infinite entries")
    return T


def _check_outputs(z: np.ndarray, n_data: int, n_out: int) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    if z.ndim < 2 or z.shape[-2:] != (n_data, n_out):
        raise ValueError(f"outputs must have shape (..., {n_data}, {n_out}), got {z.shape}")
    return z


def infinite_width_step(
    Theta: np.ndarray,
    z: np.ndarray,
    y_train: Any,
    eta: float,
    *,
    kappa: np.ndarray | None = None,
    loss: str = "mse",
) -> np.ndarray:
    """One gradient step of an infinite-width network in function space (10.3), (10.20).

    ``z_{i;d}(t+1) = z_{i;d}(t) - eta sum_{a1 a2} Theta_{d a1} kappa^{a1 a2} eps_{i;a2}``; exact
    at infinite width (the O(eta^2) terms are 1/n-suppressed, §10.1).  ``kappa`` is the
    generalized-MSE / Newton tensor (10.22); identity by default.  A mini-batch step (SGD,
    (7.10)) is a ``kappa`` projecting on the batch.

    Parameters
    ----------
    Theta : ndarray, shape (N_D, N_D)
        Frozen NTK ``Theta^(L)`` on ``D``, training inputs first.
    z : ndarray, shape (..., N_D, n_L)
        Current outputs on ``D``.
    y_train : array_like, shape (N_A, n_L)

    Returns
    -------
    ndarray, shape of ``z``
    """
    y = as_targets(y_train)
    n_A = y.shape[0]
    T = _check_theta(Theta, n_A)
    z = _check_outputs(z, T.shape[0], y.shape[1])
    eps = error_factor(z[..., :n_A, :], y, loss)
    if kappa is not None:
        kap = np.asarray(kappa, dtype=np.float64)
        if kap.shape != (n_A, n_A):
            raise ValueError(f"kappa must have shape ({n_A}, {n_A}), got {kap.shape}")
        eps = np.einsum("ab,...bi->...ai", kap, eps)
    return z - eta * np.einsum("da,...ai->...di", T[:, :n_A], eps)


def infinite_width_training(
    Theta: np.ndarray,
    z0: np.ndarray,
    y_train: Any,
    eta: float,
    steps: int,
    *,
    loss: str = "mse",
    batch_size: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """``steps`` steps of (mini-batch) gradient descent at infinite width, (10.3)/(7.10).

    Returns
    -------
    ndarray, shape of ``z0``
        Outputs on ``D`` after training.
    """
    y = as_targets(y_train)
    n_A = y.shape[0]
    if isinstance(steps, bool) or int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    rng = np.random.default_rng(seed)
    z = np.asarray(z0, dtype=np.float64)
    for _ in range(int(steps)):
        kappa = None
        if batch_size is not None and batch_size < n_A:
            kappa = np.zeros((n_A, n_A))
            idx = rng.choice(n_A, size=batch_size, replace=False)
            kappa[idx, idx] = 1.0
        z = infinite_width_step(Theta, z, y, eta, kappa=kappa, loss=loss)
    return z


def newton_step(Theta: np.ndarray, z: np.ndarray, y_train: Any) -> np.ndarray:
    """Newton's giant leap (10.31): the fully-trained outputs from the current ones.

    ``z_{i;d}(T) = z_{i;d} - sum_{a1 a2} Theta_{d a1} Theta~^{a1 a2} (z_{i;a2} - y_{i;a2})``.
    Applied to the outputs after *any* sequence of steps it gives the same result as applied
    to the initial ones (algorithm independence, (10.33)-(10.35)).

    Parameters
    ----------
    Theta : ndarray, shape (N_D, N_D)
    z : ndarray, shape (..., N_D, n_L)
    y_train : array_like, shape (N_A, n_L)
    """
    y = as_targets(y_train)
    n_A = y.shape[0]
    T = _check_theta(Theta, n_A)
    z = _check_outputs(z, T.shape[0], y.shape[1])
    solver = SPDSolver(T[:n_A, :n_A], name="Theta~ (training block of the NTK)")
    resid = np.moveaxis(z[..., :n_A, :] - y, -2, 0)  # (N_A, ..., n_L)
    shp = resid.shape
    coef = solver.solve(resid.reshape(n_A, -1)).reshape(shp)
    return z - np.moveaxis(np.tensordot(T[:, :n_A], coef, axes=(1, 0)), 0, -2)


def gd_operator(
    Theta_train: np.ndarray,
    eta: float | None = None,
    steps: int | None = None,
    *,
    ridge: float = 0.0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """``Theta~^{-1} [1 - (1 - eta Theta~)^t]``: what ``t`` MSE GD steps do to the residual.

    Full-batch GD at infinite width gives ``z_A(t) - y = (1 - eta Theta~)^t (z_A(0) - y)`` and
    ``z_d(t) = z_d(0) - Theta_{dA} O_t (z_A(0) - y)`` with ``O_t`` returned here; ``t -> inf``
    (``steps=None``) is ``Theta~^{-1}`` (10.39), for any ``0 < eta < 2/lambda_max``.  Computed in
    the eigenbasis, so it is finite even for a singular ``Theta~`` at finite ``t``.

    Returns
    -------
    O : ndarray, shape (N_A, N_A)
    info : dict
        ``cond``, ``solver``, ``eta``, ``steps``, ``lambda_max``.
    """
    solver = SPDSolver(Theta_train, ridge=ridge, name="Theta~ (training block of the NTK)")
    if eta is not None and (not np.isfinite(eta) or eta <= 0):
        raise ValueError(f"the learning rate eta must be finite and > 0, got {eta!r}")
    lam_max = float(np.linalg.eigvalsh(solver.matrix)[-1])
    if steps is None:
        if eta is not None and eta * lam_max >= 2:
            raise ValueError(
                f"gradient descent with eta = {eta:g} never converges: eta * lambda_max(Theta~) "
                f"= {eta * lam_max:.3g} >= 2; use eta < {2 / lam_max:.3g}"
            )
        info = {"cond": solver.cond, "solver": solver.method, "steps": None, "eta": eta}
        return solver.inverse(), info
    if isinstance(steps, bool) or int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer or None, got {steps!r}")
    if eta is None:
        raise ValueError("a finite number of steps needs the learning rate eta")
    w, u = np.linalg.eigh(solver.matrix)
    f = _gd_filter(np.clip(w, 0.0, None), float(eta), int(steps))
    if not np.all(np.isfinite(f)):
        raise FloatingPointError(
            f"gradient descent diverges: eta * lambda_max(Theta~) = {eta * lam_max:.3g} >= 2 "
            f"and {steps} steps overflow; use eta < {2 / lam_max:.3g}"
        )
    info = {
        "cond": solver.cond,
        "solver": "eigh",
        "eta": float(eta),
        "steps": int(steps),
        "lambda_max": lam_max,
    }
    return (u * f) @ u.T, info


def _gd_filter(w: np.ndarray, eta: float, steps: int) -> np.ndarray:
    """``(1 - (1 - eta w)^t)/w`` elementwise, with its limit ``eta t`` at ``w = 0``."""
    x = eta * w
    out = np.full_like(w, eta * steps)
    mid = (w > 0) & (x < 1)
    out[mid] = -np.expm1(steps * np.log1p(-x[mid])) / w[mid]
    big = (w > 0) & (x >= 1)
    with np.errstate(over="ignore", invalid="ignore"):
        out[big] = (1 - (1 - x[big]) ** steps) / w[big]
    return out


def kernel_prediction(
    Theta: np.ndarray,
    K: np.ndarray,
    y_train: Any,
    *,
    steps: int | None = None,
    eta: float | None = None,
    ridge: float = 0.0,
) -> Prediction:
    """Mean and covariance of trained infinite-width networks on the test inputs.

    End of training (``steps=None``), (10.40)-(10.41)::

        m_{i;b} = sum Theta_{b a1} Theta~^{a1 a2} y_{i;a2}
        Sigma = K_BB - M K_AB - K_BA M^T + M K~ M^T,   M = Theta_BA Theta~^{-1}

    After ``steps`` full-batch GD steps with the extensive MSE and rate ``eta`` the same with
    ``M = Theta_{BA} O_t`` (:func:`gd_operator`).  With ``Theta = K`` this is the Bayesian
    posterior (6.57), (6.64).

    Parameters
    ----------
    Theta, K : ndarray, shape (N_A + N_B, N_A + N_B)
        Frozen NTK and kernel of the output layer on ``D``, training inputs first.
    y_train : array_like, shape (N_A, n_L) or (N_A,)
    steps, eta : optional
        Number of GD steps and the global learning rate ``eta`` (steps use ``eta lambda``).
    ridge : float
        Added to ``Theta~`` (a stated regularization; default none).
    """
    _check_noise(ridge)
    y = as_targets(y_train)
    n_A = y.shape[0]
    TA, TBA, _ = _kernel_blocks(Theta, n_A, "Theta")
    KA, KBA, KBB = _kernel_blocks(K, n_A, "K")
    if TA.shape != KA.shape or np.asarray(Theta).shape != np.asarray(K).shape:
        raise ValueError("Theta and K must be kernels on the same inputs")
    O, info = gd_operator(TA, eta, steps, ridge=ridge)
    M = TBA @ O  # (N_B, N_A)
    mean = M @ y
    cov = KBB - M @ KBA.T - KBA @ M.T + M @ KA @ M.T
    cov = 0.5 * (cov + cov.T)
    return Prediction(mean, cov, "gd", info)


def gd_predict(
    network: Network,
    x_train: Any,
    y_train: Any,
    x_test: Any,
    *,
    steps: int | None = None,
    eta: float | None = None,
) -> Prediction:
    """Prediction of infinite-width ``network``s trained by GD on ``(x_train, y_train)``.

    Computes ``K^(L)`` and ``Theta^(L)`` on training and test inputs with :func:`pdlt.flow`
    and applies :func:`kernel_prediction`: fully trained (10.40)-(10.41) by default (any
    optimizer, algorithm independence (10.35)), or after ``steps`` steps of rate ``eta``.

    Examples
    --------
    >>> from pdlt import Network
    >>> net = Network("relu", depth=3)
    >>> p = gd_predict(net, [[1.0, 0.0]], [0.5], [[0.0, 1.0]])
    >>> round(float(p.mean[0, 0]), 4)
    0.2497
    """
    from ..theory.flow import flow

    x, n_train = _stack_inputs(x_train, x_test)
    y = as_targets(y_train, n_train)
    if y.shape[1] != network.n_out:
        raise ValueError(
            f"y_train has {y.shape[1]} output columns, the network n_L = {network.n_out}"
        )
    f = flow(network, x, fields=("K", "Theta"), layers=[-1])
    pred = kernel_prediction(f["Theta"][-1], f["K"][-1], y, steps=steps, eta=eta)
    pred.meta["network"] = repr(network)
    return pred


def bayes_learning_rates(network: Network) -> Network:
    """``network`` with the learning rates that make GD Bayesian (10.46)-(10.48).

    ``lambda_b^(L) = C_b^(L)``, ``lambda_W^(L) = C_W^(L)``, zero for ``l < L``: only the last
    layer trains, ``Theta^(L) = K^(L)`` exactly, and the trained ensemble is the posterior.
    """
    L = network.depth
    lb = np.zeros(L)
    lw = np.zeros(L)
    lb[-1], lw[-1] = network.C_b[-1], network.C_W[-1]
    return network.replace(lambda_b=lb, lambda_W=lw)


def bias_variance(prediction: Prediction, y_test: Any) -> dict[str, np.ndarray | float]:
    """Expected test MSE of the trained ensemble, split into bias and variance (10.52).

    ``E[L_B] = 1/2 sum_b [sum_i (m_{i;b} - y_{i;b})^2 + n_L Sigma_{bb}]``.

    Returns
    -------
    dict
        ``bias`` and ``variance`` per test input (shape (N_B,)), and their sums ``bias_total``,
        ``variance_total``, ``expected_loss``.
    """
    y = as_targets(y_test, prediction.mean.shape[0], "y_test")
    if y.shape != prediction.mean.shape:
        raise ValueError(f"y_test has shape {y.shape}, the prediction {prediction.mean.shape}")
    bias = 0.5 * np.sum((prediction.mean - y) ** 2, axis=1)
    var = 0.5 * prediction.n_out * np.diag(prediction.cov)
    return {
        "bias": bias,
        "variance": var,
        "bias_total": float(bias.sum()),
        "variance_total": float(var.sum()),
        "expected_loss": float(bias.sum() + var.sum()),
    }


@dataclass(frozen=True)
class OneTrainOneTest:
    """One training input ``x_+`` and one test input ``x_-``, per layer (10.56)-(10.65).

    Attributes (shape (L,))
    -----------------------
    robustness : ``Theta_{-+}/Theta_{++} - 1`` (10.57)
    variance : ``K_{--} - 2 r K_{-+} + r^2 K_{++}``, ``r = Theta_{-+}/Theta_{++}`` (10.63)
    bias : shape (L, n_L) or None, ``r y_+ - y_-`` (10.56)
    Theta, K : shape (L, 2, 2)
    """

    robustness: np.ndarray
    variance: np.ndarray
    bias: np.ndarray | None
    Theta: np.ndarray
    K: np.ndarray


def one_train_one_test(
    network: Network,
    x_plus: Any,
    x_minus: Any,
    y_plus: Any = None,
    y_minus: Any = None,
) -> OneTrainOneTest:
    """Generalization from one training input to one nearby test input, at every layer.

    Uses the exact two-input kernel and NTK from :func:`pdlt.flow`; the book's delta
    expansions (10.62)-(10.65) and criticality analysis (10.74)-(10.98) are its small-``dx``
    and large-depth limits.
    """
    from ..theory.flow import flow

    x = np.stack(
        [
            np.asarray(x_plus, dtype=np.float64).ravel(),
            np.asarray(x_minus, dtype=np.float64).ravel(),
        ]
    )
    f = flow(network, x, fields=("K", "Theta"))
    T, K = f["Theta"], f["K"]
    r = T[:, 1, 0] / T[:, 0, 0]
    var = K[:, 1, 1] - 2 * r * K[:, 1, 0] + r**2 * K[:, 0, 0]
    bias = None
    if y_plus is not None or y_minus is not None:
        if y_plus is None or y_minus is None:
            raise ValueError("give both y_plus and y_minus, or neither")
        yp = np.atleast_1d(np.asarray(y_plus, dtype=np.float64))
        ym = np.atleast_1d(np.asarray(y_minus, dtype=np.float64))
        if yp.shape != ym.shape or yp.ndim != 1:
            raise ValueError("y_plus and y_minus must be vectors of n_L outputs")
        bias = r[:, None] * yp - ym
    return OneTrainOneTest(r - 1.0, var, bias, T, K)


@dataclass(frozen=True)
class StarPolation:
    """Interpolation (``0 <= s <= 1``) and extrapolation from two training inputs (10.99).

    Attributes
    ----------
    s : ndarray, shape (S,)
    mean : ndarray, shape (S, n_L)
        Fully-trained mean at ``x_(2s-1) = s x_+ + (1-s) x_-``.
    variance : ndarray, shape (S,)
    linear : ndarray, shape (S, n_L)
        ``s y_+ + (1-s) y_-``, the deep-linear answer (10.104).
    """

    s: np.ndarray
    mean: np.ndarray
    variance: np.ndarray
    linear: np.ndarray


def star_polation(
    network: Network, x_plus: Any, x_minus: Any, y_plus: Any, y_minus: Any, s: Sequence[float]
) -> StarPolation:
    """Fully-trained predictions along the line through two training inputs (§10.3.2).

    Exact: (10.40)-(10.41) with the kernel and NTK on ``{x_+, x_-, x_(2s-1)}`` (spec/04 §3.8
    recommends this over the book's delta expansion (10.113)-(10.117), which has errata).
    """
    xp = np.asarray(x_plus, dtype=np.float64).ravel()
    xm = np.asarray(x_minus, dtype=np.float64).ravel()
    ss = np.atleast_1d(np.asarray(s, dtype=np.float64))
    if ss.ndim != 1 or not np.all(np.isfinite(ss)):
        raise ValueError("s must be a finite number or 1-D sequence")
    yp = np.atleast_1d(np.asarray(y_plus, dtype=np.float64))
    ym = np.atleast_1d(np.asarray(y_minus, dtype=np.float64))
    y = np.stack([yp, ym])
    xs = ss[:, None] * xp + (1 - ss[:, None]) * xm
    pred = gd_predict(network, np.stack([xp, xm]), y, xs)
    return StarPolation(
        ss, pred.mean, np.diag(pred.cov).copy(), ss[:, None] * yp + (1 - ss[:, None]) * ym
    )


def linear_model_fit(features: np.ndarray, y_train: Any, ridge: float = 0.0) -> np.ndarray:
    """Least-squares weights of the linear model (10.119)-(10.124).

    ``W* = (Phi^T Phi + 2a I)^{-1} Phi^T y`` with ``Phi`` of shape (N_A, n_f) (include a
    constant column for the bias, ``phi_0 = 1``); ``ridge = 2a`` (10.124).  Solved with
    :class:`SPDSolver` (pseudo-inverse = minimum-norm solution when ``ridge = 0`` and the
    model is overparameterized).

    Returns
    -------
    ndarray, shape (n_f, n_L)
    """
    Phi = np.asarray(features, dtype=np.float64)
    y = as_targets(y_train, Phi.shape[0] if Phi.ndim == 2 else None)
    if Phi.ndim != 2:
        raise ValueError(f"features must have shape (N_A, n_f), got {Phi.shape}")
    _check_noise(ridge)
    solver = SPDSolver(Phi.T @ Phi, ridge=ridge, name="feature matrix M (10.122)")
    return solver.solve(Phi.T @ y)


def kernel_machine(
    k_test_train: np.ndarray, k_train: np.ndarray, y_train: Any, ridge: float = 0.0
) -> np.ndarray:
    """Kernel-method prediction (10.132): ``k_{BA} (k~ + ridge I)^{-1} y``.

    Equal to the linear model's prediction with kernel ``k = Phi Phi^T`` (push-through identity;
    spec/04 erratum 10: exact for ``ridge > 0``, minimum-norm limit at ``ridge -> 0+``).

    Returns
    -------
    ndarray, shape (N_B, n_L)
    """
    y = as_targets(y_train)
    kBA = np.atleast_2d(np.asarray(k_test_train, dtype=np.float64))
    if kBA.shape[1] != y.shape[0]:
        raise ValueError(f"k_test_train has {kBA.shape[1]} columns, y_train {y.shape[0]} rows")
    _check_noise(ridge)
    solver = SPDSolver(k_train, ridge=ridge, name="k~ (training kernel)")
    return kBA @ solver.solve(y)
