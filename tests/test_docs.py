"""The documentation's worked examples stay runnable (small sizes)."""

import runpy
from pathlib import Path

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
