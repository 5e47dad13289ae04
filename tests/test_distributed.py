"""Ensembles on a Dask cluster (issue 12): the same statistics as in one process, bit for bit.

A local cluster of three worker processes stands in for a real one.  Measurement runs one
task per ensemble block, training one task per chunk of blocks; the results are reduced in
block order, so they are identical to the single-process run for any number of workers, and
a worker killed mid-run has its tasks recomputed.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import pdlt.empirical.training as tr
from pdlt import Network, measure, train
from pdlt.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")

X = np.array([[0.3, -1.0, 0.5], [1.2, 0.4, -0.7]])
NET = Network("tanh", depth=3, width=6, n_in=3, n_out=2)
FIELDS = ("K", "V", "Theta", "A")
KW = dict(size=48, seed=5, fields=FIELDS, block_size=4)  # 12 blocks: 12 tasks
XA = np.eye(3) * 1.5 + 0.4
XB = np.array([[1.0, 0.5, -0.5], [0.2, 1.2, 0.7]])
Y = np.array([[0.5, 0.1], [-0.3, 0.2], [0.8, -0.4]])
WORKERS = 3


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=WORKERS,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.CRITICAL,
    ) as local:
        yield local


@pytest.fixture(scope="module")
def client(cluster):
    import distributed

    with distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def reference():
    """The single-process measurement."""
    return measure(NET, X, **KW)


def assert_identical(a, b) -> None:
    for f in FIELDS:
        np.testing.assert_array_equal(a[f], b[f])
        np.testing.assert_array_equal(a.stderr(f), b.stderr(f))


def test_measure_on_a_cluster_is_identical_to_one_process(client, reference):
    import distributed

    with distributed.get_task_stream(client) as tasks:
        result = measure(NET, X, scheduler=client, **KW)
    assert len({t["worker"] for t in tasks.data}) >= 2  # the blocks ran on several workers
    assert_identical(result, reference)
    assert result.meta["size"] == reference.meta["size"] == 48


def test_cli_scheduler_address_gives_the_same_output(cluster, capsys):
    args = [
        "measure",
        *("--activation", "relu", "--depth", "2", "--width", "5", "--k1", "0.8"),
        *("--ensemble", "40", "--seed", "2", "--json"),
    ]
    assert main(args) == 0
    alone = json.loads(capsys.readouterr().out)
    assert main([*args, "--scheduler", cluster.scheduler_address]) == 0
    assert json.loads(capsys.readouterr().out) == alone


def test_training_on_a_cluster_is_identical_to_one_process(client, monkeypatch):
    # one block per chunk, so the 3 chunks are 3 tasks; SGD mini-batches are keyed by chunk
    monkeypatch.setattr(tr, "_ELEMENT_BUDGET", 1)
    net = Network("tanh", depth=2, width=8, n_out=2)
    kw = dict(size=6, block_size=2, steps=12, eta=0.2, optimizer="sgd", batch_size=2, seed=3)
    alone = train(net, XA, Y, XB, **kw)
    spread = train(net, XA, Y, XB, scheduler=client, **kw)
    for name in ("test_outputs", "train_loss", "initial"):
        np.testing.assert_array_equal(getattr(spread, name), getattr(alone, name))


def test_a_checkpoint_started_alone_is_finished_on_the_cluster(
    client, reference, tmp_path, monkeypatch
):
    calls = {"n": 0}
    original = tr.Progress.update

    def interrupt(self, n=1):
        calls["n"] += 1
        if calls["n"] == 4:  # Ctrl-C after 4 of the 12 blocks, in this process
            raise KeyboardInterrupt
        original(self, n)

    monkeypatch.setattr(tr.Progress, "update", interrupt)
    partial = measure(NET, X, checkpoint=tmp_path, checkpoint_seconds=0, **KW)
    assert partial.meta["interrupted"] and partial.meta["blocks"] == 4
    monkeypatch.setattr(tr.Progress, "update", original)
    finished = measure(NET, X, scheduler=client, checkpoint=tmp_path, **KW)
    assert not finished.meta["interrupted"]
    assert_identical(finished, reference)


def test_scheduler_without_dask_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'pdlt\[dask\]'"):
        measure(NET, X, scheduler="tcp://127.0.0.1:8786", **KW)
    code = main(
        [
            "measure",
            *("--activation", "tanh", "--depth", "2", "--width", "4", "--ensemble", "8"),
            *("--scheduler", "tcp://127.0.0.1:8786"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err == (
        "pdlt: error: running on a Dask cluster needs Dask distributed: pip install 'pdlt[dask]'\n"
    )


def test_a_bad_scheduler_address_is_one_line(capsys):
    pytest.importorskip("distributed")
    code = main(
        [
            "measure",
            *("--activation", "tanh", "--depth", "2", "--width", "4", "--ensemble", "8"),
            *("--scheduler", "foo://nowhere"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("pdlt: error: cannot connect to the Dask scheduler at 'foo://nowhere'")


def busy_worker(client, timeout: float = 120.0) -> str:
    """Address of a worker that is computing one of our tasks."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker, keys in client.processing().items():
            if keys:
                return worker
        time.sleep(0.005)
    raise AssertionError("no task was scheduled")


def in_a_thread(fn, *args, timeout: float = 120.0, **kwargs):
    """``fn(*args, **kwargs)`` run in a new thread; fails (never hangs) after ``timeout`` s."""
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(fn, *args, **kwargs).result(timeout=timeout)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def test_a_failed_connection_leaves_no_default_client_behind(client, reference):
    # Regression: a Client that failed to connect stayed Dask's global default, and
    # as_completed tracked our futures on that dead client's loop in any thread without its
    # own default, so measure() in a thread hung (CI ran into it after the bad-address test).
    distributed = pytest.importorskip("distributed")
    with pytest.raises(ValueError, match="cannot connect"):
        measure(NET, X, scheduler="foo://nowhere", **KW)
    assert in_a_thread(distributed.default_client) is client
    assert_identical(in_a_thread(measure, NET, X, scheduler=client, **KW), reference)


def test_a_lost_worker_is_recomputed_not_dropped(client, reference):
    # runs last: the cluster loses a worker (its nanny starts a new one)
    pids = client.run(os.getpid)
    pool = ThreadPoolExecutor(1)
    try:
        running = pool.submit(measure, NET, X, scheduler=client, **KW)
        victim = busy_worker(client)
        os.kill(pids[victim], signal.SIGKILL)
        result = running.result(timeout=120)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    assert victim not in client.scheduler_info()["workers"]
    assert_identical(result, reference)
