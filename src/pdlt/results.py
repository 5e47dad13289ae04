"""Result objects shared by the theory and the ensembles.

A :class:`Flow` holds per-layer fields named after the book's symbols (``K``, ``V``,
``Theta``, ...) with documented shapes, leading axis the layer ``l = 1..L``.  The theory returns
values; the ensembles return values with standard errors, under the same names and shapes, so
``pdlt.compare(theory, measured)`` is one line.

Index conventions (spec/05 §1.1, spec/07 §2): ``K[l-1, a, b] = K^(l)_{ab}``;
``V[l-1, a, b, c, d] = V^(l)_{(ab)(cd)}``; four-index NTK tensors are stored in the book's
printed slot order (``B[a, b, c, d] = B_{abcd}``, ``F[a, b, c, d] = F_{abcd}``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._io import write_atomic, write_text_atomic
from .network import Inputs, Network

__all__ = ["Flow", "FIELD_DOCS", "load"]

FIELD_DOCS: dict[str, str] = {
    "K": "kernel K^(l)_{ab} (4.118); measured: mean metric G^(l) = E[G-hat^(l)] (4.72)",
    "chi_parallel": "parallel susceptibility chi_par(K^(l)_{aa}) (5.50), per input",
    "chi_perp": "perpendicular susceptibility chi_perp(K^(l)_{aa}) (5.51), per input",
    "K_gamma": "gamma-basis components (K_[0], K_[1], K_[2]) of two inputs (5.17)-(5.19)",
}


class Flow:
    """Per-layer quantities of one network on one set of inputs.

    Parameters
    ----------
    network : Network
    inputs : Inputs
    values : mapping of str to ndarray
        Each array has leading axis ``L`` (layers ``1..L``).
    stderr : mapping of str to ndarray, optional
        Standard errors (measured results), same shapes as ``values``.
    kind : str
        ``"theory"`` or ``"ensemble"``.
    meta : mapping, optional
        Accuracy settings, seeds, ensemble size, quadrature error estimates, ...
    layers : sequence of int, optional
        The layers ``l`` (1..L, increasing) the leading axis of every field holds; default
        all, ``1..L``.
    """

    def __init__(
        self,
        network: Network,
        inputs: Inputs,
        values: Mapping[str, np.ndarray],
        *,
        stderr: Mapping[str, np.ndarray] | None = None,
        kind: str = "theory",
        meta: Mapping[str, Any] | None = None,
        layers: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        self.network = network
        self.inputs = inputs
        self._values = {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}
        self._stderr = {k: np.asarray(v, dtype=np.float64) for k, v in (stderr or {}).items()}
        self.kind = kind
        self.meta = dict(meta or {})
        L = network.depth
        self._layers = np.arange(1, L + 1) if layers is None else np.asarray(layers, dtype=int)
        ell = self._layers
        if ell.ndim != 1 or ell.size == 0 or ell[0] < 1 or ell[-1] > L or np.any(np.diff(ell) <= 0):
            raise ValueError(f"layers must be increasing layer numbers in 1..{L}, got {layers}")
        for name, v in self._values.items():
            if v.shape[:1] != (len(ell),):
                what = f"L = {L}" if len(ell) == L else f"{len(ell)}, one per layer of {ell}"
                raise ValueError(f"field {name!r} must have leading axis {what}")
            if name in self._stderr and self._stderr[name].shape != v.shape:
                raise ValueError(f"stderr of {name!r} has shape {self._stderr[name].shape}")

    # ---- access ---------------------------------------------------------------------------

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self._values)

    @property
    def layers(self) -> np.ndarray:
        """The layers ``l`` of the leading axis: ``[1, 2, ..., L]`` unless ``flow(...,
        layers=...)`` kept fewer."""
        return self._layers.copy()

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self._values[name]
        except KeyError:
            raise KeyError(f"no field {name!r}; available: {', '.join(self.fields)}") from None

    def __getattr__(self, name: str) -> np.ndarray:
        if name.startswith("_"):
            raise AttributeError(name)
        values = self.__dict__.get("_values", {})
        if name in values:
            return values[name]
        raise AttributeError(f"{type(self).__name__} has no field {name!r}")

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def stderr(self, name: str) -> np.ndarray:
        """Standard error of a measured field (zeros for theory results)."""
        if name in self._stderr:
            return self._stderr[name]
        return np.zeros_like(self[name])

    def single(self, name: str) -> np.ndarray:
        """A field for a single input as per-layer numbers, shape (L,)."""
        v = self[name]
        if v[0].size != 1:
            raise ValueError(f"{name!r} has {v[0].size} entries per layer; use flow[{name!r}]")
        return v.reshape(len(v))

    def plot(self, path: str | None = None, fields: Sequence[str] | None = None) -> Any:
        """Each field's first-input entry against the layer (see :func:`pdlt.plots.plot_flow`)."""
        from .plots import plot_flow

        return plot_flow(self, path, fields)

    # ---- serialization ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable dict: network, inputs, and per-layer arrays under ``layers``.

        A single input's fields become per-layer numbers.
        """
        single = self.inputs.n_inputs == 1
        layers: dict[str, Any] = {"l": self.layers.tolist()}
        for name, v in self._values.items():
            layers[name] = v.reshape(len(v)).tolist() if single and v[0].size == 1 else v.tolist()
            if name in self._stderr:
                s = self._stderr[name]
                layers[f"{name}_stderr"] = (
                    s.reshape(len(s)).tolist() if single and s[0].size == 1 else s.tolist()
                )
        return {
            "kind": self.kind,
            "network": self.network.to_dict(),
            "inputs": {
                "N": self.inputs.n_inputs,
                "n_0": self.inputs.n_in,
                "gram": self.inputs.gram.tolist(),
            },
            "layers": layers,
            "meta": _jsonable(self.meta),
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the result to ``path``, atomically, in pdlt's result format (:func:`load`).

        ``.json``: one JSON object (small results).  ``.npz``: NumPy arrays, one per field and
        standard error (``value/NAME``, ``stderr/NAME``), the inputs ``x`` and a JSON header
        (large tensors).  Both carry the format name and version, the full network, the
        inputs, ``meta`` (seeds, ensemble size, device for measurements) and the versions and
        Gaussian-engine accuracy settings that produced the numbers.
        """
        p = Path(path)
        suffix = p.suffix.lower()
        if suffix not in (".json", ".npz"):
            raise ValueError(f"a result file must end in .json or .npz, got {str(path)!r}")
        header = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "kind": self.kind,
            "network": self.network.to_dict(),
            "layers": self._layers.tolist(),
            "meta": _jsonable(self.meta),
            "produced_by": _provenance(),
        }
        if suffix == ".json":
            header["x"] = self.inputs.x.tolist()
            header["values"] = {k: v.tolist() for k, v in self._values.items()}
            header["stderr"] = {k: v.tolist() for k, v in self._stderr.items()}
            write_text_atomic(p, json.dumps(header) + "\n")
            return
        arrays = {"x": self.inputs.x, "header": np.array(json.dumps(header))}
        arrays.update({f"value/{k}": v for k, v in self._values.items()})
        arrays.update({f"stderr/{k}": v for k, v in self._stderr.items()})
        write_atomic(p, lambda fh: np.savez(fh, **arrays))

    # ---- display ---------------------------------------------------------------------------

    def table(self, max_inputs: int = 3) -> str:
        """A readable per-layer table of diagonal entries (first inputs) of each field."""
        cols: list[tuple[str, np.ndarray, np.ndarray | None]] = []
        N = self.inputs.n_inputs
        for name, v in self._values.items():
            se = self._stderr.get(name)
            for a in range(min(N, max_inputs)):
                label = name if N == 1 else f"{name}[{a}]"
                sel = _diagonal_entry(v, a)
                if sel is None:
                    break
                cols.append((label, v[sel], None if se is None else se[sel]))
        head = ["l"] + [c[0] for c in cols]
        rows = []
        for i, ell in enumerate(self.layers):
            row = [str(ell)]
            for _, val, se in cols:
                row.append(f"{val[i]:.6g}" if se is None else f"{val[i]:.5g} ± {se[i]:.2g}")
            rows.append(row)
        widths = [max(len(r[k]) for r in [head, *rows]) for k in range(len(head))]
        lines = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
        lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        return "\n".join(lines)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}{tuple(v.shape)}" for k, v in self._values.items())
        return (
            f"<Flow kind={self.kind!r} {self.network!r} N={self.inputs.n_inputs}\n"
            f" fields: {shapes}\n{self.table()}>"
        )


