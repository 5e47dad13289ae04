"""Statistics for ensembles of networks: blocked accumulation, jackknife errors, cumulants, fits.

Every empirical quantity in pdlt is an estimator built from ensemble means of per-network
*features* (e.g. the stochastic metric ``G_hat`` of shape ``(N, N)``, or products of such metrics
of shape ``(N, N, N, N)``).  The ensemble of ``M`` networks is split into deterministic *blocks*:
block ``b`` holds the networks generated from the seed pair ``(seed, b)``.

:class:`Accumulator` keeps, for each block, the count, the mean and the sum of squared deviations
of every feature.  Blocks can be accumulated in any number of sub-chunks, on any number of
processes or machines, and merged exactly.  Every reduction over blocks runs in sorted
block-index order, so the same set of blocks gives bit-identical results however the blocks were
distributed and in whatever order the accumulators were merged.

Errors of (possibly nonlinear) estimators come from the delete-one-block jackknife with the
weights of Busing, Meijer & van der Leeden (1999) for blocks of unequal size; it reduces to the
ordinary grouped jackknife when all blocks have the same size.

References
----------
.. [RY] D. A. Roberts and S. Yaida, *The Principles of Deep Learning Theory*, Cambridge
   University Press (2022).
.. [BMV] F. M. T. A. Busing, E. Meijer and R. van der Leeden, "Delete-m jackknife for unequal
   m", *Statistics and Computing* 9, 3-8 (1999).
.. [CGL] T. F. Chan, G. H. Golub and R. J. LeVeque, "Updating formulae and a pairwise algorithm
   for computing sample variances", Stanford CS report STAN-CS-79-773 (1979).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import combinations

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "Accumulator",
    "Estimate",
    "InverseWidthFit",
    "connected_correlator",
    "covariance_estimate",
    "cumulant_from_moments",
    "excess_kurtosis",
    "fit_inverse_width",
    "set_partitions",
]

_STATE_VERSION = 1
_MAX_CORRELATOR_ORDER = 6

EstimatorFn = Callable[[Mapping[str, np.ndarray]], ArrayLike | Mapping[str, ArrayLike]]


# --------------------------------------------------------------------------------------------
# Estimate


@dataclass(frozen=True, eq=False)
class Estimate:
    """A point estimate with its standard error.

    Attributes
    ----------
    value : ndarray, shape (...)
        The estimate.
    stderr : ndarray, shape (...)
        Its standard error (same shape as `value`).
    bias_corrected : ndarray, shape (...), optional
        The jackknife bias-corrected estimate, when available.
    """

    value: np.ndarray
    stderr: np.ndarray
    bias_corrected: np.ndarray | None = None

    def __post_init__(self) -> None:
        value = np.asarray(self.value, dtype=np.float64)
        stderr = np.asarray(self.stderr, dtype=np.float64)
        if stderr.shape != value.shape:
            raise ValueError(f"stderr shape {stderr.shape} != value shape {value.shape}")
        object.__setattr__(self, "value", value)
        object.__setattr__(self, "stderr", stderr)
        if self.bias_corrected is not None:
            corrected = np.asarray(self.bias_corrected, dtype=np.float64)
            if corrected.shape != value.shape:
                raise ValueError(
                    f"bias_corrected shape {corrected.shape} != value shape {value.shape}"
                )
            object.__setattr__(self, "bias_corrected", corrected)

    def zscore(self, reference: ArrayLike, allowance: ArrayLike = 0.0) -> np.ndarray:
        """Deviation from a reference in units of the combined uncertainty.

        Parameters
        ----------
        reference : array_like, broadcastable to ``value.shape``
            The predicted value, e.g. from the effective theory.
        allowance : array_like, broadcastable to ``value.shape``, default 0
            Uncertainty of the reference itself, e.g. the truncation error of the ``1/n``
            expansion; added in quadrature to `stderr`.

        Returns
        -------
        ndarray
            ``(value - reference) / sqrt(stderr**2 + allowance**2)``.
        """
        reference = np.asarray(reference, dtype=np.float64)
        allowance = np.asarray(allowance, dtype=np.float64)
        return (self.value - reference) / np.sqrt(self.stderr**2 + allowance**2)

    def __repr__(self) -> str:
        if self.value.ndim == 0:
            text = f"Estimate({self.value:.6g} ± {self.stderr:.2g}"
            if self.bias_corrected is not None:
                text += f", bias_corrected={self.bias_corrected:.6g}"
            return text + ")"
        fields = [f"shape={self.value.shape}"]
        for name in ("value", "stderr", "bias_corrected"):
            array = getattr(self, name)
            if array is not None:
                fields.append(f"{name}={np.array2string(array, precision=4, threshold=8)}")
        return "Estimate(" + ", ".join(fields) + ")"


# --------------------------------------------------------------------------------------------
# Accumulator


@dataclass
class _Moments:
    """Count, means and sums of squared deviations of the features of one group of instances."""

    count: int
    mean: dict[str, np.ndarray]
    m2: dict[str, np.ndarray]

    def copy(self) -> _Moments:
        return _Moments(
            self.count,
            {k: v.copy() for k, v in self.mean.items()},
            {k: v.copy() for k, v in self.m2.items()},
        )


def _combine(a: _Moments, b: _Moments) -> _Moments:
    """Chan-Golub-LeVeque parallel update of ``(count, mean, M2)`` [CGL]."""
    count = a.count + b.count
    weight = b.count / count
    cross = a.count * b.count / count
    mean, m2 = {}, {}
    for name, mean_a in a.mean.items():
        delta = b.mean[name] - mean_a
        mean[name] = np.asarray(mean_a + delta * weight)
        m2[name] = np.asarray(a.m2[name] + b.m2[name] + delta**2 * cross)
    return _Moments(count, mean, m2)


class Accumulator:
    """Blocked, mergeable accumulator of per-instance features.

    Each block keeps the count, the mean and the sum of squared deviations (``M2``) of every
    feature; sub-chunks of a block are combined with the parallel update of Chan, Golub and
    LeVeque [CGL].  Reductions over blocks always run in sorted block-index order, so results
    depend only on the set of blocks (and on the sub-chunking inside each block), never on how
    blocks were distributed across accumulators or on the order of :meth:`merge` calls.

    Examples
    --------
    >>> acc = Accumulator()
    >>> acc.add(0, {"x": np.array([1.0, 2.0])})
    >>> acc.add(1, {"x": np.array([3.0])})
    >>> acc.mean("x")
    array(2.)
    """

    def __init__(self) -> None:
        self._blocks: dict[int, _Moments] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._pooled: _Moments | None = None

    # ---- accumulation --------------------------------------------------------------------

    def add(self, block: int, features: Mapping[str, ArrayLike]) -> None:
        """Accumulate a chunk of instances into a block.

        Parameters
        ----------
        block : int
            Block index.  Adding to an existing block combines the chunks.
        features : mapping of str to array_like, each of shape (m, ...)
            The features of ``m >= 1`` instances; ``features[name][i]`` belongs to instance
            ``i``.  Every call must give the same names with the same per-instance shapes.

        Raises
        ------
        ValueError
            If `features` is empty, the names or shapes disagree with earlier calls, the
            features have different numbers of instances, or a feature is not finite.
        """
        block = operator.index(block)
        chunk = self._chunk_moments(features)
        previous = self._blocks.get(block)
        self._blocks[block] = chunk if previous is None else _combine(previous, chunk)
        self._pooled = None

    def _chunk_moments(self, features: Mapping[str, ArrayLike]) -> _Moments:
        if not features:
            raise ValueError("features is empty: give at least one named feature")
        arrays = {name: np.asarray(features[name], dtype=np.float64) for name in sorted(features)}
        shapes = {}
        for name, array in arrays.items():
            if array.ndim == 0 or array.shape[0] == 0:
                raise ValueError(
                    f"feature {name!r} has shape {array.shape}; expected (m, ...) with m >= 1"
                )
            if not np.isfinite(array).all():
                raise ValueError(f"feature {name!r} contains non-finite values (NaN or inf)")
            shapes[name] = array.shape[1:]
        counts = {name: array.shape[0] for name, array in arrays.items()}
        if len(set(counts.values())) != 1:
            raise ValueError(f"features have different numbers of instances: {counts}")
        self._check_layout(shapes)
        mean = {name: np.asarray(array.mean(axis=0)) for name, array in arrays.items()}
        m2 = {
            name: np.asarray(((array - mean[name]) ** 2).sum(axis=0))
            for name, array in arrays.items()
        }
        return _Moments(next(iter(counts.values())), mean, m2)

    def _check_layout(self, shapes: Mapping[str, tuple[int, ...]]) -> None:
        """Check names and per-instance shapes against the accumulator's, adopting them if new."""
        if not self._shapes:
            self._shapes = dict(shapes)
            return
        if set(shapes) != set(self._shapes):
            raise ValueError(
                f"feature names {sorted(shapes)} differ from the accumulated {sorted(self._shapes)}"
            )
        for name, shape in shapes.items():
            if shape != self._shapes[name]:
                raise ValueError(
                    f"feature {name!r} has per-instance shape {shape}, "
                    f"but {self._shapes[name]} was accumulated"
                )

    def merge(self, other: Accumulator) -> Accumulator:
        """Combine two accumulators holding disjoint sets of blocks.

        Parameters
        ----------
        other : Accumulator

        Returns
        -------
        Accumulator
            A new accumulator with the blocks of both; the operands are unchanged.

        Raises
        ------
        ValueError
            If the accumulators share a block index or hold different features.
        """
        merged = Accumulator()
        merged.update(self)
        merged.update(other)
        return merged

    def update(self, other: Accumulator) -> None:
        """Add the blocks of ``other`` to this accumulator, in place.

        The in-place form of :meth:`merge`, for collecting the results of many shards (e.g.
        one block per task of a distributed run) without copying the blocks already held.

        Parameters
        ----------
        other : Accumulator
            Holds blocks disjoint from this accumulator's; it is unchanged.

        Raises
        ------
        ValueError
            If the accumulators share a block index or hold different features.
        """
        shared = sorted(set(self._blocks) & set(other._blocks))
        if shared:
            raise ValueError(f"cannot merge accumulators that share blocks {shared}")
        if other._shapes:
            self._check_layout(other._shapes)
        self._blocks.update((b, moments.copy()) for b, moments in other._blocks.items())
        self._pooled = None

    # ---- inspection ----------------------------------------------------------------------

    @property
    def blocks(self) -> tuple[int, ...]:
        """Block indices, sorted."""
        return tuple(sorted(self._blocks))

    @property
    def count(self) -> int:
        """Total number of instances."""
        return sum(moments.count for moments in self._blocks.values())

    @property
    def names(self) -> tuple[str, ...]:
        """Feature names, sorted."""
        return tuple(sorted(self._shapes))

    def _pool(self) -> _Moments:
        """Moments over all instances, reduced over blocks in sorted order (cached)."""
        if self._pooled is None:
            ordered = [self._blocks[b] for b in self.blocks]
            pooled = ordered[0].copy()
            for moments in ordered[1:]:
                pooled = _combine(pooled, moments)
            for array in (*pooled.mean.values(), *pooled.m2.values()):
                array.setflags(write=False)
            self._pooled = pooled
        return self._pooled

    def _check_name(self, name: str) -> None:
        if not self._blocks:
            raise ValueError("the accumulator is empty")
        if name not in self._shapes:
            raise KeyError(f"unknown feature {name!r}; accumulated features: {self.names}")

    def mean(self, name: str) -> np.ndarray:
        """Ensemble mean of a feature over all instances.

        Parameters
        ----------
        name : str

        Returns
        -------
        ndarray, shape (...)
            The per-instance shape of the feature.
        """
        self._check_name(name)
        return self._pool().mean[name].copy()

    def var(self, name: str) -> np.ndarray:
        """Unbiased per-instance variance of a feature, ``M2 / (M - 1)``.

        Parameters
        ----------
        name : str

        Returns
        -------
        ndarray, shape (...)

        Raises
        ------
        ValueError
            If fewer than 2 instances were accumulated.
        """
        self._check_name(name)
        pooled = self._pool()
        if pooled.count < 2:
            raise ValueError("at least 2 instances are needed for a variance")
        return pooled.m2[name] / (pooled.count - 1)

    def stderr(self, name: str) -> np.ndarray:
        """Standard error of :meth:`mean`, ``sqrt(var / M)``, for independent instances.

        Parameters
        ----------
        name : str

        Returns
        -------
        ndarray, shape (...)
        """
        return np.sqrt(self.var(name) / self.count)

    # ---- jackknife -----------------------------------------------------------------------

    def _resolve_names(self, names: Sequence[str] | None) -> tuple[str, ...]:
        if names is None:
            return self.names
        for name in names:
            self._check_name(name)
        return tuple(names)

    def _block_counts(self) -> np.ndarray:
        """Instance counts per block, in sorted block order; shape (B,)."""
        return np.array([self._blocks[b].count for b in self.blocks], dtype=np.int64)

    def _full_means(self, names: Sequence[str]) -> dict[str, np.ndarray]:
        pooled = self._pool()
        return {name: pooled.mean[name] for name in names}

    def _leave_one_out(self, names: Sequence[str]) -> Iterator[dict[str, np.ndarray]]:
        """Means over all instances outside block ``b``, for each block in sorted order.

        Uses ``mean_{-b} = mean + m_b / (M - m_b) * (mean - mean_b)``, which is exact and avoids
        the cancellation of subtracting block sums from the total.
        """
        self._require_jackknife_blocks()
        pooled = self._pool()
        for b in self.blocks:
            moments = self._blocks[b]
            factor = moments.count / (pooled.count - moments.count)
            yield {
                name: np.asarray(
                    pooled.mean[name] + factor * (pooled.mean[name] - moments.mean[name])
                )
                for name in names
            }

    def _require_jackknife_blocks(self) -> None:
        if len(self._blocks) < 2:
            raise ValueError(
                f"at least 2 blocks are needed for a jackknife error, got {len(self._blocks)}"
            )

    def estimate(
        self, fn: EstimatorFn, names: Sequence[str] | None = None
    ) -> Estimate | dict[str, Estimate]:
        """Estimate a function of ensemble means, with a delete-one-block jackknife error.

        Parameters
        ----------
        fn : callable
            ``fn(means)`` maps a mapping ``name -> mean of that feature`` (arrays of the
            per-instance shapes, which `fn` must not modify) to an array, or to a dict of
            arrays.
        names : sequence of str, optional
            Features passed to `fn`; all of them by default.

        Returns
        -------
        Estimate or dict of str to Estimate
            ``value = fn(means over all instances)``; ``stderr`` and ``bias_corrected`` from the
            weighted delete-one-block jackknife [BMV].  If `fn` returns a dict, a dict of
            Estimates with the same keys.

        Raises
        ------
        ValueError
            If fewer than 2 blocks were accumulated.

        Notes
        -----
        With ``B`` blocks of sizes ``m_j`` (total ``M``, ``h_j = M / m_j``), full-sample
        estimate ``θ`` and leave-block-``j``-out estimates ``θ_{-j}`` [BMV]::

            θ_J      = B θ - Σ_j (1 - m_j / M) θ_{-j}                  (bias corrected)
            θ̃_j      = h_j θ - (h_j - 1) θ_{-j}                        (pseudo-values)
            stderr²  = (1 / B) Σ_j (θ̃_j - θ_J)² / (h_j - 1)

        For a linear `fn` the pseudo-values are the block means and ``θ_J = θ``.
        """
        names = self._resolve_names(names)
        self._require_jackknife_blocks()
        full = fn(self._full_means(names))
        replicates = [fn(means) for means in self._leave_one_out(names)]
        return _jackknife_tree(full, replicates, self._block_counts())

    # ---- checkpoints ---------------------------------------------------------------------

    def to_state(self) -> dict[str, np.ndarray]:
        """Serialize to a flat dict of numpy arrays, suitable for ``np.savez``.

        Returns
        -------
        dict of str to ndarray
            ``"format_version"``, ``"blocks"`` (B,), ``"counts"`` (B,), ``"names"`` (F,)
            and, for the ``i``-th name, ``"mean_i"`` and ``"m2_i"`` of shape (B, ...), with
            blocks in sorted order.
        """
        blocks = self.blocks
        state = {
            "format_version": np.array(_STATE_VERSION, dtype=np.int64),
            "blocks": np.array(blocks, dtype=np.int64),
            "counts": self._block_counts(),
            "names": np.array(self.names, dtype=np.str_),
        }
        for i, name in enumerate(self.names):
            shape = (len(blocks), *self._shapes[name])
            state[f"mean_{i}"] = np.array(
                [self._blocks[b].mean[name] for b in blocks], dtype=np.float64
            ).reshape(shape)
            state[f"m2_{i}"] = np.array(
                [self._blocks[b].m2[name] for b in blocks], dtype=np.float64
            ).reshape(shape)
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, ArrayLike]) -> Accumulator:
        """Rebuild an accumulator from :meth:`to_state` output (e.g. a loaded ``.npz`` file).

        Parameters
        ----------
        state : mapping of str to array_like

        Returns
        -------
        Accumulator
            Bit-identical in all results to the one serialized.
        """
        version = int(np.asarray(state["format_version"]))
        if version != _STATE_VERSION:
            raise ValueError(f"unsupported accumulator state version {version}")
        blocks = np.asarray(state["blocks"]).tolist()
        counts = np.asarray(state["counts"]).tolist()
        names = [str(name) for name in np.asarray(state["names"])]
        means = {name: np.asarray(state[f"mean_{i}"], np.float64) for i, name in enumerate(names)}
        m2s = {name: np.asarray(state[f"m2_{i}"], np.float64) for i, name in enumerate(names)}
        acc = cls()
        acc._shapes = {name: means[name].shape[1:] for name in names}
        for j, (block, count) in enumerate(zip(blocks, counts, strict=True)):
            acc._blocks[int(block)] = _Moments(
                int(count),
                {name: means[name][j].copy() for name in names},
                {name: m2s[name][j].copy() for name in names},
            )
        return acc


