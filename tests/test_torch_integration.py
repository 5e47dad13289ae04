"""pdlt.torch: critical initialization, learning-rate groups and reading torch MLPs.

The headline check (issue: "a torch MLP initialized by pdlt keeps its preactivation variance
stable over 50 layers"): width-256, depth-50 MLPs initialized by ``critical_init_`` are pushed
through with real torch, and the layer-by-layer preactivation second moment (averaged over
neurons, inputs and 32 networks) is compared with pdlt's own kernel recursion -- the
infinite-width kernel K^(l) (4.118) plus its 1/n correction G^{1}/n (the NLO metric, §4.3, §5.4) --
which never touches torch.  torch's default init (kaiming_uniform with a = sqrt(5), i.e.
C_W = 1/3, C_b = 1/(3 n_{l-1})) collapses onto its bias floor instead.
"""

from __future__ import annotations

import importlib
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import pdlt
from pdlt.theory.kernel import kernel_flow

pt = importlib.import_module("pdlt.torch")

pytestmark = pytest.mark.usefixtures("one_thread")

N0, WIDTH, DEPTH, BATCH, NETS = 32, 256, 50, 16, 32
ACTS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}


def _mlp(act: type[nn.Module], widths: list[int]) -> nn.Sequential:
    mods: list[nn.Module] = [nn.Linear(widths[0], widths[1])]
    for a, b in zip(widths[1:-1], widths[2:], strict=True):
        mods += [act(), nn.Linear(a, b)]
    return nn.Sequential(*mods)


def _deep(act: type[nn.Module]) -> nn.Sequential:
    # the last layer is as wide as the others, so that its variance is measured as well
    return _mlp(act, [N0] + [WIDTH] * DEPTH)


@torch.no_grad()
def _layer_variances(model: nn.Sequential, x: torch.Tensor) -> np.ndarray:
    """Mean over neurons and inputs of (z^(l))^2 after every Linear layer, shape (L,)."""
    out, h = [], x
    for m in model:
        h = m(h)
        if isinstance(m, nn.Linear):
            out.append(float((h.double() ** 2).mean()))
    return np.array(out)


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, N0, generator=g)
    return x * math.sqrt(N0) / x.norm(dim=1, keepdim=True)  # (1/n_0) sum_i x_i^2 = 1


@pytest.fixture(scope="module", params=list(ACTS))
def measured(request: pytest.FixtureRequest, inputs: torch.Tensor) -> dict:
    name = request.param
    torch.manual_seed(1)
    crit = np.array(
        [_layer_variances(pt.critical_init_(_deep(ACTS[name])), inputs) for _ in range(NETS)]
    )
    default = np.array([_layer_variances(_deep(ACTS[name]), inputs) for _ in range(NETS)])
    return {"name": name, "pdlt": crit, "default": default}


