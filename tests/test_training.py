"""Training real networks: the engine, and infinite-width learning theory against experiment.

Expected values: per-network identities (one small GD step against the autodiff NTK (7.20);
last-layer training against each network's own random-feature kernel regression, exact at
any width, (10.134)-(10.135) and footnote 48), and the infinite-width theory of
:mod:`pdlt.learning` (kernel, NTK from ``flow``) with tolerances of k standard errors plus an
O(1/n) truncation allowance.

The networks here are small (3 training and 2 test inputs, n_0 = 3, depth 2-3); torch runs
single-threaded (faster for these sizes on a shared 2-core machine).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from pdlt import Network, flow
from pdlt.empirical import training as tr
from pdlt.empirical.ensemble import Ensemble, forward
from pdlt.empirical.observables import ntk, stochastic_metric
from pdlt.empirical.training import train
from pdlt.learning import (
    bayes_learning_rates,
    gd_operator,
    kernel_prediction,
    newton_step,
    posterior,
)

XA = np.eye(3) * 1.5 + 0.4
XB = np.array([[1.0, 0.5, -0.5], [0.2, 1.2, 0.7]])
X = np.concatenate([XA, XB])
Y = np.array([[0.5], [-0.3], [0.8]])
K_STD = 4.0  # standard errors allowed
C_TRUNC = 3.0  # truncation allowance c * L/n * scale


pytestmark = pytest.mark.usefixtures("one_thread")


def theory(net: Network) -> tuple[np.ndarray, np.ndarray]:
    f = flow(net.replace(width=None), X, fields=("K", "Theta"))
    return f["K"][-1], f["Theta"][-1]


def optimal_eta(Theta: np.ndarray) -> float:
    """``1.5/(lambda_min + lambda_max)``: fast, and stable under O(1/sqrt(n)) NTK fluctuations."""
    w = np.linalg.eigvalsh(Theta[:3, :3])
    return 1.5 / (w[0] + w[-1])


# ---------------------------------------------------------------------------------------------
# Engine: exact per-network identities
# ---------------------------------------------------------------------------------------------


def test_small_gd_step_moves_outputs_by_the_ntk():
    # (7.20): dz_d = -eta sum_a H_{da} eps_a + O(eta^2), H the autodiff NTK with (8.6)
    net = Network("tanh", widths=[3, 16, 8, 2], C_b=0.1, C_W=1.2, lambda_b=0.7, lambda_W=1.4)
    y = np.array([[0.5, 0.1], [-0.3, 0.2], [0.8, -0.4]])
    eta = 1e-5
    r = train(net, XA, y, XB, size=4, steps=1, eta=eta, record_steps=[0, 1], block_size=2)
    ens = Ensemble(net, 4, 0, 2)
    params = {k: torch.cat([ens.params(0)[k], ens.params(1)[k]]) for k in ens.params(0)}
    x = torch.tensor(X)
    H = ntk(params, x, net, 3).numpy()  # (M, i, j, a, b)
    z0 = forward(params, x, net)[-1].numpy()
    np.testing.assert_allclose(r.initial, z0, rtol=1e-13, atol=1e-15)
    eps = z0[:, :3] - y
    want = -eta * np.einsum("mijda,maj->mdi", H[:, :, :, 3:, :3], eps)
    got = r.test_outputs[1] - r.test_outputs[0]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-12)
    assert np.max(np.abs(got - want)) < 1e-3 * np.max(np.abs(want))


def test_last_layer_training_is_random_feature_regression():
    # lambda only in the last layer (10.46): the model is linear in its trained parameters
    # with kernel G-hat^(L) (10.135), so t GD steps give exactly
    # z_B(t) = z_B(0) - G_BA O_t(G~) (z_A(0) - y) per network, at any width
    net = bayes_learning_rates(Network("tanh", depth=3, width=32, n_in=3))
    eta = 0.2
    r = train(net, XA, Y, XB, size=6, steps=40, eta=eta, record_steps=[0, 7, 40], seed=3)
    ens = Ensemble(net, 6, 3, r.block_size)
    params = {k: torch.cat([ens.params(b)[k] for b in range(ens.n_blocks)]) for k in ens.params(0)}
    zs = forward(params, torch.tensor(X), net)
    G = stochastic_metric(zs, torch.tensor(X), net)[-1].numpy()
    for j, t in enumerate((0, 7, 40)):
        for m in range(6):
            O, _ = gd_operator(G[m, :3, :3], eta, t)
            want = r.initial[m, 3:] - G[m, 3:, :3] @ O @ (r.initial[m, :3] - Y)
            np.testing.assert_allclose(r.test_outputs[j, m], want, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Infinite-width theory against wide trained networks
# ---------------------------------------------------------------------------------------------


def linearized(Theta: np.ndarray, z0: np.ndarray, eta: float, t: int) -> np.ndarray:
    """Each network's own infinite-width prediction from its initial outputs (10.39)."""
    O, _ = gd_operator(Theta[:3, :3], eta, t)
    return z0[:, 3:] - np.einsum("ba,mai->mbi", Theta[3:, :3] @ O, z0[:, :3] - Y)


