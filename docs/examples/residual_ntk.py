"""The NTK statistics of residual networks against real ones: A, B, D, F through the depth.

The book gives A, B, D, F (8.77)-(8.97) for vanilla MLPs only.  pdlt derives them for residual
MLPs (B.3) by writing the NTK as the covariance of the network's tangent in a random parameter
direction and carrying each neuron's extended state (z, zeta, zeta') through the covariance
functional that already gives the residual vertex (:func:`pdlt.theory.residual.
residual_ntk_statistics`).  This script measures the four statistics on ensembles of real
residual networks by autodiff (:func:`pdlt.measure`) and plots them against the theory, layer
by layer, for one input (diagonal entries) and the mixed entries of two inputs; each panel
reports the largest ``|measured - theory| / (4 s.e. + (l/n) max|X^(l)|)`` over all entries and
layers (the tolerance of ``tests/test_residual.py``; at most 1 means agreement to order 1/n).

Run from the repository root (about four minutes on two cores at the defaults)::

    python docs/examples/residual_ntk.py --out docs/figures/residual_ntk.png
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

FIELDS = ("A", "B", "D", "F")
X = np.array([[1.0, 0.3, -0.5], [0.2, -1.1, 0.4]])
# the entries plotted: one input, and the two inputs mixed (storage of pdlt.theory.ntk)
ENTRIES = {"[0,0,0,0]": (0, 0, 0, 0), "[0,1,0,1]": (0, 1, 0, 1)}


def run(activation: str, gamma2: float, width: int, depth: int, size: int, seed: int) -> dict:
    """Theory and measurement of A, B, D, F at every layer of one residual network."""
    from pdlt import Network, flow, measure

    net = Network(activation, depth=depth, width=width, n_in=3, n_out=2, gamma=math.sqrt(gamma2))
    theory = flow(net, X, fields=FIELDS)
    measured = measure(net, X, size=size, seed=seed, fields=FIELDS, block_size=max(size // 8, 2))
    out: dict = {"network": repr(net), "fields": {}}
    ell = np.arange(1, depth + 1)[:, None, None, None, None]
    for f in FIELDS:
        se = measured.stderr(f)
        # the tests' tolerance: 4 s.e. plus the O(1/n^2) allowance (l/n) max|X^(l)|
        scale = np.max(np.abs(theory[f]), axis=(1, 2, 3, 4), keepdims=True)
        tol = 4 * se + ell / width * scale
        ratio = np.abs(measured[f] - theory[f]) / np.where(tol > 0, tol, np.inf)
        out["fields"][f] = {
            name: {
                "theory": theory[f][(slice(None), *idx)].tolist(),
                "measured": measured[f][(slice(None), *idx)].tolist(),
                "stderr": se[(slice(None), *idx)].tolist(),
            }
            for name, idx in ENTRIES.items()
        }
        out["fields"][f]["worst"] = float(np.max(ratio[1:]))
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 4, figsize=(13, 3.2 * len(results)), squeeze=False)
    for row, (label, res) in zip(axes, results.items(), strict=True):
        for ax, f in zip(row, FIELDS, strict=True):
            for (name, entry), color in zip(
                ((k, v) for k, v in res["fields"][f].items() if k != "worst"),
                ("C0", "C1"),
                strict=True,
            ):
                layers = np.arange(1, len(entry["theory"]) + 1)
                ax.plot(layers, entry["theory"], "-", color=color, label=f"theory {name}")
                ax.errorbar(
                    layers,
                    entry["measured"],
                    yerr=entry["stderr"],
                    fmt="o",
                    color=color,
                    ms=4,
                    capsize=2,
                    label=f"measured {name}",
                )
            ax.set_title(f"{f}   (worst |diff| / tolerance {res['fields'][f]['worst']:.2f})")
            ax.set_xlabel("layer l")
        row[0].set_ylabel(label)
        row[0].legend(fontsize=7)
    fig.suptitle("Residual MLPs: NTK statistics, theory (derived) against real networks")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("residual_ntk.png"))
    parser.add_argument("--activations", default="relu,tanh")
    parser.add_argument("--gamma2", type=float, default=0.5)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--ensemble", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    results = {}
    for act in args.activations.split(","):
        label = f"{act}, gamma^2 = {args.gamma2:g}, n = {args.width}"
        results[label] = run(act, args.gamma2, args.width, args.depth, args.ensemble, args.seed)
        worst = {f: round(results[label]["fields"][f]["worst"], 2) for f in FIELDS}
        print(f"{label}: largest |measured - theory| / (4 s.e. + (l/n) max|X|) {worst}")
    plot(results, args.out)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
