"""The Network: an MLP's architecture and every hyperparameter, validated (spec/01 §0).

``Network`` is the only holder of hyperparameters in pdlt.  The theory and the ensembles take
the same ``Network`` and inputs, and return results with the same field names and shapes.

Conventions (book §2.3, (2.19)-(2.22), (8.6)): layers ``l = 1..L``; widths ``n_0`` (input),
``n_1..n_{L-1}`` (hidden), ``n_L`` (output); biases ``b^(l) ~ N(0, C_b^(l))``, weights
``W^(l) ~ N(0, C_W^(l)/n_{l-1})``; learning rates ``lambda_b^(l)`` for biases and
``lambda_W^(l)/n_{l-1}`` for weights.  Per-layer hyperparameters are arrays of length ``L``
whose entry ``l - 1`` belongs to layer ``l``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from .activations import Activation, activation
from .gaussian import one_blas_thread

__all__ = ["Network", "Inputs", "as_inputs", "xi_equivalent"]

_MAX_DEPTH = 1_000_000
"""Deepest network accepted: far beyond any trainable depth, small enough to hold in memory."""


def _per_layer(value: Any, depth: int, name: str, *, positive: bool = False) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(depth, float(arr))
    if arr.shape != (depth,):
        raise ValueError(
            f"{name} must be a number or a sequence of {depth} numbers (one per layer), "
            f"got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and np.any(arr <= 0):
        raise ValueError(f"{name} must be positive, got {value!r}")
    if np.any(arr < 0):
        raise ValueError(f"{name} must be non-negative, got {value!r}")
    arr.setflags(write=False)
    return arr


def _signed_per_layer(value: Any, depth: int, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(depth, float(arr))
    if arr.shape != (depth,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be a finite number or {depth} numbers (one per layer)")
    arr.setflags(write=False)
    return arr


def _whole_number(value: Any, name: str, kind: str) -> int:
    """``value`` as an int if it is an integral real number (not a bool or a string).

    ``kind`` describes what is allowed, for the messages (e.g. ``"a positive integer"``).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__} {value!r}")
    if not (math.isfinite(value) and float(value).is_integer()):
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value)


def _width(value: Any, name: str, *, allow_none: bool) -> int | None:
    if value is None or (isinstance(value, float) and value == math.inf):
        if allow_none:
            return None
        raise ValueError(f"{name} must be a positive integer")
    n = _whole_number(value, name, "a positive integer")
    if n < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return n


def _depth(value: Any) -> int:
    """The number of layers, an integer in ``1.._MAX_DEPTH``."""
    kind = f"an integer >= 1 (at most {_MAX_DEPTH:,})"
    L = _whole_number(value, "depth", kind)
    if not 1 <= L <= _MAX_DEPTH:
        raise ValueError(f"depth must be {kind}, got {value!r}")
    return L


def _ends_apart(vals: np.ndarray) -> bool:
    """Per-layer values equal on every layer but possibly the first and the last."""
    return bool(np.all(vals[1:-1] == vals[1]))


