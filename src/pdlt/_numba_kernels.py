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
from numba.core import cgutils
from numba.extending import intrinsic

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


@intrinsic
def _unowned(typingctx, arr):  # noqa: ANN001, ANN202 (numba's intrinsic signature)
    """``arr`` without its reference count, for an array that outlives the kernel (an argument):
    numba counts every view taken of an owned array with an atomic increment and decrement,
    which took a third of ``mehler_rows``' time in its per-row and per-order views."""

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        ary = context.make_array(arr)(context, builder, value=args[0])
        ary.meminfo = cgutils.get_null_value(ary.meminfo.type)
        ary.parent = cgutils.get_null_value(ary.parent.type)
        return ary._getvalue()

    return arr(arr), codegen


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


TILE = 16  # rows of pairs that go through all layers together


@njit(inline="always", error_model="numpy")
def _first_layer(
    gram: np.ndarray,
    K: np.ndarray,
    T: np.ndarray,
    C_b: np.ndarray,
    C_W: np.ndarray,
    lambda_b: np.ndarray,
    lambda_W: np.ndarray,
    slot: np.ndarray,
    tile: np.ndarray,
    kS: np.ndarray,
    tS: np.ndarray,
    ntk: bool,
) -> None:
    """The tile's rows (``tile``, sorted) of ``K^(1) = C_b + C_W X`` (4.8) and ``Theta^(1) =
    lambda_b + lambda_W X`` (8.23): their upper triangles into the tile's state ``kS, tS``
    (R, N), and the whole rows into ``K[slot[0]], T[slot[0]]`` when the first layer is kept."""
    N = gram.shape[0]
    for p in range(tile.shape[0]):
        a = tile[p]
        for b in range(a, N):
            kS[p, b] = C_b[0] + C_W[0] * gram[a, b]
            if ntk:
                tS[p, b] = lambda_b[0] + lambda_W[0] * gram[a, b]
        if slot[0] >= 0:
            for b in range(N):
                K[slot[0], a, b] = C_b[0] + C_W[0] * gram[a, b]
                if ntk:
                    T[slot[0], a, b] = lambda_b[0] + lambda_W[0] * gram[a, b]


@njit(inline="always", error_model="numpy")
def _mirror(
    K: np.ndarray,
    T: np.ndarray,
    kS: np.ndarray,
    tS: np.ndarray,
    s: int,
    tile: np.ndarray,
    ntk: bool,
) -> None:
    """The tile's mirror in output slot ``s``: ``K[s, b, a] = K[s, a, b]`` for the tile's rows
    ``a`` (consecutive) and ``b > a``, in runs of the tile's columns (so it vectorizes)."""
    N, R, s0 = K.shape[1], tile.shape[0], tile[0]
    for b in range(s0 + 1, N):
        for p in range(min(R, b - s0)):
            K[s, b, s0 + p] = kS[p, b]
            if ntk:
                T[s, b, s0 + p] = tS[p, b]


