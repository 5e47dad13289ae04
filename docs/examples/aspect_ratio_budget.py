"""Worked example: the optimal aspect ratio r* = L/n (Appendix A) for a fixed parameter budget.

The prediction.  For a critical MLP the mutual information between two halves of the output
layer, truncated at third order in the aspect ratio ``r = L/n`` (A.71),

    I(r) = (m1 m2 / 8) (nu r)^2 - m1 m2 (20 + 3 m1 + 3 m2) / 48 (nu r)^3,

peaks at ``r* = 4 / ((20 + 3 n_L) nu)`` (A.72)-(A.73); ``nu = 2/3`` for tanh (A.69), so with
``n_L = 2`` outputs ``r* = 0.231``.  The book reads ``r*`` as the best trade-off between no
representation learning (``r -> 0``, the kernel limit) and strongly coupled, chaotic networks
(large ``r``).  For a parameter budget ``P``, :func:`pdlt.recommend_architectures` turns this
into (depth, width) pairs: for each depth ``L`` the widest network with at most ``P``
parameters, ranked by ``I(L/n)``.

The experiment.  The theory needs ``n_L >= 2`` (it splits the output layer into two groups),
and the diabetes data has one target, so the networks predict *two* standardized quantities:
the disease-progression target (noisy: a linear fit explains about half its variance) and one
baseline variable withheld from the inputs, from the other nine.  The default is ``s5``, the
log serum triglycerides, which in this data set is a deterministic smooth function of three
other inputs, ``s5 = a + b log(c0 + c1 s1 + c2 s2 + c3 s3)`` (R^2 = 0.99999; total
cholesterol = LDL + HDL + triglycerides/5): a noiseless nonlinear regression target next to
a noisy one.  For each depth, an ensemble of
tanh networks at criticality (``C_b = 0, C_W = 1``), with the learning-rate equivalence
principle's ``lambda_b^(l) = 1/l``, ``lambda_W = 1`` (9.96) so that every depth trains at a
comparable pace, is trained by full-batch gradient descent (:func:`pdlt.train`) with the step
``eta = eta_scale / lambda_max(Theta~)`` of the depth's infinite-width NTK on the training
set.  Reported per depth:

* ``test_mse``: mean squared error per test point and output (standardized units), mean and
  standard error over the ensemble;
* ``kernel_mse``: the same initial networks propagated by the frozen infinite-width NTK for the
  same number of steps, ``z_B(t) = z_B(0) + Theta_BA O_t (y - z_A(0))`` (the kernel / infinite-
  width prediction, :func:`pdlt.learning.gd_operator`), and its exact ensemble expectation
  ``kernel_mse_theory`` from (10.40)-(10.41) at ``t`` steps;
* ``finite_width_gain``: the paired per-network difference ``test_mse - kernel_mse`` (negative:
  the finite-width network generalizes better than its kernel limit) -- the paired difference
  has no O(1) initialization spread;
* ``deviation_rms``: the root-mean-square distance of the trained network's test predictions
  from its kernel prediction (how far from the infinite-width limit the training moved it);
* ``train_loss``: the book's loss ``1/2 sum (z - y)^2`` on the training set at the end, and
  ``train_mse`` the same as a mean squared error per point and output;
* ``w_theory``, ``w_measured``: the normalized output vertex ``w^(L) = V/(n K^2)`` that the
  objective is built on, from the finite-depth recursion and measured on untrained networks
  (``nu r`` is its large-depth asymptote (A.68)).

Run from the repository root (default mode about 7 minutes on one CPU thread)::

    OMP_NUM_THREADS=1 python docs/examples/aspect_ratio_budget.py \\
        --out docs/figures/aspect_ratio_budget.png --json aspect_ratio_budget.json

``--quick`` runs a reduced version in under a minute (too few steps to converge: a smoke
test); ``--replot JSON`` redraws the figure and table from a saved run.  Write-up:
docs/aspect_ratio_budget.md.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

import pdlt
from pdlt.empirical.training import default_record_steps
from pdlt.information import Architecture
from pdlt.learning import gd_operator, kernel_prediction
from pdlt.learning.data import diabetes
from pdlt.theory.learning_rates import equivalence_principle

FEATURES = ("age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6")

DEFAULTS: dict[str, Any] = {
    "activation": "tanh",
    "budget": 4000,
    "depths": (2, 3, 4, 5, 6, 7, 8, 10, 12),
    "n_train": 40,
    "n_test": 100,
    "heldout": "s5",
    "size": 16,
    "steps": 3000,
    "eta_scale": 1.0,
    "seed": 0,
    "w_size": 10000,
}
# "converged": mean training MSE below this (targets have unit variance) ...
CONVERGED_TRAIN_MSE = 1e-3
# ... and the mean test MSE moved by less than this fraction over the second half of training
CONVERGED_TEST_DRIFT = 0.05

QUICK: dict[str, Any] = {
    **DEFAULTS,
    "depths": (2, 4, 6, 9, 12),
    "n_test": 50,
    "size": 6,
    "steps": 1000,
    "w_size": 2000,
}


def _data(n_train: int, n_test: int, heldout: str) -> dict[str, np.ndarray]:
    """Diabetes with two standardized outputs: the target and the withheld input ``heldout``."""
    if heldout not in FEATURES:
        raise ValueError(f"heldout must be one of {FEATURES}, got {heldout!r}")
    j = FEATURES.index(heldout)
    ds = diabetes(n_train=n_train, n_test=n_test)
    return {
        "x_train": np.delete(ds.x_train, j, axis=1),
        "y_train": np.c_[ds.y_train, ds.x_train[:, j]],
        "x_test": np.delete(ds.x_test, j, axis=1),
        "y_test": np.c_[ds.y_test, ds.x_test[:, j]],
    }


def _baselines(data: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """Test MSE per output of the training mean (0) and of linear least squares."""
    xa, ya, xb, yb = data["x_train"], data["y_train"], data["x_test"], data["y_test"]
    coef, *_ = np.linalg.lstsq(np.c_[xa, np.ones(len(xa))], ya, rcond=None)
    linear = np.c_[xb, np.ones(len(xb))] @ coef
    return {
        "training_mean": np.mean(yb**2, axis=0).tolist(),
        "linear_least_squares": np.mean((linear - yb) ** 2, axis=0).tolist(),
    }


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else math.nan
    return float(v.mean()), se


def architectures(
    nu: float, budget: int, depths: list[int], n_in: int, n_out: int
) -> dict[int, Architecture]:
    """pdlt's widest network within ``budget`` for every depth in ``depths`` (ranked list)."""
    top = 4 * max(depths) + 10  # enough that no requested depth is cut from the ranking
    ranked = pdlt.recommend_architectures(nu=nu, budget=budget, n_in=n_in, n_out=n_out, top=top)
    found = {a.depth: a for a in ranked}
    missing = [d for d in depths if d not in found]
    if missing:
        raise ValueError(f"no architecture within the budget for depths {missing}")
    return {d: found[d] for d in depths}


