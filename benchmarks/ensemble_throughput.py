"""Throughput of pdlt's ensemble engine against this machine's own matmul rate.

A benchmark, not a test: it measures, in one process,

1. the machine's dense matrix-multiply rate (GFLOP/s of batched and square float64/float32
   matmuls with torch, numpy for reference) and its memory bandwidth (a large copy);
2. the ensemble engine on representative networks (tanh, a few depths and widths, N inputs):
   the forward pass (float64 and float32), the NTK at the last layer (``structured`` and
   ``jacobian`` methods), the dNTK of 4 neurons at the last hidden layer, and end-to-end
   ``measure`` of K, V, Theta -- each as networks x inputs per second, as GFLOP/s of a stated
   FLOP model, as a fraction of the matmul rate, and as a cost in forward passes;
3. parameter sampling (``Ensemble.params``) against ``torch.randn`` of the same size.

CUDA rows run when ``torch.cuda.is_available()``; otherwise they say "cuda: not available".

Usage::

    python benchmarks/ensemble_throughput.py            # default grid, < 5 min on 2 cores
    python benchmarks/ensemble_throughput.py --quick    # small grid, < 1 min
    python benchmarks/ensemble_throughput.py --out DIR  # results in DIR (default results/)

Results: ``DIR/ensemble_throughput.json`` and ``DIR/ensemble_throughput.md``; the markdown is
also printed.  See benchmarks/README.md for what every column means.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import (
    RESULTS_DIR,
    best_of,
    fmt,
    machine_info,
    markdown_table,
    noop,
    time_once,
    write_atomic,
    write_json_atomic,
)

from pdlt import Network
from pdlt.empirical.ensemble import Ensemble, forward
from pdlt.empirical.estimators import measure
from pdlt.empirical.observables import dntk, ntk

NAME = "ensemble_throughput"
ACTIVATION = "tanh"
N_INPUTS = 4
N_IN = 16
N_OUT = 2
NEURONS = (0, 1, 2, 3)
FIELDS = ("K", "V", "Theta")
BASE_BLOCK = 64  # networks actually sampled per configuration; larger ensembles tile them


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    mode: str
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    target_s: float  # aim for about this much work per timed call (sets the ensemble size M)
    budget_s: float  # stop repeating a measurement after this many seconds of timed calls
    max_reps: int
    single_run_s: float  # a first call at least this long is kept as the only timing
    max_minutes: float  # time for the ensemble rows of one device (later rows are skipped)
    # (smallest, largest) ensemble size per operation
    m_range: dict[str, tuple[int, int]] = field(default_factory=dict)
    # the same on a GPU, where small ensembles leave the device idle (memory caps still apply)
    m_range_cuda: dict[str, tuple[int, int]] = field(default_factory=dict)
    matmul_batched: tuple[int, int, int] = (64, 256, 256)
    matmul_square: int = 1024
    matmul_square_cuda: int = 4096
    bandwidth_mib: int = 256


def m_range(s: Settings, op: str, device: str) -> tuple[int, int]:
    """(smallest, largest) ensemble size of ``op`` on ``device``."""
    if device.startswith("cuda") and op in s.m_range_cuda:
        return s.m_range_cuda[op]
    return s.m_range[op]


def settings_for(quick: bool) -> Settings:
    m_range = {
        "params": (64, 4096),
        "forward": (64, 4096),
        "ntk-structured": (1, 256),
        "ntk-jacobian": (1, 64),
        "dntk": (1, 32),
        "measure": (4, 256),  # the jackknife needs >= 2 networks in every replicate
    }
    m_range_cuda = {
        "params": (64, 16384),
        "forward": (64, 16384),
        "ntk-structured": (1, 4096),
        "ntk-jacobian": (1, 1024),
        "dntk": (1, 512),
        "measure": (4, 4096),
    }
    if quick:
        return Settings(
            mode="quick",
            depths=(3,),
            widths=(32, 128),
            target_s=0.05,
            budget_s=0.1,
            max_reps=3,
            single_run_s=0.5,
            max_minutes=0.6,
            m_range=m_range,
            m_range_cuda=m_range_cuda,
            bandwidth_mib=64,
        )
    return Settings(
        mode="default",
        depths=(4, 10),
        widths=(32, 64, 128, 256),
        target_s=0.25,
        budget_s=0.5,
        max_reps=5,
        single_run_s=2.0,
        max_minutes=3.5,
        m_range=m_range,
        m_range_cuda=m_range_cuda,
    )


# --------------------------------------------------------------------------- FLOP models


def _layer_macs(widths: Sequence[int], lo: int, hi: int) -> int:
    """sum_{l=lo..hi} n_l n_{l-1}: multiply-adds of one input through layers lo..hi."""
    return sum(widths[k] * widths[k - 1] for k in range(lo, hi + 1))


def flops_forward(widths: Sequence[int], N: int, upto: int | None = None) -> int:
    """2 N sum_l n_l n_{l-1} per network (the matmuls of the forward pass)."""
    L = len(widths) - 1 if upto is None else upto
    return 2 * N * _layer_macs(widths, 1, L)


def flops_ntk(widths: Sequence[int], N: int, layer: int) -> int:
    """A lower bound of the dense work of one network's NTK at ``layer`` (per network).

    Forward to ``layer``; per-sample reverse mode for the ``n = n_layer`` outputs (the bias
    gradients need ``W^T delta`` through layers ``layer..2``: 2 n sum n_k n_{k-1} per input);
    the contraction ``H = sum_k J_k J_k^T S_k`` over neurons of every layer: 2 (N n)^2 n_k, and
    the feature Gram matrices ``S_k``: 2 N^2 n_{k-1}.
    """
    n = widths[layer]
    fwd = flops_forward(widths, N, layer)
    back = 2 * N * n * _layer_macs(widths, 2, layer)
    contract = 2 * (N * n) ** 2 * sum(widths[1 : layer + 1])
    gram = 2 * N * N * sum(widths[0:layer])
    return fwd + back + contract + gram


def flops_dntk(widths: Sequence[int], N: int, layer: int, m: int) -> int:
    """The dense work of one network's dNTK for ``m`` neurons at ``layer`` (nested JVPs).

    With ``D = m N`` directions ``v_I = lambda dz_I/dtheta``: the forward pass ``F``; the
    directions by per-sample reverse mode (``W^T delta`` and the weight outer products,
    4 sum n_k n_{k-1} each); one first-order JVP per direction (2 matmuls per layer over the N
    inputs, ``2F``); and one mixed second-order JVP per pair of directions (3 matmuls per layer,
    ``3F``): ``F (1 + 2D + 3 D^2) + 4 D sum n_k n_{k-1}``.
    """
    F = flops_forward(widths, N, layer)
    D = m * N
    return F * (1 + 2 * D + 3 * D * D) + 4 * D * _layer_macs(widths, 1, layer)


def flops_measure(widths: Sequence[int], N: int) -> int:
    """``measure(fields=K,V,Theta)``: forward, the metrics, and the NTK at every layer."""
    L = len(widths) - 1
    metric = 2 * N * N * sum(widths[0:L])
    return (
        flops_forward(widths, N)
        + metric
        + sum(flops_ntk(widths, N, ell) for ell in range(1, L + 1))
    )


def n_params(widths: Sequence[int]) -> int:
    return sum(widths[k] * (widths[k - 1] + 1) for k in range(1, len(widths)))


# --------------------------------------------------------------------------- device helpers


def sync_for(device: str) -> Callable[[], None]:
    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return noop


TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover - not on Unix
        return None


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- 1. machine rates


def bench_matmul(device: str, s: Settings, phase: str) -> list[dict[str, Any]]:
    """GFLOP/s of dense matmuls (torch on ``device``; numpy as well on the CPU at the start).

    Run at the ``start`` and again at the ``end`` of the benchmark: on a shared machine the two
    differ, and the peak used for the fractions is the better of them.
    """
    rows: list[dict[str, Any]] = []
    sync = sync_for(device)
    B, n, k = s.matmul_batched
    shapes: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = [
        (f"({B},{n},{k})@({B},{k},{n})", (B, n, k), (B, k, n)),
        (f"{s.matmul_square}x{s.matmul_square}", (s.matmul_square,) * 2, (s.matmul_square,) * 2),
    ]
    if device.startswith("cuda"):
        q = s.matmul_square_cuda
        shapes.append((f"{q}x{q}", (q, q), (q, q)))
    gen = torch.Generator(device=device).manual_seed(0)
    for dtype in ("float64", "float32"):
        for label, sa, sb in shapes:
            a = torch.randn(*sa, generator=gen, device=device, dtype=TORCH_DTYPES[dtype])
            b = torch.randn(*sb, generator=gen, device=device, dtype=TORCH_DTYPES[dtype])
            flops = 2 * math.prod(sa) * sb[-1]
            t, reps = best_of(
                lambda a=a, b=b: torch.matmul(a, b),
                sync=sync,
                warmup=2,
                min_reps=3,
                max_reps=max(s.max_reps, 3),
                budget_s=s.budget_s,
            )
            rows.append(
                dict(
                    phase=phase,
                    backend="torch",
                    device=device,
                    dtype=dtype,
                    shape=label,
                    gflops=flops / t / 1e9,
                    time_s=t,
                    reps=reps,
                )
            )
            log(f"  matmul torch {device} {dtype} {label}: {flops / t / 1e9:.1f} GFLOP/s")
            if device == "cpu" and phase == "start":
                an, bn = a.numpy(), b.numpy()
                t, reps = best_of(
                    lambda an=an, bn=bn: np.matmul(an, bn),
                    warmup=1,
                    min_reps=3,
                    max_reps=max(s.max_reps, 3),
                    budget_s=s.budget_s,
                )
                rows.append(
                    dict(
                        phase=phase,
                        backend="numpy",
                        device="cpu",
                        dtype=dtype,
                        shape=label,
                        gflops=flops / t / 1e9,
                        time_s=t,
                        reps=reps,
                    )
                )
                log(f"  matmul numpy cpu {dtype} {label}: {flops / t / 1e9:.1f} GFLOP/s")
            del a, b
    return rows


def bench_bandwidth(device: str, s: Settings) -> dict[str, Any]:
    """GB/s of a large tensor copy (bytes read + written), the roofline's other side."""
    sync = sync_for(device)
    numel = s.bandwidth_mib * 2**20 // 8
    src = torch.ones(numel, dtype=torch.float64, device=device)
    dst = torch.empty_like(src)
    t, reps = best_of(
        lambda: dst.copy_(src), sync=sync, warmup=2, min_reps=3, max_reps=5, budget_s=s.budget_s
    )
    gbs = 2 * numel * 8 / t / 1e9
    log(f"  bandwidth {device}: {gbs:.1f} GB/s")
    return dict(device=device, mib=s.bandwidth_mib, gbs=gbs, time_s=t, reps=reps)


