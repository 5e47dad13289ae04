"""Information in deep learning: entropy, mutual information, optimal aspect ratio (Appendix A).

Book Appendix A (L39474-L41424); spec/08 §2.  Logs are natural (nats).

Discrete distributions (§A.1)
    :func:`entropy` (A.1), :func:`cross_entropy` and :func:`kl_divergence` (A.12),
    :func:`mutual_information` (A.14), :func:`tripartite_information` (A.24), on arrays of
    probabilities (one axis per variable).
Infinite width (§A.2)
    :func:`gaussian_entropy` (A.26), :func:`gaussian_mutual_information` (A.27)-(A.28),
    :func:`input_pair_information` (A.28), :func:`gamma_pair_information` (A.29) and
    :func:`input_information_flow`, the information-theoretic view of criticality: the mutual
    information of one neuron's preactivations for two inputs, layer by layer.
Finite width (§A.3)
    With the normalized vertex ``w = V^(l) / (n_{l-1} G^(l)^2)`` (:func:`normalized_vertex`)
    and the variational couplings (:func:`running_couplings`, (A.47)-(A.63)):
    :func:`nearly_gaussian_entropy` (A.52)/(A.66), :func:`nearly_gaussian_mutual_information`
    (A.53)/(A.67), :func:`nearly_gaussian_tripartite_information` (A.75), and
    :func:`network_information`, which evaluates them on a network's computed ``K, V, G1``.
Optimal aspect ratio (A.68)-(A.74)
    :func:`vertex_growth` computes ``nu`` in ``w^(L) = nu r`` (A.68) for any critical activation
    by iterating the single-input recursions (5.109); :func:`optimal_aspect_ratio` gives
    ``r* = 4 / ((20 + 3 m1 + 3 m2) nu)`` (A.72)/(A.73) and the maximal information (A.74);
    :func:`information_curve` / :func:`plot_information_curve` the objective (A.71) against
    ``r``; :func:`recommend_architectures` (depth, width) pairs for a parameter budget;
    :func:`aspect_ratio_summary` / :func:`format_aspect_ratio` the same for the command line.

Caveat (spec/08 §2.6): ``r*`` maximizes the series (A.71) truncated at ``r^3``; it is the book's
estimate of where the effective theory stops being weakly coupled, not the maximum of the exact
mutual information (which, for the scale-invariant class, keeps growing with ``r``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from .activations import Activation, activation
from .network import Network
from .theory.criticality import criticality
from .theory.flow import flow
from .theory.kernel import gamma_components, helpers, kernel_step
from .theory.residual import residual_vertex, sigma_squared_modes

__all__ = [
    "entropy",
    "cross_entropy",
    "kl_divergence",
    "mutual_information",
    "tripartite_information",
    "gaussian_entropy",
    "gaussian_mutual_information",
    "input_pair_information",
    "gamma_pair_information",
    "InputInformation",
    "input_information_flow",
    "normalized_vertex",
    "running_couplings",
    "nearly_gaussian_entropy",
    "nearly_gaussian_mutual_information",
    "nearly_gaussian_tripartite_information",
    "NetworkInformation",
    "network_information",
    "VertexGrowth",
    "vertex_growth",
    "OptimalAspectRatio",
    "optimal_aspect_ratio",
    "InformationCurve",
    "information_curve",
    "plot_information_curve",
    "Architecture",
    "recommend_architectures",
    "aspect_ratio_summary",
    "format_aspect_ratio",
]


# --------------------------------------------------------------------------------------------
# Discrete distributions (§A.1)
# --------------------------------------------------------------------------------------------


def _distribution(p: Any, name: str = "p", ndim: int | None = None) -> np.ndarray:
    """``p`` as a float64 array of probabilities: finite, non-negative, summing to 1."""
    arr = np.asarray(p, dtype=np.float64)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} axes (one per variable), got shape {arr.shape}")
    if arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must be a non-empty array of finite probabilities >= 0")
    total = float(arr.sum())
    if abs(total - 1.0) > 1e-9:
        raise ValueError(f"{name} must sum to 1, got {total:.12g}")
    return arr


def _plogq(p: np.ndarray, q: np.ndarray) -> float:
    """``sum p log q`` with ``0 log q = 0``; ``-inf`` where ``q = 0 < p``."""
    support = p > 0
    if np.any(q[support] == 0):
        return -math.inf
    return float(np.sum(p[support] * np.log(q[support])))


def entropy(p: Any) -> float:
    """Shannon entropy ``S[p] = -sum_x p(x) log p(x)`` in nats (A.1); ``0 log 0 = 0``.

    ``p`` is an array of probabilities of any shape (a joint distribution over its axes).

    Examples
    --------
    >>> round(entropy([0.25, 0.25, 0.25, 0.25]), 6)  # uniform: log |X| (A.3)
    1.386294
    """
    arr = _distribution(p)
    return -_plogq(arr, arr)


def cross_entropy(p: Any, q: Any) -> float:
    """``S[p, q] = -sum_x p(x) log q(x)`` (A.12); ``inf`` where ``q = 0 < p``."""
    a, b = _distribution(p, "p"), _distribution(q, "q")
    if a.shape != b.shape:
        raise ValueError(f"p and q must have the same shape, got {a.shape} and {b.shape}")
    return -_plogq(a, b)


def kl_divergence(p: Any, q: Any) -> float:
    """``KL[p || q] = sum_x p log(p/q) = S[p, q] - S[p] >= 0`` (A.12)-(A.13), in nats."""
    a, b = _distribution(p, "p"), _distribution(q, "q")
    if a.shape != b.shape:
        raise ValueError(f"p and q must have the same shape, got {a.shape} and {b.shape}")
    cross = _plogq(a, b)
    if cross == -math.inf:
        return math.inf
    support = a > 0
    return float(np.sum(a[support] * (np.log(a[support]) - np.log(b[support]))))


def _marginal(p: np.ndarray, keep: Sequence[int]) -> np.ndarray:
    return p.sum(axis=tuple(i for i in range(p.ndim) if i not in keep))


def mutual_information(pxy: Any) -> float:
    """``I[p(x, y)] = S[p(x)] + S[p(y)] - S[p(x, y)] = KL[p(x,y) || p(x) p(y)]`` (A.14).

    Parameters
    ----------
    pxy : array_like, shape (|X|, |Y|)
        Joint probabilities.

    Examples
    --------
    >>> mutual_information([[0.5, 0.0], [0.0, 0.5]]) == math.log(2)  # a copied fair bit
    True
    """
    p = _distribution(pxy, "pxy", 2)
    return kl_divergence(p, np.multiply.outer(_marginal(p, [0]), _marginal(p, [1])))


def tripartite_information(pxyz: Any) -> float:
    """``I_3 = S_x + S_y + S_z - S_xy - S_yz - S_zx + S_xyz`` (A.24): ``I[x:y] - I[x:y | z]``.

    Symmetric in the three variables; positive for redundant, negative for synergistic
    information (e.g. ``z = x XOR y`` gives ``-log 2``).

    Parameters
    ----------
    pxyz : array_like, shape (|X|, |Y|, |Z|)
    """
    p = _distribution(pxyz, "pxyz", 3)
    S = {keep: entropy(_marginal(p, keep)) for keep in ((0,), (1,), (2,), (0, 1), (1, 2), (0, 2))}
    return S[(0,)] + S[(1,)] + S[(2,)] - S[(0, 1)] - S[(1, 2)] - S[(0, 2)] + entropy(p)


# --------------------------------------------------------------------------------------------
# Infinite width (§A.2)
# --------------------------------------------------------------------------------------------


def _covariance(K: Any, name: str = "K") -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.ndim < 2 or K.shape[-1] != K.shape[-2]:
        raise ValueError(f"{name} must be a square matrix (or a stack of them), got {K.shape}")
    if not np.all(np.isfinite(K)):
        raise ValueError(f"{name} must be finite")
    return K


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _logdet(K: np.ndarray, name: str = "K") -> np.ndarray:
    sign, logdet = np.linalg.slogdet(K)
    if np.any(sign <= 0):
        raise ValueError(f"{name} must be positive definite (a Gaussian covariance)")
    return logdet


def gaussian_entropy(K: Any, *, m: int = 1) -> np.ndarray | float:
    """Entropy of ``m`` independent neurons with Gaussian covariance ``K`` over samples (A.26).

    ``S = (m/2) log |2 pi e K|``: extensive in ``m`` (infinite-width neurons do not interact).

    Parameters
    ----------
    K : array_like, shape (..., N, N)
        Kernel over the ``N`` samples (positive definite).
    m : int
        Number of neurons.

    Returns
    -------
    float or ndarray, shape (...)
    """
    K = _covariance(K)
    m = _positive_int(m, "m")
    out = 0.5 * m * _logdet(2.0 * np.pi * np.e * K)
    return float(out) if out.ndim == 0 else out


def gaussian_mutual_information(
    K: Any, *, a: Sequence[int], b: Sequence[int], m: int = 1
) -> np.ndarray | float:
    """Mutual information between the preactivations on two disjoint sets of samples (A.28).

    ``I = (m/2) [log|K_AA| + log|K_BB| - log|K_{A+B}|]`` for ``m`` neurons (each contributes
    independently at infinite width).  Between different neurons it is zero (A.27).

    Parameters
    ----------
    K : array_like, shape (..., N, N)
    a, b : sequences of int
        Disjoint sample indices.
    m : int
        Number of neurons.
    """
    K = _covariance(K)
    m = _positive_int(m, "m")
    ia, ib = [int(i) for i in a], [int(i) for i in b]
    N = K.shape[-1]
    if not ia or not ib or set(ia) & set(ib) or any(not 0 <= i < N for i in ia + ib):
        raise ValueError(
            f"a and b must be non-empty, disjoint sets of sample indices in 0..{N - 1}, "
            f"got a={ia}, b={ib}"
        )
    ab = ia + ib
    out = (
        0.5
        * m
        * (
            _logdet(K[..., ia, :][..., :, ia])
            + _logdet(K[..., ib, :][..., :, ib])
            - _logdet(K[..., ab, :][..., :, ab])
        )
    )
    return float(out) if out.ndim == 0 else out


def input_pair_information(K: Any) -> np.ndarray | float:
    """``I[p(z_+, z_-)] = (1/2) log[K_++ K_-- / (K_++ K_-- - K_+-^2)]`` for one neuron (A.28).

    Parameters
    ----------
    K : array_like, shape (..., 2, 2)
        Kernels of two inputs ordered ``(+, -)``.

    Returns
    -------
    float or ndarray, shape (...)
        ``-(1/2) log(1 - rho^2)`` with ``rho`` the correlation; ``inf`` for parallel inputs.
    """
    K = _covariance(K)
    if K.shape[-2:] != (2, 2):
        raise ValueError(f"input_pair_information needs 2x2 kernels, got shape {K.shape}")
    pp, mm, pm = K[..., 0, 0], K[..., 1, 1], K[..., 0, 1]
    if np.any(pp <= 0) or np.any(mm <= 0) or np.any(pm**2 > pp * mm):
        raise ValueError("K must be positive semi-definite with positive diagonal")
    with np.errstate(divide="ignore"):
        out = -0.5 * np.log1p(-(pm**2) / (pp * mm))
    return float(out) if out.ndim == 0 else out


def gamma_pair_information(K0: Any, K2: Any) -> np.ndarray | float:
    """(A.29): the pair information of equal-norm inputs in the gamma basis (5.17)-(5.19).

    ``I = (1/2) log[(1 + K_[2]/K_[0])^2 / (4 K_[2]/K_[0])]``; infinite as ``K_[2]/K_[0] -> 0``
    (the inputs' preactivations coincide), zero at ``K_[2] = K_[0]`` (``K_+- = 0``).

    Parameters
    ----------
    K0, K2 : array_like
        ``K_[0] > 0`` and ``0 <= K_[2]``, broadcast against each other.
    """
    K0, K2 = np.asarray(K0, dtype=np.float64), np.asarray(K2, dtype=np.float64)
    if np.any(K0 <= 0) or np.any(K2 < 0):
        raise ValueError("need K_[0] > 0 and K_[2] >= 0")
    t = K2 / K0
    with np.errstate(divide="ignore"):
        out = 0.5 * (2.0 * np.log1p(t) - np.log(4.0 * t))
    return float(out) if out.ndim == 0 else out


@dataclass(frozen=True)
class InputInformation:
    """Pair information of two inputs for one neuron, layer by layer (A.28).

    Attributes
    ----------
    ell : ndarray, shape (L,)
        Layers ``1..L``.
    I : ndarray, shape (L,)
        ``I[p(z_+^(l), z_-^(l))]`` in nats (A.28).
    K2_over_K0 : ndarray, shape (L,)
        ``K_[2]/K_[0]`` (5.17)-(5.19), the ratio (A.29) depends on for equal-norm inputs.
    chi_perp : ndarray, shape (L,)
        ``chi_perp`` at the first input's ``K^(l)_{++}`` (5.51): ``< 1`` ordered (``I`` grows
        without bound), ``> 1`` chaotic (``I`` decays), ``= 1`` critical.
    """

    ell: np.ndarray
    I: np.ndarray  # noqa: E741 - the book's symbol
    K2_over_K0: np.ndarray
    chi_perp: np.ndarray

    def __repr__(self) -> str:
        return (
            f"InputInformation(L={len(self.ell)}, I[1]={self.I[0]:.4g}, I[L]={self.I[-1]:.4g}, "
            f"K2/K0[L]={self.K2_over_K0[-1]:.4g}, chi_perp[L]={self.chi_perp[-1]:.4g})"
        )


def input_information_flow(network: Network, inputs: Any) -> InputInformation:
    """The infinite-width criticality argument of §A.2 (L40141-L40170), computed.

    For two inputs the mutual information (A.28) between one neuron's preactivations is a
    function of ``K_[2]/K_[0]`` alone (A.29): too large a ratio (chaotic, ``chi_perp > 1``) makes
    the two inputs' representations independent, too small (ordered, ``chi_perp < 1``) makes
    them indistinguishable, exponentially fast in depth.  Only at criticality
    (``chi_par = chi_perp = 1``) does the information change slowly (as a power of ``l``).

    Parameters
    ----------
    network : Network
    inputs : array_like, shape (2, n_0), or Inputs
        The two inputs ``x_+``, ``x_-``.
    """
    f = flow(network, inputs, fields=("K", "chi_perp"))
    K = f["K"]
    if K.shape[1] != 2:
        raise ValueError(f"input_information_flow needs exactly two inputs, got {K.shape[1]}")
    gam = gamma_components(K)
    return InputInformation(
        ell=np.arange(1, K.shape[0] + 1),
        I=np.asarray(input_pair_information(K)),
        K2_over_K0=gam[:, 2] / gam[:, 0],
        chi_perp=f["chi_perp"][:, 0],
    )


# --------------------------------------------------------------------------------------------
# Finite width (§A.3): nearly-Gaussian entropy and information
# --------------------------------------------------------------------------------------------


def normalized_vertex(V: Any, G: Any, n: Any) -> np.ndarray | float:
    """``w = V / (n G^2)`` (A.53), the expansion parameter of §A.3 (O(l/n) at criticality).

    Parameters
    ----------
    V, G, n : array_like
        Four-point vertex ``V^(l)``, metric ``G^(l)`` and width ``n_{l-1}``, broadcast together.
    """
    V, G, n = (np.asarray(x, dtype=np.float64) for x in (V, G, n))
    if np.any(G <= 0) or np.any(n <= 0):
        raise ValueError("need G > 0 and n > 0")
    out = V / (n * G**2)
    return float(out) if out.ndim == 0 else out


def _order(order: int) -> int:
    if order not in (2, 3):
        raise ValueError(f"order must be 2 (leading, O(1/n^2)) or 3 (next, O(1/n^3)), got {order}")
    return order


def running_couplings(
    m: int, *, G: Any, V_over_n: Any, u: Any = 0.0, order: int = 3
) -> tuple[Any, Any]:
    """Couplings ``(g_m, v_m)`` of the variational action of ``m`` neurons (A.47)-(A.63).

    The action ``S = (g_m/2) sum z_i^2 - (v_m/8) (sum z_i^2)^2 + (u_m/24) (sum z_i^2)^3``
    whose two-point function is ``G`` and whose connected four-point function is ``V/n``
    (A.35)-(A.36).  Leading order (A.47)-(A.48) (= (4.102)-(4.103)):
    ``g_m = 1/G + (m+2)/2 V/(n G^3)``, ``v_m = V/(n G^4)``; next order (A.63), (A.59):
    ``v_m = V/(n G^4) - (m+8)/2 (V/(n G^3))^2 + (m+4) u_m G`` and
    ``g_m = 1/G + (m+2)/2 v_m G - (m+2)(m+4)/4 u_m G^2 + (m+2)/2 v_m^2 G^3``.

    Parameters
    ----------
    m : int
    G, V_over_n : array_like
        Metric and ``V/n`` of the layer.
    u : array_like
        Sextic coupling ``u_m = O(1/n^2)`` (next order only; it cancels from the entropy
        differences, footnote 24).
    order : {2, 3}
        2: errors ``O(1/n^2)``; 3: errors ``O(1/n^3)``.

    Returns
    -------
    (g_m, v_m)
    """
    m = _positive_int(m, "m")
    G, Vn, u = (np.asarray(x, dtype=np.float64) for x in (G, V_over_n, u))
    if np.any(G <= 0):
        raise ValueError("the metric G must be positive")
    if _order(order) == 2:
        v = Vn / G**4
        g = 1.0 / G + 0.5 * (m + 2) * Vn / G**3
    else:
        v = Vn / G**4 - 0.5 * (m + 8) * (Vn / G**3) ** 2 + (m + 4) * u * G
        g = 1.0 / G + 0.5 * (m + 2) * (v * G + v * v * G**3) - 0.25 * (m + 2) * (m + 4) * u * G**2
    return (float(g), float(v)) if g.ndim == 0 else (g, v)


def nearly_gaussian_entropy(m: int, *, G: Any, w: Any, order: int = 3) -> np.ndarray | float:
    """Entropy of ``m`` neurons of a finite-width layer for one input (A.52), (A.66).

    ``S = (m/2) log(2 pi e G) - (m^2 + 2m)/16 w^2 [+ (m^3 + 10 m^2 + 16 m)/48 w^3]``, with
    ``G`` the exact metric and ``w`` the normalized vertex: the Gaussian value minus a
    correction that is not extensive in ``m`` (the neurons interact).

    Parameters
    ----------
    m : int
    G, w : array_like
        Metric ``G^(l) > 0`` and normalized vertex ``V^(l)/(n_{l-1} G^2)``.
    order : {2, 3}
        Keep terms through ``w^2`` (A.52) or ``w^3`` (A.66).
    """
    m = _positive_int(m, "m")
    G, w = np.asarray(G, dtype=np.float64), np.asarray(w, dtype=np.float64)
    if np.any(G <= 0):
        raise ValueError("the metric G must be positive")
    out = 0.5 * m * np.log(2.0 * np.pi * np.e * G) - (m * m + 2 * m) / 16.0 * w**2
    if _order(order) == 3:
        out = out + (m**3 + 10 * m * m + 16 * m) / 48.0 * w**3
    return float(out) if out.ndim == 0 else out


def nearly_gaussian_mutual_information(
    m1: int, m2: int, *, w: Any, order: int = 3
) -> np.ndarray | float:
    """Mutual information between disjoint groups of ``m1`` and ``m2`` neurons (A.53), (A.67).

    ``I = (m1 m2/8) w^2 [- m1 m2 (20 + 3 m1 + 3 m2)/48 w^3]``; zero at infinite width (A.27).

    Parameters
    ----------
    m1, m2 : int
    w : array_like
        Normalized vertex of the layer.
    order : {2, 3}
    """
    m1, m2 = _positive_int(m1, "m1"), _positive_int(m2, "m2")
    w = np.asarray(w, dtype=np.float64)
    out = m1 * m2 / 8.0 * w**2
    if _order(order) == 3:
        out = out - m1 * m2 * (20 + 3 * m1 + 3 * m2) / 48.0 * w**3
    return float(out) if out.ndim == 0 else out


def nearly_gaussian_tripartite_information(m1: int, m2: int, m3: int, *, w: Any) -> Any:
    """Tripartite information of three disjoint groups of neurons (A.75): ``m1 m2 m3 w^3/8``.

    Positive: groups of neurons in one layer carry redundant information.  Leading order;
    the error is ``O(w^4)``.
    """
    m = [_positive_int(x, name) for x, name in ((m1, "m1"), (m2, "m2"), (m3, "m3"))]
    w = np.asarray(w, dtype=np.float64)
    out = m[0] * m[1] * m[2] / 8.0 * w**3
    return float(out) if out.ndim == 0 else out


@dataclass(frozen=True)
class NetworkInformation:
    """Finite-width information of a network's layers for one input (§A.3).

    Attributes (each shape (L,), layer ``l`` at index ``l - 1``)
    ----------------------------------------------------------
    G : metric ``K + G{1}/n_{l-1}`` (4.104)
    w : normalized vertex ``V/(n_{l-1} G^2)`` (A.53); zero in the Gaussian first layer
    entropy : entropy of the ``m1 + m2`` neurons (A.66)
    I : mutual information of the ``m1`` and ``m2`` neurons, through ``w^3`` (A.67)
    I_leading : through ``w^2`` (A.53)
    m1, m2 : int
    """

    G: np.ndarray
    w: np.ndarray
    entropy: np.ndarray
    I: np.ndarray  # noqa: E741 - the book's symbol
    I_leading: np.ndarray
    m1: int
    m2: int

    def __repr__(self) -> str:
        return (
            f"NetworkInformation(L={len(self.w)}, m1={self.m1}, m2={self.m2}, "
            f"w[L]={self.w[-1]:.4g}, I[L]={self.I[-1]:.4g} nats, "
            f"I_leading[L]={self.I_leading[-1]:.4g})"
        )


def network_information(
    network: Network,
    *,
    k1: float | None = None,
    inputs: Any = None,
    m1: int | None = None,
    m2: int | None = None,
) -> NetworkInformation:
    """Entropy and mutual information of a finite-width network's layers, from its flow.

    Computes ``K``, ``V`` (4.119) and ``G{1}`` (4.115) with :func:`pdlt.flow` and evaluates
    (A.53), (A.66), (A.67) per layer.  The formulas need the *exact* ``G`` and ``V``; the flow
    gives ``V`` at leading order, so the ``w^3`` terms are indicative beyond ``O(1/n^2)``
    (spec/08 §2.4).

    Parameters
    ----------
    network : Network
        Finite hidden widths.
    k1, inputs :
        One input, as ``K^(1)`` or as an input row (see :func:`pdlt.flow`); default ``k1 = 1``.
    m1, m2 : int, optional
        Group sizes; default the output layer split in halves, ``m1 = n_L // 2``,
        ``m2 = n_L - m1`` (needs ``n_L >= 2``), as in (A.73).
    """
    widths = network.require_finite_width("network_information")
    if m1 is None and m2 is None:
        if network.n_out < 2:
            raise ValueError(
                "the output layer has one neuron, so it cannot be split; give m1 and m2"
            )
        m1 = network.n_out // 2
        m2 = network.n_out - m1
    if m1 is None or m2 is None:
        raise ValueError("give both m1 and m2, or neither (split the output layer)")
    m1, m2 = _positive_int(m1, "m1"), _positive_int(m2, "m2")
    if inputs is None and k1 is None:
        k1 = 1.0
    f = flow(network, inputs, k1=k1, fields=("K", "V", "G1"))
    if f["K"].shape[1] != 1:
        raise ValueError("network_information uses a single input")
    K, V, G1 = f.single("K"), f.single("V"), f.single("G1")
    n_prev = np.array([float(f.inputs.n_in), *(float(n) for n in widths)])  # n_{l-1}
    G = K + G1 / n_prev
    w = np.asarray(normalized_vertex(V, G, n_prev))
    return NetworkInformation(
        G=G,
        w=w,
        entropy=np.asarray(nearly_gaussian_entropy(m1 + m2, G=G, w=w)),
        I=np.asarray(nearly_gaussian_mutual_information(m1, m2, w=w)),
        I_leading=np.asarray(nearly_gaussian_mutual_information(m1, m2, w=w, order=2)),
        m1=m1,
        m2=m2,
    )


# --------------------------------------------------------------------------------------------
# The coefficient nu of w^(L) = nu r (A.68)-(A.70)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VertexGrowth:
    """``nu``: the growth rate of the normalized vertex at criticality, ``w^(l) ~ nu l/n`` (A.68).

    Attributes
    ----------
    activation, universality_class : str
    nu : float
        From iterating the single-input recursions (5.109) at criticality: the slope of
        ``V^(l)/K^(l)^2`` in ``l``, Richardson-extrapolated from depths ``d..2d`` and
        ``2d..4d`` (removes the ``O(1/l)`` approach of the K*=0 class).
    nu_error : float
        ``|nu - raw slope over 2d..4d|``, an upper estimate of the error.
    nu_class : float or None
        The universality-class value: ``3 A_4/A_2^2 - 1`` (A.70) (scale-invariant), ``2/3``
        (A.69) (K*=0); ``None`` for half-stable activations (no closed form in the book).
    K1 : float
        First-layer kernel the recursion started from (``K*`` for half-stable activations,
        where the kernel then stays at the fixed point).
    depth : int
        ``4 d``, the deepest layer iterated.
    note : str
    """

    activation: str
    universality_class: str
    nu: float
    nu_error: float
    nu_class: float | None
    K1: float
    depth: int
    note: str = ""

    def __repr__(self) -> str:
        cls = "" if self.nu_class is None else f", nu_class={self.nu_class:.6g}"
        return (
            f"VertexGrowth({self.activation!r}, {self.universality_class!r}, "
            f"nu={self.nu:.6g} ± {self.nu_error:.1g}{cls}, K1={self.K1:.6g}, depth={self.depth})"
        )


_HALF_STABLE_NOTE = (
    "half-stable: started at K^(1) = K*, the kernel stays at the fixed point and "
    "V = (l - 1) s_V(K*) grows like a scale-invariant network's; started elsewhere on the "
    "attracted side, after l ~ 1/|a1_tilde Delta K| layers (10^4-10^6 here) V/K^2 grows "
    "five times slower, nu/5 (spec/03 §8)"
)


def vertex_growth(
    act: str | Activation, *, k1: float = 1.0, segment: int | None = None, gamma: float = 0.0
) -> VertexGrowth:
    """``nu`` of (A.68) for any critical activation, from the recursions (5.108)-(5.109).

    Iterates ``K' = C_b + C_W <sigma^2>_K`` and ``V' = chi_par(K)^2 V + s_V(K)``, ``V^(1) = 0``,
    at the activation's critical ``(C_b, C_W)`` (:func:`pdlt.criticality`), with every
    Gaussian integral done by the engine, and measures the slope of ``V/K^2``.  This
    reproduces ``nu = 3 A_4/A_2^2 - 1`` (A.70) and ``nu = 2/3`` (A.69) without using them, and
    gives ``nu`` for activations the book does not treat.

    Parameters
    ----------
    act : str or Activation
    k1 : float
        ``K^(1)`` (ignored for half-stable activations, which start at ``K*``); ``nu`` does not
        depend on it for the scale-invariant and K*=0 classes.
    segment : int, optional
        ``d``; the recursion runs to ``4 d``.  Default 128 for the K*=0 class (accuracy
        ~5e-5), 4 otherwise (where ``V/K^2`` is exactly linear); for a residual network at
        least the ``log(1e-7)/log(gamma)`` layers its Hermite modes take to settle.
    gamma : float
        Residual strength ``0 <= gamma^2 < 1`` of every layer after the first (appendix B):
        the recursion is then the corrected residual one (:mod:`pdlt.theory.residual`) at the
        residual critical point ``(1 - gamma^2) (C_b*, C_W*)`` (B.19), and ``nu_class`` is the
        K*=0 class's ``(2/3)(1 - gamma^4)`` (B.35) or the scale-invariant class's
        ``C_W^2 sum_a c_a (1 + gamma^a)/(1 - gamma^a)`` (spec/08 §3.4.3; the book's (B.29)
        misses the odd modes).

    Raises
    ------
    ValueError
        If the activation has no criticality (class ``"none"``).
    """
    act = activation(act)
    if not (isinstance(k1, int | float) and math.isfinite(k1) and k1 > 0):
        raise ValueError(f"k1 must be a positive number, got {k1!r}")
    if segment is not None and (
        isinstance(segment, bool) or int(segment) != segment or segment < 1
    ):
        raise ValueError(f"segment must be a positive integer, got {segment!r}")
    if not (isinstance(gamma, int | float) and math.isfinite(gamma) and gamma**2 < 1):
        raise ValueError(f"gamma must be a number with 0 <= gamma^2 < 1, got {gamma!r}")
    return _vertex_growth(
        act, float(k1), None if segment is None else int(segment), abs(float(gamma))
    )


@lru_cache(maxsize=64)
def _vertex_growth(
    act: Activation, k1: float, segment: int | None, gamma: float = 0.0
) -> VertexGrowth:
    if gamma:
        return _residual_vertex_growth(act, k1, segment, gamma)
    crit = criticality(act)
    cls = crit.universality_class
    if cls == "none" or crit.C_b is None or crit.C_W is None:
        raise ValueError(
            f"{act.name!r} has no critical initialization ({crit.reason}), so the optimal "
            "aspect ratio (A.72) is not defined"
        )
    d = segment if segment is not None else (128 if cls == "K*=0" else 4)
    K1 = crit.K_star if cls == "half-stable" and crit.K_star else k1
    L = 4 * d
    K = np.empty(L)
    K[0] = K1
    for ell in range(1, L):
        K[ell] = kernel_step(act, K[ell - 1 : ell].reshape(1, 1), crit.C_b, crit.C_W)[0, 0]
    hp = helpers(act, K, crit.C_W)
    V = np.zeros(L)
    for ell in range(1, L):
        V[ell] = hp.chi_par[ell - 1] ** 2 * V[ell - 1] + hp.s_V[ell - 1]
    nu, err = _slope_extrapolated(V / K**2, d)  # index l - 1 holds layer l
    nu_class = crit.exponents.get("V_over_nK2")
    return VertexGrowth(
        activation=act.name,
        universality_class=cls,
        nu=nu,
        nu_error=err,
        nu_class=None if nu_class is None else float(nu_class),
        K1=float(K1),
        depth=L,
        note=_HALF_STABLE_NOTE if cls == "half-stable" else crit.reason,
    )


def _slope_extrapolated(ratio: np.ndarray, d: int) -> tuple[float, float]:
    """``nu`` and its error from ``V/K^2`` (index ``l - 1``) over depths ``d..2d..4d``."""

    def slope(a: int) -> float:
        return float((ratio[2 * a - 1] - ratio[a - 1]) / a)

    s1, s2 = slope(d), slope(2 * d)
    return 2.0 * s2 - s1, abs(s1 - s2)


def _residual_vertex_growth(
    act: Activation, k1: float, segment: int | None, gamma: float
) -> VertexGrowth:
    """:func:`vertex_growth` for a residual network (appendix B, spec/08 §3.4.3)."""
    crit = criticality(act)
    cls = crit.universality_class
    if cls not in ("scale-invariant", "K*=0") or crit.C_b is None or crit.C_W is None:
        raise ValueError(
            f"{act.name!r} ({cls}): the residual nu(gamma) is defined here for the "
            "scale-invariant and K*=0 classes (appendix B)"
        )
    settle = math.ceil(math.log(1e-7) / math.log(gamma))
    d = max(segment if segment is not None else (128 if cls == "K*=0" else 4), settle)
    L = 4 * d
    C_b, C_W = (1 - gamma**2) * crit.C_b, (1 - gamma**2) * crit.C_W
    K = np.empty(L)
    K[0] = k1
    for ell in range(1, L):
        K[ell] = kernel_step(act, K[ell - 1 : ell].reshape(1, 1), C_b, C_W)[0, 0]
        K[ell] += gamma**2 * K[ell - 1]
    gam = np.r_[0.0, np.full(L - 1, gamma)]
    V = residual_vertex(act, K, np.r_[crit.C_W, np.full(L - 1, C_W)], gam)
    nu, err = _slope_extrapolated(V / K**2, d)
    if cls == "K*=0":
        nu_class = 2.0 / 3.0 * (1 - gamma**4)  # (B.35)
    else:
        # nu_true = C_W^2 sum_a c_a (1 + gamma^a)/(1 - gamma^a) at K = 1 (spec/08 §3.4.3)
        #         = C_W^2 [Var sigma^2 + 2 sum_a c_a gamma^a/(1 - gamma^a)], the first term
        # exact, the second geometric in a (c_a = h_a^2)
        h = sigma_squared_modes(act, np.array([1.0]))[0]
        a = np.arange(1, h.size)
        var = float(helpers(act, 1.0, C_W).s_V)  # C_W^2 (<sigma^4> - <sigma^2>^2)
        nu_class = var + 2 * C_W**2 * float(np.sum(h[1:] ** 2 * gamma**a / (1 - gamma**a)))
    c = crit.exponents.get("V_over_nK2")
    book = (
        ""
        if cls == "K*=0" or c is None
        else (
            f"; the book's (B.29) gives {(1 - gamma**2) * ((1 - gamma**2) * c + 4 * gamma**2):.6g}"
        )
    )
    return VertexGrowth(
        activation=act.name,
        universality_class=cls,
        nu=nu,
        nu_error=err,
        nu_class=nu_class,
        K1=float(k1),
        depth=L,
        note=f"residual, gamma^2 = {gamma**2:.6g} (corrected recursion, spec/08 §3.4.3){book}",
    )


# --------------------------------------------------------------------------------------------
# Optimal aspect ratio (A.71)-(A.74)
# --------------------------------------------------------------------------------------------


def _groups(n_out: int | None, m1: int | None, m2: int | None) -> tuple[int, int]:
    """``(m1, m2)`` from an output width (halves, (A.73)) or given explicitly (A.72)."""
    if m1 is not None or m2 is not None:
        if n_out is not None or m1 is None or m2 is None:
            raise ValueError("give either n_out, or both m1 and m2")
        return _positive_int(m1, "m1"), _positive_int(m2, "m2")
    n = _positive_int(2 if n_out is None else n_out, "n_out")
    if n < 2:
        raise ValueError(
            "n_out must be >= 2: (A.73) splits the output layer into two groups of neurons"
        )
    return n // 2, n - n // 2


def _nu(
    act: str | Activation | None, nu: float | None, gamma: float = 0.0
) -> tuple[float, VertexGrowth | None]:
    if (act is None) == (nu is None):
        raise ValueError("give an activation or nu (not both)")
    if nu is not None:
        if not (isinstance(nu, int | float) and math.isfinite(nu) and nu > 0):
            raise ValueError(f"nu must be a positive number, got {nu!r}")
        return float(nu), None
    growth = vertex_growth(act, gamma=gamma)  # type: ignore[arg-type]
    return growth.nu, growth


def _objective(x: Any, m1: int, m2: int, order: int = 3) -> Any:
    """(A.71) as a function of ``x = nu r``."""
    return nearly_gaussian_mutual_information(m1, m2, w=x, order=order)


@dataclass(frozen=True)
class OptimalAspectRatio:
    """The optimal aspect ratio ``r* = L/n`` of (A.72)-(A.73) and what it is derived from.

    Attributes
    ----------
    nu : float
        ``w^(L) = nu r`` (A.68); see :class:`VertexGrowth`.
    m1, m2 : int
        Sizes of the two groups of output neurons (``n_L/2`` each in (A.73)).
    r_star : float
        ``4 / ((20 + 3 m1 + 3 m2) nu)`` (A.72).
    x_star : float
        ``nu r* = 4/(20 + 3 m1 + 3 m2)``, the normalized vertex at the optimum; the estimate is
        self-consistent only while this is small (footnote 27).
    I_star : float
        The maximal mutual information ``(m1 m2/24) x*^2`` (A.74), independent of ``nu``.
    c2, c3 : float
        ``I = c2 (nu r)^2 - c3 (nu r)^3`` (A.71): ``m1 m2/8`` and ``m1 m2 (20+3m1+3m2)/48``.
    r_star_consistent : float or None
        Scale-invariant class only: ``4/((14 + 3 m1 + 3 m2) nu)``, the maximizer when the
        ``O(r^2)`` part of ``w = e^{nu r} - 1`` (exact at large width, spec/08 §2.5) is kept
        in the cubic term, which (A.71) drops (spec/08 §2.6).
    growth : VertexGrowth or None
        How ``nu`` was computed (``None`` when ``nu`` was given).
    activation, universality_class : str or None
    """

    nu: float
    m1: int
    m2: int
    r_star: float
    x_star: float
    I_star: float
    c2: float
    c3: float
    r_star_consistent: float | None = None
    growth: VertexGrowth | None = None
    activation: str | None = None
    universality_class: str | None = None

    def depth_for_width(self, width: int) -> int:
        """The depth ``L = round(r* n)`` (at least 1) for hidden width ``n``."""
        return max(1, round(self.r_star * _positive_int(width, "width")))

    def width_for_depth(self, depth: int) -> int:
        """The hidden width ``n = round(L / r*)`` (at least 1) for depth ``L``."""
        return max(1, round(_positive_int(depth, "depth") / self.r_star))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable summary."""
        out = {
            "activation": self.activation,
            "universality_class": self.universality_class,
            "nu": self.nu,
            "m1": self.m1,
            "m2": self.m2,
            "r_star": self.r_star,
            "x_star": self.x_star,
            "I_star": self.I_star,
            "c2": self.c2,
            "c3": self.c3,
            "r_star_consistent": self.r_star_consistent,
        }
        if self.growth is not None:
            out |= {
                "nu_error": self.growth.nu_error,
                "nu_class": self.growth.nu_class,
                "nu_depth": self.growth.depth,
                "nu_K1": self.growth.K1,
                "note": self.growth.note,
            }
        return out

    def __repr__(self) -> str:
        who = f"{self.activation!r}, " if self.activation else ""
        return (
            f"OptimalAspectRatio({who}nu={self.nu:.6g}, m1={self.m1}, m2={self.m2}, "
            f"r*={self.r_star:.6g}, I*={self.I_star:.4g} nats)"
        )


