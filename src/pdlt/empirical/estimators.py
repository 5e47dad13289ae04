"""Estimators named like the theory: the empirical K, V, Theta, A, B, D, F, P, Q, R, S, T, U.

``measure(network, inputs, size=M)`` samples ``M`` real networks, computes per-network
observables by autodiff (:mod:`pdlt.empirical.observables`), accumulates per-network
*features* in a blocked :class:`~pdlt.empirical.statistics.Accumulator`, and returns a
:class:`~pdlt.results.Flow` with the same field names, shapes and index conventions as the
theory, each with its standard error.

Estimators at layer ``l`` (``N_prev = n_{l-1}``; pair averages run over neurons ``i != j`` of
one network, which are exchangeable; spec/02 §12, spec/05 §14, spec/06 §9, spec/07 §2):

========  ==========================================================================  ========
field     estimator                                                                   error
========  ==========================================================================  ========
K         ``E[G-hat^(l)]`` -- the mean metric G (4.72), Rao-Blackwellized                mean
V         ``N_prev Cov(G-hat_ab, G-hat_cd)`` (4.76); residual layers: see below          jackknife
Theta     ``E[H-hat_ii]`` (8.58)                                                        mean
A         ``N_prev (E[H-hat_ii H-hat_jj] - E[H-hat_ii] E[H-hat_jj])`` (8.82)              jackknife
B         ``B[a,b,c,d] = N_prev E[H-hat_{ij;ac} H-hat_{ij;bd}]`` (8.82), spec/05 §1.1      mean
D         ``N_prev (E[z_ia z_ib H-hat_jj;cd] - E[z_ia z_ib] E[H-hat_jj;cd])`` (8.67)       jackknife
F         ``F[a,b,c,d] = N_prev E[z_ia z_jc H-hat_{ij;bd}]`` (8.67), spec/05 §1.1          mean
P         ``N_prev E[dH-hat_{jkk;abc} z_{j;d}]`` (11.45)                                 mean
Q         ``N_prev E[dH-hat_{jjk;abc} z_{k;d}]`` (11.45)                                 mean
R         ``N_prev E[ddI_{jjkk;abcd}]`` (infinity.11)                                    mean
S         ``N_prev E[ddII_{jjkk;abcd}]`` (infinity.12)                                   mean
T         ``T[a,b,c,d] = N_prev E[ddII_{jkjk;a d b c}]`` (infinity.12)                   mean
U         ``U[a,b,c,d] = N_prev E[ddII_{jkkj;a c d b}]`` (infinity.12)                   mean
========  ==========================================================================  ========

The dNTK and ddNTKs are computed for a fixed subset of ``neurons`` per layer (by
exchangeability the estimators stay unbiased; more neurons reduce the noise).  Fields that
need two neurons cannot be measured at a layer of width one (e.g. the output with
``n_out = 1``).

Residual networks (B.3): at a layer with ``gamma != 0`` the conditional metric
``X_i = E[z_i z_i | layer l-1] = G-hat + gamma^2 z^(l-1)_i z^(l-1)_i`` depends on the neuron,
so ``K = E[avg_i X_i]`` and ``V = N_prev (E[X_i X_j] - E[X_i] E[X_j])`` over distinct neurons
``i != j`` (conditionally independent given layer ``l-1``, so this is the connected four-point
function of the preactivations, (4.77)).  The NTK is measured by the same autodiff as for
vanilla networks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._memory import require_memory
from .._progress import Progress
from ..network import Inputs, Network, as_inputs
from ..results import Flow
from .checkpoint import CheckpointDir, array_digest
from .distributed import map_shards
from .ensemble import Ensemble, forward, resolve_dtype
from .observables import ddntk, dntk, ntk, stochastic_metric
from .statistics import Accumulator, covariance_estimate, fit_inverse_width

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "measure",
    "nlo_metric",
    "nlo_ntk_mean",
    "accumulate",
    "estimate_fields",
    "MEASURABLE",
    "GROUPS",
]

GROUPS: dict[str, tuple[str, ...]] = {
    "metric": ("K", "V"),
    "ntk": ("Theta", "A", "B", "D", "F"),
    "dntk": ("P", "Q"),
    "ddntk": ("R", "S", "T", "U"),
}
MEASURABLE = tuple(f for fs in GROUPS.values() for f in fs)
_PAIR_FIELDS = {"A", "B", "D", "F", "P", "Q", "R", "S", "T", "U"}
_ELEMENT_BUDGET = 20_000_000


def _groups(fields: Sequence[str]) -> set[str]:
    unknown = [f for f in fields if f not in MEASURABLE]
    if unknown:
        raise ValueError(
            f"cannot measure {', '.join(unknown)}; measurable fields: {', '.join(MEASURABLE)}"
        )
    return {g for g, fs in GROUPS.items() if any(f in fs for f in fields)}


def _check_widths(network: Network, fields: Sequence[str], neurons: int) -> None:
    needs_pairs = [f for f in fields if f in _PAIR_FIELDS]
    if not needs_pairs:
        return
    for ell, n in enumerate(network.widths[1:], start=1):
        if n is not None and n < 2:
            raise ValueError(
                f"{', '.join(needs_pairs)} need two neurons in every layer, but layer {ell} has "
                f"width {n}; use n_out >= 2 (--n-out 2)"
            )
    if neurons < 2 and any(f in GROUPS["dntk"] + GROUPS["ddntk"] for f in fields):
        raise ValueError("dNTK/ddNTK estimators need neurons >= 2")


def _pair_mean_outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``avg_{i != j} a_i (x) b_j`` for a, b of shape (M, n, *s): shape (M, *s, *s)."""
    n = a.shape[1]
    return (_outer(a.sum(1), b.sum(1)) - _outer_sum(a, b)) / (n * (n - 1))