@pytest.mark.parametrize(("depth", "width", "size"), [(2, 512, 128), (2, 1024, 96), (3, 512, 32)])
def test_trained_ensemble_matches_infinite_width_theory(depth, width, size):
    net = Network("tanh", depth=depth, width=width, n_in=3)
    K, Theta = theory(net)
    eta = optimal_eta(Theta)
    steps = 100
    r = train(net, XA, Y, XB, size=size, steps=steps, eta=eta, record_steps=[0, 5, steps])
    assert r.train_loss[-1].max() < 1e-6  # fully trained
    allow = C_TRUNC * depth / width
    for t in (0, 5, steps):
        th = kernel_prediction(Theta, K, Y, steps=t, eta=eta)
        # mean: control variate with E[z(0)] = 0 exactly, so E[d] = E[z(t)] - m_t
        d = r.test_outputs[list(r.record_steps).index(t)] - linearized(Theta, r.initial, eta, t)
        se_d = d.std(axis=0, ddof=1) / np.sqrt(size)
        assert np.all(np.abs(d.mean(axis=0)) < K_STD * se_d + allow * np.max(np.abs(Y)))
        m = r.mean(t)
        assert np.all(np.abs(m.value - th.mean) < K_STD * m.stderr + allow * np.max(np.abs(Y)))
        c = r.covariance(t)
        assert np.all(np.abs(c.value - th.cov) < K_STD * c.stderr + allow * np.max(th.cov))
    # fully trained: the end-of-training prediction (10.40)-(10.41)
    full = kernel_prediction(Theta, K, Y)
    np.testing.assert_allclose(
        kernel_prediction(Theta, K, Y, steps=steps, eta=eta).mean, full.mean, atol=1e-6
    )
    # the per-network deviation from the linearized prediction is O(1/sqrt(n))
    rms = np.sqrt(np.mean(d**2))
    assert rms < 3.0 * np.sqrt(depth / width) * np.sqrt(np.max(full.cov))


def test_deviation_from_infinite_width_shrinks_with_width():
    # per-network |z(T) - z_lin(T)| ~ 1/sqrt(n): ratio 4 between widths 128 and 2048
    rms = []
    for width in (128, 2048):
        net = Network("tanh", depth=2, width=width, n_in=3)
        K, Theta = theory(net)
        eta = optimal_eta(Theta)
        r = train(net, XA, Y, XB, size=64, steps=60, eta=eta, record_steps=[60], seed=1)
        rms.append(np.sqrt(np.mean((r.final - linearized(Theta, r.initial, eta, 60)) ** 2)))
    assert 2.5 < rms[0] / rms[1] < 6.0


def test_last_layer_trained_ensemble_samples_the_bayesian_posterior():
    # (10.44)-(10.49): real wide networks, last layer trained = draws from the posterior
    net = bayes_learning_rates(Network("tanh", depth=3, width=512, n_in=3))
    K, _ = theory(net)
    post = posterior(K, Y)
    eta = optimal_eta(K)
    r = train(net, XA, Y, XB, size=192, steps=80, eta=eta, record_steps=[80], seed=7)
    allow = C_TRUNC * 3 / 512
    m, c = r.mean(), r.covariance()
    assert np.all(np.abs(m.value - post.mean) < K_STD * m.stderr + allow * np.max(np.abs(Y)))
    assert np.all(np.abs(c.value - post.cov) < K_STD * c.stderr + allow * np.max(post.cov))


def test_sgd_and_gd_reach_the_same_prediction():
    # algorithm independence (10.35) on real networks: same initialization, different optimizer
    net = Network("tanh", depth=2, width=512, n_in=3)
    g = train(net, XA, Y, XB, size=16, steps=100, eta=0.3, record_steps=[100], seed=4)
    s = train(net, XA, Y, XB, size=16, steps=300, eta=0.3, optimizer="sgd", batch_size=2, seed=4)
    assert s.train_loss[-1].max() < 1e-12 and g.train_loss[-1].max() < 1e-12
    np.testing.assert_allclose(g.initial, s.initial)
    diff = np.sqrt(np.mean((g.final - s.final) ** 2))
    assert diff < 0.02 * g.final.std()


