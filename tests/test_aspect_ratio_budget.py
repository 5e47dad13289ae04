"""The optimal-aspect-ratio worked example (docs/examples/aspect_ratio_budget.py) runs and its
output is well formed (tiny sizes: this checks structure and sanity, not the science)."""

import json
import math
import runpy
from pathlib import Path

import numpy as np
import pytest

import pdlt

pytest.importorskip("sklearn")

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 400


def _params(depth: int, width: int, n_in: int, n_out: int) -> int:
    """(2.7) for widths [n_in, n, ..., n, n_out], written out independently of pdlt."""
    sizes = [n_in] + [width] * (depth - 1) + [n_out]
    return sum(sizes[i] * (sizes[i - 1] + 1) for i in range(1, len(sizes)))


@pytest.fixture(scope="module")
def example(one_thread):
    mod = runpy.run_path(str(ROOT / "docs" / "examples" / "aspect_ratio_budget.py"))
    result = mod["run"](
        budget=BUDGET, depths=(2, 3), n_train=8, n_test=6, size=3, steps=40, w_size=64, seed=1
    )
    return mod, result


def test_structure_and_budget(example):
    _, res = example
    json.dumps(res)  # JSON-serializable as written by the script
    pred, setup, rows = res["prediction"], res["setup"], res["rows"]
    assert setup["n_in"] == 9 and setup["n_out"] == 2
    opt = pdlt.optimal_aspect_ratio("tanh", n_out=2)
    assert pred["r_star"] == pytest.approx(opt.r_star)
    depths = [row["depth"] for row in rows]
    assert depths == sorted(depths) and {2, 3, pred["recommended"]["depth"]} <= set(depths)
    for row in rows:
        L, n = row["depth"], row["width"]
        # the widest network of this depth within the budget
        assert row["params"] == _params(L, n, 9, 2) <= BUDGET < _params(L, n + 1, 9, 2)
        assert row["r"] == pytest.approx(L / n)
        assert row["nu_r"] == pytest.approx(opt.nu * L / n)
        curve = pdlt.information_curve(nu=opt.nu, n_out=2, r=[row["r"]])
        assert row["information"] == pytest.approx(float(curve.I[0]))
        assert row["test_mse_minus_recommended"][1] >= 0


def test_numbers_are_sane(example):
    _, res = example
    for row in res["rows"]:
        assert row["finite"]
        for key in (
            "test_mse",
            "kernel_mse",
            "finite_width_gain",
            "deviation_rms",
            "ensemble_mean_mse",
            "train_loss",
            "w_measured",
        ):
            mean, se = row[key]
            assert math.isfinite(mean) and math.isfinite(se) and se >= 0, key
        assert row["test_mse"][0] > 0 and row["kernel_mse"][0] > 0 and row["kernel_mse_theory"] > 0
        assert 0 < row["eta_lambda_max"] <= 1.0 + 1e-12
        # training reduced the loss, on average and for every recorded network
        assert row["train_loss"][0] < 0.5 * row["train_loss_initial"][0]
        assert row["train_loss_curve"][-1] < row["train_loss_curve"][0]
        assert row["record_steps"][0] == 0 and row["record_steps"][-1] == res["setup"]["steps"]
        assert len(row["test_mse_curve"]) == len(row["record_steps"])
        assert res["setup"]["steps"] // 2 in row["record_steps"]
        best, step = row["test_mse_best_recorded"]
        assert step in row["record_steps"] and best <= min(row["test_mse_curve"]) + 1e-12
        assert isinstance(row["converged"], bool) and row["test_mse_change_last_half"] >= 0
        # w^(L) = V/(n K^2) is positive and of the size nu r (loose: 64 networks)
        assert 0 < row["w_theory"] < 2 * row["nu_r"] + 0.05
        assert row["w_measured"][0] == pytest.approx(
            row["w_theory"], abs=0.05 + 5 * row["w_measured"][1]
        )
        assert math.isfinite(row["information_at_w_theory"])
        assert math.isfinite(row["information_at_w_measured"])
    for values in res["baselines"].values():
        assert len(values) == 2 and all(v > 0 and math.isfinite(v) for v in values)
    rel = [row["kernel_mse"][0] / row["kernel_mse_theory"] for row in res["rows"]]
    assert np.all(np.array(rel) > 0.2) and np.all(np.array(rel) < 5)


def test_plot_writes_png(example, tmp_path):
    mod, res = example
    out = tmp_path / "budget.png"
    mod["plot"](res, out)
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 5000
