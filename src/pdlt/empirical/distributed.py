"""Ensemble work as a map-reduce over shards: in-process, or on a Dask distributed cluster.

A *shard* is a unit of ensemble work whose result does not depend on where it runs: a group
of ensemble blocks, each drawn from its own seed :func:`~pdlt.empirical.ensemble.block_seed`
``(seed, block)``.  :func:`map_shards` computes every shard and hands each result to a callback
as it arrives; callers reduce the results in a fixed order (sorted block index, see
:class:`~pdlt.empirical.statistics.Accumulator`), so the outcome is bit-identical however many
workers there are and in whatever order they finish.

Without a scheduler the shards run one after another in this process (no cluster, no Dask
needed).  With ``scheduler="tcp://host:8786"`` (or a ``distributed.Client``) they run as Dask
tasks on an existing cluster; Dask reschedules the tasks of a worker that dies, so a lost
worker's shards are recomputed, never dropped.  Dask is imported only when a scheduler is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["map_shards", "connect"]

S = TypeVar("S")
R = TypeVar("R")

_CONNECT_TIMEOUT = "20s"


def _require_distributed() -> Any:
    """The ``distributed`` package, or an ImportError that says how to install it."""
    try:
        import distributed
    except ImportError:
        raise ImportError(
            "running on a Dask cluster needs Dask distributed: pip install 'pdlt[dask]'"
        ) from None
    return distributed


@contextmanager
def connect(scheduler: str | Client) -> Iterator[Client]:
    """A Dask client for ``scheduler``: an address (connected here, closed on exit) or a client.

    Parameters
    ----------
    scheduler : str or distributed.Client
        ``"tcp://host:port"`` of a running scheduler, or an existing client (left open).

    Raises
    ------
    ImportError
        If Dask distributed is not installed.
    ValueError
        If the scheduler cannot be reached.
    """
    if not isinstance(scheduler, str):
        yield scheduler
        return
    distributed = _require_distributed()
    try:
        # not the global default: a client that failed to connect would otherwise stay the
        # default of every thread, and Dask helpers that fall back on it would wait forever
        client = distributed.Client(scheduler, timeout=_CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        msg = " ".join(str(exc).split())
        raise ValueError(f"cannot connect to the Dask scheduler at {scheduler!r}: {msg}") from None
    try:
        yield client
    finally:
        client.close()


def map_shards(
    fn: Callable[[S], R],
    shards: Sequence[S],
    on_result: Callable[[int, R], None],
    *,
    scheduler: str | Client | None = None,
) -> None:
    """Compute ``fn(shard)`` for every shard and pass ``(index, result)`` to ``on_result``.

    Parameters
    ----------
    fn : callable
        A module-level function (it is pickled to the workers), deterministic in its shard.
    shards : sequence
        The shards, e.g. lists of block indices.
    on_result : callable
        Called in this process, once per shard, in order of completion (with a scheduler) or
        of ``shards`` (without); reduce results by index, not by arrival, to stay exact.
    scheduler : str or distributed.Client, optional
        Run on this Dask cluster (not contacted when there are no shards); default: in this
        process.

    Notes
    -----
    On KeyboardInterrupt (or any error) the shards not yet finished are cancelled on the
    cluster and the exception propagates; results already passed to ``on_result`` are kept by
    the caller.
    """
    if scheduler is None or not shards:
        for i, shard in enumerate(shards):
            on_result(i, fn(shard))
        return
    distributed = _require_distributed()
    with connect(scheduler) as client:
        futures = client.map(fn, list(shards), pure=False)
        index = {future.key: i for i, future in enumerate(futures)}
        try:
            # this client's event loop, not the default client's (another thread may have none)
            for future in distributed.as_completed(futures, loop=client.loop):
                on_result(index[future.key], future.result())
                future.release()
        finally:
            client.cancel([f for f in futures if not f.done()])