def _jackknife(full: ArrayLike, replicates: Sequence[ArrayLike], counts: np.ndarray) -> Estimate:
    """Weighted delete-one-block jackknife [BMV]; see :meth:`Accumulator.estimate`.

    Parameters
    ----------
    full : array_like, shape (...)
        Estimate on all blocks.
    replicates : sequence of B array_like, each of shape (...)
        Estimates with block ``j`` left out.
    counts : ndarray of int, shape (B,)
        Block sizes ``m_j``.
    """
    full = np.asarray(full, dtype=np.float64)
    loo = np.asarray(replicates, dtype=np.float64)
    if loo.shape[1:] != full.shape:
        raise ValueError(f"estimator returned shapes {loo.shape[1:]} and {full.shape}")
    n_blocks = len(counts)
    total = counts.sum()
    expand = (slice(None),) + (np.newaxis,) * full.ndim
    h = (total / counts)[expand]
    corrected = n_blocks * full - np.sum((1.0 - counts / total)[expand] * loo, axis=0)
    pseudo = h * full - (h - 1.0) * loo
    variance = np.sum((pseudo - corrected) ** 2 / (h - 1.0), axis=0) / n_blocks
    return Estimate(full, np.sqrt(variance), corrected)


def _jackknife_tree(
    full: ArrayLike | Mapping[str, ArrayLike],
    replicates: Sequence[ArrayLike | Mapping[str, ArrayLike]],
    counts: np.ndarray,
) -> Estimate | dict[str, Estimate]:
    """Apply :func:`_jackknife` to an array, or to each entry of a dict of arrays."""
    if not isinstance(full, Mapping):
        return _jackknife(full, replicates, counts)
    return {key: _jackknife(full[key], [r[key] for r in replicates], counts) for key in full}


