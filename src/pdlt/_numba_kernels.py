"""numba kernels behind :func:`pdlt._compiled.kernels` (imported only through it).

Each kernel is the fused form of a numpy computation elsewhere in pdlt, which states the
mathematics; the tests check every kernel against that numpy path and against exact references.
All run without the GIL (``nogil``) on a range of rows, so :func:`pdlt.gaussian.row_blocks`
spreads them over threads; none allocates per element, and the inner loops over a row are
branch-free so they vectorize.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

PI = math.pi
_PI_2 = math.pi / 2
_PI_4 = math.pi / 4
_TAN_PI_8 = 0.41421356237309504880

# Cephes' atan (Moshier): atan(x) = x + x z P(z)/Q(z), z = x^2, relative error ~2e-16 on
# |x| <= 0.66 (the reduction below keeps |x| <= tan(pi/8))
_P0, _P1, _P2, _P3, _P4 = (
    -8.750608600031904122785e-01,
    -1.615753718733365076637e01,
    -7.500855792314704667340e01,
    -1.228866684490136173410e02,
    -6.485021904942025371773e01,
)
_Q0, _Q1, _Q2, _Q3, _Q4 = (
    2.485846490142306297962e01,
    1.650270098316988542046e02,
    4.328810604912902668951e02,
    4.853903996359136964868e02,
    1.945506571482613964425e02,
)


@njit(inline="always", error_model="numpy")
def angle(r: float, k: float) -> float:
    """``atan2(r, k)`` for ``r >= 0``, in ``[0, pi]``, branch-free (selects only, so a loop
    over it vectorizes; libm's atan2 does not): ``y = min/max`` of ``r, |k|`` in ``[0, 1]``,
    reduced by ``atan y = pi/4 + atan((y - 1)/(y + 1))`` above ``tan(pi/8)`` (one division
    either way), then Cephes' rational form; ``atan2(0, 0) = 0``."""
    ak = abs(k)
    big = r > ak
    num = ak if big else r
    den = r if big else ak
    red = num > _TAN_PI_8 * den  # then x = (y - 1)/(y + 1) = (num - den)/(num + den)
    top = num - den if red else num
    bottom = num + den if red else den
    x = top / bottom if bottom > 0.0 else 0.0
    z = x * x
    p = (((_P0 * z + _P1) * z + _P2) * z + _P3) * z + _P4
    q = ((((z + _Q0) * z + _Q1) * z + _Q2) * z + _Q3) * z + _Q4
    at = x + x * z * p / q
    at = at + _PI_4 if red else at
    th = _PI_2 - at if big else at
    return PI - th if k < 0.0 else th


@njit(inline="always", error_model="numpy")
def _product_error(x: float, y: float) -> float:
    """``x y - fl(x y)`` exactly (Dekker's two-product), as :func:`pdlt.gaussian._product_error`."""
    cx = 134217729.0 * x
    xh = cx - (cx - x)
    xl = x - xh
    cy = 134217729.0 * y
    yh = cy - (cy - y)
    yl = y - yh
    return ((xh * yh - x * y) + xh * yl + xl * yh) + xl * yl


@njit(inline="always", error_model="numpy")
def sine_squares(k: np.ndarray, va: float, vb: np.ndarray, r: np.ndarray) -> None:
    """``r_ab^2 = K_aa K_bb - K_ab^2`` for a row ``a``, into ``r``, as
    :func:`pdlt.gaussian.arc_cosine_angle` does it: where ``r^2 < 1e-4 K_aa K_bb`` the cancelling
    determinant is redone with the products' rounding errors (a second, scalar pass, since such
    nearly collinear pairs are few); symmetric in ``a, b`` to the last bit; 0 for a duplicated
    pair."""
    near = 0
    for b in range(k.shape[0]):
        vv = va * vb[b]
        r[b] = vv - k[b] * k[b]
        near += r[b] < 1e-4 * vv
    if near:
        for b in range(k.shape[0]):
            if r[b] < 1e-4 * (va * vb[b]):
                lo, hi, kb = min(va, vb[b]), max(va, vb[b]), k[b]
                r[b] = max(
                    (lo * hi - kb * kb) + (_product_error(lo, hi) - _product_error(kb, kb)), 0.0
                )


@njit(inline="always", error_model="numpy")
def _sigma_sigma(k: float, r: float, theta: float, A: float, B: float) -> float:
    """``<sigma_a sigma_b> = A [(pi - theta) K_ab + r_ab] + B K_ab`` (arc-cosine form)."""
    return A * ((PI - theta) * k + r) + B * k


@njit(nogil=True, cache=True, error_model="numpy")
def arc_cosine_variances(
    v0: np.ndarray,
    C_b: np.ndarray,
    C_W: np.ndarray,
    g2: np.ndarray,
    A: float,
    B: float,
) -> np.ndarray:
    """The diagonal ``K^(l)_aa``, shape (L, N), by the pairs' own arithmetic with
    ``theta = r = 0`` (so :func:`arc_cosine_rows` reproduces it to the last bit)."""
    L, N = C_b.shape[0], v0.shape[0]
    var = np.empty((L, N))
    var[0] = v0
    for ell in range(1, L):
        for a in range(N):
            k = var[ell - 1, a]
            var[ell, a] = C_W[ell] * _sigma_sigma(k, 0.0, 0.0, A, B) + C_b[ell] + g2[ell] * k
    return var


@njit(inline="always", error_model="numpy")
def _first_layer(
    gram: np.ndarray,
    K: np.ndarray,
    T: np.ndarray,
    C_b: np.ndarray,
    C_W: np.ndarray,
    lambda_b: np.ndarray,
    lambda_W: np.ndarray,
    s0: int,
    s1: int,
    kS: np.ndarray,
    tS: np.ndarray,
    ntk: bool,
) -> None:
    """Rows ``s0:s1`` of ``K^(1) = C_b + C_W X`` (4.8) and ``Theta^(1) = lambda_b + lambda_W X``
    (8.23), and their upper triangles into the tile's state ``kS, tS`` (R, N)."""
    N = K.shape[1]
    for a in range(s0, s1):
        for b in range(N):
            K[0, a, b] = C_b[0] + C_W[0] * gram[a, b]
            if ntk:
                T[0, a, b] = lambda_b[0] + lambda_W[0] * gram[a, b]
        kS[a - s0, a:] = K[0, a, a:]
        if ntk:
            tS[a - s0, a:] = T[0, a, a:]


@njit(inline="always", error_model="numpy")
def _mirror(
    K: np.ndarray,
    T: np.ndarray,
    kS: np.ndarray,
    tS: np.ndarray,
    ell: int,
    s0: int,
    s1: int,
    ntk: bool,
) -> None:
    """The tile's mirror at layer ``ell``: ``K[ell, b, a] = K[ell, a, b]`` for ``a`` in
    ``s0:s1``, ``b > a`` (columns ``a`` below the diagonal, in runs of the tile's rows)."""
    N = K.shape[1]
    for b in range(s0 + 1, N):
        for a in range(s0, min(s1, b)):
            K[ell, b, a] = kS[a - s0, b]
            if ntk:
                T[ell, b, a] = tS[a - s0, b]


@njit(nogil=True, cache=True, error_model="numpy")
def arc_cosine_rows(
    gram: np.ndarray,
    K: np.ndarray,
    T: np.ndarray,
    var: np.ndarray,
    C_b: np.ndarray,
    C_W: np.ndarray,
    g2: np.ndarray,
    lambda_b: np.ndarray,
    lambda_W: np.ndarray,
    A: float,
    B: float,
    E: float,
    r0: int,
    r1: int,
    ntk: bool,
) -> None:
    """Rows ``r0:r1`` of ``K^(l)`` and (if ``ntk``) ``Theta^(l)``, ``l = 0..L-1``, in place;
    the fused :func:`pdlt.theory.kernel.arc_cosine_flow`:

    * ``K^(1) = C_b + C_W X`` (4.8), ``Theta^(1) = lambda_b + lambda_W X`` (8.23),
    * ``K'_ab = C_b + C_W <sigma_a sigma_b> + gamma^2 K_ab``,
    * ``Theta'_ab = lambda_b + lambda_W <sigma_a sigma_b> + [C_W (E - A theta) + gamma^2]
      Theta_ab``.

    Each pair ``a <= b`` is computed once and mirrored, so layers above the first are
    symmetric to the last bit; the rows go through all layers in tiles of 16, whose mirror
    (columns ``a`` below the diagonal) is written in runs of 16.

    Parameters
    ----------
    gram : ndarray, shape (N, N)
        ``X``.
    K, T : ndarray, shape (L, N, N)
        Outputs; ``T`` is not touched unless ``ntk``.
    var : ndarray, shape (L, N)
        :func:`arc_cosine_variances`.
    """
    L, N = K.shape[0], K.shape[1]
    R = 16
    kS, tS, r = np.empty((R, N)), np.empty((R, N)), np.empty(N)
    for s0 in range(r0, r1, R):
        s1 = min(s0 + R, r1)
        _first_layer(gram, K, T, C_b, C_W, lambda_b, lambda_W, s0, s1, kS, tS, ntk)
        for ell in range(1, L):
            cb, cw, gg = C_b[ell], C_W[ell], g2[ell]
            lb, lw = lambda_b[ell], lambda_W[ell]
            for a in range(s0, s1):
                k, t, m = kS[a - s0, a:], tS[a - s0, a:], N - a
                # the diagonal (b = 0 here) is exact, r = 0: it never needs the second pass
                r[0] = 0.0
                sine_squares(k[1:], var[ell - 1, a], var[ell - 1, a + 1 :], r[1:m])
                Krow, Trow = K[ell, a, a:], T[ell, a, a:]
                if ntk:
                    for b in range(m):
                        kb, rb = k[b], math.sqrt(r[b])
                        theta = angle(rb, kb)
                        ss = _sigma_sigma(kb, rb, theta, A, B)
                        t[b] = (cw * (E - A * theta) + gg) * t[b] + lw * ss + lb
                        Trow[b] = t[b]
                        k[b] = cw * ss + cb + gg * kb
                        Krow[b] = k[b]
                else:
                    for b in range(m):
                        kb, rb = k[b], math.sqrt(r[b])
                        k[b] = cw * _sigma_sigma(kb, rb, angle(rb, kb), A, B) + cb + gg * kb
                        Krow[b] = k[b]
            _mirror(K, T, kS, tS, ell, s0, s1, ntk)


@njit(inline="always", error_model="numpy")
def _horner(
    c: np.ndarray, a: int, rho: np.ndarray, mb: np.ndarray, top: int, m: int, acc: np.ndarray
) -> None:
    """``acc[b] = sum_{n <= mb[b]} c[n, a] c[n, a + b] rho[b]^n`` for ``b = 1..m-1`` by Horner's
    rule run to ``top`` for all (zeros above a pair's own ``mb[b]``, so its value is that of
    its own sum to the last bit)."""
    acc[:m] = 0.0
    for n in range(top, -1, -1):
        ca = c[n, a]
        cn = c[n, a:]
        for b in range(1, m):
            acc[b] = acc[b] * rho[b] + (ca * cn[b] if n <= mb[b] else 0.0)


@njit(inline="always", error_model="numpy")
def _horner_pair(
    c: np.ndarray,
    d: np.ndarray,
    a: int,
    rho: np.ndarray,
    mb: np.ndarray,
    md: np.ndarray,
    top: int,
    m: int,
    acc: np.ndarray,
    acd: np.ndarray,
) -> None:
    """:func:`_horner` for two sets of coefficients, each with its own ``m`` per pair
    (``mb``, ``md``), in one pass over ``rho``."""
    acc[:m] = 0.0
    acd[:m] = 0.0
    for n in range(top, -1, -1):
        ca, da = c[n, a], d[n, a]
        cn, dn = c[n, a:], d[n, a:]
        for b in range(1, m):
            r = rho[b]
            acc[b] = acc[b] * r + (ca * cn[b] if n <= mb[b] else 0.0)
            acd[b] = acd[b] * r + (da * dn[b] if n <= md[b] else 0.0)


@njit(nogil=True, cache=True, error_model="numpy")
def mehler_rows(
    gram: np.ndarray,
    K: np.ndarray,
    T: np.ndarray,
    var: np.ndarray,
    inv: np.ndarray,
    c0: np.ndarray,
    c1: np.ndarray,
    tau0: np.ndarray,
    tau1: np.ndarray,
    ladder: np.ndarray,
    rungs: np.ndarray,
    d00: np.ndarray,
    d11: np.ndarray,
    C_b: np.ndarray,
    C_W: np.ndarray,
    g2: np.ndarray,
    lambda_b: np.ndarray,
    lambda_W: np.ndarray,
    tol: float,
    start: int,
    r0: int,
    r1: int,
    ntk: bool,
) -> np.ndarray:
    """Rows ``r0:r1`` of ``K^(l)`` and (if ``ntk``) ``Theta^(l)``, ``l = 0..L-1``, in place, for
    a smooth activation by Mehler's series; the fused :func:`pdlt.theory.kernel.mehler_flow`.

    Per layer, ``<sigma_a sigma_b> = sum_{n <= m} c_n(a) c_n(b) rho_ab^n`` (and the same with
    the coefficients of ``sigma'``), ``m`` the first rung of ``ladder`` whose tail bound
    ``|rho|^(m+1) tau_m(a) tau_m(b)`` is at most ``tol`` (:func:`pdlt.gaussian._mehler`), chosen
    per pair and per series, so a pair's value depends neither on its neighbours nor on
    whether ``Theta`` is computed too; the diagonal and duplicated
    pairs (``K_ab = K_aa = K_bb``) take the one-dimensional moments ``d00, d11``.  Pairs ``a <=
    b`` are computed once and mirrored, in tiles of 16 rows, as :func:`arc_cosine_rows`.

    Parameters
    ----------
    gram : ndarray, shape (N, N)
    K, T : ndarray, shape (L, N, N)
        Outputs (``T`` untouched unless ``ntk``).
    var, inv : ndarray, shape (L, N)
        ``K^(l)_aa`` and ``1/sqrt(K^(l)_aa)`` (0 for a zero variance).
    c0, c1 : ndarray, shape (L - 1, M + 1, N)
        Normalized Hermite coefficients of ``sigma`` and ``sigma'`` at ``K^(l)_aa``.
    tau0, tau1 : ndarray, shape (L - 1, J, N)
        Normalized tails ``sqrt(T_m / E)`` of ``sigma`` and ``sigma'`` at the rungs ``ladder``
        (J,); layer ``l`` uses its first ``rungs[l]`` (its coefficients go to
        ``ladder[rungs[l] - 1]``).
    d00, d11 : ndarray, shape (L - 1, N)
        ``<sigma^2>``, ``<sigma'^2>`` at ``K^(l)_aa``.
    start : int
        The first layer to compute (1: all, from ``gram``; else from layer ``start - 1`` of
        ``K``, ``T`` as they are).

    Returns
    -------
    ndarray of int, shape (L,)
        Pairs per layer that no rung covers; if any, the values are not to be used.
    """
    L, N = K.shape[0], K.shape[1]
    R = 16
    kS, tS = np.empty((R, N)), np.empty((R, N))
    rh, acc0, acc1 = np.empty(N), np.empty(N), np.empty(N)
    mb, md = np.empty(N, dtype=np.int64), np.empty(N, dtype=np.int64)
    failed = np.zeros(L, dtype=np.int64)
    for s0 in range(r0, r1, R):
        s1 = min(s0 + R, r1)
        if start == 1:
            _first_layer(gram, K, T, C_b, C_W, lambda_b, lambda_W, s0, s1, kS, tS, ntk)
        else:  # resume from layer start - 1 as it is
            for a in range(s0, s1):
                kS[a - s0, a:] = K[start - 1, a, a:]
                if ntk:
                    tS[a - s0, a:] = T[start - 1, a, a:]
        for ell in range(start, L):
            j = ell - 1
            cb, cw, gg = C_b[ell], C_W[ell], g2[ell]
            lb, lw = lambda_b[ell], lambda_W[ell]
            for a in range(s0, s1):
                k, t, m = kS[a - s0, a:], tS[a - s0, a:], N - a
                va, ia = var[j, a], inv[j, a]
                mb[0] = -1  # the diagonal
                md[0] = -1
                mmax = 0
                t0, t1, vj, ij = tau0[j], tau1[j], var[j], inv[j]
                for b in range(1, m):  # one branch-free pass: rho, each pair's m, duplicates
                    kb = k[b]
                    rho = min(max(kb * (ia * ij[a + b]), -1.0), 1.0)
                    rh[b] = rho
                    ar = abs(rho)
                    q = ar * ar
                    q = q * q
                    q = q * q  # |rho|^8, then ^16, ^32, ...: the bound at rung m has |rho|^(m+1)
                    m0, m1 = -2, -2
                    for i in range(rungs[j]):
                        qa = q * ar
                        m0 = ladder[i] if (m0 == -2 and qa * t0[i, a] * t0[i, a + b] <= tol) else m0
                        m1 = ladder[i] if (m1 == -2 and qa * t1[i, a] * t1[i, a + b] <= tol) else m1
                        q = q * q
                    dup = (kb == va) & (kb == vj[a + b])  # z_a = z_b: one-dimensional
                    lost = ((m0 == -2) | (ntk & (m1 == -2))) & ~dup
                    failed[ell] += lost
                    m0 = -1 if dup else (0 if m0 == -2 else m0)
                    m1 = -1 if dup else (0 if m1 == -2 else m1)
                    mb[b], md[b] = m0, m1
                    mmax = max(mmax, m0, m1 if ntk else 0)
                if ntk:
                    _horner_pair(c0[j], c1[j], a, rh, mb, md, mmax, m, acc0, acc1)
                else:
                    _horner(c0[j], a, rh, mb, mmax, m, acc0)
                for b in range(m):  # the diagonal and duplicated pairs
                    acc0[b] = d00[j, a] if mb[b] == -1 else acc0[b]
                if ntk:
                    Trow = T[ell, a, a:]
                    for b in range(m):
                        sp = d11[j, a] if mb[b] == -1 else acc1[b]
                        t[b] = lb + lw * acc0[b] + (cw * sp + gg) * t[b]
                        Trow[b] = t[b]
                Krow = K[ell, a, a:]
                for b in range(m):
                    k[b] = cw * acc0[b] + cb + gg * k[b]
                    Krow[b] = k[b]
            _mirror(K, T, kS, tS, ell, s0, s1, ntk)
    return failed
