"""``pdlt report``: the main job writes a complete, self-contained report whose numbers are the
ones ``pdlt compare`` / ``pdlt predict`` give when run by hand, and a real browser renders it."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pdlt import cli
from pdlt.report import QUICK_SETTINGS, ReportSettings, make_report

pytestmark = pytest.mark.usefixtures("one_thread")

CHROMIUM = "/usr/bin/chromium"
FIGURES = 6  # two flows x (fields, ratios) + aspect ratio + prediction


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pdlt report --quick`` once for the module (about 30 s of CPU)."""
    out = tmp_path_factory.mktemp("rep") / "report"
    assert cli.main(["report", "--quick", "--out", str(out), "--json"]) == 0
    return out


def _run_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert cli.main(args) == 0
    return json.loads(capsys.readouterr().out)


def _no_nan(obj: object) -> bool:
    if isinstance(obj, dict):
        return all(_no_nan(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_no_nan(v) for v in obj)
    return not (isinstance(obj, float) and math.isnan(obj))


def test_files_and_self_contained_html(report_dir: Path) -> None:
    names = {p.name for p in report_dir.iterdir()}
    assert {"index.html", "report.json", "depth_flow.csv", "prediction.csv"} <= names
    assert {"universality.csv", "inputs.csv", "train.csv", "test.csv", "figures"} <= names
    assert len(list((report_dir / "figures").glob("*.png"))) == FIGURES
    page = (report_dir / "index.html").read_text(encoding="utf-8")
    imgs = re.findall(r'<img class="fig"[^>]*src="data:image/png;base64,', page)
    assert len(imgs) == FIGURES
    # offline: nothing fetched from elsewhere
    assert not re.search(r'(src|href)="(https?:)?//', page)
    data = json.loads((report_dir / "report.json").read_text())
    assert _no_nan(data)
    assert set(data["depth_flow"]) == {"tanh", "relu"}
    # no temporary folder left beside the report
    assert not [p for p in report_dir.parent.iterdir() if ".tmp-" in p.name]


def test_universality_section_matches_criticality(report_dir: Path) -> None:
    """Critical points as printed by ``pdlt criticality`` (book: tanh C_W = 1 (5.90), ReLU
    C_W = 2 (5.67))."""
    rows = {
        r["activation"]: r
        for r in json.loads((report_dir / "report.json").read_text())["universality"]
    }
    assert rows["tanh"]["universality_class"] == "K*=0" and rows["tanh"]["C_W"] == 1.0
    assert rows["relu"]["universality_class"] == "scale-invariant" and rows["relu"]["C_W"] == 2.0
    assert rows["sigmoid"]["C_W"] is None


def test_flow_numbers_agree_with_compare_by_hand(
    report_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = json.loads((report_dir / "report.json").read_text())
    for act, section in data["depth_flow"].items():
        command = section["command"]
        assert command[0] == "pdlt"
        by_hand = _run_json(command[1:], capsys)
        mine = section["comparison"]["rows"]
        assert [(r["field"], r["l"]) for r in by_hand["rows"]] == [
            (r["field"], r["l"]) for r in mine
        ], act
        for a, b in zip(by_hand["rows"], mine, strict=True):
            for key in ("theory", "measured", "stderr"):
                np.testing.assert_allclose(a[key], b[key], rtol=1e-12, atol=1e-300)
        assert by_hand["agree"] == section["comparison"]["agree"]


def test_prediction_numbers_agree_with_predict_by_hand(
    report_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred = json.loads((report_dir / "report.json").read_text())["prediction"]
    theory_cmd, ensemble_cmd = pred["commands"]
    fw = _run_json(theory_cmd[1:], capsys)["finite_width"]
    np.testing.assert_allclose(fw["infinite"], pred["infinite_width_mean"], rtol=1e-10)
    np.testing.assert_allclose(fw["correction"], pred["correction"], rtol=1e-8, atol=1e-14)
    ens = _run_json(ensemble_cmd[1:], capsys)["ensemble"]
    assert ens["steps"] == pred["steps"] and ens["eta"] == pytest.approx(pred["eta"])
    np.testing.assert_allclose(ens["mean"], pred["ensemble"]["mean"], rtol=1e-12)
    np.testing.assert_allclose(ens["mean_stderr"], pred["ensemble"]["mean_stderr"], rtol=1e-12)
    np.testing.assert_allclose(ens["std"], pred["ensemble"]["std"], rtol=1e-12)
    std = np.asarray(fw["covariance"]["std"])[:, 0]
    np.testing.assert_allclose(std, pred["finite_width_std"], rtol=1e-8)
    inf = np.sqrt(np.diagonal(np.asarray(fw["covariance"]["infinite"])[:, 0, :, 0]))
    np.testing.assert_allclose(inf, pred["infinite_width_std"], rtol=1e-10)  # (10.41) twice


def _chromium() -> str | None:
    """Debian's Chromium, installed here if missing (as the test set-up); None if impossible."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    if shutil.which("apt-get") is None:
        return None
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    try:
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
            subprocess.run(cmd, check=True, capture_output=True, timeout=900, env=env)
    except (OSError, subprocess.SubprocessError):
        return None
    return CHROMIUM if Path(CHROMIUM).exists() else None


def test_report_renders_in_headless_chromium(report_dir: Path, tmp_path: Path) -> None:
    """The page loads in a real browser and every figure decodes (the page's own script counts
    the decoded images into ``data-figures-loaded``)."""
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed and could not be installed (apt-get chromium)")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        (report_dir / "index.html").resolve().as_uri(),
    ]
    dom = subprocess.run([browser, *flags], capture_output=True, text=True, timeout=120).stdout
    assert f'data-figures-loaded="{FIGURES}/{FIGURES}"' in dom
    assert "pdlt report" in dom and "Depth flow at criticality: tanh" in dom


def test_bad_options_exit_2_without_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    for args in (
        ["--activations", "nope"],
        ["--depth", "1"],
        ["--depth", "0"],
        ["--ensemble", "1"],
        ["--gamma", "1"],
    ):
        capsys.readouterr()
        assert cli.main(["report", "--quick", "--out", str(out), *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("pdlt: error:"), (args, err)
        assert not out.exists()
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    assert cli.main(["report", "--out", str(not_a_dir)]) == 2
    assert not_a_dir.read_text() == "x"


def test_residual_report_compares_what_the_residual_theory_has(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--gamma``: the depth flow of residual networks (appendix B) at residual criticality,
    K, V, Theta, A, B, D, F (no P, Q), with the ``pdlt compare --gamma`` command that
    reproduces its numbers."""
    out = tmp_path / "res"
    args = ["report", "--quick", "--activations", "relu", "--gamma", "0.5", "--out", str(out)]
    assert cli.main([*args, "--ensemble", "60", "--json"]) == 0
    data = json.loads((out / "report.json").read_text())
    section = data["depth_flow"]["relu"]
    assert section["network"]["gamma"][1] == 0.5 and "--gamma" in section["command"]
    fields = {r["field"] for r in section["comparison"]["rows"]}
    assert {"A", "B"} <= fields and not fields & {"P", "Q"}
    by_hand = _run_json(section["command"][1:], capsys)
    for a, b in zip(by_hand["rows"], section["comparison"]["rows"], strict=True):
        np.testing.assert_allclose(a["theory"], b["theory"], rtol=1e-12, atol=1e-300)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "residual &gamma; = 0.5" in page


def test_interrupted_report_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Interrupted in the middle: no report folder and no temporary files."""
    import pdlt.report as report

    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "aspect_ratio", boom)
    settings = ReportSettings(
        activations=("relu",), depth=2, width=4, ensemble=4, fields=("K",), seed=1
    )
    with pytest.raises(KeyboardInterrupt):
        make_report(tmp_path / "r", settings, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_quick_settings_are_small() -> None:
    """--quick is the under-a-minute variant of the defaults (same sections, smaller sizes)."""
    default = ReportSettings()
    assert QUICK_SETTINGS.ensemble < default.ensemble and QUICK_SETTINGS.width < default.width
    assert set(QUICK_SETTINGS.fields) <= set(default.fields)


def test_interrupted_report_resumes_from_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted after its ensembles were measured, the report run again with the same
    checkpoint folder continues and ends with the numbers of an uninterrupted measurement
    (same seeds: identical)."""
    import pdlt.report as report
    from pdlt.report import depth_flow

    settings = ReportSettings(
        activations=("tanh",),
        depth=2,
        width=4,
        ensemble=8,
        fields=("K", "V"),
        predict_depth=2,
        predict_width=8,
        predict_ensemble=4,
    )
    original = report.aspect_ratio

    def interrupt_once(*args: object, **kwargs: object) -> object:
        monkeypatch.setattr(report, "aspect_ratio", original)
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "aspect_ratio", interrupt_once)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        make_report(tmp_path / "r", settings, progress=False, checkpoint=ckpt)
    assert (ckpt / "flow-tanh" / "manifest.json").is_file() and not (tmp_path / "r").exists()
    rep = make_report(tmp_path / "r", settings, progress=False, checkpoint=ckpt)
    _, measured, _ = depth_flow("tanh", settings, progress=False)  # no checkpoint
    rows = rep.data["depth_flow"]["tanh"]["comparison"]["rows"]
    for r in rows:
        np.testing.assert_array_equal(r["measured"], measured[r["field"]][r["l"] - 1])
    assert (ckpt / "prediction-training.pt").is_file()