@njit(inline="always", error_model="numpy")
def _rows(
    K: np.ndarray, T: np.ndarray, s: int, a: int, junk: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Row ``a`` from the diagonal on of output slot ``s`` of ``K, T``; rows of ``junk``
    (2, N) when the layer is not kept, so the loops that fill them have no branch."""
    if s >= 0:
        return K[s, a, a:], T[s, a, a:]
    return junk[0, a:], junk[1, a:]


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
    slot: np.ndarray,
    i0: int,
    i1: int,
    ntk: bool,
) -> None:
    """Rows ``i0 <= a < i1`` of ``K^(l)`` and (if ``ntk``) ``Theta^(l)``, ``l = 0..L-1``, in place;
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
    K, T : ndarray, shape (S, N, N)
        Outputs, the kept layers only; ``T`` is not touched unless ``ntk``.
    var : ndarray, shape (L, N)
        :func:`arc_cosine_variances`.
    slot : ndarray of int, shape (L,)
        Where layer ``l`` goes in ``K, T`` (-1: not kept).
    """
    L, N, R = C_b.shape[0], gram.shape[0], TILE
    kS, tS, r, junk = np.empty((R, N)), np.empty((R, N)), np.empty(N), np.empty((2, N))
    rows = np.arange(N)
    for p0 in range(i0, i1, R):
        tile = rows[p0 : min(p0 + R, i1)]
        _first_layer(gram, K, T, C_b, C_W, lambda_b, lambda_W, slot, tile, kS, tS, ntk)
        for ell in range(1, L):
            cb, cw, gg = C_b[ell], C_W[ell], g2[ell]
            lb, lw = lambda_b[ell], lambda_W[ell]
            for p in range(tile.shape[0]):
                a = tile[p]
                k, t, m = kS[p, a:], tS[p, a:], N - a
                # the diagonal (b = 0 here) is exact, r = 0: it never needs the second pass
                r[0] = 0.0
                sine_squares(k[1:], var[ell - 1, a], var[ell - 1, a + 1 :], r[1:m])
                Krow, Trow = _rows(K, T, slot[ell], a, junk)
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
            if slot[ell] >= 0:
                _mirror(K, T, kS, tS, slot[ell], tile, ntk)


@njit(inline="always", error_model="numpy")
def _terms_masked(
    c: np.ndarray,
    a: int,
    o0: int,
    o1: int,
    x: np.ndarray,
    mb: np.ndarray,
    acc: np.ndarray,
    n: int,
    stop: int,
    step: int,
) -> int:
    """Horner's steps ``acc[i] = acc[i] x[i] + c[n, a] c[n, o0 + i]`` for the orders ``n, n -
    step, ...`` above ``stop``, the term left out (0) where ``n > mb[i]``; four orders a pass
    (the state is read and written once per four terms).  Returns the next ``n``."""
    w, s1, s2, s3 = o1 - o0, step, 2 * step, 3 * step
    while n - s3 > stop:
        t3, t2, t1, t0 = c[n, a], c[n - s1, a], c[n - s2, a], c[n - s3, a]
        e3, e2, e1, e0 = c[n, o0:o1], c[n - s1, o0:o1], c[n - s2, o0:o1], c[n - s3, o0:o1]
        for i in range(w):
            y, p = x[i], mb[i]
            u = acc[i] * y + (t3 * e3[i] if n <= p else 0.0)
            u = u * y + (t2 * e2[i] if n - s1 <= p else 0.0)
            u = u * y + (t1 * e1[i] if n - s2 <= p else 0.0)
            acc[i] = u * y + (t0 * e0[i] if n - s3 <= p else 0.0)
        n -= 4 * step
    while n > stop:
        t3, e3 = c[n, a], c[n, o0:o1]
        for i in range(w):
            acc[i] = acc[i] * x[i] + (t3 * e3[i] if n <= mb[i] else 0.0)
        n -= step
    return n


@njit(inline="always", error_model="numpy")
def _terms(
    c: np.ndarray, a: int, o0: int, o1: int, x: np.ndarray, acc: np.ndarray, n: int, step: int
) -> None:
    """:func:`_terms_masked` down to order 0 or 1 with every term in (no pair stops above)."""
    w, s1, s2, s3 = o1 - o0, step, 2 * step, 3 * step
    while n - s3 >= 0:
        t3, t2, t1, t0 = c[n, a], c[n - s1, a], c[n - s2, a], c[n - s3, a]
        e3, e2, e1, e0 = c[n, o0:o1], c[n - s1, o0:o1], c[n - s2, o0:o1], c[n - s3, o0:o1]
        for i in range(w):
            y = x[i]
            u = acc[i] * y + t3 * e3[i]
            u = u * y + t2 * e2[i]
            u = u * y + t1 * e1[i]
            acc[i] = u * y + t0 * e0[i]
        n -= 4 * step
    while n >= 0:
        t3, e3 = c[n, a], c[n, o0:o1]
        for i in range(w):
            acc[i] = acc[i] * x[i] + t3 * e3[i]
        n -= step


# pairs per Horner chunk: its highest order bounds its work, yet long runs pay (measured at
# N = 1000: 1024 beat 128 by 5-10%, 32 lost 30%)
_CHUNK = 1024


@njit(inline="always", error_model="numpy")
def _series(
    c: np.ndarray,
    a: int,
    rho: np.ndarray,
    rho2: np.ndarray,
    mb: np.ndarray,
    m: int,
    acc: np.ndarray,
    parity: int,
) -> None:
    """``acc[b] = sum_{n <= mb[b]} c[n, a] c[n, a + b] rho[b]^n`` for ``b = 1..m-1`` (0 where
    ``mb[b] < 0``) by Horner's rule, in chunks of ``_CHUNK`` pairs, each run from its own
    highest order, with the terms above a pair's own ``mb[b]`` left out (so its value is that
    of its own sum to the last bit, whatever its neighbours).  With ``parity`` 0 or 1 the
    orders of that parity are summed by Horner's rule in ``rho2 = rho^2`` (times ``rho`` for
    the odd ones), and of the other parity only the lowest, ``1 - parity``: the others vanish
    (tanh: ``sigma`` odd, ``sigma'`` even; GELU, SWISH: ``sigma = z/2`` plus an even function,
    ``sigma'`` the constant ``1/2`` plus an odd one)."""
    step = 1 if parity < 0 else 2
    x = rho if parity < 0 else rho2
    for b0 in range(1, m, _CHUNK):
        b1 = min(b0 + _CHUNK, m)
        ac, xx, pb = acc[b0:b1], x[b0:b1], mb[b0:b1]
        top, low = -1, 1 << 30
        for i in range(b1 - b0):
            top = max(top, pb[i])
            low = min(low, pb[i])
        if parity >= 0:  # the highest order of that parity
            top -= (top - parity) % 2
        ac[:] = 0.0
        n = _terms_masked(c, a, a + b0, a + b1, xx, pb, ac, top, max(low, -1), step)
        _terms(c, a, a + b0, a + b1, xx, ac, n, step)
        if parity == 1:
            for i in range(b1 - b0):
                ac[i] *= rho[b0 + i]
        # the other parity's lowest order, where this row has it (the tables hold an exact 0
        # where it is negligible, as for tanh: adding it would change nothing)
        if parity >= 0 and c[1 - parity, a] != 0.0:
            _lowest(c, a, b0, b1, rho, mb, ac, 1 - parity)


@njit(error_model="numpy")  # not inlined: inlined, it slowed the loops around it by 15%
def _lowest(
    c: np.ndarray,
    a: int,
    b0: int,
    b1: int,
    rho: np.ndarray,
    mb: np.ndarray,
    ac: np.ndarray,
    n: int,
) -> None:
    """``ac[i] += c[n, a] c[n, a + b] rho[b]^n`` for ``b = b0 + i < b1`` where ``mb[b] >= n``,
    ``n`` = 0 or 1: the one order of the other parity that :func:`_series` adds."""
    t, e, r, m = c[n, a], c[n, a + b0 : a + b1], rho[b0:b1], mb[b0:b1]
    if n == 1:
        for i in range(b1 - b0):
            ac[i] += t * e[i] * r[i] if m[i] >= 1 else 0.0
    else:
        for i in range(b1 - b0):
            ac[i] += t * e[i] if m[i] >= 0 else 0.0


@njit(inline="always", error_model="numpy")
def _terms2_masked(
    c: np.ndarray,
    a: int,
    o0: int,
    o1: int,
    x: np.ndarray,
    y: np.ndarray,
    mx: np.ndarray,
    my: np.ndarray,
    acc: np.ndarray,
    bcc: np.ndarray,
    n: int,
    stop: int,
    step: int,
) -> int:
    """:func:`_terms_masked` for the rows ``a`` (``x, mx, acc``) and ``a + 1`` (``y, my,
    bcc``) at once, on their pairs with the columns ``o0..o1``: each coefficient of a column
    is read once for both (1.4x the steps per second of two single rows)."""
    w, s1, s2, s3 = o1 - o0, step, 2 * step, 3 * step
    while n - s3 > stop:
        n1, n2, n3 = n - s1, n - s2, n - s3
        t3, t2, t1, t0 = c[n, a], c[n1, a], c[n2, a], c[n3, a]
        r3, r2, r1, r0 = c[n, a + 1], c[n1, a + 1], c[n2, a + 1], c[n3, a + 1]
        e3, e2, e1, e0 = c[n, o0:o1], c[n1, o0:o1], c[n2, o0:o1], c[n3, o0:o1]
        for i in range(w):
            u, p, v, q = x[i], mx[i], y[i], my[i]
            f = acc[i] * u + (t3 * e3[i] if n <= p else 0.0)
            g = bcc[i] * v + (r3 * e3[i] if n <= q else 0.0)
            f = f * u + (t2 * e2[i] if n1 <= p else 0.0)
            g = g * v + (r2 * e2[i] if n1 <= q else 0.0)
            f = f * u + (t1 * e1[i] if n2 <= p else 0.0)
            g = g * v + (r1 * e1[i] if n2 <= q else 0.0)
            acc[i] = f * u + (t0 * e0[i] if n3 <= p else 0.0)
            bcc[i] = g * v + (r0 * e0[i] if n3 <= q else 0.0)
        n -= 4 * step
    while n > stop:
        t3, r3, e3 = c[n, a], c[n, a + 1], c[n, o0:o1]
        for i in range(w):
            acc[i] = acc[i] * x[i] + (t3 * e3[i] if n <= mx[i] else 0.0)
            bcc[i] = bcc[i] * y[i] + (r3 * e3[i] if n <= my[i] else 0.0)
        n -= step
    return n


@njit(inline="always", error_model="numpy")
def _terms2(
    c: np.ndarray,
    a: int,
    o0: int,
    o1: int,
    x: np.ndarray,
    y: np.ndarray,
    acc: np.ndarray,
    bcc: np.ndarray,
    n: int,
    step: int,
) -> None:
    """:func:`_terms2_masked` down to order 0 or 1 with every term in."""
    w, s1, s2, s3 = o1 - o0, step, 2 * step, 3 * step
    while n - s3 >= 0:
        n1, n2, n3 = n - s1, n - s2, n - s3
        t3, t2, t1, t0 = c[n, a], c[n1, a], c[n2, a], c[n3, a]
        r3, r2, r1, r0 = c[n, a + 1], c[n1, a + 1], c[n2, a + 1], c[n3, a + 1]
        e3, e2, e1, e0 = c[n, o0:o1], c[n1, o0:o1], c[n2, o0:o1], c[n3, o0:o1]
        for i in range(w):
            u, v = x[i], y[i]
            f = acc[i] * u + t3 * e3[i]
            g = bcc[i] * v + r3 * e3[i]
            f = f * u + t2 * e2[i]
            g = g * v + r2 * e2[i]
            f = f * u + t1 * e1[i]
            g = g * v + r1 * e1[i]
            acc[i] = f * u + t0 * e0[i]
            bcc[i] = g * v + r0 * e0[i]
        n -= 4 * step
    while n >= 0:
        t3, r3, e3 = c[n, a], c[n, a + 1], c[n, o0:o1]
        for i in range(w):
            acc[i] = acc[i] * x[i] + t3 * e3[i]
            bcc[i] = bcc[i] * y[i] + r3 * e3[i]
        n -= step


@njit(inline="always", error_model="numpy")
def _series2(
    c: np.ndarray,
    a: int,
    rho: np.ndarray,
    rho2: np.ndarray,
    mb: np.ndarray,
    acc: np.ndarray,
    sho: np.ndarray,
    sho2: np.ndarray,
    nb: np.ndarray,
    bcc: np.ndarray,
    m: int,
    parity: int,
) -> None:
    """:func:`_series` for the rows ``a`` (``rho, rho2, mb, acc``, ``m`` pairs with the
    diagonal) and ``a + 1`` (``sho, sho2, nb, bcc``) at once (:func:`_terms2_masked`), on the
    columns ``a + 1`` on: the same arithmetic pair by pair, so the same values to the last
    bit.  Row ``a + 1``'s diagonal (order -1) runs along with row ``a``'s first pair's order
    (so that it does not hold the masked steps down to order 0); its value is not used."""
    step = 1 if parity < 0 else 2
    x, y = (rho, sho) if parity < 0 else (rho2, sho2)
    nb[0] = mb[1]
    for b0 in range(1, m, _CHUNK):
        b1 = min(b0 + _CHUNK, m)
        ac, xx, pb = acc[b0:b1], x[b0:b1], mb[b0:b1]
        bc, yy, qb = bcc[b0 - 1 : b1 - 1], y[b0 - 1 : b1 - 1], nb[b0 - 1 : b1 - 1]
        top, low = -1, 1 << 30
        for i in range(b1 - b0):
            top = max(top, max(pb[i], qb[i]))
            low = min(low, min(pb[i], qb[i]))
        if parity >= 0:  # the highest order of that parity
            top -= (top - parity) % 2
        ac[:] = 0.0
        bc[:] = 0.0
        n = _terms2_masked(c, a, a + b0, a + b1, xx, yy, pb, qb, ac, bc, top, max(low, -1), step)
        _terms2(c, a, a + b0, a + b1, xx, yy, ac, bc, n, step)
        if parity == 1:
            for i in range(b1 - b0):
                ac[i] *= rho[b0 + i]
                bc[i] *= sho[b0 - 1 + i]
        if parity >= 0 and c[1 - parity, a] != 0.0:
            _lowest(c, a, b0, b1, rho, mb, ac, 1 - parity)
        if parity >= 0 and c[1 - parity, a + 1] != 0.0:
            _lowest(c, a + 1, b0 - 1, b1 - 1, sho, nb, bc, 1 - parity)
    nb[0] = -1


@njit(inline="always", error_model="numpy")
def _fails(p: float, r: float, ta: tuple, tb: tuple, b: int, n: int, tol: float) -> int:
    """How many of four consecutive rungs ``m = L, 2 L, 4 L, 8 L`` fail to cover a pair, the
    first ``n`` of them only: their tail bounds ``|rho|^(m + 1) tau_m(a) tau_m(b)`` above
    ``tol`` (``p = |rho|^L``, ``r = |rho|``; ``ta`` the four ``tau_m(a)``, ``tb`` the four
    rows of ``tau_m`` from which ``b`` is read).  The tails decrease along the ladder (see
    :func:`hermite_tables`), so the rungs that fail are the first ones."""
    f = p * r * ta[0] * tb[0][b] > tol
    p = p * p
    f += (p * r * ta[1] * tb[1][b] > tol) & (n > 1)
    p = p * p
    f += (p * r * ta[2] * tb[2][b] > tol) & (n > 2)
    p = p * p
    f += (p * r * ta[3] * tb[3][b] > tol) & (n > 3)
    return f


@njit(inline="always", error_model="numpy")
def _rungs4(tau: np.ndarray, g: int, a: int) -> tuple[tuple, tuple]:
    """For :func:`_fails`: the tails at the rungs ``g..g+3`` (the last one repeated past the
    end) of the row's sample ``a`` and the rows of them from ``a`` on."""
    R = tau.shape[0] - 1
    i0, i1, i2, i3 = min(g, R), min(g + 1, R), min(g + 2, R), min(g + 3, R)
    ta = (tau[i0, a], tau[i1, a], tau[i2, a], tau[i3, a])
    return ta, (tau[i0, a:], tau[i1, a:], tau[i2, a:], tau[i3, a:])


@njit(inline="always", error_model="numpy")
def _orders(
    k: np.ndarray,
    m: int,
    va: float,
    ia: float,
    vj: np.ndarray,
    ij: np.ndarray,
    tau0: np.ndarray,
    tau1: np.ndarray,
    rungs: int,
    a: int,
    tol: float,
    ntk: bool,
    rh: np.ndarray,
    rh2: np.ndarray,
    mb: np.ndarray,
    md: np.ndarray,
) -> int:
    """For the pairs ``(a, a + b)``, ``b = 1..m-1``, of a row: ``rho`` into ``rh`` (and
    ``rho^2`` into ``rh2``), and the orders ``m`` of ``sigma``'s and (if ``ntk``)
    ``sigma'``'s series into ``mb, md``: the first of the first ``rungs`` rungs ``m = 8 <<
    i`` (the ladder of :func:`mehler_rows`) whose tail bound ``|rho|^(m+1) tau_m(a)
    tau_m(b)`` is at most ``tol``; -1 for the diagonal and duplicated pairs (``K_ab = K_aa =
    K_bb``), 0 where no rung does.  ``vj, ij`` are the row's ``K_bb`` and ``1/sqrt(K_bb)``
    from ``a`` on.  Four rungs a pass, branch-free, so it vectorizes.  Returns the number of
    pairs no rung covers."""
    ta0, tb0 = _rungs4(tau0, 0, a)
    ta1, tb1 = _rungs4(tau1, 0, a)
    n = min(rungs, 4)
    for b in range(1, m):  # the first four rungs, with rho (two loops: each vectorizes)
        rho = min(max(k[b] * (ia * ij[b]), -1.0), 1.0)
        rh[b] = rho
        q = rho * rho
        rh2[b] = q
        q = q * q
        mb[b] = _fails(q * q, abs(rho), ta0, tb0, b, n, tol)
    if ntk:
        for b in range(1, m):
            q = rh2[b] * rh2[b]
            md[b] = _fails(q * q, abs(rh[b]), ta1, tb1, b, n, tol)
    for g in range(4, rungs, 4):  # pairs no rung covered so far (a rare retry with more)
        ta0, tb0 = _rungs4(tau0, g, a)
        ta1, tb1 = _rungs4(tau1, g, a)
        n = min(rungs - g, 4)
        for b in range(1, m):
            if mb[b] == g or (ntk and md[b] == g):
                r = abs(rh[b])
                p = r
                for _ in range(3 + g):  # |rho|^(8 << g)
                    p = p * p
                mb[b] += _fails(p, r, ta0, tb0, b, n, tol) if mb[b] == g else 0
                md[b] += _fails(p, r, ta1, tb1, b, n, tol) if ntk and md[b] == g else 0
    lost = 0
    for b in range(1, m):
        kb, f0, f1 = k[b], mb[b], md[b]
        dup = (kb == va) & (kb == vj[b])  # z_a = z_b: one-dimensional
        lost += ((f0 >= rungs) | (ntk & (f1 >= rungs))) & ~dup
        mb[b] = -1 if dup else (0 if f0 >= rungs else 8 << f0)
        md[b] = -1 if (dup or not ntk) else (0 if f1 >= rungs else 8 << f1)
    mb[0], md[0], rh[0], rh2[0] = -1, -1, 1.0, 1.0  # the diagonal
    return lost


@njit(inline="always", error_model="numpy")
def _record(
    k: np.ndarray,
    t: np.ndarray,
    mb: np.ndarray,
    md: np.ndarray,
    a: int,
    ell: int,
    seen: np.ndarray,
    pairs: np.ndarray,
    kt: np.ndarray,
    lost: int,
) -> int:
    """Of the row's pairs ``(a, a + b)``, those that no rung covers at layer ``ell`` (order 0
    in ``mb`` or ``md``: :func:`_orders`) and not before (``seen[a + b]``, then set) into
    ``pairs, kt`` (:func:`mehler_rows`) from index ``lost``; returns the new count."""
    for b in range(1, k.shape[0]):
        if (mb[b] == 0 or md[b] == 0) and seen[a + b] == 0:
            seen[a + b] = 1
            if lost < pairs.shape[0]:
                pairs[lost, 0], pairs[lost, 1], pairs[lost, 2] = a, a + b, ell
                kt[lost, 0], kt[lost, 1] = k[b], t[b]
            lost += 1
    return lost


@njit(inline="always", error_model="numpy")
def _update(
    k: np.ndarray,
    t: np.ndarray,
    Krow: np.ndarray,
    Trow: np.ndarray,
    mb: np.ndarray,
    acc0: np.ndarray,
    acc1: np.ndarray,
    d0: float,
    d1: float,
    cb: float,
    cw: float,
    gg: float,
    lb: float,
    lw: float,
    ntk: bool,
) -> None:
    """A row's step to the next layer, in the state ``k, t`` and into the output rows: ``K' =
    C_b + C_W <ss> + gamma^2 K``, ``Theta' = lambda_b + lambda_W <ss> + (C_W <s's'> +
    gamma^2) Theta`` with the sums ``acc0, acc1``, or for the diagonal and duplicated pairs
    (``mb = -1``) the 1-D moments ``d0, d1``."""
    if ntk:
        for b in range(k.shape[0]):
            ss = d0 if mb[b] == -1 else acc0[b]
            sp = d1 if mb[b] == -1 else acc1[b]
            t[b] = lb + lw * ss + (cw * sp + gg) * t[b]
            Trow[b] = t[b]
            k[b] = cw * ss + cb + gg * k[b]
            Krow[b] = k[b]
    else:
        for b in range(k.shape[0]):
            ss = d0 if mb[b] == -1 else acc0[b]
            k[b] = cw * ss + cb + gg * k[b]
            Krow[b] = k[b]


_TWO_ROWS_FROM = 200  # pairs in a row from which two rows go through the series together
MEHLER_WORK = 2 * TILE + 10  # rows of mehler_rows' scratch (float; of int: 4 + TILE)


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
    rungs: np.ndarray,
    d00: np.ndarray,
    d11: np.ndarray,
    parity: np.ndarray,
    C_b: np.ndarray,
    C_W: np.ndarray,
    g2: np.ndarray,
    lambda_b: np.ndarray,
    lambda_W: np.ndarray,
    tol: float,
    slot: np.ndarray,
    i0: int,
    i1: int,
    ntk: bool,
    work: np.ndarray,
    iwork: np.ndarray,
    pairs: np.ndarray,
    kt: np.ndarray,
) -> int:
    """Rows ``i0 <= a < i1`` of ``K^(l)`` and (if ``ntk``) ``Theta^(l)``, ``l = 0..L-1``, in
    place, for a smooth activation by Mehler's series; the fused
    :func:`pdlt.theory.kernel.mehler_flow`.

    Per layer, ``<sigma_a sigma_b> = sum_{n <= m} c_n(a) c_n(b) rho_ab^n`` (and the same with
    the coefficients of ``sigma'``), ``m`` chosen per pair and per series by
    :func:`_orders` (the tail bound of :func:`pdlt.gaussian._mehler`), so a pair's value
    depends neither on its neighbours nor on whether ``Theta`` is computed too; the diagonal
    and duplicated pairs take the one-dimensional moments ``d00, d11``.  Pairs ``a <= b`` are
    computed once and mirrored, in tiles of 16 rows, as :func:`arc_cosine_rows`.

    Parameters
    ----------
    gram : ndarray, shape (N, N)
    K, T : ndarray, shape (S, N, N)
        Outputs, the kept layers only (``T`` untouched unless ``ntk``).
    var, inv : ndarray, shape (L, N)
        ``K^(l)_aa`` and ``1/sqrt(K^(l)_aa)`` (0 for a zero variance).
    c0, c1 : ndarray, shape (L - 1, M + 1, N)
        Normalized Hermite coefficients of ``sigma`` and ``sigma'`` at ``K^(l)_aa``.
    tau0, tau1 : ndarray, shape (L - 1, J, N)
        Normalized tails ``sqrt(T_m / E)`` of ``sigma`` and ``sigma'`` at the rungs ``m = 8 <<
        i``, ``i < J``, non-increasing in ``i`` (:func:`hermite_tables`); layer ``l`` uses its
        first ``rungs[l]`` (its coefficients go to ``8 << (rungs[l] - 1)``).
    d00, d11 : ndarray, shape (L - 1, N)
        ``<sigma^2>``, ``<sigma'^2>`` at ``K^(l)_aa``.
    parity : ndarray of int, shape (2, L - 1)
        Per layer, for ``sigma`` and ``sigma'``: 0 or 1 when only the even or odd orders are
        there (:func:`_series`), else -1.
    slot : ndarray of int, shape (L,)
        Where layer ``l`` goes in ``K, T`` (-1: not kept).
    work, iwork : ndarray, shape (MEHLER_WORK, N), and of int, shape (4 + TILE, N)
        Scratch, the caller's (so that their views are not counted: :func:`_unowned`); the
        last ``TILE`` rows of ``iwork`` zero on entry.
    pairs : ndarray of int, shape (P, 3)
    kt : ndarray, shape (P, 2)
        Where the pairs that no rung covers go, ``(a, b, l)`` with ``a < b`` and the first
        layer ``l`` where none did, and ``(K_ab, Theta_ab)`` of the layer below it (the
        input of ``l``): :func:`mehler_pairs` continues them from there.

    Returns
    -------
    int
        The number of such pairs (only the first ``P`` written); their values from layer
        ``l`` on are not to be used.
    """
    L, N, R = C_b.shape[0], gram.shape[0], TILE
    gram, K, T, var, inv = _unowned(gram), _unowned(K), _unowned(T), _unowned(var), _unowned(inv)
    c0, c1, tau0, tau1 = _unowned(c0), _unowned(c1), _unowned(tau0), _unowned(tau1)
    d00, d11, pairs, kt = _unowned(d00), _unowned(d11), _unowned(pairs), _unowned(kt)
    work, iwork = _unowned(work), _unowned(iwork)
    kS, tS, junk = work[:R], work[R : 2 * R], work[2 * R : 2 * R + 2]
    rh, rh2, acc0, acc1 = work[2 * R + 2], work[2 * R + 3], work[2 * R + 4], work[2 * R + 5]
    sh, sh2, bcc0, bcc1 = work[2 * R + 6], work[2 * R + 7], work[2 * R + 8], work[2 * R + 9]
    mb, md, nb, nd, seen = iwork[0], iwork[1], iwork[2], iwork[3], iwork[4:]
    rows = np.arange(N)
    lost = 0
    for p0 in range(i0, i1, R):
        tile, since = rows[p0 : min(p0 + R, i1)], lost
        _first_layer(gram, K, T, C_b, C_W, lambda_b, lambda_W, slot, tile, kS, tS, ntk)
        for ell in range(1, L):
            j = ell - 1
            cb, cw, gg = C_b[ell], C_W[ell], g2[ell]
            lb, lw = lambda_b[ell], lambda_W[ell]
            p = 0
            while p < tile.shape[0]:  # two rows at a time (the coefficients read once)
                a = tile[p]
                two = p + 1 < tile.shape[0] and N - a >= _TWO_ROWS_FROM
                k, t, m = kS[p, a:], tS[p, a:], N - a
                if _orders(
                    k, m, var[j, a], inv[j, a], var[j, a:], inv[j, a:], tau0[j], tau1[j],
                    rungs[j], a, tol, ntk, rh, rh2, mb, md,
                ):  # fmt: skip
                    lost = _record(k, t, mb, md, a, ell, seen[p], pairs, kt, lost)
                if two:
                    u, v = kS[p + 1, a + 1 :], tS[p + 1, a + 1 :]
                    if _orders(
                        u, m - 1, var[j, a + 1], inv[j, a + 1], var[j, a + 1 :],
                        inv[j, a + 1 :], tau0[j], tau1[j], rungs[j], a + 1, tol, ntk,
                        sh, sh2, nb, nd,
                    ):  # fmt: skip
                        lost = _record(u, v, nb, nd, a + 1, ell, seen[p + 1], pairs, kt, lost)
                    _series2(c0[j], a, rh, rh2, mb, acc0, sh, sh2, nb, bcc0, m, parity[0, j])
                    if ntk:
                        _series2(c1[j], a, rh, rh2, md, acc1, sh, sh2, nd, bcc1, m, parity[1, j])
                    Krow, Trow = _rows(K, T, slot[ell], a + 1, junk)
                    d0, d1 = d00[j, a + 1], d11[j, a + 1]
                    _update(u, v, Krow, Trow, nb, bcc0, bcc1, d0, d1, cb, cw, gg, lb, lw, ntk)
                else:
                    _series(c0[j], a, rh, rh2, mb, m, acc0, parity[0, j])
                    if ntk:
                        _series(c1[j], a, rh, rh2, md, m, acc1, parity[1, j])
                Krow, Trow = _rows(K, T, slot[ell], a, junk)
                d0, d1 = d00[j, a], d11[j, a]
                _update(k, t, Krow, Trow, mb, acc0, acc1, d0, d1, cb, cw, gg, lb, lw, ntk)
                p += 2 if two else 1
            if slot[ell] >= 0:
                _mirror(K, T, kS, tS, slot[ell], tile, ntk)
        for q in range(since, min(lost, pairs.shape[0])):  # the tile's marks, cleared
            seen[pairs[q, 0] - p0, pairs[q, 1]] = 0
    return lost