def run_depth(
    arch: Architecture,
    data: dict[str, np.ndarray],
    *,
    activation: str,
    size: int,
    steps: int,
    eta_scale: float,
    seed: int,
    w_size: int = 0,
) -> dict[str, Any]:
    """Train ``size`` networks of one architecture and compare with the kernel prediction.

    With ``w_size > 0`` also measures the normalized output vertex ``w^(L) = V/(n K^2)`` (the
    argument ``nu r`` of the information objective (A.68)) on ``w_size`` untrained networks
    for one input with ``K^(1) = 1``, and computes it from the finite-depth recursion.
    """
    t0 = time.perf_counter()
    xa, ya, xb, yb = data["x_train"], data["y_train"], data["x_test"], data["y_test"]
    n_a = xa.shape[0]
    lr = equivalence_principle(activation, arch.depth)
    net = pdlt.Network(
        activation,
        depth=arch.depth,
        width=arch.width,
        n_in=xa.shape[1],
        n_out=ya.shape[1],
        lambda_b=lr.lambda_b,
        lambda_W=lr.lambda_W,
    )
    f = pdlt.flow(net, np.r_[xa, xb], fields=("K", "Theta"))
    Theta, K = f["Theta"][-1], f["K"][-1]
    lam = np.linalg.eigvalsh(Theta[:n_a, :n_a])
    eta = eta_scale / float(lam[-1])

    rec = np.union1d(default_record_steps(steps, 12), [steps // 2])  # steps//2: drift check
    res = pdlt.train(
        net, xa, ya, xb, size=size, seed=seed, steps=steps, eta=eta, record_steps=rec,
        progress=False,
    )  # fmt: skip
    z0 = res.initial  # (M, N_A + N_B, n_L)
    zT = res.final  # (M, N_B, n_L)

    # the kernel (infinite-width) prediction for the same initial networks and steps
    O, _ = gd_operator(Theta[:n_a, :n_a], eta, steps)
    M = Theta[n_a:, :n_a] @ O  # (N_B, N_A)
    z_lin = z0[:, n_a:] + np.einsum("ba,mai->mbi", M, ya[None] - z0[:, :n_a])
    expected = kernel_prediction(Theta, K, ya, steps=steps, eta=eta)
    kernel_theory = float(np.mean((expected.mean - yb) ** 2) + np.mean(np.diag(expected.cov)))

    mse = np.mean((zT - yb) ** 2, axis=(1, 2))  # per network
    # the ensemble-averaged prediction (initialization noise averaged out), jackknife error
    m_all = zT.mean(axis=0)
    loo = (zT.sum(axis=0)[None] - zT) / max(size - 1, 1)
    loo_mse = np.mean((loo - yb) ** 2, axis=(1, 2))
    ens_se = math.sqrt((size - 1) / size * np.sum((loo_mse - loo_mse.mean()) ** 2))
    mse_out = np.mean((zT - yb) ** 2, axis=1)  # (M, n_L)
    mse_lin = np.mean((z_lin - yb) ** 2, axis=(1, 2))
    dev = np.sqrt(np.mean((zT - z_lin) ** 2, axis=(1, 2)))
    test_curve = np.mean((res.test_outputs - yb) ** 2, axis=(2, 3))  # (R, M)
    loss = res.train_loss  # (R, M): 1/2 sum (z - y)^2 over the training set
    n_vals = ya.size
    half = int(np.flatnonzero(res.record_steps == steps // 2)[0])
    best_step = int(np.argmin(test_curve.mean(axis=1)))
    rel_change = float(abs(test_curve[-1].mean() - test_curve[half].mean()) / test_curve[-1].mean())
    train_mse = 2.0 * loss[-1] / n_vals
    converged = bool(np.mean(train_mse) < CONVERGED_TRAIN_MSE and rel_change < CONVERGED_TEST_DRIFT)

    def pair(v: np.ndarray) -> list[float]:
        return list(_mean_se(v))

    w_meas: list[float] | None = None
    w_theory: float | None = None
    if w_size > 0:
        plain = net.replace(lambda_b=1.0, lambda_W=1.0)
        with warnings.catch_warnings():  # r > 0.25 warns that the 1/n series is truncated
            warnings.simplefilter("ignore")
            th = pdlt.flow(plain, k1=1.0, fields=("K", "V"))
        w_theory = float(th.single("V")[-1] / (arch.width * th.single("K")[-1] ** 2))
        ms = pdlt.measure(plain, k1=1.0, size=w_size, seed=seed, fields=("K", "V"), progress=False)
        k_l = float(ms.single("K")[-1])
        scale = arch.width * k_l**2
        w_meas = [float(ms.single("V")[-1]) / scale, float(ms.stderr("V").ravel()[-1]) / scale]

    return {
        "depth": arch.depth,
        "width": arch.width,
        "params": arch.params,
        "r": arch.aspect_ratio,
        "information": arch.information,
        "nu_r": None,
        "w_theory": w_theory,
        "w_measured": w_meas,
        "eta": eta,
        "eta_lambda_max": eta * float(lam[-1]),
        "ntk_cond": float(lam[-1] / lam[0]),
        "test_mse": pair(mse),
        "test_mse_per_output": [pair(mse_out[:, i]) for i in range(mse_out.shape[1])],
        "kernel_mse": pair(mse_lin),
        "kernel_mse_theory": kernel_theory,
        "ensemble_mean_mse": [float(np.mean((m_all - yb) ** 2)), ens_se],
        "finite_width_gain": pair(mse - mse_lin),
        "deviation_rms": pair(dev),
        "train_loss_initial": pair(loss[0]),
        "train_loss": pair(loss[-1]),
        "train_loss_max": float(loss[-1].max()),
        "train_mse": pair(train_mse),
        "test_mse_change_last_half": rel_change,
        # the lowest mean test MSE on the recorded steps (an optimistic early-stopping value)
        "test_mse_best_recorded": [
            float(test_curve[best_step].mean()),
            int(res.record_steps[best_step]),
        ],
        "converged": converged,
        "record_steps": res.record_steps.tolist(),
        "test_mse_curve": test_curve.mean(axis=1).tolist(),
        "train_loss_curve": loss.mean(axis=1).tolist(),
        "finite": bool(np.all(np.isfinite(zT)) and np.all(np.isfinite(loss))),
        "seconds": time.perf_counter() - t0,
    }


def run(
    *,
    activation: str = DEFAULTS["activation"],
    budget: int = DEFAULTS["budget"],
    depths: tuple[int, ...] | list[int] = DEFAULTS["depths"],
    n_train: int = DEFAULTS["n_train"],
    n_test: int = DEFAULTS["n_test"],
    heldout: str = DEFAULTS["heldout"],
    size: int = DEFAULTS["size"],
    steps: int = DEFAULTS["steps"],
    eta_scale: float = DEFAULTS["eta_scale"],
    seed: int = DEFAULTS["seed"],
    w_size: int = DEFAULTS["w_size"],
    verbose: bool = False,
) -> dict[str, Any]:
    """The whole experiment; returns a JSON-serializable dict (see the module docstring)."""
    t0 = time.perf_counter()
    data = _data(n_train, n_test, heldout)
    n_in, n_out = data["x_train"].shape[1], data["y_train"].shape[1]
    opt = pdlt.optimal_aspect_ratio(activation, n_out=n_out)
    # nu is passed on: each call with an activation *name* recomputes it (about 0.5 s)
    best = pdlt.recommend_architectures(nu=opt.nu, budget=budget, n_in=n_in, n_out=n_out, top=1)
    depths = sorted({int(d) for d in depths} | {best[0].depth})  # always train the recommended
    archs = architectures(opt.nu, budget, depths, n_in, n_out)
    rows = []
    for d in depths:
        row = run_depth(
            archs[d], data, activation=activation, size=size, steps=steps, eta_scale=eta_scale,
            seed=seed, w_size=w_size,
        )  # fmt: skip
        row["nu_r"] = opt.nu * row["r"]
        # the objective (A.71) at the finite-depth vertex instead of its asymptote nu r (A.68)
        for key in ("w_theory", "w_measured"):
            w = row[key] if key == "w_theory" else (row[key] or [None])[0]
            row[f"information_at_{key}"] = (
                None
                if w is None
                else pdlt.information.nearly_gaussian_mutual_information(
                    opt.m1, opt.m2, w=w, order=3
                )
            )
        rows.append(row)
        if verbose:
            print(_format_row(row), flush=True)
    # every depth against the recommended one (independent ensembles: errors add in quadrature)
    ref = next(row for row in rows if row["depth"] == best[0].depth)
    for row in rows:
        diff = row["test_mse"][0] - ref["test_mse"][0]
        se = math.hypot(row["test_mse"][1], ref["test_mse"][1]) if row is not ref else 0.0
        row["test_mse_minus_recommended"] = [diff, se]
    return {
        "baselines": _baselines(data),
        "prediction": {
            "activation": activation,
            "nu": opt.nu,
            "m1": opt.m1,
            "m2": opt.m2,
            "r_star": opt.r_star,
            "I_star": opt.I_star,
            "recommended": {
                "depth": best[0].depth,
                "width": best[0].width,
                "params": best[0].params,
                "r": best[0].aspect_ratio,
            },
        },
        "setup": {
            "budget": budget,
            "n_in": n_in,
            "n_out": n_out,
            "outputs": ["target (disease progression)", heldout],
            "n_train": n_train,
            "n_test": n_test,
            "size": size,
            "steps": steps,
            "eta_scale": eta_scale,
            "seed": seed,
            "w_size": w_size,
            "learning_rates": "equivalence principle (9.96): lambda_b = 1/l, lambda_W = 1",
            "torch_threads": torch.get_num_threads(),
        },
        "rows": rows,
        "seconds": time.perf_counter() - t0,
    }


def _pm(pair: list[float], digits: int = 3) -> str:
    return f"{pair[0]:.{digits}f} ± {pair[1]:.{digits}f}"


HEADER = (
    "| L | n | params | r = L/n | I(r) (nats) | nu r | w^(L) theory | w^(L) measured "
    "| test MSE | output 1 | output 2 | kernel MSE | trained - kernel | rms dev. "
    "| ens.-mean MSE | train MSE | s |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def _format_row(row: dict[str, Any]) -> str:
    out1, out2 = row["test_mse_per_output"][:2]
    flag = "" if row["converged"] else " (not converged)"
    w_t = "-" if row["w_theory"] is None else f"{row['w_theory']:.4f}"
    w_m = "-" if row["w_measured"] is None else _pm(row["w_measured"], 4)
    return (
        f"| {row['depth']} | {row['width']} | {row['params']} | {row['r']:.3f} "
        f"| {row['information']:.2e} | {row['nu_r']:.3f} | {w_t} | {w_m} "
        f"| {_pm(row['test_mse'])} | {_pm(out1, 2)} | {_pm(out2, 2)} "
        f"| {_pm(row['kernel_mse'])} | {_pm(row['finite_width_gain'])} "
        f"| {_pm(row['deviation_rms'], 2)} | {_pm(row['ensemble_mean_mse'])} "
        f"| {row['train_mse'][0]:.1e}{flag} | {row['seconds']:.0f} |"
    )


def plot(result: dict[str, Any], out: str | Path) -> None:
    """Information objective and measured test MSE against ``r`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred, rows = result["prediction"], result["rows"]
    r = np.array([row["r"] for row in rows])
    r_star = pred["r_star"]
    grid = np.geomspace(0.5 * r.min(), 1.5 * max(r.max(), 2 * r_star), 300)
    curve = pdlt.information_curve(nu=pred["nu"], n_out=result["setup"]["n_out"], r=grid)

    fig, axes = plt.subplots(3, 1, figsize=(6.4, 9.6), sharex=True)
    ax = axes[0]
    ax.plot(grid, curve.I, label=r"(A.71) at $w = \nu r$ (A.68)")
    ax.plot(r, [row["information"] for row in rows], "o", color="C0", label="architectures")
    w_meas = [row.get("w_measured") for row in rows]
    if all(w is not None for w in w_meas):
        info = pdlt.information.nearly_gaussian_mutual_information(
            pred["m1"], pred["m2"], w=np.array([w[0] for w in w_meas]), order=3
        )
        ax.plot(r, info, "x--", color="C2", label="(A.71) at the measured $w^{(L)}$")
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_ylim(-1.5 * pred["I_star"], 1.5 * pred["I_star"])
    ax.set_ylabel("information objective (nats)")
    ax.legend(fontsize="small", loc="lower left")

    def errs(key: str) -> tuple[np.ndarray, np.ndarray]:
        v = np.array([row[key] for row in rows])
        return v[:, 0], v[:, 1]

    ax = axes[1]
    m, se = errs("test_mse")
    ax.errorbar(r, m, se, fmt="o-", capsize=3, label="trained networks (±1 s.e.)")
    for row, y in zip(rows, m, strict=True):
        ax.annotate(f"L={row['depth']}", (row["r"], y), textcoords="offset points",
                    xytext=(-8, 7), fontsize="x-small")  # fmt: skip
    m, se = errs("kernel_mse")
    ax.errorbar(r * 1.03, m, se, fmt="s--", capsize=3, ms=4, label="same nets, frozen NTK")
    ax.plot(r, [row["kernel_mse_theory"] for row in rows], "k:", label="kernel theory (10.41)")
    ax.set_ylabel("test MSE (standardized)")
    ax.legend(fontsize="small", loc="upper left")

    ax = axes[2]
    m, se = errs("finite_width_gain")
    ax.errorbar(r, m, se, fmt="o-", capsize=3, label="test MSE: trained - frozen NTK (paired)")
    m, se = errs("deviation_rms")
    ax.errorbar(r, m, se, fmt="^-", capsize=3, label="rms distance from kernel prediction")
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.set_ylabel("finite-width effect")
    ax.set_xlabel("aspect ratio $r = L/n$ (fixed parameter budget)")
    ax.legend(fontsize="small", loc="upper left")

    for ax in axes:
        ax.axvline(r_star, color="red", lw=1.0, ls="--")
        ax.set_xscale("log")
    axes[0].text(r_star, 1.2 * pred["I_star"], f" $r^*$ = {r_star:.3f}", color="red")
    setup = result["setup"]
    fig.suptitle(
        f"{pred['activation']}, budget {setup['budget']} parameters, {setup['n_train']} training "
        f"points, {setup['size']} networks per depth, {setup['steps']} GD steps",
        fontsize="medium",
    )
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def report(result: dict[str, Any]) -> None:
    """Print the table and the comparison with the recommended split."""
    print(HEADER)
    for row in result["rows"]:
        print(_format_row(row))
    _summary(result)


def _summary(result: dict[str, Any]) -> None:
    pred, setup = result["prediction"], result["setup"]
    rec = pred["recommended"]
    print(
        f"predicted r* = {pred['r_star']:.4f} (nu = {pred['nu']:.4f}); recommended split for "
        f"{setup['budget']} parameters: depth {rec['depth']}, width {rec['width']} "
        f"(r = {rec['r']:.3f})"
    )
    if "baselines" in result:
        b = result["baselines"]
        print(
            "baselines, test MSE per output: training mean "
            + ", ".join(f"{v:.3f}" for v in b["training_mean"])
            + "; linear least squares "
            + ", ".join(f"{v:.3f}" for v in b["linear_least_squares"])
        )
    best = min(result["rows"], key=lambda row: row["test_mse"][0])
    print(
        f"lowest mean test MSE: depth {best['depth']} (r = {best['r']:.3f}), "
        f"{_pm(best['test_mse'])}; total {result['seconds']:.0f} s"
    )
    print("test MSE minus that of the recommended depth (± combined standard error):")
    for row in result["rows"]:
        d, se = row["test_mse_minus_recommended"]
        print(f"  L = {row['depth']:2d}: {d:+.3f} ± {se:.3f}")
    bad = [row["depth"] for row in result["rows"] if not row["converged"]]
    if bad:
        print(f"WARNING: training did not converge (criteria in the script) at depths {bad}")


# command-line options that override DEFAULTS / QUICK one to one
OPTIONS = ("budget", "n_train", "n_test", "heldout", "size", "steps", "eta_scale", "seed")
OPTIONS += ("w_size",)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced run (< 1 minute)")
    parser.add_argument("--out", default="aspect_ratio_budget.png", help="figure (PNG)")
    parser.add_argument("--json", default="aspect_ratio_budget.json", help="results (JSON)")
    parser.add_argument("--budget", type=int)
    parser.add_argument("--depths", help="comma-separated depths L")
    parser.add_argument("--n-train", type=int)
    parser.add_argument("--n-test", type=int)
    parser.add_argument("--heldout", choices=FEATURES, help="input variable used as output 2")
    parser.add_argument("--size", type=int, help="networks per depth")
    parser.add_argument("--steps", type=int, help="gradient-descent steps")
    parser.add_argument("--eta-scale", type=float, help="eta * lambda_max(Theta~)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--w-size", type=int, help="untrained networks for w^(L) (0: skip)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--replot", metavar="JSON", help="only redraw the figure from a JSON")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    cfg = dict(QUICK if args.quick else DEFAULTS)
    for key in OPTIONS:
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.depths:
        cfg["depths"] = tuple(int(d) for d in args.depths.split(","))

    if args.replot:
        result = json.loads(Path(args.replot).read_text(encoding="utf-8"))
        report(result)
        plot(result, args.out)
        print(f"wrote {args.out}")
        return result
    print(HEADER, flush=True)
    result = run(**cfg, verbose=True)
    _summary(result)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    plot(result, args.out)
    print(f"wrote {args.json} and {args.out}")
    return result


if __name__ == "__main__":
    main()
