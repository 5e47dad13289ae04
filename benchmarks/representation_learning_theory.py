"""Benchmark: time to compute the dNTK and ddNTK statistics P, Q, R, S, T, U from theory.

For N inputs and a depth-L network this times ``pdlt.flow(..., fields=P,Q,R,S,T,U)`` (which
also computes what they need: K, Theta, B, F) at every layer, with the Gaussian engine's
accuracy (for smooth activations in two to four dimensions rotated sequential conditioning,
~1e-13; the general rule it replaced took 548 s of one core here at N = 8, depth 20), and
splits the time into the four-point Gaussian expectations (``four_point_moments``, one shared
integration per layer) and the rest.  Wall time and the process's CPU time are both recorded:
run single-threaded (OMP_NUM_THREADS=1), the CPU time is what the work costs on one idle core
even when the machine is shared.  For scale: measuring the same tensors on real networks
costs a per-network ddNTK of ``(m N)^2`` Hessian-vector products per layer, and an ensemble
needs ``M ~ 1/eps^2`` networks for relative precision ``eps`` (spec/07 §12.2) -- see
``finite_width_theory.py`` for that comparison on V and G1.

Usage: python benchmarks/representation_learning_theory.py [--quick] [--out DIR]
       [--activations tanh,gelu] [--N N] [--depth L]
(default: N = 8, depth 20, tanh; --quick: N = 4, depth 6)
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from _common import RESULTS_DIR, machine_info, markdown_table, write_atomic, write_json_atomic

import pdlt
from pdlt.theory import four_point


def run(activation: str, N: int, depth: int) -> dict[str, object]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 8))
    net = pdlt.Network(activation, depth=depth, width=1000, n_in=8, lambda_b=1.0, lambda_W=1.0)
    spent = [0.0]
    original = four_point._integrate_four_point

    def timed(*args: object) -> list[np.ndarray]:
        t0 = time.perf_counter()
        out = original(*args)  # type: ignore[arg-type]
        spent[0] += time.perf_counter() - t0
        return out

    four_point._MOMENT_CACHE.clear()
    four_point._integrate_four_point = timed  # type: ignore[assignment]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0, c0 = time.perf_counter(), time.process_time()
            pdlt.flow(net, x, fields=("P", "Q", "R", "S", "T", "U"))
            total, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        four_point._integrate_four_point = original  # type: ignore[assignment]
    return {
        "activation": activation,
        "N": N,
        "depth": depth,
        "theory_s": total,
        "theory_cpu_s": cpu,
        "four_point_moments_s": spent[0],
        "per_layer_s": total / (depth - 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = 4, depth 6")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    ap.add_argument("--activations", default="tanh", help="comma list (smooth activations)")
    ap.add_argument("--N", type=int, default=None, help="number of inputs (overrides the mode)")
    ap.add_argument("--depth", type=int, default=None, help="depth L (overrides the mode)")
    args = ap.parse_args(argv)
    N, depth = (4, 6) if args.quick else (8, 20)
    N, depth = args.N or N, args.depth or depth
    results = [run(a, N, depth) for a in args.activations.split(",")]
    head = [
        "activation",
        "N",
        "L",
        "P..U theory s",
        "CPU s",
        "of which 4-point integrals s",
        "s/layer",
    ]
    body = [
        [
            r["activation"],
            r["N"],
            r["depth"],
            f"{r['theory_s']:.3g}",
            f"{r['theory_cpu_s']:.3g}",
            f"{r['four_point_moments_s']:.3g}",
            f"{r['per_layer_s']:.3g}",
        ]
        for r in results
    ]
    md = "# dNTK and ddNTK theory (P, Q, R, S, T, U)\n\n" + markdown_table(head, body) + "\n"
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = [
        {
            "metric": f"{r['activation']} N={r['N']} L={r['depth']}: P,Q,R,S,T,U theory time",
            "value": r["theory_s"],
            "unit": "s",
        }
        for r in results
    ]
    write_json_atomic(
        args.out / "representation_learning_theory.json",
        {"machine": machine_info(), "rows": results, "summary": summary},
    )
    write_atomic(args.out / "representation_learning_theory.md", md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
