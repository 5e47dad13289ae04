"""Training ensembles of real networks and recording their predictions (spec/04 §5.2).

:func:`train` draws an :class:`~pdlt.empirical.ensemble.Ensemble` (same seeds, same
networks as every other ensemble in pdlt) and trains every network on the same data:

* ``optimizer="gd"``: full-batch gradient descent with the book's learning-rate tensor (8.6),
  ``b <- b - eta lambda_b dL/db``, ``W <- W - eta (lambda_W/n_{l-1}) dL/dW`` (7.11);
* ``optimizer="sgd"``: the same with a random mini-batch of ``batch_size`` training inputs per
  step (7.10) (the loss stays a sum over the batch);
* ``optimizer="adam"``: plain Adam (Kingma & Ba) with step ``eta`` on every parameter, for
  comparison (it is not a linear function of the gradient, so the kernel theory of ch. 10
  does not predict it).

Plain gradient descent in the standard parameterization is ``optimizer="gd"`` on a network
with ``lambda_b = 1``, ``lambda_W^(l) = n_{l-1}`` (:func:`pdlt.theory.learning_rates.
plain_gradient_descent`).  Losses are the book's extensive ones (7.4): ``mse`` = ``1/2 sum
(z - y)^2``; ``cross_entropy`` = ``-sum p log softmax(z)`` with ``p = softmax(y)`` for target
logits ``y`` (10.37), or smoothed one-hot ``p`` for integer class labels.

All networks of a chunk train at once: parameters carry the ensemble axis first and one
backward pass of the summed loss gives every network its own gradient (the networks share
no parameters).  Predictions on the test inputs are recorded at ``record_steps``.  A
checkpoint file (written atomically: temporary file, then ``os.replace``) lets an interrupted
run resume where it stopped, with the same result as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .._io import write_atomic
from .._progress import Progress
from ..network import Network
from .distributed import map_shards
from .ensemble import Ensemble, Params, forward, resolve_dtype
from .estimators import require_ensemble_memory
from .observables import learning_rates
from .statistics import Accumulator, Estimate

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["TrainingResult", "train", "default_record_steps", "OPTIMIZERS", "LOSSES"]

OPTIMIZERS = ("gd", "sgd", "adam")
LOSSES = ("mse", "cross_entropy")
_ELEMENT_BUDGET = 2**24  # parameter-sized elements per chunk (x4 for grads/optimizer state)
_CHECKPOINT_VERSION = 1


# --------------------------------------------------------------------------------------------
# Result


@dataclass(frozen=True, eq=False)
class TrainingResult:
    """Recorded predictions of a trained ensemble.

    Attributes
    ----------
    network : Network
    record_steps : ndarray, shape (R,)
        Steps at which predictions were recorded (0 = initialization).
    test_outputs : ndarray, shape (R, M, N_B, n_L)
        ``z^(L)`` on the test inputs of every network at each recorded step.
    train_loss : ndarray, shape (R, M)
        Training loss ``L_A`` of every network at each recorded step.
    initial : ndarray, shape (M, N_A + N_B, n_L)
        Outputs at initialization on training then test inputs (for control variates).
    targets : ndarray, shape (N_A, n_L)
        The targets the networks trained on (logits for cross-entropy).
    block_size : int
        Networks per ensemble block (the jackknife unit).
    meta : dict
    """

    network: Network
    record_steps: np.ndarray
    test_outputs: np.ndarray
    train_loss: np.ndarray
    initial: np.ndarray
    targets: np.ndarray
    block_size: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.test_outputs.shape[1]

    @property
    def final(self) -> np.ndarray:
        """Test outputs after the last step, shape (M, N_B, n_L)."""
        return self.test_outputs[-1]

    def _index(self, step: int | None) -> int:
        if step is None:
            return len(self.record_steps) - 1
        hits = np.flatnonzero(self.record_steps == step)
        if hits.size == 0:
            raise ValueError(
                f"step {step} was not recorded; recorded steps: {self.record_steps.tolist()}"
            )
        return int(hits[0])

    def accumulator(self, values: np.ndarray) -> Accumulator:
        """Per-network ``values`` (M, N_B, n_L) accumulated by ensemble block.

        Features: ``"z"`` (N_B, n_L) and ``"zz"`` (n_L, N_B, N_B), the per-output outer
        product, for :func:`ensemble_mean` and :func:`ensemble_covariance`.
        """
        acc = Accumulator()
        zz = np.einsum("mbi,mci->mibc", values, values)
        for start in range(0, values.shape[0], self.block_size):
            stop = start + self.block_size
            acc.add(start // self.block_size, {"z": values[start:stop], "zz": zz[start:stop]})
        return acc

    def mean(self, step: int | None = None) -> Estimate:
        """Ensemble mean of the test outputs at ``step`` (default: last), shape (N_B, n_L)."""
        return ensemble_mean(self.accumulator(self.test_outputs[self._index(step)]))

    def covariance(self, step: int | None = None) -> Estimate:
        """Ensemble covariance ``Cov[z_{i;b1}, z_{i;b2}]`` averaged over outputs ``i``.

        Shape (N_B, N_B); the theory's (10.41) is the same for every ``i``.
        """
        return ensemble_covariance(self.accumulator(self.test_outputs[self._index(step)]))

    def __repr__(self) -> str:
        return (
            f"TrainingResult({self.network!r}, M={self.size}, steps={int(self.record_steps[-1])}, "
            f"optimizer={self.meta.get('optimizer')!r}, loss={self.meta.get('loss')!r})"
        )


def ensemble_mean(acc: Accumulator) -> Estimate:
    """Mean of the ``"z"`` feature with its standard error (independent networks)."""
    return Estimate(acc.mean("z"), acc.stderr("z"))


def ensemble_covariance(acc: Accumulator) -> Estimate:
    """Output-averaged covariance from the ``"z"``/``"zz"`` features, jackknife errors.

    ``(M/(M-1)) (1/n_L) sum_i (E[z_i z_i^T] - E[z_i] E[z_i]^T)``; the Bessel factor uses the
    full count in every jackknife replicate (an O(1/M^2) effect on the error).
    """
    M = acc.count
    if M < 2:
        raise ValueError("a covariance needs at least 2 networks")

    def fn(means: Mapping[str, np.ndarray]) -> np.ndarray:
        z = means["z"]  # (N_B, n_L)
        outer = np.einsum("bi,ci->ibc", z, z)
        return M / (M - 1) * np.mean(means["zz"] - outer, axis=0)

    est = acc.estimate(fn, ("z", "zz"))
    assert isinstance(est, Estimate)
    return est


# --------------------------------------------------------------------------------------------
# Validation helpers


def default_record_steps(steps: int, count: int = 16) -> np.ndarray:
    """About ``count`` steps from 0 to ``steps``, evenly spaced in ``log(1 + t)``."""
    grid = np.unique(np.round(np.expm1(np.linspace(0.0, np.log1p(steps), count))).astype(int))
    return np.unique(np.concatenate([[0], grid, [steps]]))


def _as_table(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be an (N, n_0) table with N >= 1, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _targets(y: Any, n_train: int, n_out: int, loss: str, label_smoothing: float) -> np.ndarray:
    arr = np.asarray(y)
    if loss == "cross_entropy" and arr.ndim == 1 and np.issubdtype(arr.dtype, np.integer):
        if n_out < 2:
            raise ValueError("class labels need a network with n_out >= 2 classes")
        if arr.min() < 0 or arr.max() >= n_out:
            raise ValueError(f"class labels must be in 0..{n_out - 1}, got {arr.tolist()}")
        if not 0 < label_smoothing < 1:
            raise ValueError(
                "hard class labels put the cross-entropy targets at infinity (§10.2.3); give "
                f"label_smoothing in (0, 1), got {label_smoothing!r}"
            )
        p = np.full((arr.size, n_out), label_smoothing / (n_out - 1))
        p[np.arange(arr.size), arr] = 1.0 - label_smoothing
        arr = np.log(p)  # target logits: softmax(log p) = p
    from ..learning.bayes import as_targets

    out = as_targets(arr, None, "y_train")
    if out.shape != (n_train, n_out):
        raise ValueError(
            f"y_train must have shape ({n_train}, {n_out}) (training inputs, outputs n_L), "
            f"got {out.shape}"
        )
    return out


def _positive_int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")
    return int(v)


def _record_steps(record_steps: Sequence[int] | None, steps: int) -> np.ndarray:
    if record_steps is None:
        return default_record_steps(steps)
    rs = np.unique(np.asarray(list(record_steps), dtype=np.int64))
    if rs.size == 0 or rs.min() < 0 or rs.max() > steps:
        raise ValueError(f"record_steps must be integers in 0..{steps}, got {list(record_steps)}")
    return rs


# --------------------------------------------------------------------------------------------
# The training loop of one chunk of networks


def _loss(z: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    """Per-network extensive loss, shape (m,), for outputs (m, N_A, n_L)."""
    if loss == "mse":
        return 0.5 * ((z - y) ** 2).sum(dim=(1, 2))
    p = torch.softmax(y, dim=-1)
    return -(p * torch.log_softmax(z, dim=-1)).sum(dim=(1, 2))


@dataclass
class _ChunkState:
    """Everything needed to continue training one chunk (saved in checkpoints)."""

    params: Params
    opt: dict[str, torch.Tensor]
    step: int
    test_outputs: list[np.ndarray]
    train_loss: list[np.ndarray]
    initial: np.ndarray | None


class _Trainer:
    def __init__(self, network: Network, cfg: dict[str, Any], x: torch.Tensor, y: torch.Tensor):
        self.network = network
        self.cfg = cfg
        self.x = x
        self.y = y
        self.n_train = y.shape[0]
        self.lam = learning_rates(network, network.depth)

    @classmethod
    def on_device(
        cls, network: Network, cfg: dict[str, Any], x: np.ndarray, y: np.ndarray
    ) -> _Trainer:
        """A trainer with inputs ``x`` and targets ``y`` on ``cfg``'s device and dtype."""
        dt, dev = resolve_dtype(cfg["dtype"]), torch.device(cfg["device"])
        return cls(
            network,
            cfg,
            torch.tensor(x, dtype=dt, device=dev),
            torch.tensor(y, dtype=dt, device=dev),
        )

    def outputs(self, params: Params) -> torch.Tensor:
        return forward(params, self.x, self.network)[-1]

    def record(self, state: _ChunkState, keep: bool = True) -> None:
        with torch.no_grad():
            z = self.outputs(state.params)
            loss = _loss(z[:, : self.n_train], self.y, self.cfg["loss"])
        if state.initial is None:
            state.initial = z.cpu().numpy().copy()
        if not keep:
            return
        state.test_outputs.append(z[:, self.n_train :].cpu().numpy().copy())
        state.train_loss.append(loss.cpu().numpy().copy())

    def batch(self, key: Sequence[int], step: int) -> torch.Tensor | None:
        bs = self.cfg["batch_size"]
        if self.cfg["optimizer"] != "sgd" or bs is None or bs >= self.n_train:
            return None
        rng = np.random.default_rng([self.cfg["seed"], *key, step])
        idx = np.sort(rng.choice(self.n_train, size=bs, replace=False))
        return torch.as_tensor(idx, device=self.x.device)

    def step(self, state: _ChunkState, key: Sequence[int]) -> None:
        params = state.params
        trained = self.trained(params)
        for k in trained:
            params[k].requires_grad_(True)
        # the step needs the training inputs only (the test ones are evaluated when recorded)
        z = forward(params, self.x[: self.n_train], self.network)[-1]
        y = self.y
        idx = self.batch(key, state.step)
        if idx is not None:
            z, y = z.index_select(1, idx), y.index_select(0, idx)
        total = _loss(z, y, self.cfg["loss"]).sum()
        grads = torch.autograd.grad(total, [params[k] for k in trained])
        eta = self.cfg["eta"]
        with torch.no_grad():
            for k, g in zip(trained, grads, strict=True):
                p = params[k].requires_grad_(False)
                if self.cfg["optimizer"] == "adam":
                    self._adam(state, k, p, g)
                else:
                    p.sub_(g, alpha=eta * self.lam[k])  # (7.11) with the tensor (8.6)
        state.step += 1

    def trained(self, params: Params) -> list[str]:
        """Parameters that move: all for Adam; those with a nonzero rate (8.6) for GD/SGD."""
        if self.cfg["optimizer"] == "adam":
            return list(params)
        return [k for k in params if self.lam[k] != 0.0]

    def _adam(self, state: _ChunkState, k: str, p: torch.Tensor, g: torch.Tensor) -> None:
        b1, b2 = self.cfg["betas"]
        t = state.step + 1
        m = state.opt[f"m_{k}"].mul_(b1).add_(g, alpha=1 - b1)
        v = state.opt[f"v_{k}"].mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v / (1 - b2**t)).sqrt_().add_(self.cfg["adam_eps"])
        p.addcdiv_(m, denom, value=-self.cfg["eta"] / (1 - b1**t))


