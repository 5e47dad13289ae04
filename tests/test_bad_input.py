"""Malformed and hostile input, everywhere (issue 12, items 4 and 5).

The command line answers every bad input with exit status 2 and exactly one line on stderr,
``pdlt: error: ...`` -- no traceback, no hang, no partial ``--out`` file.  The Python API raises
ValueError or TypeError with a message that says what is wrong and what is allowed.  Requests
too large for memory are refused up front, with the estimate.
"""

import math
import warnings

import numpy as np
import pytest
import torch

import pdlt
from pdlt import activations, gaussian
from pdlt.activations import Activation
from pdlt.cli import main
from pdlt.compare import compare
from pdlt.empirical import estimators
from pdlt.theory.flow import available_memory, estimate_work
from pdlt.theory.learning_rates import equivalence_principle

FLOW = ["flow", "--activation", "tanh", "--depth", "3"]
PREDICT = ["predict", "--activation", "tanh", "--depth", "2"]


def cli_error(capsys, argv):
    """Run the CLI on ``argv``; check the one-line error contract and return the message.

    A warning would be a second line on stderr outside pytest (which captures warnings), so
    none may be issued.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert not caught, [str(w.message) for w in caught]
    assert code == 2, (code, out, err)
    assert out == ""
    assert err.startswith("pdlt: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.fixture
def files(tmp_path):
    """Malformed input files, by name."""
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "ragged.csv").write_text("1,2\n3\n")
    (tmp_path / "text.csv").write_text("a,b\n1,2\n")
    (tmp_path / "inf.csv").write_text("1,inf\n2,3\n")
    (tmp_path / "nan.csv").write_text("1,2\nnan,3\n")
    (tmp_path / "two.csv").write_text("1,2\n3,4\n")
    (tmp_path / "inputs.txt.gz").write_bytes(b"\x1f\x8b")
    (tmp_path / "garbage.npy").write_bytes(b"not a numpy file")
    np.save(tmp_path / "empty.npy", np.zeros((0, 3)))
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    np.save(tmp_path / "strings.npy", np.array([["a", "b"]]))
    np.save(tmp_path / "complex.npy", np.array([[1 + 1j, 2.0]]))
    np.save(tmp_path / "huge.npy", np.full((2, 3), 1e200))
    np.save(tmp_path / "good.npy", np.random.default_rng(0).normal(size=(3, 4)))
    (tmp_path / "dir.npy").mkdir()
    return tmp_path


# --------------------------------------------------------------------------------------------
# Command line: arguments
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "required"),
        (["flow", "--activation", "tanh", "--depth", "three"], "positive integer"),
        (["flow", "--activation", "tanh", "--depth", "0"], "positive integer"),
        (["flow", "--activation", "tanh", "--depth", "2.5"], "positive integer"),
        (["flow", "--activation", "tanh", "--depth", "99999999999"], "depth must be an integer"),
        ([*FLOW, "--width", "0"], "positive integer"),
        ([*FLOW, "--width", "nan"], "positive integer"),
        ([*FLOW, "--n-out", "-1"], "positive integer"),
        ([*FLOW, "--k1", "nan"], "finite"),
        ([*FLOW, "--k1", "inf"], "finite"),
        ([*FLOW, "--k1", "-1"], "smaller than C_b"),
        ([*FLOW, "--k1", "one"], "invalid float"),
        ([*FLOW, "--C-b", "nan", "--C-W", "1"], "finite"),
        ([*FLOW, "--C-b", "0", "--C-W", "inf"], "finite"),
        ([*FLOW, "--C-b", "0", "--C-W", "0"], "C_W must be positive"),
        ([*FLOW, "--C-b", "0", "--C-W", "-2"], "C_W must be positive"),
        ([*FLOW, "--C-b", "0,1", "--C-W", "1"], "one per layer"),
        ([*FLOW, "--lambda-b=-inf"], "finite"),
        ([*FLOW, "--lambda-W", "-1"], "non-negative"),
        (["flow", "--activation", "nope", "--depth", "3"], "allowed: "),
        (["flow", "--activation", "", "--depth", "3"], "allowed: "),
        (["flow", "--activation", "leaky_relu:nan", "--depth", "3"], "finite"),
        (["flow", "--activation", "leaky_relu:x", "--depth", "3"], "expected leaky_relu"),
        (["flow", "--activation", "leaky_relu:1,2,3", "--depth", "3"], "wrong number"),
        (["flow", "--activation", "monomial:0.5", "--depth", "3"], "integer >= 1"),
        ([*FLOW, "--fields", "K,Zed"], "available: K"),
        ([*FLOW, "--fields", "K_gamma"], "two inputs"),
        (["flow", "--activation", "relu", "--depth", "3", "--width", "8", "--fields", "R"], "kink"),
        (["criticality", "scale_invariant:1"], "wrong number"),
        (["criticality", "leaky_relu:inf"], "finite"),
        (["learning-rates", "--activation", "tanh", "--depth", "3", "--lambda-b", "nan"], "finite"),
        (["learning-rates", "--activation", "tanh", "--depth", "3", "--lambda-W", "inf"], "finite"),
        (["learning-rates", "--activation", "tanh", "--depth", "3", "--lambda-W", "-1"], ">= 0"),
        (["learning-rates", "--activation", "sigmoid", "--depth", "3"], "K*=0 classes"),
        (["measure", "--activation", "tanh", "--depth", "3"], "finite --width"),
        (
            ["measure", "--activation", "tanh", "--depth", "3", "--width", "4", "--ensemble", "0"],
            "positive",
        ),
        (
            ["measure", "--activation", "tanh", "--depth", "3", "--width", "4", "--fields", "Zed"],
            "measurable fields",
        ),
        (
            ["measure", "--activation", "tanh", "--depth", "2", "--width", "4"]
            + ["--checkpoint-every", "nan"],
            "seconds",
        ),
        ([*PREDICT, "--noise", "nan", "--method", "bayes"], "finite"),
        ([*PREDICT, "--noise", "-1", "--method", "bayes"], ">= 0"),
        ([*PREDICT, "--eta", "nan"], "finite"),
        ([*PREDICT, "--eta", "0"], "> 0"),
        ([*PREDICT, "--steps", "-3"], ">= 0"),
        ([*PREDICT, "--ensemble", "3"], "--width"),
        ([*PREDICT, "--k1", "1"], "--train and --test"),
    ],
)
def test_cli_bad_arguments(capsys, argv, message):
    assert message in cli_error(capsys, argv)


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing.npy", "does not exist"),
        ("dir.npy", "does not exist"),
        ("inputs.txt.gz", ".npy or .csv"),
        ("garbage.npy", "cannot read inputs"),
        ("ragged.csv", "cannot read inputs"),
        ("text.csv", "cannot read inputs"),
        ("inf.csv", "NaN or infinite"),
        ("nan.csv", "NaN or infinite"),
        ("empty.npy", "N, n_0 >= 1"),
        ("cube.npy", "2-D table"),
        ("strings.npy", "numbers"),
        ("huge.npy", "too large"),
        ("empty.csv", "N, n_0 >= 1"),
        ("complex.npy", "real numbers"),
    ],
)
def test_cli_bad_input_files(capsys, files, name, message):
    assert message in cli_error(capsys, [*FLOW, "--inputs", files / name])


@pytest.mark.parametrize(
    "train, test, message",
    [
        ("ragged.csv", "good.npy", "cannot read --train"),
        ("inf.csv", "good.npy", "NaN or infinite"),
        ("good.npy", "strings.npy", "numbers"),
        ("good.npy", "cube.npy", "2-D table"),
        ("good.npy", "two.csv", "needs 3 input columns"),
        ("missing.csv", "good.npy", "does not exist"),
        ("empty.csv", "good.npy", "non-empty"),
    ],
)
def test_cli_predict_bad_data_leaves_no_out_file(capsys, files, train, test, message):
    out = files / "result.json"
    before = set(files.iterdir())
    argv = [*PREDICT, "--train", files / train, "--test", files / test, "--out", out]
    assert message in cli_error(capsys, argv)
    assert not out.exists()
    assert set(files.iterdir()) == before  # no temporary file left behind either


@pytest.mark.parametrize(
    "out, message",
    [("result.txt", ".json or .csv"), ("nodir/result.json", "does not exist"), ("dir.npy", "")],
)
def test_cli_predict_bad_out_path(capsys, files, out, message):
    argv = [*PREDICT, "--train", files / "good.npy", "--test", files / "good.npy"]
    before = set(files.iterdir())
    assert message in cli_error(capsys, [*argv, "--out", files / out])
    assert set(files.iterdir()) == before


def test_cli_activation_that_raises(capsys, monkeypatch):
    def boom(z):
        if z.numel() > 50:  # passes the construction checks, fails inside the quadrature
            raise RuntimeError("boom")
        return torch.tanh(z)

    monkeypatch.setitem(
        activations._REGISTRY, "boom", lambda: Activation.from_callable(boom, name="boom")
    )
    monkeypatch.setitem(activations._REGISTRY, "broken", lambda: 1 / 0)
    argv = ["flow", "--activation", "boom", "--depth", "3", "--C-b", "0", "--C-W", "1"]
    assert "raised RuntimeError: boom" in cli_error(capsys, argv)
    assert "ZeroDivisionError" in cli_error(capsys, ["criticality", "broken"])


def test_cli_refuses_a_flow_too_big_for_memory(capsys, files, monkeypatch):
    monkeypatch.setenv("PDLT_MAX_MEMORY", "1e6")
    argv = [*FLOW, "--width", "100", "--inputs", files / "good.npy", "--fields", "V"]
    err = cli_error(capsys, argv)
    assert "needs about" in err and "PDLT_MAX_MEMORY" in err and "977 KiB" in err


@pytest.mark.parametrize("option, value", [("--k", "nan"), ("--truncation", "-1")])
def test_cli_compare_checks_tolerances_first(capsys, monkeypatch, option, value):
    def no_measuring(*args, **kwargs):
        raise AssertionError("the ensemble was measured before the options were checked")

    monkeypatch.setattr(estimators, "measure", no_measuring)
    argv = ["compare", "--activation", "tanh", "--depth", "2", "--width", "4", "--ensemble", "2"]
    assert option.strip("-") in cli_error(capsys, [*argv, option, value])


HUGE = ["--activation", "tanh", "--depth", "3", "--width", "10000000", "--ensemble", "2"]
HUGE_REASON = (
    "an ensemble too big for memory (2 x 10^7 x 10^7 weights = 1.6 PB) reaches torch's allocator, "
    "whose RuntimeError escapes as a traceback; wanted: an estimate and a refusal up front"
)


def test_cli_measure_refuses_an_ensemble_too_big_for_memory(capsys):
    assert "memory" in cli_error(capsys, ["measure", *HUGE, "--fields", "K"])


def test_measure_refuses_an_ensemble_too_big_for_memory():
    with pytest.raises(ValueError, match="memory"):
        pdlt.measure(pdlt.Network("tanh", depth=3, width=10**7), k1=1.0, size=2, fields=("K",))


# --------------------------------------------------------------------------------------------
# Python API: Network and Inputs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"depth": "3"}, TypeError, "depth must be an integer"),
        ({"depth": True}, TypeError, "depth must be an integer"),
        ({"depth": 0}, ValueError, "integer >= 1"),
        ({"depth": -2}, ValueError, "integer >= 1"),
        ({"depth": 2.5}, ValueError, "integer"),
        ({"depth": math.nan}, ValueError, "integer"),
        ({"depth": math.inf}, ValueError, "integer"),
        ({"depth": 10**12}, ValueError, "at most 1,000,000"),
        ({"depth": None}, ValueError, "give depth"),
        ({"depth": 3, "width": 0}, ValueError, "positive integer"),
        ({"depth": 3, "width": -math.inf}, ValueError, "integer"),
        ({"depth": 3, "width": math.nan}, ValueError, "integer"),
        ({"depth": 3, "width": "64"}, TypeError, "width must be a positive integer"),
        ({"depth": 3, "width": 2.5}, ValueError, "integer"),
        ({"depth": 3, "n_out": None}, ValueError, "n_out must be a positive integer"),
        ({"widths": []}, ValueError, "n_0, ..., n_L"),
        ({"widths": [4]}, ValueError, "n_0, ..., n_L"),
        ({"widths": "abc"}, TypeError, "sequence of integers"),
        ({"widths": [3, 0, 1]}, ValueError, "n_1 (hidden width)"),
        ({"depth": 3, "C_b": 0.0}, ValueError, "give both"),
        ({"depth": 3, "C_b": math.nan, "C_W": 1.0}, ValueError, "C_b must be finite"),
        ({"depth": 3, "C_b": 0.0, "C_W": 0.0}, ValueError, "C_W must be positive"),
        ({"depth": 3, "C_b": -1.0, "C_W": 1.0}, ValueError, "C_b must be non-negative"),
        ({"depth": 3, "C_b": [0, 0], "C_W": 1.0}, ValueError, "one per layer"),
        ({"depth": 3, "C_b": "x", "C_W": 1.0}, ValueError, "could not convert"),
        ({"depth": 3, "lambda_W": -1.0}, ValueError, "lambda_W must be non-negative"),
        ({"depth": 3, "lambda_b": math.inf}, ValueError, "lambda_b must be finite"),
        ({"depth": 3, "C_W1": math.nan}, ValueError, "C_W1 must be a finite"),
        ({"depth": 3, "weight_dist": "cauchy"}, ValueError, "'gaussian' or 'uniform'"),
    ],
)
def test_network_rejects(kwargs, error, message):
    with pytest.raises(error, match=None) as info:
        pdlt.Network("tanh", **kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "x, error, message",
    [
        (np.array([[1 + 1j, 2.0]]), TypeError, "real numbers"),
        (np.array([["a", "b"]]), TypeError, "real numbers"),
        ([[1.0, 2.0], [3.0]], ValueError, "rows differ"),
        (np.zeros((0, 3)), ValueError, "N, n_0 >= 1"),
        (np.zeros((2, 2, 2)), ValueError, "shape (N, n_0)"),
        (np.array([[1.0, np.nan]]), ValueError, "NaN or infinite"),
        (np.array([[1.0, -np.inf]]), ValueError, "NaN or infinite"),
        (np.full((2, 2), 1e200), ValueError, "too large"),
    ],
)
def test_inputs_reject(x, error, message):
    with pytest.raises(error) as info:
        pdlt.Inputs(x)
    assert message in str(info.value)


# --------------------------------------------------------------------------------------------
# Python API: flow, its memory estimate, compare, learning rates
# --------------------------------------------------------------------------------------------

NET = pdlt.Network("tanh", depth=3, width=50)
X = np.random.default_rng(1).normal(size=(3, 4))


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: pdlt.flow("tanh", k1=1.0), TypeError, "pdlt.Network"),
        (lambda: pdlt.flow(NET, k1=1.0, fields="K"), TypeError, "not a string"),
        (lambda: pdlt.flow(NET, k1=1.0, fields=()), ValueError, "no fields"),
        (lambda: pdlt.flow(NET, k1=1.0, fields=("K", "Zed")), ValueError, "'Zed'; available"),
        (lambda: pdlt.flow(NET), ValueError, "exactly one of inputs"),
        (lambda: pdlt.flow(NET, X, k1=1.0), ValueError, "exactly one of inputs"),
        (lambda: pdlt.flow(NET, k1=math.nan), ValueError, "finite"),
        (lambda: pdlt.flow(NET, k1=-1.0), ValueError, "smaller than C_b"),
        (lambda: pdlt.flow(NET.replace(n_in=5), X), ValueError, "n_in = 5"),
        (lambda: pdlt.flow(NET, X, fields=("K_gamma",)), ValueError, "two inputs"),
        (lambda: pdlt.flow(NET, X * np.nan), ValueError, "NaN"),
        (lambda: pdlt.flow(NET, [[1.0], [2.0, 3.0]]), ValueError, "rows differ"),
        (lambda: pdlt.flow(NET.replace(activation="relu"), X, fields=("S",)), ValueError, "kink"),
    ],
)
def test_flow_rejects(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value)


def test_work_estimate_counts_four_point_integrals_and_bytes():
    net = pdlt.Network("tanh", depth=10, width=100)
    small = estimate_work(net, np.eye(8), fields=("V",))
    assert small.integrals_4d == 9 * math.comb(8, 4)
    assert estimate_work(net, np.eye(8), fields=("K",)).integrals_4d == 0
    big = estimate_work(net, np.eye(60), fields=("P",))  # P brings Theta, B, F along
    assert set(big.fields) >= {"K", "Theta", "B", "F", "P", "Q"}
    assert big.bytes > 8 * 10 * 60**4 * 6  # at least the six stored (L, N, N, N, N) fields
    assert "GiB" in str(big) and "four-dimensional Gaussian integrals" in str(big)
    avail = available_memory()
    assert avail is None or avail > 0


def test_flow_refuses_what_does_not_fit_in_memory(monkeypatch):
    with pytest.raises(ValueError) as info:
        pdlt.flow(NET, X, fields=("V",), max_memory=1e6)
    msg = str(info.value)
    assert "needs about" in msg and "four-dimensional" in msg and "max_memory" in msg
    assert "\n" not in msg
    monkeypatch.setenv("PDLT_MAX_MEMORY", "1e6")
    with pytest.raises(ValueError, match="PDLT_MAX_MEMORY"):
        pdlt.flow(NET, k1=1.0)
    assert pdlt.flow(NET, k1=1.0, max_memory=math.inf)["K"].shape == (3, 1, 1)
    monkeypatch.setenv("PDLT_MAX_MEMORY", "lots")
    with pytest.raises(ValueError, match="number of bytes"):
        pdlt.flow(NET, k1=1.0)
    for bad in (0, -1.0, math.nan):
        with pytest.raises(ValueError, match="positive number of bytes"):
            pdlt.flow(NET, k1=1.0, max_memory=bad)


def test_flow_with_an_unaffordable_number_of_inputs_is_refused_at_once():
    x = np.random.default_rng(0).normal(size=(400, 2))  # 400^4 entries per layer: ~1e12 bytes
    with pytest.raises(ValueError, match="needs about .* TiB"):
        pdlt.flow(pdlt.Network("tanh", depth=4, width=100), x, fields=("V",))


def test_compare_rejects_bad_tolerances():
    theory = pdlt.flow(NET, k1=1.0, fields=("K",))
    for kw, name in (({"k": math.nan}, "k "), ({"k": 0}, "k "), ({"truncation": -1}, "trunc")):
        with pytest.raises(ValueError, match=name):
            compare(theory, theory, **kw)
    with pytest.raises(ValueError, match="truncation must be a finite"):
        compare(theory, theory, truncation=math.inf)


def test_compare_needs_the_same_layers():
    """A theory kept at some layers is compared with a measurement at the same layers only;
    at the same layers the rows are those layers'."""
    full = pdlt.flow(NET, k1=1.0, fields=("K",))
    last = pdlt.flow(NET, k1=1.0, fields=("K",), layers=[-1, 2])
    with pytest.raises(ValueError, match="same layers"):
        compare(last, full)
    rows = compare(last, last).rows
    assert [r.layer for r in rows] == [2, NET.depth] and all(r.ok for r in rows)