class Network:
    """A multilayer perceptron's architecture and hyperparameters.

    Parameters
    ----------
    activation : str or Activation
        Registry name (``"tanh"``, ``"leaky_relu:0.1"``, ...) or an :class:`Activation`.
    depth : int
        Number of layers ``L >= 1`` (weight matrices); the output is layer ``L``.
    width : int or None
        Common hidden width ``n`` of layers ``1..L-1``; ``None`` means infinite width (theory
        at leading order only).  Ignored when ``widths`` is given.
    widths : sequence of int, optional
        All widths ``[n_0, n_1, ..., n_L]``; overrides ``depth``, ``width``, ``n_in``, ``n_out``.
        Hidden entries may be ``None`` (infinite).
    n_in : int or None
        Input dimension ``n_0``; ``None`` takes it from the inputs.
    n_out : int
        Output dimension ``n_L`` (default 1).
    C_b, C_W : float or sequence of L floats, optional
        Bias variance and rescaled weight variance per layer.  When both are omitted the
        activation's critical values are used (``pdlt.criticality``); an activation without
        criticality then raises.
    lambda_b, lambda_W : float or sequence of L floats
        Learning-rate hyperparameters (8.6); default 1.
    weight_dist : {"gaussian", "uniform"}
        Distribution of the weights in ensembles (uniform with the same variance is the
        book's footnote 9 variant).
    gamma : float or sequence of L floats
        Residual strength (B.3): layer ``l`` computes
        ``z^(l) = b^(l) + W^(l) sigma(z^(l-1)) + gamma^(l) z^(l-1)``.  A number applies to every
        layer ``l >= 2`` whose width equals the previous one (``n_l = n_{l-1}``, (B.4)); a
        sequence must be zero at layer 1 and wherever the widths differ.  ``0 <= gamma^2 < 1``.
        Default 0: the vanilla MLP.  When ``C_b, C_W`` are omitted, the residual critical values
        ``(1 - gamma^2) (C_b*, C_W*)`` are used (B.19)-(B.21).  (The book's ``xi`` is redundant:
        ``xi`` times the block equals ``C_b, C_W, lambda_b, lambda_W`` multiplied by ``xi^2``.)
    C_b1, C_W1 : float or sequence of L floats
        1/n tuning of the hyperparameters (5.138)-(5.139): the networks use
        ``C_b^(l) = C_b + C_b1/n_{l-1}`` and ``C_W^(l) = C_W + C_W1/n_{l-1}``; the theory keeps
        ``C_b, C_W`` at leading order and ``C_b1, C_W1`` in the NLO metric (5.140).  Default 0.

    Examples
    --------
    >>> Network("relu", depth=3, width=64)
    Network('relu', widths=(None, 64, 64, 1), C_b=0, C_W=2, lambda_b=1, lambda_W=1)
    """

    def __init__(
        self,
        activation: str | Activation,
        depth: int | None = None,
        width: int | None = None,
        *,
        widths: Sequence[int | None] | None = None,
        n_in: int | None = None,
        n_out: int = 1,
        C_b: float | Sequence[float] | None = None,
        C_W: float | Sequence[float] | None = None,
        lambda_b: float | Sequence[float] = 1.0,
        lambda_W: float | Sequence[float] = 1.0,
        weight_dist: str = "gaussian",
        C_b1: float | Sequence[float] = 0.0,
        C_W1: float | Sequence[float] = 0.0,
        gamma: float | Sequence[float] = 0.0,
    ) -> None:
        self._activation = _as_activation(activation)
        if widths is not None:
            if isinstance(widths, str | bytes):
                raise TypeError(f"widths must be a sequence of integers, got {widths!r}")
            ws = list(widths)
            if not 2 <= len(ws) <= _MAX_DEPTH + 1:
                raise ValueError(
                    f"widths must list n_0, ..., n_L (at least two entries, at most "
                    f"{_MAX_DEPTH + 1:,}), got {len(ws)}"
                )
            n0 = _width(ws[0], "n_0 (input width)", allow_none=True)
            hidden = [
                _width(w, f"n_{i} (hidden width)", allow_none=True)
                for i, w in enumerate(ws[1:-1], start=1)
            ]
            nL = _width(ws[-1], f"n_{len(ws) - 1} (output width)", allow_none=False)
            self._widths: tuple[int | None, ...] = (n0, *hidden, nL)
        else:
            if depth is None:
                raise ValueError("give depth (and width), or widths=[n_0, ..., n_L]")
            L = _depth(depth)
            n = _width(width, "width", allow_none=True)
            n0 = _width(n_in, "n_in", allow_none=True)
            nL = _width(n_out, "n_out", allow_none=False)
            self._widths = (n0, *([n] * (L - 1)), nL)
        L = self.depth
        if weight_dist not in ("gaussian", "uniform"):
            raise ValueError(f"weight_dist must be 'gaussian' or 'uniform', got {weight_dist!r}")
        self._weight_dist = weight_dist
        if (C_b is None) != (C_W is None):
            raise ValueError("give both C_b and C_W, or neither (critical initialization)")
        self._gamma = _residual_strengths(gamma, self._widths)
        if C_b is None:
            from .theory.criticality import criticality

            crit = criticality(self._activation)
            if crit.C_b is None or crit.C_W is None:
                raise ValueError(
                    f"activation {self._activation.name!r} has no critical initialization "
                    f"({crit.reason}); pass C_b and C_W explicitly"
                )
            # residual criticality (B.19): the same K*, with both variances scaled by 1 - gamma^2
            C_b = crit.C_b * (1.0 - self._gamma**2)
            C_W = crit.C_W * (1.0 - self._gamma**2)
        self._C_b = _per_layer(C_b, L, "C_b")
        self._C_W = _per_layer(C_W, L, "C_W", positive=True)
        self._lambda_b = _per_layer(lambda_b, L, "lambda_b")
        self._lambda_W = _per_layer(lambda_W, L, "lambda_W")
        self._C_b1 = _signed_per_layer(C_b1, L, "C_b1")
        self._C_W1 = _signed_per_layer(C_W1, L, "C_W1")

    # ---- read-only properties ------------------------------------------------------------

    @property
    def activation(self) -> Activation:
        """The activation function sigma."""
        return self._activation

    @property
    def widths(self) -> tuple[int | None, ...]:
        """``(n_0, n_1, ..., n_L)``; ``None`` for an unknown input width or infinite width."""
        return self._widths

    @property
    def depth(self) -> int:
        """``L``, the number of layers."""
        return len(self._widths) - 1

    @property
    def n_in(self) -> int | None:
        return self._widths[0]

    @property
    def n_out(self) -> int:
        out = self._widths[-1]
        assert out is not None
        return out

    @property
    def hidden_widths(self) -> tuple[int | None, ...]:
        """``(n_1, ..., n_{L-1})``."""
        return self._widths[1:-1]

    @property
    def finite_width(self) -> bool:
        """True when every hidden width is finite."""
        return all(n is not None for n in self.hidden_widths)

    @property
    def C_b(self) -> np.ndarray:
        """Bias variances ``C_b^(l)``, shape (L,)."""
        return self._C_b

    @property
    def C_W(self) -> np.ndarray:
        """Rescaled weight variances ``C_W^(l)``, shape (L,)."""
        return self._C_W

    @property
    def C_b1(self) -> np.ndarray:
        """1/n coefficients of the bias variances, shape (L,) (5.138)."""
        return self._C_b1

    @property
    def C_W1(self) -> np.ndarray:
        """1/n coefficients of the weight variances, shape (L,) (5.139)."""
        return self._C_W1

    @property
    def gamma(self) -> np.ndarray:
        """Residual strengths ``gamma^(l)`` (B.3), shape (L,); all zero for a vanilla MLP."""
        return self._gamma

    @property
    def residual(self) -> bool:
        """True when some layer has a residual connection (``gamma^(l) != 0``)."""
        return bool(np.any(self._gamma != 0))

    def variances(self, layer: int) -> tuple[float, float]:
        """``(C_b^(l), C_W^(l))`` as the networks use them, 1/n tuning included."""
        n_prev = self._widths[layer - 1]
        if (self._C_b1[layer - 1] or self._C_W1[layer - 1]) and n_prev is None:
            raise ValueError("1/n-tuned hyperparameters need a finite width n_{l-1}")
        inv = 0.0 if n_prev is None else 1.0 / n_prev
        cb = float(self._C_b[layer - 1] + self._C_b1[layer - 1] * inv)
        cw = float(self._C_W[layer - 1] + self._C_W1[layer - 1] * inv)
        if cb < 0 or cw <= 0:
            raise ValueError(f"layer {layer}: the tuned variances ({cb:g}, {cw:g}) are invalid")
        return cb, cw

    @property
    def lambda_b(self) -> np.ndarray:
        """Bias learning rates ``lambda_b^(l)``, shape (L,)."""
        return self._lambda_b

    @property
    def lambda_W(self) -> np.ndarray:
        """Weight learning rates ``lambda_W^(l)`` (the step is ``lambda_W/n_{l-1}``), shape (L,)."""
        return self._lambda_W

    @property
    def weight_dist(self) -> str:
        return self._weight_dist

    @property
    def aspect_ratio(self) -> float:
        """``r = L/n`` with ``n`` the mean hidden width (0.19); ``0`` at infinite width."""
        hidden = self.hidden_widths
        if not hidden:
            return 0.0
        if not self.finite_width:
            return 0.0
        return self.depth / float(np.mean([float(n) for n in hidden]))  # type: ignore[arg-type]

    @property
    def num_params(self) -> int:
        """``P = sum_l (n_l + n_l n_{l-1})`` (2.7); requires all widths."""
        if any(n is None for n in self._widths):
            raise ValueError("num_params needs every width, including n_in, to be finite")
        w = [int(n) for n in self._widths]  # type: ignore[arg-type]
        return sum(w[i] + w[i] * w[i - 1] for i in range(1, len(w)))

    def require_finite_width(self, what: str) -> tuple[int, ...]:
        """The hidden widths as ints, or a ValueError naming ``what`` needs them."""
        if not self.finite_width:
            raise ValueError(f"{what} needs finite hidden widths; give width=n")
        return tuple(int(n) for n in self.hidden_widths)  # type: ignore[arg-type]

    def replace(self, **changes: Any) -> Network:
        """A copy with some arguments changed, e.g. ``net.replace(width=128)``.

        A new ``depth`` keeps per-layer hyperparameters that are constant, or constant on the
        hidden layers with the first and the last layer apart (a residual network's critical
        ``C_W``); other per-layer values must be given anew.
        """
        args: dict[str, Any] = {
            "activation": self._activation,
            "widths": self._widths,
            "C_b": self._C_b,
            "C_W": self._C_W,
            "lambda_b": self._lambda_b,
            "lambda_W": self._lambda_W,
            "weight_dist": self._weight_dist,
            "C_b1": self._C_b1,
            "C_W1": self._C_W1,
            "gamma": self._gamma,
        }
        if any(k in changes for k in ("depth", "width", "n_in", "n_out")):
            n0, *hidden, nL = self._widths
            depth = changes.pop("depth", self.depth)
            width = changes.pop("width", hidden[0] if hidden else None)
            n_in = changes.pop("n_in", n0)
            n_out = changes.pop("n_out", nL)
            args.pop("widths")
            if depth != self.depth:
                for key in ("C_b", "C_W", "lambda_b", "lambda_W", "C_b1", "C_W1", "gamma"):
                    vals = args[key]
                    used = vals[vals != 0] if key == "gamma" else vals  # gamma: its layers
                    if used.size == 0:
                        args[key] = 0.0
                    elif np.all(used == used[0]):
                        args[key] = float(used[0])
                    elif key != "gamma" and len(vals) >= 3 and depth >= 2 and _ends_apart(vals):
                        # first and last layers apart, the hidden ones equal (e.g. a residual
                        # network's critical C_W: (1 - gamma^2) C_W* on its residual layers)
                        mid = [float(vals[1])] * (depth - 2)
                        args[key] = [float(vals[0]), *mid, float(vals[-1])]
                    else:
                        raise ValueError(
                            f"cannot change depth of a network with per-layer {key}; "
                            "give the new per-layer values"
                        )
            args.update(depth=depth, width=width, n_in=n_in, n_out=n_out)
        args.update(changes)
        act = args.pop("activation")
        return Network(act, **args)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable description (book symbols as keys)."""
        return {
            "activation": self._activation.name,
            "widths": list(self._widths),
            "C_b": self._C_b.tolist(),
            "C_W": self._C_W.tolist(),
            "lambda_b": self._lambda_b.tolist(),
            "lambda_W": self._lambda_W.tolist(),
            "weight_dist": self._weight_dist,
            "C_b1": self._C_b1.tolist(),
            "C_W1": self._C_W1.tolist(),
            **({"gamma": self._gamma.tolist()} if self.residual else {}),
        }

    def __repr__(self) -> str:
        def fmt(a: np.ndarray) -> str:
            if np.all(a == a[0]):
                return f"{a[0]:.6g}"
            return "[" + ", ".join(f"{v:.4g}" for v in a) + "]"

        extra = "" if self._weight_dist == "gaussian" else ", weight_dist='uniform'"
        for name, arr in (("C_b1", self._C_b1), ("C_W1", self._C_W1), ("gamma", self._gamma)):
            if np.any(arr != 0):
                extra += f", {name}={fmt(arr)}"
        return (
            f"Network({self._activation.name!r}, widths={self._widths}, C_b={fmt(self._C_b)}, "
            f"C_W={fmt(self._C_W)}, lambda_b={fmt(self._lambda_b)}, "
            f"lambda_W={fmt(self._lambda_W)}{extra})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Network) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(repr(self))


def xi_equivalent(
    xi: float | Sequence[float],
    *,
    C_b: float | Sequence[float],
    C_W: float | Sequence[float],
    lambda_b: float | Sequence[float] = 1.0,
    lambda_W: float | Sequence[float] = 1.0,
) -> dict[str, float | np.ndarray]:
    r"""The hyperparameters of a residual MLP written with the book's block scale ``xi`` (B.3).

    ``z^(l+1) = xi [b + W s(z^(l))] + gamma z^(l)``: ``xi b`` and ``xi W`` have variances
    ``xi^2 C_b`` and ``xi^2 C_W/n``, and gradient descent with rate ``lambda_b`` on ``b`` moves
    ``xi b`` with rate ``xi^2 lambda_b`` (likewise for ``W``).  So the network with ``(xi, C_b,
    C_W, lambda_b, lambda_W)`` is, network by network and step by step, the :class:`Network`
    with ``xi = 1`` and the returned values (book.txt L41596-L41607, (B.6); spec/08 §3.1).

    Parameters
    ----------
    xi : float or sequence of float
        Block scale, one number or one per layer (nonzero).
    C_b, C_W, lambda_b, lambda_W : float or sequence of float
        The hyperparameters in the ``xi`` parametrization.

    Returns
    -------
    dict
        ``C_b, C_W, lambda_b, lambda_W`` multiplied by ``xi^2`` (floats, or arrays where an
        input is per layer), to pass as
        ``Network(..., **xi_equivalent(...))``.

    Examples
    --------
    >>> hp = xi_equivalent(2.0, C_b=0.0, C_W=0.5)
    >>> Network("relu", depth=3, width=8, gamma=0.5, **hp).C_W.tolist()
    [2.0, 2.0, 2.0]
    """
    x = np.asarray(xi, dtype=np.float64)
    if not np.all(np.isfinite(x)) or np.any(x == 0):
        raise ValueError(f"xi must be finite and nonzero, got {xi!r}")
    values = {"C_b": C_b, "C_W": C_W, "lambda_b": lambda_b, "lambda_W": lambda_W}
    out = {k: x**2 * np.asarray(v, dtype=np.float64) for k, v in values.items()}
    return {k: float(v) if v.ndim == 0 else v for k, v in out.items()}


def _residual_strengths(value: Any, widths: tuple[int | None, ...]) -> np.ndarray:
    """Per-layer ``gamma^(l)``: a number fills every layer with ``n_l = n_{l-1}``, l >= 2."""
    L = len(widths) - 1
    square = np.array([ell >= 2 and widths[ell] == widths[ell - 1] for ell in range(1, L + 1)])
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.where(square, float(arr), 0.0)
    if arr.shape != (L,) or not np.all(np.isfinite(arr)):
        raise ValueError(f"gamma must be a finite number or {L} numbers (one per layer)")
    if np.any(arr**2 >= 1.0):
        raise ValueError(f"gamma must satisfy 0 <= gamma^2 < 1 (B.19), got {value!r}")
    bad = [ell for ell in range(1, L + 1) if arr[ell - 1] != 0 and not square[ell - 1]]
    if bad:
        raise ValueError(
            f"gamma must be 0 at layer {bad[0]}: a residual connection needs n_l = n_(l-1) "
            "(B.4), and layer 1 maps the input"
        )
    arr.setflags(write=False)
    return arr


def _as_activation(act: str | Activation) -> Activation:
    return activation(act)


class Inputs:
    """A dataset of ``N`` inputs, as the theory and the ensembles need it.

    The theory depends on the inputs only through the normalized Gram matrix
    ``X_{ab} = (1/n_0) sum_i x_{i;a} x_{i;b}`` (3.9), (8.22); the ensembles need the inputs
    themselves.

    Parameters
    ----------
    x : array_like, shape (N, n_0)
        One input per row.
    """

    def __init__(self, x: np.ndarray) -> None:
        arr = _real_array(x)
        if arr.ndim == 1:
            arr = arr[None, :]
        if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise ValueError(f"inputs must have shape (N, n_0) with N, n_0 >= 1, got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError("inputs contain NaN or infinite values")
        with np.errstate(over="ignore"):
            norms = np.einsum("ij,ij->i", arr, arr)
        if not np.all(np.isfinite(norms)):
            raise ValueError(
                f"inputs are too large (largest |entry| {np.max(np.abs(arr)):.3g}): their "
                "squared norms overflow float64; rescale them"
            )
        arr.setflags(write=False)
        self._x = arr

    @classmethod
    def from_k1(cls, k1: float | Sequence[float], network: Network) -> Inputs:
        """Single (or several orthogonal) inputs whose first-layer kernel is ``K^(1) = k1``.

        The normalized squared norm is ``X = (k1 - C_b^(1))/C_W^(1)``; each input is a vector
        of dimension ``n_0`` (the network's, or 1) with that squared norm per component, and
        distinct inputs are orthogonal when ``n_0`` allows it.
        """
        ks = np.atleast_1d(np.asarray(k1, dtype=np.float64))
        if ks.ndim != 1 or not np.all(np.isfinite(ks)):
            raise ValueError(f"k1 must be a finite number, got {k1!r}")
        X = (ks - network.C_b[0]) / network.C_W[0]
        if np.any(X < -1e-15 * np.maximum(1.0, ks)):
            raise ValueError(
                f"K^(1) = {k1!r} is smaller than C_b^(1) = {network.C_b[0]:g}: the first-layer "
                "kernel is C_b + C_W |x|^2/n_0 >= C_b"
            )
        X = np.maximum(X, 0.0)
        n0 = network.n_in or len(ks)
        if len(ks) > n0:
            raise ValueError(f"{len(ks)} orthogonal inputs need n_in >= {len(ks)}, got {n0}")
        x = np.zeros((len(ks), n0))
        if len(ks) == 1:
            x[0, :] = np.sqrt(X[0])
        else:
            for a, Xa in enumerate(X):
                x[a, a] = np.sqrt(Xa * n0)
        return cls(x)

    @property
    def x(self) -> np.ndarray:
        """The inputs, shape (N, n_0)."""
        return self._x

    @property
    def n_inputs(self) -> int:
        return self._x.shape[0]

    @property
    def n_in(self) -> int:
        return self._x.shape[1]

    @property
    def gram(self) -> np.ndarray:
        """``X_{ab} = x_a . x_b / n_0``, shape (N, N) (3.9)."""
        N, n0 = self._x.shape
        with one_blas_thread(N * N * n0):
            X = self._x @ self._x.T
        X /= n0  # in place: one (N, N) array, not two
        return X

    def __len__(self) -> int:
        return self.n_inputs

    def __repr__(self) -> str:
        return f"Inputs(N={self.n_inputs}, n_0={self.n_in})"


def _real_array(x: Any) -> np.ndarray:
    """``x`` as a float64 array; complex, non-numeric and ragged data raise."""
    try:
        raw = np.asarray(x)
    except ValueError:  # ragged nested sequences
        raise ValueError(
            "inputs must be a rectangular (N, n_0) table of numbers; the rows differ in length"
        ) from None
    if np.iscomplexobj(raw):
        raise TypeError("inputs must be real numbers, got complex values")
    if raw.dtype.kind not in "biuf" and raw.dtype != object:
        raise TypeError(f"inputs must be real numbers, got dtype {raw.dtype}")
    try:
        return np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"inputs must be real numbers: {exc}") from None


def as_inputs(
    network: Network, inputs: np.ndarray | Inputs | None = None, k1: float | None = None
) -> Inputs:
    """Resolve ``inputs`` (array or :class:`Inputs`) or ``k1`` into :class:`Inputs`.

    Raises
    ------
    ValueError
        If both or neither are given, or the input dimension disagrees with ``network.n_in``.
    """
    if (inputs is None) == (k1 is None):
        raise ValueError("give exactly one of inputs (an (N, n_0) array) or k1 (K^(1))")
    if k1 is not None:
        return Inputs.from_k1(k1, network)
    inp = inputs if isinstance(inputs, Inputs) else Inputs(inputs)
    if network.n_in is not None and inp.n_in != network.n_in:
        raise ValueError(
            f"inputs have dimension {inp.n_in} but the network has n_in = {network.n_in}"
        )
    return inp
