"""Figure: preactivation variance over 50 layers, pdlt's critical init vs torch's default.

Width-256, depth-50 ``nn.Sequential`` MLPs (tanh, ReLU, GELU) are initialized either by
``pdlt.torch.critical_init_`` or left with torch's default (kaiming_uniform with a = sqrt(5):
C_W = 1/3, C_b = 1/(3 n_{l-1})).  A batch of unit-norm inputs ((1/n_0) sum x^2 = 1) is pushed
through and the second moment of the preactivations z^(l) is averaged over neurons, inputs and
networks (error bars: standard error over networks).  Lines: pdlt's kernel recursion (4.118)
at the critical point (with its 1/n correction G^{1}/n) and at torch's default hyperparameters
-- computed without torch.

Run:  python docs/figures/torch_init_variance.py [--out docs/figures/torch_init_variance.png]
"""

from __future__ import annotations

import argparse
import math
import warnings

import numpy as np
import torch
from torch import nn

import pdlt
import pdlt.torch as pt
from pdlt.theory.kernel import kernel_flow

ACTS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}


def mlp(act: type[nn.Module], n0: int, width: int, depth: int) -> nn.Sequential:
    """``Linear, act, ..., Linear`` with every layer ``width`` wide (the last one too)."""
    mods: list[nn.Module] = [nn.Linear(n0, width)]
    for _ in range(depth - 1):
        mods += [act(), nn.Linear(width, width)]
    return nn.Sequential(*mods)


@torch.no_grad()
def layer_variances(model: nn.Sequential, x: torch.Tensor) -> np.ndarray:
    """Mean over neurons and inputs of (z^(l))^2 after every Linear layer, shape (L,)."""
    out, h = [], x
    for m in model:
        h = m(h)
        if isinstance(m, nn.Linear):
            out.append(float((h.double() ** 2).mean()))
    return np.array(out)


def measure(name: str, init: str, x: torch.Tensor, width: int, depth: int, nets: int) -> np.ndarray:
    """Layer variances of ``nets`` networks, shape (nets, L)."""
    rows = []
    for _ in range(nets):
        model = mlp(ACTS[name], x.shape[1], width, depth)
        if init == "pdlt":
            pt.critical_init_(model)
        rows.append(layer_variances(model, x))
    return np.array(rows)


def theory(name: str, n0: int, width: int, depth: int) -> dict[str, np.ndarray]:
    """Critical K, K + G1/n, and K at torch's default hyperparameters, each shape (L,)."""
    net = pdlt.Network(name, depth=depth, width=width, n_in=n0, n_out=width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pdlt.theory.flow.TruncationWarning)
        f = pdlt.flow(net, np.ones((1, n0)), fields=("K", "G1"))
    fan_in = np.array([n0] + [width] * (depth - 1), dtype=float)
    default = kernel_flow(
        net.activation, np.ones((1, 1)), 1.0 / (3.0 * fan_in), np.full(depth, 1.0 / 3.0)
    )
    return {
        "K": f.K[:, 0, 0],
        "K_nlo": f.K[:, 0, 0] + f.G1[:, 0, 0] / width,
        "default": default[:, 0, 0],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="torch_init_variance.png")
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--nets", type=int, default=32)
    parser.add_argument("--n-in", type=int, default=32)
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    x = torch.randn(16, args.n_in)
    x *= math.sqrt(args.n_in) / x.norm(dim=1, keepdim=True)
    ell = np.arange(1, args.depth + 1)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pdlt.plots import save_atomically

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), sharey=True)
    for ax, name in zip(axes, ACTS, strict=True):
        th = theory(name, args.n_in, args.width, args.depth)
        for init, color in (("pdlt", "C0"), ("default", "C3")):
            v = measure(name, init, x, args.width, args.depth, args.nets)
            mean, se = v.mean(0), v.std(0, ddof=1) / math.sqrt(len(v))
            label = "pdlt.torch.critical_init_" if init == "pdlt" else "torch default init"
            ax.errorbar(ell, mean, se, fmt="o", ms=3, color=color, label=label)
            print(
                f"{name:5s} {init:8s} E[z^2]: layer 1 {mean[0]:.4g}, "
                f"layer {args.depth} {mean[-1]:.4g} +- {se[-1]:.2g}"
            )
        ax.plot(ell, th["K_nlo"], "-", color="C0", lw=1, label="theory: critical K + G1/n")
        ax.plot(ell, th["K"], "--", color="k", lw=0.8, label="theory: critical K (n = inf)")
        ax.plot(
            ell, th["default"], ":", color="C3", lw=1.2, label="theory: torch default (C_W = 1/3)"
        )
        print(
            f"{name:5s} theory   K^({args.depth}) = {th['K'][-1]:.4g} (critical), "
            f"{th['default'][-1]:.4g} (torch default)"
        )
        ax.set_yscale("log")
        ax.set_xlabel(r"layer $\ell$")
        ax.set_title(f"{name}: width {args.width}, {args.nets} networks")
    axes[0].set_ylabel(r"preactivation variance $\mathbb{E}[(z^{(\ell)})^2]$")
    axes[1].legend(fontsize=8, loc="center right")
    fig.tight_layout()
    save_atomically(fig, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
