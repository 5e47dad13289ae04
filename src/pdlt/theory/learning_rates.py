"""Learning-rate hyperparameters: the book's tensor (8.6) and the equivalence principle (§9.4).

The book's gradient descent updates biases by ``eta lambda_b^(l)`` and weights by
``eta lambda_W^(l)/n_{l-1}`` (8.6).  Plain gradient descent on the usual (standard)
parameterization -- every parameter with the same step ``eta`` -- is ``lambda_b = 1``,
``lambda_W^(l) = n_{l-1}`` (L18947-L18960): its NTK is O(n), so ``eta`` must be O(1/n).

The learning-rate equivalence principle asks every layer and both parameter groups to
contribute equally to the NTK, with ``Theta^(L) = O(1)`` in depth (9.94)-(9.96):

* scale-invariant class: ``lambda_b^(l) = lambda_b~/L``, ``lambda_W^(l) = lambda_W~/L``;
* K*=0 class: ``lambda_b^(l) = lambda_b~ l^(-p_perp) L^(p_perp - 1)``,
  ``lambda_W^(l) = lambda_W~ (L/l)^(p_perp - 1)``, ``p_perp = b1/a1`` (for odd sigma,
  ``lambda_b~/l`` and ``lambda_W~``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..activations import Activation
from .criticality import criticality

__all__ = [
    "LearningRates",
    "equivalence_principle",
    "ntk_parameterization",
    "plain_gradient_descent",
]


@dataclass(frozen=True)
class LearningRates:
    """Per-layer ``lambda_b^(l)`` and ``lambda_W^(l)``, arrays of shape (L,)."""

    lambda_b: np.ndarray
    lambda_W: np.ndarray
    rule: str

    def to_dict(self) -> dict[str, object]:
        return {
            "rule": self.rule,
            "lambda_b": self.lambda_b.tolist(),
            "lambda_W": self.lambda_W.tolist(),
        }


def plain_gradient_descent(widths: Sequence[int]) -> LearningRates:
    """The book's variables for one global step size on every parameter:
    ``lambda_b = 1``, ``lambda_W^(l) = n_{l-1}`` (widths ``[n_0, ..., n_L]``)."""
    w = np.asarray(widths[:-1], dtype=np.float64)
    if np.any(~np.isfinite(w)) or np.any(w < 1):
        raise ValueError("plain gradient descent needs every width n_0 .. n_{L-1}")
    return LearningRates(np.ones(len(w)), w, "plain gradient descent (lambda_W = n_{l-1})")


def ntk_parameterization(C_b: Sequence[float], C_W: Sequence[float]) -> LearningRates:
    """The book's variables for plain gradient descent in the NTK parameterization.

    There ``W^(l) = sqrt(C_W^(l)/n_{l-1}) w`` and ``b^(l) = sqrt(C_b^(l)) beta`` with unit
    Gaussian ``w, beta`` trained by one step size on ``(w, beta)``; the induced steps on
    ``(W, b)`` are ``C_W/n_{l-1}`` and ``C_b``, i.e. ``lambda_W = C_W``, ``lambda_b = C_b``.
    """
    cb = np.asarray(C_b, dtype=np.float64)
    cw = np.asarray(C_W, dtype=np.float64)
    return LearningRates(
        cb.copy(), cw.copy(), "NTK parameterization (lambda_b = C_b, lambda_W = C_W)"
    )


def equivalence_principle(
    act: str | Activation, depth: int, lambda_b: float = 1.0, lambda_W: float = 1.0
) -> LearningRates:
    """Per-layer learning rates of the equivalence principle (9.94)-(9.96).

    Raises
    ------
    ValueError
        For an activation without a K*=0 or scale-invariant criticality (the book gives the
        principle for those two classes only), a depth below 1, or a negative or non-finite
        overall learning rate.
    """
    if isinstance(depth, bool) or not isinstance(depth, int | np.integer) or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    for name, value in (("lambda_b", lambda_b), ("lambda_W", lambda_W)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    crit = criticality(act)
    ell = np.arange(1, depth + 1, dtype=np.float64)
    L = float(depth)
    if crit.universality_class == "scale-invariant":
        return LearningRates(
            np.full(depth, lambda_b / L),
            np.full(depth, lambda_W / L),
            "scale-invariant (9.94): lambda/L",
        )
    if crit.universality_class == "K*=0" and crit.exponents.get("p_perp") is not None:
        p = float(crit.exponents["p_perp"])  # type: ignore[arg-type]
        return LearningRates(
            lambda_b * ell**-p * L ** (p - 1),
            lambda_W * (L / ell) ** (p - 1),
            f"K*=0 (9.95) with p_perp = {p:.6g}",
        )
    raise ValueError(
        f"the learning-rate equivalence principle is given for the scale-invariant and K*=0 "
        f"classes; {crit.activation!r} is {crit.universality_class!r}"
    )
