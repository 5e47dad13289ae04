"""The ``pdlt`` command line.

Every command prints a readable table, or one JSON object with ``--json``.  Bad arguments exit
with status 2 and a one-line message on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np

from . import __version__
from .activations import available_activations
from .compare import compare, nlo_fields
from .network import Inputs, Network
from .results import Flow
from .theory.criticality import Criticality, criticality
from .theory.flow import available_fields, flow

if TYPE_CHECKING:
    from .empirical.checkpoint import CheckpointDir

__all__ = ["main"]


class UsageError(Exception):
    """Bad input from the command line: reported in one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


# --------------------------------------------------------------------------------------------
# Argument helpers
# --------------------------------------------------------------------------------------------


def _floats(text: str) -> float | list[float]:
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or comma list, got {text!r}") from None
    if not all(math.isfinite(v) for v in vals):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return vals[0] if len(vals) == 1 else vals


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def _layer_list(text: str) -> list[int]:
    """``--layers``: comma-separated layer numbers, 1..L or negative from the top."""
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer numbers such as 1,5,-1, got {text!r}"
        ) from None


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(v) and v >= 0):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return v


def _read_numbers(path: str, what: str) -> np.ndarray:
    """The array of real numbers in a ``.npy`` or ``.csv`` file, as float64.

    Raises
    ------
    UsageError
        Missing, unreadable, empty, non-numeric or complex data (one line, naming ``what``).
    """
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{what} file {path!r} does not exist")
    suffix = p.suffix.lower()
    if suffix not in (".npy", ".csv", ".txt"):
        raise UsageError(f"{what} file {path!r} must be .npy or .csv (one row per data point)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. numpy's "input contained no data"
            if suffix == ".npy":
                arr = np.asarray(np.load(p, allow_pickle=False))
            else:
                arr = np.loadtxt(p, delimiter=",", ndmin=2)
    except Exception as exc:  # a corrupt or foreign file
        raise UsageError(
            f"cannot read {what} file {path!r}: {' '.join(str(exc).split())}"
        ) from None
    if np.iscomplexobj(arr) or not np.issubdtype(arr.dtype, np.number):
        raise UsageError(f"{what} file {path!r} must hold real numbers, got dtype {arr.dtype}")
    if arr.size == 0:
        raise UsageError(f"{what} file {path!r} is empty: need a non-empty table (N, n_0 >= 1)")
    return arr.astype(np.float64)


def load_inputs(path: str) -> Inputs:
    """Read inputs, one per row, from a ``.npy`` or ``.csv`` file."""
    arr = _read_numbers(path, "inputs")
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise UsageError(f"inputs in {path!r} must be a 2-D table (N, n_0), got shape {arr.shape}")
    try:
        return Inputs(arr)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"inputs in {path!r}: {exc}") from None


def add_network_options(p: argparse.ArgumentParser, inputs: bool = True) -> None:
    """The network and input options shared by ``flow``, ``measure``, ``compare``, ``predict``.

    ``inputs=False`` (``predict``) hides ``--k1``/``--inputs`` from the help; they are still
    parsed, so that the command can reject them with a clear message.
    """
    p.add_argument("--activation", required=True, help="e.g. tanh, relu, leaky_relu:0.1")
    p.add_argument("--depth", type=_positive_int, required=True, help="number of layers L")
    p.add_argument(
        "--width",
        type=_positive_int,
        default=None,
        help="hidden width n (default: infinite, for the theory)",
    )
    p.add_argument("--n-out", type=_positive_int, default=1, help="output width n_L")
    p.add_argument(
        "--C-b",
        dest="C_b",
        type=_floats,
        default=None,
        help="bias variance, a number or one per layer (default: critical)",
    )
    p.add_argument(
        "--C-W",
        dest="C_W",
        type=_floats,
        default=None,
        help="rescaled weight variance (default: critical)",
    )
    p.add_argument(
        "--lambda-b",
        dest="lambda_b",
        type=_floats,
        default=None,
        help="bias learning rate lambda_b, a number or one per layer (default 1)",
    )
    p.add_argument(
        "--lambda-W",
        dest="lambda_W",
        type=_floats,
        default=None,
        help="weight learning rate lambda_W (step lambda_W/n_{l-1}; default 1)",
    )
    p.add_argument(
        "--gamma",
        type=_floats,
        default=None,
        help="residual strength: a number for every hidden layer of equal width, or one per "
        "layer (appendix B; default 0, no residual connections)",
    )
    if not inputs:  # parsed only to be rejected (a group of hidden options trips argparse)
        p.add_argument("--k1", type=float, default=None, help=argparse.SUPPRESS)
        p.add_argument("--inputs", default=None, help=argparse.SUPPRESS)
        p.add_argument("--json", action="store_true", help="print one JSON object")
        return
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--k1",
        type=float,
        default=None,
        help="a single input with first-layer kernel K^(1) = K (default 1)",
    )
    src.add_argument("--inputs", default=None, help=".npy or .csv file, one input per row")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def network_from_args(args: argparse.Namespace, inputs: Inputs | None = None) -> Network:
    if (args.C_b is None) != (args.C_W is None):
        raise UsageError("give both --C-b and --C-W, or neither (critical initialization)")
    kw: dict[str, Any] = {}
    for name in ("lambda_b", "lambda_W", "gamma"):
        if getattr(args, name, None) is not None:
            kw[name] = getattr(args, name)
    try:
        return Network(
            args.activation,
            depth=args.depth,
            width=args.width,
            n_in=None if inputs is None else inputs.n_in,
            n_out=args.n_out,
            C_b=args.C_b,
            C_W=args.C_W,
            **kw,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def inputs_from_args(args: argparse.Namespace) -> Inputs | None:
    return load_inputs(args.inputs) if args.inputs is not None else None


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def _cmd_criticality(args: argparse.Namespace) -> int:
    try:
        crit = criticality(args.activation)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(crit.to_dict()))
    else:
        print(_criticality_text(crit))
    return 0


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.10g}"


