"""Tests for pdlt.activations (spec/01 §0.6).

Every expected value is computed independently of the code under test: by mpmath (derivatives by
``mpmath.diff`` on mpmath versions of the functions written here, at 30 digits), by sympy series
(Taylor coefficients), by torch autograd of the torch form, or by closed forms written out here.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
import sympy as sp
import torch

from pdlt.activations import Activation, activation, available_activations, register_activation

# --------------------------------------------------------------------------------------------
# Reference implementations (independent of pdlt)

MP_DPS = 30


def _mp_sigmoid(z):
    return 1 / (1 + mp.exp(-z))


def _mp_softplus(z):
    return mp.log1p(mp.exp(z))


# mpmath versions of every smooth built-in (formulas of spec/01 §0.6)
MP_SMOOTH = {
    "linear": lambda z: z,
    "linear:2.5": lambda z: mp.mpf("2.5") * z,
    "sigmoid": _mp_sigmoid,
    "shifted_sigmoid": lambda z: _mp_sigmoid(z) - mp.mpf(1) / 2,
    "tanh": mp.tanh,
    "sin": mp.sin,
    "softplus": _mp_softplus,
    "shifted_softplus": lambda z: _mp_softplus(z) - mp.log(2),
    "swish": lambda z: z * _mp_sigmoid(z),
    "silu": lambda z: z * _mp_sigmoid(z),
    "gelu": lambda z: z * mp.ncdf(z),
    "erf": mp.erf,
    "monomial:3": lambda z: z**3,
    "monomial:4": lambda z: z**4,
    "quadratic": lambda z: z**2,
}

_X = sp.Symbol("x")
_SP_SIGMOID = 1 / (1 + sp.exp(-_X))
# sympy versions for Taylor series
SP_SMOOTH = {
    "linear": _X,
    "sigmoid": _SP_SIGMOID,
    "shifted_sigmoid": _SP_SIGMOID - sp.Rational(1, 2),
    "tanh": sp.tanh(_X),
    "sin": sp.sin(_X),
    "softplus": sp.log(1 + sp.exp(_X)),
    "shifted_softplus": sp.log(1 + sp.exp(_X)) - sp.log(2),
    "swish": _X * _SP_SIGMOID,
    "gelu": _X * (1 + sp.erf(_X / sp.sqrt(2))) / 2,
    "erf": sp.erf(_X),
    "monomial:3": _X**3,
    "quadratic": _X**2,
}

KINKED_AT_ZERO = ["relu", "leaky_relu:0.1", "scale_invariant:1,-0.5", "perceptron", "sign"]
SCALE_INVARIANT = {
    "relu": (1.0, 0.0),
    "leaky_relu:0.1": (1.0, 0.1),
    "scale_invariant:1,-0.5": (1.0, -0.5),
}
ALL_NAMES = sorted(set(MP_SMOOTH) | set(KINKED_AT_ZERO) | {"step", "leaky_relu"})

POINTS = [-7.3, -2.0, -0.45, 0.0, 0.3, 1.7, 5.2, 12.0]


def _mp_derivs(f, points, k: int) -> list[float]:
    """k-th derivative of the mpmath function f at the points, by mpmath.diff at 30 digits."""
    with mp.workdps(MP_DPS):
        return [float(mp.diff(f, mp.mpf(p), k)) for p in points]


def _series_coefficients(expr, order: int = 5) -> list[float]:
    """sigma^{(p)}(0) = p! [x^p] of the sympy series of expr."""
    s = sp.series(expr, _X, 0, order + 1).removeO()
    return [float(s.coeff(_X, p) * sp.factorial(p)) for p in range(order + 1)]


def _autograd(fn, z: np.ndarray, order: int) -> np.ndarray:
    """order-th derivative of a torch function by nested autograd (reference path)."""
    x = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    y = fn(x)
    for _ in range(order):
        if not y.requires_grad:  # constant derivative (polynomials)
            return np.zeros_like(z)
        (y,) = torch.autograd.grad(y.sum(), x, create_graph=True, allow_unused=True)
        if y is None:
            return np.zeros_like(z)
    return y.detach().numpy()


def _close(got, ref, tol: float) -> bool:
    got, ref = np.asarray(got, dtype=float), np.asarray(ref, dtype=float)
    return bool(np.all(np.abs(got - ref) <= tol * np.maximum(1.0, np.abs(ref))))


# --------------------------------------------------------------------------------------------
# 1. registry


EXPECTED_REPR = {
    "linear": "linear",
    "linear:2.5": "linear:2.5",
    "relu": "relu",
    "leaky_relu": "leaky_relu:0.01",
    "leaky_relu:0.1": "leaky_relu:0.1",
    "scale_invariant:1,-0.5": "scale_invariant:1,-0.5",
    "perceptron": "perceptron",
    "step": "perceptron",
    "sign": "sign",
    "sigmoid": "sigmoid",
    "shifted_sigmoid": "shifted_sigmoid",
    "tanh": "tanh",
    "sin": "sin",
    "softplus": "softplus",
    "shifted_softplus": "shifted_softplus",
    "swish": "swish",
    "silu": "swish",
    "gelu": "gelu",
    "erf": "erf",
    "monomial:3": "monomial:3",
    "monomial:4": "monomial:4",
    "quadratic": "monomial:2",
}


@pytest.mark.parametrize("name", sorted(EXPECTED_REPR))
def test_registry_name_constructs_with_readable_repr(name):
    # expected repr: the registry spelling (spec/01 §0.6 names; aliases resolve to the canonical)
    act = activation(name)
    assert isinstance(act, Activation)
    assert repr(act) == f"Activation({EXPECTED_REPR[name]!r})"
    assert activation(act) is act
    # lookup is case- and whitespace-insensitive in the name
    assert repr(activation(f"  {name.upper()} ")) == repr(act)


def test_available_activations_cover_the_book_list():
    # spec/01 §0.6: the complete list of the book's activations plus monomial/quadratic
    book = {
        "perceptron", "sign", "sigmoid", "tanh", "sin", "scale_invariant", "linear", "relu",
        "leaky_relu", "softplus", "swish", "gelu", "quadratic", "monomial", "shifted_softplus",
    }  # fmt: skip
    assert book <= set(available_activations())


@pytest.mark.parametrize("bad", ["foo", "", ":", "tanhh", "relu6"])
def test_unknown_name_lists_allowed(bad):
    with pytest.raises(ValueError, match="unknown activation") as info:
        activation(bad)
    for allowed in available_activations():
        assert allowed in str(info.value)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("leaky_relu:abc", r"leaky_relu\[:a\]"),
        ("scale_invariant:1", "a_plus,a_minus"),
        ("scale_invariant", "a_plus,a_minus"),
        ("scale_invariant:1,x", "a_plus,a_minus"),
        ("monomial:2.5", "integer"),
        ("monomial:0", "integer"),
        ("monomial:x", "monomial:p"),
        ("relu:1", "wrong number of parameters"),
        ("tanh:1,2", "wrong number of parameters"),
        ("leaky_relu:nan", "finite"),
        ("leaky_relu:inf", "finite"),
        ("scale_invariant:0,0", "zero function"),
    ],
)
def test_malformed_parameters_raise_with_help(spec, needle):
    with pytest.raises(ValueError, match=needle):
        activation(spec)


@pytest.mark.parametrize("bad", [3, None, 1.5, ["tanh"]])
def test_non_string_spec_raises(bad):
    with pytest.raises(ValueError, match="name or an Activation"):
        activation(bad)


@pytest.mark.parametrize(("name", "slopes"), sorted(SCALE_INVARIANT.items()))
def test_scale_invariant_family_flags(name, slopes):
    # (2.13)-(2.14): sigma(z) = a_+ z (z >= 0), a_- z (z < 0); kink at 0
    act = activation(name)
    assert act.scale_invariant == slopes
    assert act.kinks == (0.0,)
    z = np.array([-3.0, -0.5, 0.5, 2.0])
    assert np.array_equal(act(z), np.where(z >= 0, slopes[0] * z, slopes[1] * z))
    # piecewise derivative: a_+ / a_- away from 0, the delta function is excluded
    assert np.array_equal(act.derivative(z, 1), np.where(z >= 0, slopes[0], slopes[1]))
    assert np.array_equal(act.derivative(z, 2), np.zeros(4))


@pytest.mark.parametrize("name", sorted(set(MP_SMOOTH) - {"linear", "linear:2.5"}))
def test_smooth_activations_are_not_scale_invariant(name):
    # footnote 8 (L3284-L3288): only the scale_invariant family (and linear) is scale invariant
    act = activation(name)
    assert act.scale_invariant is None
    assert act.kinks == ()


def test_linear_is_smooth_and_scale_invariant():
    # sigma(z) = 2.5 z: a_+ = a_- = 2.5, no kink, polynomial of degree 1
    act = activation("linear:2.5")
    assert act.scale_invariant == (2.5, 2.5)
    assert act.kinks == ()
    assert act.polynomial_degree == 1


def test_perceptron_and_sign_values():
    # (2.9) and footnote 7: Theta(z) with Theta(0) = 1 (spec/01 table), sign(z)
    z = np.array([-2.0, -1e-300, 0.0, 1e-300, 3.0])
    assert np.array_equal(activation("perceptron")(z), [0.0, 0.0, 1.0, 1.0, 1.0])
    assert np.array_equal(activation("sign")(z), [-1.0, -1.0, 0.0, 1.0, 1.0])
    for name in ("perceptron", "sign"):
        with pytest.raises(ValueError, match="delta function"):
            activation(name).derivative(z, 1)


def test_derivative_order_out_of_range_raises():
    act = activation("tanh")
    for order in (-1, 4):
        with pytest.raises(ValueError, match="0, 1, 2 or 3"):
            act.derivative(0.3, order)


# --------------------------------------------------------------------------------------------
# 2. derivatives


@pytest.mark.parametrize("name", sorted(MP_SMOOTH))
def test_derivatives_match_mpmath(name):
    # reference: mpmath.diff (30 digits) of the mpmath form of sigma written above
    act = activation(name)
    f = MP_SMOOTH[name]
    z = np.array(POINTS)
    for k in range(4):
        ref = _mp_derivs(f, POINTS, k)
        got = act.derivative(z, k)
        assert got.shape == z.shape and got.dtype == np.float64
        assert _close(got, ref, 1e-12), (name, k, got, ref)


@pytest.mark.parametrize("name", sorted(MP_SMOOTH))
def test_derivatives_match_torch_autograd(name):
    # reference: nested torch autograd of act.torch_fn (a second, independent path)
    act = activation(name)
    z = np.array(POINTS + [-30.0, 30.0])
    for k in (1, 2, 3):
        assert _close(act.derivative(z, k), _autograd(act.torch_fn, z, k), 1e-12), (name, k)


@pytest.mark.parametrize("name", sorted(MP_SMOOTH))
def test_derivatives_at_match_mpmath(name):
    # the joint evaluation (Activation.jet where the activation has one) against the same
    # mpmath.diff references, for every set of orders; without a jet it is derivative()
    act = activation(name)
    z = np.array(POINTS)
    refs = {k: _mp_derivs(MP_SMOOTH[name], POINTS, k) for k in range(4)}
    for orders in ([0, 1], [1, 3], [0, 1, 2, 3], [2]):
        got = act.derivatives_at(z, orders)
        assert sorted(got) == orders
        for k in orders:
            assert _close(got[k], refs[k], 1e-12), (name, orders, k)


def test_derivatives_at_without_jet_is_derivative():
    act = Activation.from_callable(lambda z: torch.tanh(z) + 0.1 * torch.sin(z))
    assert act.jet is None
    z = np.linspace(-2.0, 2.0, 7)
    got = act.derivatives_at(z, [3, 0])
    assert all(np.array_equal(got[k], act.derivative(z, k)) for k in (0, 3))


def test_derivative_accepts_scalars_and_arrays():
    # tanh'(0.5) = sech^2(0.5) (closed form)
    act = activation("tanh")
    assert float(act.derivative(0.5, 1)) == pytest.approx(1 / math.cosh(0.5) ** 2, rel=1e-15)
    z = np.linspace(-1, 1, 6).reshape(2, 3)
    assert act.derivative(z, 2).shape == (2, 3)


# --------------------------------------------------------------------------------------------
# 3. Taylor coefficients (5.80)


@pytest.mark.parametrize("name", sorted(SP_SMOOTH))
def test_taylor_coefficients_match_sympy(name):
    # reference: p! times the x^p coefficient of the sympy series of sigma at 0
    ref = _series_coefficients(SP_SMOOTH[name])
    taylor = activation(name).taylor
    assert taylor is not None and len(taylor) == 6
    np.testing.assert_allclose(taylor, ref, rtol=1e-10, atol=1e-10)


def test_tanh_taylor_book_values():
    # tanh z = z - z^3/3 + 2 z^5/15: sigma_1 = 1, sigma_3 = -2, sigma_5 = 16 (book §5.3.3)
    np.testing.assert_allclose(activation("tanh").taylor, [0, 1, 0, -2, 0, 16], atol=1e-12)


@pytest.mark.parametrize("name", KINKED_AT_ZERO)
def test_taylor_is_none_for_kink_at_zero(name):
    assert activation(name).taylor is None


# --------------------------------------------------------------------------------------------
# 4. user callables


def _mp_tanh_plus_sin(z):
    return mp.tanh(z) + mp.sin(z) / 10


def test_torch_callable_derivatives_and_taylor():
    act = Activation.from_callable(lambda z: torch.tanh(z) + 0.1 * torch.sin(z), name="ts")
    assert repr(act) == "Activation('ts')"
    assert act.kinks == () and act.scale_invariant is None
    z = np.array(POINTS)
    for k in range(4):
        # reference: mpmath.diff of tanh z + sin(z)/10
        ref = _mp_derivs(_mp_tanh_plus_sin, POINTS, k)
        assert _close(act.derivative(z, k), ref, 1e-12), k
    # reference: sympy series of tanh x + sin(x)/10 -> (0, 1.1, 0, -2.1, 0, 16.1)
    ref = _series_coefficients(sp.tanh(_X) + sp.sin(_X) / 10)
    np.testing.assert_allclose(act.taylor, ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ref, [0, 1.1, 0, -2.1, 0, 16.1], atol=1e-14)


def _tanh_closed_forms(z: np.ndarray) -> list[np.ndarray]:
    """tanh and its derivatives in sinh/cosh form (standard calculus)."""
    c, s = np.cosh(z), np.sinh(z)
    return [np.tanh(z), 1 / c**2, -2 * s / c**3, (4 * s**2 - 2) / c**4]


def test_numpy_complex_callable_uses_cauchy_derivatives():
    act = Activation.from_callable(np.tanh, name="np_tanh")
    z = np.linspace(-5, 5, 41)
    ref = _tanh_closed_forms(z)
    for k in range(4):
        np.testing.assert_allclose(act.derivative(z, k), ref[k], rtol=0, atol=1e-11)
    # Taylor coefficients by Cauchy's formula: 0, 1, 0, -2, 0, 16 (series of tanh)
    np.testing.assert_allclose(act.taylor, [0, 1, 0, -2, 0, 16], atol=1e-10)
    # the torch form built from the numpy callable differentiates to order 3
    for k in (1, 2, 3):
        np.testing.assert_allclose(_autograd(act.torch_fn, z, k), ref[k], atol=1e-11)


def test_derivatives_argument_overrides_autodiff():
    # the override is used verbatim (a deliberately "wrong" constant shows which path is used)
    act = Activation.from_callable(
        lambda z: torch.tanh(z), derivatives=(lambda z: np.full_like(z, 7.0),)
    )
    z = np.array([-1.0, 0.0, 2.0])
    assert np.array_equal(act.derivative(z, 1), [7.0, 7.0, 7.0])
    # orders not given are still differentiated automatically (closed form of tanh'')
    np.testing.assert_allclose(act.derivative(z, 2), _tanh_closed_forms(z)[2], atol=1e-14)
    # numpy callable: override of sigma', Cauchy for sigma''
    act = Activation.from_callable(np.tanh, derivatives=(lambda z: 1 / np.cosh(z) ** 2,))
    assert np.array_equal(act.derivative(z, 1), 1 / np.cosh(z) ** 2)
    np.testing.assert_allclose(act.derivative(z, 2), _tanh_closed_forms(z)[2], atol=1e-11)


def test_numpy_kinked_callable_with_derivatives():
    # sigma = max(z, 0)^2 with hand-given piecewise derivatives 2 max(z,0), 2 Theta(z), 0
    act = Activation.from_callable(
        lambda z: np.maximum(z, 0.0) ** 2,
        name="relu2",
        kinks=(0.0,),
        derivatives=(
            lambda z: 2 * np.maximum(z, 0.0),
            lambda z: 2.0 * (z > 0),
            lambda z: 0.0 * z,
        ),
    )
    assert act.kinks == (0.0,) and act.taylor is None and act.scale_invariant is None
    z = np.array([-1.5, -0.2, 0.3, 2.0])
    assert np.array_equal(act.derivative(z, 1), [0.0, 0.0, 0.6, 4.0])
    assert np.array_equal(act.derivative(z, 2), [0.0, 0.0, 2.0, 2.0])
    # torch form: autograd reproduces the given derivatives (values computed by hand above)
    assert np.array_equal(act.torch_fn(torch.tensor(z)).numpy(), [0.0, 0.0, 0.09, 4.0])
    np.testing.assert_allclose(_autograd(act.torch_fn, z, 1), [0.0, 0.0, 0.6, 4.0])
    np.testing.assert_allclose(_autograd(act.torch_fn, z, 2), [0.0, 0.0, 2.0, 2.0])


@pytest.mark.parametrize(
    ("fn", "kinks"),
    [
        (lambda z: np.where(z > 0, z, 0.1 * z), (0.0,)),
        (lambda z: np.clip(z, -1.0, 1.0), (-1.0, 1.0)),
        (lambda z: np.maximum(z, 0.0), (0.0,)),
        (np.abs, ()),
    ],
)
def test_numpy_kinked_callable_without_derivatives_raises(fn, kinks):
    with pytest.raises(ValueError, match=r"derivatives=\(d1, d2, d3\)") as info:
        Activation.from_callable(fn, kinks=kinks, name="kinky")
    msg = str(info.value)
    assert "'kinky'" in msg and "torch" in msg


def _relu_derivatives_ok(act: Activation) -> bool:
    z = np.array([-0.2, -0.1, 0.1, 0.2])
    return np.array_equal(act.derivative(z, 1), [0.0, 0.0, 1.0, 1.0]) and np.array_equal(
        act.derivative(z, 2), np.zeros(4)
    )


def test_numpy_maximum_callable_is_rejected_or_exact():
    # expected: either a ValueError (numpy kinked callable without derivatives) or the exact
    # piecewise derivatives of max(z, 0): 1 for z > 0, 0 for z < 0, sigma'' = 0 away from 0
    try:
        act = Activation.from_callable(lambda z: np.maximum(z, 0.0))
    except ValueError:
        return
    assert _relu_derivatives_ok(act)


@pytest.mark.parametrize(
    "fn",
    [
        lambda z: torch.cumsum(z, 0),
        lambda z: torch.softmax(z, 0),
        lambda z: z - np.mean(z),
        lambda z: np.sort(z)[::-1],
    ],
)
def test_non_elementwise_callable_raises(fn):
    with pytest.raises(ValueError, match="elementwise"):
        Activation.from_callable(fn)


def test_callable_with_bad_scale_raises():
    with pytest.raises(ValueError, match="scale"):
        Activation.from_callable(torch.tanh, scale=0.0)


def test_torch_scale_invariant_callable_is_detected():
    # leaky ReLU with a_- = 0.2 written with torch.where: (2.13) with (a_+, a_-) = (1, 0.2)
    act = Activation.from_callable(lambda z: torch.where(z > 0, z, 0.2 * z))
    assert act.scale_invariant == (1.0, 0.2)
    assert act.kinks == (0.0,)
    assert act.taylor is None
    assert math.isinf(act.scale)
    z = np.array([-2.0, -0.5, 0.5, 3.0])
    assert np.array_equal(act.derivative(z, 1), [0.2, 0.2, 1.0, 1.0])


def test_torch_smooth_callable_is_not_scale_invariant():
    act = Activation.from_callable(lambda z: torch.tanh(z) + 0.1 * torch.sin(z))
    assert act.scale_invariant is None and act.kinks == ()


_PIECEWISE_LINEAR_TORCH = {
    "hardtanh": (lambda z: torch.clamp(z, -1.0, 1.0), (-1.0, 1.0)),
    "leaky": (lambda z: torch.where(z > 0, z, 0.2 * z), ()),
    "linear2": (lambda z: 2.0 * z, ()),
}


@pytest.mark.parametrize("key", sorted(_PIECEWISE_LINEAR_TORCH))
def test_torch_piecewise_linear_second_derivative(key):
    fn, kinks = _PIECEWISE_LINEAR_TORCH[key]
    act = Activation.from_callable(fn, kinks=kinks)
    z = np.array([-2.0, -0.5, 0.5, 2.0])  # away from the kinks: sigma'' = sigma''' = 0
    assert np.array_equal(act.derivative(z, 2), np.zeros(4))
    assert np.array_equal(act.derivative(z, 3), np.zeros(4))


def test_torch_hardtanh_first_derivative_and_taylor():
    # hard tanh = clamp(z, -1, 1): sigma' = 1 on (-1, 1), 0 outside; smooth at 0 so the Taylor
    # coefficients exist: (0, 1, 0, 0, 0, 0)
    act = Activation.from_callable(lambda z: torch.clamp(z, -1.0, 1.0), kinks=(-1.0, 1.0))
    assert act.kinks == (-1.0, 1.0) and act.scale_invariant is None
    z = np.array([-2.0, -0.5, 0.5, 2.0])
    assert np.array_equal(act.derivative(z, 1), [0.0, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(act.taylor, [0, 1, 0, 0, 0, 0], atol=0)


def test_cauchy_derivatives_respect_scale():
    a = 8.0
    act = Activation.from_callable(lambda z: np.tanh(a * z), scale=math.pi / (2 * a))
    z = np.linspace(-1, 1, 21)
    # closed form of the chain rule: a^k tanh^{(k)}(a z)
    ref = _tanh_closed_forms(a * z)
    for k in (1, 2):
        scale = np.max(np.abs(ref[k])) * a**k
        assert np.max(np.abs(act.derivative(z, k) - a**k * ref[k])) <= 1e-8 * scale


def test_cauchy_taylor_respects_scale():
    # reference: series of tanh(4x): 4 x - 64 x^3/3 + 2048 x^5/15 -> (0, 4, 0, -128, 0, 16384)
    act = Activation.from_callable(lambda z: np.tanh(4.0 * z), scale=math.pi / 8)
    ref = _series_coefficients(sp.tanh(4 * _X))
    np.testing.assert_allclose(act.taylor, ref, rtol=1e-9, atol=1e-9)


# --------------------------------------------------------------------------------------------
# 5. require_smooth


@pytest.mark.parametrize("name", ["relu", "leaky_relu:0.1", "scale_invariant:1,-0.5"])
def test_require_smooth_kinked(name):
    act = activation(name)
    act.require_smooth(0, "the kernel")
    act.require_smooth(1, "the NTK")  # sigma' is an ordinary (step) function
    for order in (2, 3):
        with pytest.raises(ValueError, match="delta function") as info:
            act.require_smooth(order, "the dNTK")
        msg = str(info.value)
        assert "the dNTK" in msg and "kink" in msg and name in msg


@pytest.mark.parametrize("name", ["perceptron", "sign"])
def test_require_smooth_step(name):
    act = activation(name)
    act.require_smooth(0, "the kernel")
    with pytest.raises(ValueError, match="delta function") as info:
        act.require_smooth(1, "the NTK")
    assert "the NTK" in str(info.value) and name in str(info.value)


@pytest.mark.parametrize("name", sorted(MP_SMOOTH))
def test_require_smooth_never_raises_for_smooth(name):
    act = activation(name)
    for order in range(4):
        act.require_smooth(order, "anything")


def test_require_smooth_user_hardtanh():
    act = Activation.from_callable(lambda z: torch.clamp(z, -1.0, 1.0), kinks=(-1.0, 1.0))
    act.require_smooth(1, "the NTK")
    with pytest.raises(ValueError, match="kink at -1, 1"):
        act.require_smooth(2, "the dNTK")


# --------------------------------------------------------------------------------------------
# 6. torch form agrees with the numpy form

GRID = np.concatenate([np.linspace(-50.0, 50.0, 401), [-1e-300, 0.0, 1e-300, -100.0, 100.0]])


@pytest.mark.parametrize("name", ALL_NAMES)
def test_torch_fn_matches_numpy(name):
    # reference: the numpy form sigma(z); both are float64 evaluations of the same formula
    act = activation(name)
    t = act.torch_fn(torch.tensor(GRID, dtype=torch.float64))
    assert t.dtype == torch.float64
    n = act(GRID)
    assert n.dtype == np.float64 and np.all(np.isfinite(n))
    assert _close(t.numpy(), n, 1e-14), name


def test_softplus_large_argument():
    # softplus(z) = z + log1p(exp(-z)) -> 50 + 1.9e-22 and exp(-50) = 1.93e-22 at z = -50
    act = activation("softplus")
    t = act.torch_fn(torch.tensor([-50.0, 50.0], dtype=torch.float64)).numpy()
    n = act(np.array([-50.0, 50.0]))
    with mp.workdps(MP_DPS):
        ref = [float(_mp_softplus(mp.mpf(-50))), float(_mp_softplus(mp.mpf(50)))]
    np.testing.assert_allclose(n, ref, rtol=1e-15)
    np.testing.assert_allclose(t, ref, rtol=1e-15)


def test_taylor_data_inside_no_grad():
    """Regression: Taylor coefficients by autograd must not vanish under torch.no_grad()
    (a fresh activation, so no cached value is reused).  tanh: 1, -2 at orders 1, 3."""
    act = Activation.from_callable(torch.tanh, name="tanh_no_grad")
    with torch.no_grad():
        c = act.taylor
        d1 = act.derivative(np.array([0.0]), 1)
    assert c[1] == pytest.approx(1.0) and c[3] == pytest.approx(-2.0)
    assert d1[0] == pytest.approx(1.0)


def test_lookup_by_name_returns_one_object_until_reregistered():
    # one object per (name, parameters), so the caches keyed on it serve every lookup
    assert activation("tanh") is activation(" TANH ")
    assert activation("leaky_relu:0.1") is activation("leaky_relu:0.1")
    assert activation("leaky_relu:0.1") is not activation("leaky_relu:0.2")
    first = activation("relu")
    register_activation("pdlt_test_cached", lambda: first)
    assert activation("pdlt_test_cached") is first
    other = activation("tanh")
    register_activation("pdlt_test_cached", lambda: other)
    assert activation("pdlt_test_cached") is other
