"""Activation functions of the book (§2.2, spec/01 §0.6) and user activations.

An :class:`Activation` carries everything the theory and the ensembles need:

* ``sigma(z)`` and its derivatives ``derivative(z, k)`` for ``k = 1, 2, 3`` (vectorized numpy,
  float64), in closed form for the book's activations and obtained by automatic differentiation
  (torch autograd, or Cauchy-contour differentiation of a complex-analytic numpy callable) for
  user callables -- never by naive finite differences;
* ``kinks``: the points where ``sigma`` or a derivative is not smooth (the Gaussian engine splits
  its quadrature there);
* ``taylor``: the Taylor coefficients ``sigma_p = sigma^{(p)}(0)``, ``p = 0..5`` (5.80), or
  ``None`` when ``sigma`` has a kink at 0;
* ``scale_invariant``: ``(a_plus, a_minus)`` for the scale-invariant family (2.13)-(2.14), else
  ``None``;
* ``torch``: the same function on torch tensors, differentiable by autograd (for ensembles).

Activations are named as in the registry, with parameters after a colon: ``"tanh"``,
``"leaky_relu:0.1"``, ``"scale_invariant:1,0.2"``, ``"monomial:3"``.  User code can register its
own with :func:`register_activation`, or build one from a callable with
:meth:`Activation.from_callable`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
from scipy import special

__all__ = [
    "Activation",
    "activation",
    "available_activations",
    "register_activation",
]

ArrayFn = Callable[[np.ndarray], np.ndarray]
TorchFn = Callable[[torch.Tensor], torch.Tensor]

_MAX_TAYLOR_ORDER = 5


@dataclass(frozen=True, eq=False)
class Activation:
    """An activation function sigma with its derivatives and the facts the theory needs.

    Parameters
    ----------
    name : str
        Registry spelling, e.g. ``"leaky_relu:0.1"``; used in ``repr`` and results.
    sigma : callable
        ``sigma(z)`` on float64 numpy arrays, elementwise.
    derivatives : tuple of callables
        ``(sigma', sigma'', sigma''')`` as elementwise numpy functions.  An entry is ``None``
        where the derivative is only a distribution (e.g. ``sigma'`` of the perceptron).
        For kinked activations the entries are the piecewise derivatives (the delta functions
        at the kinks are not included; see ``kinks``).
    torch_fn : callable
        The same function on torch tensors, differentiable by autograd.
    kinks : tuple of float
        Points where sigma or one of its derivatives is not smooth.
    scale_invariant : (float, float) or None
        ``(a_plus, a_minus)`` when ``sigma(z) = a_plus z`` for ``z >= 0`` and ``a_minus z``
        otherwise (2.13)-(2.14); ``None`` for every other activation.
    scale : float
        Length in z over which sigma changes appreciably (the distance to its nearest complex
        singularity for saturating functions); ``inf`` for piecewise polynomials.  The Gaussian
        engine sizes its quadrature panels with it.
    polynomial_degree : int or None
        Degree when sigma is a polynomial (linear, monomials); Gaussian expectations of
        polynomials are then exact.
    analytic : callable or None
        sigma as a function of a complex argument, when it is analytic near the real axis;
        used for spectrally accurate Taylor coefficients (Cauchy's integral formula).
    homogeneous : int or None
        Degree ``p`` when sigma is positively homogeneous, ``sigma(lambda z) = lambda^p sigma(z)``
        for ``lambda > 0``: 1 for the scale-invariant family, 0 for step functions.  Gaussian
        expectations of such activations have exact closed forms in one and two dimensions.
    jet : callable or None
        ``jet(z, m)`` returns ``[sigma(z), sigma'(z), ..., sigma^{(m)}(z)]`` (``m <= 3``)
        computed together, sharing their work (one ``tanh`` for all of tanh's); used by
        :meth:`derivatives_at`.
    """

    name: str
    sigma: ArrayFn = field(repr=False)
    derivatives: tuple[ArrayFn | None, ArrayFn | None, ArrayFn | None] = field(repr=False)
    torch_fn: TorchFn = field(repr=False)
    kinks: tuple[float, ...] = ()
    scale_invariant: tuple[float, float] | None = None
    scale: float = 1.0
    polynomial_degree: int | None = None
    analytic: Callable | None = field(default=None, repr=False)
    homogeneous: int | None = None
    jet: Callable[[np.ndarray, int], list[np.ndarray]] | None = field(default=None, repr=False)

    def __call__(self, z: np.ndarray | float) -> np.ndarray:
        return self.sigma(np.asarray(z, dtype=np.float64))

    def __repr__(self) -> str:
        return f"Activation({self.name!r})"

    def derivative(self, z: np.ndarray | float, order: int) -> np.ndarray:
        """The ``order``-th derivative of sigma at ``z`` (``order = 0..3``).

        Raises
        ------
        ValueError
            If the derivative exists only as a distribution (perceptron, sign), or ``order``
            is outside 0..3.
        """
        z = np.asarray(z, dtype=np.float64)
        if order == 0:
            return self.sigma(z)
        if order not in (1, 2, 3):
            raise ValueError(f"derivative order must be 0, 1, 2 or 3, got {order}")
        fn = self.derivatives[order - 1]
        if fn is None:
            raise ValueError(
                f"activation {self.name!r} has no derivative of order {order} "
                "(it is a distribution, e.g. a delta function at the step)"
            )
        return fn(z)

    def derivatives_at(self, z: np.ndarray | float, orders: Sequence[int]) -> dict[int, np.ndarray]:
        """``{k: sigma^{(k)}(z)}`` for each ``k`` in ``orders`` (``0..3``), evaluated together
        where the activation shares their work (:attr:`jet`), else one by one."""
        z = np.asarray(z, dtype=np.float64)
        ks = sorted(set(orders))
        if self.jet is None or len(ks) < 2 or ks[0] < 0 or ks[-1] > 3:
            return {k: self.derivative(z, k) for k in ks}
        values = self.jet(z, ks[-1])
        return {k: values[k] for k in ks}

    @property
    def smooth(self) -> bool:
        """True when sigma has no kinks (all derivatives are ordinary functions)."""
        return not self.kinks

    def has_derivative(self, order: int) -> bool:
        """Whether ``sigma^{(order)}`` exists as an ordinary (piecewise) function."""
        return order == 0 or (1 <= order <= 3 and self.derivatives[order - 1] is not None)

    def require_smooth(self, order: int, what: str) -> None:
        """Raise a ValueError unless sigma is C^order (needed e.g. by the dNTK and ddNTKs).

        Kinked activations have delta functions in ``sigma^{(k)}`` for ``k`` at or above the
        order of the kink; those quantities are not defined (book §∞.1, spec/07 §5).
        """
        if self.kinks and self.polynomial_degree is None:
            kink_order = 1 if self.derivatives[0] is None else 2
            if order >= kink_order:
                raise ValueError(
                    f"{what} needs sigma^({order}), but {self.name!r} has a kink at "
                    f"{', '.join(f'{k:g}' for k in self.kinks)}: the derivative is a delta "
                    "function there and the quantity is not defined for this activation"
                )
        for k in range(1, order + 1):
            if not self.has_derivative(k):
                raise ValueError(f"{what} needs sigma^({k}), which {self.name!r} does not have")

    @cached_property
    def taylor(self) -> np.ndarray | None:
        """Taylor coefficients ``sigma_p = sigma^{(p)}(0)`` for ``p = 0..5`` (5.80).

        ``None`` when sigma is not smooth at 0 (kink at the origin).  Computed by nested torch
        autograd of ``torch_fn``, or, where that is not available to fifth order, by Cauchy's
        integral formula on the complex-analytic form (coefficients below 1e-12 of the largest
        are then rounded to 0).  A user activation with only hand-given derivatives has just
        ``p = 0..3``.
        """
        if any(k == 0.0 for k in self.kinks):
            return None
        try:
            return _derivatives_at_zero(self.torch_fn, _MAX_TAYLOR_ORDER)
        except RuntimeError:
            pass
        if self.analytic is not None:
            radius = 0.6 * min(self.scale, 2.0)
            c = np.array(
                [
                    float(_cauchy_derivative(self.analytic, p, radius, 64)(np.zeros(1))[0])
                    for p in range(_MAX_TAYLOR_ORDER + 1)
                ]
            )
            c[np.abs(c) < 1e-12 * max(1.0, float(np.max(np.abs(c))))] = 0.0
            return c
        zero = np.zeros(1)
        return np.array([float(self.derivative(zero, p)[0]) for p in range(4)])

    @classmethod
    def from_callable(
        cls,
        fn: Callable,
        *,
        name: str = "custom",
        kinks: Sequence[float] = (),
        derivatives: Sequence[ArrayFn] | None = None,
        scale: float = 1.0,
    ) -> Activation:
        """Build an activation from a plain elementwise Python callable.

        Parameters
        ----------
        fn : callable
            ``fn(z)`` elementwise.  Written with torch operations (``torch.tanh``,
            ``torch.where``, arithmetic), it is differentiated by autograd, kinks and all.  A
            numpy callable that accepts complex input (``np.tanh``, ``np.sin``, arithmetic) is
            differentiated by Cauchy's integral formula on small circles (spectrally
            accurate for analytic functions; not valid near kinks).
        name : str
            Name used in output.
        kinks : sequence of float
            Points where fn is not smooth.  A numpy callable with kinks needs ``derivatives``.
        derivatives : sequence of callables, optional
            ``(sigma', sigma'', sigma''')`` (fewer allowed) as elementwise numpy functions;
            overrides automatic differentiation.
        scale : float
            Length in z over which fn varies (default 1; smaller is safer for quadrature).

        Raises
        ------
        ValueError
            If fn is not elementwise or cannot be differentiated automatically.

        Examples
        --------
        >>> import torch
        >>> act = Activation.from_callable(lambda z: torch.tanh(z) + 0.1 * torch.sin(z))
        >>> float(act.derivative(0.0, 1))
        1.1
        """
        if not callable(fn):
            raise TypeError(f"activation {name!r} must be callable, got {type(fn).__name__}")
        kinks = tuple(float(k) for k in kinks)
        if not all(math.isfinite(k) for k in kinks):
            raise ValueError(f"kinks must be finite numbers, got {kinks}")
        analytic = None
        if not (scale > 0):
            raise ValueError(f"scale must be positive, got {scale}")
        if _accepts_torch(fn):
            torch_fn = fn
            sigma = _numpy_from_torch(fn)
            auto = [_autograd_derivative(fn, k) for k in (1, 2, 3)]
        elif _accepts_complex(fn) and not kinks:
            sigma = _real_numpy(fn)
            si = _detect_scale_invariance(sigma)
            if si is not None:
                ap, am = si
                auto = [
                    lambda z: np.where(np.asarray(z) >= 0, ap, am) + 0.0 * np.asarray(z),
                    np.zeros_like,
                    np.zeros_like,
                ]
            else:
                radius = min(0.25, 0.4 * scale)
                _check_analytic(fn, radius, name)
                auto = [_cauchy_derivative(fn, k, radius) for k in (1, 2, 3)]
                analytic = fn
            torch_fn = None
        elif derivatives is not None:
            sigma = _real_numpy(fn)
            auto = [None, None, None]
            torch_fn = None
        else:
            _check_callable(fn, name)
            raise ValueError(
                f"cannot differentiate activation {name!r} automatically: write it with torch "
                "operations (torch.where, torch.tanh, ...), or as a numpy function that accepts "
                "complex input (if it is smooth), or pass derivatives=(d1, d2, d3)"
            )
        derivs = list(auto)
        if derivatives is not None:
            if len(derivatives) > 3:
                raise ValueError("derivatives must have at most 3 entries (sigma', '', ''')")
            for k, d in enumerate(derivatives):
                derivs[k] = _checked_elementwise(d, f"derivative {k + 1} of {name!r}")
        _check_elementwise(sigma, name)
        if torch_fn is None:
            if derivs[0] is None:
                raise ValueError(f"activation {name!r} needs at least its first derivative")
            torch_fn = _torch_from_numpy(sigma, tuple(derivs))
        si = _detect_scale_invariance(sigma)
        if si is not None:
            kinks = kinks or ((0.0,) if si[0] != si[1] else ())
        guarded = [
            None if d is None else _guarded(d, f"sigma^({k}) of {name!r}")
            for k, d in enumerate(derivs, start=1)
        ]
        return cls(
            name=name,
            sigma=_guarded(sigma, f"activation {name!r}"),
            derivatives=(guarded[0], guarded[1], guarded[2]),
            torch_fn=torch_fn,
            kinks=kinks,
            scale_invariant=si,
            scale=float(scale) if si is None else math.inf,
            polynomial_degree=1 if si is not None and si[0] == si[1] else None,
            analytic=analytic if si is None else None,
            homogeneous=None if si is None else 1,
        )


# --------------------------------------------------------------------------------------------
# Automatic differentiation helpers
# --------------------------------------------------------------------------------------------


def _accepts_torch(fn: Callable) -> bool:
    x = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64, requires_grad=True)
    try:
        y = fn(x)
    except Exception:
        return False
    return isinstance(y, torch.Tensor) and y.shape == x.shape and y.requires_grad


def _accepts_complex(fn: Callable) -> bool:
    z = np.array([0.3 + 0.2j, -0.7 + 0.1j])
    try:
        with np.errstate(all="ignore"):
            y = np.asarray(fn(z))
    except Exception:
        return False
    return y.shape == z.shape and np.iscomplexobj(y) and bool(np.all(np.isfinite(y)))


def _numpy_from_torch(fn: TorchFn) -> ArrayFn:
    def sigma(z: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return fn(torch.as_tensor(np.asarray(z, dtype=np.float64))).numpy()

    return sigma


def _real_numpy(fn: Callable) -> ArrayFn:
    def sigma(z: np.ndarray) -> np.ndarray:
        return np.real(np.asarray(fn(np.asarray(z, dtype=np.float64)), dtype=np.complex128))

    return sigma


def _autograd_derivative(fn: TorchFn, order: int) -> ArrayFn:
    """Elementwise ``d^order fn / dz^order`` by nested torch autograd."""

    @torch.enable_grad()  # also inside a caller's torch.no_grad()
    def d(z: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.array(z, dtype=np.float64)).requires_grad_(True)
        y = fn(x)
        for k in range(order):
            if not y.requires_grad:  # the previous derivative is piecewise constant
                return np.zeros_like(x.detach().numpy())
            (y,) = torch.autograd.grad(y.sum(), x, create_graph=k < order - 1, allow_unused=True)
            if y is None:
                return np.zeros_like(x.detach().numpy())
        return y.detach().numpy()

    return d


def _cauchy_derivative(fn: Callable, order: int, radius: float = 0.25, points: int = 32) -> ArrayFn:
    """Derivative by Cauchy's integral formula on a circle (Lyness-Moler), spectrally accurate.

    ``f^{(k)}(x) = k!/(m r^k) sum_j f(x + r w^j) w^{-jk}``, ``w = exp(2 pi i/m)``; the error
    decays like ``(r/R)^m`` with ``R`` the distance to the nearest singularity.
    """
    w = np.exp(2j * np.pi * np.arange(points) / points)
    coef = math.factorial(order) / (points * radius**order) * w ** (-order)

    def d(z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=np.float64)
        vals = np.asarray(fn(z[..., None] + radius * w), dtype=np.complex128)
        return np.real(vals @ coef)

    return d


def _check_analytic(fn: Callable, radius: float, name: str) -> None:
    """Reject numpy callables that are not analytic near the real axis (e.g. ``np.maximum``).

    Cauchy's formula on circles of two radii agrees to rounding for an analytic function and
    disagrees across a kink or a branch cut.
    """
    z = np.linspace(-3.0, 3.0, 61) + 0.013
    with np.errstate(all="ignore"):
        a = _cauchy_derivative(fn, 1, radius)(z)
        b = _cauchy_derivative(fn, 1, 0.5 * radius)(z)
    if not (np.all(np.isfinite(a)) and np.allclose(a, b, rtol=1e-7, atol=1e-9)):
        raise ValueError(
            f"activation {name!r} does not look analytic near the real axis (kinks?): give "
            "kinks= and derivatives=, or write it with torch operations so autograd can "
            "differentiate it"
        )


@torch.enable_grad()  # also inside a caller's torch.no_grad()
def _derivatives_at_zero(fn: TorchFn, max_order: int) -> np.ndarray:
    x = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    y = fn(x)
    out = [float(y.detach()[0])]
    for k in range(max_order):
        if not y.requires_grad:
            out.append(0.0)
            continue
        (y,) = torch.autograd.grad(y.sum(), x, create_graph=k < max_order - 1, allow_unused=True)
        if y is None:
            y = torch.zeros(1, dtype=torch.float64)
        out.append(float(y.detach()[0]))
    return np.array(out)


def _check_callable(fn: Callable, name: str) -> None:
    """Raise a ValueError naming the exception when ``fn`` fails on a torch tensor and on a
    numpy array of z values alike."""
    errors = []
    for z in (torch.linspace(-1.0, 1.0, 5, dtype=torch.float64), np.linspace(-1.0, 1.0, 5)):
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn(z)
            return
        except Exception as exc:
            errors.append(exc)
    exc = errors[0]
    raise ValueError(f"activation {name!r} raised {type(exc).__name__}: {exc}")


def _guarded(fn: ArrayFn, what: str) -> ArrayFn:
    """``fn`` whose failures become one clear ValueError: an exception it raises, or a
    non-finite value at a finite ``z`` (the Gaussian integrals would be meaningless)."""

    def guarded(z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=np.float64)
        try:
            with np.errstate(all="ignore"):
                out = np.asarray(fn(z), dtype=np.float64)
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f"{what} raised {type(exc).__name__}: {exc}") from exc
        bad = ~np.isfinite(out) & np.isfinite(z)
        if np.any(bad):
            z_bad = float(np.broadcast_to(z, bad.shape)[bad][0])
            raise ValueError(
                f"{what} is not finite at z = {z_bad:.6g} ({float(out[bad][0])}); an activation "
                "and its derivatives must be finite at every finite z"
            )
        return out

    return guarded


def _check_elementwise(sigma: ArrayFn, name: str) -> None:
    z = np.linspace(-2.3, 2.1, 7)
    with np.errstate(all="ignore"):
        full = np.asarray(sigma(z), dtype=np.float64)
        single = np.array([float(np.asarray(sigma(np.array([v])))[0]) for v in z])
    if full.shape != z.shape:
        raise ValueError(f"activation {name!r} must be elementwise: output shape {full.shape}")
    if not np.all(np.isfinite(full)):
        raise ValueError(f"activation {name!r} returned non-finite values on [-2.3, 2.1]")
    if not np.allclose(full, single, rtol=1e-12, atol=1e-12):
        raise ValueError(f"activation {name!r} is not elementwise (values depend on neighbours)")


def _checked_elementwise(d: ArrayFn, what: str) -> ArrayFn:
    def fn(z: np.ndarray) -> np.ndarray:
        return np.asarray(d(np.asarray(z, dtype=np.float64)), dtype=np.float64)

    _check_elementwise(fn, what)
    return fn


def _detect_scale_invariance(sigma: ArrayFn) -> tuple[float, float] | None:
    """``(a_plus, a_minus)`` if sigma(lambda z) = lambda sigma(z) for lambda > 0 (2.13)."""
    z = np.array([-3.1, -1.0, -0.37, 0.41, 1.0, 2.9])
    base = sigma(z)
    for lam in (0.5, 2.0, 7.0):
        if not np.allclose(sigma(lam * z), lam * base, rtol=1e-12, atol=1e-14):
            return None
    if abs(float(sigma(np.array([0.0]))[0])) > 1e-14:
        return None
    return float(sigma(np.array([1.0]))[0]), float(-sigma(np.array([-1.0]))[0])


def _torch_from_numpy(sigma: ArrayFn, derivs: tuple) -> TorchFn:
    """Wrap numpy sigma and its derivatives as a torch function (autograd up to order 3)."""

    def make(k: int) -> TorchFn:
        fn = sigma if k == 0 else derivs[k - 1]

        class _Fn(torch.autograd.Function):
            @staticmethod
            def forward(ctx, z):  # noqa: ANN001, ANN205
                ctx.save_for_backward(z)
                out = fn(z.detach().cpu().numpy())
                return torch.as_tensor(out, dtype=z.dtype, device=z.device)

            @staticmethod
            def backward(ctx, grad):  # noqa: ANN001, ANN205
                (z,) = ctx.saved_tensors
                if k >= 3 or derivs[k] is None:
                    raise RuntimeError(
                        f"derivative of order {k + 1} is not available for this activation"
                    )
                return grad * make(k + 1)(z)

        return _Fn.apply

    return make(0)


# --------------------------------------------------------------------------------------------
# The book's activations
# --------------------------------------------------------------------------------------------

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)


def _phi(z: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * z * z) / _SQRT2PI


def _logistic_derivs(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    s = special.expit(z)
    d1 = s * (1.0 - s)
    return s, d1, d1 * (1.0 - 2.0 * s), d1 * (1.0 - 6.0 * s + 6.0 * s * s)


def _shifted(values: Sequence[np.ndarray], shift: float) -> list[np.ndarray]:
    return [values[0] + shift, *values[1:]]


def _sin_jet(z: np.ndarray, m: int) -> list[np.ndarray]:
    s, c = np.sin(z), np.cos(z)
    return [s, c, -s, -c][: m + 1]


def _softplus_jet(z: np.ndarray, m: int, shift: float) -> list[np.ndarray]:
    s, d1, d2, _ = _logistic_derivs(z)
    return [_softplus_np(z) + shift, s, d1, d2][: m + 1]


def _swish_jet(z: np.ndarray, m: int) -> list[np.ndarray]:
    s, s1, s2, s3 = _logistic_derivs(z)
    return [z * s, s + z * s1, 2.0 * s1 + z * s2, 3.0 * s2 + z * s3][: m + 1]


def _gelu_jet(z: np.ndarray, m: int) -> list[np.ndarray]:
    Phi, phi = 0.5 * special.erfc(-z / _SQRT2), _phi(z)
    return [z * Phi, Phi + z * phi, phi * (2.0 - z * z), z * phi * (z * z - 4.0)][: m + 1]


def _erf_jet(z: np.ndarray, m: int) -> list[np.ndarray]:
    e = 2.0 / math.sqrt(math.pi) * np.exp(-z * z)
    return [special.erf(z), e, -2.0 * z * e, (4.0 * z * z - 2.0) * e][: m + 1]


def _scale_invariant(a_plus: float, a_minus: float, name: str) -> Activation:
    ap, am = float(a_plus), float(a_minus)
    if not (math.isfinite(ap) and math.isfinite(am)):
        raise ValueError(f"slopes of {name!r} must be finite, got ({a_plus}, {a_minus})")
    if ap == 0.0 and am == 0.0:
        raise ValueError(f"{name!r} with both slopes zero is the zero function")
    linear = ap == am
    return Activation(
        name=name,
        sigma=lambda z: np.where(z >= 0, ap * z, am * z),
        derivatives=(
            lambda z: np.where(z >= 0, ap, am) + 0.0 * z,
            lambda z: np.zeros_like(z),
            lambda z: np.zeros_like(z),
        ),
        torch_fn=lambda z: torch.where(z >= 0, ap * z, am * z),
        kinks=() if linear else (0.0,),
        scale_invariant=(ap, am),
        scale=math.inf,
        polynomial_degree=1 if linear else None,
        homogeneous=1,
    )


def _linear(a: float = 1.0) -> Activation:
    return _scale_invariant(a, a, "linear" if a == 1.0 else f"linear:{a:g}")


def _relu() -> Activation:
    return _scale_invariant(1.0, 0.0, "relu")


def _leaky_relu(a: float = 0.01) -> Activation:
    return _scale_invariant(1.0, a, f"leaky_relu:{a:g}")


def _general_scale_invariant(a_plus: float, a_minus: float) -> Activation:
    return _scale_invariant(a_plus, a_minus, f"scale_invariant:{a_plus:g},{a_minus:g}")


def _perceptron() -> Activation:
    return Activation(
        name="perceptron",
        sigma=lambda z: np.where(z >= 0, 1.0, 0.0),
        derivatives=(None, None, None),
        torch_fn=lambda z: torch.where(z >= 0, 1.0, 0.0).to(z.dtype),
        kinks=(0.0,),
        scale=math.inf,
        homogeneous=0,
    )


def _sign() -> Activation:
    return Activation(
        name="sign",
        sigma=np.sign,
        derivatives=(None, None, None),
        torch_fn=torch.sign,
        kinks=(0.0,),
        scale=math.inf,
        homogeneous=0,
    )


def _tanh() -> Activation:
    def d1(z: np.ndarray) -> np.ndarray:
        t = np.tanh(z)
        return 1.0 - t * t

    def d2(z: np.ndarray) -> np.ndarray:
        t = np.tanh(z)
        return -2.0 * t * (1.0 - t * t)

    def d3(z: np.ndarray) -> np.ndarray:
        t = np.tanh(z)
        return (1.0 - t * t) * (6.0 * t * t - 2.0)

    def jet(z: np.ndarray, m: int) -> list[np.ndarray]:
        t = np.tanh(z)
        s = 1.0 - t * t
        return [t, s, -2.0 * t * s, s * (6.0 * t * t - 2.0)][: m + 1]

    return Activation(
        "tanh", np.tanh, (d1, d2, d3), torch.tanh, scale=math.pi / 2, analytic=np.tanh, jet=jet
    )


def _sigmoid() -> Activation:
    return Activation(
        "sigmoid",
        special.expit,
        (
            lambda z: _logistic_derivs(z)[1],
            lambda z: _logistic_derivs(z)[2],
            lambda z: _logistic_derivs(z)[3],
        ),
        torch.sigmoid,
        scale=math.pi,
        analytic=_logistic_complex,
        jet=lambda z, m: list(_logistic_derivs(z))[: m + 1],
    )


def _shifted_sigmoid() -> Activation:
    """``sigmoid(z) - 1/2 = tanh(z/2)/2`` (L11796-L11799): in the K*=0 class."""
    return Activation(
        "shifted_sigmoid",
        lambda z: special.expit(z) - 0.5,
        (
            lambda z: _logistic_derivs(z)[1],
            lambda z: _logistic_derivs(z)[2],
            lambda z: _logistic_derivs(z)[3],
        ),
        lambda z: torch.sigmoid(z) - 0.5,
        scale=math.pi,
        analytic=lambda z: _logistic_complex(z) - 0.5,
        jet=lambda z, m: _shifted(_logistic_derivs(z), -0.5)[: m + 1],
    )


def _sin() -> Activation:
    return Activation(
        "sin",
        np.sin,
        (np.cos, lambda z: -np.sin(z), lambda z: -np.cos(z)),
        torch.sin,
        scale=2.0,
        analytic=np.sin,
        jet=_sin_jet,
    )


def _softplus_np(z: np.ndarray) -> np.ndarray:
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def _softplus_torch(z: torch.Tensor) -> torch.Tensor:
    # logaddexp has a smooth backward (sigmoid), unlike max(z, 0) + log1p(exp(-|z|)) at z = 0
    return torch.logaddexp(z, torch.zeros_like(z))


def _softplus_complex(z: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(z))


def _logistic_complex(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _softplus() -> Activation:
    return Activation(
        "softplus",
        _softplus_np,
        (
            special.expit,
            lambda z: _logistic_derivs(z)[1],
            lambda z: _logistic_derivs(z)[2],
        ),
        _softplus_torch,
        scale=math.pi,
        analytic=_softplus_complex,
        jet=lambda z, m: _softplus_jet(z, m, 0.0),
    )


def _shifted_softplus() -> Activation:
    log2 = math.log(2.0)
    return Activation(
        "shifted_softplus",
        lambda z: _softplus_np(z) - log2,
        (
            special.expit,
            lambda z: _logistic_derivs(z)[1],
            lambda z: _logistic_derivs(z)[2],
        ),
        lambda z: _softplus_torch(z) - log2,
        scale=math.pi,
        analytic=lambda z: _softplus_complex(z) - log2,
        jet=lambda z, m: _softplus_jet(z, m, -log2),
    )


def _swish() -> Activation:
    def d1(z: np.ndarray) -> np.ndarray:
        s, s1, _, _ = _logistic_derivs(z)
        return s + z * s1

    def d2(z: np.ndarray) -> np.ndarray:
        _, s1, s2, _ = _logistic_derivs(z)
        return 2.0 * s1 + z * s2

    def d3(z: np.ndarray) -> np.ndarray:
        _, _, s2, s3 = _logistic_derivs(z)
        return 3.0 * s2 + z * s3

    return Activation(
        "swish",
        lambda z: z * special.expit(z),
        (d1, d2, d3),
        lambda z: z * torch.sigmoid(z),
        scale=math.pi,
        analytic=lambda z: z * _logistic_complex(z),
        jet=_swish_jet,
    )


def _gelu() -> Activation:
    return Activation(
        "gelu",
        lambda z: 0.5 * z * special.erfc(-z / _SQRT2),
        (
            lambda z: 0.5 * special.erfc(-z / _SQRT2) + z * _phi(z),
            lambda z: _phi(z) * (2.0 - z * z),
            lambda z: z * _phi(z) * (z * z - 4.0),
        ),
        lambda z: 0.5 * z * (1.0 + torch.erf(z / _SQRT2)),
        scale=2.0,
        analytic=lambda z: 0.5 * z * special.erfc(-z / _SQRT2),
        jet=_gelu_jet,
    )


def _erf() -> Activation:
    c = 2.0 / math.sqrt(math.pi)
    return Activation(
        "erf",
        special.erf,
        (
            lambda z: c * np.exp(-z * z),
            lambda z: -2.0 * z * c * np.exp(-z * z),
            lambda z: (4.0 * z * z - 2.0) * c * np.exp(-z * z),
        ),
        torch.erf,
        scale=1.5,
        analytic=special.erf,
        jet=_erf_jet,
    )


def _monomial(p: float = 2) -> Activation:
    if p != int(p) or p < 1:
        raise ValueError(f"monomial power must be an integer >= 1, got {p}")
    p = int(p)
    if p == 1:
        return _linear()

    def dk(k: int) -> ArrayFn:
        if k > p:
            return np.zeros_like
        c = math.factorial(p) / math.factorial(p - k)
        return lambda z: c * z ** (p - k)

    return Activation(
        f"monomial:{p}",
        lambda z: z**p,
        (dk(1), dk(2), dk(3)),
        lambda z: z**p,
        scale=math.inf,
        polynomial_degree=p,
        analytic=lambda z: z**p,
    )


def _quadratic() -> Activation:
    return _monomial(2)


_REGISTRY: dict[str, Callable[..., Activation]] = {
    "linear": _linear,
    "relu": _relu,
    "leaky_relu": _leaky_relu,
    "scale_invariant": _general_scale_invariant,
    "perceptron": _perceptron,
    "step": _perceptron,
    "sign": _sign,
    "sigmoid": _sigmoid,
    "shifted_sigmoid": _shifted_sigmoid,
    "tanh": _tanh,
    "sin": _sin,
    "softplus": _softplus,
    "shifted_softplus": _shifted_softplus,
    "swish": _swish,
    "silu": _swish,
    "gelu": _gelu,
    "erf": _erf,
    "monomial": _monomial,
    "quadratic": _quadratic,
}

_PARAMS_HELP = {
    "linear": "linear[:slope]",
    "leaky_relu": "leaky_relu[:a] (default a = 0.01)",
    "scale_invariant": "scale_invariant:a_plus,a_minus",
    "monomial": "monomial:p (integer p >= 1)",
}


def available_activations() -> tuple[str, ...]:
    """Names accepted by :func:`activation` (parameters go after a colon)."""
    return tuple(sorted(_REGISTRY))


def register_activation(name: str, factory: Callable[..., Activation]) -> None:
    """Make ``activation(name)`` (and ``activation("name:p1,p2")``) return ``factory(*params)``.

    Examples
    --------
    >>> import torch
    >>> register_activation(
    ...     "hardtanh", lambda: Activation.from_callable(
    ...         lambda z: torch.clamp(z, -1.0, 1.0), name="hardtanh", kinks=(-1.0, 1.0)))
    >>> activation("hardtanh")
    Activation('hardtanh')
    """
    if not name or ":" in name or not name.replace("_", "").isalnum():
        raise ValueError(f"activation names are alphanumeric with underscores, got {name!r}")
    _REGISTRY[name] = factory
    for built in [k for k in _BUILT if k[0] == name]:
        del _BUILT[built]


def activation(spec: str | Activation) -> Activation:
    """Look up an activation by name, e.g. ``"tanh"``, ``"leaky_relu:0.1"``, ``"monomial:3"``.

    Raises
    ------
    ValueError
        For an unknown name or malformed parameters; the message lists what is allowed.
    """
    if isinstance(spec, Activation):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"activation must be a name or an Activation, got {type(spec).__name__}")
    key, _, params = spec.strip().partition(":")
    key = key.strip().lower()
    if key not in _REGISTRY:
        raise ValueError(
            f"unknown activation {spec!r}; allowed: {', '.join(available_activations())}"
        )
    args: list[float] = []
    if params:
        try:
            args = [float(p) for p in params.split(",")]
        except ValueError:
            raise ValueError(
                f"bad parameters in {spec!r}; expected {_PARAMS_HELP.get(key, key)}"
            ) from None
        if not all(math.isfinite(a) for a in args):
            raise ValueError(f"activation parameters must be finite numbers, got {spec!r}")
    built = _BUILT.get((key, tuple(args)))
    if built is not None:
        return built
    try:
        act = _REGISTRY[key](*args)
    except TypeError:
        raise ValueError(
            f"wrong number of parameters in {spec!r}; expected {_PARAMS_HELP.get(key, key)}"
        ) from None
    except ValueError:
        raise
    except Exception as exc:  # a registered factory that fails
        raise ValueError(
            f"activation {spec!r} could not be built: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(act, Activation):
        raise ValueError(
            f"the factory registered for {key!r} returned {type(act).__name__}, not an Activation"
        )
    _BUILT[(key, tuple(args))] = act
    return act


# activations built by name, one object per (name, parameters): the caches keyed on the
# object (moments, vertex growth) then serve every lookup of the same name
_BUILT: dict[tuple[str, tuple[float, ...]], Activation] = {}
