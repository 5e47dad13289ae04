"""Run every benchmark in benchmarks/ and collect their results into one summary.

A benchmark is any ``benchmarks/*.py`` (other than this file and ``_*.py`` helpers) that
defines a top-level ``main(argv)``.  Each runs in its own Python process (so thread settings
and memory do not leak between benchmarks) as ``main(["--out", DIR, *passed])`` and is
expected to write ``DIR/<name>.json``; a ``"summary"`` list of ``{metric, value, unit}`` in
that JSON becomes its lines of the summary table.

Usage::

    python benchmarks/run_all.py            # full benchmarks
    python benchmarks/run_all.py --quick    # each benchmark's --quick mode
    python benchmarks/run_all.py --only ensemble_throughput --out /tmp/bench
    python benchmarks/run_all.py --collect  # no run: the summary of the results there now
    PDLT_NT_PYTHON=/tmp/ntvenv/bin/python python benchmarks/run_all.py  # with Neural Tangents

``infinite_width_kernels.py`` compares with Neural Tangents, an optional dependency of the
benchmarks only: it runs NT in the interpreter named by ``PDLT_NT_PYTHON`` (or this one, if
it can import ``neural_tangents``); without one its NT columns say "not installed".

Writes ``DIR/summary.json`` and ``DIR/summary.md`` (DIR defaults to benchmarks/results/). With
``--only``, the other benchmarks' entries of an existing summary are kept, so the summary always
covers every benchmark's latest results.  Exit status: 0 if every benchmark succeeded, 1
otherwise.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR, machine_info, markdown_table, write_atomic, write_json_atomic

HERE = Path(__file__).resolve().parent

# Loads a benchmark file by path and calls its main(argv) (benchmarks are scripts, not a
# package); argv[1] is the benchmark folder, argv[2] the file, the rest its arguments.
_RUNNER = """\
import importlib.util, sys
sys.path.insert(0, sys.argv[1])
spec = importlib.util.spec_from_file_location("bench_" + sys.argv[2].rsplit("/", 1)[-1][:-3],
                                              sys.argv[2])
mod = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mod
spec.loader.exec_module(mod)
rc = mod.main(sys.argv[3:])
sys.exit(rc if isinstance(rc, int) else 0)
"""


def defines_main(path: Path) -> bool:
    """True if ``path`` has a top-level ``def main(argv...)`` (found without importing it)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError):
        return False
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            a = node.args
            return bool(a.posonlyargs or a.args or a.vararg)
    return False


def discover(folder: Path = HERE) -> list[Path]:
    me = Path(__file__).resolve()
    return [
        p
        for p in sorted(folder.glob("*.py"))
        if p.resolve() != me and not p.name.startswith("_") and defines_main(p)
    ]


