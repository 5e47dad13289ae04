"""Figures (matplotlib, optional dependency): theory curves against measured points."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .compare import Comparison
    from .results import Flow

__all__ = [
    "plot_comparison",
    "plot_flow",
    "plot_prediction",
    "plot_ratios",
    "save_atomically",
    "LABELS",
]

LABELS: dict[str, str] = {
    "K": r"$K^{(\ell)}$ (4.118)",
    "V": r"$V^{(\ell)}$ (4.119)",
    "Theta": r"$\Theta^{(\ell)}$ (8.63)",
    "A": r"$A^{(\ell)}$ (8.97)",
    "B": r"$B^{(\ell)}$ (8.89)",
    "D": r"$D^{(\ell)}$ (8.77)",
    "F": r"$F^{(\ell)}$ (8.79)",
    "P": r"$P^{(\ell)}$ (11.49)",
    "Q": r"$Q^{(\ell)}$ (11.52)",
    "R": r"$R^{(\ell)}$ ($\infty$.177)",
    "S": r"$S^{(\ell)}$ ($\infty$.178)",
    "T": r"$T^{(\ell)}$ ($\infty$.179)",
    "U": r"$U^{(\ell)}$ ($\infty$.180)",
    "chi_parallel": r"$\chi_\parallel^{(\ell)}$ (5.50)",
    "chi_perp": r"$\chi_\perp^{(\ell)}$ (5.51)",
}


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'pdlt[plot]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_comparison(
    comparison: Comparison, path: str | None = None, fields: Sequence[str] | None = None
) -> Any:
    """One panel per field: the all-first-input entry vs layer, theory line and measured points
    with one-standard-error bars.  Saves to ``path`` (PNG) if given; returns the figure."""
    plt = _pyplot()
    names = [
        f for f in dict.fromkeys(r.field for r in comparison.rows) if fields is None or f in fields
    ]
    if not names:
        raise ValueError("nothing to plot: no field has both theory and measurement")
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        rs = [r for r in comparison.rows if r.field == name]
        ell = np.array([r.layer for r in rs])
        idx = tuple([0] * rs[0].theory.ndim)
        t = np.array([r.theory[idx] for r in rs])
        m = np.array([r.measured[idx] for r in rs])
        s = np.array([r.stderr[idx] for r in rs])
        ax.plot(ell, t, "-", color="C0", label="theory")
        ax.errorbar(ell, m, yerr=s, fmt="o", color="C1", ms=4, capsize=2, label="networks")
        bad = [r.layer for r in rs if not r.ok]
        if bad:
            ax.plot(
                bad, [m[list(ell).index(b)] for b in bad], "x", color="red", ms=9, label="disagrees"
            )
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel(r"layer $\ell$")
        ax.set_ylabel(LABELS.get(name, name))
        ax.legend(fontsize=8)
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    size = comparison.meta.get("size")
    fig.suptitle(
        f"theory vs {size} sampled networks" if size else "theory vs networks", fontsize=10
    )
    fig.tight_layout()
    if path is not None:
        save_atomically(fig, path)
    return fig


def plot_flow(flow: Flow, path: str | None = None, fields: Sequence[str] | None = None) -> Any:
    """One panel per field: the all-first-input entry against the layer (a theory result as a
    line; a measured one as points with one-standard-error bars).  Saves to ``path`` (PNG) if
    given; returns the figure."""
    plt = _pyplot()
    names = [f for f in flow.fields if fields is None or f in fields]
    if not names:
        raise ValueError(f"nothing to plot: the result has fields {flow.fields}")
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.3 * rows), squeeze=False)
    ell = np.asarray(flow.layers)
    for ax, name in zip(axes.ravel(), names, strict=False):
        v = flow[name]
        idx = (slice(None),) + (0,) * (v.ndim - 1)
        if flow.kind == "theory":
            ax.plot(ell, v[idx], "-o", color="C0", ms=3)
        else:
            ax.errorbar(ell, v[idx], yerr=flow.stderr(name)[idx], fmt="o", color="C1", capsize=2)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel(r"layer $\ell$")
        ax.set_ylabel(LABELS.get(name, name))
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    fig.suptitle(repr(flow.network), fontsize=8)
    fig.tight_layout()
    if path is not None:
        save_atomically(fig, path)
    return fig


def save_atomically(fig: Any, path: str) -> None:
    """Write the figure to a temporary file and rename it, so no half-written file remains."""
    fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        fig.savefig(tmp, dpi=120, format=fmt)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def plot_ratios(
    theory: dict[str, np.ndarray],
    measured: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    path: str | None = None,
) -> Any:
    """The dimensionless finite-width ratios per layer on one axis (9.23)-(9.25), (11.62).

    Parameters
    ----------
    theory : dict of ndarray, shape (L,)
        :func:`pdlt.fluctuation_ratios` of a theory result (``grad_factor`` is skipped).
    measured : dict of (ndarray, ndarray), optional
        The same ratios measured, with standard errors, drawn as points with error bars.
    path : str, optional
        Save as PNG.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    names = [k for k in theory if k != "grad_factor"]
    if not names:
        raise ValueError("nothing to plot: no finite-width ratio in the result")
    for i, name in enumerate(names):
        ell = np.arange(1, len(theory[name]) + 1)
        ax.plot(ell, theory[name], "-", color=f"C{i}", label=name.replace("Theta", "Θ"))
        if measured is not None and name in measured:
            m, s = measured[name]
            ax.errorbar(ell[: len(m)], m, yerr=s, fmt="o", color=f"C{i}", ms=3, capsize=2)
    ax.axhline(0.0, color="grey", lw=0.5)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel(r"layer $\ell$")
    ax.set_ylabel("ratio (lines: theory, points: networks)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    if path is not None:
        save_atomically(fig, path)
    return fig


def plot_prediction(prediction: dict[str, Any], path: str | None = None) -> Any:
    """Test predictions: targets, the infinite-width mean (± its spread over networks), the
    1/n-corrected mean (∞.160) and a trained ensemble's mean (± standard error).

    Parameters
    ----------
    prediction : dict
        ``infinite_width_mean`` ``(N_B, n_L)`` and ``infinite_width_std`` ``(N_B,)``, and
        optionally ``y_test``, ``finite_width_mean`` (with ``width``) and ``ensemble``
        (``mean``, ``mean_stderr``, ``size``), as written by ``pdlt report``; the first output
        is drawn.
    path : str, optional
        Save as PNG.
    """
    plt = _pyplot()
    inf = np.asarray(prediction["infinite_width_mean"], dtype=float)[:, 0]
    std = np.asarray(prediction["infinite_width_std"], dtype=float)
    b = np.arange(len(inf))
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    if prediction.get("y_test") is not None:
        y = np.asarray(prediction["y_test"], dtype=float)[:, 0]
        ax.plot(b - 0.15, y, "kx", ms=8, label="target")
    ax.errorbar(b, inf, yerr=std, fmt="s", color="C0", capsize=3, label="∞ width (± spread)")
    if prediction.get("finite_width_mean") is not None:
        fin = np.asarray(prediction["finite_width_mean"], dtype=float)[:, 0]
        ax.plot(b + 0.1, fin, "D", color="C2", label=f"∞ + 1/n, n = {prediction['width']}")
    ens = prediction.get("ensemble")
    if ens is not None:
        em = np.asarray(ens["mean"], dtype=float)[:, 0]
        es = np.asarray(ens["mean_stderr"], dtype=float)[:, 0]
        label = f"{ens['size']} trained nets"
        ax.errorbar(b + 0.2, em, yerr=es, fmt="o", color="C1", capsize=3, label=label)
    ax.set_xticks(b)
    ax.set_xlabel("test point")
    ax.set_ylabel("prediction")
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
        save_atomically(fig, path)
    return fig