def optimal_aspect_ratio(
    act: str | Activation | None = None,
    *,
    nu: float | None = None,
    n_out: int | None = None,
    m1: int | None = None,
    m2: int | None = None,
    gamma: float = 0.0,
) -> OptimalAspectRatio:
    """The optimal depth-to-width ratio ``r* = L/n`` (A.72)-(A.74).

    Maximizes the mutual information between two groups of output neurons, (A.71)
    ``I = (m1 m2/8) (nu r)^2 - m1 m2 (20 + 3 m1 + 3 m2)/48 (nu r)^3``, over ``r``:
    ``r* = 4 / ((20 + 3 m1 + 3 m2) nu)``.  With the output layer split in halves this is
    (A.73), ``r* = 4/((20 + 3 n_L) nu)``, and the maximum is (A.74),
    ``I* = (1/6) (n_L/(20 + 3 n_L))^2`` (for odd ``n_L`` the groups are ``n_L//2`` and
    ``n_L - n_L//2``).

    Parameters
    ----------
    act : str or Activation, optional
        ``nu`` is then computed by :func:`vertex_growth`.
    nu : float, optional
        Instead of ``act``.
    n_out : int, optional
        Output width ``n_L >= 2``; default 2 when ``m1, m2`` are not given.
    m1, m2 : int, optional
        Explicit group sizes (A.72), instead of ``n_out``.
    gamma : float
        Residual strength of the hidden layers (B.36): ``r*(gamma) = 4/((20 + 3 n_L)
        nu(gamma))`` with the corrected ``nu(gamma)`` of :func:`vertex_growth`.

    Examples
    --------
    >>> round(optimal_aspect_ratio(nu=5.0, n_out=2).r_star, 6)  # ReLU, ν = 5 (footnote 26)
    0.030769
    """
    g1, g2 = _groups(n_out, m1, m2)
    value, growth = _nu(act, nu, gamma)
    M = g1 + g2
    x_star = 4.0 / (20 + 3 * M)
    cls = growth.universality_class if growth is not None else None
    return OptimalAspectRatio(
        nu=value,
        m1=g1,
        m2=g2,
        r_star=x_star / value,
        x_star=x_star,
        I_star=float(_objective(x_star, g1, g2)),
        c2=g1 * g2 / 8.0,
        c3=g1 * g2 * (20 + 3 * M) / 48.0,
        r_star_consistent=(
            4.0 / ((14 + 3 * M) * value) if cls == "scale-invariant" and not gamma else None
        ),
        growth=growth,
        activation=growth.activation if growth is not None else None,
        universality_class=cls,
    )


