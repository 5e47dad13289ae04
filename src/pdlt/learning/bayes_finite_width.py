"""Bayesian inference at finite width to order 1/n (book §6.4; spec/04 §1.5-§1.7).

At finite width the output prior is no longer Gaussian: given the penultimate layer, the
``n_L`` output components are i.i.d. ``N(0, G^)`` over ``D = A ∪ B`` with the *stochastic
metric* ``G^ = G^(L)`` (4.69)-(4.70), whose fluctuation ``dG^ = G^ - G`` has covariance
``E[dG^_{d1d2} dG^_{d3d4}] = V^(L)_{(d1d2)(d3d4)} / n_{L-1}`` (4.76) and whose mean is
``G = K + G1 / n_{L-1}`` (NLO metric, (4.72)).  Conditioning on ``y_A`` is then exact given
``G^`` -- the Gaussian posterior of §6.3 with ``K -> G^`` -- and the finite-width posterior is
its average under the likelihood-reweighted distribution of ``G^`` (spec/04 §1.6, the
"delta-method" form equivalent to the Wick contractions (6.87)-(6.88)):

    E[F | y_A] = E[w(G^) F(G^)] / E[w(G^)],   w(G^) = prod_i N(y_{i;A}; 0, G^~ + s^2 I),

expanded to second order in ``dG^`` (third cumulants are O(1/n^2)):

    E[F | y_A] = F(K) + (1/n) [ DF . G1 + sum V_{(ab)(cd)} (W_ab D_cd F + 1/2 D_ab D_cd F) ]

with ``W = D log w = 1/2 (sum_i u_i u_i^T - n_L P)``, ``P = (K~ + s^2 I)^{-1}`` (the tilde
inverse, embedded in ``D``) and ``u_i = P y_{i;A}``.  Applied to ``F = m_{i;b}`` (the posterior
mean given ``G^``) this is the finite-width posterior mean: the ``W``-term is the *Hebbian*
coupling of the observed ``y`` to the metric (cf. (6.78)); since ``W`` contains ``sum_j u_j
u_j^T`` the prediction of component ``i`` depends on all the other components' targets --
the *wiring* of (6.88)-(6.89).  Applied to ``F = m_i m_j + delta_ij S`` it gives the posterior
covariance, which at finite width couples different output components.

With the derivatives taken analytically (``R = [-K_BA P | I_B]`` in ``D`` ordering,
``D_cd m_{i;b} = R_{bc} u_{i;d}``, ``D_ab R_{bc} = -R_{ba} P_{bc}``, ``D_cd S_{b b'} = R_{bc}
R_{b'd}``):

* mean: ``m1_{i;b} = (R G1 u_i)_b + sum V_{abcd} W_ab R_{bc} u_{i;d}
  - sum V_{abcd} R_{ba} P_{bc} u_{i;d}``;
* covariance: ``C1_{(b i)(b' j)} = delta_ij [R G1 R^T + sum V W_ab R_{bc} R_{b'd}
  + 1/2 sum V (D_ab D_cd S)] + sum V_{abcd} R_{ba} u_{i;b} R_{b'c} u_{j;d}``.

Representation learning (§6.4.3, (6.99)-(6.104)): the posterior shift of the penultimate
layer's metric is ``d̄G^_{d1d2} = (1/n) sum_{ab} V_{(d1d2)(ab)} W_ab`` and that of the hidden
kernel ``O = (1/n) sum_j sigma_{j;d1} sigma_{j;d2} = (G^ - C_b)/C_W`` is the same over ``C_W``
(6.104); at infinite width both vanish (6.69)-(6.71).

Noise: the uncertain hypothesis (6.10) adds ``s^2 I`` (``noise_var``) to the training block
(spec/04 erratum 1); the returned covariance is that of the latent outputs ``z_B``.

Layout as in :mod:`pdlt.learning.bayes`: kernels over ``D`` ordered training inputs first,
targets of shape ``(N_A, n_L)``, means of shape ``(N_B, n_L)``.  ``V`` is normalized as
:func:`pdlt.flow` returns it (``V^(L)`` with the ``1/n_{L-1}`` taken out).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..network import Inputs, Network
from .bayes import _check_noise, _kernel_blocks, _stack_inputs, as_targets
from .linalg import SPDSolver

__all__ = [
    "FiniteWidthPrediction",
    "finite_width_posterior",
    "bayes_predict_finite_width",
    "hebbian_conditional_variance",
    "representation_update",
    "bayes_representation_update",
]


@dataclass(frozen=True)
class FiniteWidthPrediction:
    """The posterior on the test inputs to order ``1/n_{L-1}``.

    Attributes
    ----------
    mean : ndarray, shape (N_B, n_L)
        ``E[z_{i;b} | y_A] = mean_inf + mean_1 / n`` (6.87)-(6.88).
    cov : ndarray, shape (N_B, n_L, N_B, n_L)
        ``Cov[z_{i;b}, z_{j;b'} | y_A] = delta_ij cov_inf + cov_1 / n``; the off-diagonal
        ``i != j`` blocks are the finite-width wiring.
    mean_inf : ndarray, shape (N_B, n_L)
        Infinite-width posterior mean (6.64).
    cov_inf : ndarray, shape (N_B, N_B)
        Infinite-width posterior covariance (6.57), the same for every component.
    mean_1 : ndarray, shape (N_B, n_L)
        Coefficient of ``1/n_{L-1}`` in the mean.
    cov_1 : ndarray, shape (N_B, n_L, N_B, n_L)
        Coefficient of ``1/n_{L-1}`` in the covariance.
    metric_shift_1 : ndarray, shape (N_D, N_D)
        Coefficient of ``1/n_{L-1}`` in the posterior shift of the stochastic metric
        ``G^(L)`` on ``D`` (6.99), (6.104) times ``C_W``.
    n : float
        The penultimate width ``n_{L-1}`` used (``inf`` gives the infinite-width posterior).
    meta : dict
    """

    mean: np.ndarray
    cov: np.ndarray
    mean_inf: np.ndarray
    cov_inf: np.ndarray
    mean_1: np.ndarray
    cov_1: np.ndarray
    metric_shift_1: np.ndarray
    n: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def var(self) -> np.ndarray:
        """Posterior variances ``Var[z_{i;b} | y_A]``, shape (N_B, n_L)."""
        nb, nl = self.mean.shape
        return np.einsum("bibi->bi", self.cov.reshape(nb, nl, nb, nl)).copy()

    @property
    def metric_shift(self) -> np.ndarray:
        """Posterior shift ``E_post[G^(L)] - E_prior[G^(L)]`` on ``D``, shape (N_D, N_D)."""
        return self.metric_shift_1 / self.n


def _check_width(n: float) -> float:
    v = float(n)
    if not (v > 0):
        raise ValueError(f"the penultimate width n_{{L-1}} must be positive, got {n!r}")
    return v


def _check_vertex(V: Any, N: int) -> np.ndarray:
    arr = np.asarray(V, dtype=np.float64)
    if arr.shape != (N, N, N, N):
        raise ValueError(f"V must have shape (N_D,)*4 = {(N,) * 4} to match K, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("V contains NaN or infinite entries")
    sym = max(
        float(np.max(np.abs(arr - arr.transpose(1, 0, 2, 3)))),
        float(np.max(np.abs(arr - arr.transpose(2, 3, 0, 1)))),
    )
    if sym > 1e-8 * max(float(np.max(np.abs(arr))), 1e-300):
        raise ValueError(
            "V must have the symmetries V_(ab)(cd) = V_(ba)(cd) = V_(cd)(ab) of the four-point "
            f"vertex (4.76); max violation {sym:.3g}"
        )
    return arr


def _check_matrix(G: Any, N: int, name: str) -> np.ndarray:
    arr = np.asarray(G, dtype=np.float64)
    if arr.shape != (N, N):
        raise ValueError(f"{name} must have shape {(N, N)} to match K, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite entries")
    return 0.5 * (arr + arr.T)


@dataclass
class _Pieces:
    """Derivative building blocks of the delta-method expansion, all in ``D`` ordering."""

    P: np.ndarray  # (N_D, N_D): (K~ + s^2 I)^{-1} on the AA block, zero elsewhere
    R: np.ndarray  # (N_B, N_D): [-K_BA P | I_B]
    u: np.ndarray  # (N_D, n_L): P y_i on A, zero on B
    W: np.ndarray  # (N_D, N_D): D log w = (u u^T - n_L P) / 2
    solver: SPDSolver


def _pieces(K: np.ndarray, y: np.ndarray, noise: float) -> _Pieces:
    na, N = y.shape[0], K.shape[0]
    KA, KBA, _ = _kernel_blocks(K, na, "K")
    solver = SPDSolver(KA, ridge=noise, name="K~ (training block of K^(L))")
    P = np.zeros((N, N))
    P[:na, :na] = solver.inverse()
    R = np.zeros((N - na, N))
    R[:, :na] = -solver.solve(KBA.T).T
    R[:, na:] = np.eye(N - na)
    u = np.zeros((N, y.shape[1]))
    u[:na] = solver.solve(y)
    W = 0.5 * (u @ u.T - y.shape[1] * P)
    return _Pieces(P, R, u, W, solver)


def finite_width_posterior(
    K: Any,
    V: Any,
    y_train: Any,
    n: float,
    G1: Any = None,
    noise_var: float = 0.0,
) -> FiniteWidthPrediction:
    """Posterior mean and covariance on the test inputs to order ``1/n`` (6.79)-(6.89).

    Parameters
    ----------
    K : array_like, shape (N_D, N_D)
        Output kernel ``K^(L)`` on ``D = A ∪ B``, training inputs first.
    V : array_like, shape (N_D, N_D, N_D, N_D)
        Output four-point vertex ``V^(L)_{(d1d2)(d3d4)}`` (normalized so that the metric
        fluctuations have covariance ``V / n``, (4.76)).
    y_train : array_like, shape (N_A, n_L) or (N_A,)
        Observed outputs.
    n : float
        Penultimate width ``n_{L-1}``.  ``numpy.inf`` returns the infinite-width posterior.
    G1 : array_like, shape (N_D, N_D), optional
        NLO metric: ``G^(L) = K + G1 / n`` (4.72).  Zero (the default) is exact for ``L = 2``.
    noise_var : float, default 0
        ``sigma_eps^2`` of the uncertain hypothesis (6.10), added to the training block.

    Returns
    -------
    FiniteWidthPrediction
        ``mean`` (N_B, n_L), ``cov`` (N_B, n_L, N_B, n_L), their infinite-width parts and
        ``1/n`` coefficients, and the posterior shift of the metric ``G^(L)`` (6.99).

    Notes
    -----
    The 1/n coefficient is the exact second-order expansion of ``E[w F]/E[w]`` over the
    metric fluctuations (spec/04 §1.6, "delta-method form"), which equals the Wick-contraction
    result (6.88) with the reconstructed quadratic coupling ``g`` (spec/04 erratum 3).
    """
    noise = _check_noise(noise_var)
    n = _check_width(n)
    K = np.asarray(K, dtype=np.float64)
    y = as_targets(y_train)
    _kernel_blocks(K, y.shape[0], "K")
    K = _check_matrix(K, K.shape[0], "K")
    N, na = K.shape[0], y.shape[0]
    V = _check_vertex(V, N)
    G1 = np.zeros((N, N)) if G1 is None else _check_matrix(G1, N, "G1")
    pc = _pieces(K, y, noise)
    P, R, u, W = pc.P, pc.R, pc.u, pc.W
    KBB = K[na:, na:]

    # infinite width (6.64), (6.57)
    mean_inf = K[na:, :na] @ u[:na]  # (N_B, n_L)
    cov_inf = KBB + R[:, :na] @ K[:na, na:]
    cov_inf = 0.5 * (cov_inf + cov_inf.T)

    # mean: D m . G1 + V (W D m) + 1/2 V D^2 m
    VW = np.einsum("abcd,ab->cd", V, W)  # Hebbian: the metric shift times n, (6.99)
    RVP = np.einsum("abcd,ea,bc->ed", V, R, P)  # (N_B, N_D): sum V_abcd R_ea P_bc
    mean_1 = R @ G1 @ u + R @ VW @ u - RVP @ u

    # covariance: delta_ij E_w[S] part + Cov_w(m_i, m_j)
    s1 = R @ G1 @ R.T + R @ VW @ R.T
    # 1/2 sum V_abcd D_ab D_cd S_ee',
    # D_ab D_cd S_ee' = -R_ea P_bc R_e'd - R_ec R_e'a P_bd
    t1 = np.einsum("abcd,ea,bc,fd->ef", V, R, P, R)
    t2 = np.einsum("abcd,ec,fa,bd->ef", V, R, R, P)
    s1 = s1 - 0.5 * (t1 + t2)
    s1 = 0.5 * (s1 + s1.T)
    # Cov_w(m_i, m_j) = sum V_abcd R_ea u_ib R_fc u_jd
    cm = np.einsum("abcd,ea,bi,fc,dj->eifj", V, R, u, R, u)
    nb, nl = mean_inf.shape
    eye = np.eye(nl)
    cov_1 = np.einsum("ef,ij->eifj", s1, eye) + cm
    cov_1 = 0.5 * (cov_1 + cov_1.transpose(2, 3, 0, 1))
    cov_inf_full = np.einsum("ef,ij->eifj", cov_inf, eye)

    inv_n = 0.0 if np.isinf(n) else 1.0 / n
    meta = {"noise_var": noise, "cond": pc.solver.cond, "solver": pc.solver.method}
    return FiniteWidthPrediction(
        mean=mean_inf + inv_n * mean_1,
        cov=cov_inf_full + inv_n * cov_1,
        mean_inf=mean_inf,
        cov_inf=cov_inf,
        mean_1=mean_1,
        cov_1=cov_1,
        metric_shift_1=0.5 * (VW + VW.T),
        n=n,
        meta=meta,
    )


def _network_fields(network: Network, x: np.ndarray) -> tuple[np.ndarray, ...]:
    from ..theory.flow import flow

    network.require_finite_width("the 1/n-corrected Bayesian posterior")
    f = flow(network, Inputs(x), fields=("K", "V", "G1"))
    n_prev = float(network.widths[-2])  # type: ignore[arg-type]
    return f["K"][-1], f["V"][-1], f["G1"][-1], n_prev  # type: ignore[return-value]


def bayes_predict_finite_width(
    network: Network, x_train: Any, y_train: Any, x_test: Any, noise_var: float = 0.0
) -> FiniteWidthPrediction:
    """Posterior of a finite-width ``network`` given ``(x_train, y_train)`` to order 1/n.

    ``K^(L)``, ``V^(L)`` and the NLO metric ``G1^(L)`` come from :func:`pdlt.flow`; the
    expansion parameter is the penultimate width ``n_{L-1}``.  See
    :func:`finite_width_posterior` for the formulas and the returned shapes.

    Parameters
    ----------
    network : Network
        Depth ``L >= 2`` with finite hidden widths.
    x_train : array_like, shape (N_A, n_0)
    y_train : array_like, shape (N_A, n_L) or (N_A,)
    x_test : array_like, shape (N_B, n_0)
    noise_var : float, default 0
    """
    if network.depth < 2:
        raise ValueError("a depth-1 network is a Gaussian process at any width: use bayes_predict")
    x, n_train = _stack_inputs(x_train, x_test)
    y = as_targets(y_train, n_train)
    if y.shape[1] != network.n_out:
        raise ValueError(
            f"y_train has {y.shape[1]} output columns, the network n_L = {network.n_out}"
        )
    K, V, G1, n_prev = _network_fields(network, x)
    pred = finite_width_posterior(K, V, y, n_prev, G1=G1, noise_var=noise_var)
    pred.meta["network"] = repr(network)
    return pred


def hebbian_conditional_variance(G: float, V: float, n: float, z1: Any) -> np.ndarray:
    """``E[z_2^2 | z_1 = z1]`` for two neurons of one layer, single input (6.77)-(6.78).

    ``E[z_2^2 | z_1] = G + (z1^2 - G) V / (2 n G^2) + O(1/n^2)``: observing a large ``|z_1|``
    raises the variance of the other neurons ("fire together, wire together").

    Parameters
    ----------
    G : float
        Metric ``G^(l)`` of the layer (``K^(l)`` at the order of the correction).
    V : float
        Single-input four-point vertex ``V^(l)`` (normalized by ``n_{l-1}``).
    n : float
        ``n_{l-1}``.
    z1 : float or array_like
        Observed value(s) of the first neuron.

    Returns
    -------
    ndarray, the shape of ``z1``.
    """
    G, V, n = float(G), float(V), _check_width(n)
    if not (G > 0) or not np.isfinite(G):
        raise ValueError(f"G must be a positive finite variance, got {G!r}")
    if not np.isfinite(V):
        raise ValueError(f"V must be finite, got {V!r}")
    z = np.asarray(z1, dtype=np.float64)
    return G + 0.5 * (z**2 - G) * V / (n * G**2)


def representation_update(
    K: Any, V: Any, y_train: Any, n: float, C_W: float = 1.0, noise_var: float = 0.0
) -> np.ndarray:
    """Posterior shift of the penultimate-layer kernel on ``D`` (6.99)-(6.104).

    For ``O = (1/n_{L-1}) sum_j sigma_{j;d1} sigma_{j;d2} = (G^(L)_{d1d2} - C_b) / C_W``,

    ``d̄O_{d1d2} = 1/(2 n C_W) sum_{a1..a4} V_{(d1d2)(a1a2)} K~^{a1a3} K~^{a2a4}
    sum_i (y_{i;a3} y_{i;a4} - K~_{a3a4})  + O(1/n^2)``  (6.104).

    Parameters
    ----------
    K : array_like, shape (N_D, N_D)
        Output kernel on ``D``, training inputs first (``D = A`` is allowed).
    V : array_like, shape (N_D, N_D, N_D, N_D)
    y_train : array_like, shape (N_A, n_L) or (N_A,)
    n : float
        Penultimate width ``n_{L-1}``.
    C_W : float, default 1
        ``C_W^(L)``; ``C_W = 1`` returns the shift of the metric ``G^(L)`` itself.
    noise_var : float, default 0
        Adds ``sigma_eps^2`` to ``K~`` (both in the inverse and in the subtracted ``K~``).

    Returns
    -------
    ndarray, shape (N_D, N_D)
        ``E_post[O] - E_prior[O]`` for every pair ``(d1, d2)``.
    """
    noise = _check_noise(noise_var)
    n = _check_width(n)
    if not (float(C_W) > 0):
        raise ValueError(f"C_W must be positive, got {C_W!r}")
    K = np.asarray(K, dtype=np.float64)
    y = as_targets(y_train)
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] < y.shape[0]:
        raise ValueError(
            f"K must be square (N_D, N_D) with the {y.shape[0]} training inputs first, "
            f"got shape {K.shape}"
        )
    K = _check_matrix(K, K.shape[0], "K")
    N, na = K.shape[0], y.shape[0]
    V = _check_vertex(V, N)
    solver = SPDSolver(K[:na, :na], ridge=noise, name="K~ (training block of K^(L))")
    P = np.zeros((N, N))
    P[:na, :na] = solver.inverse()
    u = np.zeros((N, y.shape[1]))
    u[:na] = solver.solve(y)
    W = 0.5 * (u @ u.T - y.shape[1] * P)
    out = np.einsum("abcd,cd->ab", V, W) / (n * float(C_W))
    return 0.5 * (out + out.T)


def bayes_representation_update(
    network: Network, x_train: Any, y_train: Any, x_test: Any = None, noise_var: float = 0.0
) -> np.ndarray:
    """Posterior shift of the penultimate-layer kernel ``(1/n) sum_j sigma_j sigma_j`` (6.104).

    Returns an (N_D, N_D) array over the training inputs followed by the (optional) test
    inputs; ``K^(L)``, ``V^(L)`` come from :func:`pdlt.flow` and ``C_W = C_W^(L)``.
    """
    if network.depth < 2:
        raise ValueError("representation learning needs a hidden layer: depth >= 2")
    xa = np.atleast_2d(np.asarray(x_train, dtype=np.float64))
    if x_test is None:
        x, n_train = xa, xa.shape[0]
    else:
        x, n_train = _stack_inputs(xa, x_test)
    y = as_targets(y_train, n_train)
    if y.shape[1] != network.n_out:
        raise ValueError(
            f"y_train has {y.shape[1]} output columns, the network n_L = {network.n_out}"
        )
    K, V, _, n_prev = _network_fields(network, x)
    C_W = float(network.C_W[network.depth - 1])  # leading order, as in (6.104)
    return representation_update(K, V, y, n_prev, C_W=C_W, noise_var=noise_var)