def run_one(path: Path, out: Path, extra: Sequence[str], timeout: float | None) -> dict[str, Any]:
    name = path.stem
    argv = ["--out", str(out), *extra]
    cmd = [sys.executable, "-c", _RUNNER, str(path.parent), str(path), *argv]
    print(f"[run_all] {name} {' '.join(argv)}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    entry: dict[str, Any] = dict(name=name, file=path.name, argv=argv)
    try:
        proc = subprocess.run(cmd, timeout=timeout, stdout=subprocess.PIPE, text=True)
        entry["returncode"] = proc.returncode
        entry["status"] = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
        entry["returncode"] = None
        entry["status"] = f"timed out after {timeout:.0f} s"
    entry["wall_s"] = time.perf_counter() - t0
    result_file = out / f"{name}.json"
    entry["results"] = str(result_file)
    entry["summary"] = []
    # only results written by this run count (an older file may be lying there)
    if result_file.exists() and result_file.stat().st_mtime >= time.time() - entry["wall_s"] - 1:
        try:
            data = json.loads(result_file.read_text(encoding="utf-8"))
            entry["summary"] = list(data.get("summary", []))
            entry["mode"] = data.get("mode")
        except (OSError, ValueError) as exc:
            entry["status"] += f"; unreadable results: {exc}"
    elif entry["status"] == "ok":
        entry["status"] = "ok (no results file)"
    print(f"[run_all] {name}: {entry['status']} in {entry['wall_s']:.1f} s", file=sys.stderr)
    return entry


def collected(path: Path, out: Path) -> dict[str, Any]:
    """The summary entry of a benchmark from the results already in ``out`` (not run now)."""
    name, result_file = path.stem, out / f"{path.stem}.json"
    entry: dict[str, Any] = dict(name=name, file=path.name, argv=[], results=str(result_file))
    entry.update(returncode=None, wall_s=None, summary=[], status="no results")
    if result_file.exists():
        try:
            data = json.loads(result_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            entry["status"] = f"unreadable results: {exc}"
            return entry
        entry.update(summary=list(data.get("summary", [])), mode=data.get("mode"))
        entry["status"] = f"ok (collected; results of {data.get('created', 'an earlier run')})"
    return entry


def merged(entries: list[dict[str, Any]], out: Path) -> list[dict[str, Any]]:
    """``entries`` with the other benchmarks' entries of ``out/summary.json`` kept, in the
    order of :func:`discover`."""
    try:
        old = json.loads((out / "summary.json").read_text(encoding="utf-8"))["benchmarks"]
    except (OSError, ValueError, KeyError, TypeError):
        old = []
    by_name = {e["name"]: e for e in old if isinstance(e, dict) and "name" in e}
    by_name.update({e["name"]: e for e in entries})
    order = [p.stem for p in discover()]
    return sorted(
        by_name.values(), key=lambda e: order.index(e["name"]) if e["name"] in order else len(order)
    )


def render(summary: dict[str, Any]) -> str:
    m = summary["machine"]
    lines = [
        "# Benchmark summary",
        "",
        f"{summary['created']} · {m['cpu_model']} · {m['cpu_count']} CPUs · torch {m['torch']} "
        f"({m['torch_threads']} threads) · "
        + (f"CUDA: {m.get('cuda_device')}" if m["cuda_available"] else "cuda: not available")
        + f" · flags: {' '.join(summary['flags']) or '(none)'}",
        "",
    ]
    rows = [
        [
            b["name"],
            b["status"],
            "—" if b.get("wall_s") is None else f"{b['wall_s']:.1f}",
            b.get("mode") or "",
            Path(b["results"]).name,
        ]
        for b in summary["benchmarks"]
    ]
    lines.append(markdown_table(["benchmark", "status", "wall s", "mode", "results"], rows))
    lines.append("")
    metric_rows = []
    for b in summary["benchmarks"]:
        for item in b["summary"]:
            value = item.get("value")
            if isinstance(value, float):
                value = f"{value:.4g}"
            metric_rows.append([b["name"], item.get("metric", ""), value, item.get("unit", "")])
    if metric_rows:
        lines += ["## Headline numbers", ""]
        lines.append(markdown_table(["benchmark", "metric", "value", "unit"], metric_rows))
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="run_all.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR, help="results folder")
    ap.add_argument("--only", action="append", default=None, help="run only this benchmark")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per benchmark")
    ap.add_argument(
        "--collect", action="store_true", help="run nothing: summarize the results in --out"
    )
    args = ap.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    benches = discover()
    if args.only:
        benches = [p for p in benches if p.stem in set(args.only)]
        missing = set(args.only) - {p.stem for p in benches}
        if missing:
            ap.error(f"no benchmark named {', '.join(sorted(missing))}")
    flags = ["--quick"] if args.quick else []
    t0 = time.perf_counter()
    if args.collect:
        entries = [collected(p, out) for p in benches]
    else:
        entries = [run_one(p, out, flags, args.timeout) for p in benches]
    if args.only:
        entries = merged(entries, out)
    summary = dict(
        created=dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        flags=flags,
        machine=machine_info(),
        wall_s=time.perf_counter() - t0,
        benchmarks=entries,
    )
    md = render(summary)
    write_json_atomic(out / "summary.json", summary)
    write_atomic(out / "summary.md", md)
    print(md)
    print(f"[run_all] wrote {out / 'summary.json'} and {out / 'summary.md'}", file=sys.stderr)
    return 0 if all(e["status"].startswith("ok") for e in entries) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