def _criticality_text(c: Criticality) -> str:
    rows = [
        ("activation", c.activation),
        ("universality class", c.universality_class),
        ("C_b", _fmt(c.C_b)),
        ("C_W", _fmt(c.C_W)),
        (
            "K*",
            "any (line of fixed points)"
            if c.universality_class == "scale-invariant"
            else _fmt(c.K_star),
        ),
    ]
    if c.taylor is not None:
        rows += [("a1", _fmt(c.a1)), ("a2", _fmt(c.a2)), ("b1", _fmt(c.b1))]
    if c.A2 is not None:
        rows += [("A2", _fmt(c.A2)), ("A4", _fmt(c.A4))]
    for k, v in c.exponents.items():
        rows.append((k, _fmt(v)))
    width = max(len(r[0]) for r in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    if len(c.points) > 1 or (c.points and c.points[0].K_star not in (None, 0.0)):
        lines.append("critical points:")
        for p in c.points:
            extra = "" if p.a1_tilde is None else f", a1_tilde = {p.a1_tilde:.6g}"
            lines.append(
                f"  K* = {_fmt(p.K_star)}: C_b = {p.C_b:.10g}, C_W = {p.C_W:.10g}, "
                f"{p.stability}{extra}"
            )
    lines.append(c.reason)
    return "\n".join(lines)


def _check_plot_path(path: str | None) -> None:
    """Fail before the work when ``--plot`` cannot be written (format, missing folder)."""
    if path is None:
        return
    p = Path(path)
    if p.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise UsageError(f"--plot must name a .png, .pdf or .svg file, got {path!r}")
    if not p.parent.is_dir():
        raise UsageError(f"--plot: the folder {str(p.parent)!r} does not exist")


def _check_result_path(path: str | None, suffixes: tuple[str, ...] = (".json", ".npz")) -> None:
    """Fail before the work when ``--out`` cannot be written (format, folder)."""
    if path is None:
        return
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        raise UsageError(f"--out {path!r} must end in {' or '.join(suffixes)}")
    if p.is_dir():
        raise UsageError(f"--out {path!r} is a directory")
    if not p.parent.is_dir():
        raise UsageError(f"--out {path!r}: the directory {str(p.parent)!r} does not exist")


def _save_result(path: str | None, result: Flow) -> None:
    """``--out``: the result in pdlt's format (:meth:`Flow.save`), atomically."""
    if path is None:
        return
    try:
        result.save(path)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot write --out {path!r}: {exc}") from None


def _save_plot(path: str | None, draw: Callable[[str], Any]) -> None:
    """Draw and save a figure for ``--plot`` (atomically), with one-line errors."""
    if path is None:
        return
    try:
        draw(path)
    except (ImportError, ValueError, OSError) as exc:
        raise UsageError(f"cannot write the plot {path!r}: {exc}") from None


def _cmd_flow(args: argparse.Namespace) -> int:
    inputs = inputs_from_args(args)
    net = network_from_args(args, inputs)
    fields = args.fields.split(",") if args.fields else ["K", "chi_parallel", "chi_perp"]
    _check_plot_path(args.plot)
    _check_result_path(args.out)
    try:
        if inputs is None:
            k1 = 1.0 if args.k1 is None else args.k1
            result = flow(net, k1=k1, fields=fields, layers=args.layers)
        else:
            result = flow(net, inputs, fields=fields, layers=args.layers)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _save_plot(args.plot, result.plot)
    _save_result(args.out, result)
    if args.json:
        out = result.to_dict()
        crit = criticality(net.activation)
        out.update({"universality_class": crit.universality_class, "K_star": crit.K_star})
        print(json.dumps(out))
    else:
        print(repr(net))
        print(result.table())
    return 0


def _measure_from_args(args: argparse.Namespace) -> tuple[Network, Inputs | None, Flow]:
    from .empirical.estimators import measure

    inputs = inputs_from_args(args)
    if args.width is None:
        raise UsageError("measuring real networks needs a finite --width n")
    net = network_from_args(args, inputs)
    fields = args.fields.split(",") if args.fields else ["K", "V", "Theta"]
    checkpoint_seconds = _check_distributed_args(args)
    try:
        result = measure(
            net,
            inputs,
            k1=(1.0 if args.k1 is None else args.k1) if inputs is None else None,
            size=args.ensemble,
            seed=args.seed,
            fields=fields,
            device=args.device,
            dtype=args.dtype,
            neurons=args.neurons,
            progress=None,
            scheduler=args.scheduler,
            checkpoint=args.checkpoint,
            checkpoint_seconds=checkpoint_seconds,
        )
    except (ValueError, ImportError) as exc:
        raise UsageError(" ".join(str(exc).split())) from None
    except KeyboardInterrupt:
        if args.checkpoint is None:
            raise
        raise KeyboardInterrupt(_resume_hint(args.checkpoint)) from None
    if result.meta.get("interrupted") and args.checkpoint is not None:
        raise KeyboardInterrupt(
            f"{result.meta['size']} of {args.ensemble} networks done; "
            + _resume_hint(args.checkpoint)
        )
    return result.network, inputs, result


_CHECKPOINT_SECONDS = 60.0


def _check_distributed_args(args: argparse.Namespace) -> float:
    """Seconds between checkpoint writes; ``--checkpoint-every`` needs ``--checkpoint``."""
    if args.checkpoint_every is not None and args.checkpoint is None:
        raise UsageError("--checkpoint-every applies to --checkpoint DIR")
    return _CHECKPOINT_SECONDS if args.checkpoint_every is None else args.checkpoint_every


def _resume_hint(checkpoint: str) -> str:
    return f"progress saved in {checkpoint!r}; run the same command again to continue"


def _cmd_measure(args: argparse.Namespace) -> int:
    _check_plot_path(args.plot)
    _check_result_path(args.out)
    _, _, result = _measure_from_args(args)
    _save_plot(args.plot, result.plot)
    _save_result(args.out, result)
    if result.meta.get("interrupted"):
        print(f"pdlt: interrupted; results from {result.meta['size']} networks", file=sys.stderr)
    if args.json:
        print(result.to_json())
    else:
        print(repr(result.network))
        print(
            f"{result.meta['size']} networks, seed {result.meta['seed']}, "
            f"{result.meta['device']}/{result.meta['dtype']}"
        )
        print(result.table())
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    # the options are checked before the (long) measurement
    _check_plot_path(args.plot)
    _check_result_path(args.out, (".json",))
    if not (math.isfinite(args.k) and args.k > 0):
        raise UsageError(f"--k must be a finite number > 0 (standard errors), got {args.k}")
    if not (math.isfinite(args.truncation) and args.truncation >= 0):
        raise UsageError(f"--truncation must be a finite number >= 0, got {args.truncation}")
    net, inputs, measured = _measure_from_args(args)
    theory_fields = [f for f in measured.fields if f in available_fields()]
    # the measured metric against K + G1/n (4.104), the NTK mean against Theta + H1/n (9.3)
    theory_fields += nlo_fields(net, theory_fields)
    try:
        theory = flow(net, measured.inputs, fields=theory_fields)
        result = compare(theory, measured, k=args.k, truncation=args.truncation)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _save_plot(args.plot, result.plot)
    if args.out is not None:
        doc = {"format": "pdlt.comparison", "version": 1, **result.to_dict()}
        doc["theory"], doc["measured"] = theory.to_dict(), measured.to_dict()
        _write_atomic(args.out, json.dumps(doc) + "\n")
    if args.json:
        print(result.to_json())
    else:
        print(repr(net))
        print(result.table())
    return 0


def _cmd_learning_rates(args: argparse.Namespace) -> int:
    from .theory.learning_rates import equivalence_principle

    try:
        lr = equivalence_principle(args.activation, args.depth, args.lambda_b, args.lambda_W)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps({"activation": args.activation, "depth": args.depth, **lr.to_dict()}))
        return 0
    print(f"{args.activation}, depth {args.depth}: {lr.rule}")
    print(f"{'l':>4}  {'lambda_b':>12}  {'lambda_W':>12}")
    for ell, (b, w) in enumerate(zip(lr.lambda_b, lr.lambda_W, strict=True), start=1):
        print(f"{ell:>4}  {b:12.6g}  {w:12.6g}")
    print("weights step by eta * lambda_W / n_{l-1}, biases by eta * lambda_b (8.6)")
    return 0