# --------------------------------------------------------------------------- 2. ensemble ops


def sized_run(
    make: Callable[[int], Callable[[], object]],
    op: str,
    s: Settings,
    sync: Callable[[], None],
    m_cap: int,
    device: str,
    target_factor: float = 1.0,
    saturate: bool = False,
    saturate_floor: int = 1,
) -> dict[str, Any]:
    """Choose the ensemble size M for ``op`` and time it.

    M starts at the operation's smallest size and grows by powers of two, re-timing one call
    at each size (that call is also the warm-up at that size), until a call takes at least
    half the target (``target_s * target_factor``) or M reaches the operation's largest size
    or ``m_cap`` (memory).  Growing step by step rather than extrapolating from the first call
    matters where the time hardly depends on M (launch-bound GPU kernels).  With ``saturate``
    M keeps growing past the target -- fourfold, and to at least ``saturate_floor`` -- while
    that gives at least 1.5x the throughput (for operations with a large cost per call).  A
    call that takes ``single_run_s`` or more is kept as the only timing.
    """
    m_lo, m_hi = m_range(s, op, device)
    m_hi = max(m_lo, min(m_hi, m_cap))
    target = s.target_s * target_factor
    M = m_lo
    fn = make(M)
    t = time_once(fn, sync)
    first = (M, t)
    while t < s.single_run_s and M < m_hi:
        below = t < target / 2
        if not below and not saturate:
            break
        if below:
            M_new = M * 2 ** max(1, math.floor(math.log2(target / max(t, 1e-9))))
        else:
            # at worst (no gain) the probe takes t * M_new / M: keep that within 3 single runs
            M_new = min(max(4 * M, saturate_floor), int(M * 3 * s.single_run_s / t))
            if M_new < 2 * M:
                break
        M_new = min(m_hi, M_new)
        if not saturate:
            del fn
            gc.collect()
        fn_new = make(M_new)
        t_new = time_once(fn_new, sync)
        if not below and M_new / t_new < 1.5 * M / t:
            break  # throughput has saturated: keep the smaller ensemble
        M, t, fn = M_new, t_new, fn_new
    if t >= s.single_run_s:
        return dict(M=M, time_s=t, reps=1, note="single run", first=first)
    t, reps = best_of(fn, sync=sync, warmup=0, min_reps=2, max_reps=s.max_reps, budget_s=s.budget_s)
    return dict(M=M, time_s=t, reps=reps, note="", first=first)


