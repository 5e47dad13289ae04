"""Trained ensembles at finite width: algorithm dependence, GELU and tanh (spec/07 §8, §12.5).

(a) **Algorithm dependence, paired.**  Two gradient-descent runs that agree at infinite width
-- the same initial networks (same seed) trained to convergence with the learning-rate tensor
(8.6) at global rates ``eta = 1/Theta`` and ``eta = 0.2/Theta`` -- differ at order ``1/n``: only
the algorithm projectors ``Z_A, Z_IA, Z_IIA, Z_IIB`` (∞.142)-(∞.147) depend on ``eta``, so the
predicted difference is that of the ``dntk``, ``ddI`` and ``ddII`` parts of (∞.160)-(∞.165);
the NTK-fluctuation part ``-m^{Delta NTK}`` (∞.162) and the infinite-width mean (∞.161) cancel
(for one training input ``eta = 1/H`` is the two-step "giant leap" (∞.148): ``Z_A = Z_IA =
Z_IIA = Z_IIB = 0``, spec/07 §8.3).  Per network the free part ``z - H-hat H-hat^{-1} eps`` is
the same for both runs, so the paired difference has no O(1) spread and a small ensemble
resolves it.

(b) **GELU (and tanh).**  The shift of the ensemble-mean test prediction from the
infinite-width one, ``E[z(T)] - m^NTK``, against the predicted ``1/n`` correction of
:func:`pdlt.learning.finite_width_predict`.  Estimator (control variates, spec/07 §12.5): per
network ``d = z(T) - [z_b - H-hat_{bA} H-hat^{-1}(z_A - y)]`` (the interaction: dNTK + ddNTK)
plus ``g = H-hat_{bA} H-hat^{-1} y`` with its part *linear* in ``Delta H = H-hat - Theta``
removed.  ``E[z_b - H-hat H-hat^{-1} z_A] = 0`` exactly (output sign flip), so ``E[d + g] =
E[z(T)]``; the linear part's mean is ``[E Delta H]_perp Theta^{-1} y``, i.e. exactly the NLO
NTK-mean term ``H^{1}/n`` that the theory leaves out (spec/07 §8.4, §13.11), and it carries
the O(n^{-1/2}) noise.  What is tested is therefore ``E[z(T)] - m^NTK - (H^{1} term)``
against ``correction = (1/n)[-m^{Delta NTK} + m^dNTK + m^ddI + m^ddII]_perp``.  (The ``H^{1}``
term itself, measured separately from 16000 initial NTKs per width, is small here: along y,
``n x (H^{1} term) = +0.019 +- 0.032`` (n = 64), ``+0.046 +- 0.046`` (n = 128) for this GELU
network against the total coefficient +0.569, tanh +0.017 +- 0.023, +0.056 +- 0.033 against
+1.100; see docs/finite_width_prediction.md for a case where it is not.)

Every estimate is projected on the target direction: with one training input the mean test
output is ``y_i f(|y|^2)`` exactly (the ensemble is invariant under rotations of the output
layer), so ``s = sum_i y_i z_i / |y|^2`` carries all of it.  Tolerances: 3 standard errors
plus the truncation allowance ``(L/n) |prediction|`` for the O(1/n^2) terms (L = 3).  The
``1/n`` scaling is checked by a one-parameter weighted fit ``s(n) = c/n`` across the widths
(its chi^2 and the fitted ``c`` against the theory coefficient).

Measured (M = 200 trained networks per width, seed 0, along y; printed with ``-s``):

    paired difference, eta = 1/Theta minus 0.2/Theta (tanh):
        n =  64: +0.00472 +- 0.00058  (theory +0.00502)
        n = 128: +0.00270 +- 0.00029  (theory +0.00251)
        fit n * diff = +0.323 +- 0.026 (chi^2 0.68, 1 dof); theory +0.321
    the same, GELU (here the difference is almost all ddII: S, T, U through Z_IIA, Z_IIB):
        n =  64: +0.01428 +- 0.00119  (theory +0.01652, -1.9 s.e.)
        n = 128: +0.00683 +- 0.00062  (theory +0.00826, -2.3 s.e.)
        fit n * diff = +0.895 +- 0.055 (chi^2 0.13); theory +1.057
      KNOWN DEVIATION: larger runs outside the suite (seed 5) gave n * diff = +0.832 +- 0.041
      at n = 64 (M = 600: 5.5 s.e. below theory) and +0.936 +- 0.075 at n = 256 (M = 200,
      -1.6 s.e.).  The ddNTK means themselves agree with measured ones at n = 64 (R, S, T, U,
      P, Q within 2-5 %, pdlt.measure with 300 networks), so this is either an O(1/n^2) term
      of relative size ~13/n (four times the L/n allowance) or a ~10 % leading-order deficit
      of the GELU ddII part.  RESOLVED: at n = 512 (1100 networks) n * diff = +1.022 +- 0.033
      (theory +1.057); the relative deficit falls like 13/n (21, 17, 11, 3 % at n = 64..512),
      so it is O(1/n^2) (docs/finite_width_prediction.md).  The test passes at seed 0 within
      its stated tolerance.
    shift E[z(T)] - m^NTK - (H^{1} term), GELU:
        n =  64: +0.00730 +- 0.00121  (theory +0.00889)
        n = 128: +0.00473 +- 0.00066  (theory +0.00444)
        fit n * shift = +0.530 +- 0.057 (chi^2 1.43); theory +0.569
    the same, tanh:
        n =  64: +0.01429 +- 0.00123  (theory +0.01719; interaction +0.01126 +- 0.00115
                                      against +0.01424: the largest deviation, 2.6 s.e.)
        n = 128: +0.00829 +- 0.00069  (theory +0.00859)
        fit n * shift = +0.981 +- 0.059 (chi^2 1.55); theory +1.100
    NTK part from 8000 untrained GELU networks, n = 64: n * [.] = +0.216 +- 0.006 (theory
    +0.2245); H^{1} term n * [.] = +0.057 +- 0.046 (total coefficient +0.569).
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from pdlt import Network
from pdlt.empirical.ensemble import Ensemble
from pdlt.empirical.observables import ntk
from pdlt.empirical.training import train
from pdlt.learning import finite_width_predict

pytestmark = pytest.mark.usefixtures("one_thread")

WIDTHS = (64, 128)
SIZE = 200
DEPTH = 3


def _net(activation, width):
    return Network(
        activation, widths=[3, width, width, 2], C_b=0.0, C_W=1.0, lambda_b=0.7, lambda_W=1.3
    )


def _data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3))
    y = 3.0 * rng.normal(size=(1, 2))  # large targets: the ddNTK (y^3) terms matter
    return x, y


def _along(v, y):
    """Component along the targets, ``sum_i v_i y_i / |y|^2`` (last axis = outputs)."""
    return np.asarray(v) @ y[0] / (y[0] @ y[0])


def _stats(s):
    return float(s.mean()), float(s.std(ddof=1) / np.sqrt(s.size))


def _fit_inverse_n(widths, values, errors):
    """Weighted least squares ``value(n) = c / n``: ``c``, its standard error and chi^2."""
    n, v, e = (np.asarray(a, dtype=float) for a in (widths, values, errors))
    w = 1.0 / (n * e) ** 2
    c = float(np.sum(w * n * v) / np.sum(w))  # fit of n * value = c
    se = float(1.0 / np.sqrt(np.sum(w)))
    chi2 = float(np.sum(((n * v - c) / (n * e)) ** 2))
    return c, se, chi2


def _check(meas, se, pred, width):
    assert abs(meas) > 5 * se, (width, meas, se)  # the 1/n effect is resolved
    allowance = abs(pred) * DEPTH / width  # O(L/n) relative: the O(1/n^2) terms
    assert abs(meas - pred) < 3 * se + allowance, (width, meas, se, pred)


@pytest.mark.parametrize("activation", ["tanh", "gelu"])
def test_algorithm_dependence_paired_gd_rates(activation):
    x, y = _data()
    rows, t0 = {}, time.time()
    for width in WIDTHS:
        net = _net(activation, width)
        fast = finite_width_predict(net, x[:1], y, x[1:])  # eta = 1/lambda_max(Theta~)
        slow = finite_width_predict(net, x[:1], y, x[1:], eta=0.2 * fast.eta)
        # same infinite-width limit and the same algorithm-independent part
        np.testing.assert_allclose(fast.infinite, slow.infinite, rtol=1e-12)
        np.testing.assert_allclose(fast.parts["dntk_var"], slow.parts["dntk_var"], rtol=1e-10)
        runs = [  # |1 - eta Theta| = 0 and 0.8 per step (plus the 1/n nonlinearity)
            train(
                net,
                x[:1],
                y,
                x[1:],
                size=SIZE,
                seed=0,
                steps=steps,
                eta=t.eta,
                block_size=SIZE,
                record_steps=[steps],
                progress=False,
            )  # fmt: skip
            for t, steps in ((fast, 60), (slow, 200))
        ]
        for run in runs:  # fully trained: residual errors < 1e-9, far below the effect
            assert run.train_loss[-1].max() < 1e-18
        np.testing.assert_array_equal(runs[0].initial, runs[1].initial)  # paired
        diff = _along(runs[0].final[:, 0, :] - runs[1].final[:, 0, :], y)
        pred = float(_along(fast.coefficient - slow.coefficient, y)[0]) / width
        rows[width] = (*_stats(diff), pred)
        print(
            f"{activation} n={width}: paired difference {rows[width][0]:+.5f} "
            f"+- {rows[width][1]:.5f}, theory {pred:+.5f}"
        )
    print(f"{time.time() - t0:.1f} s")
    for width, (meas, se, pred) in rows.items():
        _check(meas, se, pred, width)
    c, c_se, chi2 = _fit_inverse_n(
        WIDTHS, [r[0] for r in rows.values()], [r[1] for r in rows.values()]
    )
    c_theory = rows[WIDTHS[0]][2] * WIDTHS[0]
    print(f"fit n*diff = {c:+.4f} +- {c_se:.4f} (chi2 {chi2:.2f}, 1 dof); theory {c_theory:+.4f}")
    assert chi2 < 9.0  # consistent with a pure 1/n law
    assert abs(c - c_theory) < 3 * c_se + abs(c_theory) * DEPTH / WIDTHS[0]


def _shift(activation, width, x, y, steps=80):
    """Per-network estimators of the shift: interaction ``d`` and the NTK part ``q``."""
    net = _net(activation, width)
    theory = finite_width_predict(net, x[:1], y, x[1:])
    run = train(
        net, x[:1], y, x[1:], size=SIZE, seed=0, steps=steps, eta=theory.eta,
        block_size=SIZE, record_steps=[steps], progress=False,
    )  # fmt: skip
    assert run.train_loss[-1].max() < 1e-24
    p = Ensemble(net, SIZE, 0, SIZE).params(0)
    H = ntk(p, torch.tensor(x), net, net.depth).numpy()  # [m, i, j, d1, d2]
    z0 = run.initial  # [m, d, i], the same networks
    Haa, Hba = H[:, :, :, 0, 0], H[:, :, :, 1, 0]
    v = np.linalg.solve(Haa, (z0[:, 0, :] - y[0])[..., None])[..., 0]
    free = z0[:, 1, :] - np.einsum("mij,mj->mi", Hba, v)
    d = run.final[:, 0, :] - free  # interaction (dNTK + ddNTK)
    yy = np.broadcast_to(y[0], v.shape)[..., None]
    g = np.einsum("mij,mj->mi", Hba, np.linalg.solve(Haa, yy)[..., 0])
    Th = theory.tensors["Theta"]
    eye = np.eye(2)
    dH = (Hba - Th[1, 0] * eye) - Th[1, 0] / Th[0, 0] * (Haa - Th[0, 0] * eye)
    lin = np.einsum("mij,j->mi", dH, y[0] / Th[0, 0])  # mean: the H^{1} term
    q = g - theory.infinite[0] - lin  # NTK-fluctuation part: -m^{Delta NTK} / n
    return theory, _along(d, y), _along(q, y)


@pytest.mark.parametrize("activation", ["gelu", "tanh"])
def test_trained_mean_shift_matches_the_1_over_n_correction(activation):
    x, y = _data()
    rows, t0 = {}, time.time()
    for width in WIDTHS:
        theory, d, q = _shift(activation, width, x, y)
        parts = {k: float(_along(v, y)[0]) / width for k, v in theory.parts.items()}
        # the measured shift leaves out the noisy H^{1} term (module notes), so does pred
        pred = float(_along(theory.correction, y)[0]) - parts["nlo_ntk"]
        rows[width] = (*_stats(d + q), pred)
        (dm, ds), (qm, qs) = _stats(d), _stats(q)
        inter = parts["dntk"] + parts["ddI"] + parts["ddII"]
        print(
            f"{activation} n={width}: shift {rows[width][0]:+.5f} +- {rows[width][1]:.5f}, "
            f"theory {pred:+.5f} "
            f"(infinite {float(_along(theory.infinite, y)[0]):+.4f}); interaction {dm:+.5f} +- "
            f"{ds:.5f} (theory {inter:+.5f}); NTK part {qm:+.5f} +- {qs:.5f} "
            f"(theory {parts['dntk_var']:+.5f})"
        )
        # each piece separately as well (agreement only: the pieces are smaller)
        assert abs(dm - inter) < 3 * ds + abs(inter) * DEPTH / width
        assert abs(qm - parts["dntk_var"]) < 3 * qs + abs(parts["dntk_var"]) * DEPTH / width
    print(f"{time.time() - t0:.1f} s")
    for width, (meas, se, pred) in rows.items():
        assert np.sign(meas) == np.sign(pred)
        _check(meas, se, pred, width)
    c, c_se, chi2 = _fit_inverse_n(
        WIDTHS, [r[0] for r in rows.values()], [r[1] for r in rows.values()]
    )
    c_theory = rows[WIDTHS[0]][2] * WIDTHS[0]
    print(f"fit n*shift = {c:+.4f} +- {c_se:.4f} (chi2 {chi2:.2f}, 1 dof); theory {c_theory:+.4f}")
    assert chi2 < 9.0
    assert abs(c - c_theory) < 3 * c_se + abs(c_theory) * DEPTH / WIDTHS[0]


def test_ntk_fluctuation_part_from_untrained_networks():
    # The NTK part E[H-hat_{bA} H-hat^{-1}] y - m^NTK needs no training: with many initial NTKs
    # its second-order piece is checked against -m^{Delta NTK}/n (∞.162) (sign erratum §13.1)
    # to about 2%, and the linear piece -- the missing H^{1} term -- is printed (measured:
    # n [.] = +0.019 +- 0.032 (n = 64), +0.046 +- 0.046 (n = 128) for GELU against the total
    # coefficient +0.569; tanh +0.017 +- 0.023, +0.056 +- 0.033 against +1.100).
    x, y = _data()
    width, size = 64, 8000
    net = _net("gelu", width)
    theory = finite_width_predict(net, x[:1], y, x[1:])
    Th = theory.tensors["Theta"]
    eye, yy = np.eye(2), np.broadcast_to(y[0], (1000, 2))[..., None]
    q, lin = [], []
    for k in range(size // 1000):
        H = ntk(Ensemble(net, 1000, 1000 + k, 1000).params(0), torch.tensor(x), net, net.depth)
        Haa, Hba = H[:, :, :, 0, 0].numpy(), H[:, :, :, 1, 0].numpy()
        g = np.einsum("mij,mj->mi", Hba, np.linalg.solve(Haa, yy)[..., 0])
        dH = (Hba - Th[1, 0] * eye) - Th[1, 0] / Th[0, 0] * (Haa - Th[0, 0] * eye)
        ln = np.einsum("mij,j->mi", dH, y[0] / Th[0, 0])
        q.append(_along(g - theory.infinite[0] - ln, y))
        lin.append(_along(ln, y))
    (qm, qs), (lm, ls) = _stats(np.concatenate(q)), _stats(np.concatenate(lin))
    pred = float(_along(theory.parts["dntk_var"], y)[0])
    c = float(_along(theory.coefficient, y)[0])
    h1 = float(_along(theory.parts["nlo_ntk"], y)[0])
    print(
        f"n*NTK part {width * qm:+.4f} +- {width * qs:.4f} (theory {pred:+.4f}); "
        f"n*H1 term {width * lm:+.4f} +- {width * ls:.4f} (theory {h1:+.4f}; "
        f"total coefficient {c:+.4f})"
    )
    assert abs(width * qm - pred) < 3 * width * qs + abs(pred) * DEPTH / width
    # the H^{1} term is small here (not resolved by 8000 networks; tests/test_nlo_ntk.py
    # resolves H^{1} itself): agreement within its errors
    assert abs(width * lm - h1) < 3 * width * ls + abs(h1) * DEPTH / width
