"""Benchmark: infinite-width NNGP kernel K and NTK Theta, pdlt against Neural Tangents.

Each row does the same work twice in one run: the last layer's ``K^(L)`` and ``Theta^(L)`` of a
depth-10 MLP at criticality for ``N`` random inputs (``n_0 = 16``), float64 on the CPU, by

* pdlt: ``pdlt.flow(net, X, fields=("K", "Theta"), layers=[-1])`` -- closed arc-cosine forms
  for ReLU, Mehler's Hermite series with a 1e-10 tail bound (quadrature fallback per pair)
  otherwise, each fused over all layers by the compiled kernels when numba is installed, the
  layers below the last never stored (the row also times the same flow on the numpy paths,
  and the flow that keeps all layers);
* Neural Tangents (``stax``, ``parameterization="ntk"``, ``W_std = sqrt(C_W)``,
  ``b_std = sqrt(C_b)``, jitted ``kernel_fn(x, None, ("nngp", "ntk"))``): ``stax.Relu`` (closed
  form) for ReLU and ``stax.ElementwiseNumerical`` (Gauss-Hermite, ``deg`` nodes per axis) for
  tanh, GELU, SWISH and a user callable.  NT's ``ntk`` parameterization is the book's with
  ``lambda_b = C_b`` and ``lambda_W = C_W`` (then ``Theta' = K' + C_W <s's'> Theta``), so pdlt
  runs with those learning rates; both outputs are compared before the times are reported.

Neural Tangents is optional and runs in a subprocess: the interpreter given by ``--nt-python``
(default: the environment variable ``PDLT_NT_PYTHON``, else this interpreter if it can import
``neural_tangents``; else the rows say "neural-tangents not installed"), under a memory limit
(``--nt-memory-gib``, default 6) and a time limit.  Install it apart from pdlt::

    python -m venv /tmp/ntvenv
    /tmp/ntvenv/bin/pip install "jax[cpu]==0.4.30" "neural-tangents==0.6.5"
    python benchmarks/infinite_width_kernels.py --nt-python /tmp/ntvenv/bin/python

Timing: pdlt's first call, then (when it took under 5 s) the best of at least 5 more, repeated
while they add up to under 1 s (at most 200: sub-millisecond calls need many tries on a shared
machine); NT's first call includes the jit compilation, reported separately as ``compile``
(first call minus the best later one), then the best of its warm calls, by the same rule (none
past 5 s).  A scaling section fits log-log slopes of pdlt's time (all layers kept) against N
(depth 10) and against depth (N = 100) for ReLU and tanh.

Usage: python benchmarks/infinite_width_kernels.py [--quick] [--out DIR] [--nt-python PATH]
(default: N = 100 and 1000; --quick: N = 50 and 100 (NT: deg 12), shorter scaling sweeps)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import (
    RESULTS_DIR,
    fmt,
    machine_info,
    markdown_table,
    write_atomic,
    write_json_atomic,
)

import pdlt
from pdlt import _compiled

N_IN = 16
DEPTH = 10
ACTIVATIONS = ("relu", "tanh", "gelu", "swish", "custom")
CUSTOM = "z * sigmoid(1.702 z)"

# Runs in the Neural Tangents interpreter: argv[1] is a JSON job; writes the kernels (.npz)
# and the timings (.json) next to the inputs.
_NT_WORKER = r"""
import json, sys, time
job = json.loads(sys.argv[1])
import numpy as np
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
from neural_tangents import stax

fns = {
    "tanh": jnp.tanh,
    "gelu": lambda z: jax.nn.gelu(z, approximate=False),
    "swish": lambda z: z * jax.nn.sigmoid(z),
    "custom": lambda z: z * jax.nn.sigmoid(1.702 * z),
}
if job["activation"] == "relu":
    act, method = stax.Relu(), "stax.Relu (closed form)"
else:
    act = stax.ElementwiseNumerical(fns[job["activation"]], deg=job["deg"])
    method = f"stax.ElementwiseNumerical(deg={job['deg']})"
w, b = job["C_W"] ** 0.5, (job["C_b"] ** 0.5 if job["C_b"] > 0 else None)
layers = []
for _ in range(job["depth"] - 1):
    layers += [stax.Dense(512, W_std=w, b_std=b, parameterization="ntk"), act]
layers.append(stax.Dense(1, W_std=w, b_std=b, parameterization="ntk"))
kernel_fn = jax.jit(stax.serial(*layers)[2], static_argnames="get")
x = jnp.asarray(np.load(job["x"]))

