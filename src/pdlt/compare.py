"""Theory against experiment in one call: ``pdlt.compare(theory, measured)``.

For every field both results have, and every layer, :func:`compare` reports the difference in
standard errors and flags disagreement beyond the stated tolerance

``|measured - theory| > k * stderr + allowance + floor``

where

* ``k`` (default 4) is the number of standard errors allowed for statistics;
* ``allowance = c * (l / n_{l-1}) * scale`` is the truncation allowance of a leading-order
  theory: its neglected corrections are O(l/n) relative (O(1/n) with an O(l) coefficient;
  spec/02 §12.2, spec/05 §14).  When the theory carries the NLO metric ``G1``, the measured
  mean metric is compared with ``K + G1/n_{l-1}`` and the allowance is ``c (l/n)^2 scale``.
  ``scale`` is the largest |theory| entry of that field at that
  layer, so small off-diagonal components get the absolute allowance of the big ones
  (spec/02 §7.5); for the NTK-fluctuation and dNTK/ddNTK fields it is the largest over the
  field's family (A, B | D, F | P, Q | R, S, T, U), which share one natural size ((9.23)-(9.25),
  (11.62), (∞.19)-(∞.22)).  This matters where a field's leading order vanishes identically:
  ReLU's P is 0 at leading order (spec/06 §3.7), and its measured O(l/n) value is judged
  against the size of Q, not against zero.  The allowance is zero where the leading-order
  theory is exact: ``l <= 2`` for every field (spec/02 §3, spec/05 §2, spec/06 §3.2; ``K``
  and ``V`` and the NTK statistics at layers 1 and 2 hold at any width).  ``c`` defaults
  to 3.
* ``floor = 1e-10`` times the field's largest entry over all layers absorbs floating-point
  rounding in deterministic quantities.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .network import Network
from .results import Flow

__all__ = ["Comparison", "ComparisonRow", "compare"]

_EXACT_UP_TO_LAYER = 2
# the 1/n correction to a measured mean that the theory may carry: (4.104), (9.3)
_NLO = {"K": "G1", "Theta": "H1"}


def nlo_fields(network: Network, fields: Sequence[str]) -> list[str]:
    """The NLO fields a theory needs beside ``fields`` so that :func:`compare` tests measured
    means to O(1/n^2): ``G1`` for ``K`` (4.104), ``H1`` for ``Theta`` (9.3).

    None at infinite width; residual networks have ``G1`` only where it is known (smooth
    activations and the ReLU family) and no ``H1``.
    """
    if not network.finite_width:
        return []
    pairs = list(_NLO.items())
    if network.residual:
        act = network.activation
        known = act.smooth or act.scale_invariant is not None
        pairs = [("K", "G1")] if known else []
    return [nlo for f, nlo in pairs if f in fields]


@dataclass(frozen=True)
class ComparisonRow:
    """One field at one layer.

    Attributes
    ----------
    field : str
    layer : int
    theory, measured, stderr : ndarray
        Same shape (the field's per-layer shape).
    z : ndarray
        ``(measured - theory) / sqrt(stderr^2 + floor^2)``: the difference in standard errors,
        with the rounding floor so deterministic quantities give ``z ~ 0``.
    allowance : float
        Truncation allowance (absolute) used at this layer.
    ok : bool
        Whether every entry is within ``k * stderr + allowance + floor``.
    """

    field: str
    layer: int
    theory: np.ndarray
    measured: np.ndarray
    stderr: np.ndarray
    z: np.ndarray
    allowance: float
    ok: bool

    @property
    def max_abs_z(self) -> float:
        finite = np.abs(self.z[np.isfinite(self.z)])
        return float(finite.max()) if finite.size else math.inf


@dataclass(frozen=True)
class Comparison:
    """Per-field, per-layer agreement of a theory :class:`Flow` with a measured one."""

    rows: list[ComparisonRow]
    k: float
    truncation: float
    missing_theory: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every compared field agrees at every layer."""
        return all(r.ok for r in self.rows)

    def row(self, field_name: str, layer: int) -> ComparisonRow:
        for r in self.rows:
            if r.field == field_name and r.layer == layer:
                return r
        raise KeyError(f"no comparison for {field_name!r} at layer {layer}")

    def table(self) -> str:
        head = ["field", "l", "theory", "measured", "stderr", "max|z|", "allowance", "ok"]
        lines = []
        for r in self.rows:
            i = (
                np.unravel_index(np.argmax(np.abs(r.theory)), r.theory.shape)
                if r.theory.size
                else ()
            )
            lines.append(
                [
                    r.field,
                    str(r.layer),
                    f"{r.theory[i]:.6g}",
                    f"{r.measured[i]:.6g}",
                    f"{r.stderr[i]:.2g}",
                    f"{r.max_abs_z:.2f}",
                    f"{r.allowance:.2g}",
                    "yes" if r.ok else "NO",
                ]
            )
        widths = [max(len(x[c]) for x in [head, *lines]) for c in range(len(head))]
        out = ["  ".join(h.rjust(w) for h, w in zip(head, widths, strict=True))]
        out += ["  ".join(v.rjust(w) for v, w in zip(ln, widths, strict=True)) for ln in lines]
        verdict = "agree" if self.ok else "DISAGREE"
        out.append(
            f"{verdict}: within {self.k:g} standard errors + truncation allowance "
            f"{self.truncation:g}*(l/n)*|theory| ((l/n)^2 for K with G1; exact layers "
            f"l <= {_EXACT_UP_TO_LAYER}); "
            "theory/measured columns show the largest entry"
        )
        if self.missing_theory:
            out.append(f"measured without theory yet: {', '.join(self.missing_theory)}")
        return "\n".join(out)

    def __repr__(self) -> str:
        return f"<Comparison ok={self.ok}\n{self.table()}>"

    def to_dict(self) -> dict[str, Any]:
        return {
            "agree": self.ok,
            "k": self.k,
            "truncation": self.truncation,
            "missing_theory": list(self.missing_theory),
            "rows": [
                {
                    "field": r.field,
                    "l": r.layer,
                    "theory": r.theory.tolist(),
                    "measured": r.measured.tolist(),
                    "stderr": r.stderr.tolist(),
                    "z": np.where(np.isfinite(r.z), r.z, None).tolist(),
                    "max_abs_z": r.max_abs_z if math.isfinite(r.max_abs_z) else None,
                    "allowance": r.allowance,
                    "ok": r.ok,
                }
                for r in self.rows
            ],
            "meta": self.meta,
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def plot(self, path: str | None = None, fields: Sequence[str] | None = None) -> Any:
        """Theory curves against measured points with error bars, per layer (see pdlt.plots)."""
        from .plots import plot_comparison

        return plot_comparison(self, path, fields)


_FAMILIES = ({"A", "B"}, {"D", "F"}, {"P", "Q"}, {"R", "S", "T", "U"})


def _family_scale(theory: Flow, name: str, ell: int, t: np.ndarray) -> float:
    """Largest |theory| entry at layer ``ell`` over ``name`` and its family's fields."""
    scale = float(np.max(np.abs(t))) if t.size else 0.0
    for family in _FAMILIES:
        if name in family:
            for other in family & set(theory.fields):
                scale = max(scale, float(np.max(np.abs(theory[other][ell - 1]))))
    return scale


def compare(
    theory: Flow,
    measured: Flow,
    *,
    k: float = 4.0,
    truncation: float = 3.0,
    fields: Sequence[str] | None = None,
) -> Comparison:
    """Compare a theory result with a measured one, field by field and layer by layer.

    Parameters
    ----------
    theory, measured : Flow
        Same network depth and inputs; ``measured`` carries standard errors.
    k : float
        Standard errors allowed.
    truncation : float
        Coefficient ``c`` of the truncation allowance ``c (l/n_{l-1}) max|theory|``.
    fields : sequence of str, optional
        Restrict to these fields (default: all fields of ``measured`` that ``theory`` has).
    """
    if theory.network.depth != measured.network.depth:
        raise ValueError("theory and measurement are for networks of different depth")
    layers = measured.layers
    if not np.array_equal(theory.layers, layers):
        raise ValueError(
            f"theory has layers {theory.layers.tolist()} and the measurement "
            f"{layers.tolist()}: compare them at the same layers (flow(..., layers=...))"
        )
    if theory.inputs.n_inputs != measured.inputs.n_inputs or not np.allclose(
        theory.inputs.gram, measured.inputs.gram, rtol=1e-12, atol=1e-14
    ):
        raise ValueError("theory and measurement are for different inputs")
    if not (math.isfinite(k) and k > 0):
        raise ValueError(f"k (standard errors allowed) must be a finite number > 0, got {k!r}")
    if not (math.isfinite(truncation) and truncation >= 0):
        raise ValueError(f"truncation must be a finite number >= 0, got {truncation!r}")
    names = list(measured.fields if fields is None else fields)
    missing = tuple(f for f in names if f not in theory)
    widths = measured.network.widths
    rows = []
    for name in names:
        if name in missing:
            continue
        if name not in measured:
            raise ValueError(f"field {name!r} was not measured")
        t_all, m_all, s_all = theory[name], measured[name], measured.stderr(name)
        # with the NLO metric (NTK mean) the theory's mean metric is K + G1/n_{l-1} (4.104)
        # (the mean NTK Theta + H1/n_{l-1}, (9.3)): the neglected terms are then O(1/n^2)
        nlo = _NLO.get(name)
        if nlo is not None and nlo in theory:
            inv = np.array([0.0 if n is None else 1.0 / n for n in widths[:-1]])[layers - 1]
            t_all = t_all + theory[nlo] * inv[:, None, None]
        else:
            nlo = None
        if t_all.shape != m_all.shape:
            raise ValueError(f"{name!r}: theory shape {t_all.shape} != measured {m_all.shape}")
        field_scale = max(float(np.max(np.abs(t_all))), float(np.max(np.abs(m_all))))
        for i, ell in enumerate(layers.tolist()):
            t, m, s = t_all[i], m_all[i], s_all[i]
            scale = _family_scale(theory, name, ell, t)
            n_prev = widths[ell - 1]
            tuned = bool(np.any(measured.network.C_b1) or np.any(measured.network.C_W1))
            if (ell <= _EXACT_UP_TO_LAYER and not tuned) or n_prev is None:
                allowance = 0.0
            else:
                allowance = truncation * (ell / float(n_prev)) ** (2 if nlo else 1) * scale
            floor = 1e-10 * field_scale
            diff = m - t
            # differences at the rounding floor are not significant
            err = np.sqrt(s**2 + floor**2)
            with np.errstate(divide="ignore", invalid="ignore"):
                z = np.where(err > 0, diff / err, np.where(diff == 0, 0.0, np.inf))
            ok = bool(np.all(np.abs(diff) <= k * s + allowance + floor))
            rows.append(ComparisonRow(name, ell, t, m, s, z, allowance, ok))
    return Comparison(rows, k, truncation, missing, dict(measured.meta))