def _mean_se(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return samples.mean(0), samples.std(0, ddof=1) / math.sqrt(len(samples))


def test_critical_init_follows_kernel_recursion_over_50_layers(measured: dict) -> None:
    name = measured["name"]
    net = pdlt.Network(name, depth=DEPTH, width=WIDTH, n_in=N0, n_out=WIDTH)
    f = pdlt.flow(net, np.ones((1, N0)), fields=("K", "G1", "V"))
    metric = f.K[:, 0, 0] + f.G1[:, 0, 0] / WIDTH  # E[z^2] to order 1/n
    mean, se = _mean_se(measured["pdlt"])
    # Network-to-network spread of (1/n) sum_i z_i^2 is sqrt(V/n) (four-point vertex, §4);
    # its distribution is skewed at depth (ReLU, GELU: V/(nK^2) ~ 1 at l = 50), so a sample
    # of 32 can understate it: use the larger of the sample's and the theory's standard error.
    se = np.maximum(se, np.sqrt(f.V[:, 0, 0, 0, 0] / WIDTH / NETS))
    # band: 4 standard errors plus 3% for the O(1/n^2) remainder (r = L/n = 0.2)
    assert np.all(np.abs(mean - metric) <= 4 * se + 0.03 * metric), (mean - metric) / se
    if name == "tanh":
        # K*=0 class: K ~ 1/(2l), a slow power law, not a collapse (5.92); the leading-order
        # recursion alone is within 8% at every layer (the 1/n correction is -5.7% at l = 50)
        assert np.all(np.abs(mean / f.K[:, 0, 0] - 1) < 0.08)
        assert 0.009 < mean[-1] < 0.012 and 2 * DEPTH * mean[-1] > 0.9
    else:
        # scale-invariant: K^(l) = K^(1) exactly; half-stable GELU: K moves slowly towards K*;
        # within a factor 2 (the 32-network mean at l = 50 has a ~20% standard error)
        assert 0.5 < mean[-1] / mean[0] < 2.0


def test_torch_default_init_collapses(measured: dict) -> None:
    name = measured["name"]
    pdlt_mean, _ = _mean_se(measured["pdlt"])
    mean, se = _mean_se(measured["default"])
    # C_W = 1/3 < critical: exponential decay onto the bias fixed point (5.63)-ish
    assert np.min(mean / pdlt_mean) < 0.05
    if name != "tanh":  # (tanh's critical K itself decays as 1/(2l), to 0.0104 at l = 50)
        assert mean[-1] / pdlt_mean[-1] < 1e-2
        assert mean[-1] / mean[0] < 1e-2
    # and the same recursion predicts the collapse from the default's hyperparameters
    fan_in = np.array([N0] + [WIDTH] * (DEPTH - 1), dtype=float)
    K = kernel_flow(
        pdlt.activation(name), np.ones((1, 1)), 1.0 / (3 * fan_in), np.full(DEPTH, 1 / 3)
    )
    assert np.all(np.abs(mean - K[:, 0, 0]) <= 4 * se + 0.05 * K[:, 0, 0])


# ---- reading a Sequential: estimates of C_b, C_W ------------------------------------------


@pytest.mark.parametrize("dist, kurtosis", [("gaussian", 3.0), ("uniform", 9 / 5)])
def test_estimated_variances_within_standard_errors(dist: str, kurtosis: float) -> None:
    widths = [64, 128, 96, 3]
    model = _mlp(nn.Tanh, widths)
    g = torch.Generator().manual_seed(5)
    C_b, C_W = [0.3, 0.05, 1.2], [1.7, 0.6, 2.5]
    pt.init_(model, C_b=C_b, C_W=C_W, weight_dist=dist, generator=g)
    rep = pt.read_mlp(model)
    for ell in range(3):
        n_prev, n = widths[ell], widths[ell + 1]
        # SE of a mean of x^2 over N entries: sigma^2 sqrt((kurtosis - 1)/N)
        se_W = C_W[ell] * math.sqrt((kurtosis - 1) / (n_prev * n))
        se_b = C_b[ell] * math.sqrt((kurtosis - 1) / n)
        assert abs(rep.C_W[ell] - C_W[ell]) < 4 * se_W
        assert abs(rep.C_b[ell] - C_b[ell]) < 4 * se_b
        assert rep.C_W_se[ell] == pytest.approx(se_W, rel=0.3)
    assert rep.network.widths == tuple(widths)
    np.testing.assert_array_equal(rep.network.C_W, rep.C_W)


def test_torch_default_is_read_as_C_W_one_third() -> None:
    torch.manual_seed(2)
    model = _mlp(nn.ReLU, [128, 256, 256, 1])
    rep = pt.read_mlp(model)
    # kaiming_uniform(a=sqrt(5)): U(-1/sqrt(n), 1/sqrt(n)) -> C_W = 1/3; bias the same bound
    for ell, n_prev in enumerate([128, 256]):
        se = (1 / 3) * math.sqrt(0.8 / (n_prev * 256))
        assert abs(rep.C_W[ell] - 1 / 3) < 4 * se
        assert abs(rep.C_b[ell] - 1 / (3 * n_prev)) < 4 * math.sqrt(0.8 / 256) / (3 * n_prev)
    assert not rep.is_critical and not rep.layer_critical.any()
    assert rep.kernel_ratio < 0.05  # chi = C_W/2 = 1/6 per layer, on top of the bias floor
    pt.critical_init_(model)
    rep = pt.read_mlp(model)
    assert rep.is_critical and rep.kernel_ratio == pytest.approx(1.0, rel=0.3)


def test_report_fields_and_repr() -> None:
    torch.manual_seed(3)
    model = pt.critical_init_(_mlp(nn.Tanh, [10, 64, 64, 64, 2]))
    rep = pt.read_mlp(model)
    assert rep.activation == "tanh" and rep.universality_class == "K*=0"
    assert (rep.critical_C_b, rep.critical_C_W) == (0.0, 1.0)
    assert rep.depth == 4 and rep.aspect_ratio == 4 / 64
    assert rep.is_critical and np.all(rep.C_b == 0)
    text = repr(rep)
    for s in ("K*=0", "critical (C_b, C_W) = (0, 1)", "is_critical: True", "L/n = 0.0625"):
        assert s in text
    json.dumps(rep.to_dict())
    assert pt.to_network(model) == rep.network
    # a rescaled layer is caught, layer by layer
    with torch.no_grad():
        model[2].weight.mul_(1.5)
    rep = pt.read_mlp(model)
    assert not rep.is_critical and rep.layer_critical.tolist() == [True, False, True, True]


def test_read_non_critical_activation() -> None:
    torch.manual_seed(4)
    rep = pt.read_mlp(_mlp(nn.Sigmoid, [8, 32, 1]))
    assert rep.universality_class == "none" and rep.critical_C_W is None
    assert not rep.is_critical and rep.kernel_ratio is None
    assert "no critical initialization" in repr(rep) and "C_b < 0" in rep.reason


# ---- initialization ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module, name, C_W",
    [
        (nn.Tanh(), "tanh", 1.0),
        (nn.ReLU(), "relu", 2.0),
        (nn.LeakyReLU(0.2), "leaky_relu:0.2", 2 / 1.04),
        (nn.Identity(), "linear", 1.0),
        (nn.GELU(), "gelu", None),
        (nn.SiLU(), "swish", None),
    ],
)
def test_activation_modules(module: nn.Module, name: str, C_W: float | None) -> None:
    assert pt.activation_name(module) == name
    if C_W is None:
        C_W = pdlt.criticality(name).C_W
    model = nn.Sequential(nn.Linear(300, 300), module, nn.Linear(300, 1))
    pt.critical_init_(model, generator=torch.Generator().manual_seed(0))
    est = 300 * float((model[0].weight.detach().double() ** 2).mean())
    assert est == pytest.approx(C_W, rel=4 * math.sqrt(2 / 300**2))
    assert pt.read_mlp(model).is_critical