@pytest.mark.parametrize(
    "args, message",
    [
        (("tanh", 0), "depth must be an integer >= 1"),
        (("tanh", 2.5), "depth must be an integer >= 1"),
        (("tanh", 3, math.nan), "lambda_b must be a finite number >= 0"),
        (("tanh", 3, 1.0, -1.0), "lambda_W must be a finite number >= 0"),
        (("sigmoid", 3), "K*=0 classes"),
    ],
)
def test_learning_rates_reject(args, message):
    with pytest.raises(ValueError) as info:
        equivalence_principle(*args)
    assert message in str(info.value)


# --------------------------------------------------------------------------------------------
# Python API: the Gaussian engine and activations
# --------------------------------------------------------------------------------------------

TANH = pdlt.activation("tanh")


@pytest.mark.parametrize(
    "K, products, message",
    [
        ([[1.0, 2.0], [2.0, 1.0]], [[(0, 0), (1, 0)]], "not positive semidefinite"),
        ([[1.0, 0.5], [0.4, 1.0]], [[(0, 0), (1, 0)]], "symmetric"),
        ([[-1.0]], [[(0, 0)]], "negative variance"),
        ([[np.nan]], [[(0, 0)]], "NaN or infinite"),
        ([[np.inf]], [[(0, 0)]], "NaN or infinite"),
        ([1.0], [[(0, 0)]], "shape (..., d, d)"),
        (np.eye(5), [[(0, 0)]], "d = 1..4"),
        ([[1.0]], [], "at least one product"),
        ([[1.0]], [[(1, 0)]], "outside 0..0"),
        ([[1.0]], [[(0, 4)]], "outside -1..3"),
    ],
)
def test_moments_reject(K, products, message):
    with pytest.raises(ValueError) as info:
        gaussian.moments(TANH, K, products)
    assert message in str(info.value)


