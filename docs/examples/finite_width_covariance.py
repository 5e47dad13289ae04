"""How much trained width-n networks disagree: the covariance (∞.166) against real ensembles.

Trains ensembles of real networks of several widths (tanh and GELU, depth 3, two training and
two test inputs, two outputs) to convergence with full-batch gradient descent and the
learning-rate tensor (8.6) (:func:`pdlt.train`), and compares the ensemble covariance of the
test predictions with :func:`pdlt.learning.finite_width_predict`'s covariance: the
kernel-prediction covariance ``delta_{i1i2} [K]_perp`` (10.41) plus ``c/n``, derived in full by
pdlt (:func:`pdlt.learning.covariance_prediction`; the book prints only the term (∞.167)).

Estimator (control variate).  Per network ``f = z_B - Theta_{BA} Theta~^{-1} z_A`` is a fixed
linear map of the initial outputs, so ``Cov[f] = [K + G^{1}/n]_perp`` exactly; the shift
``Cov[z(T)] - Cov[f] = Cov[d, d] + Cov[f, d] + Cov[d, f]`` with ``d = z(T) - f = O(n^{-1/2})`` is
measured from the same networks (standard errors of the per-network products) against
``(c - c_{G1}) / n``.  With the networks' own initial NTKs it splits into

* the *free* part, ``L = z_B - H-hat_{BA} H-hat^{-1} (z_A - y)`` (exact per network):
  ``Cov[L] - Cov[f]`` against the parts ``ntk`` (A, B), ``ntk_z`` (D, F), ``nlo_ntk`` (H^{1});
* the *interaction* part, ``Cov[z(T)] - Cov[L]`` against ``dntk`` (P, Q), ``ddI``, ``ddII``.

Run from the repository root (about 25 minutes on two cores at the defaults)::

    python docs/examples/finite_width_covariance.py --out docs/figures/finite_width_covariance.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
PARTS = {"free": ("ntk", "ntk_z", "nlo_ntk"), "interaction": ("dntk", "ddI", "ddII")}


def _data(seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4, 3))
    y = 2.0 * rng.normal(size=(2, 2))
    return x[:2], y, x[2:]


def _shift(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``Cov[X] - Cov[Y]`` as ``Cov[d,d] + Cov[Y,d] + Cov[d,Y]`` (``d = X - Y``), and its s.e."""
    d, y = X - X.mean(0), Y - Y.mean(0)
    d = d - y
    prod = np.einsum("mi,mj->mij", d, d) + np.einsum("mi,mj->mij", y, d)
    prod = prod + np.einsum("mi,mj->mij", d, y)
    return prod.mean(0), prod.std(0, ddof=1) / np.sqrt(X.shape[0])


def measure(activation: str, width: int, size: int, seed: int, steps: int, depth: int = 3) -> dict:
    """One ensemble: measured covariance shifts (total, free, interaction), the interaction
    part of the mean shift, ``E[z(T) - L]`` (its theory: the parts ``dntk + ddI + ddII`` of
    the mean (∞.160)), and their predictions."""
    import torch

    from pdlt import Network
    from pdlt.empirical.ensemble import Ensemble
    from pdlt.empirical.observables import ntk
    from pdlt.empirical.training import train
    from pdlt.learning import finite_width_predict

    xa, ya, xb = _data()
    net = Network(activation, widths=[3] + [width] * (depth - 1) + [2], C_b=0.0, C_W=1.0,
                  lambda_b=0.7, lambda_W=1.3)  # fmt: skip
    th = finite_width_predict(net, xa, ya, xb)
    block = min(size, 2000)
    run = train(net, xa, ya, xb, size=size, seed=seed, steps=steps, eta=th.eta,
                block_size=block, record_steps=[steps], progress=False)  # fmt: skip
    ens = Ensemble(net, size, seed, block)
    x = torch.tensor(np.concatenate([xa, xb]))
    H = np.concatenate([ntk(ens.params(b), x, net, net.depth).numpy() for b in range(ens.n_blocks)])
    n_out, n_a = 2, 2
    Hc = H.transpose(0, 1, 3, 2, 4).reshape(size, 8, 8)  # combined (i, d)
    A, B = [0, 1, 4, 5], [2, 3, 6, 7]
    z0 = run.initial.transpose(0, 2, 1).reshape(size, 8)  # [m, (i, d)]
    v = np.linalg.solve(Hc[:, A][:, :, A], (z0[:, A] - ya.T.reshape(-1))[..., None])[..., 0]
    L = z0[:, B] - np.einsum("mba,ma->mb", Hc[:, B][:, :, A], v)  # [m, (i, b)]
    Th = th.tensors["Theta"]
    proj = np.linalg.solve(Th[:n_a, :n_a], Th[:n_a, n_a:]).T
    zi = z0.reshape(size, n_out, 4)
    f = (zi[:, :, n_a:] - np.einsum("ba,mia->mib", proj, zi[:, :, :n_a])).reshape(size, 4)
    zT = run.final.transpose(0, 2, 1).reshape(size, 4)
    parts = {k: v.transpose(1, 0, 3, 2).reshape(4, 4) for k, v in th.covariance.parts.items()}
    out = {"loss": float(run.train_loss[-1].max())}
    pairs = {"total": (zT, f), "free": (L, f), "interaction": (zT, L)}
    for name, (X, Y) in pairs.items():
        keys = PARTS.get(name, tuple(k for k in parts if k != "nlo_kernel"))
        meas, se = _shift(X, Y)
        out[name] = {
            "n_meas": (width * meas).tolist(),
            "n_se": (width * se).tolist(),
            "n_theory": sum(parts[k] for k in keys).tolist(),
        }
    out["infinite"] = th.covariance.infinite.transpose(1, 0, 3, 2).reshape(4, 4).tolist()
    inter = zT - L
    mean_theory = sum(th.parts[k] for k in PARTS["interaction"]).T.reshape(4)
    out["mean_interaction"] = {
        "n_meas": (width * inter.mean(0)).tolist(),
        "n_se": (width * inter.std(0, ddof=1) / np.sqrt(size)).tolist(),
        "n_theory": mean_theory.tolist(),
    }
    return out