def call():
    k = kernel_fn(x, None, ("nngp", "ntk"))
    jax.block_until_ready(k)
    return k

t0 = time.perf_counter()
k = call()
first = time.perf_counter() - t0
times = []  # at least reps, up to 200 while under 1 s in all (as pdlt's), none past 5 s
while len(times) < job["reps"] or (len(times) < 200 and sum(times) < 1.0):
    t0 = time.perf_counter()
    call()
    times.append(time.perf_counter() - t0)
    if times[-1] > 5.0:
        break
np.savez(job["out"] + ".npz", nngp=np.asarray(k.nngp), ntk=np.asarray(k.ntk))
with open(job["out"] + ".json", "w") as fh:
    json.dump({"first_s": first, "best_s": min(times), "reps": len(times), "method": method,
               "jax": jax.__version__}, fh)
"""


def custom_activation() -> pdlt.Activation:
    """The user callable: a torch function, differentiated by autograd inside pdlt."""
    return pdlt.Activation.from_callable(lambda z: z * torch.sigmoid(1.702 * z), name="custom")


def hyperparameters(name: str) -> tuple[float, float]:
    """``(C_b, C_W)``: pdlt's critical values; for the user callable those of GELU."""
    net = pdlt.Network("gelu" if name == "custom" else name, depth=2)
    return float(net.C_b[0]), float(net.C_W[0])


def network(name: str, depth: int) -> pdlt.Network:
    C_b, C_W = hyperparameters(name)
    act = custom_activation() if name == "custom" else name
    return pdlt.Network(act, depth=depth, n_in=N_IN, C_b=C_b, C_W=C_W, lambda_b=C_b, lambda_W=C_W)


def inputs(N: int) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(N, N_IN))


def time_pdlt(fn: Callable[[], Any]) -> tuple[float, float, int, Any]:
    """First call, then (when it took under 5 s) the best of at least 5 more, repeated up to
    200 times while they add up to under 1 s: sub-millisecond calls vary by 30% or more from
    call to call on a shared machine, so their best needs many tries."""
    t0 = time.perf_counter()
    result = fn()
    first = time.perf_counter() - t0
    times = [first]
    if first < 5.0:
        while len(times) <= 5 or (len(times) <= 200 and sum(times[1:]) < 1.0):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return first, min(times), len(times), result


def nt_interpreter(arg: str | None) -> str | None:
    """The Python that runs Neural Tangents, or None when there is none."""
    if arg:
        return arg
    if os.environ.get("PDLT_NT_PYTHON"):
        return os.environ["PDLT_NT_PYTHON"]
    try:
        import neural_tangents  # noqa: F401
    except ImportError:
        return None
    return sys.executable


def run_nt(
    python: str, name: str, X: np.ndarray, deg: int, memory_gib: float, timeout: float
) -> dict[str, Any]:
    """Neural Tangents' K and Theta (last layer) with timings, or an ``error`` entry."""
    C_b, C_W = hyperparameters(name)
    with tempfile.TemporaryDirectory(prefix="pdlt-nt-") as tmp:
        np.save(Path(tmp) / "x.npy", X)
        job = dict(
            activation=name,
            depth=DEPTH,
            C_b=C_b,
            C_W=C_W,
            deg=deg,
            reps=5,
            x=str(Path(tmp) / "x.npy"),
            out=str(Path(tmp) / "k"),
        )
        limit = int(memory_gib * 2**30)

        def cap() -> None:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

        env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
        try:
            proc = subprocess.run(
                [python, "-c", _NT_WORKER, json.dumps(job)],
                capture_output=True,
                text=True,
                timeout=timeout,
                preexec_fn=cap,
                env=env,
            )
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        if proc.returncode != 0:
            lines = (proc.stderr or "").strip().splitlines() or [""]
            marks = ("RESOURCE_EXHAUSTED", "MemoryError", "bad_alloc")
            oom = [line for line in lines if any(m in line for m in marks)]
            why = f"out of memory (limit {memory_gib:g} GiB)" if oom else "failed"
            return {"error": f"{why}: exit {proc.returncode}: {(oom or lines)[-1][:160]}"}
        res = json.loads((Path(tmp) / "k.json").read_text())
        k = np.load(Path(tmp) / "k.npz")
        res["K"], res["Theta"] = k["nngp"], k["ntk"]
        return res