def test_moments_of_kinked_derivatives_and_bad_pairs():
    with pytest.raises(ValueError, match="delta function"):
        gaussian.moments(pdlt.activation("relu"), [[1.0]], [[(0, 2)]])
    with pytest.raises(ValueError, match="not positive semidefinite"):
        gaussian.pairwise_moments(TANH, np.array([[1.0, 2.0], [2.0, 1.0]]), [(0, 0)])
    with pytest.raises(ValueError, match="shape"):
        gaussian.pairwise_moments(TANH, np.ones(3), [(0, 0)])


def test_expect_with_a_bad_integrand():
    with pytest.raises(ValueError, match="expected"):
        gaussian.expect(lambda z: np.ones(3), [[1.0]])
    with pytest.raises((ValueError, FloatingPointError), match="not finite"):
        gaussian.expect(lambda z: np.full(z.shape[:-1], np.nan), [[1.0]])


def nan_beyond_three(z):
    return torch.where(z.abs() > 3, z * torch.nan, torch.tanh(z))


def raises_on_big_arrays(z):
    if z.numel() > 50:
        raise RuntimeError("boom")
    return torch.tanh(z)


@pytest.mark.parametrize(
    "fn, kwargs, error, message",
    [
        (3, {}, TypeError, "must be callable"),
        (lambda z: 1 / 0, {}, ValueError, "raised ZeroDivisionError"),
        (lambda z: z * torch.nan, {}, ValueError, "non-finite"),
        (lambda z: torch.cumsum(z, 0), {}, ValueError, "not elementwise"),
        (np.abs, {}, ValueError, "cannot differentiate"),
        (torch.tanh, {"scale": 0.0}, ValueError, "scale must be positive"),
        (torch.tanh, {"scale": math.nan}, ValueError, "scale must be positive"),
        (torch.tanh, {"kinks": [math.nan]}, ValueError, "kinks must be finite"),
        (torch.tanh, {"derivatives": [np.cos] * 4}, ValueError, "at most 3"),
    ],
)
def test_from_callable_rejects(fn, kwargs, error, message):
    with pytest.raises(error) as info:
        Activation.from_callable(fn, **kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "fn, message",
    [
        (nan_beyond_three, "is not finite at z = "),
        (raises_on_big_arrays, "raised RuntimeError: boom"),
    ],
)
def test_activation_failing_inside_the_theory(fn, message):
    act = Activation.from_callable(fn, name="hostile")
    net = pdlt.Network(act, depth=3, C_b=0.0, C_W=1.0)
    with pytest.raises(ValueError) as info:
        pdlt.flow(net, k1=4.0)
    assert message in str(info.value) and "'hostile'" in str(info.value)


@pytest.mark.parametrize(
    "spec, error, message",
    [
        ("nope", ValueError, "allowed: erf"),
        ("leaky_relu:a", ValueError, "expected leaky_relu[:a]"),
        ("leaky_relu:inf", ValueError, "finite"),
        ("scale_invariant:1", ValueError, "scale_invariant:a_plus,a_minus"),
        (None, ValueError, "a name or an Activation"),
        (3.0, ValueError, "a name or an Activation"),
    ],
)
def test_activation_lookup_rejects(spec, error, message):
    with pytest.raises(error) as info:
        pdlt.activation(spec)
    assert message in str(info.value)


def test_broken_registered_factories(monkeypatch):
    monkeypatch.setitem(activations._REGISTRY, "broken", lambda: 1 / 0)
    monkeypatch.setitem(activations._REGISTRY, "notone", lambda: "tanh")
    with pytest.raises(ValueError, match="could not be built: ZeroDivisionError"):
        pdlt.activation("broken")
    with pytest.raises(ValueError, match="returned str, not an Activation"):
        pdlt.activation("notone")
    with pytest.raises(ValueError, match="alphanumeric"):
        pdlt.register_activation("bad:name", lambda: TANH)