def paired(activation: str, width: int, size: int, seed: int, slow: float, steps: int) -> dict:
    """Algorithm dependence: the *same* networks trained at ``eta = 1/lambda_max(Theta~)`` and
    at ``slow * eta``.  Both have the same infinite-width covariance and the same NTK part; at
    order 1/n they differ by the algorithm-dependent parts (dNTK, ddNTK, through the projectors
    (∞.142)-(∞.147)).  Measured: ``Cov[z_fast] - Cov[z_slow]`` from the paired outputs."""
    from pdlt import Network
    from pdlt.empirical.training import train
    from pdlt.learning import finite_width_predict

    xa, ya, xb = _data()
    net = Network(activation, widths=[3, width, width, 2], C_b=0.0, C_W=1.0, lambda_b=0.7,
                  lambda_W=1.3)  # fmt: skip
    fast = finite_width_predict(net, xa, ya, xb)
    slow_th = finite_width_predict(net, xa, ya, xb, eta=slow * fast.eta)
    block = min(size, 2000)
    runs = [
        train(
            net,
            xa,
            ya,
            xb,
            size=size,
            seed=seed,
            steps=n,
            eta=t.eta,
            block_size=block,
            record_steps=[n],
            progress=False,
        )  # fmt: skip
        for t, n in ((fast, steps), (slow_th, int(steps / slow)))
    ]
    assert np.array_equal(runs[0].initial, runs[1].initial)  # the same networks
    zf, zs = (r.final.transpose(0, 2, 1).reshape(size, 4) for r in runs)
    meas, se = _shift(zf, zs)
    theory = fast.covariance.coefficient - slow_th.covariance.coefficient
    return {
        "n_meas": (width * meas).tolist(),
        "n_se": (width * se).tolist(),
        "n_theory": theory.transpose(1, 0, 3, 2).reshape(4, 4).tolist(),
        "loss": max(float(r.train_loss[-1].max()) for r in runs),
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the experiment, print the numbers, save the figure and a JSON; return the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "figures" / "finite_width_covariance.png"))
    ap.add_argument("--activations", default="tanh,gelu")
    ap.add_argument("--widths", default="32,64,128,256", help="comma-separated hidden widths n")
    ap.add_argument("--ensemble", type=int, default=8000, help="trained networks per width")
    ap.add_argument("--steps", type=int, default=200, help="gradient-descent steps")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acts = args.activations.split(",")
    widths = sorted(int(w) for w in args.widths.split(","))
    labels = ["test 0, out 0", "test 1, out 0", "test 0, out 1", "test 1, out 1"]
    res: dict = {}
    for act in acts:
        res[act] = {}
        for w in widths:
            t0 = time.time()
            r = measure(act, w, args.ensemble, args.seed, args.steps)
            res[act][w] = r
            print(f"{act} n={w}: {args.ensemble} networks, {time.time() - t0:.0f} s, "
                  f"largest final training loss {r['loss']:.2g}")  # fmt: skip
            for name in ("total", "free", "interaction"):
                m, s, t = (np.asarray(r[name][k]) for k in ("n_meas", "n_se", "n_theory"))
                cells = "  ".join(
                    f"{m[k, k]:+.4f}±{s[k, k]:.4f} ({t[k, k]:+.4f})" for k in range(4)
                )
                print(f"  n x shift of the variances, {name:>11}: {cells}")
    fig, axes = plt.subplots(1, len(acts), figsize=(5.5 * len(acts), 4.2), squeeze=False)
    for ax, act in zip(axes[0], acts, strict=True):
        inv = np.array([1.0 / w for w in widths])
        for k, lab in enumerate(labels):
            m = np.array([res[act][w]["total"]["n_meas"][k][k] for w in widths])
            s = np.array([res[act][w]["total"]["n_se"][k][k] for w in widths])
            t = res[act][widths[0]]["total"]["n_theory"][k][k]
            (line,) = ax.plot([0, inv.max() * 1.05], [t, t], "--", lw=1)
            ax.errorbar(inv, m, yerr=2 * s, fmt="o", color=line.get_color(), capsize=3,
                        label=lab)  # fmt: skip
        ax.set_xlabel("1/n")
        ax.set_ylabel("n x (Var[z(T)] - Var[f])")
        ax.set_title(f"{act}: variance of the trained test outputs, 1/n part")
        ax.set_xlim(0, inv.max() * 1.05)
        ax.legend(fontsize=8)
    fig.text(0.01, 0.01, "points: trained ensembles (±2 s.e.); dashed: pdlt's c (at 1/n -> 0 "
             "the points must reach it; their slope is the O(1/n^2) part)", fontsize=8)  # fmt: skip
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}")
    return res


if __name__ == "__main__":
    main()
