"""Network and Inputs: validation, defaults, conventions (spec/01 §0.3)."""

import numpy as np
import pytest

from pdlt import Inputs, Network
from pdlt.network import as_inputs


def test_critical_default_and_repr():
    # ReLU's critical point (C_b, C_W) = (0, 2) is the Kaiming initialization (5.67)
    net = Network("relu", depth=3, width=64)
    assert np.all(net.C_b == 0) and np.all(net.C_W == 2.0)
    assert net.widths == (None, 64, 64, 1)
    assert net.depth == 3 and net.hidden_widths == (64, 64)
    assert repr(net) == (
        "Network('relu', widths=(None, 64, 64, 1), C_b=0, C_W=2, lambda_b=1, lambda_W=1)"
    )


def test_per_layer_hyperparameters():
    net = Network("tanh", widths=[3, 10, 20, 2], C_b=[0.1, 0.2, 0.3], C_W=1.5)
    assert net.C_b.tolist() == [0.1, 0.2, 0.3]
    assert net.C_W.tolist() == [1.5, 1.5, 1.5]
    # parameter count (2.7): sum_l n_l + n_l n_{l-1}
    assert net.num_params == (10 + 30) + (20 + 200) + (2 + 40)
    assert net.aspect_ratio == pytest.approx(3 / 15)
    with pytest.raises(ValueError, match="read-only"):
        net.C_b[0] = 5.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"activation": "tanh", "depth": 0}, "depth must be an integer >= 1"),
        ({"activation": "tanh", "depth": 2, "width": 0}, "width must be a positive integer"),
        ({"activation": "tanh", "depth": 2, "C_b": -1.0, "C_W": 1.0}, "C_b must be non-negative"),
        ({"activation": "tanh", "depth": 2, "C_b": 0.0, "C_W": 0.0}, "C_W must be positive"),
        ({"activation": "tanh", "depth": 2, "C_b": 0.0, "C_W": float("nan")}, "finite"),
        ({"activation": "tanh", "depth": 2, "C_b": [0.0], "C_W": 1.0}, "one per layer"),
        ({"activation": "tanh", "depth": 2, "C_b": 0.0}, "give both C_b and C_W"),
        ({"activation": "nope", "depth": 2}, "unknown activation 'nope'; allowed:"),
        ({"activation": "sigmoid", "depth": 2}, "no critical initialization"),
        ({"activation": "tanh", "depth": 2, "lambda_W": -1.0}, "lambda_W must be non-negative"),
        ({"activation": "tanh", "depth": 2, "weight_dist": "cauchy"}, "weight_dist"),
        ({"activation": "tanh", "widths": [3]}, "at least two entries"),
        ({"activation": "tanh", "widths": [3, 2.5, 1]}, "positive integer"),
    ],
)
def test_invalid_networks(kwargs, match):
    act = kwargs.pop("activation")
    with pytest.raises(ValueError, match=match):
        Network(act, **kwargs)


def test_replace_and_equality():
    net = Network("tanh", depth=4, width=32)
    wider = net.replace(width=128)
    assert wider.hidden_widths == (128, 128, 128)
    assert wider.C_W.tolist() == net.C_W.tolist()
    assert net.replace(depth=6).depth == 6
    assert net == Network("tanh", depth=4, width=32)
    per_layer = Network("tanh", depth=2, C_b=[0.0, 0.1], C_W=1.0)
    with pytest.raises(ValueError, match="per-layer C_b"):
        per_layer.replace(depth=3)


def test_inputs_gram_and_k1():
    x = np.array([[1.0, 2.0], [3.0, -1.0]])
    inp = Inputs(x)
    # normalized Gram matrix (3.9): X_ab = x_a . x_b / n_0
    assert np.allclose(inp.gram, [[2.5, 0.5], [0.5, 5.0]])
    net = Network("tanh", depth=2, C_b=0.5, C_W=2.0)
    one = Inputs.from_k1(1.5, net)
    # K^(1) = C_b + C_W X = 1.5  =>  X = 0.5
    assert one.gram[0, 0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="smaller than C_b"):
        Inputs.from_k1(0.1, net)
    with pytest.raises(ValueError, match="exactly one of inputs"):
        as_inputs(net)
    with pytest.raises(ValueError, match="NaN"):
        Inputs(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="dimension"):
        as_inputs(Network("tanh", depth=2, n_in=3), x)
