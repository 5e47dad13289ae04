"""``pdlt report``: the theory and real networks side by side, in one self-contained HTML page.

The report is the main job of pdlt.  With no arguments it runs on built-in defaults and writes,
into one folder,

* ``index.html`` -- self-contained (figures embedded as PNG data, no script or style from the
  network), readable offline;
* ``report.json`` -- every number in the report, with the settings and versions;
* ``*.csv`` -- the same numbers as tables; ``figures/*.png`` -- the figures;
* ``inputs.csv``, ``train.csv``, ``test.csv`` -- the inputs, so that every section can be
  reproduced by hand with the ``pdlt`` command printed beside it.

Sections:

1. **Universality classes** (ch. 5): critical ``C_b, C_W``, ``K*`` and the class of the book's
   activations (:func:`pdlt.criticality`).
2. **Depth flow at criticality** (ch. 4, 5, 8, 9, 11): per activation, the theory of
   ``K`` (with ``G{1}/n``), ``V``, ``Theta``, ``A, B, D, F`` and the dNTK ``P, Q`` against an
   ensemble of real networks measured by autodiff (:func:`pdlt.measure`,
   :func:`pdlt.compare`), and the dimensionless ratios ``V/(nK^2)``, ``A/(n Theta^2)``, ...
   (:func:`pdlt.fluctuation_ratios`) that grow like ``l/n``.
3. **Aspect ratio** (appendix A): the information objective (A.71) against ``r = L/n`` and the
   optimal ``r*`` (:mod:`pdlt.information`).
4. **A trained network's prediction** (ch. 10, ∞): on a small real data set, the infinite-width
   prediction, its 1/n correction (∞.160), and an ensemble of real networks trained by gradient
   descent.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ._progress import Progress
from .activations import activation
from .compare import Comparison, compare, nlo_fields
from .network import Network
from .results import Flow, _jsonable

__all__ = ["ReportSettings", "Report", "make_report", "DEFAULT_SETTINGS", "QUICK_SETTINGS"]

#: The book's activations shown in the universality table (parameter-free entries).
BOOK_ACTIVATIONS = (
    "linear",
    "relu",
    "leaky_relu",
    "tanh",
    "sin",
    "erf",
    "gelu",
    "swish",
    "sigmoid",
    "softplus",
    "perceptron",
)

#: Two inputs of norm^2 = n_0 = 2 at correlation 0.6: K^(1)_aa = C_b + C_W.
FLOW_INPUTS = np.array([[1.0, 1.0], [1.4, -0.2]])


@dataclass(frozen=True)
class ReportSettings:
    """What the report computes.

    Attributes
    ----------
    activations : tuple of str
        Activations of the depth-flow and aspect-ratio sections, at criticality.
    depth, width, ensemble : int
        Depth ``L``, hidden width ``n`` and number of sampled networks ``M`` of the depth flow.
    fields : tuple of str
        Fields measured and compared in the depth flow.
    predict_activation : str
        Activation of the trained-network section (smooth: the 1/n correction needs the
        ddNTKs).
    predict_depth, predict_width, predict_ensemble : int
        Its depth, width and number of trained networks.
    n_train, n_test : int
        Training and test points taken from the built-in data (scikit-learn's diabetes).  Few,
        because the 1/n correction needs four-point Gaussian integrals over every four of the
        ``n_train + n_test`` inputs at every layer.
    seed : int
    device : str
        ``"cpu"`` or ``"cuda"`` for the real networks.
    gamma : float
        Residual strength of the depth-flow networks' hidden layers (appendix B; 0: vanilla).
        Residual networks are at residual criticality, and their flow compares the fields the
        residual theory has (K, V, Theta, A, B, D, F; no P, Q).
    """

    activations: tuple[str, ...] = ("tanh", "relu")
    depth: int = 6
    width: int = 32
    ensemble: int = 500
    fields: tuple[str, ...] = ("K", "V", "Theta", "A", "B", "D", "F", "P", "Q")
    predict_activation: str = "tanh"
    predict_depth: int = 3
    predict_width: int = 64
    predict_ensemble: int = 64
    n_train: int = 2
    n_test: int = 2
    seed: int = 0
    device: str = "cpu"
    gamma: float = 0.0

    def __post_init__(self) -> None:
        for name in ("depth", "width", "ensemble", "predict_depth", "predict_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.depth < 2:
            raise ValueError(f"depth must be >= 2 for a depth flow, got {self.depth}")
        if self.predict_ensemble < 2 or self.ensemble < 2:
            raise ValueError("ensemble sizes must be >= 2 (standard errors need two networks)")
        if not self.activations:
            raise ValueError("give at least one activation")
        for a in (*self.activations, self.predict_activation):
            activation(a)  # a clear error for an unknown name
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")
        if not (isinstance(self.gamma, int | float) and 0 <= self.gamma**2 < 1):
            raise ValueError(f"gamma must be a number with 0 <= gamma^2 < 1, got {self.gamma!r}")

    @property
    def flow_fields(self) -> tuple[str, ...]:
        """The depth-flow fields: ``fields``, less what residual networks do not have."""
        if not self.gamma:
            return self.fields
        return tuple(f for f in self.fields if f not in ("P", "Q"))


DEFAULT_SETTINGS = ReportSettings()
QUICK_SETTINGS = ReportSettings(
    depth=4,
    width=16,
    ensemble=200,
    fields=("K", "V", "Theta", "A", "B"),
    predict_depth=2,
    predict_width=32,
    predict_ensemble=16,
)


@dataclass
class Report:
    """A written report: its folder and every number in it (``data`` is ``report.json``)."""

    path: Path
    data: dict[str, Any]
    seconds: float
    files: list[str] = field(default_factory=list)

    @property
    def html(self) -> Path:
        return self.path / "index.html"

    def __repr__(self) -> str:
        return f"Report({str(self.html)!r}, {len(self.files)} files, {self.seconds:.1f} s)"


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------


def universality_table(names: Sequence[str] = BOOK_ACTIVATIONS) -> list[dict[str, Any]]:
    """Class, critical ``C_b, C_W`` and ``K*`` of each activation (:func:`pdlt.criticality`)."""
    from .theory.criticality import criticality

    rows = []
    for name in names:
        c = criticality(name)
        rows.append(
            {
                "activation": name,
                "universality_class": c.universality_class,
                "C_b": c.C_b,
                "C_W": c.C_W,
                "K_star": c.K_star,
                "reason": c.reason,
            }
        )
    return rows


def flow_network(act: str, settings: ReportSettings) -> Network:
    """The depth-flow network: critical initialization (residual criticality (B.19) with
    ``settings.gamma``), two outputs (A..Q need two)."""
    n_in = FLOW_INPUTS.shape[1]
    return Network(
        act, depth=settings.depth, width=settings.width, n_in=n_in, n_out=2, gamma=settings.gamma
    )


def depth_flow(
    act: str,
    settings: ReportSettings,
    *,
    progress: bool | None = None,
    checkpoint: Path | None = None,
    scheduler: str | None = None,
) -> tuple[Flow, Flow, Comparison]:
    """Theory and measurement of ``settings.fields``, compared as ``pdlt compare`` does
    (``checkpoint``, ``scheduler``: as for :func:`pdlt.measure`)."""
    from .empirical.estimators import measure
    from .theory.flow import available_fields, flow

    net = flow_network(act, settings)
    measured = measure(
        net,
        FLOW_INPUTS,
        size=settings.ensemble,
        seed=settings.seed,
        fields=settings.flow_fields,
        device=settings.device,
        progress=progress,
        checkpoint=checkpoint,
        scheduler=scheduler,
    )
    theory_fields = [f for f in measured.fields if f in available_fields()]
    theory_fields += nlo_fields(net, theory_fields)
    theory = flow(net, measured.inputs, fields=theory_fields)
    return theory, measured, compare(theory, measured)


def ddntk_ratios(network: Network) -> dict[str, np.ndarray]:
    """Theory-only ddNTK ratios ``X K/(n Theta^3)``, ``X = R, S, T, U`` (∞.19)-(∞.22), for the
    flow inputs; empty for kinked activations, where the ddNTKs are undefined (§∞.1), and for
    residual networks, whose ddNTKs are not derived."""
    from .theory.flow import flow, fluctuation_ratios

    if not network.activation.smooth or network.residual:
        return {}
    f = flow(network, FLOW_INPUTS, fields=("K", "Theta", "R", "S", "T", "U"))
    return {k: v for k, v in fluctuation_ratios(f).items() if k[0] in "RSTU"}


def compare_command(act: str, settings: ReportSettings, inputs_csv: str) -> list[str]:
    """The ``pdlt compare`` arguments that reproduce :func:`depth_flow`."""
    return [
        "compare",
        "--activation",
        act,
        "--depth",
        str(settings.depth),
        "--width",
        str(settings.width),
        "--n-out",
        "2",
        "--inputs",
        inputs_csv,
        "--ensemble",
        str(settings.ensemble),
        "--seed",
        str(settings.seed),
        "--device",
        settings.device,
        "--fields",
        ",".join(settings.flow_fields),
        *(["--gamma", f"{settings.gamma:g}"] if settings.gamma else []),
        "--json",
    ]


def prediction(
    settings: ReportSettings,
    *,
    progress: bool | None = None,
    checkpoint: Path | None = None,
    scheduler: str | None = None,
) -> dict[str, Any]:
    """Infinite-width and 1/n-corrected prediction of fully-trained networks, and a trained
    ensemble, on the built-in data (the numbers of ``pdlt predict``; ``checkpoint`` (a file),
    ``scheduler``: as for :func:`pdlt.train`)."""
    from .cli import _default_training, _ensemble_summary
    from .empirical.training import train
    from .learning.data import diabetes
    from .learning.finite_width import finite_width_predict
    from .theory.flow import flow

    data = diabetes(settings.n_train, settings.n_test)
    net = Network(
        settings.predict_activation,
        depth=settings.predict_depth,
        width=settings.predict_width,
        n_in=data.x_train.shape[1],
    )
    fw = finite_width_predict(net, data.x_train, data.y_train, data.x_test)
    x = np.concatenate([data.x_train, data.x_test])
    f = flow(net.replace(width=None), x, fields=("K",), layers=[-1])
    K = f["K"][-1]
    n_a = data.x_train.shape[0]
    Theta_train = fw.tensors["Theta"][:n_a, :n_a]
    eta, steps = _default_training(Theta_train)
    result = train(
        net,
        data.x_train,
        data.y_train,
        data.x_test,
        size=settings.predict_ensemble,
        seed=settings.seed,
        steps=steps,
        eta=eta,
        record_steps=[0, steps],
        device=settings.device,
        progress=progress,
        checkpoint=checkpoint,
        scheduler=scheduler,
    )
    mean = result.mean()
    spread = _ensemble_summary(result)
    cov = fw.covariance
    return {
        "activation": settings.predict_activation,
        "depth": settings.predict_depth,
        "width": settings.predict_width,
        "data": data.description,
        "y_test": data.y_test.tolist(),
        "infinite_width_mean": fw.infinite.tolist(),
        "infinite_width_std": _infinite_width_std(fw.tensors["Theta"], K, n_a).tolist(),
        "correction": fw.correction.tolist(),
        "finite_width_mean": fw.mean.tolist(),
        "finite_width_std": None if cov is None else cov.std[:, 0].tolist(),
        "not_included": fw.not_included,
        "eta": float(eta),
        "steps": int(steps),
        "ensemble": {
            "size": settings.predict_ensemble,
            "seed": settings.seed,
            "mean": mean.value.tolist(),
            "mean_stderr": mean.stderr.tolist(),
            "std": spread["std"],
            "std_stderr": spread["std_stderr"],
            "train_loss_max": float(np.max(result.train_loss[-1])),
            "diverged": int(result.meta.get("diverged") or 0),
        },
    }


def _infinite_width_std(Theta: np.ndarray, K: np.ndarray, n_a: int) -> np.ndarray:
    """Standard deviation of fully-trained infinite-width networks on the test points (10.41);
    ``Theta, K`` over training then test inputs."""
    from .learning.kernel_learning import kernel_prediction

    return kernel_prediction(Theta, K, np.zeros((n_a, 1))).std


def aspect_ratio(names: Sequence[str]) -> list[dict[str, Any]]:
    """Optimal aspect ratio r* (A.72)-(A.73) with two output groups of one neuron."""
    from .information import aspect_ratio_summary

    out = []
    for name in names:
        try:
            out.append({"activation": name, **aspect_ratio_summary(name, n_out=2)})
        except ValueError as exc:
            out.append({"activation": name, "error": " ".join(str(exc).split())})
    return out


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def _figure_data(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    from .plots import _pyplot

    _pyplot().close(fig)
    return buf.getvalue()


def _img(name: str, png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img class="fig" alt="{html.escape(alt)}" data-name="{name}" '
        f'src="data:image/png;base64,{data}"><figcaption>{html.escape(alt)}</figcaption></figure>'
    )


def _fmt(v: Any) -> str:
    if v is None:
        return "&ndash;"
    if isinstance(v, float):
        return f"{v:.6g}"
    return html.escape(str(v))


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _write_csv(path: Path, head: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(head)
        w.writerows(rows)


def _comparison_rows(act: str, comp: Comparison) -> list[list[Any]]:
    """Long format: one row per field, layer and tensor entry."""
    rows = []
    for r in comp.rows:
        for idx in np.ndindex(r.theory.shape):
            rows.append(
                [
                    act,
                    r.field,
                    r.layer,
                    ";".join(map(str, idx)),
                    float(r.theory[idx]),
                    float(r.measured[idx]),
                    float(r.stderr[idx]),
                    float(r.z[idx]),
                    r.ok,
                ]
            )
    return rows


_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em;margin:.6em 0}
td,th{border:1px solid #ddd;padding:.25em .5em;text-align:right}th{background:#f4f4f4}
td:first-child{text-align:left}pre{background:#f6f6f6;padding:.6em;overflow-x:auto}
figure{margin:1em 0}img.fig{max-width:100%}figcaption{font-size:.85em;color:#555}
.ok{color:#1a7f37}.bad{color:#b00020}
"""

# counts the figures the browser has decoded (the browser test reads data-figures-loaded)
_SCRIPT = """
window.addEventListener('load',function(){var im=document.querySelectorAll('img.fig');
var n=0;im.forEach(function(i){if(i.complete&&i.naturalWidth>0){n++;}});
document.body.setAttribute('data-figures-loaded',n+'/'+im.length);});
"""


def _html_page(sections: list[str], data: dict[str, Any]) -> str:
    s = data["settings"]
    head = (
        f"<h1>pdlt report</h1><p>The effective theory of deep neural networks (Roberts &amp; "
        f"Yaida, <i>The Principles of Deep Learning Theory</i>) against real networks. "
        f"pdlt {html.escape(data['versions']['pdlt'])}, written {html.escape(data['written'])} "
        f"in {data['seconds']:.0f} s on {html.escape(data['machine'])}. Settings: depth "
        f"{s['depth']}, width {s['width']}, {s['ensemble']} networks per ensemble, seed "
        f"{s['seed']}, device {html.escape(s['device'])}. All numbers: <code>report.json</code> "
        f"and the CSV files beside this page.</p>"
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>pdlt report</title>"
        f"<style>{_STYLE}</style><script>{_SCRIPT}</script></head><body>"
        + head
        + "".join(sections)
        + "</body></html>\n"
    )


def _section_universality(rows: list[dict[str, Any]]) -> str:
    table = _table(
        ["activation", "class", "C_b", "C_W", "K*"],
        [[r["activation"], r["universality_class"], r["C_b"], r["C_W"], r["K_star"]] for r in rows],
    )
    return (
        "<h2>1. Universality classes and critical initialization (ch. 5)</h2>"
        "<p>Critical hyperparameters make the kernel's depth flow marginal: χ<sub>∥</sub> = "
        "χ<sub>⊥</sub> = 1 at the fixed point K* (5.56)&ndash;(5.57); activations in the same "
        "class share the large-depth behaviour. A dash: no critical point (the reason is in "
        "<code>report.json</code>). Reproduce: <code>pdlt criticality tanh</code>.</p>" + table
    )


def _section_flow(
    act: str, comp: Comparison, png: bytes, png_ratio: bytes | None, cmd: str, gamma: float
) -> str:
    bad = [f"{r.field}@{r.layer}" for r in comp.rows if not r.ok]
    verdict = (
        "<span class='ok'>theory and networks agree within the stated tolerance</span>"
        if not bad
        else f"<span class='bad'>disagreement at {html.escape(', '.join(bad))}</span>"
    )
    n_rows = len(comp.rows)
    worst = max((r.max_abs_z for r in comp.rows), default=0.0)
    return (
        f"<h2>2. Depth flow at criticality: {html.escape(act)}"
        + (f", residual &gamma; = {gamma:g} (appendix B)" if gamma else "")
        + "</h2>"
        f"<p>{verdict} ({n_rows} field-layer rows; largest |z| = {worst:.2f}; tolerance "
        f"{comp.k:g} standard errors + the truncation allowance {comp.truncation:g}·(ℓ/n)·"
        "max|theory| beyond layer 2, where the leading-order theory is exact at any width). "
        "The measured K is compared with K + G<sup>{1}</sup>/n (4.104). Reproduce:</p>"
        f"<pre>pdlt {html.escape(cmd)}</pre>"
        + _img(f"flow_{act}", png, f"{act}: theory (line) vs networks (points, ±1 s.e.)")
        + (
            ""
            if png_ratio is None
            else _img(
                f"ratios_{act}",
                png_ratio,
                f"{act}: dimensionless finite-width ratios (9.23)-(9.25), (11.62), "
                "(∞.19)-(∞.22); at criticality they grow like ℓ/n (U decays). Points: "
                "networks; the ddNTK ratios R..U are theory only (smooth activations)",
            )
        )
    )


def _section_aspect(rows: list[dict[str, Any]], png: bytes | None) -> str:
    ok = [r for r in rows if "r_star" in r]
    table = _table(
        ["activation", "ν (vertex growth)", "r* = L/n", "I* (nats)"],
        [[r["activation"], r["nu"], r["r_star"], r["I_star"]] for r in ok],
    )
    notes = "".join(
        f"<p>{html.escape(r['activation'])}: {html.escape(r['error'])}</p>"
        for r in rows
        if "error" in r
    )
    fig = "" if png is None else _img("aspect_ratio", png, "information objective (A.71) vs r")
    return (
        "<h2>3. Optimal aspect ratio (appendix A)</h2>"
        "<p>The mutual information between two groups of outputs is zero at infinite width and "
        "is destroyed by too much depth: its truncated expansion (A.71) peaks at "
        "r* = 4/((20 + 3 n<sub>L</sub>) ν) (A.72)&ndash;(A.73), with ν the growth rate of "
        "V/(nK²) computed by pdlt's recursions. A maximum of a truncated series: read it as "
        "the scale of a good L/n, not a sharp optimum. Reproduce: "
        "<code>python -c \"import pdlt; print(pdlt.optimal_aspect_ratio('tanh', "
        'n_out=2))"</code>.</p>' + table + notes + fig
    )


def _section_prediction(p: dict[str, Any], png: bytes, cmds: list[str]) -> str:
    ens = p["ensemble"]
    rows = []
    for b in range(len(p["y_test"])):
        rows.append(
            [
                b,
                p["y_test"][b][0],
                p["infinite_width_mean"][b][0],
                p["correction"][b][0],
                p["finite_width_mean"][b][0],
                f"{ens['mean'][b][0]:.5g} ± {ens['mean_stderr'][b][0]:.2g}",
                p["infinite_width_std"][b],
                None if p["finite_width_std"] is None else p["finite_width_std"][b],
                f"{ens['std'][b]:.5g} ± {ens['std_stderr'][b]:.2g}",
            ]
        )
    table = _table(
        [
            "test point",
            "target",
            "∞-width mean",
            "1/n correction",
            "∞ + 1/n",
            "ensemble mean",
            "∞-width std",
            "std to 1/n",
            "ensemble std",
        ],
        rows,
    )
    pre = "\n".join(f"pdlt {html.escape(c)}" for c in cmds)
    return (
        f"<h2>4. A trained network's prediction ({html.escape(p['activation'])}, depth "
        f"{p['depth']}, width {p['width']})</h2>"
        f"<p>{html.escape(p['data'])}. Theory: the mean of fully-trained networks at infinite "
        "width (10.40) and its 1/n correction (∞.160), and their spread (10.41) with its 1/n "
        "correction (∞.166) (derived by pdlt; the book prints one term) "
        "(gradient descent with the learning-rate "
        f"tensor (8.6), η = {p['eta']:.4g}). Experiment: {ens['size']} real networks of width "
        f"{p['width']} trained for {p['steps']} steps of full-batch gradient descent "
        f"(largest final training loss {ens['train_loss_max']:.2g}). Not included in the "
        f"correction: {html.escape(p['not_included'])}. Reproduce:</p><pre>{pre}</pre>"
        + table
        + _img("prediction", png, "test predictions: theory vs trained networks")
    )


def _machine() -> str:
    return f"{platform.machine()} ({os.cpu_count()} CPUs), Python {platform.python_version()}"


def _versions() -> dict[str, str]:
    import scipy
    import torch

    from . import __version__

    return {
        "pdlt": __version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "torch": torch.__version__,
    }


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError(
            "the report's figures need matplotlib: pip install 'pdlt[report]'"
        ) from None


def make_report(
    out: str | os.PathLike[str] = "pdlt-report",
    settings: ReportSettings | None = None,
    *,
    quick: bool = False,
    progress: bool | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    scheduler: str | None = None,
) -> Report:
    """Compute every section and write the report folder.

    Parameters
    ----------
    out : path
        Folder to write (created; files of an earlier report in it are replaced).  The files
        are first written to a temporary folder beside it and moved in at the end, so an
        interrupted run leaves no half-written report.
    settings : ReportSettings, optional
        Default :data:`DEFAULT_SETTINGS` (a few minutes on a 2-core CPU), or
        :data:`QUICK_SETTINGS` with ``quick=True`` (under a minute).
    progress : bool, optional
        Progress line on stderr (default: when stderr is a terminal).
    checkpoint : path, optional
        A folder for the ensembles' merged statistics (one sub-folder per depth flow, a file
        for the trained ensemble), written as they progress: a report killed or interrupted at
        any moment and run again with the same settings continues where it stopped and ends
        with the same numbers.
    scheduler : str, optional
        A Dask scheduler address: the ensembles run on that cluster (same numbers).

    Returns
    -------
    Report
    """
    _require_matplotlib()
    from . import plots
    from .theory.flow import fluctuation_ratios

    if settings is None:
        settings = QUICK_SETTINGS if quick else DEFAULT_SETTINGS
    dest = Path(out)
    if dest.exists() and not dest.is_dir():
        raise ValueError(f"{str(dest)!r} exists and is not a folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    ckpt = None if checkpoint is None else Path(checkpoint)
    if ckpt is not None:
        ckpt.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        (tmp / "figures").mkdir()
        np.savetxt(tmp / "inputs.csv", FLOW_INPUTS, delimiter=",", fmt="%.17g")
        inputs_csv = str(dest / "inputs.csv")
        steps = 3 + len(settings.activations)
        sections: list[str] = []
        data: dict[str, Any] = {"settings": asdict(settings)}
        with Progress(steps, "pdlt report", enabled=progress) as bar:
            uni = universality_table()
            data["universality"] = uni
            sections.append(_section_universality(uni))
            _write_csv(
                tmp / "universality.csv",
                ["activation", "class", "C_b", "C_W", "K_star"],
                [
                    [r["activation"], r["universality_class"], r["C_b"], r["C_W"], r["K_star"]]
                    for r in uni
                ],
            )
            bar.update()

            flows: dict[str, Any] = {}
            csv_rows: list[list[Any]] = []
            for act in settings.activations:
                theory, measured, comp = depth_flow(
                    act,
                    settings,
                    progress=False,
                    checkpoint=None if ckpt is None else ckpt / f"flow-{act}",
                    scheduler=scheduler,
                )
                cmd = compare_command(act, settings, inputs_csv)
                png = _figure_data(plots.plot_comparison(comp))
                ratios = fluctuation_ratios(theory)
                ratios.update(ddntk_ratios(theory.network))
                png_ratio = None
                if set(ratios) - {"grad_factor"}:
                    png_ratio = _figure_data(
                        plots.plot_ratios(ratios, _measured_ratios(theory, comp))
                    )
                for name, blob in ((f"flow_{act}", png), (f"ratios_{act}", png_ratio)):
                    if blob is not None:
                        (tmp / "figures" / f"{name}.png").write_bytes(blob)
                sections.append(
                    _section_flow(act, comp, png, png_ratio, " ".join(cmd), settings.gamma)
                )
                flows[act] = {
                    "command": ["pdlt", *cmd],
                    "network": theory.network.to_dict(),
                    "comparison": comp.to_dict(),
                    "theory_ratios": {k: v.tolist() for k, v in ratios.items()},
                }
                csv_rows += _comparison_rows(act, comp)
                bar.update()
            data["depth_flow"] = flows
            _write_csv(
                tmp / "depth_flow.csv",
                [
                    "activation",
                    "field",
                    "layer",
                    "index",
                    "theory",
                    "measured",
                    "stderr",
                    "z",
                    "ok",
                ],
                csv_rows,
            )

            ar = aspect_ratio(settings.activations)
            data["aspect_ratio"] = ar
            png_ar = _aspect_figure(settings.activations, ar)
            if png_ar is not None:
                (tmp / "figures" / "aspect_ratio.png").write_bytes(png_ar)
            sections.append(_section_aspect(ar, png_ar))
            bar.update()

            pred = prediction(
                settings,
                progress=False,
                checkpoint=None if ckpt is None else ckpt / "prediction-training.pt",
                scheduler=scheduler,
            )
            cmds = _predict_commands(settings, tmp, dest)
            pred["commands"] = [["pdlt", *c] for c in cmds]
            data["prediction"] = pred
            png_pred = _figure_data(plots.plot_prediction(pred))
            (tmp / "figures" / "prediction.png").write_bytes(png_pred)
            sections.append(_section_prediction(pred, png_pred, [" ".join(c) for c in cmds]))
            _write_csv(
                tmp / "prediction.csv",
                [
                    "test",
                    "target",
                    "infinite_width",
                    "correction",
                    "finite_width",
                    "ensemble",
                    "ensemble_stderr",
                    "infinite_width_std",
                    "finite_width_std",
                    "ensemble_std",
                    "ensemble_std_stderr",
                ],
                [
                    [
                        b,
                        pred["y_test"][b][0],
                        pred["infinite_width_mean"][b][0],
                        pred["correction"][b][0],
                        pred["finite_width_mean"][b][0],
                        pred["ensemble"]["mean"][b][0],
                        pred["ensemble"]["mean_stderr"][b][0],
                        pred["infinite_width_std"][b],
                        None if pred["finite_width_std"] is None else pred["finite_width_std"][b],
                        pred["ensemble"]["std"][b],
                        pred["ensemble"]["std_stderr"][b],
                    ]
                    for b in range(len(pred["y_test"]))
                ],
            )
            bar.update()

        seconds = time.perf_counter() - t0
        data.update(
            {
                "seconds": seconds,
                "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "machine": _machine(),
                "versions": _versions(),
            }
        )
        (tmp / "report.json").write_text(json.dumps(_jsonable(data)) + "\n")
        (tmp / "index.html").write_text(_html_page(sections, data), encoding="utf-8")
        files = _move_into(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Report(dest, data, seconds, files)


def _measured_ratios(theory: Flow, comp: Comparison) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Measured ratios ``X/(n ...)`` for input 0 with their standard errors, normalized by the
    theory's ``K`` and ``Theta`` (whose own errors are much smaller)."""
    widths = theory.network.widths
    n = np.array([float(theory.inputs.n_in)] + [float(w) for w in widths[1:-1]])
    denominators = {}
    if "K" in theory:
        K = theory["K"][:, 0, 0]
        denominators["V"] = n * K**2
    if "Theta" in theory:
        T = theory["Theta"][:, 0, 0]
        denominators.update({f: n * T**2 for f in ("A", "B", "P", "Q")})
        if "K" in theory:
            denominators.update({f: n * K * T for f in ("D", "F")})
    names = {"V": "V/(nK^2)", "D": "D/(nKTheta)", "F": "F/(nKTheta)"}
    out = {}
    for fname, den in denominators.items():
        rows = [r for r in comp.rows if r.field == fname]
        if not rows:
            continue
        idx = (0,) * rows[0].theory.ndim
        m = np.array([r.measured[idx] for r in rows])
        s = np.array([r.stderr[idx] for r in rows])
        out[names.get(fname, f"{fname}/(nTheta^2)")] = (m / den, s / den)
    return out


def _aspect_figure(names: Sequence[str], rows: list[dict[str, Any]]) -> bytes | None:
    from .information import information_curve, plot_information_curve
    from .plots import _pyplot

    ok = [r["activation"] for r in rows if "r_star" in r]
    if not ok:
        return None
    fig, axes = _pyplot().subplots(1, len(ok), figsize=(4.6 * len(ok), 3.4), squeeze=False)
    for ax, name in zip(axes.ravel(), ok, strict=True):
        plot_information_curve(information_curve(name, n_out=2), ax=ax)
        ax.set_title(name)
    fig.tight_layout()
    return _figure_data(fig)


def _predict_commands(settings: ReportSettings, tmp: Path, dest: Path) -> list[list[str]]:
    """Write the data as CSV and return the ``pdlt predict`` arguments reproducing the
    theory (``--width``) and the ensemble (``--ensemble``)."""
    from .learning.data import diabetes

    data = diabetes(settings.n_train, settings.n_test)
    np.savetxt(
        tmp / "train.csv", np.hstack([data.x_train, data.y_train]), delimiter=",", fmt="%.17g"
    )
    np.savetxt(tmp / "test.csv", np.hstack([data.x_test, data.y_test]), delimiter=",", fmt="%.17g")
    base = [
        "predict",
        "--activation",
        settings.predict_activation,
        "--depth",
        str(settings.predict_depth),
        "--width",
        str(settings.predict_width),
        "--train",
        str(dest / "train.csv"),
        "--test",
        str(dest / "test.csv"),
    ]
    ens = [
        "--ensemble",
        str(settings.predict_ensemble),
        "--seed",
        str(settings.seed),
        "--device",
        settings.device,
    ]
    return [base + ["--json"], base + ens + ["--json"]]


def _move_into(tmp: Path, dest: Path) -> list[str]:
    """Move every finished file into ``dest`` (each by an atomic rename), ``index.html`` last."""
    dest.mkdir(exist_ok=True)
    (dest / "figures").mkdir(exist_ok=True)
    names = sorted(
        (str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file()),
        key=lambda s: s == "index.html",
    )
    for name in names:
        os.replace(tmp / name, dest / name)
    return names


def settings_with(base: ReportSettings, **changes: Any) -> ReportSettings:
    """``base`` with the given (non-None) fields replaced."""
    return replace(base, **{k: v for k, v in changes.items() if v is not None})
