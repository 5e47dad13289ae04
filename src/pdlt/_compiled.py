"""Compiled inner loops, when numba is installed (``pip install pdlt[fast]``).

:func:`kernels` returns the module of compiled functions (:mod:`pdlt._numba_kernels`), or
``None`` without numba or with the environment variable ``PDLT_NUMBA=0``; every caller has a
numpy path that computes the same numbers (to rounding) and is used then.  The compiled loops
fuse what numpy does in many passes over memory into one pass per layer that stays in
registers, so they are several times faster; they run without the GIL, on the threads of
:func:`pdlt.gaussian.row_blocks`.
"""

from __future__ import annotations

import os
from functools import cache
from types import ModuleType


@cache
def kernels() -> ModuleType | None:
    """The compiled kernels, or ``None`` when numba is missing or disabled (``PDLT_NUMBA=0``).

    The first call imports numba (~0.3 s) and loads the kernels from numba's on-disk cache
    (compiling them once per installation, a few seconds)."""
    if os.environ.get("PDLT_NUMBA", "1").strip() == "0":
        return None
    try:
        from . import _numba_kernels
    except ImportError:
        return None
    return _numba_kernels
