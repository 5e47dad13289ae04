"""Bayesian inference at infinite width (book ch. 6, §6.2-§6.3; spec/04 §1).

At infinite width the prior over network outputs on a dataset ``D = A ∪ B`` is the Gaussian
(6.32) with covariance ``K = K^(L)`` on ``D``, independently for each of the ``n_L`` output
components.  Conditioning on observed outputs ``y_A`` on the training set ``A`` gives

* the posterior mean (6.64) ``m_{i;b} = sum K_{b a1} K~^{a1 a2} y_{i;a2}``,
* the posterior covariance (6.57) ``KK_{b1 b2} = K_{b1 b2} - sum K_{b1 a3} K~^{a3 a4}
  K_{a4 b2}``, the same for every output component (6.66)-(6.67): no wiring,
* the evidence (6.34) ``log p(y_A|H) = -(n_L/2) log det(2 pi K~) - 1/2 sum_i y_i^T K~^{-1}
  y_i``, whose comparison between hypotheses (6.30)-(6.31) prefers critical
  initializations (§6.3.1).

``K~^{a1 a2}`` is the inverse of the A-block (6.35), never a block of the inverse; it is
computed by :class:`~pdlt.learning.linalg.SPDSolver`.  With the uncertain hypothesis (6.10)
the A-block gains ``sigma_eps^2 I`` (independent noise per sample; spec/04 erratum 1 on
footnote 6, whose ``C_b`` shift would add the noise to every entry).

Layout: inputs one per row; targets ``y`` of shape ``(N_A, n_L)`` (a 1-D ``y`` is one output
component); kernels over ``D`` are ordered training inputs first, then test inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..network import Inputs, Network
from .linalg import SPDSolver

__all__ = [
    "Prediction",
    "as_targets",
    "block_inverse",
    "posterior",
    "bayes_predict",
    "log_evidence",
    "bayes_factor",
    "gamma_targets",
    "log_evidence_two_inputs",
    "evidence",
    "evidence_scan",
    "output_kernel",
]

_LOG_2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True)
class Prediction:
    """A Gaussian prediction of the network outputs on test inputs.

    Attributes
    ----------
    mean : ndarray, shape (N_B, n_L)
        Mean output ``m_{i;b}`` (row: test input, column: output component).
    cov : ndarray, shape (N_B, N_B)
        Covariance across test inputs, identical for every output component and zero between
        components (6.67), (10.41).
    kind : str
        ``"bayes"`` (posterior, ch. 6) or ``"gd"`` (trained ensemble, ch. 10).
    meta : dict
        How it was computed (condition number, steps, noise, ...).
    """

    mean: np.ndarray
    cov: np.ndarray
    kind: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def std(self) -> np.ndarray:
        """Standard deviation of each test output, shape (N_B,) (clipped at 0)."""
        return np.sqrt(np.clip(np.diag(self.cov), 0.0, None))

    @property
    def n_out(self) -> int:
        return self.mean.shape[1]

    def sample(self, size: int, seed: int | np.random.Generator = 0) -> np.ndarray:
        """Draws of the outputs, shape (size, N_B, n_L): ``mean + chol(cov) xi``.

        The covariance is factorized by its eigendecomposition (clipping round-off negative
        eigenvalues), so a rank-deficient covariance (e.g. a test input equal to a training
        input, whose posterior variance is 0) is handled.
        """
        rng = np.random.default_rng(seed)
        w, u = np.linalg.eigh(self.cov)
        root = u * np.sqrt(np.clip(w, 0.0, None))
        xi = rng.standard_normal((int(size), self.cov.shape[0], self.n_out))
        return self.mean + np.einsum("bk,skj->sbj", root, xi)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable: mean, cov, std, kind, meta."""
        return {
            "kind": self.kind,
            "mean": self.mean.tolist(),
            "cov": self.cov.tolist(),
            "std": self.std.tolist(),
            "meta": {k: _plain(v) for k, v in self.meta.items()},
        }

    def __repr__(self) -> str:
        return (
            f"Prediction(kind={self.kind!r}, N_B={self.mean.shape[0]}, n_L={self.n_out}, "
            f"mean={np.array2string(self.mean, precision=4, threshold=6)}, "
            f"std={np.array2string(self.std, precision=4, threshold=6)})"
        )


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def as_targets(y: Any, n_train: int | None = None, name: str = "y") -> np.ndarray:
    """Targets as a float64 array of shape (N_A, n_L); a 1-D array is one output component."""
    arr = np.asarray(y, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N_A,) or (N_A, n_L), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if n_train is not None and arr.shape[0] != n_train:
        raise ValueError(f"{name} has {arr.shape[0]} rows but there are {n_train} training inputs")
    return arr


