"""``pdlt.flow``: the theory's per-layer predictions for a network and inputs.

Fields are computed on request (``fields=("K", "chi_perp")``) with their dependencies
resolved, so nothing is computed twice or needlessly -- the pattern of Neural Tangents'
``get=('nngp', 'ntk')``.  Each field's producer is registered in ``_PRODUCERS``; later
recursions (V, G1, Theta, A, B, D, F, P, Q, R, S, T, U) register theirs the same way.

Before any integral is done, :func:`estimate_work` sizes the request -- the bytes it will hold
(the four-index fields are ``(L, N, N, N, N)`` arrays) and the number of four-dimensional
Gaussian integrals, which dominates the time -- and :func:`flow` refuses, with the estimate,
a request that does not fit in the available memory (or the ``max_memory`` /
``PDLT_MAX_MEMORY`` limit) instead of crashing part-way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .._memory import MEMORY_ENV, available_memory, format_bytes, memory_limit
from ..gaussian import DEFAULT_RULE
from ..network import Inputs, Network, as_inputs
from ..results import Flow
from .ddntk import ddntk_step, require_ddntk
from .dntk import DntkMoments, dntk_moments, dntk_step
from .four_point import _MOMENT_CACHE_SIZE, four_point_moments, nlo_metric_step, vertex_step
from .kernel import arc_cosine_flow, gamma_components, helpers, kernel_flow, mehler_flow
from .ntk import nlo_ntk_step, ntk_step
from .residual import (
    COORDINATE_TYPES,
    residual_nlo_metric,
    residual_ntk_statistics,
    residual_vertex,
    residual_vertex_inputs,
)

__all__ = [
    "flow",
    "available_fields",
    "available_memory",
    "estimate_work",
    "fluctuation_ratios",
    "TruncationWarning",
    "WorkEstimate",
]


@dataclass
class _Context:
    network: Network
    inputs: Inputs
    values: dict[str, np.ndarray]
    cache: dict[str, object] = field(default_factory=dict)
    wanted: frozenset[str] = frozenset()  # every field the request will compute
    keep: np.ndarray | None = None  # the layers to return (indices 0..L-1), None: all
    kept: set[str] = field(default_factory=set)  # fields computed at the kept layers only


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
    si = net.activation.scale_invariant is not None
    if not ctx.wanted & _PAIR_CACHE_USERS and (si or ctx.inputs.n_inputs > 1):
        ntk = "Theta" in ctx.wanted
        lam = (net.lambda_b, net.lambda_W) if ntk else (None, None)
        fused = arc_cosine_flow if si else mehler_flow
        # only K and Theta asked for: the layers not kept are never stored
        keep = ctx.keep if ctx.wanted <= {"K", "Theta"} else None
        args = (net.activation, ctx.inputs.gram, net.C_b, net.C_W, net.gamma, *lam)
        closed = fused(*args, keep=keep)
        if closed is not None:  # else the layer-by-layer recursion (see each function)
            if keep is not None:
                ctx.kept |= {"K", "Theta"}
            if ntk:
                ctx.cache["Theta"] = closed[1]
            return {"K": closed[0]}
    if not ctx.wanted & _NTK_FIELDS:
        return {"K": kernel_flow(net.activation, ctx.inputs.gram, net.C_b, net.C_W, net.gamma)}
    pair: list[np.ndarray] = []
    K = kernel_flow(
        net.activation, ctx.inputs.gram, net.C_b, net.C_W, net.gamma, derivative_moments=pair
    )
    ctx.cache["pair"] = pair
    return {"K": K}


@_register(["chi_parallel", "chi_perp"], deps=["K"])
def _susceptibilities(ctx: _Context) -> dict[str, np.ndarray]:
    net = ctx.network
    diag = np.diagonal(ctx.values["K"], axis1=1, axis2=2)  # (L, N)
    # the susceptibility at layer l governs l -> l+1 and uses C_W^(l+1); C_W^(L) at the top
    cw_next = np.append(net.C_W[1:], net.C_W[-1])[:, None]
    hp = helpers(net.activation, diag, np.broadcast_to(cw_next, diag.shape))
    # residual layers shift both susceptibilities by gamma^2 (B.15)-(B.16)
    g2_next = np.append(net.gamma[1:], net.gamma[-1])[:, None] ** 2
    return {"chi_parallel": hp.chi_par + g2_next, "chi_perp": hp.chi_perp + g2_next}


@_register(["K_gamma"], deps=["K"])
def _gamma(ctx: _Context) -> dict[str, np.ndarray]:
    K = ctx.values["K"]
    if K.shape[1] != 2:
        raise ValueError("K_gamma needs exactly two inputs (x_+, x_-)")
    return {"K_gamma": gamma_components(K)}


def _ratios(ctx: _Context) -> list[float]:
    """``n_l/n_{l-1}`` for the step l -> l+1 (index l - 1); 1 at infinite width."""
    w = list(ctx.network.widths)
    w[0] = ctx.inputs.n_in
    return [
        1.0 if (w[ell] is None or w[ell - 1] is None) else w[ell] / w[ell - 1]
        for ell in range(1, len(w) - 1)
    ]


@_register(["V"], deps=["K"])
def _vertex(ctx: _Context) -> dict[str, np.ndarray]:
    net, K = ctx.network, ctx.values["K"]
    N, L = K.shape[1], net.depth
    V = np.zeros((L, N, N, N, N))
    if net.residual:
        # the book's (B.25)-(B.26) miss the same-neuron correlations across layers that the
        # identity branch carries (spec/08 §3.4): single input by Hermite modes, several
        # inputs by the neuron-neuron covariance functional
        if N == 1:
            V[:, 0, 0, 0, 0] = residual_vertex(net.activation, K[:, 0, 0], net.C_W, net.gamma)
            return {"V": V}
        if ctx.wanted & {"A", "B", "D", "F"}:  # V is the (z z)(z z) block of the same pass
            return _residual_statistics(ctx, {"V"})
        return {"V": residual_vertex_inputs(net.activation, K, net.C_W, net.gamma)}
    ratios = _ratios(ctx)
    for ell in range(1, L):
        V[ell] = vertex_step(net.activation, K[ell - 1], V[ell - 1], net.C_W[ell], ratios[ell - 1])
    return {"V": V}


@_register(["G1"], deps=["K", "V"])
def _nlo_metric(ctx: _Context) -> dict[str, np.ndarray]:
    net, K, V = ctx.network, ctx.values["K"], ctx.values["V"]
    L = net.depth
    G1 = np.zeros_like(K)
    # layer 1 is Gaussian: its only 1/n_0 shift is the tuning of its own hyperparameters
    G1[0] = net.C_b1[0] + net.C_W1[0] * ctx.inputs.gram
    ratios = _ratios(ctx)
    if net.residual:  # a neuron's own past enters its metric: the covariance functional
        first = ratios[0] if ratios else 1.0
        args = (net.C_W, net.gamma, G1[0], net.C_b1, net.C_W1, first)
        return {"G1": residual_nlo_metric(net.activation, K, *args)}
    for ell in range(1, L):
        G1[ell] = nlo_metric_step(
            net.activation,
            K[ell - 1],
            V[ell - 1],
            G1[ell - 1],
            net.C_W[ell],
            ratios[ell - 1],
            net.C_b1[ell],
            net.C_W1[ell],
        )
    return {"G1": G1}


_NTK_FIELDS = frozenset({"Theta", "A", "B", "D", "F"})
_PAIR_CACHE_USERS = frozenset({"A", "B", "D", "F", "H1"})
"""Fields whose recursions reuse the kernel pass's ``<sigma sigma>``, ``<sigma' sigma'>``; when
none is requested, K and Theta of several inputs come from the fused flows
:func:`~pdlt.theory.kernel.arc_cosine_flow` (the scale-invariant family) and
:func:`~pdlt.theory.kernel.mehler_flow` (smooth activations, with numba)."""
_NTK_DEPS = {"Theta": set(), "B": {"Theta"}, "F": {"Theta"}, "D": {"Theta"}, "A": {"Theta", "D"}}


def _ntk(ctx: _Context, wanted: set[str]) -> dict[str, np.ndarray]:
    net, K = ctx.network, ctx.values["K"]
    if net.residual and wanted - {"Theta"}:
        return _residual_statistics(ctx, wanted)
    L, N = net.depth, K.shape[1]
    names = set(wanted)
    for w in wanted:
        names |= _NTK_DEPS[w]
    V = ctx.values.get("V")
    pair = ctx.cache.get("pair")
    Theta = np.empty((L, N, N))
    Theta[0] = net.lambda_b[0] + net.lambda_W[0] * ctx.inputs.gram  # (8.23)
    stats = {f: np.zeros((L, N, N, N, N)) for f in names - {"Theta"}}
    ratios = _ratios(ctx)
    for ell in range(1, L):
        prev = {f: stats[f][ell - 1] for f in stats}
        new = ntk_step(
            net.activation,
            K[ell - 1],
            Theta[ell - 1],
            V[ell - 1] if V is not None else None,
            prev,
            net.C_W[ell],
            net.lambda_b[ell],
            net.lambda_W[ell],
            ratios[ell - 1],
            names,
            pair[ell - 1] if pair is not None else None,  # type: ignore[index]
        )
        Theta[ell] = new["Theta"] + net.gamma[ell] ** 2 * Theta[ell - 1]  # residual, (B.3)
        for f in stats:
            stats[f][ell] = new[f]
    return {"Theta": Theta, **stats}


def _residual_statistics(ctx: _Context, extra: set[str]) -> dict[str, np.ndarray]:
    """A, B, D, F (and V if in ``extra``) of a residual network, every wanted one in one pass: a
    neuron's own past NTK and preactivations are carried forward, so they come from the
    covariance functional on the extended (z, zeta, zeta') state."""
    net = ctx.network
    _resolve(ctx, "Theta")
    names = tuple(sorted(((ctx.wanted | extra) & {"A", "B", "D", "F"}) | (extra & {"V"})))
    args = (net.C_W, net.lambda_W, net.gamma, names)
    return residual_ntk_statistics(net.activation, ctx.values["K"], ctx.values["Theta"], *args)


@_register(["Theta"], deps=["K"])
def _theta(ctx: _Context) -> dict[str, np.ndarray]:
    if "Theta" in ctx.cache:  # the scale-invariant family, depth-blocked with K
        return {"Theta": ctx.cache["Theta"]}  # type: ignore[dict-item]
    return _ntk(ctx, {"Theta"})


@_register(["B", "F"], deps=["K"])
def _bf(ctx: _Context) -> dict[str, np.ndarray]:
    return _ntk(ctx, {"B", "F"})


@_register(["A", "D"], deps=["K", "V"])
def _ad(ctx: _Context) -> dict[str, np.ndarray]:
    return _ntk(ctx, {"A", "D"})


@_register(["H1"], deps=["K", "V", "G1", "Theta", "D", "F"])
def _nlo_ntk(ctx: _Context) -> dict[str, np.ndarray]:
    net, v = ctx.network, ctx.values
    H1 = np.zeros_like(v["K"])  # Theta^(1) is deterministic (8.23)
    pair = ctx.cache.get("pair")
    ratios = _ratios(ctx)
    for ell in range(1, net.depth):
        i = ell - 1
        H1[ell] = nlo_ntk_step(
            net.activation,
            v["K"][i],
            v["Theta"][i],
            v["V"][i],
            v["G1"][i],
            v["D"][i],
            v["F"][i],
            H1[i],
            net.C_W[ell],
            net.lambda_W[ell],
            ratios[i],
            net.C_W1[ell],
            pair[i] if pair is not None else None,  # type: ignore[index]
        )
    return {"H1": H1}


def _dntk_moments(ctx: _Context) -> list[DntkMoments]:
    """Expectations over ``K^(l)``, ``l = 1..L-1``, shared by P, Q and R, S, T, U."""
    if "dntk_moments" not in ctx.cache:
        act, K = ctx.network.activation, ctx.values["K"]
        ctx.cache["dntk_moments"] = [dntk_moments(act, K[ell]) for ell in range(K.shape[0] - 1)]
    return ctx.cache["dntk_moments"]  # type: ignore[return-value]


@_register(["P", "Q"], deps=["K", "Theta", "B", "F"])
def _dntk(ctx: _Context) -> dict[str, np.ndarray]:
    net, v = ctx.network, ctx.values
    P, Q = np.zeros_like(v["B"]), np.zeros_like(v["B"])  # P^(1) = Q^(1) = 0 (11.26)
    ratios = _ratios(ctx)
    for ell, mom in enumerate(_dntk_moments(ctx), start=1):
        P[ell], Q[ell] = dntk_step(
            mom,
            v["Theta"][ell - 1],
            v["B"][ell - 1],
            v["F"][ell - 1],
            v["F"][ell],
            P[ell - 1],
            Q[ell - 1],
            net.C_W[ell],
            net.lambda_W[ell],
            ratios[ell - 1],
        )
    return {"P": P, "Q": Q}


@_register(["R", "S", "T", "U"], deps=["K", "Theta", "B", "F", "P", "Q"])
def _ddntk(ctx: _Context) -> dict[str, np.ndarray]:
    net, v = ctx.network, ctx.values
    out = {k: np.zeros_like(v["B"]) for k in "RSTU"}  # zero at l = 1 (spec/07 §3.1)
    ratios = _ratios(ctx)
    for ell, mom in enumerate(_dntk_moments(ctx), start=1):
        prev = {k: v[k][ell - 1] for k in "BFPQ"} | {k: out[k][ell - 1] for k in "RSTU"}
        new = ddntk_step(
            net.activation,
            v["K"][ell - 1],
            mom,
            v["Theta"][ell - 1],
            prev,
            net.C_W[ell],
            net.lambda_W[ell],
            ratios[ell - 1],
        )
        for k in "RSTU":
            out[k][ell] = new[k]
    return out


def flow(
    network: Network,
    inputs: np.ndarray | Inputs | None = None,
    *,
    k1: float | None = None,
    fields: Sequence[str] = ("K", "chi_parallel", "chi_perp"),
    layers: Sequence[int] | None = None,
    max_memory: float | None = None,
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
    layers : sequence of int, optional
        The layers to return, numbered ``1..L`` as in the book (negative numbers count from
        the top: ``-1`` is ``L``); default all.  When only ``K`` and ``Theta`` are asked for
        (several inputs, or the ReLU family), the other layers are never stored: the last
        layer alone takes ``1/L`` of the memory (and of the time spent writing it), so many
        more inputs fit -- the kernels of kernel regression, as Neural Tangents' ``kernel_fn``
        gives them.  Other fields are computed at every layer and then selected.
    max_memory : float, optional
        Bytes the computation may use (``math.inf``: no limit).  Default: the environment
        variable ``PDLT_MAX_MEMORY`` if set, else the memory available now
        (:func:`available_memory`).

    Returns
    -------
    Flow
        ``K`` has shape (L, N, N); ``chi_parallel`` and ``chi_perp`` (L, N);
        ``K_gamma`` (L, 3) for two inputs -- with ``len(layers)`` in place of ``L`` when
        ``layers`` is given (``Flow.layers`` says which).

    Raises
    ------
    ValueError
        For unknown fields, bad inputs, or a request whose :func:`estimate_work` exceeds the
        memory limit (the message gives the estimate and the limit).
    TypeError
        If ``network`` is not a :class:`Network` or ``fields`` is a string.

    Examples
    --------
    >>> from pdlt import Network, flow
    >>> f = flow(Network("tanh", depth=3), k1=1.0)
    >>> f.single("K").round(6)
    array([1.      , 0.394294, 0.23645 ])
    >>> flow(Network("tanh", depth=3), k1=1.0, fields=("K",), layers=[-1]).single("K").round(6)
    array([0.23645])
    """
    if not isinstance(network, Network):
        raise TypeError(f"network must be a pdlt.Network, got {type(network).__name__}")
    fields = _field_names(fields)
    inp = as_inputs(network, inputs, k1)
    keep = _layer_indices(network.depth, layers)
    if any(f in "RSTU" for f in fields):
        require_ddntk(network.activation)
    _check_memory(estimate_work(network, inp, fields=fields, layers=layers), max_memory)
    if network.residual:
        _check_residual(network, fields)
    ctx = _Context(network, inp, {}, wanted=frozenset(_closure(fields)), keep=keep)
    if any(f in _FINITE_WIDTH for f in fields):
        _check_aspect_ratio(network)
    _prefetch_four_point(ctx, ctx.wanted)
    for name in fields:
        _resolve(ctx, name)
    values = {name: ctx.values[name] for name in fields}
    if keep is not None:
        values = {k: v if k in ctx.kept else v[keep] for k, v in values.items()}
    meta = {"quadrature": dict(DEFAULT_RULE), "order": "leading (infinite width)"}
    ell = None if keep is None else keep + 1
    return Flow(network, inp, values, kind="theory", meta=meta, layers=ell)


def _layer_indices(L: int, layers: Sequence[int] | None) -> np.ndarray | None:
    """``flow``'s ``layers`` (1..L, or negative from the top) as sorted indices 0..L-1 of the
    layer axis; None for all layers."""
    if layers is None:
        return None
    if isinstance(layers, str) or not isinstance(layers, Sequence | np.ndarray):
        raise TypeError(f"layers must be a sequence of layer numbers, got {layers!r}")
    ell = np.asarray(layers)
    if ell.ndim != 1 or ell.size == 0 or not np.issubdtype(ell.dtype, np.integer):
        raise ValueError(f"layers must be a non-empty list of integers, got {layers!r}")
    bad = ell[(ell == 0) | (ell > L) | (ell < -L)]
    if bad.size:
        raise ValueError(
            f"layer {bad[0]} does not exist: layers are 1..{L} (or -1..-{L} from the top)"
        )
    keep = np.unique(np.where(ell > 0, ell - 1, ell + L))
    return None if len(keep) == L else keep


# the four-point expectations <s^(o0)_a s^(o1)_b s^(o2)_c s^(o3)_d>_K each field's step asks for
_FOUR_POINT_ORDERS: dict[str, tuple[tuple[int, int, int, int], ...]] = {
    "V": ((0, 0, 0, 0),),
    "B": ((1, 1, 1, 1),),
    "F": ((0, 0, 1, 1),),
    "D": ((0, 0, 0, 0), (0, 0, 1, 1)),
    "A": ((0, 0, 0, 0), (0, 0, 1, 1), (1, 1, 1, 1)),
    "P": ((2, 1, 1, 0),),
    "Q": ((2, 1, 1, 0),),
    **{f: ((0, 0, 1, 1), (1, 1, 1, 1), (2, 2, 1, 1), (3, 1, 1, 1), (2, 1, 1, 0)) for f in "RSTU"},
}


def _prefetch_four_point(ctx: _Context, names: Sequence[str]) -> None:
    """Integrate, per layer, every four-point expectation the requested fields will ask for
    in one call, so they share quadrature grids (about half the time of asking one order at a
    time), when they all fit in the moment cache; the steps then find them there."""
    net = ctx.network
    if net.residual:
        return
    act = net.activation
    smooth = act.smooth or act.polynomial_degree is not None
    orders = sorted(
        {o for f in names for o in _FOUR_POINT_ORDERS.get(f, ()) if smooth or max(o) < 2}
    )
    if not orders or len(orders) * (net.depth - 1) > _MOMENT_CACHE_SIZE:
        return
    _resolve(ctx, "K")
    for K in ctx.values["K"][:-1]:
        four_point_moments(act, K, orders)


_RESIDUAL_FIELDS = (
    "K",
    "chi_parallel",
    "chi_perp",
    "K_gamma",
    "Theta",
    "V",
    "G1",
    "A",
    "B",
    "D",
    "F",
)


def _check_residual(network: Network, fields: Sequence[str]) -> None:
    """Refuse what is not known for residual networks (appendix B): the book extends only K
    (B.11) and the vertex (B.25)-(B.26); Theta follows from (B.3) at leading order; the vertex
    (corrected, spec/08 §3.4; several inputs: :func:`residual_vertex_inputs`), G1 and the NTK
    statistics (:func:`residual_ntk_statistics`) are derived here and need equal hidden
    widths."""
    other = [f for f in fields if f not in _RESIDUAL_FIELDS]
    if other:
        raise ValueError(
            f"{', '.join(other)}: not available for residual networks (gamma != 0); the "
            f"residual theory covers {', '.join(_RESIDUAL_FIELDS)} (appendix B)"
        )
    for name in ("V", "G1", "A", "B", "D", "F"):
        if name in fields and len(set(network.hidden_widths)) > 1:
            raise ValueError(f"{name} of a residual network needs equal hidden widths")
    act = network.activation
    if "G1" in fields and not act.smooth and act.scale_invariant is None:
        raise ValueError(
            f"G1 of a residual network needs a smooth activation or the ReLU family (its "
            f"recursion takes s''(z_a) s(z_b) across layers); {act.name} has a kink where it "
            f"does not vanish"
        )


def _field_names(fields: Sequence[str]) -> tuple[str, ...]:
    """``fields`` checked: a sequence of known field names (a bare string is refused)."""
    if isinstance(fields, str):
        raise TypeError(f"fields must be a sequence of names, e.g. ({fields!r},), not a string")
    names = tuple(fields)
    unknown = [repr(f) for f in names if f not in _PRODUCERS]
    if unknown:
        raise ValueError(
            f"unknown field(s) {', '.join(unknown)}; available: {', '.join(available_fields())}"
        )
    if not names:
        raise ValueError(f"no fields requested; available: {', '.join(available_fields())}")
    return names


# --------------------------------------------------------------------------------------------
# Memory and work, estimated before anything is computed
# --------------------------------------------------------------------------------------------

_FOUR_INDEX = {"V", "A", "B", "D", "F", "P", "Q", "R", "S", "T", "U"}
_QUADRATURE_BYTES = 256 * 2**20
"""The Gaussian engine's chunked quadrature grids (about 150 MB measured, rounded up)."""
_STEP_COPIES_4 = 32
"""Temporaries of one step of a four-index recursion, in (N, N, N, N) arrays of 8 bytes."""
_STEP_COPIES_2 = 16
"""Temporaries of one step of the kernel recursion, in (N, N) arrays."""
_ORDERS_PER_LAYER = 8
"""Most four-point moment tensors one layer's steps ask for (they are cached)."""


@dataclass(frozen=True)
class WorkEstimate:
    """The size of a :func:`flow` request, known before it runs.

    Attributes
    ----------
    bytes : int
        Peak memory: every field computed (dependencies included), the caches of the
        recursions, one step's temporaries and the quadrature grids.
    integrals_4d : int
        Distinct four-dimensional Gaussian integrals (one per set of four distinct inputs and
        layer, each shared by all its integrands); they dominate the time.
    fields : tuple of str
        Every field that will be computed, dependencies included.
    """

    bytes: int
    integrals_4d: int
    fields: tuple[str, ...]

    def __str__(self) -> str:
        return (
            f"about {format_bytes(self.bytes)} of memory and {self.integrals_4d:,} "
            "four-dimensional Gaussian integrals"
        )


def _closure(names: Sequence[str]) -> tuple[str, ...]:
    """Every field computed for ``names``: dependencies and the fields produced alongside."""
    done: dict[str, None] = {}

    def visit(name: str) -> None:
        if name in done:
            return
        deps, producer = _PRODUCERS[name]
        for dep in deps:
            visit(dep)
        for other, (_, fn) in _PRODUCERS.items():
            if fn is producer:
                done[other] = None

    for name in names:
        visit(name)
    return tuple(done)


def _entries_per_layer(name: str, N: int) -> int:
    if name in _FOUR_INDEX:
        return N**4
    if name in ("chi_parallel", "chi_perp"):
        return N
    return 3 if name == "K_gamma" else N * N


def estimate_work(
    network: Network,
    inputs: np.ndarray | Inputs | None = None,
    *,
    k1: float | None = None,
    fields: Sequence[str] = ("K", "chi_parallel", "chi_perp"),
    layers: Sequence[int] | None = None,
) -> WorkEstimate:
    """Memory and number of four-dimensional integrals that ``flow(...)`` would need.

    Parameters are those of :func:`flow`.  Nothing is integrated.

    Examples
    --------
    >>> import numpy as np
    >>> from pdlt import Network
    >>> est = estimate_work(Network("tanh", depth=10, width=100), np.eye(8), fields=("V",))
    >>> est.integrals_4d  # 9 layer steps times C(8, 4) sets of four inputs
    630
    """
    names = _closure(_field_names(fields))
    N, L = as_inputs(network, inputs, k1).n_inputs, network.depth
    keep = _layer_indices(L, layers)
    # K and Theta alone keep only the layers asked for (the fused flows)
    S = L if keep is None or not set(names) <= {"K", "Theta"} else len(keep)
    stored = sum(S * _entries_per_layer(f, N) for f in names)
    if _FOUR_INDEX.intersection(names):
        cached = min(_MOMENT_CACHE_SIZE, _ORDERS_PER_LAYER * (L - 1)) + (L - 1) * ("P" in names)
        work = (cached + _STEP_COPIES_4) * N**4
        integrals = (L - 1) * math.comb(N, 4)
    else:
        work, integrals = _STEP_COPIES_2 * N * N, 0
    if network.residual and N > 1:
        # the covariance functional keeps a dense (M, M, M, M) tensor per pair of labels
        # (layers still to come), M = N per coordinate type (z; zeta; zeta')
        types = [COORDINATE_TYPES[f] for f in names if f in COORDINATE_TYPES]
        if types:
            work += (L * L + 2 * L) * (max(types) * N) ** 4
            # one neuron at two layers: four distinct samples a < b, c < d per pair of layers
            integrals += (L - 1) * (L - 2) // 2 * math.comb(N, 2) ** 2
    return WorkEstimate(8 * (stored + work) + _QUADRATURE_BYTES, integrals, names)


def _check_memory(estimate: WorkEstimate, max_memory: float | None) -> None:
    """Refuse, with the estimate, a request that would not fit in memory."""
    limit, source = memory_limit(max_memory)
    if limit is None or estimate.bytes <= limit:
        return
    have = "is available" if source == "available" else f"is {source}"
    raise ValueError(
        f"this flow needs {estimate} ({', '.join(estimate.fields)}), but only "
        f"{format_bytes(limit)} {have}: use fewer inputs, layers or fields, or allow more "
        f"with flow(..., max_memory=BYTES) or {MEMORY_ENV}=BYTES"
    )


_FINITE_WIDTH = {"V", "G1", "H1", "A", "B", "D", "F", "P", "Q", "R", "S", "T", "U"}
_TRUSTED_ASPECT_RATIO = 0.25


class TruncationWarning(UserWarning):
    """The 1/n expansion is being used where its truncation is not trustworthy."""


def _check_aspect_ratio(network: Network) -> None:
    """Warn (once per network) when r = L/n is too large for a truncated 1/n expansion."""
    import warnings

    r = network.aspect_ratio
    if r > _TRUSTED_ASPECT_RATIO:
        warnings.warn(
            f"aspect ratio r = L/n = {r:.3g} > {_TRUSTED_ASPECT_RATIO}: the finite-width "
            "results are a truncated 1/n expansion whose neglected terms grow like r^2 "
            "(book §3.4, (0.19)); do not trust them quantitatively at this depth and width",
            TruncationWarning,
            stacklevel=3,
        )


def _resolve(ctx: _Context, name: str) -> None:
    if name in ctx.values:
        return
    deps, producer = _PRODUCERS[name]
    for dep in deps:
        _resolve(ctx, dep)
    if name not in ctx.values:  # a dependency's producer may have made it alongside
        ctx.values.update(producer(ctx))


def fluctuation_ratios(result: Flow, a: int = 0) -> dict[str, np.ndarray]:
    """The book's dimensionless finite-width ratios for input ``a``, per layer (9.23)-(9.25).

    ``V/(n K^2)``, ``A/(n Theta^2)``, ``B/(n Theta^2)``, ``D/(n K Theta)``, ``F/(n K Theta)``,
    ``P/(n Theta^2)``, ``Q/(n Theta^2)`` (11.62) and ``X K/(n Theta^3)`` for ``X = R, S, T, U``
    (∞.19)-(∞.22), with ``n = n_{l-1}``, for the fields ``result`` has; at criticality each
    grows like ``l/n`` (scaling laws (9.26)-(9.27), (11.65), (∞.38)) except ``U``, which decays.
    Also ``grad_factor``: ``prod_{l'=l}^{L-1} chi_perp^(l')``, the mean squared chain-rule
    factor ``E||dz^(L)/dz^(l)||^2/n_L`` at infinite width (9.93), whose growth or decay is
    the exploding/vanishing gradient problem.
    """
    widths = result.network.widths
    if any(n is None for n in widths[:-1][1:]):
        raise ValueError("fluctuation ratios need finite hidden widths")
    n = np.array([float(result.inputs.n_in)] + [float(w) for w in widths[1:-1]])
    out: dict[str, np.ndarray] = {}

    def diag(name: str) -> np.ndarray:
        v = result[name]
        return v[(slice(None),) + (a,) * (v.ndim - 1)]

    K = diag("K") if "K" in result else None
    T = diag("Theta") if "Theta" in result else None
    with np.errstate(divide="ignore", invalid="ignore"):
        if "V" in result and K is not None:
            out["V/(nK^2)"] = diag("V") / (n * K**2)
        for name in ("A", "B"):
            if name in result and T is not None:
                out[f"{name}/(nTheta^2)"] = diag(name) / (n * T**2)
        for name in ("D", "F"):
            if name in result and T is not None and K is not None:
                out[f"{name}/(nKTheta)"] = diag(name) / (n * K * T)
        for name in ("P", "Q"):
            if name in result and T is not None:
                out[f"{name}/(nTheta^2)"] = diag(name) / (n * T**2)
        for name in ("R", "S", "T", "U"):
            if name in result and T is not None and K is not None:
                out[f"{name}K/(nTheta^3)"] = diag(name) * K / (n * T**3)
    if "chi_perp" in result:
        chi = result["chi_perp"][:, a]
        out["grad_factor"] = np.append(np.cumprod(chi[:-1][::-1])[::-1], 1.0)
    return out