@dataclass(frozen=True)
class InformationCurve:
    """The information objective (A.71) against the aspect ratio ``r`` (data for a plot).

    Attributes
    ----------
    r : ndarray, shape (R,)
    I : ndarray, shape (R,)
        Through ``r^3`` (A.71); its maximum is at ``r*``.
    I_leading : ndarray, shape (R,)
        ``(m1 m2/8) (nu r)^2`` (A.53) with (A.68).
    optimum : OptimalAspectRatio
    """

    r: np.ndarray
    I: np.ndarray  # noqa: E741 - the book's symbol
    I_leading: np.ndarray
    optimum: OptimalAspectRatio

    def plot(self, ax: Any = None) -> Any:
        """See :func:`plot_information_curve`."""
        return plot_information_curve(self, ax=ax)

    def __repr__(self) -> str:
        return (
            f"InformationCurve({len(self.r)} points, r in [{self.r[0]:.3g}, {self.r[-1]:.3g}], "
            f"r*={self.optimum.r_star:.4g}, I*={self.optimum.I_star:.4g})"
        )


def information_curve(
    act: str | Activation | None = None,
    *,
    nu: float | None = None,
    n_out: int | None = None,
    m1: int | None = None,
    m2: int | None = None,
    r: Any = None,
    num: int = 201,
) -> InformationCurve:
    """The mutual information (A.71) of the output groups as a function of ``r = L/n``.

    Parameters
    ----------
    act, nu, n_out, m1, m2 :
        As for :func:`optimal_aspect_ratio`.
    r : array_like, optional
        Aspect ratios (``>= 0``); default ``num`` points on ``[0, 2 r*]``.
    num : int
    """
    opt = optimal_aspect_ratio(act, nu=nu, n_out=n_out, m1=m1, m2=m2)
    if r is None:
        grid = np.linspace(0.0, 2.0 * opt.r_star, _positive_int(num, "num"))
    else:
        grid = np.atleast_1d(np.asarray(r, dtype=np.float64))
        if grid.ndim != 1 or np.any(grid < 0) or not np.all(np.isfinite(grid)):
            raise ValueError("r must be a 1-D array of finite, non-negative aspect ratios")
    x = opt.nu * grid
    return InformationCurve(
        r=grid,
        I=np.asarray(_objective(x, opt.m1, opt.m2)),
        I_leading=np.asarray(_objective(x, opt.m1, opt.m2, order=2)),
        optimum=opt,
    )


