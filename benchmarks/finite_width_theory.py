"""Benchmark: the finite-width theory (V, G{1}) against sampling networks for the same precision.

For N inputs and a depth-L tanh / ReLU network this measures, in one run:

* the time pdlt's recursions take to compute K, V and G{1} at every layer (theory).  The
  cost is the four-point expectations <s_a s_b s_c s_d>_K, one per distinct set of samples
  and layer: C(N, 4) four-dimensional ones (35 960 per layer at N = 32) plus C(N, 3)
  three-dimensional ones.  For the ReLU family they are closed forms (Stein reduction to
  orthant probabilities, one 1-D Plackett integral in four dimensions); for tanh they are
  quadratures by rotated sequential conditioning (``pdlt._gaussian_four``), 0.02-0.5 ms each
  (the more at the first layers, where the variances are O(1));
* the accuracy of the four-point expectations, on a random sample of four-sample sets at the
  first and the last layer: the production path against the generic quadrature with its
  refined error estimate (`expect(..., error=True)`, an independent rule);
* the time one sampled network takes in `pdlt.measure` (fields K, V) on this machine,
  measured on a small ensemble;
* the number of networks an ensemble needs for the same precision: the vertex estimator has a
  relative standard error of about sqrt(2/M) (spec/02 §12.2), so a relative precision eps needs
  M = 2/eps^2 networks -- reported for eps = 1e-3 (a good experiment) and for the theory's own
  1e-8 -- and what that costs at the measured rate.

Usage: python benchmarks/finite_width_theory.py [--quick] [--out DIR]
(default: tanh and ReLU at N = 8 and N = 32, depth 20; --quick: N = 4 and ReLU at N = 8,
depth 6, tanh at N = 8 and depth 3)
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
from pdlt import gaussian
from pdlt.activations import activation as get_activation

N_IN = 8
WIDTH = 64


def _setup(act: str, N: int, depth: int) -> tuple[pdlt.Network, np.ndarray]:
    rng = np.random.default_rng(0)
    return pdlt.Network(act, depth=depth, width=WIDTH, n_in=N_IN), rng.normal(size=(N, N_IN))


def _patterns(d: int) -> list[list[tuple[int, int]]]:
    """The products of sigma a set of ``d`` distinct samples contributes to <s s s s>: one in
    four dimensions, (a a b c), (a b b c), (a b c c) in three."""
    if d == 4:
        return [[(0, 0), (1, 0), (2, 0), (3, 0)]]
    return [sorted([(a, 0) for a in range(3)] + [(r, 0)]) for r in range(3)]


def _four_point(act: str, K: np.ndarray, subsets: np.ndarray, **kw: object) -> object:
    blocks = K[subsets[:, :, None], subsets[:, None, :]]
    return gaussian.moments(get_activation(act), blocks, _patterns(subsets.shape[1]), **kw)


def accuracy(act: str, K_layers: np.ndarray, n_sets: int, seed: int = 1) -> dict[str, float]:
    """Four-point expectations at the first and last layer: production path vs the generic
    quadrature's refined rule, on ``n_sets`` random four-sample sets per layer."""
    rng = np.random.default_rng(seed)
    N = K_layers.shape[-1]
    worst_diff = worst_err = 0.0
    for K in (K_layers[0], K_layers[-2]):  # the kernels the first and last V steps integrate
        sets = np.array([np.sort(rng.choice(N, 4, replace=False)) for _ in range(n_sets)])
        value = _four_point(act, K, sets)[:, 0]
        ref, err = _four_point(act, K, sets, error=True)
        worst_diff = max(worst_diff, float(np.max(np.abs(value - ref[:, 0]) / np.abs(ref[:, 0]))))
        worst_err = max(worst_err, float(np.max(np.abs(err[:, 0]) / np.abs(ref[:, 0]))))
    return {"max_rel_diff_vs_generic": worst_diff, "generic_rel_error_estimate": worst_err}


def run(act: str, N: int, depth: int, sample: int, n_acc: int) -> dict[str, object]:
    net, x = _setup(act, N, depth)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        res = pdlt.flow(net, x, fields=("K", "V", "G1"))
        t_theory = time.perf_counter() - t0
        acc = accuracy(act, res.K, n_acc)
    t0 = time.perf_counter()
    m = pdlt.measure(net, x, size=sample, seed=0, fields=("K", "V"), progress=False)
    t_mc = time.perf_counter() - t0
    per_net = t_mc / m.meta["size"]
    rel_se = float(np.median(m.stderr("V")[-1] / np.maximum(np.abs(m.V[-1]), 1e-300)))
    rows = {eps: (2.0 / eps**2, 2.0 / eps**2 * per_net) for eps in (1e-3, 1e-8)}
    return {
        "activation": act,
        "class": pdlt.criticality(act).universality_class,
        "N": N,
        "depth": depth,
        "width": WIDTH,
        "theory_s": t_theory,
        **acc,
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
    ap.add_argument("--quick", action="store_true", help="small sizes (< 2 min)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    args = ap.parse_args(argv)
    if args.quick:
        plan = [("tanh", 4, 6), ("relu", 4, 6), ("relu", 8, 6), ("tanh", 8, 3)]
        sample, n_acc = 100, 1
    else:
        plan = [("tanh", 8, 20), ("relu", 8, 20), ("relu", 32, 20), ("tanh", 32, 20)]
        sample, n_acc = 200, 2
    results = []
    for act, N, depth in plan:
        print(f"{act} N={N} L={depth} ...", flush=True)
        results.append(run(act, N, depth, sample, n_acc))
    head = [
        "activation",
        "N",
        "L",
        "theory s",
        "4-pt accuracy",
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
            f"{r['max_rel_diff_vs_generic']:.1e} (generic ±{r['generic_rel_error_estimate']:.0e})",
            f"{r['mc_s_per_network']:.3g}",
            f"{r['networks_for_1e-3']:.2g}",
            f"{r['mc_s_for_1e-3']:.3g}",
            f"{r['speedup_vs_mc_at_1e-3']:.3g}x",
            f"{r['networks_for_1e-8']:.2g}",
        ]
        for r in results
    ]
    md = (
        "# Finite-width theory vs sampling (V, G1)\n\n"
        + markdown_table(head, body)
        + "\n\n4-pt accuracy: the largest relative difference of <s_a s_b s_c s_d> between the "
        "production path and the generic quadrature, on random four-sample sets at the first "
        "and last layer, with the generic rule's own refined error estimate in brackets (the "
        "production paths are the more accurate: closed forms for ReLU, ~1e-13 for tanh).\n"
    )
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
            "metric": f"{r['activation']} N={r['N']}: theory speedup vs MC at 1e-3",
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
