"""Benchmark: every finite-width statistic (V, G{1}, A, B, D, F, P, Q) by the theory against
sampling networks, ReLU and tanh, N = 8 and N = 32 inputs, depth 20.

For each row, in one run:

* theory: the time of one ``pdlt.flow`` for K, V, G{1}, Theta, A, B, D, F, P, Q at every
  layer (the ReLU family's three- and four-point expectations are closed forms; tanh's are
  quadratures by rotated sequential conditioning, ``pdlt._gaussian_four``);
* sampling: the time per network of ``pdlt.measure`` for the same statistics (G{1}, the 1/n
  shift of the mean kernel, aside), in two groups -- V, A, B, D, F (forward pass and NTK,
  one Jacobian per network) and P, Q (the dNTK: a double JVP for every pair of the ``N m``
  directions, ``m = 4`` neurons, at every layer);
* per statistic, the networks an ensemble needs for a relative standard error of 1e-3 at the
  last layer: ``M (s/1e-3)^2``, with ``s`` the median over entries of the measured standard
  error relative to the theory's value on the ``M`` networks sampled; the row reports the
  hardest statistic and what sampling it would cost.

At N = 32 the dNTK of one network takes minutes (its direction pairs grow as N^2), so P and Q
are not sampled there: their per-network time is projected from N = 8 by (32/8)^2 and their
relative spread taken from N = 8 (the row says so).

Usage: python benchmarks/finite_width_statistics.py [--quick] [--activations relu,tanh] [--out DIR]
(default: N = 8 and 32, depth 20; --quick: N = 4 and 8, depth 6, fewer networks)
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS_DIR, machine_info, markdown_table, write_atomic, write_json_atomic

import pdlt

N_IN = 8
WIDTH = 64
EPS = 1e-3
GROUPS = {"forward and NTK": ("V", "A", "B", "D", "F"), "dNTK": ("P", "Q")}
THEORY_FIELDS = ("K", "V", "G1", "Theta", "A", "B", "D", "F", "P", "Q")


def _network(act: str, depth: int) -> pdlt.Network:
    # two output neurons: A, B, D, F, P, Q are averages over pairs of distinct neurons
    return pdlt.Network(act, depth=depth, width=WIDTH, n_in=N_IN, n_out=2)


def _sample(
    net: pdlt.Network, x: np.ndarray, theory: Any, fields: Sequence[str], size: int
) -> dict[str, Any]:
    """Per-network time of ``pdlt.measure`` for ``fields`` and, per field, the networks needed
    for a relative standard error of ``EPS`` at the last layer."""
    t0 = time.perf_counter()
    m = pdlt.measure(net, x, size=size, seed=0, fields=("K", "Theta", *fields), progress=False)
    per_net = (time.perf_counter() - t0) / m.meta["size"]
    M = int(m.meta["size"])
    networks, zero = {}, []
    for f in fields:
        value = np.abs(np.asarray(theory[f])[-1])
        keep = value > 1e-12 * np.max(value, initial=0.0)  # zeros of the theory carry no scale
        if not np.any(keep):  # the theory predicts 0 (ReLU's P): no relative precision
            zero.append(f)
            continue
        rel = np.asarray(m.stderr(f))[-1][keep] / value[keep]
        networks[f] = M * (float(np.median(rel)) / EPS) ** 2
    return {
        "networks_sampled": M,
        "s_per_network": per_net,
        "networks_for_eps": networks,
        "theory_zero": zero,
    }


def run(
    act: str, N: int, depth: int, sizes: dict[str, int], pq_from: dict[str, Any] | None
) -> dict:
    """One row; ``pq_from``: the dNTK group of a smaller-N row to project from, or None to
    sample P and Q here."""
    net = _network(act, depth)
    x = np.random.default_rng(0).normal(size=(N, N_IN))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        theory = pdlt.flow(net, x, fields=THEORY_FIELDS)
        t_theory = time.perf_counter() - t0
        groups = {}
        for name, fields in GROUPS.items():
            if name == "dNTK" and pq_from is not None:
                groups[name] = {
                    **pq_from,
                    "s_per_network": pq_from["s_per_network"] * (N / pq_from["N"]) ** 2,
                    "projected_from_N": pq_from["N"],
                }
            else:
                groups[name] = {"N": N, **_sample(net, x, theory, fields, sizes[name])}
    networks = {f: v for g in groups.values() for f, v in g["networks_for_eps"].items()}
    # an ensemble measures all statistics at once: the hardest one sets M, every group pays it
    M = max(networks.values())
    mc_s = M * sum(g["s_per_network"] for g in groups.values())
    return {
        "activation": act,
        "N": N,
        "depth": depth,
        "width": WIDTH,
        "theory_s": t_theory,
        "groups": groups,
        "networks_for_1e-3": networks,
        "hardest": max(networks, key=networks.__getitem__),
        "mc_s_for_1e-3": mc_s,
        "speedup_vs_mc_at_1e-3": mc_s / t_theory,
    }


def render(rows: list[dict[str, Any]]) -> str:
    head = ["activation", "N", "L", "theory s (K..Q)", "MC s/network V..F", "MC s/network P, Q"]
    head += ["networks for 1e-3 (hardest)", "MC s for 1e-3", "theory speedup"]
    body = []
    for r in rows:
        g = r["groups"]
        pq = g["dNTK"]
        pq_s = f"{pq['s_per_network']:.3g}"
        if "projected_from_N" in pq:
            pq_s += f" (projected from N = {pq['projected_from_N']})"
        body.append(
            [
                r["activation"],
                r["N"],
                r["depth"],
                f"{r['theory_s']:.3g}",
                f"{g['forward and NTK']['s_per_network']:.3g}",
                pq_s,
                f"{r['networks_for_1e-3'][r['hardest']]:.2g} ({r['hardest']})",
                f"{r['mc_s_for_1e-3']:.2g}",
                f"{r['speedup_vs_mc_at_1e-3']:.2g}x",
            ]
        )
    per_field = "; ".join(
        f"{r['activation']} N = {r['N']}: "
        + ", ".join(f"{f} {v:.1g}" for f, v in r["networks_for_1e-3"].items())
        for r in rows
    )
    sampled = "; ".join(
        f"{r['activation']} N = {r['N']}: "
        + ", ".join(
            f"{name} {g['networks_sampled']}"
            for name, g in r["groups"].items()
            if "projected_from_N" not in g
        )
        for r in rows
    )
    zero = sorted(
        {
            f"{r['activation']}'s {f}"
            for r in rows
            for g in r["groups"].values()
            for f in g["theory_zero"]
        }
    )
    zero_note = (
        f"  {', '.join(zero)}: the theory predicts exactly 0 at this depth (so there is no "
        "relative precision to reach; the ensembles measure it consistent with 0 and their "
        "time is counted)."
        if zero
        else ""
    )
    return (
        "# Finite-width statistics: theory vs sampling (V, G1, A, B, D, F, P, Q)\n\n"
        + markdown_table(head, body)
        + "\n\nTheory: one `pdlt.flow` for K, V, G1, Theta, A, B, D, F, P, Q at every layer. "
        "MC: `pdlt.measure` of the same statistics (G1 aside) on small ensembles (networks "
        f"sampled: {sampled}); networks for a relative standard error of 1e-3 at the last "
        f"layer, per statistic (median over entries): {per_field}.  An ensemble measures all "
        "statistics together, so the hardest one sets its size and every group pays it."
        + zero_note
        + "\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (< 1 min)")
    ap.add_argument("--activations", default="relu,tanh", help="comma-separated (relu,tanh)")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    args = ap.parse_args(argv)
    if args.quick:
        plan, depth = [(4, {"forward and NTK": 16, "dNTK": 8}), (8, None)], 6
        sizes_big = {"forward and NTK": 8}
    else:
        plan, depth = [(8, {"forward and NTK": 16, "dNTK": 4}), (32, None)], 20
        sizes_big = {"forward and NTK": 4}
    rows: list[dict[str, Any]] = []
    for act in args.activations.split(","):
        for N, sizes in plan:
            print(f"{act} N={N} L={depth} ...", flush=True)
            pq_from = None if sizes is not None else rows[-1]["groups"]["dNTK"]
            rows.append(run(act, N, depth, sizes or sizes_big, pq_from))
    md = render(rows)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = [
        {
            "metric": f"{r['activation']} N={r['N']} L={r['depth']}: all statistics, theory "
            "speedup vs MC "
            "at 1e-3",
            "value": r["speedup_vs_mc_at_1e-3"],
            "unit": "x",
        }
        for r in rows
    ]
    write_json_atomic(
        args.out / "finite_width_statistics.json",
        {"machine": machine_info(), "rows": rows, "summary": summary},
    )
    write_atomic(args.out / "finite_width_statistics.md", md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