def plot_information_curve(curve: InformationCurve, ax: Any = None) -> Any:
    """Plot :func:`information_curve` data: (A.71), its leading term and ``r*``.

    Parameters
    ----------
    curve : InformationCurve
    ax : matplotlib Axes, optional
        Drawn on a new figure when omitted (matplotlib is imported only here).

    Returns
    -------
    matplotlib Axes
    """
    if ax is None:
        from .plots import _pyplot

        _, ax = _pyplot().subplots(figsize=(5.0, 3.5))
    opt = curve.optimum
    label = opt.activation or f"nu = {opt.nu:.4g}"
    ax.plot(curve.r, curve.I, label=f"{label}: (A.71) to $r^3$")
    ax.plot(curve.r, curve.I_leading, ls="--", label="leading $(m_1 m_2/8)(\\nu r)^2$ (A.53)")
    ax.axvline(opt.r_star, color="grey", lw=0.8)
    ax.plot([opt.r_star], [opt.I_star], "o", color="black", label=f"$r^*$ = {opt.r_star:.4g}")
    top = max(float(np.max(curve.I)), opt.I_star)
    ax.set_ylim(min(0.0, float(np.min(curve.I))), 1.6 * top if top > 0 else 1.0)
    ax.set_xlabel("aspect ratio $r = L/n$")
    ax.set_ylabel(f"$I[M_1{{:}}M_2]$ (nats), $m_1$={opt.m1}, $m_2$={opt.m2}")
    ax.legend(fontsize="small")
    return ax