def test_init_is_reproducible_and_works_under_no_grad() -> None:
    a, b = _mlp(nn.GELU, [5, 40, 1]), _mlp(nn.GELU, [5, 40, 1])
    pt.critical_init_(a, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():  # criticality uses autograd internally (regression)
        pt.critical_init_(b, generator=torch.Generator().manual_seed(7))
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    assert pdlt.criticality("gelu").C_b > 0 and float(a[0].bias.detach().abs().min()) > 0


def test_custom_module_needs_activation() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(6, 50), nn.Linear(50, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x)))

    with pytest.raises(ValueError, match="cannot tell the activation"):
        pt.critical_init_(Net())
    net = pt.critical_init_(Net(), activation="relu")
    assert float(net.fc1.bias.detach().abs().max()) == 0.0
    with pytest.raises(ValueError, match="nn.Sequential"):
        pt.read_mlp(net)


# ---- learning rates ------------------------------------------------------------------------


def test_param_groups_equivalence_principle_exact() -> None:
    widths = [3, 7, 11, 13, 5, 2]
    L, eta = 5, 0.3
    model = _mlp(nn.Tanh, widths)
    groups = pt.param_groups(model, eta, lambda_b=2.0, lambda_W=0.5)
    lr = {g["name"]: g["lr"] for g in groups}
    for ell in range(1, L + 1):  # tanh: p_perp = 1, lambda_b = 2/l, lambda_W = 0.5 (9.96)
        assert lr[f"W{ell}"] == eta * 0.5 / widths[ell - 1]
        assert lr[f"b{ell}"] == eta * 2.0 / ell
    relu = pt.param_groups(_mlp(nn.ReLU, widths), eta)
    for g in relu:  # scale-invariant (9.94): lambda/L
        n = widths[g["layer"] - 1] if g["name"][0] == "W" else 1
        assert g["lr"] == eta * (1.0 / L) / n
    plain = pt.param_groups(model, eta, lambda_W=widths[:-1], depth_scaling=None)
    assert all(g["lr"] == eta for g in plain)  # lambda_b = 1, lambda_W = n_{l-1}: plain SGD
    # every parameter exactly once
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())


