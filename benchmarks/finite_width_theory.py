"""Benchmark: the finite-width theory (V, G{1}) against sampling networks for the same precision.

For N inputs and a depth-L tanh / ReLU network this measures, in one run:

* the time pdlt's recursions take to compute K, V and G{1} at every layer (theory), with the
  Gaussian engine's accuracy (about 1e-10 relative in one and two dimensions, 1e-8..1e-10 in
  three and four);
* the time one sampled network takes in `pdlt.measure` (fields K, V) on this machine, measured
  on a small ensemble;
* the number of networks an ensemble needs for the same precision: the vertex estimator has a
  relative standard error of about sqrt(2/M) (spec/02 §12.2), so a relative precision eps needs
  M = 2/eps^2 networks -- reported for eps = 1e-3 (a good experiment) and for the theory's own
  1e-8 -- and what that costs at the measured rate.

Usage: python benchmarks/finite_width_theory.py [--quick] [--out DIR]
(default: N = 8, depth 20; --quick: N = 4, depth 6)
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


def run(activation: str, N: int, depth: int, width: int, sample: int) -> dict[str, object]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 8))
    crit = pdlt.criticality(activation)
    net = pdlt.Network(activation, depth=depth, width=width, n_in=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        pdlt.flow(net, x, fields=("K", "V", "G1"))
        t_theory = time.perf_counter() - t0
    t0 = time.perf_counter()
    m = pdlt.measure(net, x, size=sample, seed=0, fields=("K", "V"), progress=False)
    t_mc = time.perf_counter() - t0
    per_net = t_mc / m.meta["size"]
    rel_se = float(np.median(m.stderr("V")[-1] / np.maximum(np.abs(m.V[-1]), 1e-300)))
    rows = {}
    for eps in (1e-3, 1e-8):
        M = 2.0 / eps**2
        rows[eps] = (M, M * per_net)
    return {
        "activation": activation,
        "class": crit.universality_class,
        "N": N,
        "depth": depth,
        "width": width,
        "theory_s": t_theory,
        "mc_networks_measured": int(m.meta["size"]),
        "mc_s_per_network": per_net,
        "mc_median_rel_stderr_V_last_layer": rel_se,
        "networks_for_1e-3": rows[1e-3][0],
        "mc_s_for_1e-3": rows[1e-3][1],
        "networks_for_1e-8": rows[1e-8][0],
        "mc_s_for_1e-8": rows[1e-8][1],
        "speedup_vs_mc_at_1e-3": rows[1e-3][1] / t_theory,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="N = 4, depth 6")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    args = ap.parse_args(argv)
    N, depth, sample = (4, 6, 200) if args.quick else (8, 20, 400)
    results = [run(a, N, depth, 64, sample) for a in ("tanh", "relu")]
    head = [
        "activation",
        "N",
        "L",
        "theory s",
        "MC s/network",
        "networks for 1e-3",
        "MC s for 1e-3",
        "theory speedup at 1e-3",
        "networks for 1e-8",
    ]
    body = [
        [
            r["activation"],
            r["N"],
            r["depth"],
            f"{r['theory_s']:.3g}",
            f"{r['mc_s_per_network']:.3g}",
            f"{r['networks_for_1e-3']:.2g}",
            f"{r['mc_s_for_1e-3']:.3g}",
            f"{r['speedup_vs_mc_at_1e-3']:.3g}x",
            f"{r['networks_for_1e-8']:.2g}",
        ]
        for r in results
    ]
    md = "# Finite-width theory vs sampling (V, G1)\n\n" + markdown_table(head, body) + "\n"
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = [
        {
            "metric": f"{r['activation']} N={r['N']} L={r['depth']}: theory time",
            "value": r["theory_s"],
            "unit": "s",
        }
        for r in results
    ]
    summary += [
        {
            "metric": f"{r['activation']}: theory speedup vs MC at 1e-3",
            "value": r["speedup_vs_mc_at_1e-3"],
            "unit": "x",
        }
        for r in results
    ]
    write_json_atomic(
        args.out / "finite_width_theory.json",
        {"machine": machine_info(), "rows": results, "summary": summary},
    )
    write_atomic(args.out / "finite_width_theory.md", md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
