"""PyTorch integration: critical initialization, learning-rate groups, reading a torch MLP.

Reads like :mod:`torch.nn.init`: functions ending in ``_`` change a module in place and return
it, hyperparameters are keyword-only.

* :func:`critical_init_` -- ``W ~ N(0, C_W/n_{l-1})``, ``b ~ N(0, C_b)`` with the activation's
  critical ``(C_b, C_W)`` (book §5.2-§5.3: scale-invariant (5.67), K*=0 (5.90), half-stable
  (5.71)-(5.73)); :func:`init_` for any given ``(C_b, C_W)``.
* :func:`param_groups` -- optimizer parameter groups with the book's learning-rate tensor (8.6),
  ``eta lambda_b^(l)`` for biases and ``eta lambda_W^(l)/n_{l-1}`` for weights, optionally with
  the equivalence-principle depth scaling (9.94)-(9.96).
* :func:`read_mlp` -- an existing ``nn.Sequential`` MLP as a pdlt :class:`~pdlt.Network`, with
  ``C_b``, ``C_W`` estimated from its parameters and a criticality report (:class:`MLPReport`).

An MLP here is ``Linear, act, Linear, act, ..., Linear`` (book (2.5)): one activation for every
hidden layer, no activation after the last ``Linear``.  Activation modules map to pdlt names
(:func:`activation_name`); any other network can still be initialized by passing
``activation="name"`` (its ``nn.Linear`` layers are taken in registration order).

>>> from torch import nn
>>> import pdlt.torch
>>> model = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 1))
>>> model = pdlt.torch.critical_init_(model)  # C_b = 0, C_W = 1 (5.90)
>>> pdlt.torch.read_mlp(model).universality_class
'K*=0'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np
import torch
from torch import nn

from .activations import Activation, activation
from .network import Network
from .theory.criticality import Criticality, criticality
from .theory.kernel import kernel_flow
from .theory.learning_rates import equivalence_principle

__all__ = [
    "MLPReport",
    "activation_name",
    "critical_init_",
    "init_",
    "param_groups",
    "read_mlp",
    "to_network",
]

#: Activation modules and their pdlt registry names (parameterized ones are handled below).
_SIMPLE: dict[type[nn.Module], str] = {
    nn.Tanh: "tanh",
    nn.ReLU: "relu",
    nn.SiLU: "swish",
    nn.Sigmoid: "sigmoid",
    nn.Identity: "linear",
}
_ALLOWED = (
    "nn.Tanh, nn.ReLU, nn.LeakyReLU, nn.GELU(approximate='none'), nn.SiLU, nn.Sigmoid, "
    "nn.Softplus(beta=1), nn.Identity"
)


def _is_activation_module(module: nn.Module) -> bool:
    return type(module) in _SIMPLE or isinstance(module, nn.LeakyReLU | nn.GELU | nn.Softplus)


def activation_name(module: nn.Module) -> str:
    """The pdlt activation name of a torch activation module.

    Parameters
    ----------
    module : nn.Module
        One of ``nn.Tanh, nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Softplus,
        nn.Identity``.

    Returns
    -------
    str
        A name accepted by :func:`pdlt.activation`, e.g. ``"leaky_relu:0.2"``.

    Raises
    ------
    ValueError
        For any other module, ``nn.GELU(approximate='tanh')`` and ``nn.Softplus`` with
        ``beta != 1`` (not in pdlt's registry; register them with
        :func:`pdlt.register_activation` and pass ``activation=``).

    Examples
    --------
    >>> activation_name(nn.LeakyReLU(0.2))
    'leaky_relu:0.2'
    """
    if type(module) in _SIMPLE:
        return _SIMPLE[type(module)]
    if isinstance(module, nn.LeakyReLU):
        return f"leaky_relu:{float(module.negative_slope)!r}"
    if isinstance(module, nn.GELU):
        if module.approximate != "none":
            raise ValueError(
                f"nn.GELU(approximate={module.approximate!r}) is not the exact GELU (5.104); "
                "use nn.GELU() or pass activation= with a registered activation"
            )
        return "gelu"
    if isinstance(module, nn.Softplus):
        if float(module.beta) != 1.0:
            raise ValueError(
                f"nn.Softplus(beta={module.beta}) is not pdlt's softplus log(1 + e^z) (5.75); "
                "use beta=1 or pass activation= with a registered activation"
            )
        return "softplus"
    raise ValueError(
        f"unsupported activation module {type(module).__name__}; allowed: {_ALLOWED} "
        "(or pass activation='name' for any pdlt activation)"
    )


# --------------------------------------------------------------------------------------------
# Reading the structure of a module
# --------------------------------------------------------------------------------------------


def _flatten(seq: nn.Sequential) -> list[nn.Module]:
    out: list[nn.Module] = []
    for m in seq:
        out.extend(_flatten(m) if isinstance(m, nn.Sequential) else [m])
    return out


def _sequential_layers(seq: nn.Sequential) -> tuple[list[nn.Linear], list[nn.Module]]:
    """``Linear, act, ..., Linear`` -> (the L Linear layers, the L - 1 activation modules)."""
    mods = _flatten(seq)
    if not mods:
        raise ValueError("the nn.Sequential is empty; expected Linear, activation, ..., Linear")
    linears: list[nn.Linear] = []
    acts: list[nn.Module] = []
    for i, m in enumerate(mods):
        want_linear = i % 2 == 0
        if want_linear and not isinstance(m, nn.Linear):
            raise ValueError(
                f"module {i} ({type(m).__name__}) should be nn.Linear: a pdlt MLP alternates "
                "Linear, activation, Linear, ..., Linear (book (2.5))"
            )
        if not want_linear and not _is_activation_module(m):
            raise ValueError(
                f"module {i} ({type(m).__name__}) should be an activation between Linear "
                f"layers; allowed: {_ALLOWED}"
            )
        (linears if want_linear else acts).append(m)
    if not isinstance(mods[-1], nn.Linear):
        raise ValueError(
            f"the last module is {type(mods[-1]).__name__}; a pdlt MLP ends with nn.Linear "
            "(the output is the preactivation z^(L), book (2.5))"
        )
    return linears, acts


def _linears(module: nn.Module) -> list[nn.Linear]:
    """Every ``nn.Linear`` of ``module`` (itself included), in registration order."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(module).__name__} has no nn.Linear layers; nothing to do")
    return linears