# --------------------------------------------------------------------------------------------
# predict: infinite-width learning, optionally beside an ensemble of trained real networks
# --------------------------------------------------------------------------------------------

_OUT_FORMATS = {".json": "json", ".csv": "csv"}
_DEFAULT_STEPS_CAP = 5000
_DEFAULT_RESIDUAL = 1e-3


def _load_table(path: str, what: str) -> np.ndarray:
    """A finite 2-D table of numbers from a ``.npy`` or ``.csv`` file (1-D: one column).

    Parameters
    ----------
    path : str
    what : str
        The option that named the file, for the error messages (e.g. ``"--train"``).

    Raises
    ------
    UsageError
        Missing, unreadable, non-numeric or non-finite data.
    """
    arr = _read_numbers(path, what)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise UsageError(f"{what} file {path!r} must be a non-empty 2-D table, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise UsageError(f"{what} file {path!r} contains NaN or infinite values")
    return arr


@dataclass
class _PredictData:
    """Training inputs and targets, test inputs and (optional) targets, and where they came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray | None
    source: dict[str, Any]


def _predict_data(args: argparse.Namespace) -> _PredictData:
    """Training and test data from ``--train``/``--test``/``--targets``, or the default set."""
    n_out = args.n_out
    if args.train is None and args.test is None:
        if args.targets is not None:
            raise UsageError("--targets goes with --train (and --test)")
        from .learning.data import diabetes

        if n_out != 1:
            raise UsageError("the default data set (diabetes) has one target: use --n-out 1")
        try:
            d = diabetes()
        except ImportError as exc:
            raise UsageError(f"{exc}; or give --train and --test") from None
        source = {"default": True, "description": d.description}
        return _PredictData(d.x_train, d.y_train, d.x_test, d.y_test, source)
    if args.train is None or args.test is None:
        raise UsageError("give both --train and --test, or neither (the default data set)")
    train = _load_table(args.train, "--train")
    test = _load_table(args.test, "--test")
    if args.targets is not None:
        y_train = _load_table(args.targets, "--targets")
        if y_train.shape != (train.shape[0], n_out):
            raise UsageError(
                f"--targets needs one row of {n_out} target(s) (--n-out) per training input, "
                f"{train.shape[0]} rows; got shape {y_train.shape}"
            )
        x_train = train
    else:
        n0 = train.shape[1] - n_out
        if n0 < 1:
            raise UsageError(
                f"--train needs n_0 input columns followed by {n_out} target column(s) "
                f"(--n-out), got {train.shape[1]} columns; or give the targets with --targets"
            )
        x_train, y_train = train[:, :n0], train[:, n0:]
    n0 = x_train.shape[1]
    y_test = None
    if test.shape[1] == n0 + n_out:
        test, y_test = test[:, :n0], test[:, n0:]
    elif test.shape[1] != n0:
        raise UsageError(
            f"--test needs {n0} input columns (optionally followed by {n_out} targets), "
            f"got {test.shape[1]}"
        )
    source = {"default": False, "train": args.train, "test": args.test, "targets": args.targets}
    return _PredictData(x_train, y_train, test, y_test, source)


def _default_training(theta_train: np.ndarray) -> tuple[float, int]:
    """Default ``(eta, steps)`` for the ensemble: ``eta = 1/lambda_max(Theta~)`` and enough steps
    that the slowest mode's residual ``(1 - eta lambda_min)^T`` is below 1e-3 (at most 5000).

    Parameters
    ----------
    theta_train : ndarray, shape (N_A, N_A)
        Infinite-width NTK on the training inputs (the kernel ``K~`` for last-layer training).
    """
    w = np.linalg.eigvalsh(0.5 * (theta_train + theta_train.T))
    lam_max = float(w[-1])
    if not lam_max > 0:
        raise UsageError("the training NTK vanishes: gradient descent does not move the outputs")
    eta = 1.0 / lam_max
    ratio = float(w[0]) / lam_max
    if ratio <= 0 or ratio >= 1:
        steps = _DEFAULT_STEPS_CAP if ratio <= 0 else 1
    else:
        steps = math.ceil(math.log(_DEFAULT_RESIDUAL) / math.log1p(-ratio))
    return eta, int(min(max(steps, 1), _DEFAULT_STEPS_CAP))


def _check_out_path(path: str | None) -> str | None:
    """The format (``"json"``/``"csv"``) of ``--out``, checked before any work is done."""
    if path is None:
        return None
    p = Path(path)
    fmt = _OUT_FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise UsageError(f"--out {path!r} must end in .json or .csv")
    if p.is_dir():
        raise UsageError(f"--out {path!r} is a directory")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"--out {path!r}: the directory {str(parent)!r} does not exist")
    return fmt


def _write_atomic(path: str, text: str) -> None:
    """Write ``--out`` atomically (nothing half-written is left), with one-line errors."""
    from ._io import write_text_atomic

    try:
        write_text_atomic(path, text)
    except OSError as exc:
        raise UsageError(f"cannot write --out {path!r}: {exc.strerror or exc}") from None


def _predict_csv(out: dict[str, Any]) -> str:
    """One row per test point: theory mean(s) and std, targets, ensemble columns."""
    mean = np.asarray(out["mean"], dtype=np.float64)
    n_b, n_out = mean.shape
    cols: list[tuple[str, np.ndarray]] = [("test", np.arange(n_b, dtype=np.float64))]
    cols += [(f"mean_{i}", mean[:, i]) for i in range(n_out)]
    cols.append(("std", np.asarray(out["std"], dtype=np.float64)))
    if "y_test" in out:
        y = np.asarray(out["y_test"], dtype=np.float64)
        cols += [(f"target_{i}", y[:, i]) for i in range(n_out)]
    fwd = out.get("finite_width")
    if fwd is not None:
        corr = np.asarray(fwd["correction"], dtype=np.float64)
        tot = np.asarray(fwd["mean"], dtype=np.float64)
        cols += [(f"correction_{i}", corr[:, i]) for i in range(n_out)]
        cols += [(f"finite_width_mean_{i}", tot[:, i]) for i in range(n_out)]
        if fwd.get("covariance") is not None:
            fstd = np.asarray(fwd["covariance"]["std"], dtype=np.float64)
            cols += [(f"finite_width_std_{i}", fstd[:, i]) for i in range(n_out)]
    ens = out.get("ensemble")
    if ens is not None:
        em = np.asarray(ens["mean"], dtype=np.float64)
        ee = np.asarray(ens["mean_stderr"], dtype=np.float64)
        for i in range(n_out):
            cols += [(f"ensemble_mean_{i}", em[:, i]), (f"ensemble_mean_{i}_stderr", ee[:, i])]
        cols.append(("ensemble_std", np.asarray(ens["std"], dtype=np.float64)))
        cols.append(("ensemble_std_stderr", np.asarray(ens["std_stderr"], dtype=np.float64)))
    lines = [",".join(name for name, _ in cols)]
    for b in range(n_b):
        cells = [str(b)] + [repr(float(v[b])) for _, v in cols[1:]]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def _ensemble_summary(result: Any) -> dict[str, Any]:
    """Mean and standard deviation per test point of a :class:`TrainingResult`, with errors."""
    m = result.mean()
    c = result.covariance()
    var = np.diag(c.value).copy()
    var_err = np.diag(c.stderr).copy()
    std = np.sqrt(np.clip(var, 0.0, None))
    with np.errstate(divide="ignore", invalid="ignore"):
        std_err = np.where(std > 0, var_err / (2 * std), np.sqrt(var_err))  # delta method
    return {
        "mean": m.value.tolist(),
        "mean_stderr": m.stderr.tolist(),
        "std": std.tolist(),
        "std_stderr": std_err.tolist(),
        "cov": c.value.tolist(),
        "cov_stderr": c.stderr.tolist(),
        "train_loss_max": float(np.max(result.train_loss[-1])),
    }


_SLOW_INTEGRALS = 10_000  # four-dimensional integrals (all the patterns of R..U): ~5 ms each


def _cmd_predict(args: argparse.Namespace) -> int:
    """Infinite-width prediction on test inputs: Bayesian posterior (ch. 6) or GD (ch. 10).

    With ``--ensemble M`` also trains ``M`` real networks of width ``--width`` by full-batch GD
    (:func:`pdlt.train`, the learning-rate tensor (8.6)) and reports their mean and spread.
    """
    from .learning import bayes_learning_rates, bias_variance, kernel_prediction, posterior
    from .theory.flow import flow

    if args.inputs is not None or args.k1 is not None:
        raise UsageError("predict takes its inputs from --train and --test, not --inputs/--k1")
    ensemble = args.ensemble
    finite = ensemble is None and args.width is not None
    if finite:
        if args.method != "gd":
            raise UsageError(
                "--width without --ensemble gives the 1/n correction of gradient-descent "
                "training (∞.160); it is not implemented for --method bayes (at finite width "
                "GD is not Bayesian inference, (∞.173))"
            )
        if args.steps is not None:
            raise UsageError(
                "--width without --ensemble predicts fully-trained networks (∞.160): "
                "leave out --steps"
            )
    if ensemble is None:
        for opt, val in (
            ("--seed", args.seed),
            ("--device", args.device),
            ("--scheduler", args.scheduler),
            ("--checkpoint", args.checkpoint),
        ):
            if val is not None:
                raise UsageError(f"{opt} applies to the real networks of --ensemble M")
        if args.method == "bayes" and (args.steps is not None or args.eta is not None):
            raise UsageError("--steps and --eta apply to --method gd (or to --ensemble M)")
    else:
        if args.width is None:
            raise UsageError("--ensemble M trains real networks: give their finite --width n")
        if args.method == "bayes" and args.noise != 0:
            raise UsageError(
                "--ensemble with --method bayes samples the noiseless posterior by training the "
                "last layer (10.46)-(10.48): leave out --noise"
            )
    if args.method == "bayes" and (args.lambda_b is not None or args.lambda_W is not None):
        raise UsageError(
            "--lambda-b/--lambda-W apply to --method gd (the posterior has no learning rates)"
        )
    if args.steps is not None and args.steps < 0:
        raise UsageError(f"--steps must be >= 0, got {args.steps}")
    if args.eta is not None and not (math.isfinite(args.eta) and args.eta > 0):
        raise UsageError(f"--eta must be finite and > 0, got {args.eta}")
    checkpoint_seconds = _check_distributed_args(args)
    out_format = _check_out_path(args.out)
    _check_plot_path(args.plot)
    data = _predict_data(args)
    net = network_from_args(args, Inputs(data.x_train))
    theory_net = net.replace(width=None) if net.finite_width else net
    if args.method == "bayes" and ensemble is not None:
        net = bayes_learning_rates(net)  # Theta = K: last-layer GD samples the posterior
    ckpt = None if args.checkpoint is None else _training_checkpoint(args, net, data)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            x_all = np.concatenate([data.x_train, data.x_test])
            fields = ("K",) if args.method == "bayes" else ("K", "Theta")
            f = flow(theory_net, x_all, fields=fields)
            K = f["K"][-1]
            Theta = K if args.method == "bayes" else f["Theta"][-1]
            n_a = data.x_train.shape[0]
            steps, eta = args.steps, args.eta
            if ensemble is not None:
                eta_d, steps_d = _default_training(Theta[:n_a, :n_a])
                eta = eta_d if eta is None else eta
                steps = steps_d if steps is None else steps
            if steps is not None and eta is not None:
                lam_max = float(np.linalg.eigvalsh(Theta[:n_a, :n_a])[-1])
                if eta * lam_max >= 2:
                    warnings.warn(
                        f"gradient descent is unstable: eta * lambda_max(Theta~) = "
                        f"{eta * lam_max:.3g} >= 2; use eta < {2 / lam_max:.3g}",
                        UserWarning,
                        stacklevel=1,
                    )
            if args.method == "bayes" and ensemble is None:
                pred = posterior(K, data.y_train, args.noise)
            else:
                pred = kernel_prediction(Theta, K, data.y_train, steps=steps, eta=eta)
            pred.meta["network"] = repr(theory_net)
            fw = None
            if finite:
                from .learning.finite_width import finite_width_predict
                from .theory.ddntk import require_ddntk
                from .theory.flow import estimate_work

                require_ddntk(net.activation)  # refuse before warning about the cost
                x_all = np.concatenate([data.x_train, data.x_test])
                n4 = estimate_work(net, x_all, fields=("P", "Q", "R", "S", "T", "U")).integrals_4d
                if n4 > _SLOW_INTEGRALS:
                    print(  # before the long work, so the user can stop it
                        f"pdlt: warning: the 1/n correction needs {n4:,} four-dimensional "
                        f"Gaussian integrals ({x_all.shape[0]} inputs, every 4 of them at each "
                        "of the depth-1 layer steps): this can take minutes; use fewer points "
                        "(--train/--test) for a quick answer",
                        file=sys.stderr,
                        flush=True,
                    )
                fw = finite_width_predict(net, data.x_train, data.y_train, data.x_test, eta=eta)
                eta = fw.eta
            result = None
            if ensemble is not None:
                from .empirical.training import train

                result = train(
                    net,
                    data.x_train,
                    data.y_train,
                    data.x_test,
                    size=ensemble,
                    seed=0 if args.seed is None else args.seed,
                    steps=steps,
                    eta=eta,
                    record_steps=[0, steps],
                    device=args.device or "cpu",
                    progress=None,
                    scheduler=args.scheduler,
                    checkpoint=None if ckpt is None else ckpt.prepare() / "training.pt",
                    checkpoint_seconds=checkpoint_seconds,
                )
        except (ValueError, FloatingPointError, RuntimeError, ImportError) as exc:
            raise UsageError(" ".join(str(exc).split())) from None
        except KeyboardInterrupt:
            if ckpt is None:
                raise
            raise KeyboardInterrupt(_resume_hint(args.checkpoint)) from None
    for w in caught:
        if issubclass(w.category, DeprecationWarning | PendingDeprecationWarning):
            continue  # for developers, not for the user of the command
        if result is not None and issubclass(w.category, RuntimeWarning):
            continue  # divergence is reported below as an error
        print(f"pdlt: warning: {' '.join(str(w.message).split())}", file=sys.stderr)
    if result is not None and result.meta.get("diverged"):
        raise UsageError(
            f"{result.meta['diverged']} of {ensemble} networks diverged during training "
            f"(eta = {eta:.4g}); lower --eta"
        )

    out = pred.to_dict()
    out["method"] = args.method
    out["network"] = theory_net.to_dict()
    out["data"] = data.source
    if data.y_test is not None:
        out["y_test"] = data.y_test.tolist()
        bv = bias_variance(pred, data.y_test)
        out["test_loss"] = {k: np.asarray(v).tolist() for k, v in bv.items()}
    if fw is not None:
        out["finite_width"] = fw.to_dict()
    if result is not None:
        out["ensemble"] = {
            "size": ensemble,
            "width": args.width,
            "steps": int(steps),
            "eta": float(eta),
            "seed": 0 if args.seed is None else args.seed,
            "optimizer": "gd",
            "learning_rates": "last layer (10.46)-(10.48)" if args.method == "bayes" else "(8.6)",
            "network": net.to_dict(),
            "seconds": result.meta["seconds"],
            **_ensemble_summary(result),
        }
    _save_plot(args.plot, lambda path: _plot_prediction(out, args.width, path))
    if args.out is not None:
        text = json.dumps(out) + "\n" if out_format == "json" else _predict_csv(out)
        _write_atomic(args.out, text)
    if args.json:
        print(json.dumps(out))
        return 0
    print(_predict_text(args, out, theory_net, steps, eta))
    return 0


def _training_checkpoint(
    args: argparse.Namespace, net: Network, data: _PredictData
) -> CheckpointDir:
    """The checkpoint directory of ``predict --ensemble``, checked against this command."""
    from .empirical.checkpoint import CheckpointDir, array_digest

    manifest = {
        "run": "ensemble training (pdlt predict)",
        "network": net.to_dict(),
        "data_sha256": array_digest(data.x_train, data.y_train, data.x_test),
        "ensemble": args.ensemble,
        "seed": 0 if args.seed is None else args.seed,
        "method": args.method,
        "steps": args.steps,
        "eta": args.eta,
        "device": args.device or "cpu",
    }
    try:
        return CheckpointDir(args.checkpoint, manifest)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _plot_prediction(out: dict[str, Any], width: int | None, path: str) -> None:
    """``predict --plot``: the first output per test point (see :func:`plots.plot_prediction`)."""
    from .plots import plot_prediction

    fw = out.get("finite_width")
    data = {
        "infinite_width_mean": out["mean"],
        "infinite_width_std": out["std"],
        "y_test": out.get("y_test"),
        "finite_width_mean": None if fw is None else fw["mean"],
        "width": width,
        "ensemble": out.get("ensemble"),
    }
    plot_prediction(data, path)


def _predict_text(
    args: argparse.Namespace,
    out: dict[str, Any],
    net: Network,
    steps: int | None,
    eta: float | None,
) -> str:
    """The readable table of ``pdlt predict``."""
    mean = np.asarray(out["mean"])
    std = np.asarray(out["std"])
    n_b, n_out = mean.shape
    ens = out.get("ensemble")
    if args.method == "bayes":
        label = "Bayesian posterior (6.57), (6.64)"
        if ens is not None:
            label += (
                f" reached by last-layer GD (10.46)-(10.48): after {steps} steps, eta = {eta:.4g}"
            )
    elif steps is None:
        label = "trained by gradient descent, fully trained (10.40)-(10.41)"
    else:
        label = f"after {steps} GD steps, eta = {eta:.4g}"
        if ens is not None and args.steps is None:
            label += " (the ensemble's default: nearly fully trained)"
    src = out["data"]
    lines = [repr(net)]
    if src.get("default"):
        lines.append(f"data: {src['description']}")
    lines.append(f"infinite width, {label}")
    head = f"{'test':>4}  " + "  ".join(f"{'mean_' + str(i):>11}" for i in range(n_out))
    head += f"  {'std':>11}"
    if "y_test" in out:
        head += "  " + "  ".join(f"{'target_' + str(i):>11}" for i in range(n_out))
    fwd = out.get("finite_width")
    fcov = None if fwd is None else fwd.get("covariance")
    if fwd is not None:
        head += "  " + "  ".join(f"{'1/n_corr_' + str(i):>11}" for i in range(n_out))
        head += "  " + "  ".join(f"{'mean+corr_' + str(i):>11}" for i in range(n_out))
        if fcov is not None:
            head += "  " + "  ".join(f"{'std+corr_' + str(i):>11}" for i in range(n_out))
    if ens is not None:
        head += "  " + "  ".join(f"{'ens_mean_' + str(i):>22}" for i in range(n_out))
        head += f"  {'ens_std':>22}"
    lines.append(head)
    for b in range(n_b):
        row = f"{b:>4}  " + "  ".join(f"{v:11.5g}" for v in mean[b]) + f"  {std[b]:11.5g}"
        if "y_test" in out:
            row += "  " + "  ".join(f"{v:11.5g}" for v in out["y_test"][b])
        if fwd is not None:
            row += "  " + "  ".join(f"{v:11.5g}" for v in fwd["correction"][b])
            row += "  " + "  ".join(f"{v:11.5g}" for v in fwd["mean"][b])
            if fcov is not None:
                row += "  " + "  ".join(f"{v:11.5g}" for v in fcov["std"][b])
        if ens is not None:
            cells = [
                f"{ens['mean'][b][i]:10.5g} +- {ens['mean_stderr'][b][i]:<8.2g}"
                for i in range(n_out)
            ]
            cells.append(f"{ens['std'][b]:10.5g} +- {ens['std_stderr'][b]:<8.2g}")
            row += "  " + "  ".join(cells)
        lines.append(row.rstrip())
    if fwd is not None:
        lines.append(
            f"finite width n_{{L-1}} = {fwd['width']:g}: mean of fully-trained networks to order "
            f"1/n (∞.160), GD with eta = {fwd['eta']:.4g}; 1/n_corr = coefficient/n_{{L-1}}, "
            "including the NLO NTK mean H^{1} (derived by pdlt, not in the book). "
            "Not included: O(1/n^2)"
        )
        if fcov is not None:
            lines.append(
                "std+corr: standard deviation of each test output over the ensemble to order "
                "1/n, from the covariance (∞.166) (derived by pdlt; the book prints one term, "
                "(∞.167))"
            )
    if ens is not None:
        lines.append(
            f"ensemble: {ens['size']} networks of width {ens['width']}, seed {ens['seed']}, "
            f"{ens['steps']} GD steps, eta = {ens['eta']:.4g} (+- standard errors); "
            f"largest final training loss {ens['train_loss_max']:.3g}"
        )
    if "test_loss" in out:
        tl = out["test_loss"]
        lines.append(
            f"expected test loss {tl['expected_loss']:.6g} = bias {tl['bias_total']:.6g} "
            f"+ variance {tl['variance_total']:.6g} (10.52)"
        )
    return "\n".join(lines)


def _cmd_report(args: argparse.Namespace) -> int:
    """The main job: theory and real networks side by side, as an HTML report."""
    from .report import DEFAULT_SETTINGS, QUICK_SETTINGS, make_report, settings_with

    base = QUICK_SETTINGS if args.quick else DEFAULT_SETTINGS
    try:
        acts = None if args.activations is None else tuple(args.activations.split(","))
        settings = settings_with(
            base,
            activations=acts,
            depth=args.depth,
            width=args.width,
            ensemble=args.ensemble,
            seed=args.seed,
            device=args.device,
            gamma=args.gamma,
        )
        rep = make_report(
            args.out, settings, progress=None, checkpoint=args.checkpoint, scheduler=args.scheduler
        )
    except (ValueError, ImportError, OSError, RuntimeError) as exc:
        raise UsageError(" ".join(str(exc).split())) from None
    except KeyboardInterrupt:
        if args.checkpoint is None:
            raise
        raise KeyboardInterrupt(_resume_hint(args.checkpoint)) from None
    if args.json:
        print(json.dumps({"path": str(rep.html), "files": rep.files, "seconds": rep.seconds}))
        return 0
    print(f"pdlt report written to {rep.html} ({rep.seconds:.0f} s); numbers in report.json")
    for act, f in rep.data["depth_flow"].items():
        comp = f["comparison"]
        bad = [f"{r['field']}@{r['l']}" for r in comp["rows"] if not r["ok"]]
        verdict = "agree" if not bad else f"disagree at {', '.join(bad)}"
        print(f"  {act}: theory and {settings.ensemble} networks {verdict}")
    return 0


def _cmd_aspect_ratio(args: argparse.Namespace) -> int:
    """Optimal aspect ratio r* = L/n (A.72)-(A.73) and (depth, width) for a budget."""
    from .information import (
        aspect_ratio_summary,
        format_aspect_ratio,
        information_curve,
        plot_information_curve,
    )

    if (args.budget is None) != (args.n_in is None):
        raise UsageError("give --budget together with --n-in (the input width)")
    _check_plot_path(args.plot)
    try:
        summary = aspect_ratio_summary(
            args.activation,
            n_out=args.n_out,
            budget=args.budget,
            n_in=args.n_in,
            gamma=args.residual,
        )
    except (ValueError, ImportError, OSError) as exc:
        raise UsageError(" ".join(str(exc).split())) from None

    def draw(path: str) -> None:
        from .plots import save_atomically

        curve = information_curve(nu=summary["nu"], n_out=args.n_out)
        ax = plot_information_curve(curve)
        save_atomically(ax.figure, path)

    _save_plot(args.plot, draw)
    print(json.dumps(summary) if args.json else format_aspect_ratio(summary))
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "report": _cmd_report,
    "aspect-ratio": _cmd_aspect_ratio,
    "learning-rates": _cmd_learning_rates,
    "criticality": _cmd_criticality,
    "flow": _cmd_flow,
    "measure": _cmd_measure,
    "compare": _cmd_compare,
    "predict": _cmd_predict,
}


def _add_result_options(p: argparse.ArgumentParser) -> None:
    """``--plot`` and ``--out`` of ``flow`` and ``measure``."""
    p.add_argument("--plot", default=None, metavar="FILE.png", help="each field against layer")
    p.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="save the result: .json, or .npz for large tensors (read back with pdlt.load)",
    )


def _add_ensemble_options(p: argparse.ArgumentParser) -> None:
    from .empirical.estimators import MEASURABLE

    p.add_argument(
        "--ensemble", type=_positive_int, default=1000, help="number of networks M (default 1000)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument(
        "--neurons",
        type=_positive_int,
        default=4,
        help="neurons per layer for the dNTK/ddNTK estimators (default 4)",
    )
    p.add_argument(
        "--fields",
        default=None,
        help=f"comma list of fields (default K,V,Theta; any of {','.join(MEASURABLE)})",
    )
    _add_run_options(p)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """``--scheduler``, ``--checkpoint`` and ``--checkpoint-every`` of ensemble runs."""
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run the ensemble on this Dask cluster, e.g. tcp://host:8786 (needs "
        "pdlt[dask]; default: in this process); same seed, same numbers",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        metavar="DIR",
        help="save progress in DIR (atomically); the same command run again continues there",
    )
    p.add_argument(
        "--checkpoint-every",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help=f"seconds between checkpoint writes (default {_CHECKPOINT_SECONDS:g})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pdlt",
        description="The effective theory of deep neural networks (Roberts & Yaida), "
        "computable: theory to O(1/n) and ensembles of real networks.",
    )
    parser.add_argument("--version", action="version", version=f"pdlt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser(
        "report",
        help="the main job: theory against real networks, as an HTML report with figures",
        description="Computes the universality table, the depth flow of K, V, Theta, A, B, D, "
        "F, P, Q (theory against measured ensembles) for tanh and ReLU at criticality (or "
        "residual networks with --gamma), the "
        "optimal aspect ratio, and a trained network's prediction on built-in data, and writes "
        "DIR/index.html (self-contained), report.json, CSV tables and figures.  A few minutes "
        "on a 2-core CPU (--quick: about a minute).",
    )
    p.add_argument("--out", default="pdlt-report", metavar="DIR", help="folder (pdlt-report)")
    p.add_argument("--quick", action="store_true", help="smaller networks and ensembles")
    p.add_argument(
        "--activations", default=None, help="comma list for the depth flow (default tanh,relu)"
    )
    p.add_argument("--depth", type=_positive_int, default=None, help="depth L of the flow")
    p.add_argument("--width", type=_positive_int, default=None, help="hidden width n")
    p.add_argument("--ensemble", type=_positive_int, default=None, help="networks M")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None)
    p.add_argument(
        "--gamma",
        type=float,
        default=None,
        help="residual strength of the depth-flow networks, 0 <= gamma^2 < 1 (appendix B; "
        "default 0): K, V, Theta, A, B, D, F of residual networks against real ones",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        metavar="DIR",
        help="save the ensembles' progress in DIR; the same command again continues",
    )
    p.add_argument(
        "--scheduler", default=None, metavar="ADDRESS", help="run the ensembles on a Dask cluster"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser(
        "aspect-ratio", help="optimal aspect ratio r* = L/n (appendix A) and depth/width choices"
    )
    p.add_argument("--activation", required=True)
    p.add_argument("--n-out", type=_positive_int, default=2, help="output width n_L >= 2")
    p.add_argument("--budget", type=_positive_int, default=None, help="parameter budget")
    p.add_argument("--n-in", type=_positive_int, default=None, help="input width (with --budget)")
    p.add_argument(
        "--residual",
        type=float,
        default=0.0,
        metavar="GAMMA",
        help="residual strength gamma of the hidden layers, 0 <= gamma^2 < 1 (appendix B)",
    )
    p.add_argument("--plot", default=None, metavar="FILE.png", help="information vs r")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("criticality", help="critical initialization and universality class")
    p.add_argument(
        "activation",
        help=f"activation name ({', '.join(available_activations())}; "
        "parameters after a colon, e.g. leaky_relu:0.1)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("flow", help="theory: per-layer kernel and susceptibilities")
    add_network_options(p)
    p.add_argument(
        "--fields", default=None, help=f"comma list of fields ({', '.join(available_fields())})"
    )
    p.add_argument(
        "--layers",
        type=_layer_list,
        default=None,
        help="keep only these layers: 1,5,10, or counted from the top, --layers=-1 (the last)",
    )
    _add_result_options(p)

    p = sub.add_parser(
        "learning-rates", help="per-layer learning rates of the equivalence principle (9.94)-(9.96)"
    )
    p.add_argument("--activation", required=True)
    p.add_argument("--depth", type=_positive_int, required=True)
    p.add_argument(
        "--lambda-b",
        dest="lambda_b",
        type=float,
        default=1.0,
        help="overall bias learning rate lambda_b~ (default 1)",
    )
    p.add_argument(
        "--lambda-W",
        dest="lambda_W",
        type=float,
        default=1.0,
        help="overall weight learning rate lambda_W~ (default 1)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("measure", help="ensembles of real networks: fields with standard errors")
    add_network_options(p)
    _add_ensemble_options(p)
    _add_result_options(p)

    p = sub.add_parser("compare", help="theory against an ensemble of real networks")
    add_network_options(p)
    _add_ensemble_options(p)
    p.add_argument("--k", type=float, default=4.0, help="standard errors allowed (default 4)")
    p.add_argument(
        "--truncation",
        type=float,
        default=3.0,
        help="coefficient c of the truncation allowance c*(l/n)*|theory| (default 3)",
    )
    p.add_argument(
        "--plot",
        default=None,
        metavar="FILE.png",
        help="draw theory curves against measured points with error bars",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="FILE.json",
        help="save the comparison, with the theory and measured results, as JSON",
    )

    p = sub.add_parser(
        "predict",
        help="infinite-width prediction on test inputs (Bayesian or trained by GD), "
        "optionally beside an ensemble of trained real networks",
        description="Mean and standard deviation per test point of infinitely wide networks "
        "after learning: the Bayesian posterior (6.57), (6.64) or gradient descent "
        "(10.40)-(10.41).  Without --train/--test: a small real data set (20 training and 10 "
        "test patients of scikit-learn's diabetes data, standardized; needs pdlt[data]).  With "
        "--width n (and no --ensemble): also the 1/n correction (∞.160) of the mean of "
        "fully-trained GD networks of width n and the corrected mean (smooth activations only; "
        "it includes the NLO NTK mean H^{1}, which pdlt derives).",
    )
    add_network_options(p, inputs=False)
    p.add_argument(
        "--train",
        default=None,
        metavar="FILE",
        help=".npy or .csv: one training input per row, followed by its n_out target(s) "
        "(or give them with --targets); default: the diabetes subset",
    )
    p.add_argument(
        "--test",
        default=None,
        metavar="FILE",
        help=".npy or .csv: one test input per row (optionally followed by targets)",
    )
    p.add_argument(
        "--targets",
        default=None,
        metavar="FILE",
        help=".npy or .csv: the training targets, one row of n_out per training input "
        "(then --train holds inputs only)",
    )
    p.add_argument("--method", choices=("bayes", "gd"), default="gd")
    p.add_argument(
        "--noise", type=float, default=0.0, help="observation noise variance (bayes; default 0)"
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="GD steps (default: fully trained; with --ensemble: until the slowest mode's "
        "residual is below 1e-3, at most 5000)",
    )
    p.add_argument(
        "--eta",
        type=float,
        default=None,
        help="global GD learning rate eta (with --ensemble default 1/lambda_max(Theta~))",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="also write the result to FILE: .json (the --json object) or .csv (one row per "
        "test point)",
    )
    p.add_argument(
        "--plot",
        default=None,
        metavar="FILE.png",
        help="test predictions: targets, infinite width, 1/n-corrected, ensemble",
    )
    p.add_argument(
        "--ensemble",
        type=_positive_int,
        default=None,
        metavar="M",
        help="also train M real networks of width --width by GD and report their mean and "
        "standard deviation (with standard errors) beside the theory",
    )
    p.add_argument("--seed", type=int, default=None, help="ensemble random seed (default 0)")
    p.add_argument(
        "--device", choices=("cpu", "cuda"), default=None, help="ensemble device (default cpu)"
    )
    _add_run_options(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"pdlt: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        detail = f"; {exc}" if str(exc) else ""
        print(f"pdlt: interrupted{detail}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
