"""Ensembles of real MLPs, batched over the ensemble axis with PyTorch.

An :class:`Ensemble` draws ``size`` independent networks initialized exactly as the
:class:`~pdlt.network.Network` says (book (2.19)-(2.22)): ``W^(l)_{ij} ~ N(0, C_W^(l)/n_{l-1})``
(or uniform with that variance, footnote 9), ``b^(l)_i ~ N(0, C_b^(l))``.  The networks come
in deterministic *blocks*: block ``k`` is drawn from its own generator seeded by
``(seed, k)``, so any block can be regenerated alone, on any worker, and the same seed on the
same device gives the same networks however the work is split.

Parameters of a block are a dict ``{"W1": (M, n_1, n_0), "b1": (M, n_1), ...}`` with the
ensemble axis first; ``forward`` returns the preactivations ``z^(l)`` of every layer with
shape ``(M, N, n_l)`` (ensemble, input, neuron).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..network import Network

__all__ = ["Ensemble", "block_seed", "forward", "resolve_device", "resolve_dtype"]

Params = dict[str, torch.Tensor]


def block_seed(seed: int, block: int) -> int:
    """The generator seed of block ``block`` of an ensemble seeded with ``seed``.

    Derived with :class:`numpy.random.SeedSequence` so blocks are statistically independent and
    the seed of a block does not depend on how many blocks or workers there are.
    """
    state = np.random.SeedSequence([int(seed), int(block)]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"cpu"``, ``"cuda"``/``"cuda:k"``; a clear ValueError if CUDA is not available."""
    try:
        dev = torch.device("cpu" if device is None else device)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available on this machine")
    return dev


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``float64`` (default everywhere on the CPU) or ``float32``."""
    table = {
        "float64": torch.float64,
        "float32": torch.float32,
        torch.float64: torch.float64,
        torch.float32: torch.float32,
    }
    if dtype not in table:
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    return table[dtype]


@dataclass(frozen=True)
class Ensemble:
    """``size`` networks drawn from ``network``'s initialization distribution.

    Parameters
    ----------
    network : Network
        Must have finite hidden widths and a known input width ``n_in``.
    size : int
        Number of networks ``M``.
    seed : int
    block_size : int
        Networks per block (the unit of seeding, merging and checkpointing).
    device, dtype : str
        ``"cpu"`` or ``"cuda"``; ``"float64"`` or ``"float32"``.
    """

    network: Network
    size: int
    seed: int = 0
    block_size: int = 64
    device: str = "cpu"
    dtype: str = "float64"

    def __post_init__(self) -> None:
        self.network.require_finite_width("an ensemble of real networks")
        if self.network.n_in is None:
            raise ValueError("the ensemble needs the input width: give the network n_in")
        for name in ("size", "block_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        resolve_device(self.device)
        resolve_dtype(self.dtype)

    @property
    def n_blocks(self) -> int:
        return math.ceil(self.size / self.block_size)

    def block_len(self, block: int) -> int:
        """Number of networks in ``block`` (the last block may be shorter)."""
        if not 0 <= block < self.n_blocks:
            raise ValueError(f"block must be in 0..{self.n_blocks - 1}, got {block}")
        return min(self.block_size, self.size - block * self.block_size)

    def params(self, block: int) -> Params:
        """Sample the parameters of one block (deterministic given seed, block and device).

        The draw is made in float64 and rounded to ``dtype``, so a float32 ensemble holds the
        same networks as the float64 one with the same seed.
        """
        m = self.block_len(block)
        dev, dt = resolve_device(self.device), resolve_dtype(self.dtype)
        gen = torch.Generator(device=dev)
        gen.manual_seed(block_seed(self.seed, block))
        net = self.network
        widths = [int(n) for n in net.widths]  # type: ignore[arg-type]
        params: Params = {}
        # draw in float64 and round, so float32 ensembles are the same networks, rounded
        f64 = torch.float64
        for ell in range(1, net.depth + 1):
            fan_in, fan_out = widths[ell - 1], widths[ell]
            C_b, C_W = net.variances(ell)
            std_w = math.sqrt(C_W / fan_in)
            if net.weight_dist == "gaussian":
                W = torch.randn(m, fan_out, fan_in, generator=gen, device=dev, dtype=f64) * std_w
            else:
                u = torch.rand(m, fan_out, fan_in, generator=gen, device=dev, dtype=f64)
                W = (2.0 * u - 1.0) * (math.sqrt(3.0) * std_w)
            b = torch.randn(m, fan_out, generator=gen, device=dev, dtype=f64)
            params[f"W{ell}"] = W.to(dt)
            params[f"b{ell}"] = (b * math.sqrt(C_b)).to(dt)
        return params

    def blocks(self) -> Iterator[tuple[int, Params]]:
        for k in range(self.n_blocks):
            yield k, self.params(k)


def forward(
    params: Params, x: torch.Tensor, network: Network, upto: int | None = None
) -> list[torch.Tensor]:
    """Preactivations of every layer for a batch of networks (2.5); residual (B.3).

    Parameters
    ----------
    params : dict
        ``W{l}`` of shape (M, n_l, n_{l-1}) and ``b{l}`` of shape (M, n_l).
    x : Tensor, shape (N, n_0)
        Inputs (shared by all networks).
    upto : int, optional
        Last layer to compute (default ``L``).

    Returns
    -------
    list of Tensor
        ``z[l-1]`` of shape (M, N, n_l) for ``l = 1..upto``.
    """
    sigma = network.activation.torch_fn
    L = network.depth if upto is None else upto
    gamma = network.gamma
    zs: list[torch.Tensor] = []
    h = x.unsqueeze(0)
    for ell in range(1, L + 1):
        z = torch.matmul(h, params[f"W{ell}"].transpose(-1, -2)) + params[f"b{ell}"].unsqueeze(-2)
        if gamma[ell - 1]:
            z = z + float(gamma[ell - 1]) * zs[-1]  # residual connection (B.3)
        zs.append(z)
        h = sigma(z)
    return zs