def _outer(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-network outer product of (M, *s) and (M, *t): (M, *s, *t)."""
    left = a.reshape(a.shape + (1,) * (b.ndim - 1))
    return left * b.reshape(b.shape[:1] + (1,) * (a.ndim - 1) + b.shape[1:])


def _outer_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum_i a_i (x) b_i`` for (M, n, *s) and (M, n, *t): (M, *s, *t)."""
    M, n = a.shape[:2]
    af = a.reshape(M, n, -1)
    bf = b.reshape(M, n, -1)
    return torch.einsum("mip,miq->mpq", af, bf).reshape((M,) + a.shape[2:] + b.shape[2:])


def _features(
    params: dict[str, torch.Tensor],
    x: torch.Tensor,
    network: Network,
    fields: set[str],
    neurons: int,
    ntk_method: str,
) -> dict[str, np.ndarray]:
    """Per-network features of one chunk of networks (only those ``fields`` need), as float64
    numpy arrays."""
    groups = _groups(sorted(fields))
    L = network.depth
    zs = forward(params, x, network)
    feats: dict[str, torch.Tensor] = {}
    if "metric" in groups:
        for ell, G in enumerate(stochastic_metric(zs, x, network), start=1):
            gamma = float(network.gamma[ell - 1])
            if gamma:
                # residual layer: E[z_ia z_ib | layer l-1] = G-hat_ab + gamma^2 z_ia z_ib depends
                # on the neuron, so V comes from distinct neurons, n E[X_i X_j] - E[X] E[X]
                zp = zs[ell - 2].transpose(1, 2)  # (M, n, N)
                X = G[:, None] + gamma**2 * zp[:, :, :, None] * zp[:, :, None, :]
                feats[f"{ell}:G"] = X.mean(1)
                feats[f"{ell}:GG"] = _pair_mean_outer(X, X)
            else:
                feats[f"{ell}:G"] = G
                feats[f"{ell}:GG"] = _outer(G, G)
    for ell in range(1, L + 1):
        z = zs[ell - 1].transpose(1, 2)  # (M, n, N)
        n = z.shape[1]
        if "ntk" in groups:
            H = ntk(params, x, network, ell, method=ntk_method)  # (M, n, n, N, N)
            Hd = torch.diagonal(H, dim1=1, dim2=2).permute(0, 3, 1, 2)  # (M, n, N, N)
            feats[f"{ell}:Hd"] = Hd.mean(1)
            if n >= 2:
                zz = z[:, :, :, None] * z[:, :, None, :]  # (M, n, N, N)
                if "A" in fields:
                    feats[f"{ell}:HH"] = _pair_mean_outer(Hd, Hd)
                if "D" in fields:
                    feats[f"{ell}:zz"] = zz.mean(1)
                    feats[f"{ell}:DD"] = _pair_mean_outer(zz, Hd)
                eye = torch.eye(n, dtype=H.dtype, device=H.device)[None, :, :, None, None]
                Hoff = H * (1 - eye)
                M = H.shape[0]
                if "B" in fields:
                    Hf = Hoff.reshape(M, n * n, -1)
                    BB = torch.einsum("mkp,mkq->mpq", Hf, Hf) / (n * (n - 1))
                    feats[f"{ell}:BB"] = BB.reshape(M, *H.shape[3:], *H.shape[3:])
                if "F" in fields:
                    # FF[a, c, b, d] = avg_{i != j} z_{i;a} z_{j;c} H_{ij;bd}
                    Y = torch.einsum("mjc,mijbd->micbd", z, Hoff)
                    feats[f"{ell}:FF"] = torch.einsum("mia,micbd->macbd", z, Y) / (n * (n - 1))
        if ("dntk" in groups or "ddntk" in groups) and n >= 2:
            sub = list(range(min(n, neurons)))
            m = len(sub)
            zs_sub = z[:, sub, :]  # (M, m, N)
            off = 1 - torch.eye(m, dtype=z.dtype, device=z.device)
            if "P" in fields or "Q" in fields:
                dH = dntk(params, x, network, ell, sub)  # (M, i0, i1, i2, d0, d1, d2)
                # P: i0 = j, i1 = i2 = k != j, times z_{j}
                dH_jkk = torch.diagonal(dH, dim1=2, dim2=3)  # (M, i0, d0, d1, d2, k)
                dH_jkk = dH_jkk.permute(0, 1, 5, 2, 3, 4)  # (M, j, k, d0, d1, d2)
                feats[f"{ell}:PP"] = torch.einsum("mjkabc,mjd,jk->mabcd", dH_jkk, zs_sub, off) / (
                    m * (m - 1)
                )
                # i0 = i1 = j, i2 = k: diagonal gives (M, k, d0, d1, d2, j)
                dH_jjk = torch.diagonal(dH, dim1=1, dim2=2).permute(0, 5, 1, 2, 3, 4)
                feats[f"{ell}:QQ"] = torch.einsum("mjkabc,mkd,jk->mabcd", dH_jjk, zs_sub, off) / (
                    m * (m - 1)
                )
            if "ddntk" in groups:
                dI, dII = ddntk(params, x, network, ell, sub)
                norm = m * (m - 1)
                patterns = {
                    "R": (dI, "mjjkkabcd"),
                    "S": (dII, "mjjkkabcd"),
                    "T": (dII, "mjkjkabcd"),
                    "U": (dII, "mjkkjabcd"),
                }
                for name, (t, spec) in patterns.items():
                    if name in fields:
                        feats[f"{ell}:{name * 2}"] = (
                            torch.einsum(f"{spec},jk->mabcd", t, off) / norm
                        )
    return {k: v.detach().to("cpu", torch.float64).numpy() for k, v in feats.items()}


def require_ensemble_memory(network: Network, networks: int, dtype: str) -> None:
    """Refuse, with the estimate, an ensemble whose block of ``networks`` networks would not fit
    in memory: parameters, their gradients and a workspace of the same size (float32: 4 bytes,
    float64: 8 per number)."""
    widths = [int(n) for n in network.widths]  # type: ignore[arg-type]
    params = sum(widths[i] * (widths[i - 1] + 1) for i in range(1, len(widths)))
    itemsize = 4 if str(dtype).endswith("32") else 8
    require_memory(
        3.0 * networks * params * itemsize,
        f"a block of {networks} networks with widths {tuple(widths)} ({params:,} parameters each)",
        "use smaller widths (or a smaller block_size)",
    )


def _chunk_size(network: Network, n_inputs: int, groups: set[str], neurons: int) -> int:
    """Networks per compute chunk so the largest per-chunk tensor stays within budget."""
    widths = [int(n) for n in network.widths]  # type: ignore[arg-type]
    N = n_inputs
    per_net = max(widths) * N * 2
    if "ntk" in groups or "metric" in groups:
        per_net = max(per_net, N**4 * 4)
    if "ntk" in groups:
        P = sum(widths[i] * (widths[i - 1] + 1) for i in range(1, len(widths)))
        per_net = max(per_net, max(widths) ** 2 * N**2 * 4, N * max(widths) * P // 4)
    if "dntk" in groups or "ddntk" in groups:
        m = neurons
        P = sum(widths[i] * (widths[i - 1] + 1) for i in range(1, len(widths)))
        per_net = max(per_net, (m * N) ** 2 * P, (m * N) ** 4 * 4)
    return max(1, _ELEMENT_BUDGET // max(per_net, 1))


def accumulate(
    ensemble: Ensemble,
    inputs: Inputs,
    fields: Sequence[str],
    *,
    neurons: int = 4,
    blocks: Sequence[int] | None = None,
    accumulator: Accumulator | None = None,
    progress: bool | None = None,
    ntk_method: str = "structured",
    scheduler: str | Client | None = None,
    on_update: Callable[[Accumulator], None] | None = None,
) -> tuple[Accumulator, bool]:
    """Accumulate per-network features of ``blocks`` (default: all) of ``ensemble``.

    The work is a map-reduce over shards of whole blocks (:func:`~pdlt.empirical.distributed.
    map_shards`).  On a Dask cluster (``scheduler``) or with ``on_update`` (checkpointing),
    every block is its own shard, the unit of progress; otherwise consecutive small blocks are
    computed together, for speed.  Each network's features are computed independently of the
    other networks in its batch, and blocks are reduced in sorted order, so the result is
    bit-identical in every case, for any number of workers.

    Parameters
    ----------
    scheduler : str or distributed.Client, optional
        Address of a Dask scheduler (or a client) to run the blocks on; default in-process.
    on_update : callable, optional
        Called with the accumulator after each completed block (e.g. to checkpoint it).

    Returns
    -------
    accumulator : Accumulator
    interrupted : bool
        True if a KeyboardInterrupt stopped the run; the blocks completed so far are kept.
    """
    network = ensemble.network
    groups = _groups(fields)
    _check_widths(network, fields, neurons)
    acc = accumulator if accumulator is not None else Accumulator()
    todo = [
        b
        for b in (range(ensemble.n_blocks) if blocks is None else blocks)
        if b not in set(acc.blocks)
    ]
    chunk = _chunk_size(network, inputs.n_inputs, groups, neurons)
    if scheduler is None and on_update is None:
        # several small blocks are computed together (the unit of seeding stays the block)
        shards = _batches(todo, [ensemble.block_len(b) for b in todo], chunk)
    else:
        shards = [[b] for b in todo]
    fn = partial(
        _shard_statistics,
        ensemble=ensemble,
        x=inputs.x,
        fields=tuple(fields),
        neurons=neurons,
        ntk_method=ntk_method,
        chunk=chunk,
    )
    interrupted = False
    with Progress(len(todo), "measuring", enabled=progress) as bar:

        def collect(_: int, part: Accumulator) -> None:
            acc.update(part)
            bar.update(len(part.blocks))
            if on_update is not None:
                on_update(acc)

        try:
            map_shards(fn, shards, collect, scheduler=scheduler)
        except KeyboardInterrupt:
            interrupted = True
    return acc, interrupted


def _shard_statistics(
    shard: Sequence[int],
    *,
    ensemble: Ensemble,
    x: np.ndarray,
    fields: tuple[str, ...],
    neurons: int,
    ntk_method: str,
    chunk: int,
) -> Accumulator:
    """Features of the blocks of one shard, accumulated per block (runs on any worker).

    The blocks' networks are concatenated and computed ``chunk`` networks at a time.
    """
    network = ensemble.network
    xt = torch.tensor(x, dtype=resolve_dtype(ensemble.dtype), device=torch.device(ensemble.device))
    params = [ensemble.params(b) for b in shard]
    cat = {k: torch.cat([p[k] for p in params]) for k in params[0]}
    m = cat[next(iter(cat))].shape[0]
    parts = [
        _features(
            {k: v[s : s + chunk] for k, v in cat.items()},
            xt,
            network,
            set(fields),
            neurons,
            ntk_method,
        )
        for s in range(0, m, chunk)
    ]
    feats = {k: np.concatenate([f[k] for f in parts]) for k in parts[0]}
    acc = Accumulator()
    start = 0
    for b in shard:
        stop = start + ensemble.block_len(b)
        acc.add(b, {k: v[start:stop] for k, v in feats.items()})
        start = stop
    return acc


def _batches(blocks: Sequence[int], lengths: Sequence[int], chunk: int) -> list[list[int]]:
    """Consecutive runs of blocks whose networks fit in one compute chunk."""
    out: list[list[int]] = []
    size = 0
    for b, m in zip(blocks, lengths, strict=True):
        if out and size + m <= chunk:
            out[-1].append(b)
            size += m
        else:
            out.append([b])
            size = m
    return out


def estimate_fields(
    acc: Accumulator, network: Network, fields: Sequence[str]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Turn accumulated features into per-layer estimates and standard errors.

    Returns
    -------
    values, stderr : dict of str to ndarray
        Each of shape (L, ...) in the theory's conventions.
    """
    L = network.depth
    widths = network.widths
    values: dict[str, list[np.ndarray]] = {f: [] for f in fields}
    errors: dict[str, list[np.ndarray]] = {f: [] for f in fields}

    def put(name: str, value: np.ndarray, err: np.ndarray) -> None:
        values[name].append(np.asarray(value, dtype=np.float64))
        errors[name].append(np.asarray(err, dtype=np.float64))

    perm = {"B": "acbd->abcd", "F": "acbd->abcd", "T": "adbc->abcd", "U": "acdb->abcd"}
    for ell in range(1, L + 1):
        n_prev = float(widths[ell - 1])  # type: ignore[arg-type]
        for f in fields:
            key = f"{ell}:"
            if f == "K":
                put(f, acc.mean(key + "G"), acc.stderr(key + "G"))
            elif f == "V" and network.gamma[ell - 1]:
                est = acc.estimate(_centered(key + "GG", key + "G", key + "G", n_prev))
                put(f, est.value, est.stderr)
            elif f == "V":
                est = covariance_estimate(acc, key + "G", key + "G", key + "GG", scale=n_prev)
                put(f, est.value, est.stderr)
            elif f == "Theta":
                put(f, acc.mean(key + "Hd"), acc.stderr(key + "Hd"))
            elif f == "A":
                est = acc.estimate(_centered(key + "HH", key + "Hd", key + "Hd", n_prev))
                put(f, est.value, est.stderr)
            elif f == "D":
                est = acc.estimate(_centered(key + "DD", key + "zz", key + "Hd", n_prev))
                put(f, est.value, est.stderr)
            else:
                feat = {
                    "B": "BB",
                    "F": "FF",
                    "P": "PP",
                    "Q": "QQ",
                    "R": "RR",
                    "S": "SS",
                    "T": "TT",
                    "U": "UU",
                }[f]
                mean, se = n_prev * acc.mean(key + feat), n_prev * acc.stderr(key + feat)
                if f in perm:
                    mean, se = np.einsum(perm[f], mean), np.einsum(perm[f], se)
                put(f, mean, se)
    return (
        {f: np.stack(v) for f, v in values.items()},
        {f: np.stack(v) for f, v in errors.items()},
    )


def _centered(
    pair: str, a: str, b: str, scale: float
) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    def fn(means: dict[str, np.ndarray]) -> np.ndarray:
        outer = np.multiply.outer(means[a], means[b])
        return scale * (means[pair] - outer)

    return fn


def measure(
    network: Network,
    inputs: np.ndarray | Inputs | None = None,
    *,
    k1: float | None = None,
    size: int = 1000,
    seed: int = 0,
    fields: Sequence[str] = ("K", "V", "Theta"),
    device: str = "cpu",
    dtype: str = "float64",
    block_size: int | None = None,
    neurons: int = 4,
    progress: bool | None = None,
    scheduler: str | Client | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_seconds: float = 60.0,
) -> Flow:
    """Measure the theory's fields on ``size`` real networks drawn from ``network``.

    Parameters
    ----------
    network : Network
        Finite hidden widths required.
    inputs : array_like (N, n_0) or Inputs; or k1
        As in :func:`pdlt.flow`.
    size : int
        Number of networks ``M``.
    seed : int
        Same seed, same device: same result.
    fields : sequence of str
        Any of K, V, Theta, A, B, D, F, P, Q, R, S, T, U.
    device, dtype : str
        ``"cpu"``/``"cuda"``, ``"float64"``/``"float32"`` (statistics are always accumulated
        in float64).
    block_size : int, optional
        Networks per block; default ``ceil(size/32)`` clipped to [1, 256], so the jackknife
        has about 32 blocks.
    neurons : int
        Neurons per layer used for the dNTK and ddNTK estimators.
    progress : bool, optional
        Show a progress bar (default: when stderr is a terminal).
    scheduler : str or distributed.Client, optional
        Run the ensemble blocks as tasks on this Dask cluster (``"tcp://host:8786"``, or a
        client); default: in this process.  Same seed, same statistics, bit for bit, for any
        number of workers (needs ``pip install 'pdlt[dask]'``).
    checkpoint : path, optional
        A directory (:class:`~pdlt.empirical.checkpoint.CheckpointDir`) that receives the
        merged statistics of the completed blocks every ``checkpoint_seconds``, on Ctrl-C and
        at the end, written atomically.  A run with the same arguments continues from it and
        ends with the same numbers as an uninterrupted run; the checkpoint of another run
        (network, inputs, seed, size, fields, ...) is refused with a ValueError.
    checkpoint_seconds : float
        Seconds between checkpoint writes (0: after every shard).

    Returns
    -------
    Flow
        ``kind == "ensemble"``; ``flow.stderr(name)`` gives standard errors.  On Ctrl-C the
        blocks finished so far are returned, with ``meta["interrupted"] = True``.
    """
    inp = as_inputs(network, inputs, k1)
    if network.n_in is None:
        network = network.replace(n_in=inp.n_in)
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 2:
        raise ValueError(f"size must be an integer >= 2 (networks), got {size!r}")
    if block_size is None:
        block_size = int(min(256, max(1, math.ceil(size / 32))))
    ens = Ensemble(network, int(size), int(seed), block_size, device, dtype)
    require_ensemble_memory(network, block_size, dtype)
    fields = list(fields)
    _groups(fields)
    _check_widths(network, fields, neurons)  # bad arguments fail before a checkpoint is made
    ckpt = None
    if checkpoint is not None:
        ckpt = CheckpointDir(checkpoint, _manifest(ens, inp, fields, neurons))
    acc, interrupted = accumulate(
        ens,
        inp,
        fields,
        neurons=neurons,
        accumulator=None if ckpt is None else ckpt.load_statistics(),
        progress=progress,
        scheduler=scheduler,
        on_update=None if ckpt is None else ckpt.saver(checkpoint_seconds),
    )
    if ckpt is not None:
        ckpt.save_statistics(acc)
    if len(acc.blocks) < 2:
        raise KeyboardInterrupt if interrupted else ValueError("need at least two blocks")
    values, stderr = estimate_fields(acc, network, list(fields))
    meta = {
        "size": acc.count,
        "requested_size": int(size),
        "seed": int(seed),
        "block_size": block_size,
        "blocks": len(acc.blocks),
        "device": device,
        "dtype": dtype,
        "neurons": neurons,
        "interrupted": interrupted,
        "torch": torch.__version__,
    }
    return Flow(network, inp, values, stderr=stderr, kind="ensemble", meta=meta)


def _manifest(ens: Ensemble, inputs: Inputs, fields: Sequence[str], neurons: int) -> dict[str, Any]:
    """What a checkpoint of :func:`measure` holds: everything its statistics depend on."""
    return {
        "run": "ensemble statistics",
        "network": ens.network.to_dict(),
        "inputs_sha256": array_digest(inputs.x),
        "size": ens.size,
        "seed": int(ens.seed),
        "block_size": ens.block_size,
        "fields": sorted(set(fields)),
        "neurons": neurons,
        "device": ens.device,
        "dtype": ens.dtype,
    }


def nlo_metric(
    network: Network,
    inputs: np.ndarray | Inputs | None = None,
    *,
    k1: float | None = None,
    widths: Sequence[int] = (16, 32, 64, 128),
    size: int = 4000,
    seed: int = 0,
    order: int = 1,
    **kwargs: object,
) -> Flow:
    """The NLO metric ``G^{1}`` by a fit in ``1/n`` across widths (4.104).

    Measures the mean metric ``G^(l) = E[G-hat^(l)]`` at every hidden width ``n`` in
    ``widths`` (same seed) and fits ``G(n) = c_0 + c_1/n (+ c_2/n^2)`` by weighted least squares:
    ``c_0`` estimates the kernel ``K`` and ``c_1`` the NLO metric ``G^{1}`` (the book's
    normalization by ``n_{l-1} = n``).  Layer 1 is exact (``G^{1}(1) = 0``).  The signal is
    ``G^{1}/n`` against noise ``sqrt(nV/M)``, so ``size`` must grow with the widths (spec/02
    §12.2).

    Returns
    -------
    Flow
        Fields ``K`` and ``G1`` of shape (L, N, N) with standard errors; ``meta["chi2"]`` and
        ``meta["dof"]`` of the fits.
    """
    return _width_fit(network, inputs, "K", "G1", k1, widths, size, seed, order, kwargs)


def nlo_ntk_mean(
    network: Network,
    inputs: np.ndarray | Inputs | None = None,
    *,
    k1: float | None = None,
    widths: Sequence[int] = (16, 32, 64, 128),
    size: int = 4000,
    seed: int = 0,
    order: int = 1,
    **kwargs: object,
) -> Flow:
    """The NLO NTK mean ``H^{1}`` by a fit in ``1/n`` across widths (9.3).

    Like :func:`nlo_metric` for the NTK: measures ``E[H-hat^(l)_ii]`` at every hidden width
    and fits ``c_0 + c_1/n (+ c_2/n^2)``; ``c_0`` estimates the frozen NTK ``Theta`` and
    ``c_1`` the NLO mean ``H^{1}`` (:func:`pdlt.theory.ntk.nlo_ntk_step`).  Layer 1 is exact
    (``Theta^(1)`` is deterministic).  The noise is ``sqrt(nA/M)`` per width.

    Returns
    -------
    Flow
        Fields ``Theta`` and ``H1`` of shape (L, N, N) with standard errors; ``meta["chi2"]``
        and ``meta["dof"]`` of the fits.
    """
    return _width_fit(network, inputs, "Theta", "H1", k1, widths, size, seed, order, kwargs)


def _width_fit(
    network: Network,
    inputs: np.ndarray | Inputs | None,
    field: str,
    nlo: str,
    k1: float | None,
    widths: Sequence[int],
    size: int,
    seed: int,
    order: int,
    kwargs: dict[str, object],
) -> Flow:
    """Fit the measured mean ``field`` across hidden widths: ``field`` = c_0, ``nlo`` = c_1."""
    if network.depth < 2:
        raise ValueError(f"the NLO correction {nlo} needs depth >= 2")
    ws = sorted({int(w) for w in widths})
    if len(ws) < order + 1 or any(w < 1 for w in ws):
        raise ValueError(f"need at least {order + 1} distinct positive widths, got {widths!r}")
    runs = [
        measure(
            network.replace(width=w), inputs, k1=k1, size=size, seed=seed, fields=(field,), **kwargs
        )  # type: ignore[arg-type]
        for w in ws
    ]
    values = np.stack([r[field] for r in runs])  # (W, L, N, N)
    errors = np.stack([r.stderr(field) for r in runs])
    lead = np.empty(values.shape[1:])
    corr = np.zeros_like(lead)
    se_lead, se_corr = np.zeros_like(lead), np.zeros_like(lead)
    lead[0] = values[-1, 0]  # layer 1 is exact at every width
    fit = fit_inverse_width(ws, values[:, 1:], errors[:, 1:], order=order)
    lead[1:], corr[1:] = fit.value[0], fit.value[1]
    se_lead[1:], se_corr[1:] = fit.stderr[0], fit.stderr[1]
    meta = {
        "widths": ws,
        "size": size,
        "seed": seed,
        "order": order,
        "chi2": fit.chi2,
        "dof": fit.dof,
    }
    return Flow(
        runs[-1].network,
        runs[-1].inputs,
        {field: lead, nlo: corr},
        stderr={field: se_lead, nlo: se_corr},
        kind="ensemble",
        meta=meta,
    )