def _kernel_blocks(
    K: np.ndarray, n_train: int, name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split a kernel on ``D`` (training first) into the A, BA and BB blocks."""
    K = np.asarray(K, dtype=np.float64)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"{name} must be a square (N_D, N_D) matrix, got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise ValueError(f"{name} contains NaN or infinite entries")
    if not 0 < n_train < K.shape[0]:
        raise ValueError(
            f"{name} is {K.shape[0]}x{K.shape[0]}: it needs the {n_train} training inputs "
            "first and at least one test input after them"
        )
    return K[:n_train, :n_train], K[n_train:, :n_train], K[n_train:, n_train:]


def _check_noise(noise_var: float) -> float:
    v = float(noise_var)
    if not np.isfinite(v) or v < 0:
        raise ValueError(f"noise_var (sigma_eps^2) must be finite and >= 0, got {noise_var!r}")
    return v


def block_inverse(K: np.ndarray, n_train: int) -> dict[str, np.ndarray]:
    """Blocks of the inverse of the full kernel on ``D`` by (6.53)-(6.56).

    ``K^{AA} = K~^{-1} + K~^{-1} K_AB KK^{-1} K_BA K~^{-1}`` (6.53), ``K^{AB} = -K~^{-1} K_AB
    KK^{-1}`` (6.54), ``K^{BB} = KK^{-1}`` (6.56) with ``KK`` the posterior covariance (6.57).
    A check of the tilde convention: ``K^{AA}`` differs from ``K~^{-1}``.

    Returns
    -------
    dict with keys ``"AA"``, ``"AB"``, ``"BA"``, ``"BB"``.
    """
    KA, KBA, KBB = _kernel_blocks(K, n_train, "K")
    sa = SPDSolver(KA, name="K~ (training block)")
    KAinv_KAB = sa.solve(KBA.T)
    post = KBB - KBA @ KAinv_KAB
    sb = SPDSolver(0.5 * (post + post.T), name="posterior covariance (6.57)")
    KKinv = sb.inverse()
    aa = sa.inverse() + KAinv_KAB @ KKinv @ KAinv_KAB.T
    ab = -KAinv_KAB @ KKinv
    return {"AA": aa, "AB": ab, "BA": ab.T, "BB": KKinv}


def posterior(K: np.ndarray, y_train: Any, noise_var: float = 0.0) -> Prediction:
    """Infinite-width Bayesian posterior on the test inputs (6.57), (6.64), (6.66).

    Parameters
    ----------
    K : ndarray, shape (N_A + N_B, N_A + N_B)
        Output kernel ``K^(L)`` on ``D``, training inputs first.
    y_train : array_like, shape (N_A, n_L) or (N_A,)
        Observed outputs ``y_{i;a}``.
    noise_var : float, default 0
        ``sigma_eps^2`` of the uncertain hypothesis (6.10), added to the training block.

    Returns
    -------
    Prediction
        ``mean`` (6.64) of shape (N_B, n_L); ``cov`` (6.57) of the latent outputs ``z_B``
        (add ``noise_var I`` for noisy observations of them).
    """
    noise = _check_noise(noise_var)
    y = as_targets(y_train)
    KA, KBA, KBB = _kernel_blocks(K, y.shape[0], "K")
    solver = SPDSolver(KA, ridge=noise, name="K~ (training block of K^(L))")
    proj = solver.solve(KBA.T).T  # K_BA K~^{-1}, shape (N_B, N_A)
    mean = proj @ y  # (6.64)
    cov = KBB - proj @ KBA.T  # (6.57)
    cov = 0.5 * (cov + cov.T)
    meta = {"noise_var": noise, "cond": solver.cond, "solver": solver.method}
    return Prediction(mean, cov, "bayes", meta)


def output_kernel(network: Network, x: Any, field_name: str = "K") -> np.ndarray:
    """``K^(L)`` (or ``Theta^(L)``) of ``network`` on the rows of ``x``, shape (N, N)."""
    from ..theory.flow import flow

    inp = x if isinstance(x, Inputs) else Inputs(np.asarray(x, dtype=np.float64))
    return flow(network, inp, fields=(field_name,), layers=[-1])[field_name][-1]


def _stack_inputs(x_train: Any, x_test: Any) -> tuple[np.ndarray, int]:
    xa = np.atleast_2d(np.asarray(x_train, dtype=np.float64))
    xb = np.atleast_2d(np.asarray(x_test, dtype=np.float64))
    if xa.ndim != 2 or xb.ndim != 2 or xa.shape[1] != xb.shape[1]:
        raise ValueError(
            f"training inputs {xa.shape} and test inputs {xb.shape} must be (N, n_0) tables "
            "with the same n_0"
        )
    return np.concatenate([xa, xb]), xa.shape[0]


def bayes_predict(
    network: Network, x_train: Any, y_train: Any, x_test: Any, noise_var: float = 0.0
) -> Prediction:
    """Posterior of an infinite-width ``network`` given ``(x_train, y_train)`` (6.64), (6.57).

    Examples
    --------
    >>> import numpy as np
    >>> from pdlt import Network
    >>> net = Network("relu", depth=3)
    >>> p = bayes_predict(net, [[1.0, 0.0]], [0.5], [[1.0, 0.0], [0.0, 1.0]])
    >>> p.mean.round(4).ravel().tolist(), p.std.round(4).tolist()
    ([0.5, 0.2469], [0.0, 0.8696])
    """
    x, n_train = _stack_inputs(x_train, x_test)
    y = as_targets(y_train, n_train)
    if y.shape[1] != network.n_out:
        raise ValueError(
            f"y_train has {y.shape[1]} output columns, the network n_L = {network.n_out}"
        )
    K = output_kernel(network, x)
    pred = posterior(K, y, noise_var)
    pred.meta["network"] = repr(network)
    return pred


def log_evidence(
    K_train: np.ndarray, y_train: Any, noise_var: float = 0.0, shared_noise: bool = False
) -> float:
    """Log evidence ``log p(y_A|H)`` at infinite width (6.34).

    ``-(n_L/2) log det(2 pi K~) - (1/2) sum_i y_i^T K~^{-1} y_i``.

    Parameters
    ----------
    K_train : ndarray, shape (N_A, N_A)
        ``K~ = K^(L)`` on the training inputs.
    y_train : array_like, shape (N_A, n_L) or (N_A,)
    noise_var : float
        ``sigma_eps^2`` (6.10); added to the diagonal, or to every entry with
        ``shared_noise=True`` (the book's footnote 6 ``C_b`` shift, spec/04 erratum 1).

    Raises
    ------
    ValueError
        If ``K~`` (plus noise) is singular to working precision: the evidence of exactly
        degenerate outputs is not a finite density (give ``noise_var > 0``).
    """
    noise = _check_noise(noise_var)
    y = as_targets(y_train)
    KA = np.asarray(K_train, dtype=np.float64)
    if KA.shape != (y.shape[0], y.shape[0]):
        raise ValueError(f"K_train has shape {KA.shape}, expected ({y.shape[0]}, {y.shape[0]})")
    if shared_noise:
        KA, noise = KA + noise, 0.0
    solver = SPDSolver(KA, ridge=noise, name="K~ (training block of K^(L))")
    n_A, n_L = y.shape
    logdet = solver.logdet()
    quad = float(np.trace(solver.quad(y)))
    return -0.5 * n_L * (n_A * _LOG_2PI + logdet) - 0.5 * quad


def bayes_factor(
    K1_train: np.ndarray, K2_train: np.ndarray, y_train: Any, noise_var: float = 0.0
) -> float:
    """``log p(y|H1) - log p(y|H2)`` (6.30)-(6.31), uniform prior over the two hypotheses."""
    return log_evidence(K1_train, y_train, noise_var) - log_evidence(K2_train, y_train, noise_var)


def gamma_targets(y_plus: Any, y_minus: Any) -> tuple[float, float, float]:
    """``(Y_[0], Y_[1], Y_[2])`` of two observed outputs (6.44), (6.47).

    ``Y_[0] = sum_i ((y+ + y-)/2)^2``, ``Y_[1] = (sum_i y+^2 - sum_i y-^2)/2``,
    ``Y_[2] = sum_i ((y+ - y-)/2)^2``.
    """
    yp = np.atleast_1d(np.asarray(y_plus, dtype=np.float64))
    ym = np.atleast_1d(np.asarray(y_minus, dtype=np.float64))
    if yp.shape != ym.shape or yp.ndim != 1:
        raise ValueError("y_plus and y_minus must be vectors of n_L outputs of the same length")
    return (
        float(np.sum(((yp + ym) / 2) ** 2)),
        float((np.sum(yp**2) - np.sum(ym**2)) / 2),
        float(np.sum(((yp - ym) / 2) ** 2)),
    )


def log_evidence_two_inputs(K_gamma: Sequence[float], y_plus: Any, y_minus: Any) -> float:
    """Two-input log evidence in the gamma basis (6.48) (equal norms: (6.45) with K_[1] = 0).

    ``p = [4 pi^2 (4 K0 K2 - K1^2)]^{-n_L/2} exp[-(4 K0 Y2 + 4 K2 Y0 - 2 K1 Y1) /
    (2 (4 K0 K2 - K1^2))]``.

    Parameters
    ----------
    K_gamma : (K_[0], K_[1], K_[2])
        Gamma components of the 2x2 training kernel (5.17)-(5.19).
    """
    K0, K1, K2 = (float(v) for v in K_gamma)
    Y0, Y1, Y2 = gamma_targets(y_plus, y_minus)
    n_L = np.atleast_1d(np.asarray(y_plus)).size
    det = 4 * K0 * K2 - K1**2
    if not det > 0:
        raise ValueError(
            f"the 2x2 kernel must be positive definite: 4 K_[0] K_[2] - K_[1]^2 = {det:.3g}"
        )
    return -0.5 * n_L * np.log(4 * np.pi**2 * det) - (4 * K0 * Y2 + 4 * K2 * Y0 - 2 * K1 * Y1) / (
        2 * det
    )


def evidence(network: Network, x_train: Any, y_train: Any, noise_var: float = 0.0) -> float:
    """Log evidence (6.34) of the hypothesis ``network`` for the data ``(x_train, y_train)``."""
    x = np.atleast_2d(np.asarray(x_train, dtype=np.float64))
    y = as_targets(y_train, x.shape[0])
    if y.shape[1] != network.n_out:
        raise ValueError(
            f"y_train has {y.shape[1]} output columns, the network n_L = {network.n_out}"
        )
    return log_evidence(output_kernel(network, x), y, noise_var)


def evidence_scan(
    network: Network,
    x_train: Any,
    y_train: Any,
    C_b: Sequence[float],
    C_W: Sequence[float],
    noise_var: float = 0.0,
) -> np.ndarray:
    """Log evidence over a grid of initialization hyperparameters (§6.3.1).

    Each grid point is ``network`` with the same ``C_b`` and ``C_W`` in every layer.  For deep
    networks the evidence is suppressed wherever the output kernel vanishes or blows up
    (single input, (6.36)-(6.39)) or its ``K_[2]`` component does (two inputs, (6.45)): the
    data prefer criticality.

    Returns
    -------
    ndarray, shape (len(C_b), len(C_W))
        ``-inf`` where the kernel is degenerate (e.g. ``K_[2] -> 0`` to machine precision).
    """
    cbs = np.atleast_1d(np.asarray(C_b, dtype=np.float64))
    cws = np.atleast_1d(np.asarray(C_W, dtype=np.float64))
    if cbs.ndim != 1 or cws.ndim != 1 or cbs.size == 0 or cws.size == 0:
        raise ValueError("C_b and C_W must be non-empty 1-D grids")
    out = np.empty((cbs.size, cws.size))
    for i, cb in enumerate(cbs):
        for j, cw in enumerate(cws):
            net = network.replace(C_b=float(cb), C_W=float(cw))
            try:
                out[i, j] = evidence(net, x_train, y_train, noise_var)
            except ValueError as exc:
                if "singular" not in str(exc):
                    raise
                out[i, j] = -np.inf
    return out