# --------------------------------------------------------------------------------------------
# Architectures for a parameter budget
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Architecture:
    """A (depth, width) choice: ``L`` layers, hidden width ``n``, ``P`` parameters (2.7)."""

    depth: int
    width: int
    params: int
    aspect_ratio: float
    information: float

    def __repr__(self) -> str:
        return (
            f"Architecture(depth={self.depth}, width={self.width}, params={self.params}, "
            f"r={self.aspect_ratio:.4g}, I={self.information:.4g})"
        )


def _num_params(depth: int, width: int, n_in: int, n_out: int) -> int:
    """``sum_l (n_l + n_l n_{l-1})`` (2.7) for widths ``[n_in, n, ..., n, n_out]``."""
    return width * (n_in + 1) + (depth - 2) * width * (width + 1) + n_out * (width + 1)


def _max_width(depth: int, budget: int, n_in: int, n_out: int) -> int:
    """The largest hidden width whose network fits the budget (0 if none does)."""
    a, b, c = depth - 2, n_in + 1 + (depth - 2) + n_out, n_out - budget
    n = int(-c / b) if a == 0 else int((-b + math.sqrt(b * b - 4 * a * c)) / (2 * a))
    while n > 0 and _num_params(depth, n, n_in, n_out) > budget:
        n -= 1
    while _num_params(depth, n + 1, n_in, n_out) <= budget:
        n += 1
    return n