def test_param_groups_drive_sgd() -> None:
    torch.manual_seed(0)
    model = _mlp(nn.Tanh, [4, 9, 9, 1])
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(pt.param_groups(model, 0.1))
    model(torch.randn(5, 4)).square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    opt.step()
    for p, p0, g in zip(model.parameters(), before, grads, strict=True):
        assert torch.equal(p.detach(), p0.add(g, alpha=-lrs[id(p)]))


def test_param_groups_errors() -> None:
    gelu = _mlp(nn.GELU, [3, 8, 1])
    with pytest.raises(ValueError, match="depth_scaling=None"):
        pt.param_groups(gelu, 0.1)
    assert len(pt.param_groups(gelu, 0.1, depth_scaling=None)) == 4

    class Normed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.norm = nn.Linear(3, 8), nn.LayerNorm(8)

    with pytest.raises(ValueError, match="outside nn.Linear"):
        pt.param_groups(Normed(), 0.1, activation="tanh")
    with pytest.raises(ValueError, match="lr must be"):
        pt.param_groups(gelu, -1.0, depth_scaling=None)
    with pytest.raises(ValueError, match="per-layer values"):
        pt.param_groups(_mlp(nn.Tanh, [3, 8, 1]), 0.1, lambda_b=[1.0, 2.0])


# ---- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, match",
    [
        (nn.Sequential(nn.Linear(3, 8), nn.ELU(), nn.Linear(8, 1)), "allowed: nn.Tanh"),
        (nn.Sequential(nn.Conv1d(3, 8, 1), nn.ReLU(), nn.Linear(8, 1)), "should be nn.Linear"),
        (nn.Sequential(nn.Linear(3, 8), nn.Tanh()), "ends with nn.Linear"),
        (nn.Sequential(nn.Linear(3, 8), nn.Linear(8, 1)), "should be an activation"),
        (
            nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1)),
            "different activations",
        ),
        (nn.Sequential(nn.Linear(3, 8), nn.Sigmoid(), nn.Linear(8, 1)), "no critical init"),
        (nn.Sequential(nn.Linear(3, 8), nn.Softplus(), nn.Linear(8, 1)), "no critical init"),
        (nn.Sequential(nn.Linear(3, 8), nn.GELU("tanh"), nn.Linear(8, 1)), "approximate"),
        (nn.Sequential(nn.Linear(3, 8), nn.Softplus(beta=2), nn.Linear(8, 1)), "beta"),
        (nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(9, 1)), "do not form a chain"),
        (nn.Sequential(), "empty"),
    ],
)
def test_structure_errors(model: nn.Module, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        pt.critical_init_(model)


def test_init_errors() -> None:
    with pytest.raises(ValueError, match="bias=False"):
        pt.init_(nn.Linear(4, 4, bias=False), C_b=0.1, C_W=1.0)
    with pytest.raises(ValueError, match="one per Linear layer"):
        pt.init_(_mlp(nn.Tanh, [3, 4, 1]), C_b=0.0, C_W=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="weight_dist"):
        pt.init_(nn.Linear(4, 4), C_b=0.0, C_W=1.0, weight_dist="cauchy")
    with pytest.raises(ValueError, match="no nn.Linear"):
        pt.init_(nn.Tanh(), C_b=0.0, C_W=1.0)
    sig = nn.Sequential(nn.Linear(3, 8), nn.Sigmoid(), nn.Linear(8, 1))
    assert pt.init_(sig, C_b=0.0, C_W=16.0) is sig  # explicit hyperparameters always work


def test_import_is_real_torch() -> None:
    import pdlt.torch as mod

    assert mod is pt and mod.torch is torch and mod.nn is torch.nn