# --------------------------------------------------------------------------------------------
# Checkpoints


def _fingerprint(cfg: dict[str, Any], network: Network, arrays: Sequence[np.ndarray]) -> str:
    import hashlib
    import json

    h = hashlib.sha256()
    h.update(json.dumps({**cfg, "network": network.to_dict()}, sort_keys=True).encode())
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()


def _save_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda fh: torch.save(payload, fh))


def _load_checkpoint(path: Path, fingerprint: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ValueError(f"cannot read the checkpoint {str(path)!r}: {exc}") from None
    if not isinstance(payload, dict) or payload.get("version") != _CHECKPOINT_VERSION:
        raise ValueError(f"{str(path)!r} is not a pdlt training checkpoint (version mismatch)")
    if payload.get("fingerprint") != fingerprint:
        raise ValueError(
            f"the checkpoint {str(path)!r} belongs to a different run (network, data, seed or "
            "training settings differ); delete it or choose another checkpoint file"
        )
    return payload


# --------------------------------------------------------------------------------------------
# Public entry point


def train(
    network: Network,
    x_train: Any,
    y_train: Any,
    x_test: Any,
    *,
    size: int = 64,
    seed: int = 0,
    steps: int = 1000,
    eta: float | None = None,
    optimizer: str = "gd",
    loss: str = "mse",
    batch_size: int | None = None,
    record_steps: Sequence[int] | None = None,
    block_size: int | None = None,
    label_smoothing: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.999),
    adam_eps: float = 1e-8,
    device: str = "cpu",
    dtype: str = "float64",
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_seconds: float = 60.0,
    progress: bool | None = None,
    scheduler: str | Client | None = None,
) -> TrainingResult:
    """Train ``size`` networks drawn from ``network`` and record their test predictions.

    Parameters
    ----------
    network : Network
        Finite hidden widths; ``n_in`` is taken from the inputs if unset.
    x_train, x_test : array_like, shape (N_A, n_0), (N_B, n_0)
    y_train : array_like, shape (N_A, n_L) or (N_A,)
        Targets (MSE); target logits (cross-entropy); or integer class labels (cross-entropy,
        smoothed by ``label_smoothing``).
    size, seed, block_size, device, dtype
        The :class:`Ensemble` (``block_size`` default ``ceil(size/16)``).
    steps : int
        Number of optimizer steps.
    eta : float, optional
        Global step size.  Default for GD/SGD: ``1/lambda_max(Theta~)`` of the infinite-width
        NTK on the training inputs (a stable choice, ``eta lambda_max < 2``); Adam: 1e-3.
    optimizer : {"gd", "sgd", "adam"}
    loss : {"mse", "cross_entropy"}
    batch_size : int, optional
        SGD mini-batch size (default: half the training set, at least 1).
    record_steps : sequence of int, optional
        Steps at which to record (default :func:`default_record_steps`); ``steps`` is always
        the last recorded step.
    checkpoint : path, optional
        Resume from this file if it exists; write it (atomically) every ``checkpoint_seconds``,
        after each chunk of networks and on Ctrl-C.  A checkpoint of another run is refused.
    progress : bool, optional
        Progress bar over networks x steps (default: when stderr is a terminal).
    scheduler : str or distributed.Client, optional
        Train the chunks of networks as tasks on this Dask cluster (``"tcp://host:8786"``, or
        a client); default: in this process.  A chunk is a group of consecutive blocks that
        fits a memory budget (so small networks train in few chunks), the same in both
        cases: same seed, same result, bit for bit, for any number of workers.  On a cluster
        the checkpoint is written after each finished chunk (a chunk restarts from its
        beginning); a worker lost mid-run has its chunks recomputed.

    Returns
    -------
    TrainingResult

    Raises
    ------
    KeyboardInterrupt
        After saving the checkpoint (when one is given), so the run can be resumed.
    """
    from ..learning.bayes import _stack_inputs

    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    xa = _as_table(x_train, "x_train")
    xb = _as_table(x_test, "x_test")
    x_all, n_train = _stack_inputs(xa, xb)
    if network.n_in is None:
        network = network.replace(n_in=xa.shape[1])
    elif network.n_in != xa.shape[1]:
        raise ValueError(
            f"inputs have n_0 = {xa.shape[1]} but the network has n_in = {network.n_in}"
        )
    network.require_finite_width("training real networks")
    y = _targets(y_train, n_train, network.n_out, loss, label_smoothing)
    size = _positive_int(size, "size")
    steps_i = int(steps) if not isinstance(steps, bool) and int(steps) == steps else -1
    if steps_i < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    rs = _record_steps(record_steps, steps_i)
    if block_size is None:
        block_size = max(1, math.ceil(size / 16))
    block_size = _positive_int(block_size, "block_size")
    if optimizer == "sgd":
        if batch_size is None:
            batch_size = max(1, n_train // 2)
        batch_size = _positive_int(batch_size, "batch_size")
        if batch_size > n_train:
            raise ValueError(f"batch_size must be at most the {n_train} training inputs")
    eta_f = _default_eta(network, xa, optimizer) if eta is None else float(eta)
    if not math.isfinite(eta_f) or eta_f <= 0:
        raise ValueError(f"eta must be finite and > 0, got {eta!r}")
    if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1) or adam_eps <= 0:
        raise ValueError("Adam needs 0 <= beta1, beta2 < 1 and eps > 0")

    ens = Ensemble(network, size, int(seed), block_size, device, dtype)
    require_ensemble_memory(network, block_size, dtype)
    cfg = {
        "optimizer": optimizer,
        "loss": loss,
        "eta": eta_f,
        "steps": steps_i,
        "batch_size": batch_size if optimizer == "sgd" else None,
        "betas": list(betas),
        "adam_eps": adam_eps,
        "seed": int(seed),
        "size": size,
        "block_size": block_size,
        "dtype": dtype,
        "device": device,
        "record_steps": rs.tolist(),
    }
    dt = resolve_dtype(dtype)
    dev = torch.device(device)
    trainer = _Trainer.on_device(network, cfg, x_all, y)
    chunks = _chunks(ens, optimizer)
    ckpt_path = None if checkpoint is None else Path(checkpoint)
    fp = _fingerprint(cfg, network, [x_all, y])
    saved = _load_checkpoint(ckpt_path, fp) if ckpt_path is not None else None
    done: dict[int, dict[str, np.ndarray]] = {} if saved is None else saved["done"]
    current: dict[str, Any] | None = None if saved is None else saved.get("current")
    t_start = time.monotonic()

    def save(cur: dict[str, Any] | None) -> None:
        if ckpt_path is not None:
            payload = {"version": _CHECKPOINT_VERSION, "fingerprint": fp, "done": done}
            payload["current"] = cur
            _save_atomic(ckpt_path, payload)

    total_work = size * max(steps_i, 1)
    with Progress(total_work, f"training ({optimizer})", enabled=progress) as bar:
        bar.update(sum(len(c) for i, c in enumerate(chunks) if i in done) * max(steps_i, 1))
        if scheduler is not None:
            todo = [ci for ci in range(len(chunks)) if ci not in done]
            fn = partial(_train_shard, network=network, cfg=cfg, x=x_all, y=y)

            def collect(i: int, out: dict[str, np.ndarray]) -> None:
                done[todo[i]] = out
                save(None)
                bar.update(out["initial"].shape[0] * max(steps_i, 1))

            try:
                map_shards(fn, [chunks[ci] for ci in todo], collect, scheduler=scheduler)
            except KeyboardInterrupt:
                save(None)
                raise
        last_save = time.monotonic()
        for ci, blocks in enumerate(chunks):  # in this process (on a cluster: all done)
            if ci in done:
                continue
            m = sum(ens.block_len(b) for b in blocks)
            if current is not None and current["chunk"] == ci:
                state = _restore(current["state"], dt, dev)
                bar.update(m * state.step)
            else:
                state = _initial_state(ens, blocks, optimizer)
            current = None

            def after_step(state: _ChunkState, ci: int = ci, m: int = m) -> None:
                nonlocal last_save
                bar.update(m)
                if ckpt_path is not None and time.monotonic() - last_save > checkpoint_seconds:
                    save({"chunk": ci, "state": _state_dict(state)})
                    last_save = time.monotonic()

            try:
                done[ci] = _run_chunk(trainer, state, blocks, after_step)
            except KeyboardInterrupt:
                save({"chunk": ci, "state": _state_dict(state)})
                raise
            save(None)
            last_save = time.monotonic()

    order = range(len(chunks))
    test_outputs = np.concatenate([done[i]["test_outputs"] for i in order], axis=0)
    train_loss = np.concatenate([done[i]["train_loss"] for i in order], axis=0)
    initial = np.concatenate([done[i]["initial"] for i in order], axis=0)
    bad = ~np.isfinite(test_outputs[:, -1]).all(axis=(1, 2))
    meta = {
        **cfg,
        "torch": torch.__version__,
        "seconds": time.monotonic() - t_start,
        "diverged": int(bad.sum()),
    }
    if bad.any():
        import warnings

        warnings.warn(
            f"{int(bad.sum())} of {size} networks diverged (non-finite outputs); lower eta",
            RuntimeWarning,
            stacklevel=2,
        )
    return TrainingResult(
        network=network,
        record_steps=rs,
        test_outputs=np.moveaxis(test_outputs, 1, 0),
        train_loss=np.moveaxis(train_loss, 1, 0),
        initial=initial,
        targets=y,
        block_size=block_size,
        meta=meta,
    )