FORMAT = "pdlt.flow"
FORMAT_VERSION = 1


def _provenance() -> dict[str, Any]:
    """Versions and the Gaussian engine's accuracy settings, stored with every result."""
    import scipy

    from . import __version__
    from .gaussian import DEFAULT_RULE

    return {
        "pdlt": __version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "gaussian_rule": dict(DEFAULT_RULE),
    }


def load(path: str | os.PathLike[str]) -> Flow:
    """Read a result written by :meth:`Flow.save` (``pdlt flow/measure --out``).

    Raises
    ------
    ValueError
        A missing, corrupt or foreign file, or one of a newer format version.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"result file {str(path)!r} does not exist")
    what = f"{str(path)!r} is not a pdlt result file"
    try:
        if p.suffix.lower() == ".npz":
            with np.load(p, allow_pickle=False) as z:
                header = json.loads(str(z["header"]))
                x = z["x"]
                values = {k[6:]: z[k] for k in z.files if k.startswith("value/")}
                stderr = {k[7:]: z[k] for k in z.files if k.startswith("stderr/")}
        else:
            header = json.loads(p.read_text(encoding="utf-8"))
            if not isinstance(header, dict) or header.get("format") != FORMAT:
                raise ValueError(f"{what} (no {FORMAT!r} format tag)")
            x = np.asarray(header["x"], dtype=np.float64)
            values = {k: np.asarray(v, dtype=np.float64) for k, v in header["values"].items()}
            stderr = {k: np.asarray(v, dtype=np.float64) for k, v in header["stderr"].items()}
    except ValueError as exc:
        if str(exc).startswith(what):
            raise
        raise ValueError(f"{what} ({type(exc).__name__}: {exc})") from None
    except (OSError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{what} (no {FORMAT!r} format tag)")
    if header.get("version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{str(path)!r} was written in format version {header['version']}; this pdlt reads "
            f"up to {FORMAT_VERSION}: upgrade pdlt"
        )
    network = Network(**header["network"])
    return Flow(
        network,
        Inputs(x),
        values,
        stderr=stderr or None,
        kind=header["kind"],
        meta=header.get("meta"),
        layers=header.get("layers"),
    )


def _diagonal_entry(v: np.ndarray, a: int) -> tuple | None:
    """Index selecting the all-``a`` entry of a per-layer field (slice over layers)."""
    rank = v.ndim - 1
    if rank == 0:
        return (slice(None),) if a == 0 else None
    if any(s <= a for s in v.shape[1:]):
        return None
    return (slice(None),) + (a,) * rank


def _jsonable(obj: Any) -> Any:
    """``obj`` with numpy arrays and scalars as Python lists and numbers, and non-finite floats
    as ``None`` (strict JSON has no NaN)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
