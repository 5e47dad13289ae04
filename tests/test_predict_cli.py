"""``pdlt predict``: default data set, ``--targets``, ``--out``, ``--ensemble``, bad options.

Expected values come from independent computations: the diabetes subset is rebuilt here from
scikit-learn directly, predictions from the Python API (:func:`pdlt.learning.gd_predict`,
:func:`pdlt.learning.bayes_predict`), the ensemble from :func:`pdlt.train` called directly with
the same networks, and the trained ensemble is compared with the infinite-width theory within
k standard errors plus an O(1/n) truncation allowance.  Theory on the 30 diabetes points uses
ReLU (closed-form kernels); ensembles use 3 training and 2 test inputs.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

from pdlt import Network, flow
from pdlt.cli import main
from pdlt.empirical.training import train
from pdlt.learning import bayes_learning_rates, bayes_predict, gd_predict, posterior

XA = np.eye(3) * 1.5 + 0.4
XB = np.array([[1.0, 0.5, -0.5], [0.2, 1.2, 0.7]])
Y = np.array([[0.5], [-0.3], [0.8]])
K_STD = 4.0  # standard errors allowed
C_TRUNC = 3.0  # truncation allowance c * L/n * scale


pytestmark = pytest.mark.usefixtures("one_thread")


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["predict", *args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def run_json(capsys, *args: str) -> dict:
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def assert_usage_error(capsys, args: list[str], msg: str) -> None:
    code, _, err = run(capsys, *args)
    assert code == 2
    assert msg in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.fixture
def files(tmp_path):
    train_f, test_f = tmp_path / "train.csv", tmp_path / "test.csv"
    np.savetxt(train_f, np.hstack([XA, Y]), delimiter=",")
    np.savetxt(test_f, XB, delimiter=",")
    return ["--train", str(train_f), "--test", str(test_f)]


# ---------------------------------------------------------------------------------------------
# The default data set
# ---------------------------------------------------------------------------------------------


def diabetes_by_hand() -> tuple[np.ndarray, ...]:
    datasets = pytest.importorskip("sklearn.datasets")
    x, y = datasets.load_diabetes(return_X_y=True)
    xa, xb, ya, yb = x[:20], x[20:30], y[:20], y[20:30]
    mu, sd = xa.mean(0), xa.std(0)
    return (
        (xa - mu) / sd,
        ((ya - ya.mean()) / ya.std())[:, None],
        (xb - mu) / sd,
        ((yb - ya.mean()) / ya.std())[:, None],
    )


def test_default_data_set_is_the_standardized_diabetes_subset(capsys):
    xa, ya, xb, yb = diabetes_by_hand()
    assert np.allclose(xa.mean(0), 0) and np.allclose(xa.std(0), 1)
    net = Network("relu", depth=2)
    for method, want in (
        ("gd", gd_predict(net, xa, ya, xb)),
        ("bayes", bayes_predict(net, xa, ya, xb, noise_var=0.1)),
    ):
        extra = ["--noise", "0.1"] if method == "bayes" else []
        out = run_json(capsys, "--activation", "relu", "--depth", "2", "--method", method, *extra)
        np.testing.assert_allclose(out["mean"], want.mean, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(out["std"], want.std, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(out["y_test"], yb, rtol=1e-12)
        assert out["data"]["default"] and "diabetes" in out["data"]["description"]
        assert np.shape(out["mean"]) == (10, 1)
    # the readable table names the data and reports the bias-variance split
    code, text, _ = run(capsys, "--activation", "relu", "--depth", "2")
    assert code == 0 and "diabetes" in text and "expected test loss" in text


def test_default_data_set_without_scikit_learn(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    assert_usage_error(capsys, ["--activation", "relu", "--depth", "2"], "scikit-learn")


# ---------------------------------------------------------------------------------------------
# --targets and --out
# ---------------------------------------------------------------------------------------------


def test_targets_in_a_separate_file(capsys, tmp_path):
    y2 = np.hstack([Y, -2 * Y + 0.1])
    np.save(tmp_path / "x.npy", XA)
    np.save(tmp_path / "y.npy", y2)
    np.save(tmp_path / "y1.npy", Y.ravel())  # 1-D: one target per training input
    np.savetxt(tmp_path / "xb.csv", XB, delimiter=",")
    base = ["--activation", "tanh", "--depth", "2", "--train", str(tmp_path / "x.npy")]
    base += ["--test", str(tmp_path / "xb.csv")]
    out = run_json(capsys, *base, "--targets", str(tmp_path / "y.npy"), "--n-out", "2")
    want = gd_predict(Network("tanh", depth=2, n_out=2), XA, y2, XB)
    np.testing.assert_allclose(out["mean"], want.mean, rtol=1e-12)
    np.testing.assert_allclose(out["cov"], want.cov, rtol=1e-12)
    out = run_json(capsys, *base, "--targets", str(tmp_path / "y1.npy"))
    np.testing.assert_allclose(
        out["mean"], gd_predict(Network("tanh", depth=2), XA, Y, XB).mean, rtol=1e-12
    )
    assert_usage_error(capsys, [*base, "--targets", str(tmp_path / "y.npy")], "--targets needs")
    assert_usage_error(capsys, [*base, "--targets", str(tmp_path / "no.npy")], "does not exist")


def test_out_writes_json_and_csv(capsys, files, tmp_path):
    base = ["--activation", "tanh", "--depth", "2", *files]
    stdout_json = run_json(capsys, *base)
    code, _, _ = run(capsys, *base, "--out", str(tmp_path / "r.json"))
    assert code == 0
    assert json.loads((tmp_path / "r.json").read_text()) == stdout_json
    code, _, _ = run(capsys, *base, "--out", str(tmp_path / "r.csv"))
    assert code == 0
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0] == "test,mean_0,std"
    table = np.loadtxt(tmp_path / "r.csv", delimiter=",", skiprows=1, ndmin=2)
    want = gd_predict(Network("tanh", depth=2), XA, Y, XB)
    np.testing.assert_array_equal(table[:, 0], [0, 1])
    np.testing.assert_allclose(table[:, 1], want.mean[:, 0], rtol=1e-14)
    np.testing.assert_allclose(table[:, 2], want.std, rtol=1e-14)
    assert sorted(os.listdir(tmp_path)) == ["r.csv", "r.json", "test.csv", "train.csv"]


def test_out_is_atomic(capsys, files, tmp_path, monkeypatch):
    base = ["--activation", "tanh", "--depth", "2", *files]
    target = tmp_path / "r.json"
    target.write_text("old")
    # bad extension / missing directory: refused before any work, nothing written
    assert_usage_error(capsys, [*base, "--out", str(tmp_path / "r.txt")], ".json or .csv")
    assert_usage_error(capsys, [*base, "--out", str(tmp_path / "no" / "r.csv")], "directory")
    # an error during the computation leaves the old file alone
    assert_usage_error(
        capsys, [*base, "--out", str(target), "--steps", "5000", "--eta", "1e3"], "diverges"
    )
    assert target.read_text() == "old"
    # an unstable learning rate is reported in one line
    code, _, err = run(capsys, *base, "--steps", "50", "--eta", "3")
    assert code == 0 and err.startswith("pdlt: warning: gradient descent is unstable")
    assert len(err.strip().splitlines()) == 1

    # a failure at the last moment (the rename) removes the temporary file
    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    assert_usage_error(capsys, [*base, "--out", str(target)], "No space left")
    assert target.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["r.json", "test.csv", "train.csv"]


# ---------------------------------------------------------------------------------------------
# --ensemble: real networks beside the theory
# ---------------------------------------------------------------------------------------------


def test_ensemble_gd_matches_theory_and_pdlt_train(capsys, files, tmp_path):
    width, size, steps = 256, 48, 60
    out = run_json(
        capsys,
        *("--activation", "tanh", "--depth", "2", "--width", str(width), *files),
        *("--ensemble", str(size), "--steps", str(steps), "--seed", "3"),
        *("--out", str(tmp_path / "r.csv")),
    )
    ens = out["ensemble"]
    assert (ens["size"], ens["width"], ens["steps"], ens["seed"]) == (size, width, steps, 3)
    # default eta = 1/lambda_max of the infinite-width NTK on the training inputs
    Theta = flow(Network("tanh", depth=2), np.vstack([XA, XB]), fields=("Theta",))["Theta"][-1]
    eta = 1 / np.linalg.eigvalsh(Theta[:3, :3])[-1]
    assert ens["eta"] == pytest.approx(eta, rel=1e-12)
    # the theory column is for the same training: steps and eta
    th = gd_predict(Network("tanh", depth=2), XA, Y, XB, steps=steps, eta=eta)
    np.testing.assert_allclose(out["mean"], th.mean, rtol=1e-10)
    np.testing.assert_allclose(out["std"], th.std, rtol=1e-10)
    # the networks are exactly those of pdlt.train with the learning-rate tensor (8.6)
    r = train(
        Network("tanh", depth=2, width=width), XA, Y, XB, size=size, seed=3, steps=steps, eta=eta
    )
    np.testing.assert_allclose(ens["mean"], r.mean().value, rtol=1e-12)
    np.testing.assert_allclose(ens["mean_stderr"], r.mean().stderr, rtol=1e-12)
    np.testing.assert_allclose(np.square(ens["std"]), np.diag(r.covariance().value), rtol=1e-12)
    # real networks against the infinite-width theory
    allow = C_TRUNC * 2 / width
    m, se = np.asarray(ens["mean"]), np.asarray(ens["mean_stderr"])
    assert np.all(np.abs(m - th.mean) < K_STD * se + allow * np.max(np.abs(Y)))
    s, sse = np.asarray(ens["std"]), np.asarray(ens["std_stderr"])
    assert np.all(np.abs(s - th.std) < K_STD * sse + allow * np.max(th.std))
    assert np.all(sse > 0) and np.all(se > 0)
    # the CSV carries the ensemble columns beside the theory
    header = (tmp_path / "r.csv").read_text().splitlines()[0].split(",")
    assert header == [
        "test",
        "mean_0",
        "std",
        "ensemble_mean_0",
        "ensemble_mean_0_stderr",
        "ensemble_std",
        "ensemble_std_stderr",
    ]
    table = np.loadtxt(tmp_path / "r.csv", delimiter=",", skiprows=1, ndmin=2)
    np.testing.assert_allclose(table[:, 3], m[:, 0], rtol=1e-14)
    np.testing.assert_allclose(table[:, 5], s, rtol=1e-14)


def test_ensemble_bayes_samples_the_posterior(capsys, files):
    width, size = 256, 64
    code, text, err = run(
        capsys,
        *("--activation", "tanh", "--depth", "2", "--width", str(width), *files),
        *("--method", "bayes", "--ensemble", str(size)),
    )
    assert code == 0, err
    assert "ensemble: 64 networks of width 256" in text and "+-" in text
    out = run_json(
        capsys,
        *("--activation", "tanh", "--depth", "2", "--width", str(width), *files),
        *("--method", "bayes", "--ensemble", str(size)),
    )
    ens = out["ensemble"]
    K = flow(Network("tanh", depth=2), np.vstack([XA, XB]), fields=("K",))["K"][-1]
    w = np.linalg.eigvalsh(K[:3, :3])
    # default training: eta = 1/lambda_max(K~), steps until (1 - eta lambda_min)^T <= 1e-3
    assert ens["eta"] == pytest.approx(1 / w[-1], rel=1e-12)
    T = ens["steps"]
    assert (1 - w[0] / w[-1]) ** T <= 1e-3 < (1 - w[0] / w[-1]) ** (T - 1)
    assert (
        ens["network"]["lambda_W"]
        == bayes_learning_rates(Network("tanh", depth=2, width=width, n_in=3)).to_dict()["lambda_W"]
    )
    post = posterior(K, Y)
    np.testing.assert_allclose(out["mean"], post.mean, rtol=1e-2, atol=1e-3)  # T-step theory
    allow = C_TRUNC * 2 / width
    m, se = np.asarray(ens["mean"]), np.asarray(ens["mean_stderr"])
    assert np.all(np.abs(m - post.mean) < K_STD * se + allow * np.max(np.abs(Y)) + 1e-3)
    s, sse = np.asarray(ens["std"]), np.asarray(ens["std_stderr"])
    assert np.all(np.abs(s - post.std) < K_STD * sse + allow * np.max(post.std) + 1e-3)


# ---------------------------------------------------------------------------------------------
# Options predict rejects
# ---------------------------------------------------------------------------------------------


def test_rejected_options(capsys, files, tmp_path):
    base = ["--activation", "tanh", "--depth", "2"]
    cases = [
        ([*files, "--ensemble", "4"], "--width"),
        ([*files, "--width", "8", "--steps", "3"], "--steps"),
        ([*files, "--seed", "1"], "--ensemble"),
        (
            [*files, "--width", "8", "--ensemble", "4", "--method", "bayes", "--noise", "0.1"],
            "noise",
        ),
        ([*files, "--method", "bayes", "--lambda-b", "0.5"], "--method gd"),
        ([*files, "--ensemble", "0", "--width", "8"], "positive integer"),
        ([*files, "--k1", "1.0"], "--train and --test"),
        ([*files, "--inputs", files[1]], "--train and --test"),
        ([files[0], files[1]], "both --train and --test"),
        (["--targets", files[1]], "--targets goes with --train"),
        (["--n-out", "2"], "one target"),
        ([*files, "--steps", "-1"], "--steps"),
        ([*files, "--eta", "0", "--steps", "3"], "--eta"),
    ]
    for extra, msg in cases:
        assert_usage_error(capsys, [*base, *extra], msg)
    # --k1 / --inputs are not offered in the help of predict
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    helptext = capsys.readouterr().out
    assert "--k1" not in helptext and "--inputs" not in helptext
    assert "--ensemble" in helptext and "--targets" in helptext and "--out" in helptext


def test_slow_finite_width_correction_is_announced(capsys, monkeypatch):
    """predict --width on the default 20 + 10 points needs (L-1) C(30, 4) = 54,810 four-point
    integrals (minutes): a warning says so before the work starts."""
    pytest.importorskip("sklearn")
    import pdlt.learning.finite_width as fwmod

    def stop(*args, **kwargs):
        raise ValueError("stopped by the test")

    monkeypatch.setattr(fwmod, "finite_width_predict", stop)
    assert main(["predict", "--activation", "tanh", "--depth", "3", "--width", "64"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "54,810 four-dimensional" in err[0] and "stopped by the test" in err[-1]


def test_finite_width_correction_refuses_kinked_activations_first(capsys):
    """ReLU has no ddNTK (book (∞.41)-(∞.44)): predict --width says so in one line, without
    first warning about the cost of a computation it will not do."""
    code, out, err = run(capsys, "--activation", "relu", "--depth", "3", "--width", "64")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "R, S, T, U are not defined" in err