# --------------------------------------------------------------------------------------------
# Covariances and cumulants


def _product_of_means(
    shape_x: tuple[int, ...], shape_y: tuple[int, ...], shape_xy: tuple[int, ...]
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The product ``E[X] E[Y]`` laid out like the product feature: outer or broadcast.

    The two layouts can only both fit when `x` or `y` is a scalar, where they agree.
    """
    if shape_x + shape_y == shape_xy:
        return np.multiply.outer
    try:
        broadcast = np.broadcast_shapes(shape_x, shape_y)
    except ValueError:
        broadcast = None
    if broadcast != shape_xy:
        raise ValueError(
            f"product feature shape {shape_xy} is neither the outer shape nor the broadcast "
            f"shape of {shape_x} and {shape_y}"
        )
    return np.multiply


def covariance_estimate(
    acc: Accumulator, x: str, y: str, xy: str, *, scale: float = 1.0
) -> Estimate:
    """Jackknife estimate of ``scale * (E[XY] - E[X] E[Y])``.

    This is the covariance form used throughout [RY], e.g. the four-point vertex
    ``V ∝ E[Ĝ Ĝ] - E[Ĝ] E[Ĝ]`` (cf. (4.76)).

    Parameters
    ----------
    acc : Accumulator
        Holds the features `x`, `y` and their per-instance product `xy`.
    x, y : str
        Names of the two features.
    xy : str
        Name of the per-instance product feature.  Either its shape is ``x.shape + y.shape``
        (an outer product, e.g. ``Ĝ_{a1 a2} Ĝ_{a3 a4}`` of shape (N, N, N, N) for ``Ĝ`` of
        shape (N, N)) and ``E[X] E[Y]`` is the outer product of the means, or it is the
        broadcast shape of `x` and `y` and ``E[X] E[Y]`` is their broadcast product.
    scale : float, default 1
        Overall factor, e.g. a power of the width.

    Returns
    -------
    Estimate, shape of `xy`
        ``value = scale * M / (M - 1) * (mean_xy - mean_x mean_y)`` (unbiased); each jackknife
        replicate uses its own count ``M - m_j`` in the factor.

    Raises
    ------
    ValueError
        If the shapes of `x`, `y` and `xy` do not fit either layout, fewer than 2 blocks were
        accumulated, or a jackknife replicate has fewer than 2 instances.
    """
    names = acc._resolve_names((x, y, xy))
    product = _product_of_means(*(acc._shapes[name] for name in (x, y, xy)))
    acc._require_jackknife_blocks()
    counts = acc._block_counts()
    total = int(counts.sum())
    if total - counts.max() < 2:
        raise ValueError("every jackknife replicate needs at least 2 instances")

    def covariance(means: Mapping[str, np.ndarray], count: int) -> np.ndarray:
        return scale * count / (count - 1) * (means[xy] - product(means[x], means[y]))

    full = covariance(acc._full_means(names), total)
    replicates = [
        covariance(means, total - int(m))
        for means, m in zip(acc._leave_one_out(names), counts, strict=True)
    ]
    return _jackknife(full, replicates, counts)


@cache
def _set_partitions(m: int) -> tuple[tuple[tuple[int, ...], ...], ...]:
    if m == 0:
        return ((),)
    partitions = []
    for partition in _set_partitions(m - 1):
        for i in range(len(partition)):
            partitions.append(partition[:i] + (partition[i] + (m - 1,),) + partition[i + 1 :])
        partitions.append(partition + ((m - 1,),))
    return tuple(partitions)


def set_partitions(m: int) -> list[tuple[tuple[int, ...], ...]]:
    """All set partitions of ``range(m)``.

    Parameters
    ----------
    m : int
        Number of elements, ``m >= 0``.

    Returns
    -------
    list of tuple of tuple of int
        ``Bell(m)`` partitions; each is a tuple of blocks, each block a sorted tuple.

    Examples
    --------
    >>> set_partitions(2)
    [((0, 1),), ((0,), (1,))]
    """
    if m < 0:
        raise ValueError(f"m must be non-negative, got {m}")
    return list(_set_partitions(m))


def cumulant_from_moments(
    moment: Callable[[tuple[int, ...]], float], idx: tuple[int, ...]
) -> float:
    """Joint cumulant (connected correlator) from moments by Möbius inversion.

    Implements ([RY] (1.56), (1.61))::

        E[z_{i_1} ... z_{i_k}]|_conn = Σ_π (-1)^{|π|-1} (|π|-1)! Π_{B ∈ π} E[Π_{l ∈ B} z_{i_l}]

    summed over all set partitions ``π`` of the ``k`` positions, including blocks of odd size,
    so no zero-mean assumption is made.

    Parameters
    ----------
    moment : callable
        ``moment(t)`` returns the raw moment ``E[z_{t_1} ... z_{t_r}]`` for a tuple ``t`` of
        variable indices (a sub-tuple of `idx`, in the order of `idx`).
    idx : tuple of int
        Variable indices ``(i_1, ..., i_k)``, repetitions allowed.

    Returns
    -------
    float
    """
    memo: dict[tuple[int, ...], float] = {}

    def raw(t: tuple[int, ...]) -> float:
        if t not in memo:
            memo[t] = moment(t)
        return memo[t]

    total = 0.0
    for partition in _set_partitions(len(idx)):
        r = len(partition)
        term = (-1.0) ** (r - 1) * math.factorial(r - 1)
        for block in partition:
            term *= raw(tuple(idx[k] for k in block))
        total += term
    return total


def _multiset_key(t: Sequence[int]) -> str:
    return ",".join(map(str, sorted(t)))


def _blocked_moments(
    z: np.ndarray, idx: tuple[int, ...], n_blocks: int
) -> tuple[Accumulator, tuple[str, ...]]:
    """Accumulate the products of columns of `z` over every sub-multiset of `idx`.

    Parameters
    ----------
    z : ndarray, shape (M, d)
    idx : tuple of int
    n_blocks : int
        The ``M`` rows are split into this many contiguous blocks.
    """
    keys = sorted({_multiset_key(c) for r in range(1, len(idx) + 1) for c in combinations(idx, r)})
    products = {key: np.prod(z[:, [int(i) for i in key.split(",")]], axis=1) for key in keys}
    acc = Accumulator()
    for b, rows in enumerate(np.array_split(np.arange(z.shape[0]), n_blocks)):
        acc.add(b, {key: p[rows] for key, p in products.items()})
    return acc, tuple(keys)


def _check_blocks(n_samples: int, n_blocks: int) -> int:
    n_blocks = min(operator.index(n_blocks), n_samples)
    if n_blocks < 2:
        raise ValueError(
            f"at least 2 blocks are needed for a jackknife error, got {n_blocks} "
            f"({n_samples} samples)"
        )
    return n_blocks


def connected_correlator(
    samples: ArrayLike, idx: tuple[int, ...], *, n_blocks: int = 32
) -> Estimate:
    """Plug-in connected correlator (joint cumulant) of i.i.d. vector samples.

    Parameters
    ----------
    samples : array_like, shape (M, d)
        ``M`` independent draws of a ``d``-vector ``z``.
    idx : tuple of int
        Indices ``(i_1, ..., i_k)`` into ``range(d)``, ``1 <= k <= 6``, repetitions allowed.
    n_blocks : int, default 32
        Number of contiguous blocks for the jackknife (capped at ``M``).

    Returns
    -------
    Estimate, shape ()
        ``E[z_{i_1} ... z_{i_k}]|_conn`` from :func:`cumulant_from_moments` applied to sample
        moments, i.e. the cumulant of the empirical distribution; jackknife stderr over blocks.

    Notes
    -----
    For ``k >= 2`` the samples are first centered at their overall mean.  Cumulants of order
    two and higher are shift invariant, and so is the plug-in formula (every replicate is the
    cumulant of an empirical distribution), so this only removes round-off from large means.
    All set partitions are kept, so the result does not assume a zero mean.
    """
    z = np.asarray(samples, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] == 0:
        raise ValueError(f"samples must have shape (M, d) with M >= 1, got {z.shape}")
    idx = tuple(operator.index(i) for i in idx)
    if not 1 <= len(idx) <= _MAX_CORRELATOR_ORDER:
        raise ValueError(f"order must be between 1 and {_MAX_CORRELATOR_ORDER}, got {len(idx)}")
    if any(not 0 <= i < z.shape[1] for i in idx):
        raise ValueError(f"indices {idx} out of range for d = {z.shape[1]}")
    n_blocks = _check_blocks(z.shape[0], n_blocks)
    if len(idx) >= 2:
        z = z - z.mean(axis=0)
    acc, names = _blocked_moments(z, idx, n_blocks)

    def cumulant(means: Mapping[str, np.ndarray]) -> float:
        return cumulant_from_moments(lambda t: float(means[_multiset_key(t)]), idx)

    return acc.estimate(cumulant, names)


def excess_kurtosis(samples: ArrayLike, *, n_blocks: int = 32) -> Estimate:
    """Plug-in excess kurtosis ``κ_4 / κ_2**2`` of a 1-D sample, with a jackknife error.

    Parameters
    ----------
    samples : array_like, shape (M,)
        Independent draws of a scalar.
    n_blocks : int, default 32
        Number of contiguous blocks for the jackknife (capped at ``M``).

    Returns
    -------
    Estimate, shape ()
        ``value`` equals ``scipy.stats.kurtosis(samples, fisher=True, bias=True)``; it is zero
        for a Gaussian, whose connected four-point correlator vanishes ([RY] §1.2).
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"samples must have shape (M,) with M >= 1, got {x.shape}")
    n_blocks = _check_blocks(x.size, n_blocks)
    z = (x - x.mean())[:, np.newaxis]
    acc, names = _blocked_moments(z, (0, 0, 0, 0), n_blocks)

    def kurtosis(means: Mapping[str, np.ndarray]) -> float:
        def moment(t: tuple[int, ...]) -> float:
            return float(means[_multiset_key(t)])

        kappa2 = cumulant_from_moments(moment, (0, 0))
        return cumulant_from_moments(moment, (0, 0, 0, 0)) / kappa2**2

    return acc.estimate(kurtosis, names)


