"""``pdlt.flow``: the theory's per-layer predictions for a network and inputs.

Fields are computed on request (``fields=("K", "chi_perp")``) with their dependencies
resolved, so nothing is computed twice or needlessly -- the pattern of Neural Tangents'
``get=('nngp', 'ntk')``.  Each field's producer is registered in ``_PRODUCERS``; later
recursions (V, G1, Theta, A, B, D, F, P, Q, R, S, T, U) register theirs the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..gaussian import DEFAULT_RULE
from ..network import Inputs, Network, as_inputs
from ..results import Flow
from .kernel import gamma_components, helpers, kernel_flow

__all__ = ["flow", "available_fields"]


@dataclass
class _Context:
    network: Network
    inputs: Inputs
    values: dict[str, np.ndarray]


Producer = Callable[[_Context], dict[str, np.ndarray]]
_PRODUCERS: dict[str, tuple[tuple[str, ...], Producer]] = {}


def _register(names: Sequence[str], deps: Sequence[str] = ()) -> Callable[[Producer], Producer]:
    def deco(fn: Producer) -> Producer:
        for name in names:
            _PRODUCERS[name] = (tuple(deps), fn)
        return fn

    return deco


def available_fields() -> tuple[str, ...]:
    """Names accepted by ``flow(..., fields=...)``."""
    return tuple(_PRODUCERS)


@_register(["K"])
def _kernel(ctx: _Context) -> dict[str, np.ndarray]:
    net = ctx.network
    return {"K": kernel_flow(net.activation, ctx.inputs.gram, net.C_b, net.C_W)}


@_register(["chi_parallel", "chi_perp"], deps=["K"])
def _susceptibilities(ctx: _Context) -> dict[str, np.ndarray]:
    net = ctx.network
    diag = np.diagonal(ctx.values["K"], axis1=1, axis2=2)  # (L, N)
    # the susceptibility at layer l governs l -> l+1 and uses C_W^(l+1); C_W^(L) at the top
    cw_next = np.append(net.C_W[1:], net.C_W[-1])[:, None]
    hp = helpers(net.activation, diag, np.broadcast_to(cw_next, diag.shape))
    return {"chi_parallel": hp.chi_par, "chi_perp": hp.chi_perp}


@_register(["K_gamma"], deps=["K"])
def _gamma(ctx: _Context) -> dict[str, np.ndarray]:
    K = ctx.values["K"]
    if K.shape[1] != 2:
        raise ValueError("K_gamma needs exactly two inputs (x_+, x_-)")
    return {"K_gamma": gamma_components(K)}


def flow(
    network: Network,
    inputs: np.ndarray | Inputs | None = None,
    *,
    k1: float | None = None,
    fields: Sequence[str] = ("K", "chi_parallel", "chi_perp"),
) -> Flow:
    """Theory predictions, layer by layer.

    Parameters
    ----------
    network : Network
    inputs : array_like, shape (N, n_0), or Inputs
        One input per row.
    k1 : float, optional
        Instead of ``inputs``: a single input whose first-layer kernel is ``K^(1) = k1``.
    fields : sequence of str
        Which quantities to compute; see :func:`available_fields`.

    Returns
    -------
    Flow
        ``K`` has shape (L, N, N); ``chi_parallel`` and ``chi_perp`` (L, N);
        ``K_gamma`` (L, 3) for two inputs.

    Examples
    --------
    >>> from pdlt import Network, flow
    >>> f = flow(Network("tanh", depth=3), k1=1.0)
    >>> f.single("K").round(6)
    array([1.      , 0.394294, 0.23645 ])
    """
    inp = as_inputs(network, inputs, k1)
    unknown = [f for f in fields if f not in _PRODUCERS]
    if unknown:
        raise ValueError(
            f"unknown field(s) {', '.join(unknown)}; available: {', '.join(available_fields())}"
        )
    ctx = _Context(network, inp, {})
    for name in fields:
        _resolve(ctx, name)
    values = {name: ctx.values[name] for name in fields}
    meta = {"quadrature": dict(DEFAULT_RULE), "order": "leading (infinite width)"}
    return Flow(network, inp, values, kind="theory", meta=meta)


def _resolve(ctx: _Context, name: str) -> None:
    if name in ctx.values:
        return
    deps, producer = _PRODUCERS[name]
    for dep in deps:
        _resolve(ctx, dep)
    ctx.values.update(producer(ctx))
