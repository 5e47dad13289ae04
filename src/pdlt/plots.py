"""Figures (matplotlib, optional dependency): theory curves against measured points."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .compare import Comparison

__all__ = ["plot_comparison", "save_atomically", "LABELS"]

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