def recommend_architectures(
    act: str | Activation | None = None,
    *,
    budget: int,
    n_in: int,
    n_out: int = 2,
    nu: float | None = None,
    top: int = 5,
) -> list[Architecture]:
    """(depth, width) pairs for a parameter budget, ranked by the information objective (A.71).

    For each depth ``L >= 2`` the widest network with at most ``budget`` parameters (2.7)
    is taken (widths ``[n_in, n, ..., n, n_out]``); these are ranked by the mutual information
    (A.71) at their aspect ratio ``r = L/n``, which peaks at ``r*`` (A.73).

    Parameters
    ----------
    act : str or Activation, optional
        Or give ``nu``.
    budget : int
        Maximum number of parameters.
    n_in, n_out : int
        Input and output widths (``n_out >= 2``: (A.73) splits the output layer).
    top : int
        How many architectures to return.

    Returns
    -------
    list of Architecture
        Best first.
    """
    opt = optimal_aspect_ratio(act, nu=nu, n_out=n_out)
    n_in, top = _positive_int(n_in, "n_in"), _positive_int(top, "top")
    budget = _positive_int(budget, "budget")
    if _num_params(2, 1, n_in, n_out) > budget:
        raise ValueError(
            f"budget {budget} is too small: the smallest network (depth 2, width 1) has "
            f"{_num_params(2, 1, n_in, n_out)} parameters"
        )
    # r(L) = L/n(L) increases with L, and (A.71) is unimodal in r, so the best depths are
    # the ones around the first depth L0 with r(L0) >= r*
    max_depth = 2 + (budget - _num_params(2, 1, n_in, n_out)) // 2  # widest is then 1

    def ratio(depth: int) -> float:
        return depth / _max_width(depth, budget, n_in, n_out)

    lo, hi = 2, max_depth
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ratio(mid) >= opt.r_star else (mid + 1, hi)
    found = []
    for depth in range(max(2, lo - top), min(max_depth, lo + top) + 1):
        n = _max_width(depth, budget, n_in, n_out)
        r = depth / n
        info = float(_objective(opt.nu * r, opt.m1, opt.m2))
        found.append(Architecture(depth, n, _num_params(depth, n, n_in, n_out), r, info))
    found.sort(key=lambda a: -a.information)
    return found[:top]


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def aspect_ratio_summary(
    act: str | Activation,
    *,
    n_out: int = 2,
    budget: int | None = None,
    n_in: int | None = None,
    gamma: float = 0.0,
) -> dict[str, Any]:
    """JSON-serializable summary for ``pdlt aspect-ratio`` (A.68)-(A.74), (B.36).

    Parameters
    ----------
    act : str or Activation
    n_out : int
        Output width ``n_L >= 2``.
    budget : int, optional
        With ``n_in``: also recommend (depth, width) pairs (:func:`recommend_architectures`).
    n_in : int, optional
    gamma : float
        Residual strength of the hidden layers (appendix B).
    """
    act = activation(act)  # one object, so nu is computed once (cached per activation)
    opt = optimal_aspect_ratio(act, n_out=n_out, gamma=gamma)
    out: dict[str, Any] = {"n_out": n_out, "gamma": gamma, **opt.to_dict()}
    if budget is not None:
        if n_in is None:
            raise ValueError("a parameter budget needs the input width n_in")
        archs = recommend_architectures(budget=budget, n_in=n_in, n_out=n_out, nu=opt.nu)
        out["budget"] = budget
        out["n_in"] = n_in
        out["architectures"] = [
            {
                "depth": a.depth,
                "width": a.width,
                "params": a.params,
                "aspect_ratio": a.aspect_ratio,
                "information": a.information,
            }
            for a in archs
        ]
    return out