def mem_cap(device: str, per_net_bytes: float) -> int:
    """Networks that fit a conservative memory budget (2 GiB CPU, 1/4 of the GPU)."""
    if device.startswith("cuda"):
        budget = torch.cuda.get_device_properties(0).total_memory / 4
    else:
        budget = 2 * 2**30
    return max(1, int(budget // max(per_net_bytes, 1)))


def _discard(_: object) -> None:
    """Drop an operation's result at once, so timed calls do not keep large outputs alive."""


def thread_probe() -> dict[str, Any]:
    """Latency of a tiny forward pass with torch's threads and with one thread.

    On a machine whose cores are busy with other work, every OpenMP parallel region waits for
    a descheduled thread, and small operations slow down by orders of magnitude; a large ratio
    here says the CPU rows measure the contention more than the engine.
    """
    net = Network(ACTIVATION, depth=3, width=32, n_in=N_IN, n_out=N_OUT)
    p = Ensemble(net, size=1, seed=0, block_size=1).params(0)
    x = torch.zeros(N_INPUTS, N_IN, dtype=torch.float64)
    threads = torch.get_num_threads()

    def lat() -> float:
        return best_of(lambda: forward(p, x, net), warmup=3, min_reps=20, max_reps=20)[0]

    t_n = lat()
    torch.set_num_threads(1)
    try:
        t_1 = lat()
    finally:
        torch.set_num_threads(threads)
    return dict(threads=threads, latency_s=t_n, latency_1_thread_s=t_1, ratio=t_n / t_1)


def warm_up(device: str) -> float:
    """Run every code path once on a tiny network so one-time costs (lazy imports, torch.func
    set-up, kernel selection, CUDA context) stay out of the first timed row."""
    t0 = time.perf_counter()
    net = Network(ACTIVATION, depth=3, width=8, n_in=N_IN, n_out=N_OUT)
    x_np = np.random.default_rng(1).standard_normal((N_INPUTS, N_IN))
    for dtype in ("float64", "float32"):
        p = Ensemble(net, size=4, seed=0, block_size=4, device=device, dtype=dtype).params(0)
        x = torch.tensor(x_np, dtype=TORCH_DTYPES[dtype], device=device)
        for _ in range(2):
            forward(p, x, net)
            ntk(p, x, net, 3, method="structured")
            ntk(p, x, net, 3, method="jacobian")
            dntk(p, x, net, 2, list(NEURONS))
    measure(net, x_np, size=4, seed=0, fields=FIELDS, device=device, progress=False)
    sync_for(device)()
    return time.perf_counter() - t0


SKIPPED = "skipped: time budget spent (--max-minutes)"


def bench_config(
    device: str,
    depth: int,
    width: int,
    s: Settings,
    peak: dict[str, float],
    deadline: float = math.inf,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """All ensemble rows of one network on one device, plus its parameter-sampling row.

    Rows that would start after ``deadline`` (a ``time.perf_counter`` value) are listed as
    skipped instead of run.
    """
    sync = sync_for(device)
    net = Network(ACTIVATION, depth=depth, width=width, n_in=N_IN, n_out=N_OUT)
    widths = [int(w) for w in net.widths]
    N = N_INPUTS
    P = n_params(widths)
    L = depth
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((N, N_IN))
    rows: list[dict[str, Any]] = []

    def xt(dtype: str) -> torch.Tensor:
        return torch.tensor(x_np, dtype=TORCH_DTYPES[dtype], device=device)

    base: dict[str, dict[str, torch.Tensor]] = {}

    def params_of(M: int, dtype: str = "float64") -> dict[str, torch.Tensor]:
        """M networks' parameters: one sampled block of at most BASE_BLOCK networks, tiled.

        Tiling (a memory copy) instead of sampling every network keeps the set-up of large
        ensembles cheap; the timed operations see M separate copies in memory, so their cost
        is that of M distinct networks.  Sampling itself is timed in its own table.
        """
        if dtype not in base:
            m0 = BASE_BLOCK
            ens = Ensemble(net, size=m0, seed=0, block_size=m0, device=device, dtype=dtype)
            base[dtype] = ens.params(0)
        reps = -(-M // BASE_BLOCK)
        return {
            k: v.repeat(reps, *([1] * (v.ndim - 1)))[:M].contiguous()
            for k, v in base[dtype].items()
        }

    def add(
        op: str, dtype: str, res: dict[str, Any], model_flops: float | None, ref: float | None
    ) -> dict[str, Any]:
        M, t = res["M"], res["time_s"]
        gflops = None if model_flops is None else model_flops * M / t / 1e9
        row = dict(
            device=device,
            dtype=dtype,
            depth=depth,
            width=width,
            N=N,
            op=op,
            M=M,
            reps=res["reps"],
            time_s=t,
            net_inputs_per_s=M * N / t,
            model_gflop_per_net=None if model_flops is None else model_flops / 1e9,
            gflops=gflops,
            fwd_equiv=None if ref is None else (t / M) / ref,
            note=res.get("note", ""),
        )
        for key in ("call_overhead_s", "marginal_net_inputs_per_s"):
            if key in res:
                row[key] = res[key]
        rows.append(row)
        pk = peak.get(f"{device}/{dtype}")
        frac = "" if gflops is None or not pk else f" ({100 * gflops / pk:.2f}% of peak)"
        log(
            f"  {device} {dtype} L={depth} n={width} {op}: M={M} {t:.4g}s "
            f"{row['net_inputs_per_s']:.4g} net*in/s{frac}"
        )
        return row

    def attempt(op: str, dtype: str, run: Callable[[], dict[str, Any]], flops, ref):
        if time.perf_counter() > deadline:
            rows.append(
                dict(device=device, dtype=dtype, depth=depth, width=width, N=N, op=op, note=SKIPPED)
            )
            log(f"  {device} {dtype} L={depth} n={width} {op}: {SKIPPED}")
            return None
        try:
            return add(op, dtype, run(), flops, ref)
        except Exception as exc:  # a row that fails (e.g. out of memory) says so
            rows.append(
                dict(device=device, dtype=dtype, depth=depth, width=width, N=N, op=op,
                     note=f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            )  # fmt: skip
            log(f"  {device} {dtype} L={depth} n={width} {op}: ERROR {exc!r}")
            return None
        finally:
            gc.collect()
            if device.startswith("cuda"):
                torch.cuda.empty_cache()

    # --- forward, float64 then float32
    fwd_ref: float | None = None
    for dtype in ("float64", "float32"):

        def make_fwd(M: int, dtype: str = dtype) -> Callable[[], object]:
            p, x = params_of(M, dtype), xt(dtype)
            return lambda: _discard(forward(p, x, net))

        r = attempt(
            "forward",
            dtype,
            lambda make_fwd=make_fwd: sized_run(
                make_fwd, "forward", s, sync, mem_cap(device, 8 * P + 16 * N * sum(widths)), device
            ),
            flops_forward(widths, N),
            None,
        )
        if dtype == "float64" and r is not None:
            fwd_ref = r["time_s"] / r["M"]
            r["fwd_equiv"] = 1.0
    x64 = xt("float64")

    # --- NTK at the last layer
    for method in ("structured", "jacobian"):

        def make_ntk(M: int, method: str = method) -> Callable[[], object]:
            p = params_of(M)
            return lambda: _discard(ntk(p, x64, net, L, method=method))

        per_net = 8 * P + 8 * N * widths[L] * (3 * P if method == "jacobian" else 4 * max(widths))
        attempt(
            f"ntk-{method}",
            "float64",
            lambda make_ntk=make_ntk, method=method, per_net=per_net: sized_run(
                make_ntk, f"ntk-{method}", s, sync, mem_cap(device, per_net), device
            ),
            flops_ntk(widths, N, L),
            fwd_ref,
        )

    # --- dNTK of 4 neurons at the last hidden layer
    layer = L - 1 if L > 1 else L
    neurons = list(NEURONS[: min(len(NEURONS), widths[layer])])

    def make_dntk(M: int) -> Callable[[], object]:
        p = params_of(M)
        return lambda: _discard(dntk(p, x64, net, layer, neurons))

    D = len(neurons) * N
    attempt(
        f"dntk@{layer}(m={len(neurons)})",
        "float64",
        lambda: sized_run(
            make_dntk,
            "dntk",
            s,
            sync,
            mem_cap(device, 8 * P + 8 * D * D * n_params(widths[: layer + 1])),
            device,
        ),
        flops_dntk(widths, N, layer, len(neurons)),
        fwd_ref,
    )

    # --- end to end: measure K, V, Theta (sampling, observables, statistics)
    def make_measure(M: int) -> Callable[[], object]:
        return lambda: _discard(
            measure(net, x_np, size=M, seed=0, fields=FIELDS, device=device, progress=False)
        )

    def run_measure() -> dict[str, Any]:
        # measure() has a cost per call (about 32 blocks, each a pass through the observables,
        # plus the jackknife) besides its cost per network: aim for more work per call, grow M
        # while that still pays, and split the time into the two with the first (smallest) and
        # the final call.
        r = sized_run(
            make_measure,
            "measure",
            s,
            sync,
            1 << 30,
            device,
            target_factor=4,
            saturate=True,
            saturate_floor=128,  # 32 blocks of 4: past measure()'s one-network-per-block sizes
        )
        (m0, t0), (m1, t1) = r["first"], (r["M"], r["time_s"])
        if m1 > m0 and t1 > t0:
            per_net = (t1 - t0) / (m1 - m0)
            r["call_overhead_s"] = max(0.0, t0 - m0 * per_net)
            r["marginal_net_inputs_per_s"] = N / per_net
            r["note"] = (
                r["note"] + "; " if r["note"] else ""
            ) + f"t(M={m0})={t0:.3g} s; marginal {fmt(N / per_net)} net·in/s"
        elif r["note"] != "single run":
            r["note"] = (r["note"] + "; " if r["note"] else "") + f"t(M={m0})={t0:.3g} s"
        return r

    attempt("measure(K,V,Theta)", "float64", run_measure, flops_measure(widths, N), fwd_ref)

    # --- 3. parameter sampling vs torch.randn of the same number of elements
    sampling: dict[str, Any] = dict(device=device, dtype="float64", depth=depth, width=width)
    if time.perf_counter() > deadline:
        sampling["note"] = SKIPPED
        return rows, sampling
    try:

        def make_params(M: int) -> Callable[[], object]:
            ens = Ensemble(net, size=M, seed=0, block_size=M, device=device, dtype="float64")
            return lambda: _discard(ens.params(0))

        r = sized_run(make_params, "params", s, sync, mem_cap(device, 16 * P), device)
        M, t_par, reps = r["M"], r["time_s"], r["reps"]
        numel = M * P
        gen = torch.Generator(device=device).manual_seed(0)
        t_rnd, _ = best_of(
            lambda: torch.randn(numel, generator=gen, device=device, dtype=torch.float64),
            sync=sync,
            max_reps=s.max_reps,
            budget_s=s.budget_s,
        )
        sampling.update(
            M=M,
            params=numel,
            reps=reps,
            time_s=t_par,
            params_per_s=numel / t_par,
            randn_per_s=numel / t_rnd,
            ratio=t_rnd / t_par,
            note="",
        )
        log(
            f"  {device} L={depth} n={width} params: {numel / t_par:.4g}/s "
            f"({100 * t_rnd / t_par:.0f}% of randn)"
        )
    except Exception as exc:
        sampling["note"] = f"error: {type(exc).__name__}: {exc}"
    gc.collect()
    return rows, sampling


# --------------------------------------------------------------------------- report


def peaks(matmul_rows: list[dict[str, Any]]) -> dict[str, float]:
    """Reference rate per device/dtype: the best torch matmul measured above."""
    out: dict[str, float] = {}
    for r in matmul_rows:
        if r["backend"] != "torch":
            continue
        key = f"{r['device']}/{r['dtype']}"
        out[key] = max(out.get(key, 0.0), r["gflops"])
    return out


def roofline(res: dict[str, Any], device: str, dtype: str) -> float | None:
    """Forward-pass ceiling: min(matmul peak, copy bandwidth x 2N flops per weight byte).

    Every network has its own weights and multiplies them by only N inputs, so each weight
    read from memory buys 2N flops; with weights that do not fit in cache the pass cannot beat
    the bandwidth times 2N / itemsize (the copy bandwidth counts bytes read and written).
    """
    pk = res["peak_gflops"].get(f"{device}/{dtype}")
    bw = next((b["gbs"] for b in res["bandwidth"] if b["device"] == device), None)
    if not pk or not bw:
        return None
    item = 8 if dtype == "float64" else 4
    return min(pk, bw * 2 * N_INPUTS / item)


def pct(x: float | None) -> str:
    if x is None:
        return "—"
    v = 100 * x
    return f"{v:.3g}%" if v < 100 else f"{v:.0f}%"


def render(res: dict[str, Any]) -> str:
    m = res["machine"]
    st = res["settings"]
    lines = [f"# Ensemble throughput ({res['mode']})", ""]
    if res.get("interrupted"):
        lines += ["**Interrupted: only the rows measured before the interruption.**", ""]
    lines.append(
        f"{res['created']} · {m['cpu_model']} · {m['cpu_count']} CPUs "
        f"({m['cpu_affinity']} usable) · torch {m['torch']} ({m['torch_threads']} threads, "
        f"{m['torch_interop_threads']} interop) · numpy {m['numpy']} ({m['numpy_blas']}) · "
        f"python {m['python']} · "
        + (f"CUDA: {m.get('cuda_device')}" if m["cuda_available"] else "cuda: not available")
    )
    lines.append("")
    busy = [v for v in (m.get("loadavg_start"), m.get("loadavg_end")) if v]
    lines.append(
        f"Load average (1, 5, 15 min) at start {m.get('loadavg_start')}, at end "
        f"{m.get('loadavg_end')}"
        + (
            f" -- **the machine was shared (load above its {m['cpu_affinity']} CPUs): "
            "timings are noisy; compare start and end matmul rates.**"
            if any(v[0] > (m["cpu_affinity"] or 1) for v in busy)
            else "."
        )
    )
    tp = res.get("thread_probe")
    if tp:
        lines.append("")
        lines.append(
            f"Thread probe: a tiny forward pass (L=3, n=32, M=1) takes "
            f"{1e6 * tp['latency_s']:.0f} µs with {tp['threads']} thread(s) and "
            f"{1e6 * tp['latency_1_thread_s']:.0f} µs with 1 thread"
            + (
                f" -- **{tp['ratio']:.0f}x slower with threads: other processes hold the cores "
                "and every parallel region waits for a descheduled thread; small CPU "
                "operations below measure that contention (rerun on an idle machine, or "
                "with --threads 1).**"
                if tp["ratio"] > 10
                else "."
            )
        )
    lines.append("")
    lines.append(
        f"Networks: `{ACTIVATION}`, n_in={N_IN}, n_out={N_OUT}, N={N_INPUTS} inputs, "
        f"depths {list(st['depths'])}, widths {list(st['widths'])}; the ensemble size M is "
        f"chosen per row so one call does about {st['target_s']} s of work; times are the best "
        f"of `reps` calls after a warm-up.  Total wall time {res['wall_s']:.0f} s."
    )
    lines += ["", "## Matmul rate (reference)", ""]
    mm_rows = [
        [r["phase"], r["backend"], r["device"], r["dtype"], r["shape"], fmt(r["gflops"]), r["reps"]]
        for r in res["matmul"]
    ]
    for r in res["bandwidth"]:
        mm_rows.append(
            [
                "start",
                "copy",
                r["device"],
                "—",
                f"{r['mib']} MiB",
                f"{r['gbs']:.3g} GB/s",
                r["reps"],
            ]
        )
    for note in res["cuda_notes"]:
        mm_rows.append(["—", "torch", "cuda", "—", "—", note, "—"])
    headers = ["phase", "backend", "device", "dtype", "shape", "GFLOP/s", "reps"]
    lines.append(markdown_table(headers, mm_rows))
    lines.append("")
    lines.append(
        "Peak (best torch matmul) used for `% peak`: "
        + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in res["peak_gflops"].items())
    )
    lines += ["", "## Ensemble engine", ""]
    ens_rows = []
    for r in res["ensemble"]:
        if "time_s" not in r:
            ens_rows.append([r["device"], r["dtype"], r["depth"], r["width"], r["op"]]
                            + ["—"] * 8 + [r.get("note", "")])  # fmt: skip
            continue
        ens_rows.append(
            [
                r["device"],
                r["dtype"],
                r["depth"],
                r["width"],
                r["op"],
                r["M"],
                r["reps"],
                fmt(r["time_s"]),
                fmt(r["net_inputs_per_s"]),
                fmt(r["gflops"]),
                pct(r["frac_peak"]),
                pct(r.get("frac_roofline")),
                fmt(r["fwd_equiv"]),
                r["note"],
            ]
        )
    for note in res["cuda_notes"]:
        ens_rows.append(["cuda", "—", "—", "—", "all"] + ["—"] * 8 + [note])
    lines.append(
        markdown_table(
            ["device", "dtype", "L", "n", "op", "M", "reps", "s/call", "net·in/s", "GFLOP/s",
             "% peak", "% roof", "× fwd", "note"],
            ens_rows,
        )
    )  # fmt: skip
    lines += ["", "## Parameter sampling (`Ensemble.params`) vs `torch.randn`", ""]
    sm_rows = []
    for r in res["sampling"]:
        if "params_per_s" not in r:
            sm_rows.append([r["device"], r["dtype"], r["depth"], r["width"], "—", "—", "—", "—",
                            "—", r.get("note", "")])  # fmt: skip
            continue
        sm_rows.append(
            [
                r["device"],
                r["dtype"],
                r["depth"],
                r["width"],
                r["M"],
                fmt(r["params"]),
                fmt(r["params_per_s"]),
                fmt(r["randn_per_s"]),
                pct(r["ratio"]),
                r["note"],
            ]
        )
    for note in res["cuda_notes"]:
        sm_rows.append(["cuda", "—", "—", "—", "—", "—", "—", "—", "—", note])
    lines.append(
        markdown_table(
            ["device", "dtype", "L", "n", "M", "params", "params/s", "randn/s", "vs randn", "note"],
            sm_rows,
        )
    )
    lines += ["", "## Reading the numbers", ""]
    lines += [f"- {t}" for t in res["observations"]]
    lines.append("")
    return "\n".join(lines)


def observations(res: dict[str, Any]) -> list[str]:
    """Plain statements derived from the numbers (the roofline of the forward pass etc.)."""
    obs: list[str] = []
    bw = {r["device"]: r["gbs"] for r in res["bandwidth"]}
    good = [r for r in res["ensemble"] if r.get("frac_peak") is not None]
    for dev in sorted({r["device"] for r in good}):
        fwd = [r for r in good if r["device"] == dev and r["op"] == "forward"]
        for dtype in ("float64", "float32"):
            rows = [r for r in fwd if r["dtype"] == dtype]
            if not rows:
                continue
            lo = min(rows, key=lambda r: r["frac_peak"])
            hi = max(rows, key=lambda r: r["frac_peak"])
            item = 8 if dtype == "float64" else 4
            roof = roofline(res, dev, dtype)
            obs.append(
                f"{dev} {dtype} forward reaches {pct(lo['frac_peak'])} (L={lo['depth']}, "
                f"n={lo['width']}) to {pct(hi['frac_peak'])} (L={hi['depth']}, n={hi['width']}) "
                f"of the matmul peak. Each network multiplies its own weights by only N="
                f"{N_INPUTS} inputs: 2N flops per {item}-byte weight, so streaming the weights "
                f"at the measured copy bandwidth ({bw.get(dev, 0):.3g} GB/s, read+write) caps "
                f"it near {fmt(roof)} GFLOP/s (`% roof`) once they do not fit in cache; the "
                f"best row reaches {pct(hi.get('frac_roofline'))} of that ceiling."
            )
        others = [r for r in good if r["device"] == dev and r["op"] != "forward"]
        if others:
            lo = min(others, key=lambda r: r["frac_peak"])
            obs.append(
                f"{dev}: lowest fraction of peak outside the forward pass: {lo['op']} at "
                f"L={lo['depth']}, n={lo['width']}: {pct(lo['frac_peak'])} "
                f"({fmt(lo['gflops'])} GFLOP/s of model FLOPs, {fmt(lo['fwd_equiv'])} forward "
                f"passes per network)."
            )
        pairs = {}
        for r in good:
            if r["device"] == dev and r["op"].startswith("ntk-"):
                pairs.setdefault((r["depth"], r["width"]), {})[r["op"]] = r
        ratios = [
            (k, v["ntk-jacobian"]["time_s"] / v["ntk-jacobian"]["M"]
             / (v["ntk-structured"]["time_s"] / v["ntk-structured"]["M"]))
            for k, v in pairs.items() if len(v) == 2
        ]  # fmt: skip
        if ratios:
            lo_r = min(ratios, key=lambda kv: kv[1])
            hi_r = max(ratios, key=lambda kv: kv[1])
            obs.append(
                f"{dev}: the jacobian NTK costs {lo_r[1]:.3g}x (L={lo_r[0][0]}, n={lo_r[0][1]}) "
                f"to {hi_r[1]:.3g}x (L={hi_r[0][0]}, n={hi_r[0][1]}) the structured one per "
                "network."
            )
    for dev in sorted({r["device"] for r in good}):
        ms = [r for r in good if r["device"] == dev and r["op"].startswith("measure")]
        if not ms:
            continue
        worst = max(ms, key=lambda r: r["fwd_equiv"] or 0)
        small = [r for r in ms if r["M"] <= 32]
        line = (
            f"{dev}: measure(K,V,Theta) costs {fmt(min(r['fwd_equiv'] for r in ms))} to "
            f"{fmt(worst['fwd_equiv'])} forward passes per network (most at L={worst['depth']}, "
            f"n={worst['width']}, M={worst['M']})."
        )
        if small:
            line += (
                " It splits every call into up to 32 blocks (one network per block when M <= 32) "
                "and computes the full NTK of every layer block by block, each a torch.func "
                "vmap/jacrev call with a fixed dispatch cost, so small ensembles pay mostly that "
                "fixed cost (see the t(M=...) and marginal figures in the notes)."
            )
        obs.append(line)
    samp = [r for r in res["sampling"] if "ratio" in r]
    if samp:
        lo = min(samp, key=lambda r: r["ratio"])
        obs.append(
            f"Parameter sampling runs at {pct(lo['ratio'])} to "
            f"{pct(max(r['ratio'] for r in samp))} of torch.randn's rate for the same number "
            f"of elements (lowest: {lo['device']} L={lo['depth']}, n={lo['width']})."
        )
    return obs


def summary(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Headline numbers for run_all's summary table."""
    out: list[dict[str, Any]] = []
    for k, v in res["peak_gflops"].items():
        out.append(dict(metric=f"matmul peak {k}", value=v, unit="GFLOP/s"))
    for dev in sorted({r["device"] for r in res["ensemble"] if "time_s" in r}):
        for op in ("forward", "ntk-structured", "measure(K,V,Theta)"):
            rows = [
                r
                for r in res["ensemble"]
                if r["device"] == dev and r["op"] == op and r.get("frac_peak") is not None
                and r["dtype"] == "float64"
            ]  # fmt: skip
            if rows:
                out.append(
                    dict(
                        metric=f"{dev} {op} f64, % of peak (min..max)",
                        value=f"{pct(min(r['frac_peak'] for r in rows))}.."
                        f"{pct(max(r['frac_peak'] for r in rows))}",
                        unit="",
                    )
                )
    roofs = [r["frac_roofline"] for r in res["ensemble"] if r.get("frac_roofline") is not None]
    if roofs:
        out.append(
            dict(metric="forward, best % of bandwidth roofline", value=pct(max(roofs)), unit="")
        )
    tp = res.get("thread_probe")
    if tp:
        out.append(
            dict(metric="thread probe: tiny-op slowdown with threads", value=tp["ratio"], unit="x")
        )
    for note in res["cuda_notes"]:
        out.append(dict(metric="cuda", value=note, unit=""))
    return out


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="ensemble_throughput.py", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--quick", action="store_true", help="small grid, finishes in < 1 minute")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    ap.add_argument(
        "--devices",
        default="cpu,cuda",
        help="comma-separated devices to run (default cpu,cuda; cuda rows are skipped with a "
        "note when CUDA is not available)",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(T) first")
    ap.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="time for the ensemble rows of each device; rows that would start later are "
        "listed as skipped (default 3.5, quick 0.6; 0 = no limit)",
    )
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    s = settings_for(args.quick)
    max_minutes = args.max_minutes if args.max_minutes is not None else s.max_minutes
    if max_minutes <= 0:
        max_minutes = math.inf
    t_start = time.perf_counter()
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    cuda_notes: list[str] = []
    run_devices = []
    for d in devices:
        if d.startswith("cuda") and not torch.cuda.is_available():
            cuda_notes.append("cuda: not available")
        else:
            run_devices.append(d)
    if "cuda" not in devices:
        cuda_notes.append("cuda: not requested (--devices)")

    log(f"[{NAME}] mode={s.mode} devices={run_devices} threads={torch.get_num_threads()}")
    res: dict[str, Any] = dict(
        benchmark=NAME,
        version=1,
        created=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        argv=list(argv) if argv is not None else sys.argv[1:],
        mode=s.mode,
        machine=machine_info(),
        settings=dict(
            activation=ACTIVATION,
            n_in=N_IN,
            n_out=N_OUT,
            N=N_INPUTS,
            neurons=list(NEURONS),
            fields=list(FIELDS),
            depths=list(s.depths),
            widths=list(s.widths),
            target_s=s.target_s,
            budget_s=s.budget_s,
            max_reps=s.max_reps,
            single_run_s=s.single_run_s,
            max_minutes=None if math.isinf(max_minutes) else max_minutes,
            m_range={k: list(v) for k, v in s.m_range.items()},
            m_range_cuda={k: list(v) for k, v in s.m_range_cuda.items()},
        ),
        cuda_notes=cuda_notes,
        matmul=[],
        bandwidth=[],
        ensemble=[],
        sampling=[],
    )
    res["machine"]["loadavg_start"] = _loadavg()
    res["interrupted"] = False
    try:
        if "cpu" in run_devices:
            res["thread_probe"] = thread_probe()
            log(f"[{NAME}] thread probe: {res['thread_probe']}")
        for dev in run_devices:
            log(f"[{NAME}] {dev}: matmul and bandwidth")
            res["matmul"] += bench_matmul(dev, s, "start")
            res["bandwidth"].append(bench_bandwidth(dev, s))
            log(f"[{NAME}] {dev}: warm-up of every code path")
            res.setdefault("warmup_s", {})[dev] = warm_up(dev)
        res["peak_gflops"] = peaks(res["matmul"])
        for dev in run_devices:
            deadline = time.perf_counter() + 60 * max_minutes
            for depth in s.depths:
                for width in s.widths:
                    log(f"[{NAME}] {dev}: tanh L={depth} n={width}")
                    rows, samp = bench_config(dev, depth, width, s, res["peak_gflops"], deadline)
                    res["ensemble"] += rows
                    res["sampling"].append(samp)
        for dev in run_devices:
            log(f"[{NAME}] {dev}: matmul again")
            res["matmul"] += bench_matmul(dev, s, "end")
    except KeyboardInterrupt:  # Ctrl-C (or timeout -s INT): keep and write what was measured
        res["interrupted"] = True
        log(f"[{NAME}] interrupted: writing the rows measured so far")
    res["machine"]["loadavg_end"] = _loadavg()
    res["peak_gflops"] = peaks(res["matmul"])
    for r in res["ensemble"]:
        pk = res["peak_gflops"].get(f"{r['device']}/{r['dtype']}")
        if "time_s" in r:
            r["peak_gflops"] = pk
            r["frac_peak"] = None if r["gflops"] is None or not pk else r["gflops"] / pk
            if r["op"] == "forward":
                roof = roofline(res, r["device"], r["dtype"])
                r["roofline_gflops"] = roof
                r["frac_roofline"] = None if not roof else r["gflops"] / roof
    res["wall_s"] = time.perf_counter() - t_start
    res["observations"] = observations(res)
    res["summary"] = summary(res)
    md = render(res)
    out = Path(args.out)
    write_json_atomic(out / f"{NAME}.json", res)
    write_atomic(out / f"{NAME}.md", md)
    print(md)
    log(f"[{NAME}] wrote {out / (NAME + '.json')} and {out / (NAME + '.md')}")
    return 130 if res["interrupted"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
