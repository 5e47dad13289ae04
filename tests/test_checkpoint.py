"""Checkpoint and resume of ``measure``/``compare``/``predict --ensemble`` (issue 12).

A run killed at any moment (SIGKILL) or interrupted (SIGINT) and started again with the same
command ends with the same numbers, bit for bit, as a run that was never interrupted; the
checkpoint of another run is refused.  The killed runs are real subprocesses of the ``pdlt``
command; the resumed runs and the references run in this process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import pdlt.empirical.training as tr
from pdlt import Network, measure
from pdlt.cli import main
from pdlt.empirical.checkpoint import MANIFEST, STATISTICS

pytestmark = pytest.mark.usefixtures("one_thread")

# 32 blocks of 2 networks: with a checkpoint every block is written as it completes
MEASURE = [
    "measure",
    *("--activation", "tanh", "--depth", "3", "--width", "6", "--n-out", "2"),
    *("--k1", "0.7", "--ensemble", "64", "--seed", "4", "--fields", "K,V,Theta"),
    "--json",
]
XA = np.eye(3) * 1.5 + 0.4
XB = np.array([[1.0, 0.5, -0.5], [0.2, 1.2, 0.7]])
Y = np.array([[0.5], [-0.3], [0.8]])


def run_cli(capsys, args: list[str]) -> tuple[int, str, str]:
    code = main(args)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture(scope="module")
def reference() -> dict:
    """The uninterrupted ``measure`` run, without a checkpoint."""
    from contextlib import redirect_stdout
    from io import StringIO

    buf = StringIO()
    with redirect_stdout(buf):
        assert main(MEASURE) == 0
    return json.loads(buf.getvalue())


# the CLI in a subprocess, each block of the ensemble slowed by 0.1 s: the run then goes on
# for ~3 s after its first checkpoint (its blocks alone take ~10 ms each), so a signal sent
# then lands mid-run even when a loaded machine is slow to let the test send it.  Ctrl-C's
# default handler is installed explicitly: a test runner started as a background job of a
# non-interactive shell has SIGINT ignored, and a child would inherit that and run to the end
_SLOW_CLI = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
import pdlt.empirical.estimators as est
shard = est._shard_statistics
est._shard_statistics = lambda *a, **k: (time.sleep(0.1), shard(*a, **k))[1]
from pdlt.cli import main
sys.exit(main())
"""


def start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", _SLOW_CLI, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Wait until ``path`` exists (the first checkpoint) while ``proc`` runs."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.stderr}"
        assert time.monotonic() < deadline, "no checkpoint written"
        time.sleep(0.01)


def saved_blocks(ckpt: Path) -> int:
    with np.load(ckpt / STATISTICS) as state:
        return len(state["blocks"])


def no_temporary_files(ckpt: Path) -> bool:
    return not [p for p in os.listdir(ckpt) if p.endswith(".tmp")]


