"""Per-network observables by automatic differentiation (never by the theory's recursions).

For a batch of networks (parameters with the ensemble axis first, see
:mod:`pdlt.empirical.ensemble`) and inputs ``x`` of shape ``(N, n_0)``:

* :func:`stochastic_metric` -- ``G-hat^(l)_{ab} = C_b + (C_W/n_{l-1}) sum_j sigma_{j;a}
  sigma_{j;b}`` (4.70), shape ``(M, N, N)``; layer 1 uses the inputs.
* :func:`ntk` -- ``H-hat^(l)_{i1 i2; a1 a2} = sum_mu lambda_mu dz_{i1;a1}/dtheta_mu
  dz_{i2;a2}/dtheta_mu`` (8.5) with ``lambda = lambda_b^(l')`` on biases and
  ``lambda_W^(l')/n_{l'-1}`` on weights (8.6), shape ``(M, n_l, n_l, N, N)``.  Two autodiff
  routes: ``"jacobian"`` contracts the full parameter Jacobian (torch.func.jacrev);
  ``"structured"`` (default, much cheaper) takes the Jacobian with respect to the biases only
  and uses that the gradient of an affine layer ``z = b + W s`` with respect to ``W_{jk}`` is
  the bias gradient times ``s_k`` -- an identity of differentiation, not of the theory.
* :func:`dntk` -- ``dH-hat_{I0 I1 I2} = v_{I1}^T (d^2 z_{I0}/dtheta^2) v_{I2}`` with
  ``v_I = lambda * dz_I/dtheta`` (11.8), by nested forward-mode derivatives, for a subset of
  neurons; shape ``(M, m, m, m, N, N, N)`` indexed ``[i0, i1, i2, d0, d1, d2]``.
* :func:`ddntk` -- the two ddNTKs (infinity.5), (infinity.7): ``ddI_{I0 I1 I2 I3} =
  D^3 z_{I0}[v_{I1}, v_{I2}, v_{I3}]`` and ``ddII_{I1 I2 I3 I4} = (d^2 z_{I1} v_{I3})^T lambda
  (d^2 z_{I2} v_{I4})``, shapes ``(M, m, m, m, m, N, N, N, N)``.

The per-network forward equations of the theory ((8.12), (11.24)) are used only in the tests,
to check these autodiff results to machine precision.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.func import jacrev, jvp, vmap

from ..network import Network
from .ensemble import Params

__all__ = ["stochastic_metric", "ntk", "ntk_layer_contributions", "dntk", "ddntk", "learning_rates"]


def _layer_params(params: Params, upto: int) -> Params:
    return {k: v for k, v in params.items() if int(k[1:]) <= upto}


def learning_rates(network: Network, upto: int) -> dict[str, float]:
    """Per-parameter step multipliers (8.6): ``lambda_b^(l)`` and ``lambda_W^(l)/n_{l-1}``."""
    widths = network.widths
    lam: dict[str, float] = {}
    for ell in range(1, upto + 1):
        lam[f"b{ell}"] = float(network.lambda_b[ell - 1])
        lam[f"W{ell}"] = float(network.lambda_W[ell - 1]) / float(widths[ell - 1])  # type: ignore[arg-type]
    return lam


def _preactivations(p: Params, x: torch.Tensor, network: Network, upto: int) -> list[torch.Tensor]:
    """``z^(1..upto)`` of one network (no ensemble axis), each of shape (N, n_l); residual
    layers add ``gamma^(l) z^(l-1)`` (B.3)."""
    sigma = network.activation.torch_fn
    gamma = network.gamma
    zs: list[torch.Tensor] = []
    h = x
    for k in range(1, upto + 1):
        z = h @ p[f"W{k}"].T + p[f"b{k}"]
        if gamma[k - 1]:
            z = z + float(gamma[k - 1]) * zs[-1]
        zs.append(z)
        h = sigma(z)
    return zs


def _single_forward(network: Network, ell: int) -> Callable[[Params, torch.Tensor], torch.Tensor]:
    """``z^(ell)`` of one network (no ensemble axis), shape (N, n_ell)."""

    def f(p: Params, x: torch.Tensor) -> torch.Tensor:
        return _preactivations(p, x, network, ell)[-1]

    return f


def stochastic_metric(
    zs: Sequence[torch.Tensor], x: torch.Tensor, network: Network
) -> list[torch.Tensor]:
    """``G-hat^(l)`` for ``l = 1..L`` (4.70), each of shape (M, N, N).

    Parameters
    ----------
    zs : list of Tensor
        Preactivations ``z^(l)`` of shape (M, N, n_l) for ``l = 1..L-1`` (at least).
    x : Tensor, shape (N, n_0)
    """
    M = zs[0].shape[0]
    sigma = network.activation.torch_fn
    out = []
    n0 = x.shape[1]
    C_b, C_W = network.variances(1)
    out.append((C_b + C_W * (x @ x.T) / n0).expand(M, -1, -1))
    for ell in range(2, network.depth + 1):
        s = sigma(zs[ell - 2])
        n_prev = s.shape[-1]
        C_b, C_W = network.variances(ell)
        out.append(C_b + C_W * (s @ s.transpose(-1, -2)) / n_prev)
    return out


def ntk(
    params: Params,
    x: torch.Tensor,
    network: Network,
    layer: int,
    *,
    method: str = "structured",
) -> torch.Tensor:
    """The stochastic NTK ``H-hat^(layer)`` of every network, shape (M, n, n, N, N).

    Index order ``[m, i1, i2, a1, a2]``: neurons first, then samples (8.5).
    """
    if method not in ("structured", "jacobian"):
        raise ValueError(f"method must be 'structured' or 'jacobian', got {method!r}")
    sigma = network.activation.torch_fn
    f = _single_forward(network, layer)
    p = _layer_params(params, layer)
    lam = learning_rates(network, layer)
    if method == "jacobian":

        def one(q: Params) -> torch.Tensor:
            J = jacrev(f)(q, x)  # name -> (N, n, *shape)
            H = 0
            for k, Jk in J.items():
                Jf = Jk.reshape(Jk.shape[0], Jk.shape[1], -1)
                H = H + lam[k] * torch.einsum("aip,bjp->ijab", Jf, Jf)
            return H

        return vmap(one)(p)

    biases = {k: v for k, v in p.items() if k.startswith("b")}
    weights = {k: v for k, v in p.items() if k.startswith("W")}

    def one_structured(b: Params, w: Params) -> torch.Tensor:
        def g(bb: Params) -> torch.Tensor:
            return f({**w, **bb}, x)

        J = jacrev(g)(b)  # b{l} -> (N, n, n_l)
        # activations feeding each layer: sigma^(l-1) (x for l = 1); dz/dW^(k) = dz/db^(k) s^T
        # holds with residual connections too, since W^(k) enters only through W^(k) s
        zs = _preactivations({**w, **b}, x, network, layer - 1)
        feeds = [x] + [sigma(z) for z in zs]
        H = 0
        for k in range(1, layer + 1):
            s = feeds[k - 1]
            S = lam[f"b{k}"] + lam[f"W{k}"] * (s @ s.T)  # (N, N)
            Jk = J[f"b{k}"]
            H = H + torch.einsum("aij,bkj->ikab", Jk, Jk) * S
        return H

    return vmap(one_structured)(biases, weights)


def ntk_layer_contributions(
    params: Params, x: torch.Tensor, network: Network, layer: int
) -> torch.Tensor:
    """Per-layer bias and weight parts of ``H-hat^(layer)`` (8.7), neuron-averaged diagonal.

    Returns
    -------
    Tensor, shape (M, layer, 2, N, N)
        ``[m, l' - 1, 0]``: biases of layer ``l'``; ``[m, l' - 1, 1]``: weights; each is
        ``(1/n) sum_i`` of that part of ``H-hat_{ii;ab}``.  Summed over ``l'`` and the two
        groups it is the neuron-averaged NTK diagonal.
    """
    f = _single_forward(network, layer)
    p = _layer_params(params, layer)
    lam = learning_rates(network, layer)

    def one(q: Params) -> torch.Tensor:
        J = jacrev(f)(q, x)  # name -> (N, n, *shape)
        parts = []
        for k in range(1, layer + 1):
            pair = []
            for name in (f"b{k}", f"W{k}"):
                Jk = J[name].reshape(J[name].shape[0], J[name].shape[1], -1)
                pair.append(lam[name] * torch.einsum("aip,bip->ab", Jk, Jk) / Jk.shape[1])
            parts.append(torch.stack(pair))
        return torch.stack(parts)

    return vmap(one)(p)


def _directions(
    f: Callable, p: Params, x: torch.Tensor, lam: dict[str, float]
) -> tuple[dict[str, torch.Tensor], int]:
    """``v_I = lambda * dz_I/dtheta`` for all I = (sample, neuron), flattened to (N*m, *shape)."""
    J = jacrev(f)(p, x)
    n_dir = None
    V = {}
    for k, Jk in J.items():
        n_dir = Jk.shape[0] * Jk.shape[1]
        V[k] = lam[k] * Jk.reshape(n_dir, *Jk.shape[2:])
    assert n_dir is not None
    return V, n_dir


def dntk(
    params: Params, x: torch.Tensor, network: Network, layer: int, neurons: Sequence[int]
) -> torch.Tensor:
    """The stochastic dNTK (11.8) restricted to ``neurons`` of ``layer``.

    Returns
    -------
    Tensor, shape (M, m, m, m, N, N, N)
        ``[m, i0, i1, i2, d0, d1, d2] = dH-hat_{i0 i1 i2; d0 d1 d2}``; symmetric under
        ``(i1, d1) <-> (i2, d2)``.
    """
    idx = torch.as_tensor(list(neurons), device=x.device)
    full = _single_forward(network, layer)

    def f(q: Params, xx: torch.Tensor) -> torch.Tensor:
        return full(q, xx).index_select(1, idx)

    p = _layer_params(params, layer)
    lam = learning_rates(network, layer)
    N, m = x.shape[0], len(neurons)

    def one(q: Params) -> torch.Tensor:
        V, _ = _directions(f, q, x, lam)

        def second(v1: Params, v2: Params) -> torch.Tensor:
            def inner(r: Params) -> torch.Tensor:
                return jvp(lambda s: f(s, x), (r,), (v2,))[1]

            return jvp(inner, (q,), (v1,))[1]  # (N, m) over I0

        out = vmap(vmap(second, in_dims=(None, 0)), in_dims=(0, None))(V, V)
        # out[I1, I2, d0, i0] with I = (d, i) flattened
        out = out.reshape(N, m, N, m, N, m)  # d1, i1, d2, i2, d0, i0
        return out.permute(5, 1, 3, 4, 0, 2)

    return vmap(one)(p)


def ddntk(
    params: Params, x: torch.Tensor, network: Network, layer: int, neurons: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ddNTKs (infinity.5) and (infinity.7) restricted to ``neurons`` of ``layer``.

    Returns
    -------
    ddI, ddII : Tensor, shape (M, m, m, m, m, N, N, N, N)
        ``ddI[m, i0, i1, i2, i3, d0, d1, d2, d3]`` and ``ddII[m, i1, i2, i3, i4, d1, d2, d3,
        d4]``.
    """
    idx = torch.as_tensor(list(neurons), device=x.device)
    full = _single_forward(network, layer)

    def f(q: Params) -> torch.Tensor:
        return full(q, x).index_select(1, idx)

    p = _layer_params(params, layer)
    lam = learning_rates(network, layer)
    N, m = x.shape[0], len(neurons)

    def one(q: Params) -> tuple[torch.Tensor, torch.Tensor]:
        V, _ = _directions(lambda s, _x: f(s), q, x, lam)

        def third(v1: Params, v2: Params, v3: Params) -> torch.Tensor:
            def f2(r: Params) -> torch.Tensor:
                return jvp(f, (r,), (v3,))[1]

            def f1(r: Params) -> torch.Tensor:
                return jvp(f2, (r,), (v2,))[1]

            return jvp(f1, (q,), (v1,))[1]

        d3 = vmap(
            vmap(vmap(third, in_dims=(None, None, 0)), in_dims=(None, 0, None)),
            in_dims=(0, None, None),
        )(V, V, V)  # [I1, I2, I3, d0, i0]
        ddI = d3.reshape(N, m, N, m, N, m, N, m).permute(7, 1, 3, 5, 6, 0, 2, 4)

        def hess_dir(v: Params) -> dict[str, torch.Tensor]:
            return jacrev(lambda r: jvp(f, (r,), (v,))[1])(q)  # name -> (N, m, *shape)

        W = vmap(hess_dir)(V)  # name -> (J, N, m, *shape): d^2 z_I v_J
        ddII = 0
        for k, Wk in W.items():
            Wf = Wk.reshape(N * m, N * m, -1)  # [J, I, p]
            # ddII_{I1 I2 I3 I4} = sum_p (d2 z_I1 v_I3)_p lam_p (d2 z_I2 v_I4)_p
            ddII = ddII + lam[k] * torch.einsum("cap,dbp->abcd", Wf, Wf)
        ddII = ddII.reshape(N, m, N, m, N, m, N, m).permute(1, 3, 5, 7, 0, 2, 4, 6)
        return ddI, ddII

    return vmap(one)(p)
