"""What a trained width-n network predicts: ensembles of real networks against the 1/n theory.

Trains ensembles of networks of several widths on a few points of the diabetes data
(:func:`pdlt.learning.data.diabetes`) with full-batch gradient descent and the learning-rate
tensor (8.6) (:func:`pdlt.train`) until the training error vanishes, and compares the ensemble
mean of the test predictions with

* the infinite-width prediction ``m^NTK = Theta_{bA} Theta~^{-1} y`` (∞.161) = (10.40), and
* the finite-width prediction ``m^NTK + c/n`` (∞.160)-(∞.165) with the errata of spec/07 §13
  (:func:`pdlt.learning.finite_width_predict`).

Estimator of the ensemble mean (control variates, spec/07 §12.5): per network
``d = z(T)_b - [z_b - H-hat_{bA} H-hat^{-1} (z_A - y)]`` (the dNTK/ddNTK interaction) plus
``g = H-hat_{bA} H-hat^{-1} y``, with ``E[z_b - H-hat_{bA} H-hat^{-1} z_A] = 0`` exactly (output
sign flip), so ``E[z(T)_b] = E[d + g]``.  The part of ``g`` linear in ``Delta H = H-hat - Theta``
carries the O(n^{-1/2}) noise; its mean ``[E Delta H]_perp Theta~^{-1} y`` -- the NLO NTK-mean
term ``H^{1}/n`` (not in the book, spec/07 §8.4; pdlt derives it, the part ``nlo_ntk`` of the
prediction) -- is measured separately on a larger ensemble of untrained networks
(``--ntk-ensemble``, only initial NTKs are needed).

A second experiment shows the algorithm dependence: the *same* initial networks (same seed)
trained at the global rates ``eta`` and ``--slow * eta``.  Both agree at infinite width; at
order 1/n they differ by the algorithm-dependent parts (dNTK, ddNTK) of (∞.160) through the
projectors (∞.142)-(∞.147).  The paired difference has no O(1) spread.

Run from the repository root (a few minutes on two cores)::

    python docs/examples/finite_width_prediction.py --out docs/figures/finite_width_prediction.png
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _combined(H: np.ndarray) -> np.ndarray:
    """Per-network NTKs ``[m, i, j, d1, d2]`` -> combined index ``I = i N + d``: (m, Q, Q)."""
    m, n, _, N, _ = H.shape
    return H.transpose(0, 1, 3, 2, 4).reshape(m, n * N, n * N)


def _steps(Theta_train: np.ndarray, eta: float, width: int, tol: float = 1e-14) -> int:
    """Steps for the slowest training mode to shrink by ``tol`` (with a margin).

    Per network the NTK eigenvalues deviate from ``Theta``'s by O(n^{-1/2}); allow ``2/sqrt(n)``.
    """
    h = np.linalg.eigvalsh(Theta_train)
    delta = min(0.9, 2.0 / math.sqrt(width))
    rate = float(np.max(np.abs(1.0 - eta * np.concatenate([h * (1 - delta), h * (1 + delta)]))))
    base = 1 if rate < 1e-3 else math.log(tol) / math.log(rate)
    return int(1.3 * base) + 40


def _se(a: np.ndarray) -> np.ndarray:
    return a.std(axis=0, ddof=1) / np.sqrt(a.shape[0])


def theory(network, data, slow: float):
    """The 1/n theory (∞.160)-(∞.165) at ``eta = 1/lambda_max(Theta~)`` and at ``slow * eta``.

    The coefficient ``c`` of ``c/n`` is width-independent for equal hidden widths, so the
    tensors (``K, Theta, H1, A, B, P, Q, R, S, T, U``) are computed once, at ``network``'s width.

    Parameters
    ----------
    network : Network
    data : Dataset
    slow : float
        The second learning rate is ``slow * eta``.

    Returns
    -------
    fast : TrainedPrediction
        :func:`pdlt.learning.finite_width_predict` at ``eta`` (``infinite`` = (∞.161),
        ``coefficient`` = ``c``, ``parts``, ``tensors``).
    c_slow : ndarray, shape (N_B, n_L)
        ``c`` at ``slow * eta`` (only the algorithm projectors change).
    """
    from pdlt.learning import finite_width_predict, mean_prediction

    fast = finite_width_predict(network, data.x_train, data.y_train, data.x_test)
    t = fast.tensors
    n_a = data.x_train.shape[0]
    four = {k: t[k] for k in "ABPQRSTU"}
    m = mean_prediction(
        t["Theta"], t["K"], data.y_train.T, n_a, 1.0, eta=slow * fast.eta, kind="gd", **four
    )
    c_slow = (m.mean - m.ntk)[:, n_a:].T + fast.parts["nlo_ntk"]  # H^{1}: algorithm-free
    return fast, c_slow


def measure(network, data, width: int, size: int, ntk_size: int, eta: float, slow: float, seed):
    """Train ``size`` networks of ``width`` at ``eta`` and ``slow * eta`` (same seed).

    Parameters
    ----------
    network : Network
        Activation, depth and hyperparameters (its widths are replaced by ``width``).
    data : Dataset
    width : int
        Hidden width ``n``.
    size, ntk_size : int
        Trained networks; untrained networks for the ``H^{1}`` term.
    eta, slow : float
        The two global learning rates are ``eta`` and ``slow * eta``.
    seed : int

    Returns
    -------
    dict
        ``"shift"`` (``E[z(T)] - m^NTK``), ``"shift_no_h1"`` (without the ``H^{1}`` term),
        ``"interaction"``, ``"ntk"`` (``-m^{Delta NTK}/n`` part), ``"h1"`` and ``"diff"`` (the
        paired difference), each ``(mean, standard error)`` of shape ``(N_B, n_L)``; ``"loss"``,
        the worst final training loss.
    """
    import torch

    from pdlt.empirical.ensemble import Ensemble, forward
    from pdlt.empirical.observables import ntk
    from pdlt.empirical.training import train
    from pdlt.theory.flow import flow

    n_out = network.n_out
    net = network.replace(widths=[data.x_train.shape[1]] + [width] * (network.depth - 1) + [n_out])
    xa, ya, xb = data.x_train, data.y_train, data.x_test
    n_a, n_b = xa.shape[0], xb.shape[0]
    x = np.concatenate([xa, xb])
    Theta = np.asarray(flow(net, x, fields=("Theta",))["Theta"][-1])
    runs = []
    for e in (eta, slow * eta):
        steps = _steps(Theta[:n_a, :n_a], e, width)
        runs.append(
            train(
                net,
                xa,
                ya,
                xb,
                size=size,
                seed=seed,
                steps=steps,
                eta=e,
                block_size=size,
                record_steps=[steps],
                progress=False,
            )
        )
        worst = float(runs[-1].train_loss[-1].max())
        if not worst < 1e-20:
            print(f"warning: n={width}, eta={e:.4g}: training loss {worst:.2g} after {steps} steps")
    A = np.array([i * (n_a + n_b) + a for i in range(n_out) for a in range(n_a)])
    B = np.array([i * (n_a + n_b) + n_a + b for i in range(n_out) for b in range(n_b)])
    yc = ya.T.reshape(-1)  # combined training targets
    Th = np.kron(np.eye(n_out), Theta)
    ThAA_inv_y = np.linalg.solve(Th[np.ix_(A, A)], yc)
    proj = np.linalg.solve(Th[np.ix_(A, A)], Th[np.ix_(A, B)]).T  # Theta_bA Theta~^{-1}
    m_inf = Th[np.ix_(B, A)] @ ThAA_inv_y

    def lin_of(Hc: np.ndarray) -> np.ndarray:
        D = Hc - Th
        return (D[:, B][:, :, A] - np.einsum("ba,mac->mbc", proj, D[:, A][:, :, A])) @ ThAA_inv_y

    xt = torch.tensor(x)
    params = Ensemble(net, size, seed, size).params(0)
    same = forward(params, xt, net)[-1].numpy()
    np.testing.assert_allclose(same, runs[0].initial, atol=1e-10)  # the trained networks
    Hc = _combined(ntk(params, xt, net, net.depth).numpy())
    z0 = np.moveaxis(runs[0].initial, 2, 1).reshape(size, -1)  # [m, I]
    eps = z0[:, A] - yc
    HAA, HBA = Hc[:, A][:, :, A], Hc[:, B][:, :, A]
    free = z0[:, B] - np.einsum("mba,ma->mb", HBA, np.linalg.solve(HAA, eps[..., None])[..., 0])
    final = np.moveaxis(runs[0].final, 2, 1).reshape(size, -1)  # [m, (i, b)]
    d = final - free
    g = np.einsum(
        "mba,ma->mb", HBA, np.linalg.solve(HAA, np.broadcast_to(yc, eps.shape)[..., None])[..., 0]
    )
    lin = lin_of(Hc)
    q = g - m_inf - lin
    # the H^{1} term from a larger ensemble of untrained networks (initial NTKs only)
    lins = []
    for k in range(max(1, ntk_size // 1000)):
        m = min(1000, ntk_size)
        p = Ensemble(net, m, 10_000 + 97 * seed + k, m).params(0)
        lins.append(lin_of(_combined(ntk(p, xt, net, net.depth).numpy())))
    lin_big = np.concatenate(lins)
    diff = np.moveaxis(runs[0].final - runs[1].final, 2, 1).reshape(size, -1)

    def shape(a):  # combined (i, b) -> (N_B, n_L)
        return np.asarray(a).reshape(n_out, n_b).T

    total = d + q
    return {
        "interaction": (shape(d.mean(0)), shape(_se(d))),
        "ntk": (shape(q.mean(0)), shape(_se(q))),
        "h1": (shape(lin_big.mean(0)), shape(_se(lin_big))),
        "shift_no_h1": (shape(total.mean(0)), shape(_se(total))),
        "shift": (
            shape(total.mean(0) + lin_big.mean(0)),
            shape(np.sqrt(_se(total) ** 2 + _se(lin_big) ** 2)),
        ),
        "diff": (shape(diff.mean(0)), shape(_se(diff))),
        "loss": max(float(r.train_loss[-1].max()) for r in runs),
    }


def main(argv: list[str] | None = None) -> dict:
    """Run the experiment, print the numbers, save the figure; return the results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "figures" / "finite_width_prediction.png"))
    ap.add_argument("--widths", default="32,64,128", help="comma-separated hidden widths n")
    ap.add_argument("--ensemble", type=int, default=400, help="trained networks per width")
    ap.add_argument("--ntk-ensemble", type=int, default=4000, help="untrained, for H^{1}")
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--activation", default="gelu", help="a smooth activation")
    ap.add_argument("--n-train", type=int, default=1)
    ap.add_argument("--n-test", type=int, default=2)
    ap.add_argument("--slow", type=float, default=0.2, help="second rate = slow * eta")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--points", type=int, default=2, help="test points to plot")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pdlt import Network
    from pdlt.learning.data import diabetes

    widths = sorted(int(w) for w in args.widths.split(","))
    data = diabetes(n_train=max(2, args.n_train), n_test=args.n_test)
    if args.n_train == 1:  # diabetes() needs two rows for its standardization
        data = type(data)(
            data.x_train[:1], data.y_train[:1], data.x_test, data.y_test, data.description
        )
    network = Network(args.activation, depth=args.depth, width=widths[0], n_out=1)
    network = network.replace(n_in=data.x_train.shape[1])
    t0 = time.time()
    fast, c_slow = theory(network, data, args.slow)
    c = fast.coefficient
    c_h1 = fast.parts["nlo_ntk"]
    c_diff = c - c_slow
    print(f"{network!r}; {data.description}")
    print(f"eta = {fast.eta:.4g} (1/lambda_max(Theta~)) and {args.slow} eta")
    print(f"theory: {time.time() - t0:.0f} s")
    print(f"infinite width m^NTK = {fast.infinite[:, 0].round(5).tolist()}")
    parts = ", ".join(f"{k} {v[:, 0].round(4).tolist()}" for k, v in fast.parts.items())
    print(f"1/n coefficient c (eta) = {c[:, 0].round(4).tolist()}, parts {parts}")
    print(f"algorithm difference c(eta) - c({args.slow} eta) = {c_diff[:, 0].round(4).tolist()}")
    results = {}
    for w in widths:
        t1 = time.time()
        r = measure(network, data, w, args.ensemble, args.ntk_ensemble, fast.eta, args.slow,
                    args.seed)  # fmt: skip
        results[w] = r
        for b in range(data.x_test.shape[0]):
            s, se = (v[b, 0] for v in r["shift"])
            s0, se0 = (v[b, 0] for v in r["shift_no_h1"])
            h, hse = (v[b, 0] for v in r["h1"])
            dm, dse = (v[b, 0] for v in r["diff"])
            print(
                f"n={w:4d} test {b}: shift {s:+.5f} +- {se:.5f} (theory {c[b, 0] / w:+.5f}; "
                f"without H1 {s0:+.5f} +- {se0:.5f} (theory {(c - c_h1)[b, 0] / w:+.5f}); "
                f"H1 term {h:+.5f} +- {hse:.5f} (theory {c_h1[b, 0] / w:+.5f})); "
                f"paired difference {dm:+.5f} +- {dse:.5f} (theory {c_diff[b, 0] / w:+.5f})"
            )
        print(f"  n={w}: {time.time() - t1:.0f} s, worst final training loss {r['loss']:.1g}")

    points = min(args.points, data.x_test.shape[0])
    fig, axes = plt.subplots(1, points + 1, figsize=(4.2 * (points + 1), 3.8))
    inv = np.array([1.0 / w for w in widths])
    grid = np.linspace(0, 1.1 * inv.max(), 50)
    for b in range(points):
        ax = axes[b]
        m0 = fast.infinite[b, 0]
        ax.axhline(m0, color="k", lw=1, label="infinite width (∞.161)")
        ax.plot(grid, m0 + c[b, 0] * grid, "C0-", label="finite width $m^{NTK}+c/n$ (∞.160)")
        mean = np.array([m0 + results[w]["shift"][0][b, 0] for w in widths])
        err = np.array([results[w]["shift"][1][b, 0] for w in widths])
        ax.errorbar(inv, mean, 2 * err, fmt="o", color="C3", capsize=3,
                    label="trained ensembles (±2 s.e.)")  # fmt: skip
        mean0 = np.array([m0 + results[w]["shift_no_h1"][0][b, 0] for w in widths])
        err0 = np.array([results[w]["shift_no_h1"][1][b, 0] for w in widths])
        ax.errorbar(1.04 * inv, mean0, 2 * err0, fmt="o", mfc="none", color="C2", capsize=3,
                    label="the same without the $H^{1}$ term")  # fmt: skip
        ax.plot(grid, m0 + (c - c_h1)[b, 0] * grid, "C2--", lw=1,
                label="theory without the $H^{1}$ term")  # fmt: skip
        ax.set_xlabel("1/n")
        ax.set_ylabel(f"mean test prediction, patient {b}")
        ax.set_title(f"{args.activation}, L={args.depth}, test point {b}")
        ax.legend(fontsize=7)
    ax = axes[-1]
    ax.axhline(0, color="k", lw=1, label="infinite width: no difference")
    for b in range(points):
        ax.plot(grid, c_diff[b, 0] * grid, f"C{b}-", label=f"theory, test {b}")
        mean = np.array([results[w]["diff"][0][b, 0] for w in widths])
        err = np.array([results[w]["diff"][1][b, 0] for w in widths])
        ax.errorbar(inv, mean, 2 * err, fmt="o", color=f"C{b}", capsize=3,
                    label=f"paired ensembles, test {b}")  # fmt: skip
    ax.set_xlabel("1/n")
    ax.set_ylabel(f"z(T; $\\eta$) - z(T; {args.slow}$\\eta$)")
    ax.set_title("algorithm dependence (same networks)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f"saved {out}; {time.time() - t0:.0f} s in all")
    return {"theory": fast, "c_slow": c_slow, "results": results}


if __name__ == "__main__":
    main()