def test_sigkill_and_rerun_gives_the_uninterrupted_numbers(tmp_path, capsys, reference):
    ckpt = tmp_path / "ckpt"
    args = [*MEASURE, "--checkpoint", str(ckpt), "--checkpoint-every", "0"]
    proc = start(args)
    try:
        wait_for(ckpt / STATISTICS, proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert 0 < saved_blocks(ckpt) < 32  # killed mid-run
    code, out, err = run_cli(capsys, args)  # the same command again
    assert code == 0, err
    assert json.loads(out) == reference
    assert saved_blocks(ckpt) == 32 and no_temporary_files(ckpt)
    # a finished checkpoint gives the result again without computing anything
    code, out, _ = run_cli(capsys, args)
    assert code == 0 and json.loads(out) == reference


def test_sigint_exits_130_with_one_line_and_the_rerun_continues(tmp_path, capsys, reference):
    ckpt = tmp_path / "ckpt"
    args = [*MEASURE, "--checkpoint", str(ckpt), "--checkpoint-every", "0"]
    proc = start(args)
    try:
        wait_for(ckpt / STATISTICS, proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert out == ""  # no partial results: the run is to be continued
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("pdlt: interrupted;") and "run the same command again" in err
    assert 0 < saved_blocks(ckpt) < 32 and no_temporary_files(ckpt)
    code, out, err = run_cli(capsys, args)
    assert code == 0, err
    assert json.loads(out) == reference


def test_compare_resumes_and_a_different_run_is_refused(tmp_path, capsys, monkeypatch):
    ckpt = tmp_path / "ckpt"
    args = [
        "compare",
        *("--activation", "tanh", "--depth", "2", "--width", "8", "--k1", "0.5"),
        *("--ensemble", "40", "--seed", "1", "--fields", "K,V", "--json"),
    ]
    code, ref, err = run_cli(capsys, args)
    assert code == 0, err
    # interrupted after 5 of its 20 blocks (Ctrl-C in the middle of the run)
    calls = {"n": 0}
    original = tr.Progress.update

    def interrupt(self, n=1):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        original(self, n)

    monkeypatch.setattr(tr.Progress, "update", interrupt)
    with_ckpt = [*args, "--checkpoint", str(ckpt), "--checkpoint-every", "0"]
    code, out, err = run_cli(capsys, with_ckpt)
    assert (code, out) == (130, "")
    assert err == (
        f"pdlt: interrupted; 12 of 40 networks done; progress saved in {str(ckpt)!r}; "
        "run the same command again to continue\n"
    )
    monkeypatch.setattr(tr.Progress, "update", original)
    code, out, err = run_cli(capsys, with_ckpt)
    assert code == 0, err
    assert json.loads(out) == json.loads(ref)
    manifest = json.loads((ckpt / MANIFEST).read_text())
    assert manifest["seed"] == 1 and manifest["fields"] == ["K", "V"] and "pdlt" in manifest
    # another network, seed or set of fields: refused in one line, nothing written
    before = {p.name: p.stat().st_mtime_ns for p in ckpt.iterdir()}
    changes = {
        "--width": ("16", "network.widths [1, 8, 1], not [1, 16, 1]"),
        "--seed": ("2", "seed 1, not 2"),
        "--fields": ("K", "fields ['K', 'V'], not ['K']"),
    }
    for opt, (new, shown) in changes.items():
        bad = list(with_ckpt)
        bad[bad.index(opt) + 1] = new
        code, out, err = run_cli(capsys, bad)
        assert code == 2 and out == ""
        assert err == (
            f"pdlt: error: checkpoint in {str(ckpt)!r} was written for another run ({shown}); "
            "use a new directory\n"
        )
    assert {p.name: p.stat().st_mtime_ns for p in ckpt.iterdir()} == before


def test_checkpoint_directory_checks(tmp_path, capsys):
    net = Network("tanh", depth=2, width=4, n_in=1)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        measure(net, k1=1.0, size=8, fields=("K",), checkpoint=tmp_path / "file")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a pdlt checkpoint directory"):
        measure(net, k1=1.0, size=8, fields=("K",), checkpoint=tmp_path / "other")
    # bad arguments are refused before anything is written
    with pytest.raises(ValueError, match="cannot measure"):
        measure(net, k1=1.0, size=8, fields=("K", "X"), checkpoint=tmp_path / "new")
    assert not (tmp_path / "new").exists()
    code, _, err = run_cli(
        capsys, [*MEASURE[:-1], "--checkpoint-every", "5"]
    )  # without --checkpoint
    assert code == 2 and "--checkpoint-every applies to --checkpoint DIR" in err


def test_predict_ensemble_resumes_from_its_checkpoint(tmp_path, capsys, monkeypatch):
    train_f, test_f = tmp_path / "train.csv", tmp_path / "test.csv"
    np.savetxt(train_f, np.hstack([XA, Y]), delimiter=",")
    np.savetxt(test_f, XB, delimiter=",")
    ckpt = tmp_path / "ckpt"

    def predict(*extra: str) -> list[str]:
        return [
            "predict",
            *("--activation", "tanh", "--depth", "2", "--width", "16"),
            *("--train", str(train_f), "--test", str(test_f), "--json", *extra),
        ]

    ensemble = ("--ensemble", "8", "--steps", "40", "--seed", "2")
    code, ref, err = run_cli(capsys, predict(*ensemble))
    assert code == 0, err
    calls = {"n": 0}
    original = tr.Progress.update

    def interrupt(self, n=1):
        calls["n"] += 1
        if calls["n"] == 25:  # in the middle of training
            raise KeyboardInterrupt
        original(self, n)

    monkeypatch.setattr(tr.Progress, "update", interrupt)
    with_ckpt = predict(*ensemble, "--checkpoint", str(ckpt))
    code, out, err = run_cli(capsys, with_ckpt)
    assert (code, out) == (130, "")
    assert err == (
        f"pdlt: interrupted; progress saved in {str(ckpt)!r}; "
        "run the same command again to continue\n"
    )
    assert sorted(os.listdir(ckpt)) == [MANIFEST, "training.pt"]
    monkeypatch.setattr(tr.Progress, "update", original)
    code, out, err = run_cli(capsys, with_ckpt)
    assert code == 0, err
    got, want = json.loads(out), json.loads(ref)
    del got["ensemble"]["seconds"], want["ensemble"]["seconds"]
    assert got == want
    code, _, err = run_cli(capsys, predict(*ensemble, "--steps", "41", "--checkpoint", str(ckpt)))
    assert code == 2 and "was written for another run (steps 40, not 41)" in err
    code, _, err = run_cli(capsys, predict("--checkpoint", str(ckpt)))
    assert code == 2 and "--checkpoint applies to the real networks of --ensemble M" in err