def _default_eta(network: Network, x_train: np.ndarray, optimizer: str) -> float:
    if optimizer == "adam":
        return 1e-3
    from ..theory.flow import flow

    Theta = flow(network, x_train, fields=("Theta",), layers=[-1])
    lam_max = float(np.linalg.eigvalsh(Theta["Theta"][-1])[-1])
    return 1.0 / lam_max


def _chunks(ens: Ensemble, optimizer: str) -> list[list[int]]:
    """Consecutive blocks trained together, within the element budget."""
    w = [int(n) for n in ens.network.widths]  # type: ignore[arg-type]
    per_net = sum(w[i] * (w[i - 1] + 1) for i in range(1, len(w)))
    per_net *= 4 if optimizer == "adam" else 2
    cap = max(1, _ELEMENT_BUDGET // per_net)
    out: list[list[int]] = []
    count = 0
    for b in range(ens.n_blocks):
        m = ens.block_len(b)
        if out and count + m <= cap:
            out[-1].append(b)
            count += m
        else:
            out.append([b])
            count = m
    return out


def _run_chunk(
    trainer: _Trainer,
    state: _ChunkState,
    blocks: Sequence[int],
    after_step: Callable[[_ChunkState], None],
) -> dict[str, np.ndarray]:
    """Train one chunk from ``state`` to the last step; its recorded outputs and losses.

    Parameters
    ----------
    trainer : _Trainer
    state : _ChunkState
        Updated in place (so an interrupted chunk can be saved).
    blocks : sequence of int
        The chunk's blocks (they key the SGD mini-batches).
    after_step : callable
        Called with the state after every step.
    """
    record = set(trainer.cfg["record_steps"])
    if state.initial is None:
        trainer.record(state, keep=0 in record)
    while state.step < trainer.cfg["steps"]:
        trainer.step(state, blocks)
        if state.step in record:
            trainer.record(state)
        after_step(state)
    return {
        "test_outputs": np.stack(state.test_outputs, axis=1),
        "train_loss": np.stack(state.train_loss, axis=1),
        "initial": state.initial,
    }


def _train_shard(
    blocks: Sequence[int],
    *,
    network: Network,
    cfg: dict[str, Any],
    x: np.ndarray,
    y: np.ndarray,
) -> dict[str, np.ndarray]:
    """Train one chunk of blocks from initialization (a task of a distributed run).

    Parameters
    ----------
    blocks : sequence of int
    network : Network
    cfg : dict
        The run's settings (as built by :func:`train`).
    x : ndarray, shape (N_A + N_B, n_0)
        Training then test inputs.
    y : ndarray, shape (N_A, n_L)
        Targets.
    """
    ens = Ensemble(
        network, cfg["size"], cfg["seed"], cfg["block_size"], cfg["device"], cfg["dtype"]
    )
    trainer = _Trainer.on_device(network, cfg, x, y)
    state = _initial_state(ens, blocks, cfg["optimizer"])
    return _run_chunk(trainer, state, blocks, lambda _: None)


def _initial_state(ens: Ensemble, blocks: Sequence[int], optimizer: str) -> _ChunkState:
    parts = [ens.params(b) for b in blocks]
    params = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    opt: dict[str, torch.Tensor] = {}
    if optimizer == "adam":
        for k, v in params.items():
            opt[f"m_{k}"] = torch.zeros_like(v)
            opt[f"v_{k}"] = torch.zeros_like(v)
    return _ChunkState(params, opt, 0, [], [], None)


def _state_dict(state: _ChunkState) -> dict[str, Any]:
    return {
        "params": {k: v.detach().cpu() for k, v in state.params.items()},
        "opt": {k: v.detach().cpu() for k, v in state.opt.items()},
        "step": state.step,
        "test_outputs": list(state.test_outputs),
        "train_loss": list(state.train_loss),
        "initial": state.initial,
    }


def _restore(saved: dict[str, Any], dt: torch.dtype, dev: torch.device) -> _ChunkState:
    return _ChunkState(
        params={k: v.to(device=dev, dtype=dt) for k, v in saved["params"].items()},
        opt={k: v.to(device=dev, dtype=dt) for k, v in saved["opt"].items()},
        step=int(saved["step"]),
        test_outputs=list(saved["test_outputs"]),
        train_loss=list(saved["train_loss"]),
        initial=saved["initial"],
    )