def _layers(module: nn.Module) -> tuple[list[nn.Linear], list[nn.Module]]:
    """The Linear layers and activation modules of ``module``, in order."""
    if isinstance(module, nn.Linear):
        return [module], []
    if isinstance(module, nn.Sequential):
        return _sequential_layers(module)
    acts = [m for m in module.modules() if _is_activation_module(m)]
    return _linears(module), acts


def _check_widths(linears: Sequence[nn.Linear]) -> tuple[int, ...]:
    widths = [linears[0].in_features]
    for ell, lin in enumerate(linears, start=1):
        if lin.in_features != widths[-1]:
            raise ValueError(
                f"layer {ell} has in_features = {lin.in_features} but layer {ell - 1} has "
                f"out_features = {widths[-1]}; the Linear layers do not form a chain"
            )
        widths.append(lin.out_features)
    return tuple(widths)


def _resolve_activation(acts: Sequence[nn.Module], given: str | Activation | None) -> Activation:
    """The one activation of the MLP: ``given``, else the (unique) kind of ``acts``."""
    if given is not None:
        return activation(given)
    names = {activation_name(m) for m in acts}
    if len(names) > 1:
        raise ValueError(
            f"the hidden layers use different activations ({', '.join(sorted(names))}); "
            "a pdlt MLP has one activation for every layer"
        )
    if not names:
        raise ValueError(
            "cannot tell the activation (no activation modules found); pass activation='tanh', "
            "'relu', ... (any name of pdlt.available_activations())"
        )
    return activation(names.pop())


def _critical(act: Activation) -> Criticality:
    crit = criticality(act)
    if crit.C_b is None or crit.C_W is None:
        raise ValueError(
            f"activation {act.name!r} has no critical initialization ({crit.reason}); "
            "use a critical activation (e.g. tanh, or shifted_sigmoid for sigmoid), or choose "
            "C_b, C_W yourself with pdlt.torch.init_"
        )
    return crit