@njit(inline="always", error_model="numpy")
def _pair_order(
    rho: float, tau: np.ndarray, pa: int, pb: int, rungs: int, tol: float, dup: bool
) -> int:
    """:func:`_orders` for one pair (samples ``pa < pb`` of ``tau``, (J, P)), the same
    arithmetic: its order, -1 when duplicated, 0 when no rung covers it."""
    if dup:
        return -1
    r, q = abs(rho), rho * rho
    q = q * q
    ta, tb = _rungs4(tau, 0, pa)
    f = _fails(q * q, r, ta, tb, pb - pa, min(rungs, 4), tol)
    for g in range(4, rungs, 4):
        if f < g:
            break
        ta, tb = _rungs4(tau, g, pa)
        p = r
        for _ in range(3 + g):  # |rho|^(8 << g)
            p = p * p
        f += _fails(p, r, ta, tb, pb - pa, min(rungs - g, 4), tol)
    return 0 if f >= rungs else 8 << f


@njit(inline="always", error_model="numpy")
def _pair_series(c: np.ndarray, pa: int, pb: int, rho: float, top: int, parity: int) -> float:
    """:func:`_series` for one pair (samples ``pa, pb`` of ``c``, (M + 1, P)) to order
    ``top``, the same arithmetic in the same order (so the same value to the last bit)."""
    step = 1 if parity < 0 else 2
    x = rho if parity < 0 else rho * rho
    n = top if parity < 0 else top - (top - parity) % 2
    acc = 0.0
    while n >= 0:
        acc = acc * x + c[n, pa] * c[n, pb]
        n -= step
    if parity == 1:
        acc *= rho
    if parity >= 0 and c[1 - parity, pa] != 0.0:
        if parity == 0:
            acc += c[1, pa] * c[1, pb] * rho if top >= 1 else 0.0
        else:
            acc += c[0, pa] * c[0, pb] if top >= 0 else 0.0
    return acc


