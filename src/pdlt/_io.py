"""Atomic file writes: the one place pdlt writes result files.

Every result, checkpoint and report file goes through a temporary file in the same folder and
``os.replace``, so a reader (or a run killed half-way) sees either the old file or the complete
new one, never a half-written file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def write_atomic(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` through a temporary file in its folder and ``os.replace``.

    Parameters
    ----------
    path : path-like
    write : callable
        Writes the whole content to the binary file object it is given.
    """
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """:func:`write_atomic` for UTF-8 text."""
    write_atomic(path, lambda fh: fh.write(text.encode("utf-8")))