def format_aspect_ratio(summary: dict[str, Any]) -> str:
    """Human-readable text for an :func:`aspect_ratio_summary` dict."""
    s = summary
    lines = [
        f"activation        {s['activation']} ({s['universality_class']})"
        + (f", residual gamma = {s['gamma']:g}" if s.get("gamma") else ""),
        f"nu                {s['nu']:.6g}   w^(L) = V/(n G^2) = nu L/n (A.68)"
        + (
            ""
            if s.get("nu_class") is None
            else f"; class value {s['nu_class']:.6g} "
            + ("(B.35) / spec/08 §3.4.3" if s.get("gamma") else "(A.69)/(A.70)")
        ),
        f"output groups     m1 = {s['m1']}, m2 = {s['m2']} (n_L = {s['n_out']})",
        f"r* = L/n          {s['r_star']:.6g}   = 4/((20 + 3 n_L) nu) (A.73)",
        f"nu r*             {s['x_star']:.6g}   (must be small for the estimate to hold)",
        f"I* (nats)         {s['I_star']:.6g}   (A.74)",
    ]
    if s.get("r_star_consistent") is not None:
        lines.append(
            f"r* (consistent)   {s['r_star_consistent']:.6g}   with w = e^(nu r) - 1 kept "
            "to r^3 (spec/08 §2.6)"
        )
    if s.get("note"):
        lines.append(f"note              {s['note']}")
    if "architectures" in s:
        lines.append(f"budget {s['budget']} parameters, n_in = {s['n_in']}:")
        lines.append("  depth   width      params        r     I (nats)")
        for a in s["architectures"]:
            lines.append(
                f"  {a['depth']:5d} {a['width']:7d} {a['params']:11d} {a['aspect_ratio']:8.4g}"
                f" {a['information']:12.4g}"
            )
    return "\n".join(lines)