@njit(nogil=True, cache=True, error_model="numpy")
def mehler_pairs(
    pairs: np.ndarray,
    kt: np.ndarray,
    var: np.ndarray,
    inv: np.ndarray,
    c0: np.ndarray,
    c1: np.ndarray,
    tau0: np.ndarray,
    tau1: np.ndarray,
    rungs: np.ndarray,
    d00: np.ndarray,
    d11: np.ndarray,
    parity: np.ndarray,
    pos: np.ndarray,
    C_b: np.ndarray,
    C_W: np.ndarray,
    g2: np.ndarray,
    lambda_b: np.ndarray,
    lambda_W: np.ndarray,
    tol: float,
    slot: np.ndarray,
    K: np.ndarray,
    T: np.ndarray,
    ntk: bool,
) -> int:
    """The pairs :func:`mehler_rows` left (``pairs``, ``kt``), each continued from the layer
    where no rung covered it, with tables of more rungs (to 256) on the samples of the pairs
    only (``pos[a]``: the column of sample ``a``; the tables and their shapes as in
    :func:`mehler_rows`, with ``P`` columns); the kept layers' ``K_ab = K_ba`` (and
    ``Theta``) overwritten.  Orders, sums and updates are :func:`mehler_rows`' own, pair by
    pair (:func:`_pair_order`, :func:`_pair_series`), so a series the first pass covered
    has the same value.  Returns the number of pairs no rung covers even so (their values
    are not to be used)."""
    L = C_b.shape[0]
    lost = 0
    for q in range(pairs.shape[0]):
        a, b = pairs[q, 0], pairs[q, 1]
        pa, pb = pos[a], pos[b]
        k, t = kt[q, 0], kt[q, 1]
        for ell in range(pairs[q, 2], L):
            j = ell - 1
            dup = (k == var[j, a]) & (k == var[j, b])
            rho = min(max(k * (inv[j, a] * inv[j, b]), -1.0), 1.0)
            m0 = _pair_order(rho, tau0[j], pa, pb, rungs[j], tol, dup)
            m1 = _pair_order(rho, tau1[j], pa, pb, rungs[j], tol, dup) if ntk else -1
            if m0 == 0 or m1 == 0:
                lost += 1
                break
            ss = d00[j, pa] if m0 == -1 else _pair_series(c0[j], pa, pb, rho, m0, parity[0, j])
            if ntk:
                sp = d11[j, pa] if m0 == -1 else _pair_series(c1[j], pa, pb, rho, m1, parity[1, j])
                t = lambda_b[ell] + lambda_W[ell] * ss + (C_W[ell] * sp + g2[ell]) * t
            k = C_W[ell] * ss + C_b[ell] + g2[ell] * k
            s = slot[ell]
            if s >= 0:
                K[s, a, b], K[s, b, a] = k, k
                if ntk:
                    T[s, a, b], T[s, b, a] = t, t
    return lost


