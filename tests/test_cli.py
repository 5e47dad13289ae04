"""The pdlt command line: output, JSON keys, and one-line errors with exit status 2."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pdlt.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_criticality_json_keys(capsys):
    code, out, _ = run(capsys, "criticality", "tanh", "--json")
    assert code == 0
    d = json.loads(out)
    for key in ("C_b", "C_W", "K_star", "universality_class", "a1", "a2", "b1"):
        assert key in d
    assert d["universality_class"] == "K*=0" and d["a1"] == pytest.approx(-2.0)


def test_criticality_table(capsys):
    code, out, _ = run(capsys, "criticality", "swish")
    assert code == 0
    assert "half-stable" in out and "14.3201736" in out


def test_flow_json_single_input(capsys):
    code, out, _ = run(
        capsys, "flow", "--activation", "tanh", "--depth", "4", "--k1", "0.5", "--json"
    )
    assert code == 0
    d = json.loads(out)
    layers = d["layers"]
    assert layers["l"] == [1, 2, 3, 4]
    assert layers["K"][0] == pytest.approx(0.5)
    assert len(layers["chi_parallel"]) == 4 and len(layers["chi_perp"]) == 4
    assert d["network"]["C_W"] == [1.0] * 4 and d["universality_class"] == "K*=0"


def test_flow_layers(capsys):
    """``--layers`` keeps the layers asked for (negative from the top), the same numbers as
    the full flow; a layer that does not exist is a one-line error, exit 2."""
    base = ("flow", "--activation", "tanh", "--depth", "5", "--k1", "0.5", "--json")
    code, out, _ = run(capsys, *base)
    full = json.loads(out)["layers"]
    code, out, _ = run(capsys, *base, "--layers=-1,2")
    assert code == 0
    part = json.loads(out)["layers"]
    assert part["l"] == [2, 5]
    assert part["K"] == [full["K"][1], full["K"][4]]
    assert part["chi_perp"] == [full["chi_perp"][1], full["chi_perp"][4]]
    for bad in ("--layers=6", "--layers=a"):
        try:
            code = main([*base, bad])
        except SystemExit as exc:  # argparse's own errors
            code = exc.code
        assert code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "layer" in err


def test_flow_inputs_files(capsys, tmp_path):
    x = np.random.default_rng(0).normal(size=(3, 5))
    np.save(tmp_path / "x.npy", x)
    np.savetxt(tmp_path / "x.csv", x, delimiter=",")
    outs = []
    for name in ("x.npy", "x.csv"):
        code, out, _ = run(
            capsys,
            "flow",
            "--activation",
            "relu",
            "--depth",
            "3",
            "--inputs",
            str(tmp_path / name),
            "--json",
        )
        assert code == 0
        outs.append(np.array(json.loads(out)["layers"]["K"]))
    assert outs[0].shape == (3, 3, 3)
    assert np.allclose(outs[0], outs[1], rtol=1e-12)
    # the first-layer kernel at criticality (C_b, C_W) = (0, 2): K^(1) = 2 x x^T / n_0 (4.8)
    assert np.allclose(outs[0][0], 2 * x @ x.T / 5, rtol=1e-12)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["criticality", "nope"], "unknown activation"),
        (["flow", "--activation", "tanh"], "required"),
        (["flow", "--activation", "tanh", "--depth", "-3"], "positive integer"),
        (["flow", "--activation", "tanh", "--depth", "3", "--C-b", "0.1"], "give both"),
        (
            ["flow", "--activation", "tanh", "--depth", "3", "--C-b", "-1", "--C-W", "1"],
            "non-negative",
        ),
        (
            ["flow", "--activation", "tanh", "--depth", "3", "--C-b", "x", "--C-W", "1"],
            "expected a number",
        ),
        (["flow", "--activation", "sigmoid", "--depth", "3"], "no critical initialization"),
        (
            ["flow", "--activation", "tanh", "--depth", "3", "--inputs", "/no/such.npy"],
            "does not exist",
        ),
        (["flow", "--activation", "tanh", "--depth", "3", "--fields", "K,Zed"], "unknown field"),
        (
            ["flow", "--activation", "relu", "--depth", "3", "--k1", "1", "--inputs", "a.npy"],
            "not allowed with",
        ),
        (["bogus"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("pdlt: error: ")
    assert message in err


def test_corrupt_inputs_file(capsys, tmp_path):
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not a numpy file")
    code, _, err = run(capsys, "flow", "--activation", "tanh", "--depth", "2", "--inputs", str(bad))
    assert code == 2 and "cannot read inputs" in err and "Traceback" not in err
    nan = tmp_path / "nan.csv"
    nan.write_text("1,2\nnan,3\n")
    code, _, err = run(capsys, "flow", "--activation", "tanh", "--depth", "2", "--inputs", str(nan))
    assert code == 2 and "NaN" in err


def test_readme_opens_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    commands = [ln for ln in lines[:4] if ln.startswith("pip install")]
    assert len(commands) == 2
    main_job = commands[0].split("&&")[1].split()
    assert main_job[0] == "pdlt"
    assert "pytest" in commands[1]
    # .ci/run runs the same test command (see its comment) and installs what it needs
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"pip install .*torch==2\.13\.0 .*\[test\]", ci) and "pytest" in ci


def test_main_job_runs_as_a_console_script(tmp_path):
    """The README's main job, with --quick (same sections, smaller ensembles; the full default
    takes a few minutes) and the report written to a temporary folder."""
    lines = (ROOT / "README.md").read_text().splitlines()
    main_job = [ln for ln in lines[:4] if ln.startswith("pip install")][0].split("&&")[1].split()
    assert main_job == ["pdlt", "report"]
    out = tmp_path / "report"
    proc = subprocess.run(
        [sys.executable, "-m", "pdlt.cli", *main_job[1:], "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "report written to" in proc.stdout and "agree" in proc.stdout
    assert (out / "index.html").stat().st_size > 10_000


def test_learning_rates_command(capsys):
    code, out, _ = run(capsys, "learning-rates", "--activation", "relu", "--depth", "4", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["lambda_b"] == [0.25] * 4 and d["lambda_W"] == [0.25] * 4
    code, _, err = run(capsys, "learning-rates", "--activation", "sigmoid", "--depth", "4")
    assert code == 2 and err.count("\n") == 1


def test_flow_ntk_fields(capsys):
    code, out, _ = run(
        capsys,
        "flow",
        "--activation",
        "relu",
        "--depth",
        "3",
        "--width",
        "64",
        "--fields",
        "Theta,B",
        "--lambda-b",
        "0.5",
        "--lambda-W",
        "2",
        "--json",
    )
    assert code == 0
    layers = json.loads(out)["layers"]
    # (9.44): Theta = l (lambda_b + lambda_W X) at criticality with K^(1) = 1 = 2 X
    assert layers["Theta"] == pytest.approx([1.5, 3.0, 4.5])


@pytest.mark.parametrize(
    "argv",
    [
        ["flow", "--activation", "tanh", "--depth", "3", "--width", "20", "--fields", "K,V"],
        ["measure", "--activation", "relu", "--depth", "2", "--width", "4", "--ensemble", "8"],
        ["predict", "--activation", "tanh", "--depth", "2"],
        ["aspect-ratio", "--activation", "tanh"],
    ],
)
def test_every_command_plots(capsys, tmp_path, argv):
    """--plot writes a figure (PNG signature) for flow, measure, predict and aspect-ratio, and
    an unwritable --plot fails before any work with one line and exit status 2."""
    pytest.importorskip("matplotlib")
    if argv[0] == "predict":
        pytest.importorskip("sklearn")
    png = tmp_path / "fig.png"
    code, _, err = run(capsys, *argv, "--plot", str(png))
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for bad in (str(tmp_path / "missing" / "f.png"), str(tmp_path / "f.txt")):
        code, _, err = run(capsys, *argv, "--plot", bad)
        assert code == 2 and err.count("\n") == 1 and "--plot" in err


def test_results_saved_and_loaded_back(capsys, tmp_path):
    """--out writes pdlt's result format (.json or .npz, atomically) and pdlt.load reads back
    exactly the numbers the command printed; bad paths and foreign files get clear errors."""
    import pdlt

    flow_argv = ["flow", "--activation", "tanh", "--depth", "3", "--width", "30", "--json"]
    for ext in ("json", "npz"):
        path = tmp_path / f"flow.{ext}"
        code, out, _ = run(capsys, *flow_argv, "--fields", "K,V", "--out", str(path))
        assert code == 0
        printed = json.loads(out)["layers"]
        loaded = pdlt.load(path)
        assert loaded.kind == "theory" and loaded.network.widths[1:] == (30, 30, 1)
        assert "quadrature" in loaded.meta and set(loaded.fields) == {"K", "V"}
        np.testing.assert_array_equal(loaded.single("V"), printed["V"])
    meas = tmp_path / "m.npz"
    argv = ["measure", "--activation", "relu", "--depth", "2", "--width", "4", "--ensemble", "6"]
    code, out, _ = run(capsys, *argv, "--json", "--out", str(meas))
    assert code == 0
    loaded = pdlt.load(meas)
    assert loaded.meta["seed"] == 0 and loaded.meta["size"] == 6
    np.testing.assert_array_equal(loaded.single("K"), json.loads(out)["layers"]["K"])
    np.testing.assert_array_equal(loaded.stderr("K").ravel(), json.loads(out)["layers"]["K_stderr"])
    cmp_path = tmp_path / "c.json"
    argv[0] = "compare"
    assert run(capsys, *argv, "--out", str(cmp_path))[0] == 0
    doc = json.loads(cmp_path.read_text())
    assert doc["format"] == "pdlt.comparison" and doc["measured"]["kind"] == "ensemble"
    for bad in (tmp_path / "x.txt", tmp_path / "no" / "x.json"):
        code, _, err = run(capsys, *flow_argv, "--out", str(bad))
        assert code == 2 and err.count("\n") == 1 and not bad.exists()
    (tmp_path / "foreign.json").write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="not a pdlt result file"):
        pdlt.load(tmp_path / "foreign.json")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
