"""Checkpoint directories of long ensemble runs: a manifest and the merged statistics.

A checkpoint directory holds

* ``manifest.json`` -- what the run computes: the network, a hash of the inputs, the seed,
  the ensemble and what is measured, and the pdlt version.  It is written once, before any
  results; a run whose manifest differs refuses the directory.
* ``statistics.npz`` -- the merged :class:`~pdlt.empirical.statistics.Accumulator` of the
  blocks completed so far (``Accumulator.to_state``), or another results file of the run (e.g.
  ``training.pt`` of :func:`pdlt.train`).

Every file is written atomically (a temporary file in the same directory, flushed to disk,
then ``os.replace``), so a run killed at any moment leaves either the previous complete file
or the new one, never part of one.  Results do not depend on how many times a run was
interrupted: the blocks are seeded by their index and reduced in sorted order.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .._io import write_atomic
from .statistics import Accumulator

__all__ = ["CheckpointDir", "array_digest"]

MANIFEST = "manifest.json"
STATISTICS = "statistics.npz"
_FORMAT = 1
_SHOWN_DIFFERENCES = 3


def array_digest(*arrays: np.ndarray) -> str:
    """SHA-256 of the shapes and float64 values of ``arrays`` (e.g. the inputs of a run)."""
    h = hashlib.sha256()
    for a in arrays:
        arr = np.ascontiguousarray(a, dtype=np.float64)
        h.update(repr(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _differences(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
    """``"seed 1, not 2; network.width 8, not 16"``: the checkpoint's values, then this run's."""
    old, new = _flatten(saved), _flatten(wanted)
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    parts = [f"{k} {old.get(k)!r}, not {new.get(k)!r}" for k in keys[:_SHOWN_DIFFERENCES]]
    if len(keys) > _SHOWN_DIFFERENCES:
        parts.append(f"{len(keys) - _SHOWN_DIFFERENCES} more")
    return "; ".join(parts)


class CheckpointDir:
    """A checkpoint directory for one run, checked against the run's manifest.

    Parameters
    ----------
    path : str or PathLike
        The directory; created (with the manifest) on the first :meth:`prepare` or save.
    manifest : mapping
        JSON-serializable description of what the run computes; the format and the pdlt
        version are added.

    Raises
    ------
    ValueError
        If ``path`` is a file, a directory that is not a pdlt checkpoint, or the checkpoint
        of another run (its manifest differs).
    """

    def __init__(self, path: str | os.PathLike[str], manifest: Mapping[str, Any]) -> None:
        from .. import __version__  # pdlt defines it after importing this module

        self.path = Path(path)
        full = {"format": _FORMAT, "pdlt": __version__, **manifest}
        self.manifest: dict[str, Any] = json.loads(json.dumps(full))
        self._check()

    def _check(self) -> None:
        where = str(self.path)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"checkpoint {where!r} is a file, not a directory")
        manifest = self.path / MANIFEST
        if manifest.is_file():
            try:
                saved = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                msg = f"cannot read the checkpoint manifest in {where!r}: {exc}"
                raise ValueError(msg) from None
            if saved != self.manifest:
                raise ValueError(
                    f"checkpoint in {where!r} was written for another run "
                    f"({_differences(saved, self.manifest)}); use a new directory"
                )
        elif self.path.is_dir() and any(not p.name.endswith(".tmp") for p in self.path.iterdir()):
            raise ValueError(
                f"{where!r} is not a pdlt checkpoint directory (no {MANIFEST}); use a new directory"
            )

    def prepare(self) -> Path:
        """Create the directory and its manifest if needed; remove stale temporary files.

        Returns
        -------
        Path
            The directory.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        for stale in self.path.glob("*.tmp"):
            stale.unlink(missing_ok=True)
        manifest = self.path / MANIFEST
        if not manifest.is_file():
            text = json.dumps(self.manifest, indent=1, sort_keys=True) + "\n"
            write_atomic(manifest, lambda fh: fh.write(text.encode("utf-8")))
        return self.path

    def load_statistics(self) -> Accumulator | None:
        """The saved statistics, or None if there are none yet."""
        path = self.path / STATISTICS
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as state:
                return Accumulator.from_state(dict(state))
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"cannot read the checkpoint {str(path)!r}: {exc}") from None

    def save_statistics(self, acc: Accumulator) -> None:
        """Write ``acc`` atomically (an empty accumulator writes nothing)."""
        if not acc.blocks:
            return
        state = acc.to_state()
        write_atomic(self.prepare() / STATISTICS, lambda fh: np.savez(fh, **state))

    def saver(self, seconds: float) -> Callable[[Accumulator], None]:
        """A callback that saves the statistics when ``seconds`` have passed since the last save.

        Parameters
        ----------
        seconds : float
            Minimum interval between writes; 0 writes on every call.
        """
        last = time.monotonic()

        def save(acc: Accumulator) -> None:
            nonlocal last
            if time.monotonic() - last >= seconds:
                self.save_statistics(acc)
                last = time.monotonic()

        return save