@njit(inline="always", error_model="numpy")
def _panel_slot(s: float, g0: int, nodes: np.ndarray, per: float) -> tuple[int, float]:
    """The slot of ``s``'s panel ``g = floor(t)``, ``t = per log2 s``, in a panel table (slot
    ``g - g0``; the last slot for ``s = 0``; -1 when that panel is not loaded), and where ``s``
    lies in it, ``x = 2 (t - g) - 1``."""
    G = nodes.shape[0] - 1
    if s == 0.0:
        return G, 0.0
    t = per * math.log2(s)
    g = math.floor(t)
    slot = int(g) - g0
    if slot < 0 or slot >= G or nodes[slot] == 0:
        return -1, 0.0
    return slot, 2.0 * (t - g) - 1.0


@njit(inline="always", error_model="numpy")
def _chebyshev(x: float, n: int, T: np.ndarray) -> None:
    """``T_p(x)`` for ``p < n`` into ``T``."""
    T[0], T[1] = 1.0, x
    for p in range(2, n):
        T[p] = 2.0 * x * T[p - 1] - T[p - 2]


@njit(inline="always", error_model="numpy")
def _panel_value(A: np.ndarray, slot: int, n: int, T: np.ndarray, col: int) -> float:
    """``sum_p T_p A[slot, p, col]``, the quantity in column ``col`` at ``s``."""
    v = 0.0
    for p in range(n):
        v += T[p] * A[slot, p, col]
    return v


