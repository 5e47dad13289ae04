"""Criticality and universality classes (book §5.2-§5.3; spec/03 §4-§8).

:func:`criticality` finds, for any activation (user callables included), the initialization
hyperparameters ``(C_b, C_W)`` that make both susceptibilities one at a fixed point ``K*``
(5.55)-(5.57), and classifies the activation:

``"scale-invariant"``
    ``sigma(z) = a_+ z`` / ``a_- z``: a line of fixed points at ``C_b = 0``, ``C_W = 1/A_2``
    (5.67); ``K^(l) = K^(1)`` at every depth.
``"K*=0"``
    ``sigma_0 = 0``, ``sigma_1 != 0``, ``a_1 < 0`` (or the designer case ``a_1 = 0``,
    ``a_2 < 0``): ``C_b = 0``, ``C_W = 1/sigma_1^2`` (5.90), ``K ~ 1/((-a_1) l)`` (5.92).
``"half-stable"``
    a fixed point ``K* > 0`` where ``chi_perp/chi_par = 1`` (5.73) with ``C_b >= 0``
    (SWISH, GELU, §5.3.4): ``Delta K ~ 1/((-a~_1) l)`` on the attracted side only.
``"none"``
    no such point (sigmoid, softplus, monomials, ...); ``Criticality.reason`` says why.

The search follows (5.71)-(5.73): for a candidate ``K*``, ``C_W = 1/<sigma'^2>_{K*}`` and
``C_b = K* - <sigma^2>/<sigma'^2>`` fix ``chi_perp = 1`` and the fixed-point equation; the
remaining condition ``r(K*) = chi_perp/chi_par = 1`` is independent of ``C_b, C_W`` and is
solved by scanning ``K`` and bracketing sign changes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import optimize

from ..activations import Activation, activation
from ..gaussian import moments
from .kernel import helpers

__all__ = [
    "CriticalPoint",
    "Criticality",
    "TaylorData",
    "criticality",
    "taylor_data",
    "susceptibility_ratio",
    "fit_ell0",
]

_TOL = 1e-10


@dataclass(frozen=True)
class TaylorData:
    """Taylor data of the K*=0 analysis (5.80)-(5.88), from ``sigma_p = sigma^{(p)}(0)``.

    ``a_1 = s3/s1 + 3/4 (s2/s1)^2``; ``a_2 = s5/(4 s1) + 5/8 (s4/s1)(s2/s1) + 5/12 (s3/s1)^2``;
    ``b_1 = s3/s1 + (s2/s1)^2``; ``b_2 = s5/(4 s1) + s2 s4/s1^2 + 3/4 (s3/s1)^2`` (derived,
    spec/03 §7.1).  Entries are ``None`` where the needed coefficient does not exist.
    """

    sigma: tuple[float, ...]
    a1: float | None
    a2: float | None
    b1: float | None
    b2: float | None


def taylor_data(act: Activation) -> TaylorData | None:
    """:class:`TaylorData` of ``act``; ``None`` when sigma has a kink at 0 or ``sigma_1 = 0``."""
    s = act.taylor
    if s is None or abs(s[1]) < _TOL:
        return None
    s1 = s[1]
    r2, r3 = s[2] / s1, s[3] / s1
    a1 = r3 + 0.75 * r2**2
    b1 = r3 + r2**2
    a2 = b2 = None
    if len(s) >= 6:
        r4, r5 = s[4] / s1, s[5] / s1
        a2 = 0.25 * r5 + 0.625 * r4 * r2 + (5.0 / 12.0) * r3**2
        b2 = 0.25 * r5 + r2 * r4 + 0.75 * r3**2
    return TaylorData(tuple(float(v) for v in s), float(a1), _f(a2), float(b1), _f(b2))


def _f(x: float | None) -> float | None:
    return None if x is None else float(x)


@dataclass(frozen=True)
class CriticalPoint:
    """A fixed point ``K*`` with ``chi_par = chi_perp = 1`` and its hyperparameters.

    ``stability``: ``"marginal"`` (scale-invariant line of fixed points), ``"stable"``,
    ``"unstable"``, or ``"half-stable: attracted from above"`` / ``"... from below"``.
    ``a1_tilde`` is ``C_W g''(K*)/2`` for ``K* > 0`` (5.102), and ``a_1`` for ``K* = 0``.
    """

    K_star: float | None
    C_b: float
    C_W: float
    chi_parallel: float
    chi_perp: float
    stability: str
    a1_tilde: float | None = None


@dataclass(frozen=True)
class Criticality:
    """Critical initialization and universality class of an activation (see module doc).

    Attributes
    ----------
    activation : str
    universality_class : str
        ``"scale-invariant"``, ``"K*=0"``, ``"half-stable"`` or ``"none"``.
    C_b, C_W, K_star : float or None
        The recommended critical point (``K_star`` is ``None`` for the scale-invariant line).
    points : list of CriticalPoint
        Every critical point found, stable or not.
    taylor : TaylorData or None
    A2, A4 : float or None
        ``(a_+^2 + a_-^2)/2`` and ``(a_+^4 + a_-^4)/2`` for the scale-invariant class (5.61),
        (5.114).
    exponents : dict
        Critical exponents: ``p_0`` (K or Delta K ~ l^-p_0), ``p_parallel``, ``p_perp``,
        ``p_V`` and the growth of ``V/(n K^2)`` with ``l`` (``V_over_nK2``: coefficient of
        ``l/n``); with the equivalence-principle learning rates the NTK's ``p_Theta, p_A, p_B,
        p_D, p_F``, the dNTK's ``p_P, p_Q`` (11.80), (11.98), (11.101) and the ddNTKs'
        ``p_R, p_S, p_T, p_U`` ((∞.38), (∞.48); ``None`` where the tensor vanishes).
    reason : str
        Why there is no criticality, or a one-line description of the class.
    """

    activation: str
    universality_class: str
    C_b: float | None
    C_W: float | None
    K_star: float | None
    points: list[CriticalPoint] = field(default_factory=list)
    taylor: TaylorData | None = None
    A2: float | None = None
    A4: float | None = None
    exponents: dict[str, float | None] = field(default_factory=dict)
    reason: str = ""

    @property
    def a1(self) -> float | None:
        return None if self.taylor is None else self.taylor.a1

    @property
    def a2(self) -> float | None:
        return None if self.taylor is None else self.taylor.a2

    @property
    def b1(self) -> float | None:
        return None if self.taylor is None else self.taylor.b1

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable dict keyed by the book's symbols."""
        out: dict[str, Any] = {
            "activation": self.activation,
            "universality_class": self.universality_class,
            "C_b": self.C_b,
            "C_W": self.C_W,
            "K_star": self.K_star,
            "a1": self.a1,
            "a2": self.a2,
            "b1": self.b1,
            "A2": self.A2,
            "A4": self.A4,
            "exponents": dict(self.exponents),
            "critical_points": [asdict(p) for p in self.points],
            "reason": self.reason,
        }
        if self.taylor is not None:
            out["sigma_taylor"] = list(self.taylor.sigma)
        return out

    def asymptotic_kernel(self, ell: np.ndarray, ell0: float = 1.0) -> np.ndarray:
        """Large-depth kernel at criticality (spec/03 §5, §7.2, §8).

        * scale-invariant: ``K^(l) = K^(1)`` (unknown here; returns NaN-free ones times
          ``K_star`` is not defined, so this raises);
        * K*=0: (5.94) to O(log^2 l / l^3), ``ell0`` the data-dependent constant
          (see :func:`fit_ell0`); designer case ``a_1 = 0``: ``[2(-a_2) l]^{-1/2}``;
        * half-stable: ``K* + 1/((-a~_1) l)`` on the attracted side.
        """
        ell = np.asarray(ell, dtype=np.float64)
        if self.universality_class == "K*=0":
            a1, a2 = self.a1, self.a2
            assert a1 is not None
            if abs(a1) < _TOL:
                assert a2 is not None
                return (2.0 * (-a2) * ell) ** -0.5
            lg = np.log(ell / ell0)
            out = 1.0 / ((-a1) * ell)
            if a2 is not None:
                c = a2 - a1**2
                out = (
                    out
                    - (c / a1**3) * lg / ell**2
                    - (c**2 / a1**5) * lg**2 / ell**3
                    + (c**2 / a1**5) * lg / ell**3
                )
            return out
        if self.universality_class == "half-stable":
            p = self.points[self._primary]
            assert p.K_star is not None and p.a1_tilde is not None
            return p.K_star + 1.0 / ((-p.a1_tilde) * ell)
        raise ValueError(
            f"no large-depth asymptotic form for the {self.universality_class!r} class "
            "(scale-invariant kernels stay at K^(1); 'none' has no critical point)"
        )

    def output_scale(self, depth: int) -> float:
        """``L^{p_0/2}``: the factor (∞.25) that fixes the depth scaling of the outputs.

        At criticality ``E[z z] = K^(L) ~ L^{-p_0}`` (∞.24) while targets do not scale with
        depth, so to compare networks of different depths multiply the outputs by this factor,
        ``z -> z L^{p_0/2}``, or equivalently divide the targets by it, ``y -> y L^{-p_0/2}``
        (∞.26) (for classification: the logits, or the raw targets before the softmax).
        1 for the scale-invariant class (``p_0 = 0``) and for half-stable fixed points (where
        ``K -> K* > 0``; their ``p_0`` describes ``K - K*``), ``sqrt(L)`` for K*=0.
        """
        p0 = 0.0 if self.universality_class == "half-stable" else self.exponents.get("p_0")
        if p0 is None:
            raise ValueError(f"no depth exponent p_0 for the {self.universality_class!r} class")
        if isinstance(depth, bool) or not isinstance(depth, int | np.integer) or depth < 1:
            raise ValueError(f"depth must be a positive integer, got {depth!r}")
        return float(depth) ** (p0 / 2)

    @property
    def _primary(self) -> int:
        for i, p in enumerate(self.points):
            if p.C_b == self.C_b and p.C_W == self.C_W:
                return i
        raise ValueError("no primary critical point")


