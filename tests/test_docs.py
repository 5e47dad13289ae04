"""The documentation's worked examples stay runnable (small sizes)."""

import re
import runpy
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_learning_rates_example_runs(tmp_path, capsys):
    mod = runpy.run_path(str(ROOT / "docs" / "examples" / "learning_rates.py"))
    out = tmp_path / "lr.png"
    mod["main"](["--out", str(out), "--depth", "4", "--width", "16", "--steps", "30"])
    text = capsys.readouterr().out
    assert out.stat().st_size > 1000 and "equivalence" in text
    # the equivalence-principle run reaches a lower loss than the uniform one (book §9.4)
    final = {ln.split()[0]: float(ln.rsplit("->", 1)[1]) for ln in text.splitlines() if "->" in ln}
    assert final["equivalence"] < final["uniform"]


def test_finite_width_prediction_example_runs(tmp_path, capsys):
    mod = runpy.run_path(str(ROOT / "docs" / "examples" / "finite_width_prediction.py"))
    out = tmp_path / "fw.png"
    args = ["--out", str(out), "--widths", "24,48", "--ensemble", "8", "--ntk-ensemble", "8"]
    res = mod["main"](
        [*args, "--activation", "tanh", "--n-train", "1", "--n-test", "1", "--slow", "0.5"]
    )
    text = capsys.readouterr().out
    assert out.stat().st_size > 1000 and "paired difference" in text
    assert set(res["results"]) == {24, 48}
    # the paired runs share their initial networks: the difference is O(1/n), not O(1)
    for r in res["results"].values():
        assert abs(r["diff"][0][0, 0]) < 0.2 and r["loss"] < 1e-6


def test_finite_width_covariance_example_runs(tmp_path, capsys):
    mod = runpy.run_path(str(ROOT / "docs" / "examples" / "finite_width_covariance.py"))
    out = tmp_path / "cov.png"
    args = ["--out", str(out), "--widths", "16,24", "--ensemble", "40", "--steps", "60"]
    res = mod["main"]([*args, "--activations", "tanh"])
    text = capsys.readouterr().out
    assert out.stat().st_size > 1000 and out.with_suffix(".json").exists()
    assert "interaction" in text and set(res["tanh"]) == {16, 24}
    for r in res["tanh"].values():  # free + interaction = total, network by network
        parts = [np.asarray(r[k]["n_meas"]) for k in ("total", "free", "interaction")]
        np.testing.assert_allclose(parts[0], parts[1] + parts[2], atol=1e-10)
        theory = [np.asarray(r[k]["n_theory"]) for k in ("total", "free", "interaction")]
        np.testing.assert_allclose(theory[0], theory[1] + theory[2], atol=1e-12)
    # the paired algorithm comparison trains the same networks twice
    p = mod["paired"]("tanh", 16, 30, 0, 0.5, 60)
    assert np.asarray(p["n_meas"]).shape == (4, 4) and p["loss"] < 1e-3
    assert np.abs(np.asarray(p["n_theory"])).max() > 0  # the algorithms differ at 1/n


def test_residual_ntk_example_runs(tmp_path, capsys):
    mod = runpy.run_path(str(ROOT / "docs" / "examples" / "residual_ntk.py"))
    out = tmp_path / "res.png"
    args = ["--out", str(out), "--width", "16", "--depth", "3", "--ensemble", "80"]
    res = mod["main"]([*args, "--activations", "relu"])
    assert out.stat().st_size > 1000 and out.with_suffix(".json").exists()
    assert "largest |measured - theory| / (4 s.e." in capsys.readouterr().out
    (entry,) = res.values()
    assert set(entry["fields"]) == {"A", "B", "D", "F"}
    a = entry["fields"]["A"]["[0,0,0,0]"]
    assert a["theory"][0] == 0 and a["theory"][-1] > 0 and len(a["measured"]) == 3


def _python_blocks(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("page", ["guide.md", "torch.md"])
def test_markdown_examples_run(page, capsys):
    """Every python block of the docs page runs, top to bottom in one namespace (examples
    carry their own asserts against closed forms and the book's values)."""
    blocks = _python_blocks(ROOT / "docs" / page)
    assert blocks, f"no python examples in {page}"
    namespace: dict = {"__name__": "__docs__"}
    for block in blocks:
        exec(compile(block, str(ROOT / "docs" / page), "exec"), namespace)
