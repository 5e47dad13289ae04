"""Memory: how much there is, the user's limit, and refusing work that will not fit.

One place for the estimate-then-refuse rule of the theory (:func:`pdlt.flow`) and the
ensembles (:func:`pdlt.measure`, :func:`pdlt.train`): a request that would not fit gets a clear
``ValueError`` with the estimate, instead of an out-of-memory crash.
"""

from __future__ import annotations

import math
import os

MEMORY_ENV = "PDLT_MAX_MEMORY"


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def available_memory() -> int | None:
    """Bytes of memory available now (``MemAvailable`` of ``/proc/meminfo``, else the free
    physical pages of ``os.sysconf``); ``None`` where neither can be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def memory_limit(max_memory: float | None) -> tuple[float | None, str]:
    """The byte limit and where it came from: ``max_memory``, ``PDLT_MAX_MEMORY``, or the
    memory available now."""
    if max_memory is not None:
        source = "the limit max_memory"
        value: float = max_memory
    elif os.environ.get(MEMORY_ENV):
        source = f"the limit {MEMORY_ENV}"
        try:
            value = float(os.environ[MEMORY_ENV])
        except ValueError:
            raise ValueError(
                f"{MEMORY_ENV} must be a number of bytes (e.g. 8e9, or inf for no limit), "
                f"got {os.environ[MEMORY_ENV]!r}"
            ) from None
    else:
        return available_memory(), "available"
    if math.isnan(value) or value <= 0:
        raise ValueError(f"{source} must be a positive number of bytes, got {value!r}")
    return value, source


def require_memory(need: float, what: str, advice: str) -> None:
    """Raise ``ValueError`` if ``need`` bytes exceed the limit (:func:`memory_limit`)."""
    limit, source = memory_limit(None)
    if limit is None or need <= limit:
        return
    have = "is available" if source == "available" else f"is {source}"
    raise ValueError(
        f"{what} needs about {format_bytes(need)} of memory, but only {format_bytes(limit)} "
        f"{have}: {advice}, or allow more with {MEMORY_ENV}=BYTES"
    )
