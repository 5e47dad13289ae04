"""Helpers shared by the benchmark scripts: timing, atomic writes, machine info, tables.

Not a benchmark itself (it defines no ``main``), so ``run_all.py`` skips it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def noop() -> None:
    """A ``sync`` that does nothing (CPU work is synchronous)."""


def time_once(fn: Callable[[], object], sync: Callable[[], None] = noop) -> float:
    """Wall-clock seconds of one call of ``fn``, synchronized before and after."""
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def best_of(
    fn: Callable[[], object],
    *,
    sync: Callable[[], None] = noop,
    warmup: int = 1,
    min_reps: int = 2,
    max_reps: int = 5,
    budget_s: float = 0.5,
) -> tuple[float, int]:
    """Best time of up to ``max_reps`` timed calls after ``warmup`` untimed ones.

    Stops early once ``min_reps`` calls are done and ``budget_s`` seconds have been spent on
    the timed calls.  Returns ``(best seconds, number of timed calls)``.
    """
    for _ in range(warmup):
        fn()
        sync()
    times: list[float] = []
    spent = 0.0
    while len(times) < max_reps:
        t = time_once(fn, sync)
        times.append(t)
        spent += t
        if len(times) >= min_reps and spent >= budget_s:
            break
    return min(times), len(times)


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder + os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give what open() would
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(obj)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """CPU, thread and library facts worth keeping next to any timing."""
    import numpy as np
    import torch

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        affinity = os.cpu_count()
    try:
        blas = np.__config__.CONFIG["Build Dependencies"]["blas"]
        numpy_blas = f"{blas.get('name')} {blas.get('version')}"
    except (AttributeError, KeyError, TypeError):
        numpy_blas = "unknown"
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch_mkl": bool(torch.backends.mkl.is_available()),
        "numpy": np.__version__,
        "numpy_blas": numpy_blas,
        "env_threads": {
            k: os.environ.get(k)
            for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
            if os.environ.get(k) is not None
        },
        "cuda_available": bool(torch.cuda.is_available()),
        "numba": _version("numba"),
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_version"] = torch.version.cuda
        props = torch.cuda.get_device_properties(0)
        info["cuda_memory_gib"] = round(props.total_memory / 2**30, 1)
    return info


def _version(module: str) -> str | None:
    """The installed version of ``module``, or None."""
    try:
        return importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        return None


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table; numbers right-aligned."""

    def cell(v: Any) -> str:
        return "" if v is None else str(v).replace("|", "\\|")

    body = [[cell(v) for v in r] for r in rows]
    numeric = [
        all(_is_number(r[i]) for r in body if r[i] not in ("", "—")) and any(body)
        for i in range(len(headers))
    ]
    out = ["| " + " | ".join(headers) + " |"]
    out.append("|" + "|".join("---:" if num else "---" for num in numeric) + "|")
    out.extend("| " + " | ".join(r) + " |" for r in body)
    return "\n".join(out)


def _is_number(s: str) -> bool:
    try:
        float(s.replace(",", "").rstrip("%×x"))
    except ValueError:
        return False
    return True


def fmt(x: float | None, digits: int = 3) -> str:
    """Compact number: 3 significant digits, thousands separators for large values."""
    if x is None:
        return "—"
    if x != x:  # NaN
        return "nan"
    ax = abs(x)
    if ax >= 1e5:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax == 0:
        return "0"
    return f"{x:.{digits}g}"
