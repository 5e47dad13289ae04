"""Deep linear networks exactly, at any width (book chapter 3; spec/01 §6).

For ``sigma(z) = z`` every correlator is a polynomial in the hyperparameters with combinatorial
width factors, so these results hold at every finite width and are the sharpest checks of both
the general recursions and the ensembles.

* :func:`c2m` -- ``c_{2m}(n) = (1 + 2/n)...(1 + (2m-2)/n)`` (3.46).
* :func:`moments_2m` -- single-input ``G_{2m}^(l)`` with biases (3.45)-(3.47), spec/01 §6.6a.
* :func:`connected` -- ``G_4 - G_2^2`` and ``G_6 - 3 G_2 G_4 + 2 G_2^3`` (3.29), (3.57).
* :func:`double_scaling` -- ``exp(m(m-1) r)`` (3.55).
* :func:`exact_statistics` -- multi-input exact metric ``G``, vertex ``V`` and NTK mean (spec/01
  §6.6b; the NTK mean is exact because the weights are independent of the lower layers).
* :func:`meansq_variance` -- ``Var[(1/n)|z^(l)|^2] = [prod_{l'<=l}(1 + 2/n_l') - 1] G_2^2``
  (3.33), exact form.
* :func:`sample_meansq` -- the exact chi-square product law of ``(1/n)|z^(l)|^2`` for one input
  without biases (spec/01 §6.5), for checks at large ``m`` or ``r``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special

__all__ = [
    "c2m",
    "moments_2m",
    "connected",
    "double_scaling",
    "exact_statistics",
    "meansq_variance",
    "sample_meansq",
]


def c2m(n: float | np.ndarray, m: int) -> np.ndarray:
    """``c_{2m}(n) = prod_{k=1}^{m-1} (1 + 2k/n) = Gamma(n/2 + m)/Gamma(n/2) (2/n)^m`` (3.46)."""
    n = np.asarray(n, dtype=np.float64)
    if m < 0:
        raise ValueError("m must be >= 0")
    if np.any(n <= 0):
        raise ValueError("widths must be positive")
    return np.exp(special.gammaln(n / 2 + m) - special.gammaln(n / 2) + m * np.log(2 / n))


def moments_2m(
    widths: Sequence[int], C_W: float, G0: float, m: int, C_b: float = 0.0
) -> np.ndarray:
    """Exact single-input ``G_{2m}^(l)``, ``l = 1..L``, of a deep linear network.

    ``E[z_{i1}...z_{i2m}] = [sum over pairings of deltas] G_{2m}`` (3.44).  With biases
    (spec/01 §6.6a): ``G_{2m}^(l+1) = sum_k binom(m, k) C_b^{m-k} C_W^k c_{2k}(n_l) G_{2k}^(l)``
    and ``G_{2m}^(1) = (C_b + C_W G0)^m``; ``G0 = |x|^2/n_0`` (3.19).

    Parameters
    ----------
    widths : sequence of int
        ``[n_0, n_1, ..., n_L]`` (``n_0`` and ``n_L`` do not enter).
    """
    L = len(widths) - 1
    # G[k] for k = 0..m at the current layer
    G = np.array([(C_b + C_W * G0) ** k for k in range(m + 1)], dtype=np.float64)
    out = [G[m]]
    for ell in range(1, L):
        n = widths[ell]
        G = np.array(
            [
                sum(
                    math.comb(j, k) * C_b ** (j - k) * C_W**k * float(c2m(n, k)) * G[k]
                    for k in range(j + 1)
                )
                for j in range(m + 1)
            ]
        )
        out.append(G[m])
    return np.array(out)


def connected(
    widths: Sequence[int], C_W: float, G0: float, C_b: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Exact connected 4- and 6-point coefficients per layer (3.29), (3.57) via (1.61):
    ``G_4 - G_2^2`` and ``G_6 - 3 G_2 G_4 + 2 G_2^3``."""
    G2, G4, G6 = (moments_2m(widths, C_W, G0, m, C_b) for m in (1, 2, 3))
    return G4 - G2**2, G6 - 3 * G2 * G4 + 2 * G2**3


