"""Model complexity from the macroscopic perspective (book epilogue ε).

Book L38807-L39474; spec/08 §1.  The epilogue is mostly conceptual; its computable content is

* :func:`aspect_ratio` -- ``r = L/n`` (ε.1), the cutoff of the effective theory;
* :func:`count_couplings` -- the number of data-dependent couplings that fix the distribution of
  fully-trained networks: (ε.14) at infinite width, and the exact count of independent entries
  of the O(1/n) tensors listed in (ε.13), whose growth ``~ N_D^4`` is (ε.15);
  :func:`count_action_couplings` -- the same for the couplings ``g, v, u`` of the initialization
  action (ε.18), whose sextic coupling gives the ``N_D^6`` of (ε.23);
* :func:`six_point_vertex` -- the single-input six-point vertex of scale-invariant MLPs, the
  recursion (ε.20) (ReLU) generalized to ``sigma = a_+ z theta(z) + a_- z theta(-z)``, its
  critical solution (ε.21), and its exact value at any finite width.

Name clash (spec/08 §0): in (ε.13) ``U`` is the ddNTK tensor of (∞.12); in (ε.20)-(ε.21) it is
the six-point vertex, called ``U6`` here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from .information import _positive_int

__all__ = [
    "aspect_ratio",
    "CouplingCount",
    "count_couplings",
    "count_action_couplings",
    "SixPointVertex",
    "six_point_vertex",
]


def aspect_ratio(depth: int, width: int) -> float:
    """Depth-to-width aspect ratio ``r = L/n`` (ε.1), book.txt L38862-L38866.

    The expansion parameter of the effective theory: at criticality the finite-width
    observables scale as powers of ``r`` (e.g. the six-point vertex ``U6/(n^2 K^3) ~ r^2``
    (ε.21)-(ε.22), see :func:`six_point_vertex`).

    Parameters
    ----------
    depth : int
        Number of layers ``L``.
    width : int
        Hidden-layer width ``n``.

    Examples
    --------
    >>> aspect_ratio(8, 64)
    0.125
    """
    return _positive_int(depth, "depth") / _positive_int(width, "width")


# --------------------------------------------------------------------------------------------
# Counting data-dependent couplings (ε.13)-(ε.15), (ε.18), (ε.23), (ε.25)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CouplingCount:
    """Number of independent data-dependent couplings on ``N_D`` samples.

    Attributes
    ----------
    order : int
        Order ``k`` of the 1/n truncation (couplings of ``p^{m}``, ``m <= k``, (ε.16)).
    N_D : int
        Number of samples (training and test).
    tensors : dict of str to int
        Independent entries of each coupling tensor, in the book's order.
    total : int
        Their sum.
    leading_power : int
        ``2 k + 2``: ``total`` is a polynomial in ``N_D`` of this degree ((ε.14): 2, (ε.15): 4,
        (ε.23): 6).
    leading_coefficient : float
        Coefficient of ``N_D**leading_power`` in ``total``.
    """

    order: int
    N_D: int
    tensors: dict[str, int]
    total: int
    leading_power: int
    leading_coefficient: float


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _pairs(N: int) -> int:
    """``N (N + 1)/2``: entries of a symmetric ``N x N`` matrix (sample pairs)."""
    return N * (N + 1) // 2


# (name, count as a function of N_D, coefficient of N_D^4).  Symmetries and their sources are
# listed in the docstring of count_couplings; orbits of each symmetry group by Burnside's lemma.
_ORDER1_TENSORS: tuple[tuple[str, Callable[[int], int], Fraction], ...] = (
    ("V", lambda N: _pairs(_pairs(N)), Fraction(1, 8)),
    ("A", lambda N: _pairs(_pairs(N)), Fraction(1, 8)),
    ("B", lambda N: (N**4 + 3 * N**2) // 4, Fraction(1, 4)),
    ("D", lambda N: _pairs(N) ** 2, Fraction(1, 4)),
    ("F", lambda N: (N**4 + N**2) // 2, Fraction(1, 2)),
    ("P", lambda N: N**2 * _pairs(N), Fraction(1, 2)),
    ("Q", lambda N: N**4, Fraction(1)),
    ("R", lambda N: N**2 * _pairs(N), Fraction(1, 2)),
    ("S", lambda N: (N**4 + N**2) // 2, Fraction(1, 2)),
    ("T", lambda N: (N**4 + N**2) // 2, Fraction(1, 2)),
    ("U", lambda N: (N**4 + N**2) // 2, Fraction(1, 2)),
)


def count_couplings(N_D: int, N_A: int, n_out: int = 1, order: int = 0) -> CouplingCount:
    """Number of data-dependent couplings of the fully-trained distribution (ε.13)-(ε.15).

    ``order = 0`` (infinite width) is (ε.14), book.txt L39155-L39167, exactly:
    ``n_out N_A`` labels ``y_{i;a}`` plus ``N_D (N_D + 1)/2`` entries each of the symmetric
    kernel ``K`` and frozen NTK ``Theta``.

    ``order = 1`` (truncation at O(1/n), (ε.13) L39085-L39131) counts the independent entries
    of every tensor the book conditions on: labels, metric ``G`` and NTK mean ``H`` (symmetric
    matrices), and the eleven four-sample tensors below.  The book only gives the scaling
    ``O(N_D^4)`` (ε.15); the total is ``(19/4) N_D^4 + O(N_D^3)``.  Each tensor has exactly the
    symmetries that follow from its defining decomposition and the permutation symmetry of the
    correlator it decomposes (the NTK is symmetric under ``(i1, d1) <-> (i2, d2)``; the dNTK
    (11.8) L28493-L28498 under its last two pairs; ddNTK-I (∞.5) L33445-L33451 under any
    permutation of its last three pairs; ddNTK-II (∞.7) L33569-L33577 only under the joint
    swap ``(1 <-> 2, 3 <-> 4)``).  Writing ``N = N_D`` and ``Pr = N (N + 1)/2``:

    ==========  ===========================  ===============================  ================
    tensor      defined by                   symmetry                         entries
    ==========  ===========================  ===============================  ================
    V, A        (4.77) L8125, (8.82) L21752  ``12``, ``34``, ``(12)<->(34)``  ``Pr (Pr+1)/2``
    B_{abcd}    (8.82)                       ``abcd = badc = cdab = dcba``    ``(N^4+3N^2)/4``
    D_{abcd}    (8.67) L21025                ``12``, ``34``                   ``Pr^2``
    F_{abcd}    (8.67)                       ``abcd = cdab``                  ``(N^4+N^2)/2``
    P_{abcd}    (11.45) L30476               ``bc`` (footnote 3, L29443)      ``N^2 Pr``
    Q           (11.45)                      none (footnote 3, L29446)        ``N^4``
    R_{abcd}    (∞.11) L33700                ``cd``                           ``N^2 Pr``
    S_{abcd}    (∞.12) L33718                ``abcd = badc``                  ``(N^4+N^2)/2``
    T_{abcd}    (∞.12)                       ``abcd = dcba``                  ``(N^4+N^2)/2``
    U_{abcd}    (∞.12)                       ``abcd = cdab``                  ``(N^4+N^2)/2``
    ==========  ===========================  ===============================  ================

    (``12`` = symmetric under its first two indices, etc.; ``U`` is the ddNTK tensor, not the
    six-point vertex.)  ``V`` and ``A`` are covariances of symmetric matrices (4.76), (8.82).
    ``B`` (8.83) L21794 is symmetric under the two Wick pairings of two NTKs; it is not
    symmetric under ``a <-> b`` alone (``H_{ac} H_{bd}`` vs ``H_{bc} H_{ad}``).  ``D`` and
    ``F`` correlate two preactivations with one NTK, so there is no pair swap.  No symmetry
    beyond these is established in the book, so none is assumed.

    The test data enter every tensor, the labels only on the training set ``A``; the learning
    algorithm adds nothing (its projectors are functions of these tensors, footnote 5,
    L39137-L39144).  The book lists the O(1/n^2) couplings of the trained distribution only by
    their scaling ``O(N_D^6)`` (ε.23), so ``order = 2`` is refused; see
    :func:`count_action_couplings` for the initialization action's sextic coupling.

    Parameters
    ----------
    N_D : int
        Number of samples ``|D| = |A| + |B|``.
    N_A : int
        Training-set size, ``1 <= N_A <= N_D``.
    n_out : int
        Output dimension ``n_L``.
    order : {0, 1}
        Truncation order in 1/n.

    Returns
    -------
    CouplingCount
        ``leading_power = 2 order + 2``: keeping the ``1/n^k`` terms of (ε.16) costs
        ``O(N_D^{2k+2})`` numbers ((ε.14), (ε.15), (ε.23); (ε.25) L39328 writes ``N_D^{2k}``
        for the same truncation (ε.24), an off-by-one in the book's indexing).

    Examples
    --------
    >>> c = count_couplings(10, 8, n_out=2)
    >>> c.tensors, c.total
    ({'y': 16, 'K': 55, 'Theta': 55}, 126)
    >>> count_couplings(10, 8, n_out=2, order=1).total
    50006
    """
    N_D, N_A, n_out = (
        _positive_int(v, k) for v, k in ((N_D, "N_D"), (N_A, "N_A"), (n_out, "n_out"))
    )
    if N_A > N_D:
        raise ValueError(f"N_A must be <= N_D (the training set is part of D), got {N_A} > {N_D}")
    if not _is_int(order) or order not in (0, 1):
        raise ValueError(
            "order must be 0 (infinite width, (ε.14)) or 1 (O(1/n), (ε.13)), got "
            f"{order!r}; the book does not list the O(1/n^2) couplings of the trained "
            "distribution, only their O(N_D^6) scaling (ε.23) -- count_action_couplings(N_D, 2) "
            "counts those of the initialization action (ε.18)"
        )
    if order == 0:
        tensors = {"y": n_out * N_A, "K": _pairs(N_D), "Theta": _pairs(N_D)}
        lead = Fraction(1)
    else:
        tensors = {"y": n_out * N_A, "G": _pairs(N_D), "H": _pairs(N_D)}
        tensors |= {name: count(N_D) for name, count, _ in _ORDER1_TENSORS}
        lead = sum((c for *_, c in _ORDER1_TENSORS), Fraction(0))
    return _counted(int(order), N_D, tensors, float(lead))


def count_action_couplings(N_D: int, order: int = 2) -> CouplingCount:
    """Number of couplings of the initialization action truncated at ``1/n^order`` (ε.18).

    The preactivation distribution at initialization ``e^{-S}/Z + O(1/n^{order+1})`` (ε.17),
    book.txt L39224-L39258, with ``S`` the quadratic (``g``), quartic (``v``, O(1/n), (4.97))
    and sextic (``u``, O(1/n^2), (ε.19)) terms.  Each coupling is contracted with a product of
    commuting preactivations summed over neurons, so only its part symmetric within each
    sample pair and under permutations of the pairs is defined: with ``Pr = N_D (N_D + 1)/2``
    sample pairs, ``g`` has ``Pr``, ``v`` ``Pr (Pr + 1)/2`` and ``u`` ``Pr (Pr + 1)(Pr + 2)/6``
    independent entries (multisets of 1, 2, 3 pairs).  The sextic coupling alone is
    ``N_D^6/48 + O(N_D^5)``: the ``O(N_D^6)`` of (ε.23).

    Parameters
    ----------
    N_D : int
        Number of samples.
    order : {0, 1, 2}
        ``0``: ``g``; ``1``: ``g, v``; ``2``: ``g, v, u``.

    Examples
    --------
    >>> count_action_couplings(3).tensors
    {'g': 6, 'v': 21, 'u': 56}
    """
    N_D = _positive_int(N_D, "N_D")
    if not _is_int(order) or order not in (0, 1, 2):
        raise ValueError(
            f"order must be 0 (Gaussian), 1 (quartic, O(1/n)) or 2 (sextic, O(1/n^2)), got "
            f"{order!r}; the book gives the action to O(1/n^2) (ε.18)"
        )
    Pr = _pairs(N_D)
    tensors = {"g": Pr, "v": math.comb(Pr + 1, 2), "u": math.comb(Pr + 2, 3)}
    tensors = dict(list(tensors.items())[: order + 1])
    # the top coupling has ~ Pr^(k+1)/(k+1)! entries, Pr ~ N_D^2/2
    return _counted(int(order), N_D, tensors, 0.5 ** (order + 1) / math.factorial(order + 1))


def _counted(order: int, N_D: int, tensors: dict[str, int], lead: float) -> CouplingCount:
    """The counts with their total and leading term ``lead N_D^(2 order + 2)``."""
    return CouplingCount(
        order=order,
        N_D=N_D,
        tensors=tensors,
        total=sum(tensors.values()),
        leading_power=2 * order + 2,
        leading_coefficient=lead,
    )


# --------------------------------------------------------------------------------------------
# Six-point vertex (ε.18)-(ε.22), single input, scale-invariant activations
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SixPointVertex:
    """Single-input kernel, four-point and six-point vertices, layer by layer.

    For distinct neurons ``i, j, k`` of layer ``l`` (spec/08 §1.5; normalization fixed by
    (4.59) L7690-L7720 and the book's (ε.20)):

    * ``E[z_i^2 z_j^2] - G^2 = V/n`` (4.76)-(4.77);
    * ``E[z_i^2 z_j^2 z_k^2] - 3 E[z_i^2 z_j^2] G + 2 G^3 = U6/n^2``, i.e. ``U6/n^2`` is the
      third cumulant of the stochastic metric; the full connected six-point function is
      ``(U6/n^2) x`` (sum over the 15 pairings of the six neural indices), e.g.
      ``E[z^6]_conn = 15 U6/n^2``.

    Attributes
    ----------
    ell : ndarray of int, shape (depth,)
        Layers ``1..depth``.
    K, V, U6 : ndarray, shape (depth,)
        Leading-order kernel, four-point and six-point vertices (n-independent).
    chi, v2, k3 : float
        ``C_W A_2``, ``C_W^2 (3 A_4 - A_2^2)``, ``C_W^3 (15 A_6 - 9 A_4 A_2 + 2 A_2^3)``:
        mean, ``n`` x variance and ``n^2`` x third cumulant of the one-layer metric factor ``Y``.
    n : int or None
        Hidden width for the exact values.
    V_exact, U6_exact : ndarray, shape (depth,), or None
        ``n Var(G-hat)`` and ``n^2 kappa_3(G-hat)`` exactly at width ``n`` (``None`` without
        ``n``); they equal ``V``, ``U6`` up to relative ``O(l/n)``.  The metric is exactly
        ``K`` at any width.
    """

    ell: np.ndarray
    K: np.ndarray
    V: np.ndarray
    U6: np.ndarray
    chi: float
    v2: float
    k3: float
    n: int | None = None
    V_exact: np.ndarray | None = None
    U6_exact: np.ndarray | None = None


def _real(value: Any, name: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    x = float(value)
    if not math.isfinite(x) or (positive and x <= 0):
        raise ValueError(
            f"{name} must be a finite{' positive' if positive else ''} number, got {value!r}"
        )
    return x


def _vertex_recursion(
    chi: float, v2: float, k3: float, K1: float, depth: int, inv_n: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``K, n Var(s), n^2 kappa_3(s)`` of ``s^(l+1) = s^(l) Y`` (``Y`` independent of ``s``).

    Exact cumulant algebra at width ``n = 1/inv_n``; ``inv_n = 0`` gives the leading order.
    """
    K, V, U = np.zeros(depth), np.zeros(depth), np.zeros(depth)
    K[0] = K1
    for i in range(1, depth):
        k, v, u = K[i - 1], V[i - 1], U[i - 1]
        K[i] = chi * k
        V[i] = chi**2 * v + v2 * k**2 + inv_n * v2 * v
        U[i] = (
            chi**3 * u
            + 6.0 * chi * v2 * k * v
            + k3 * k**3
            + inv_n * (3.0 * k3 * k * v + 3.0 * chi * v2 * u)
            + inv_n**2 * k3 * u
        )
    return K, V, U


def six_point_vertex(
    a_plus: float,
    a_minus: float,
    *,
    C_W: float,
    K1: float,
    depth: int,
    n: int | None = None,
) -> SixPointVertex:
    """Single-input six-point vertex ``U6^(l)`` of a scale-invariant MLP with ``C_b = 0``.

    ``sigma(z) = a_+ z theta(z) + a_- z theta(-z)`` (ReLU: ``(1, 0)``; linear: ``(1, 1)``).
    With ``A_k = (a_+^k + a_-^k)/2`` (so ``<sigma^{2m}>_K = (2m-1)!! A_{2m} K^m``), the
    leading-order recursions are (spec/08 §1.5) ``K' = chi K``, ``V' = chi^2 V + v2 K^2``,
    ``U6' = chi^3 U6 + 6 chi v2 K V + k3 K^3``, with ``V^(1) = U6^(1) = 0`` and ``chi, v2, k3``
    as in :class:`SixPointVertex`.  For ReLU ``chi = C_W/2``, ``v2 = 5 C_W^2/4``,
    ``k3 = 11 C_W^3/2`` and this is the book's (ε.20), book.txt L39305-L39313:
    ``U6' = (C_W^3/8) [U6 + 30 V K + 44 K^3]``.  At criticality ``C_W = 1/A_2`` (``chi = 1``,
    ``K`` constant) ``U6^(l) = [3 v2^2 (l-1)(l-2) + k3 (l-1)] K^3``; ReLU:
    ``(l-1)(75 l - 106) K^3``, whose ``75 l^2`` is (ε.21) L39315-L39318.

    Derivation (also of the exact values): with ``C_b = 0`` and one input, layer ``l`` given
    layer ``l - 1`` is i.i.d. ``N(0, s^(l))`` with ``s^(l) = (C_W/n) sum_j sigma(z_j)^2``, and
    homogeneity of ``sigma^2`` gives ``s^(l+1) = s^(l) Y_l``, ``Y_l = (C_W/n) sum_j
    sigma(xi_j)^2``, ``xi_j ~ N(0, 1)`` independent of ``s^(l)`` (spec/08 §2.4-§2.5).
    ``Y`` has mean ``chi``, variance ``v2/n`` and third cumulant ``k3/n^2``, and the cumulants
    of the product obey, exactly,
    ``V' = chi^2 V + v2 K^2 + v2 V/n`` and
    ``U6' = chi^3 U6 + 6 chi v2 K V + k3 K^3 + (3 k3 K V + 3 chi v2 U6)/n + k3 U6/n^2``.
    Dropping the ``1/n`` terms gives the recursion above; keeping them gives
    ``V_exact``, ``U6_exact`` (for ReLU at ``C_W = 2`` they reduce to spec/08 §2.5:
    ``U6_exact/n^2 = K^3 [(1 + 15/n + 44/n^2)^(l-1) - 3 (1 + 5/n)^(l-1) + 2]``).

    Parameters
    ----------
    a_plus, a_minus : float
        Slopes for ``z > 0`` and ``z < 0`` (not both zero).
    C_W : float
        Weight variance (all layers after the first); critical value ``1/A_2``.
    K1 : float
        First-layer kernel ``C_W^(1) |x|^2/n_0``.
    depth : int
        Number of layers ``L``.
    n : int, optional
        Width of the hidden layers, for the exact finite-width values.

    Returns
    -------
    SixPointVertex

    Examples
    --------
    >>> r = six_point_vertex(1.0, 0.0, C_W=2.0, K1=1.0, depth=4)
    >>> r.U6.tolist()  # (l - 1)(75 l - 106)
    [0.0, 44.0, 238.0, 582.0]
    """
    ap, am = _real(a_plus, "a_plus"), _real(a_minus, "a_minus")
    if ap == 0 and am == 0:
        raise ValueError("a_plus and a_minus must not both be zero (sigma = 0)")
    C_W, K1 = _real(C_W, "C_W", positive=True), _real(K1, "K1", positive=True)
    depth = _positive_int(depth, "depth")
    if n is not None:
        n = _positive_int(n, "n")
    A2, A4, A6 = ((ap**k + am**k) / 2.0 for k in (2, 4, 6))
    chi = C_W * A2
    v2 = C_W**2 * (3.0 * A4 - A2**2)
    k3 = C_W**3 * (15.0 * A6 - 9.0 * A4 * A2 + 2.0 * A2**3)
    K, V, U6 = _vertex_recursion(chi, v2, k3, K1, depth, 0.0)
    V_exact = U6_exact = None
    if n is not None:
        _, V_exact, U6_exact = _vertex_recursion(chi, v2, k3, K1, depth, 1.0 / n)
    return SixPointVertex(
        ell=np.arange(1, depth + 1),
        K=K,
        V=V,
        U6=U6,
        chi=chi,
        v2=v2,
        k3=k3,
        n=n,
        V_exact=V_exact,
        U6_exact=U6_exact,
    )
