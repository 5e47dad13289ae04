"""The ``pdlt`` command line.

Every command prints a readable table, or one JSON object with ``--json``.  Bad arguments exit
with status 2 and a one-line message on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from . import __version__
from .activations import available_activations
from .compare import compare
from .network import Inputs, Network
from .results import Flow
from .theory.criticality import Criticality, criticality
from .theory.flow import available_fields, flow

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


def load_inputs(path: str) -> Inputs:
    """Read inputs, one per row, from a ``.npy`` or ``.csv`` file."""
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"inputs file {path!r} does not exist")
    try:
        if p.suffix.lower() == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif p.suffix.lower() in (".csv", ".txt"):
            arr = np.loadtxt(p, delimiter=",", ndmin=2)
        else:
            raise UsageError(f"inputs file {path!r} must be .npy or .csv (one input per row)")
    except UsageError:
        raise
    except Exception as exc:  # a corrupt or foreign file
        raise UsageError(f"cannot read inputs from {path!r}: {exc}") from None
    if not np.issubdtype(np.asarray(arr).dtype, np.number):
        raise UsageError(f"inputs in {path!r} must be numbers")
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise UsageError(f"inputs in {path!r} must be a 2-D table (N, n_0), got shape {arr.shape}")
    try:
        return Inputs(arr)
    except ValueError as exc:
        raise UsageError(f"inputs in {path!r}: {exc}") from None


def add_network_options(p: argparse.ArgumentParser) -> None:
    """The network and input options shared by ``flow``, ``measure`` and ``compare``."""
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
    for name in ("lambda_b", "lambda_W"):
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


def _cmd_flow(args: argparse.Namespace) -> int:
    inputs = inputs_from_args(args)
    net = network_from_args(args, inputs)
    fields = args.fields.split(",") if args.fields else ["K", "chi_parallel", "chi_perp"]
    try:
        if inputs is None:
            result = flow(net, k1=1.0 if args.k1 is None else args.k1, fields=fields)
        else:
            result = flow(net, inputs, fields=fields)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
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
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return result.network, inputs, result


def _cmd_measure(args: argparse.Namespace) -> int:
    _, _, result = _measure_from_args(args)
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
    net, inputs, measured = _measure_from_args(args)
    theory_fields = [f for f in measured.fields if f in available_fields()]
    if "K" in theory_fields and net.finite_width:
        theory_fields.append("G1")  # compare the measured metric with K + G1/n (4.104)
    try:
        theory = flow(net, measured.inputs, fields=theory_fields)
        result = compare(theory, measured, k=args.k, truncation=args.truncation)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.plot:
        try:
            result.plot(args.plot)
        except (ImportError, ValueError, OSError) as exc:
            raise UsageError(f"cannot write the plot {args.plot!r}: {exc}") from None
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


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "learning-rates": _cmd_learning_rates,
    "criticality": _cmd_criticality,
    "flow": _cmd_flow,
    "measure": _cmd_measure,
    "compare": _cmd_compare,
}


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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pdlt",
        description="The effective theory of deep neural networks (Roberts & Yaida), "
        "computable: theory to O(1/n) and ensembles of real networks.",
    )
    parser.add_argument("--version", action="version", version=f"pdlt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"pdlt: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pdlt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