@njit(inline="always", error_model="numpy")
def _panel_run(
    A: np.ndarray, slot: int, n: int, T: np.ndarray, col: int, width: int, out: np.ndarray
) -> None:
    """``out[i] = sum_p T_p A[slot, p, col + i]`` for ``i < width``: a run of columns, summed
    over the nodes outermost, on views that start at 0 (so the inner loop vectorizes)."""
    o, w = out[:width], T[0]
    row = A[slot, 0, col : col + width]
    for i in range(width):
        o[i] = w * row[i]
    for p in range(1, n):
        w, row = T[p], A[slot, p, col : col + width]
        for i in range(width):
            o[i] += w * row[i]


@njit(nogil=True, cache=True, error_model="numpy")
def hermite_diagonal(
    var: np.ndarray,
    A: np.ndarray,
    nodes: np.ndarray,
    g0: int,
    per: float,
    col_d: np.ndarray,
    C_b: np.ndarray,
    C_W: np.ndarray,
    g2: np.ndarray,
    d: np.ndarray,
    j0: int,
    smax: float,
    missing: np.ndarray,
) -> int:
    """The diagonal of :func:`pdlt.theory.kernel.mehler_flow` through the depth: for layers
    ``j = j0..J-1`` (``J = d.shape[1]``), the 1-D moments ``d[q, j, a]`` of the keys at
    columns ``col_d`` (``<sigma^2>``, ``<sigma'^2>``) at ``s = sqrt(var[j, a])`` from a panel
    table (:class:`pdlt.gaussian._HermiteTable`: Chebyshev coefficients ``A`` (G + 1, P, 2 Q),
    ``nodes`` (G + 1,) per slot, 0 where not loaded), then ``var[j + 1] = C_W d_00 + C_b +
    gamma^2 var[j]`` (the order of the kernel's own arithmetic).

    Returns -1 when done; ``j`` when some panel of layer ``j`` is not loaded (their indices
    into ``missing``, -2**62 after the last; nothing of layer ``j`` written); ``-2 - j`` when
    some ``s`` at layer ``j`` is above ``smax`` or not finite."""
    J, N = d.shape[1], var.shape[1]
    T = np.empty(A.shape[1])
    for j in range(j0, J):
        lost = 0
        for a in range(N):
            s = math.sqrt(var[j, a])
            if not s <= smax:
                return -2 - j
            slot, x = _panel_slot(s, g0, nodes, per)
            if slot < 0:
                missing[lost] = math.floor(per * math.log2(s))
                lost += 1
                continue
            _chebyshev(x, nodes[slot], T)
            for q in range(col_d.shape[0]):
                d[q, j, a] = _panel_value(A, slot, nodes[slot], T, col_d[q])
        if lost:
            missing[lost] = -(2**62)
            return j
        for a in range(N):
            var[j + 1, a] = C_W[j + 1] * d[0, j, a] + C_b[j + 1] + g2[j + 1] * var[j, a]
    return -1