def test_cross_entropy_training_matches_shifted_target_prediction():
    # §10.2.3: CE with soft targets softmax(y) converges to q = p; the test softmax equals that
    # of the Newton prediction with targets y + c (c: per-sample shift conserved by the flow)
    yl = np.array([[1.0, -0.5, 0.2], [0.0, 0.4, -0.8], [0.3, 0.3, -1.0]])
    net = Network("tanh", depth=2, width=512, n_in=3, n_out=3)
    _, Theta = theory(net)
    r = train(net, XA, yl, XB, size=8, steps=400, eta=0.3, loss="cross_entropy", seed=5)
    p = np.exp(yl) / np.exp(yl).sum(-1, keepdims=True)
    entropy = -np.sum(p * np.log(p))
    assert r.train_loss[-1].max() - entropy < 1e-9
    c = np.mean(r.initial[:, :3] - yl, axis=2, keepdims=True)
    pred = np.stack([newton_step(Theta, r.initial[m], yl + c[m]) for m in range(8)])[:, 3:]

    def softmax(z: np.ndarray) -> np.ndarray:
        return np.exp(z) / np.exp(z).sum(-1, keepdims=True)

    err = np.abs(softmax(r.final) - softmax(pred))
    assert err.mean() < 3 * np.sqrt(1 / 512) * 0.25  # O(1/sqrt(n)) per network
    assert np.abs(softmax(r.final) - softmax(yl.mean(0))).mean() > 10 * err.mean()
    # hard labels with label smoothing
    r2 = train(net, XA, np.array([0, 2, 1]), XB, size=2, steps=200, eta=0.3, loss="cross_entropy")
    assert r2.train_loss[-1].max() < r2.train_loss[0].min()


def test_adam_trains():
    net = Network("relu", depth=2, width=64, n_in=3)
    r = train(net, XA, Y, XB, size=4, steps=300, eta=1e-2, optimizer="adam")
    assert r.train_loss[-1].max() < 1e-3 * r.train_loss[0].min()
    assert r.test_outputs.shape == (len(r.record_steps), 4, 2, 1)


# ---------------------------------------------------------------------------------------------
# Checkpoints, progress, validation
# ---------------------------------------------------------------------------------------------


def test_checkpoint_resume_gives_the_same_result(tmp_path, monkeypatch):
    net = Network("tanh", depth=3, width=16, n_in=3)
    kw = dict(size=6, steps=30, eta=0.2, block_size=2, optimizer="adam", seed=9)
    ref = train(net, XA, Y, XB, **kw)
    path = tmp_path / "run.pt"
    calls = {"n": 0}
    original = tr.Progress.update

    def interrupt(self, n=1):
        calls["n"] += 1
        if calls["n"] == 17:
            raise KeyboardInterrupt
        original(self, n)

    monkeypatch.setattr(tr.Progress, "update", interrupt)
    monkeypatch.setattr(tr, "_ELEMENT_BUDGET", 1)  # one block per chunk: several chunks
    with pytest.raises(KeyboardInterrupt):
        train(net, XA, Y, XB, checkpoint=path, **kw)
    assert path.exists() and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    monkeypatch.setattr(tr.Progress, "update", original)
    resumed = train(net, XA, Y, XB, checkpoint=path, **kw)
    np.testing.assert_array_equal(resumed.test_outputs, ref.test_outputs)
    np.testing.assert_array_equal(resumed.train_loss, ref.train_loss)
    again = train(net, XA, Y, XB, checkpoint=path, **kw)  # finished: loaded, not retrained
    np.testing.assert_array_equal(again.test_outputs, ref.test_outputs)
    with pytest.raises(ValueError, match="different run"):
        train(net, XA, Y, XB, checkpoint=path, **{**kw, "eta": 0.1})


def test_progress_bar_draws(capsys):
    import io

    stream = io.StringIO()
    bar = tr.Progress(10, "training", enabled=True, stream=stream)
    with bar:
        bar.update(10)
    assert "training" in stream.getvalue()


def test_training_validation_messages():
    net = Network("tanh", depth=2, width=8, n_in=3)
    with pytest.raises(ValueError, match="optimizer"):
        train(net, XA, Y, XB, optimizer="lbfgs")
    with pytest.raises(ValueError, match="loss"):
        train(net, XA, Y, XB, loss="hinge")
    with pytest.raises(ValueError, match=r"y_train must have shape \(3, 1\)"):
        train(net, XA, Y[:2], XB)
    with pytest.raises(ValueError, match="finite hidden widths"):
        train(Network("tanh", depth=2, n_in=3), XA, Y, XB)
    with pytest.raises(ValueError, match="record_steps"):
        train(net, XA, Y, XB, steps=5, record_steps=[7])
    with pytest.raises(ValueError, match="batch_size"):
        train(net, XA, Y, XB, optimizer="sgd", batch_size=5)
    with pytest.raises(ValueError, match="label_smoothing"):
        train(
            net.replace(n_out=3),
            XA,
            np.array([0, 1, 2]),
            XB,
            loss="cross_entropy",
            label_smoothing=0.0,
        )
    with pytest.raises(ValueError, match="eta"):
        train(net, XA, Y, XB, eta=-1.0)
    r = train(net, XA, Y, XB, size=2, steps=3, eta=0.1)
    with pytest.raises(ValueError, match="not recorded"):
        r.mean(step=2 if 2 not in r.record_steps else 99)