# --------------------------------------------------------------------------------------------
# Extrapolation in the width


@dataclass(frozen=True, eq=False)
class InverseWidthFit:
    """Result of :func:`fit_inverse_width`.

    Attributes
    ----------
    value : ndarray, shape (p, ...)
        Coefficients ``c_0, ..., c_{p-1}`` of ``Σ_j c_j / n**j``; ``c_0`` is the
        ``n -> ∞`` limit and ``c_1`` the ``1/n`` coefficient.
    stderr : ndarray, shape (p, ...)
        Their standard errors, ``sqrt(diag(covariance))``.
    covariance : ndarray, shape (p, p, ...)
        Covariance of the coefficients, the inverse of the WLS normal matrix.
    chi2 : ndarray, shape (...)
        Weighted sum of squared residuals.
    dof : int
        Degrees of freedom, ``W - p``.
    """

    value: np.ndarray
    stderr: np.ndarray
    covariance: np.ndarray
    chi2: np.ndarray
    dof: int

    def coefficient(self, j: int) -> Estimate:
        """The coefficient of ``1/n**j`` as an :class:`Estimate` of shape (...)."""
        return Estimate(self.value[j], self.stderr[j])


def fit_inverse_width(
    widths: ArrayLike, values: ArrayLike, stderrs: ArrayLike, order: int = 1
) -> InverseWidthFit:
    """Weighted least-squares fit of ``value(n) = c_0 + c_1 / n + ... + c_order / n**order``.

    Extracts the infinite-width limit and the ``1/n`` corrections of a quantity measured at
    several widths, e.g. the NLO metric ``G^{1}`` from ``E[Ĝ] = G^{0} + G^{1} / n + O(1/n²)``.
    Each trailing element of `values` is fitted independently.

    Parameters
    ----------
    widths : array_like, shape (W,)
        Positive widths ``n``.
    values : array_like, shape (W, ...)
        Measured values.
    stderrs : array_like, broadcastable to the shape of `values`
        Their (positive) standard errors; weights are ``1 / stderrs**2``.
    order : int, default 1
        Highest power of ``1/n``; ``p = order + 1`` coefficients are fitted.

    Returns
    -------
    InverseWidthFit

    Raises
    ------
    ValueError
        If there are fewer distinct widths than coefficients, or inputs are malformed.
    """
    n = np.asarray(widths, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    order = operator.index(order)
    if order < 0:
        raise ValueError(f"order must be non-negative, got {order}")
    if n.ndim != 1 or y.ndim == 0 or y.shape[0] != n.size:
        raise ValueError(f"widths shape {n.shape} and values shape {y.shape} do not match")
    if not np.all(n > 0):
        raise ValueError("widths must be positive")
    p = order + 1
    if np.unique(n).size < p:
        raise ValueError(
            f"fewer widths than coefficients: {np.unique(n).size} distinct widths for {p} "
            f"coefficients (order={order})"
        )
    sigma = np.broadcast_to(np.asarray(stderrs, dtype=np.float64), y.shape)
    if not np.all(np.isfinite(sigma) & (sigma > 0)):
        raise ValueError("stderrs must be positive and finite")

    trailing = y.shape[1:]
    y_flat = y.reshape(n.size, -1).T  # (E, W)
    w_sqrt = 1.0 / sigma.reshape(n.size, -1).T  # (E, W)
    # Columns (n_min / n)**j are O(1), which keeps the design well conditioned.
    n_ref = n.min()
    design = (n_ref / n)[:, np.newaxis] ** np.arange(p)  # (W, p)
    q, r = np.linalg.qr(w_sqrt[:, :, np.newaxis] * design)  # (E, W, p), (E, p, p)
    scaled = np.linalg.solve(r, np.einsum("ewp,ew->ep", q, w_sqrt * y_flat)[..., np.newaxis])
    r_inv = np.linalg.inv(r)
    scaled_cov = r_inv @ np.swapaxes(r_inv, -1, -2)  # (E, p, p)
    residual = w_sqrt * (y_flat - scaled[..., 0] @ design.T)
    chi2 = np.sum(residual**2, axis=1)

    unscale = n_ref ** np.arange(p, dtype=np.float64)  # c_j = c'_j * n_ref**j
    coef = scaled[..., 0] * unscale  # (E, p)
    cov = scaled_cov * np.multiply.outer(unscale, unscale)  # (E, p, p)
    return InverseWidthFit(
        value=coef.T.reshape(p, *trailing),
        stderr=np.sqrt(np.diagonal(cov, axis1=1, axis2=2)).T.reshape(p, *trailing),
        covariance=np.moveaxis(cov, 0, -1).reshape(p, p, *trailing),
        chi2=chi2.reshape(trailing),
        dof=n.size - p,
    )