@njit(nogil=True, cache=True, error_model="numpy")
def hermite_tables(
    var: np.ndarray,
    A: np.ndarray,
    nodes: np.ndarray,
    g0: int,
    per: float,
    err: np.ndarray,
    par: np.ndarray,
    col_c: np.ndarray,
    col_E: np.ndarray,
    col_T: np.ndarray,
    ladder: np.ndarray,
    start: int,
    tol: float,
    K: int,
    half: int,
    c: np.ndarray,
    tau: np.ndarray,
    rungs: np.ndarray,
    parity: np.ndarray,
    j0: int,
    j1: int,
    missing: np.ndarray,
) -> int:
    """The per-layer inputs of :func:`mehler_rows` for layers ``j0 <= j < j1`` (each on its
    own: ranges of layers may run on several threads) from a panel table
    (as :func:`hermite_diagonal`; in each order's columns the ``half`` even orders first, then
    the odd ones; ``err`` (G + 1,) its error estimates, ``par`` (G + 1, 2) the parities of the
    orders' coefficients) for the first ``K`` orders (1: ``sigma``; 2: and
    ``sigma'``; the table has both, so ``sigma``'s are the same either way), the layers with
    ``start`` rungs so far only (0: all, the first fill; else those whose coefficients reached
    the last of ``start`` rungs, which gain the rungs above).

    Per layer: the normalized tails ``tau[k, j, i, a] = sqrt(T_m / E)`` at the new rungs
    ``m = ladder[i]``, widened by ``(1e-16 + 10 err) E`` (so the bound stays one), each at
    most the one below (``T_m`` decreases with ``m``; :func:`_orders` relies on it);
    ``rungs[j]``, the first rung whose tail bound ``tau_m(a) tau_m(b) |rho|^(m + 1)`` is below
    ``tol`` for every pair whatever ``rho`` (``max_a tau_m(a)^2 <= tol``), else all; the
    parity of each series (0 or 1 where every sample's panel has it or has no coefficients,
    else -1; a layer filled before keeps its own only where the new one agrees); and the
    coefficients ``c[k, j, n, a]`` for ``n`` from above the old top to the new one (those of
    the other parity not written, as they are never read; set to 0 below the old top where a
    later fill loses the parity).

    Returns -1 when done; else the number of samples of the first layer whose panel is not
    loaded (the panels' indices into ``missing``, shape (N,) at least; nothing written)."""
    N, P, R = var.shape[1], A.shape[1], ladder.shape[0]
    Tb, lost = np.empty((N, P)), 0
    where, xs = np.empty((j1 - j0, N), dtype=np.int64), np.empty((j1 - j0, N))
    for j in range(j0, j1):
        for a in range(N):
            s = math.sqrt(var[j, a])
            where[j - j0, a], xs[j - j0, a] = _panel_slot(s, g0, nodes, per)
            if where[j - j0, a] < 0:
                missing[lost] = math.floor(per * math.log2(s))
                lost += 1
        if lost:
            return lost
    E, wide = np.empty((K, N)), np.empty((K, N))
    acc = np.empty(c.shape[2])
    n0 = ladder[start - 1] + 1 if start else 0
    for j in range(j0, j1):
        if rungs[j] != start:
            continue
        slots = where[j - j0]
        for a in range(N):
            _chebyshev(xs[j - j0, a], nodes[slots[a]], Tb[a])
        for k in range(K):  # the energies, then the tails rung by rung until one covers all
            for a in range(N):
                slot = slots[a]
                E[k, a] = _panel_value(A, slot, nodes[slot], Tb[a], col_E[k])
                wide[k, a] = (1e-16 + 10.0 * err[slot]) * E[k, a]
        top = R
        for i in range(start, R):
            worst = 0.0
            for k in range(K):
                out = tau[k, j, i]
                for a in range(N):
                    slot = slots[a]
                    t = _panel_value(A, slot, nodes[slot], Tb[a], col_T[k] + i)
                    q = (max(t, 0.0) + wide[k, a]) / E[k, a] if E[k, a] > 0 else 0.0
                    # the tails decrease along the ladder (T_m is a sum of the squares
                    # above m): where interpolation says otherwise, the rung below bounds it
                    t = math.sqrt(q) if i == 0 else min(math.sqrt(q), tau[k, j, i - 1, a])
                    out[a] = t
                    worst = max(worst, t * t)
            if worst <= tol:
                top = i + 1
                break
        rungs[j] = top
        for k in range(K):
            p = 2  # no sample seen with coefficients
            for a in range(N):
                q = par[slots[a], k]
                p = q if p == 2 else (p if q == p or q == 2 else -1)
            p = 0 if p == 2 else p
            old = parity[k, j]
            parity[k, j] = p if (start == 0 or old == p) else -1
            if start and old >= 0 and parity[k, j] < 0:  # the other parity's orders below the
                for n in range(3 - old, n0, 2):  # old top but its lowest were never written:
                    c[k, j, n] = 0.0  # they are below _PARITY_TOL, so 0
            for e in range(2):  # the even orders' run of columns, then the odd ones'
                # orders n = 2 i + e from above the old top to the new one; of the other
                # parity than the layer's, the lowest alone (order 1 - parity)
                i0, i1 = (n0 - e + 1) // 2, (ladder[top - 1] - e) // 2 + 1
                i1 = min(i1, 1) if parity[k, j] == 1 - e else i1
                for a in range(N):
                    slot = slots[a]
                    _panel_run(A, slot, nodes[slot], Tb[a], col_c[k] + e * half + i0, i1 - i0, acc)
                    for i in range(i1 - i0):
                        c[k, j, 2 * (i0 + i) + e, a] = acc[i]
    return -1