def susceptibility_ratio(act: Activation, K: np.ndarray | float) -> np.ndarray:
    """``r(K) = chi_perp/chi_par`` (5.73), independent of ``C_b, C_W``; criticality needs 1."""
    hp = helpers(act, np.asarray(K, dtype=np.float64), 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return hp.chi_perp / hp.chi_par


def fit_ell0(ell: np.ndarray, K: np.ndarray, a1: float, a2: float) -> float:
    """Fit the data-dependent constant ``l_0`` of (5.94) from a computed trajectory.

    Uses the robust form ``1/K = (-a_1) l - [(a_2 - a_1^2)/(-a_1)] log(l/l_0) + O(log l/l)``
    (spec/03 §7.2), averaged over the given depths (take them large).
    """
    ell = np.asarray(ell, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    c = (a2 - a1**2) / (-a1)
    if abs(c) < 1e-300:
        raise ValueError("l_0 is undetermined when a_2 = a_1^2 (no log correction)")
    log_ell0 = np.log(ell) - ((-a1) * ell - 1.0 / K) / c
    return float(np.exp(np.mean(log_ell0)))


def criticality(act: str | Activation) -> Criticality:
    """Critical hyperparameters and universality class of an activation.

    Never raises for an activation without criticality: the answer then has
    ``universality_class == "none"`` and a ``reason``.

    Examples
    --------
    >>> c = criticality("tanh")
    >>> c.universality_class, c.C_b, c.C_W, c.a1
    ('K*=0', 0.0, 1.0, -2.0)
    """
    act = activation(act)
    return _criticality_cached(act)


@lru_cache(maxsize=64)
def _criticality_cached(act: Activation) -> Criticality:
    if act.scale_invariant is not None and act.polynomial_degree in (None, 1):
        return _scale_invariant(act)
    if not act.has_derivative(1):
        return _no_criticality(
            act,
            "sigma' is a delta function (step activation): chi_perp = C_W <sigma'^2> "
            "is infinite, so no initialization is critical",
        )
    td = taylor_data(act)
    points: list[CriticalPoint] = []
    notes: list[str] = []
    zero_class = False
    if td is not None and abs(td.sigma[0]) < _TOL:
        s1 = td.sigma[1]
        a1 = td.a1
        assert a1 is not None
        if a1 < -_TOL:
            stab, zero_class = "stable", True
        elif abs(a1) <= _TOL and td.a2 is not None and td.a2 < 0:
            stab, zero_class = "stable", True
        else:
            stab = "unstable"
            notes.append(
                f"the K*=0 fixed point at C_W = {1 / s1**2:.6g} is unstable (a1 = {a1:.6g} >= 0)"
            )
        points.append(CriticalPoint(0.0, 0.0, 1.0 / s1**2, 1.0, 1.0, stab, a1))
    elif td is None and act.taylor is not None:
        notes.append("sigma'(0) = 0, so K* = 0 cannot be critical (5.89)")
    elif act.taylor is not None:
        notes.append(f"sigma(0) = {act.taylor[0]:.6g} != 0, so K* = 0 needs C_b < 0 (5.89)")
    roots, ratio_info = _positive_roots(act)
    for K_star in roots:
        C_W, C_b = _hyperparameters(act, K_star)
        hp = helpers(act, K_star, C_W)
        if C_b < -1e-12:
            notes.append(f"r(K) = 1 at K = {K_star:.6g}, but there C_b = {C_b:.6g} < 0")
            continue
        a1t = float(0.5 * C_W * hp.g2)
        side = "above" if a1t < 0 else "below"
        points.append(
            CriticalPoint(
                float(K_star),
                max(float(C_b), 0.0),
                float(C_W),
                float(hp.chi_par),
                float(hp.chi_perp),
                f"half-stable: attracted from {side}",
                a1t,
            )
        )
    if zero_class:
        return _k_star_zero(act, td, points)
    positive = [p for p in points if p.K_star]
    if positive:
        p = positive[0]
        return Criticality(
            act.name,
            "half-stable",
            p.C_b,
            p.C_W,
            p.K_star,
            points,
            td,
            exponents={"p_0": 1.0},
            reason=f"half-stable fixed point K* = {p.K_star:.10g} ({p.stability}); "
            "Delta K ~ 1/((-a1_tilde) l) on the attracted side",
        )
    if not notes or ratio_info:
        notes.append(ratio_info)
    if td is not None and abs(td.sigma[0]) >= _TOL and abs(td.sigma[1]) >= _TOL:
        cb0 = -(td.sigma[0] ** 2) / td.sigma[1] ** 2
        notes.append(f"as K -> 0, C_b -> -sigma_0^2/sigma_1^2 = {cb0:.6g} < 0 (unphysical)")
    return _no_criticality(act, "; ".join(n for n in notes if n), points, td)


def _no_criticality(
    act: Activation,
    reason: str,
    points: list[CriticalPoint] | None = None,
    td: TaylorData | None = None,
) -> Criticality:
    """The answer for an activation without a usable critical point (class ``"none"``)."""
    return Criticality(act.name, "none", None, None, None, points or [], td, reason=reason)


def _scale_invariant(act: Activation) -> Criticality:
    assert act.scale_invariant is not None
    ap, am = act.scale_invariant
    A2 = 0.5 * (ap**2 + am**2)
    A4 = 0.5 * (ap**4 + am**4)
    point = CriticalPoint(None, 0.0, 1.0 / A2, 1.0, 1.0, "marginal")
    return Criticality(
        act.name,
        "scale-invariant",
        0.0,
        1.0 / A2,
        None,
        [point],
        None,
        A2,
        A4,
        exponents={
            "p_0": 0.0,
            "p_parallel": 0.0,
            "p_perp": 0.0,
            "p_V": -1.0,
            "V_over_nK2": 3.0 * A4 / A2**2 - 1.0,
            # NTK with uniform learning rates (9.53)
            "p_Theta": -1.0,
            "p_D": -2.0,
            "p_F": -2.0,
            "p_A": -3.0,
            "p_B": -3.0,
            # dNTK (11.74), (11.80): P vanishes identically, Q ~ l^3
            "p_P": None,
            "p_Q": -3.0,
            # ddNTKs: defined only without a kink (linear), (∞.46)-(∞.48)
            **({"p_R": None, "p_S": -4.0, "p_T": -4.0, "p_U": None} if ap == am else {}),
        },
        reason="scale-invariant: every K is a fixed point at C_b = 0, C_W = 1/A2 (5.67); "
        "V/(nK^2) = (3 A4/A2^2 - 1) l/n (5.120)",
    )


def _k_star_zero(act: Activation, td: TaylorData, points: list[CriticalPoint]) -> Criticality:
    assert td.a1 is not None and td.b1 is not None
    s1 = td.sigma[1]
    designer = abs(td.a1) <= _TOL
    if designer:
        exps: dict[str, float | None] = {"p_0": 0.5}
        why = "designer K*=0 activation (a1 = 0, a2 < 0): K ~ [2(-a2) l]^(-1/2)"
    else:
        exps = {
            "p_0": 1.0,
            "p_parallel": 2.0,
            "p_perp": td.b1 / td.a1,
            "p_V": 1.0,
            "V_over_nK2": 2.0 / 3.0,
            # NTK with the equivalence-principle learning rates (9.70), L23983-L23990
            "p_Theta": td.b1 / td.a1 - 1.0,
            "p_D": td.b1 / td.a1 - 1.0,
            "p_F": td.b1 / td.a1 - 1.0,
            "p_A": 2.0 * td.b1 / td.a1 - 3.0,
            "p_B": 2.0 * td.b1 / td.a1 - 3.0,
            # dNTK (11.98), (11.101): p_P = p_Q = 2 p_perp - 3
            "p_P": 2.0 * td.b1 / td.a1 - 3.0,
            "p_Q": 2.0 * td.b1 / td.a1 - 3.0,
        }
        if abs(td.sigma[2]) <= _TOL * abs(s1):  # odd: (∞.30)-(∞.33), (∞.38)
            exps |= {"p_R": -2.0, "p_S": -2.0, "p_T": -2.0, "p_U": 0.0}
        why = (
            f"K*=0 class: C_b = 0, C_W = 1/sigma_1^2 (5.90); K ~ 1/((-a1) l) with "
            f"a1 = {td.a1:.6g}; V/(nK^2) = (2/3) l/n (5.131)"
        )
    return Criticality(
        act.name, "K*=0", 0.0, 1.0 / s1**2, 0.0, points, td, exponents=exps, reason=why
    )


def _resolved(act: Activation, K: float) -> bool:
    """Whether ``chi_par`` at ``K`` is resolved by the quadrature (not rounding noise).

    Far out (e.g. ``sin`` at ``K ~ 20``, where ``chi_par ~ e^{-2K}``) the susceptibilities fall
    below the integration accuracy and ``r(K) - 1`` changes sign at random; such roots are
    discarded.
    """
    prods = [[(0, -1), (0, 0), (0, 1)]]
    val, err = moments(act, np.array([[K]]), prods, error=True)
    scale = float(moments(act, np.array([[K]]), [[(0, -1), (0, -1)] + [(0, 1)] * 2])[0])
    return bool(abs(val[0]) > 1e-6 * max(scale, 1e-300) and err[0] < 1e-6 * abs(val[0]))


def _hyperparameters(act: Activation, K_star: float) -> tuple[float, float]:
    """(5.71)-(5.72): ``C_W = 1/<sigma'^2>``, ``C_b = K* - <sigma^2>/<sigma'^2>``."""
    g, d2 = moments(act, np.array([[K_star]]), [[(0, 0)] * 2, [(0, 1)] * 2])
    return 1.0 / d2, K_star - g / d2


def _positive_roots(act: Activation) -> tuple[list[float], str]:
    """Roots of ``r(K) - 1`` on ``K in [1e-4, 1e3]`` and a one-line description of ``r``."""
    grid = np.geomspace(1e-4, 1e3, 71)
    try:
        r = susceptibility_ratio(act, grid)
    except (ValueError, FloatingPointError) as exc:
        return [], f"the susceptibilities cannot be evaluated ({exc})"
    f = r - 1.0
    roots = []
    for i in np.nonzero(np.sign(f[:-1]) * np.sign(f[1:]) < 0)[0]:
        K = optimize.brentq(
            lambda k: float(susceptibility_ratio(act, k)) - 1.0,
            grid[i],
            grid[i + 1],
            xtol=1e-14,
            rtol=1e-15,
            maxiter=200,
        )
        if _resolved(act, K):
            roots.append(K)
    if np.ptp(r) < 1e-9 * max(1.0, abs(float(r[0]))):
        info = f"r(K) = chi_perp/chi_par = {r[0]:.6g} for every K > 0 (never 1)"
    elif np.all(f < 0) or np.all(f > 0):
        side = "<" if np.all(f < 0) else ">"
        info = (
            f"r(K) = chi_perp/chi_par {side} 1 for all K in [1e-4, 1e3] "
            f"(r ranges {r.min():.4g}..{r.max():.4g})"
        )
    else:
        info = ""
    if math.isnan(float(np.sum(r))):
        info = "r(K) is not finite"
    return roots, info