def max_rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """``max |a - b| / max |b|`` (the kernel's own scale; entries cross zero for tanh)."""
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def row(
    name: str, N: int, nt_python: str | None, deg: int, memory_gib: float, timeout: float
) -> dict[str, Any]:
    X = inputs(N)
    net = network(name, DEPTH)

    def last() -> pdlt.Flow:  # NT's work: the last layer's K and Theta
        return pdlt.flow(net, X, fields=("K", "Theta"), layers=[-1])

    first, best, reps, f = time_pdlt(last)
    all_s = time_pdlt(lambda: pdlt.flow(net, X, fields=("K", "Theta")))[1]
    numpy_s = None
    if _compiled.kernels() is not None:  # the same flow without the compiled kernels
        real = _compiled.kernels
        _compiled.kernels = lambda: None  # type: ignore[assignment]
        try:
            numpy_s = time_pdlt(last)[1]
        finally:
            _compiled.kernels = real  # type: ignore[assignment]
    C_b, C_W = hyperparameters(name)
    out: dict[str, Any] = {
        "activation": CUSTOM if name == "custom" else name,
        "N": N,
        "depth": DEPTH,
        "C_b": C_b,
        "C_W": C_W,
        "pdlt_first_s": first,
        "pdlt_s": best,
        "pdlt_all_layers_s": all_s,
        "pdlt_reps": reps,
        "pdlt_numpy_s": numpy_s,
    }
    if nt_python is None:
        out["nt_status"] = "neural-tangents not installed"
        return out
    nt = run_nt(nt_python, name, X, deg, memory_gib, timeout)
    if "error" in nt:
        out["nt_status"] = nt["error"]
        out["nt_method"] = "stax.Relu" if name == "relu" else f"ElementwiseNumerical(deg={deg})"
        return out
    out.update(
        nt_status="ok",
        nt_method=nt["method"],
        nt_s=nt["best_s"],
        nt_compile_s=max(nt["first_s"] - nt["best_s"], 0.0),
        nt_reps=nt["reps"],
        nt_over_pdlt=nt["best_s"] / best,
        max_rel_diff_K=max_rel_diff(nt["K"], f.K[-1]),
        max_rel_diff_Theta=max_rel_diff(nt["Theta"], f.Theta[-1]),
    )
    return out