def double_scaling(m: int, r: float | np.ndarray) -> np.ndarray:
    """``G_{2m}/G_2^m -> exp(m (m - 1) r)`` as ``n, L -> inf`` at fixed ``r = L/n`` (3.55)."""
    return np.exp(m * (m - 1) * np.asarray(r, dtype=np.float64))


def exact_statistics(
    gram: np.ndarray,
    widths: Sequence[int],
    C_b: float | Sequence[float],
    C_W: float | Sequence[float],
    lambda_b: float | Sequence[float] = 1.0,
    lambda_W: float | Sequence[float] = 1.0,
) -> dict[str, np.ndarray]:
    """Exact finite-width metric, four-point vertex and NTK mean of a deep linear network.

    ``G^(l+1) = C_b + C_W G^(l)``;
    ``A^(l+1)_{(12)(34)} = C_b^2 + C_b C_W (G_12 + G_34) + C_W^2 [A_(12)(34) + (A_(13)(24) +
    A_(14)(23))/n_l]`` with ``A = E[G-hat G-hat]``, ``A^(1) = G^(1) G^(1)``, and
    ``V^(l) = n_{l-1} (A^(l) - G^(l) G^(l))`` (spec/01 §6.6b, (4.76)); the NTK mean obeys
    ``H^(l+1) = lambda_b + lambda_W G^(l) + C_W H^(l)`` exactly.

    Returns
    -------
    dict with ``K`` (L, N, N) (here the exact metric G), ``V`` (L, N, N, N, N), ``Theta``
    (L, N, N).
    """
    L = len(widths) - 1

    def per_layer(v: float | Sequence[float]) -> np.ndarray:
        return np.broadcast_to(np.asarray(v, dtype=np.float64), (L,))

    cb, cw, lb, lw = (per_layer(v) for v in (C_b, C_W, lambda_b, lambda_W))
    X = np.asarray(gram, dtype=np.float64)
    G = cb[0] + cw[0] * X
    A = np.multiply.outer(G, G)
    H = lb[0] + lw[0] * X
    Gs, Vs, Hs = [G], [np.zeros_like(A)], [H]
    for ell in range(1, L):
        n = widths[ell]
        A = (
            cb[ell] ** 2
            + cb[ell] * cw[ell] * (G[:, :, None, None] + G[None, None])
            + cw[ell] ** 2 * (A + (A.transpose(0, 2, 1, 3) + A.transpose(0, 3, 2, 1)) / n)
        )
        H = lb[ell] + lw[ell] * G + cw[ell] * H
        G = cb[ell] + cw[ell] * G
        Gs.append(G)
        Vs.append(n * (A - np.multiply.outer(G, G)))
        Hs.append(H)
    return {"K": np.array(Gs), "V": np.array(Vs), "Theta": np.array(Hs)}


def meansq_variance(widths: Sequence[int], G2: np.ndarray) -> np.ndarray:
    """``Var[(1/n_l)|z^(l)|^2] = [prod_{l'=1}^{l}(1 + 2/n_l') - 1] (G_2^(l))^2`` for ``l < L``
    (3.33), exact for ``C_b = 0`` (spec/01 §6.3); ``G2`` per layer, shape (L,)."""
    G2 = np.asarray(G2, dtype=np.float64)
    prod = np.cumprod([1 + 2 / n for n in widths[1 : len(G2) + 1]])
    return (prod - 1) * G2**2


def sample_meansq(
    widths: Sequence[int], C_W: float, G0: float, size: int, rng: np.random.Generator
) -> np.ndarray:
    """Exact draws of ``O^(l) = (1/n_l)|z^(l)|^2`` for one input without biases, shape
    (size, L-1): ``O^(l) = C_W^l G0 prod_{l'<=l} chi2_{n_l'}/n_l'`` (spec/01 §6.5)."""
    hidden = np.asarray(widths[1:-1], dtype=np.float64)
    chi = rng.chisquare(hidden, size=(size, len(hidden))) / hidden
    return G0 * np.cumprod(C_W * chi, axis=1)
