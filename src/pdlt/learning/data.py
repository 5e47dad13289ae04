"""A small real data set for trying out the learning theory: a subset of *diabetes*.

scikit-learn's ``load_diabetes`` (Efron, Hastie, Johnstone & Tibshirani, "Least angle
regression", 2004) ships inside the scikit-learn wheel, so it loads offline: 442 patients,
10 baseline variables (age, sex, body-mass index, blood pressure, six blood serum
measurements), and a quantitative measure of disease progression one year later.
scikit-learn is an optional dependency (``pip install 'pdlt[data]'``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Dataset", "diabetes"]


@dataclass(frozen=True)
class Dataset:
    """Training and test data for :func:`pdlt.learning.gd_predict` and friends.

    Attributes
    ----------
    x_train : ndarray, shape (N_A, n_0)
    y_train : ndarray, shape (N_A, n_L)
    x_test : ndarray, shape (N_B, n_0)
    y_test : ndarray, shape (N_B, n_L)
    description : str
        Where the data come from and how they were transformed.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    description: str


def diabetes(n_train: int = 20, n_test: int = 10) -> Dataset:
    """The first ``n_train + n_test`` patients of scikit-learn's diabetes data, standardized.

    Rows ``0 .. n_train-1`` of ``sklearn.datasets.load_diabetes()`` (in its shipped order)
    are the training set and the next ``n_test`` rows the test set.  Every input feature
    and the target are standardized with the mean and (population) standard deviation of the
    *training* rows, so the training inputs have zero mean and unit variance per feature,
    ``|x|^2 / n_0 ~ 1`` (a first-layer kernel of order one at critical initialization), and
    the training targets zero mean and unit variance.

    Parameters
    ----------
    n_train, n_test : int
        Numbers of training and test patients (``n_train >= 2``, ``n_train + n_test <= 442``).

    Returns
    -------
    Dataset
        ``n_0 = 10`` inputs and one target (``n_L = 1``).

    Raises
    ------
    ImportError
        If scikit-learn is not installed.
    ValueError
        For sizes out of range.
    """
    try:
        from sklearn.datasets import load_diabetes
    except ImportError:
        raise ImportError(
            "the diabetes data set needs scikit-learn: pip install 'pdlt[data]' (or scikit-learn)"
        ) from None
    data = load_diabetes()
    x = np.asarray(data.data, dtype=np.float64)
    y = np.asarray(data.target, dtype=np.float64)[:, None]
    for name, v in (("n_train", n_train), ("n_test", n_test)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if n_train < 2 or n_train + n_test > x.shape[0]:
        raise ValueError(
            f"need 2 <= n_train and n_train + n_test <= {x.shape[0]}, got {n_train} + {n_test}"
        )
    xa, xb = x[:n_train], x[n_train : n_train + n_test]
    ya, yb = y[:n_train], y[n_train : n_train + n_test]
    mu, sd = xa.mean(axis=0), xa.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    ymu, ysd = ya.mean(), ya.std()
    ysd = ysd if ysd > 0 else 1.0
    desc = (
        f"diabetes (scikit-learn load_diabetes): rows 0-{n_train - 1} train, "
        f"{n_train}-{n_train + n_test - 1} test; 10 inputs and the target standardized "
        "with the training rows' mean and standard deviation"
    )
    return Dataset(
        (xa - mu) / sd,
        (ya - ymu) / ysd,
        (xb - mu) / sd,
        (yb - ymu) / ysd,
        desc,
    )
