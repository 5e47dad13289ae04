"""A minimal progress display on stderr for long runs (no dependency)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``with Progress(total, "measuring") as bar: bar.update()`` -- a one-line bar.

    Draws only when ``enabled`` (by default: when stderr is a terminal), at most ten times a
    second, and always finishes its line.
    """

    def __init__(
        self, total: int, label: str, *, enabled: bool | None = None, stream: TextIO | None = None
    ) -> None:
        self.total = max(int(total), 1)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.done = 0
        self._start = time.monotonic()
        self._last = 0.0

    def __enter__(self) -> Progress:
        self._draw(force=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._draw(force=True)
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()

    def update(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        self._draw()

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        frac = self.done / self.total
        width = 30
        filled = int(round(frac * width))
        elapsed = now - self._start
        eta = elapsed / frac - elapsed if frac > 0 else float("nan")
        eta_text = f"eta {eta:5.0f}s" if frac > 0 and frac < 1 else f"{elapsed:5.1f}s"
        self.stream.write(
            f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
            f"{self.done}/{self.total} {eta_text}"
        )
        self.stream.flush()