def slope(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of log y against log x."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def scaling(Ns: Sequence[int], depths: Sequence[int]) -> list[dict[str, Any]]:
    rows = []
    for name in ("relu", "tanh"):
        tN = []
        for N in Ns:
            X, net = inputs(N), network(name, DEPTH)
            tN.append(time_pdlt(lambda: pdlt.flow(net, X, fields=("K", "Theta")))[1])  # noqa: B023
        tL = []
        for L in depths:
            X, net = inputs(100), network(name, L)
            tL.append(time_pdlt(lambda: pdlt.flow(net, X, fields=("K", "Theta")))[1])  # noqa: B023
        rows.append(
            {
                "activation": name,
                "N": list(Ns),
                "time_vs_N_s": tN,
                "slope_N": slope(Ns, tN),
                "depth": list(depths),
                "time_vs_depth_s": tL,
                "slope_depth": slope(depths, tL),
            }
        )
    return rows


def render(data: dict[str, Any]) -> str:
    head = [
        "activation",
        "N",
        "pdlt s",
        "pdlt first s",
        "numpy path / compiled",
        "NT s",
        "NT compile s",
        "NT/pdlt",
        "pdlt/pdlt ReLU",
        "pdlt s, all layers",
        "pdlt/pdlt ReLU, all layers",
        "max rel diff K",
        "max rel diff Θ",
        "NT method / status",
    ]
    relu = {r["N"]: r for r in data["rows"] if r["activation"] == "relu"}
    body = []
    for r in data["rows"]:
        ok = r.get("nt_status") == "ok"
        body.append(
            [
                r["activation"],
                r["N"],
                fmt(r["pdlt_s"]),
                fmt(r["pdlt_first_s"]),
                f"{r['pdlt_numpy_s'] / r['pdlt_s']:.3g}×" if r.get("pdlt_numpy_s") else "—",
                fmt(r["nt_s"]) if ok else "—",
                fmt(r["nt_compile_s"]) if ok else "—",
                f"{r['nt_over_pdlt']:.3g}×" if ok else "—",
                f"{r['pdlt_s'] / relu[r['N']]['pdlt_s']:.3g}×" if r["N"] in relu else "—",
                fmt(r["pdlt_all_layers_s"]),
                (
                    f"{r['pdlt_all_layers_s'] / relu[r['N']]['pdlt_all_layers_s']:.3g}×"
                    if r["N"] in relu
                    else "—"
                ),
                f"{r['max_rel_diff_K']:.1e}" if ok else "—",
                f"{r['max_rel_diff_Theta']:.1e}" if ok else "—",
                r.get("nt_method", "") + ("" if ok else f" {r['nt_status']}"),
            ]
        )
    lines = [
        "# Infinite-width kernels: pdlt vs Neural Tangents",
        "",
        f"{data['created']} · {data['machine']['cpu_model']} · "
        f"{data['machine']['cpu_affinity']} CPUs · mode {data['mode']} · depth {DEPTH}, "
        f"n_0 = {N_IN}, float64, K and Θ (NT parameterization='ntk' = book with "
        "λ_b = C_b, λ_W = C_W)",
        "",
        (
            f"pdlt's compiled kernels: numba {data['machine']['numba']}"
            if data["machine"].get("numba")
            else "pdlt's compiled kernels: not installed (numpy paths)"
        )
        + "; 'pdlt first s' is the first call in the process (it loads them from numba's "
        "cache, or compiles them once per installation); 'numpy path / compiled' is the same "
        "flow without them, timed in the same run. Both compute the last layer's K and Θ "
        "(pdlt: `flow(..., layers=[-1])`, which never stores the other layers); 'all layers' "
        "is pdlt keeping K and Θ at every layer, 10× the memory written.",
        "",
        markdown_table(head, body),
        "",
        "## Scaling of pdlt's time (log-log slopes)",
        "",
    ]
    srows = [
        [
            s["activation"],
            ", ".join(f"{n}: {fmt(t)}" for n, t in zip(s["N"], s["time_vs_N_s"], strict=True)),
            f"{s['slope_N']:.2f}",
            ", ".join(
                f"{d}: {fmt(t)}" for d, t in zip(s["depth"], s["time_vs_depth_s"], strict=True)
            ),
            f"{s['slope_depth']:.2f}",
        ]
        for s in data["scaling"]
    ]
    lines.append(
        markdown_table(
            ["activation", "s at N (depth 10)", "slope in N", "s at depth (N = 100)", "slope"],
            srows,
        )
    )
    lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = 50, 100; NT deg 12")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    ap.add_argument("--nt-python", default=None, help="Python with neural-tangents installed")
    ap.add_argument("--nt-memory-gib", type=float, default=6.0, help="NT address-space cap")
    ap.add_argument("--nt-timeout", type=float, default=900.0, help="seconds per NT row")
    args = ap.parse_args(argv)
    Ns, deg = ((50, 100), 12) if args.quick else ((100, 1000), 25)
    sweep_N, sweep_L = (
        ((25, 50, 100), (5, 10)) if args.quick else ((50, 100, 200, 400), (5, 10, 20))
    )
    nt_python = nt_interpreter(args.nt_python)
    torch.set_num_threads(1)
    rows = []
    for N in Ns:
        for name in ACTIVATIONS:
            r = row(name, N, nt_python, deg, args.nt_memory_gib, args.nt_timeout)
            print(json.dumps(r), file=sys.stderr, flush=True)
            rows.append(r)
    data: dict[str, Any] = {
        "benchmark": "infinite_width_kernels",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "mode": "quick" if args.quick else "full",
        "machine": machine_info(),
        "nt_python": nt_python,
        "rows": rows,
        "scaling": scaling(sweep_N, sweep_L),
    }
    relu = {r["N"]: r for r in rows if r["activation"] == "relu"}
    summary = []
    for r in rows:
        label = f"{r['activation']} N={r['N']}"
        if r.get("nt_status") == "ok":
            summary.append(
                {"metric": f"{label}: NT/pdlt time", "value": r["nt_over_pdlt"], "unit": "x"}
            )
        if r["activation"] != "relu":
            summary.append(
                {
                    "metric": f"{label}: pdlt / pdlt ReLU, all layers",
                    "value": r["pdlt_all_layers_s"] / relu[r["N"]]["pdlt_all_layers_s"],
                    "unit": "x",
                }
            )
            summary.append(
                {
                    "metric": f"{label}: pdlt / pdlt ReLU",
                    "value": r["pdlt_s"] / relu[r["N"]]["pdlt_s"],
                    "unit": "x",
                }
            )
    for s in data["scaling"]:
        summary.append(
            {"metric": f"{s['activation']}: slope in N", "value": s["slope_N"], "unit": ""}
        )
        summary.append(
            {"metric": f"{s['activation']}: slope in depth", "value": s["slope_depth"], "unit": ""}
        )
    data["summary"] = summary
    write_json_atomic(args.out / "infinite_width_kernels.json", data)
    md = render(data)
    write_atomic(args.out / "infinite_width_kernels.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