# --------------------------------------------------------------------------------------------
# Initialization
# --------------------------------------------------------------------------------------------


def _per_layer(value: float | Sequence[float], depth: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(depth, float(arr))
    if arr.shape != (depth,) or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(
            f"{name} must be a non-negative number or {depth} of them (one per Linear layer), "
            f"got {value!r}"
        )
    return arr


@torch.no_grad()
def _fill_(tensor: torch.Tensor, var: float, dist: str, generator: torch.Generator | None) -> None:
    if var == 0.0:
        tensor.zero_()
    elif dist == "gaussian":
        tensor.normal_(0.0, math.sqrt(var), generator=generator)
    else:  # uniform with the same variance (book footnote 9 of §2.3)
        bound = math.sqrt(3.0 * var)
        tensor.uniform_(-bound, bound, generator=generator)


@torch.no_grad()
def init_(
    module: nn.Module,
    *,
    C_b: float | Sequence[float],
    C_W: float | Sequence[float],
    weight_dist: str = "gaussian",
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Initialize every ``nn.Linear`` of ``module`` in place as in the book (2.19)-(2.22).

    ``W^(l) ~ N(0, C_W^(l)/n_{l-1})`` with ``n_{l-1} = in_features`` and
    ``b^(l) ~ N(0, C_b^(l))``.

    Parameters
    ----------
    module : nn.Module
        An ``nn.Linear``, an MLP ``nn.Sequential`` or any module; its Linear layers are
        layers ``1..L`` in registration order.
    C_b, C_W : float or sequence of L floats
        Bias variance and rescaled weight variance, per layer or for all.
    weight_dist : {"gaussian", "uniform"}
        ``"uniform"``: the same variances from uniform distributions (§2.3 footnote 9).
    generator : torch.Generator, optional
        Source of randomness, as in :mod:`torch.nn.init`.

    Returns
    -------
    nn.Module
        ``module`` itself.

    Raises
    ------
    ValueError
        For bad variances, or ``C_b > 0`` on a Linear layer without a bias.
    """
    if weight_dist not in ("gaussian", "uniform"):
        raise ValueError(f"weight_dist must be 'gaussian' or 'uniform', got {weight_dist!r}")
    linears = _linears(module)
    cb = _per_layer(C_b, len(linears), "C_b")
    cw = _per_layer(C_W, len(linears), "C_W")
    for ell, lin in enumerate(linears, start=1):
        if lin.bias is None and cb[ell - 1] > 0:
            raise ValueError(
                f"layer {ell} has no bias (bias=False) but C_b = {cb[ell - 1]:g} > 0; "
                "build it with bias=True or use C_b = 0"
            )
        _fill_(lin.weight, float(cw[ell - 1]) / lin.in_features, weight_dist, generator)
        if lin.bias is not None:
            _fill_(lin.bias, float(cb[ell - 1]), weight_dist, generator)
    return module


def critical_init_(
    module: nn.Module,
    *,
    activation: str | Activation | None = None,
    weight_dist: str = "gaussian",
    generator: torch.Generator | None = None,
) -> nn.Module:
    """Critical initialization of an MLP in place (book §5.2-§5.3).

    Uses the activation's critical ``(C_b, C_W)`` from :func:`pdlt.criticality`: scale-invariant
    ``(0, 1/A_2)`` (5.67) (ReLU ``(0, 2)``, leaky ReLU ``(0, 2/(1 + a^2))``, linear ``(0, 1)``);
    K*=0 ``(0, 1/sigma_1^2)`` (5.90) (tanh ``(0, 1)``); half-stable (GELU, SiLU/SWISH) from
    (5.71)-(5.73).

    Parameters
    ----------
    module : nn.Module
        An MLP ``nn.Sequential`` (``Linear, act, ..., Linear``), or any module with
        ``activation`` given.
    activation : str or Activation, optional
        Overrides the activation read from the module's activation modules.
    weight_dist, generator
        As in :func:`init_`.

    Returns
    -------
    nn.Module
        ``module`` itself.

    Raises
    ------
    ValueError
        For an activation without criticality (sigmoid, softplus, ...: the message says why),
        unsupported modules or a structure that is not an MLP.

    Examples
    --------
    >>> _ = torch.manual_seed(0)
    >>> m = critical_init_(nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1)))
    >>> round(256 * float(m[0].weight.detach().var()), 1)  # C_W = 2 (5.67)
    2.0
    """
    linears, acts = _layers(module)
    act = _resolve_activation(acts, activation)
    crit = _critical(act)
    if isinstance(module, nn.Sequential):
        _check_widths(linears)
    assert crit.C_b is not None and crit.C_W is not None
    return init_(module, C_b=crit.C_b, C_W=crit.C_W, weight_dist=weight_dist, generator=generator)


# --------------------------------------------------------------------------------------------
# Learning rates
# --------------------------------------------------------------------------------------------


def _learning_rates(
    act: Activation | None,
    depth: int,
    lambda_b: float | Sequence[float],
    lambda_W: float | Sequence[float],
    depth_scaling: str | None,
) -> tuple[np.ndarray, np.ndarray]:
    if depth_scaling is None:
        return _per_layer(lambda_b, depth, "lambda_b"), _per_layer(lambda_W, depth, "lambda_W")
    if depth_scaling != "equivalence":
        raise ValueError(f"depth_scaling must be 'equivalence' or None, got {depth_scaling!r}")
    if np.ndim(lambda_b) or np.ndim(lambda_W):
        raise ValueError(
            "with depth_scaling='equivalence', lambda_b and lambda_W are the depth-independent "
            "numbers lambda_b~, lambda_W~ of (9.94)-(9.96); give per-layer values with "
            "depth_scaling=None"
        )
    assert act is not None
    try:
        lr = equivalence_principle(act, depth, float(lambda_b), float(lambda_W))  # type: ignore[arg-type]
    except ValueError as exc:
        raise ValueError(f"{exc}; pass depth_scaling=None for depth-independent rates") from None
    return lr.lambda_b, lr.lambda_W


def _check_all_in_linears(module: nn.Module, linears: Sequence[nn.Linear]) -> None:
    covered = {id(p) for lin in linears for p in lin.parameters()}
    missing = [name for name, p in module.named_parameters() if id(p) not in covered]
    if missing:
        raise ValueError(
            f"parameters outside nn.Linear layers ({', '.join(missing[:5])}) have no "
            "learning rate in the book's MLP; give them their own optimizer group"
        )


def param_groups(
    module: nn.Module,
    lr: float,
    *,
    lambda_b: float | Sequence[float] = 1.0,
    lambda_W: float | Sequence[float] = 1.0,
    depth_scaling: str | None = "equivalence",
    activation: str | Activation | None = None,
) -> list[dict[str, Any]]:
    """Optimizer parameter groups with the book's learning-rate tensor (8.6).

    Gradient descent ``theta -= lr * lambda * dL/dtheta`` with the diagonal learning-rate
    tensor of (8.6): the biases of layer ``l`` step by ``lr * lambda_b^(l)``, its weights by
    ``lr * lambda_W^(l)/n_{l-1}`` (``n_{l-1} = in_features``).  With
    ``depth_scaling="equivalence"`` the per-layer ``lambda``'s follow the learning-rate
    equivalence principle (9.94)-(9.96): ``lambda~/L`` for the scale-invariant class;
    ``lambda_b~ l^(-p_perp) L^(p_perp - 1)`` and ``lambda_W~ (L/l)^(p_perp - 1)`` for the
    K*=0 class (tanh: ``lambda_b~/l`` and ``lambda_W~``).  See
    :mod:`pdlt.theory.learning_rates`.

    Parameters
    ----------
    module : nn.Module
        An MLP; every parameter must belong to one of its ``nn.Linear`` layers.
    lr : float
        The global step ``eta``.
    lambda_b, lambda_W : float or sequence of L floats
        ``lambda~`` of the equivalence principle (numbers), or, with ``depth_scaling=None``,
        the per-layer ``lambda_b^(l)``, ``lambda_W^(l)`` themselves.
    depth_scaling : {"equivalence", None}
        Whether to apply the equivalence principle.  It is given for the scale-invariant and
        K*=0 classes only; use ``None`` for others (GELU, SiLU).
    activation : str or Activation, optional
        Overrides the activation read from the module (needed for the depth scaling).

    Returns
    -------
    list of dict
        One group per weight matrix and per bias vector, for any ``torch.optim`` optimizer:
        ``{"params": [tensor], "lr": ..., "name": "W3" or "b3", "layer": 3, "lambda": ...}``.

    Examples
    --------
    >>> m = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 1))
    >>> [g["lr"] for g in param_groups(m, 0.1)]  # tanh: lambda_b = 1/l, lambda_W = 1
    [0.025, 0.1, 0.003125, 0.05]
    >>> opt = torch.optim.SGD(param_groups(m, 0.1))
    """
    if isinstance(lr, bool) or not (isinstance(lr, Real) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    linears, acts = _layers(module)
    _check_all_in_linears(module, linears)
    act = _resolve_activation(acts, activation) if depth_scaling is not None else None
    lam_b, lam_W = _learning_rates(act, len(linears), lambda_b, lambda_W, depth_scaling)
    groups: list[dict[str, Any]] = []
    for ell, lin in enumerate(linears, start=1):
        lw = float(lam_W[ell - 1])
        groups.append(
            {
                "params": [lin.weight],
                "lr": lr * lw / lin.in_features,
                "name": f"W{ell}",
                "layer": ell,
                "lambda": lw,
            }
        )
        if lin.bias is not None:
            lb = float(lam_b[ell - 1])
            groups.append(
                {"params": [lin.bias], "lr": lr * lb, "name": f"b{ell}", "layer": ell, "lambda": lb}
            )
    return groups


# --------------------------------------------------------------------------------------------
# Reading an existing MLP
# --------------------------------------------------------------------------------------------


def _second_moment(t: torch.Tensor) -> tuple[float, float]:
    """``mean(t^2)`` and its standard error (one entry: Gaussian ``Var(t^2) = 2 sigma^4``)."""
    sq = t.detach().to(torch.float64).flatten() ** 2
    m = float(sq.mean())
    var = float(sq.var()) if sq.numel() > 1 else 2.0 * m**2
    return m, math.sqrt(var / sq.numel())


@torch.no_grad()
def _estimate(linears: Sequence[nn.Linear]) -> tuple[np.ndarray, ...]:
    """Per-layer ``C_b, C_W`` and their standard errors from the parameters."""
    cb, cw, cb_se, cw_se = (np.zeros(len(linears)) for _ in range(4))
    for i, lin in enumerate(linears):
        m, se = _second_moment(lin.weight)
        cw[i], cw_se[i] = lin.in_features * m, lin.in_features * se
        if lin.bias is not None:
            cb[i], cb_se[i] = _second_moment(lin.bias)
    return cb, cw, cb_se, cw_se


@dataclass(frozen=True, repr=False, eq=False)
class MLPReport:
    """What :func:`read_mlp` found in a torch MLP.

    Attributes
    ----------
    activation : str
        pdlt activation name.
    universality_class : str
        ``"scale-invariant"``, ``"K*=0"``, ``"half-stable"`` or ``"none"`` (§5.2-§5.3).
    widths : tuple of int
        ``(n_0, n_1, ..., n_L)``.
    C_b, C_W : ndarray, shape (L,)
        Estimates ``C_b^(l) = mean(b^2)``, ``C_W^(l) = n_{l-1} mean(W^2)`` (the variances for
        zero-mean parameters, as in (2.19)-(2.22)).
    C_b_se, C_W_se : ndarray, shape (L,)
        Their standard errors (sample standard deviation of the squares / sqrt(count)).
    critical_C_b, critical_C_W : float or None
        The activation's critical hyperparameters (``None`` without criticality).
    layer_critical : ndarray of bool, shape (L,)
        Whether each layer is within tolerance (see ``is_critical``).
    rtol, n_se : float
        The tolerance: ``|C_W - C_W*| <= rtol C_W* + n_se se(C_W)`` and
        ``|C_b - C_b*| <= rtol (C_b* + C_W*) + n_se se(C_b)`` (deviations of ``C_b`` measured
        against the first-layer kernel ``C_b + C_W`` of a unit input (4.8)).
    kernel_ratio : float or None
        ``K^(L)`` with the estimated hyperparameters over ``K^(L)`` at criticality, for one
        input with ``(1/n_0) sum x^2 = 1`` (infinite-width recursion (4.118)): how much the
        per-layer deviations compound over the depth.
    reason : str
        The criticality analysis in one line (why there is none, or the class).
    network : Network
        The MLP as a pdlt Network with the estimated ``C_b, C_W``.
    """

    activation: str
    universality_class: str
    widths: tuple[int, ...]
    C_b: np.ndarray
    C_W: np.ndarray
    C_b_se: np.ndarray
    C_W_se: np.ndarray
    critical_C_b: float | None
    critical_C_W: float | None
    layer_critical: np.ndarray
    rtol: float
    n_se: float
    kernel_ratio: float | None
    reason: str
    network: Network

    @property
    def is_critical(self) -> bool:
        """Every layer's ``(C_b, C_W)`` is within the stated tolerance of the critical values."""
        return self.critical_C_W is not None and bool(np.all(self.layer_critical))

    @property
    def depth(self) -> int:
        """``L``, the number of Linear layers."""
        return len(self.widths) - 1

    @property
    def aspect_ratio(self) -> float:
        """``r = L/n`` with ``n`` the mean hidden width (0.19); the 1/n expansion needs r << 1."""
        return self.network.aspect_ratio

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable summary (book symbols as keys)."""
        return {
            "activation": self.activation,
            "universality_class": self.universality_class,
            "widths": list(self.widths),
            "C_b": self.C_b.tolist(),
            "C_W": self.C_W.tolist(),
            "C_b_se": self.C_b_se.tolist(),
            "C_W_se": self.C_W_se.tolist(),
            "critical_C_b": self.critical_C_b,
            "critical_C_W": self.critical_C_W,
            "is_critical": self.is_critical,
            "layer_critical": self.layer_critical.tolist(),
            "rtol": self.rtol,
            "n_se": self.n_se,
            "aspect_ratio": self.aspect_ratio,
            "kernel_ratio": self.kernel_ratio,
            "reason": self.reason,
        }

    def __repr__(self) -> str:
        L = self.depth
        lines = [
            f"MLPReport({self.activation!r}, widths={_short(self.widths)}, "
            f"L = {L}, L/n = {self.aspect_ratio:.3g})",
            f"  universality class: {self.universality_class}",
        ]
        if self.critical_C_W is None:
            lines.append(f"  no critical initialization: {self.reason}")
        else:
            lines.append(
                f"  critical (C_b, C_W) = ({self.critical_C_b:.6g}, {self.critical_C_W:.6g})"
            )
        lines.append("  layer   C_b +- se               C_W +- se               critical")
        rows = list(range(L)) if L <= 8 else [0, 1, 2, -1, L - 2, L - 1]
        for i in rows:
            if i < 0:
                lines.append("    ...")
                continue
            ok = "-" if self.critical_C_W is None else ("yes" if self.layer_critical[i] else "NO")
            lines.append(
                f"  {i + 1:5d}   {self.C_b[i]:<9.4g} +- {self.C_b_se[i]:<8.2g}  "
                f"{self.C_W[i]:<9.4g} +- {self.C_W_se[i]:<8.2g}  {ok}"
            )
        if self.critical_C_W is not None:
            lines.append(
                f"  is_critical: {self.is_critical} (tolerance: {self.rtol:g} relative, "
                f"plus {self.n_se:g} standard errors)"
            )
            lines.append(f"  K^(L)/K^(L)_critical for a unit input: {self.kernel_ratio:.4g}")
        return "\n".join(lines)


def _short(widths: tuple[int, ...]) -> str:
    if len(widths) <= 6:
        return str(widths)
    return f"({widths[0]}, {widths[1]}, ..., {widths[-2]}, {widths[-1]})"


def _mlp_layers(model: nn.Module) -> tuple[list[nn.Linear], list[nn.Module]]:
    if isinstance(model, nn.Linear):
        return [model], []
    if not isinstance(model, nn.Sequential):
        raise ValueError(
            f"read_mlp reads an nn.Sequential MLP (Linear, activation, ..., Linear) or one "
            f"nn.Linear; got {type(model).__name__}"
        )
    return _sequential_layers(model)


def _kernel_ratio(act: Activation, crit: Criticality, cb: np.ndarray, cw: np.ndarray) -> float:
    one = np.ones((1, 1))
    assert crit.C_b is not None and crit.C_W is not None
    K = kernel_flow(act, one, cb, cw)[-1, 0, 0]
    K_crit = kernel_flow(act, one, np.full_like(cb, crit.C_b), np.full_like(cw, crit.C_W))
    return float(K / K_crit[-1, 0, 0])


def read_mlp(
    model: nn.Module,
    *,
    activation: str | Activation | None = None,
    rtol: float = 0.05,
    n_se: float = 3.0,
) -> MLPReport:
    """Read an ``nn.Sequential`` MLP: its pdlt Network, estimated ``C_b, C_W``, criticality.

    Estimates ``C_W^(l) = n_{l-1} mean(W^(l)^2)`` and ``C_b^(l) = mean(b^(l)^2)`` -- the
    variances of (2.19)-(2.22) for zero-mean parameters -- with standard errors, compares them
    with the activation's critical values (:func:`pdlt.criticality`), and reports the aspect
    ratio ``L/n`` (0.19).

    Parameters
    ----------
    model : nn.Sequential or nn.Linear
        ``Linear, act, Linear, act, ..., Linear`` with one kind of activation (nested
        Sequentials are flattened).
    activation : str or Activation, optional
        Overrides the activation read from the modules (needed for a single Linear layer).
    rtol : float
        Relative tolerance of the criticality check (see :class:`MLPReport`).
    n_se : float
        Standard errors of the estimates added to the tolerance.

    Returns
    -------
    MLPReport

    Raises
    ------
    ValueError
        For a structure that is not such an MLP, unsupported activation modules, mixed
        activations, or a layer with all-zero weights.

    Examples
    --------
    >>> m = nn.Sequential(nn.Linear(16, 256), nn.ReLU(), nn.Linear(256, 1))
    >>> read_mlp(m).is_critical  # torch's default init has C_W = 1/3
    False
    >>> read_mlp(critical_init_(m)).is_critical
    True
    """
    if not (rtol >= 0 and n_se >= 0):
        raise ValueError(f"rtol and n_se must be non-negative, got {rtol!r}, {n_se!r}")
    linears, acts = _mlp_layers(model)
    act = _resolve_activation(acts, activation)
    widths = _check_widths(linears)
    cb, cw, cb_se, cw_se = _estimate(linears)
    zero = np.nonzero(cw == 0)[0]
    if zero.size:
        raise ValueError(f"layer {int(zero[0]) + 1} has all-zero weights (C_W = 0)")
    crit = criticality(act)
    ok = np.zeros(len(linears), dtype=bool)
    ratio = None
    if crit.C_b is not None and crit.C_W is not None:
        ok_W = np.abs(cw - crit.C_W) <= rtol * crit.C_W + n_se * cw_se
        ok_b = np.abs(cb - crit.C_b) <= rtol * (crit.C_b + crit.C_W) + n_se * cb_se
        ok = ok_W & ok_b
        ratio = _kernel_ratio(act, crit, cb, cw)
    return MLPReport(
        activation=act.name,
        universality_class=crit.universality_class,
        widths=widths,
        C_b=cb,
        C_W=cw,
        C_b_se=cb_se,
        C_W_se=cw_se,
        critical_C_b=crit.C_b,
        critical_C_W=crit.C_W,
        layer_critical=ok,
        rtol=float(rtol),
        n_se=float(n_se),
        kernel_ratio=ratio,
        reason=crit.reason,
        network=Network(act, widths=widths, C_b=cb, C_W=cw),
    )


def to_network(model: nn.Module, *, activation: str | Activation | None = None) -> Network:
    """The MLP as a pdlt :class:`~pdlt.Network` with ``C_b, C_W`` estimated from its parameters.

    Shorthand for ``read_mlp(model, activation=activation).network``; feed it to
    :func:`pdlt.flow` or :class:`pdlt.Ensemble`.
    """
    return read_mlp(model, activation=activation).network
