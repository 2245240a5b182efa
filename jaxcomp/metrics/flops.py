"""FLOPs of a JAX function, counted from its jaxpr (no compilation, no compute), and XLA's own count.

Convention (:func:`count_flops`): FLOPs = 2 x the multiply-adds of the convolutions
(``conv_general_dilated``) and matrix products (``dot_general``, i.e. dense layers, einsums,
matmuls); one multiply-add is 2 FLOPs. Elementwise operations (bias adds, activations, batch norm,
residual additions), reductions (average pooling), max-pooling (``reduce_window``) and resizing are not
counted: the paper (Torfason et al., 2018), like He et al. (2016) and the usual "GFLOPs" tables (e.g.
torchvision's, which are in fact GMACs), counts the multiply-adds of convolutions and dense layers.
ResNet-50 at 224x224 is 4.09 GMACs = 8.18 GFLOPs here.

* ``conv_general_dilated``: ``2 * prod(output shape) * prod(kernel spatial) * C_in / feature_group_count``.
  Every kernel tap counts, including taps that fall on the zero padding and (for ``lhs_dilation``,
  transposed convolutions) on the inserted zeros. ``rhs_dilation`` (atrous) does not change the count.
  :func:`jaxpr_flops` with ``count_padding=False`` counts only the taps that read the (dilated)
  input, as XLA's cost analysis does.
* ``dot_general``: ``2 * prod(batch dims) * M * N * K``.
* Sub-jaxprs are followed: ``jit``/``pjit``, ``closed_call``, ``remat``, ``custom_jvp_call``,
  ``custom_vjp_call`` (the primal function only) x 1; ``scan`` x its length; ``cond``: the most
  expensive branch; ``while``: its body and condition once, with a warning (the trip count is not
  known from the jaxpr; ``fori_loop`` with static bounds traces to ``scan``, which is counted exactly);
  ``xla_pmap`` x its axis size.

:func:`xla_flops` asks XLA instead (``compiled.cost_analysis()["flops"]``): it also counts the
elementwise operations (about one FLOP per element each), counts only taps inside the input (not the
padding), and runs on the optimised HLO, so it differs from :func:`count_flops` by design.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.extend.core import ClosedJaxpr, Jaxpr, JaxprEqn


def _prod(xs) -> int:
    return int(math.prod(int(x) for x in xs))


def _valid_taps(n: int, k: int, out: int, stride: int, pad_lo: int, lhs_dil: int, rhs_dil: int) -> int:
    """Number of (output position, kernel tap) pairs of one spatial dimension whose input position is a
    real input element (not padding, not a zero inserted by ``lhs_dilation``)."""
    p = np.arange(out)[:, None] * stride + np.arange(k)[None, :] * rhs_dil - pad_lo
    return int(np.sum((p >= 0) & (p <= (n - 1) * lhs_dil) & (p % lhs_dil == 0)))


def conv_flops(eqn: JaxprEqn, count_padding: bool = True) -> int:
    """FLOPs of one ``conv_general_dilated`` equation (see the module docstring)."""
    lhs, rhs = (v.aval for v in eqn.invars[:2])
    out = eqn.outvars[0].aval
    dn = eqn.params["dimension_numbers"]
    c_in = lhs.shape[dn.lhs_spec[1]] // eqn.params["feature_group_count"]
    kernel_spatial = [rhs.shape[d] for d in dn.rhs_spec[2:]]
    out_spatial = [out.shape[d] for d in dn.out_spec[2:]]
    if count_padding:
        positions = _prod(out_spatial) * _prod(kernel_spatial)
    else:
        lhs_spatial = [lhs.shape[d] for d in dn.lhs_spec[2:]]
        p = eqn.params
        positions = _prod(_valid_taps(n, k, o, s, lo, ld, rd) for n, k, o, s, (lo, _), ld, rd in zip(
            lhs_spatial, kernel_spatial, out_spatial, p["window_strides"], p["padding"], p["lhs_dilation"],
            p["rhs_dilation"], strict=True))
    batch_and_features = out.shape[dn.out_spec[0]] * out.shape[dn.out_spec[1]]
    return 2 * batch_and_features * positions * c_in


def dot_flops(eqn: JaxprEqn) -> int:
    """FLOPs of one ``dot_general`` equation: ``2 * batch * M * N * K``."""
    lhs, rhs = (v.aval for v in eqn.invars[:2])
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    batch = _prod(lhs.shape[d] for d in lb)
    k = _prod(lhs.shape[d] for d in lc)
    m = _prod(s for d, s in enumerate(lhs.shape) if d not in lc and d not in lb)
    n = _prod(s for d, s in enumerate(rhs.shape) if d not in rc and d not in rb)
    return 2 * batch * m * n * k


def _eqn_flops(eqn: JaxprEqn, count_padding: bool) -> int:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
        return conv_flops(eqn, count_padding)
    if name == "dot_general":
        return dot_flops(eqn)
    return 0


def _jaxprs(value: Any) -> list[Jaxpr]:
    if isinstance(value, ClosedJaxpr):
        return [value.jaxpr]
    if isinstance(value, Jaxpr):
        return [value]
    if isinstance(value, (tuple, list)):
        return [j for v in value for j in _jaxprs(v)]
    return []


def _walk(jaxpr: Jaxpr, visit: Callable[[JaxprEqn, int, str], None], count: int = 1, scope: str = "") -> None:
    """Calls ``visit(eqn, multiplicity, name_scope)`` for every equation, recursing into sub-jaxprs."""
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        stack = str(eqn.source_info.name_stack)
        here = stack if not scope or stack.startswith(scope) else f"{scope}/{stack}" if stack else scope
        visit(eqn, count, here)
        params = eqn.params
        if name == "cond":
            # only one branch runs: count the most expensive one
            branches = _jaxprs(params["branches"])
            costs = [jaxpr_flops(b) for b in branches]
            if branches:
                _walk(branches[int(np.argmax(costs))], visit, count, here)
            continue
        if name == "while":
            subs = _jaxprs(params["body_jaxpr"]) + _jaxprs(params["cond_jaxpr"])
            if any(jaxpr_flops(s) for s in subs):
                warnings.warn("count_flops: a while_loop's trip count is unknown; its body is counted once",
                              stacklevel=2)
            for s in subs:
                _walk(s, visit, count, here)
            continue
        mult = 1
        if name == "scan":
            mult = int(params["length"])
        elif name == "xla_pmap":
            mult = int(params["axis_size"])
        for value in params.values():
            for sub in _jaxprs(value):
                _walk(sub, visit, count * mult, here)


def jaxpr_flops(jaxpr: Jaxpr | ClosedJaxpr, *, count_padding: bool = True) -> int:
    """FLOPs (2 per multiply-add) of the convolutions and matrix products of a (closed) jaxpr."""
    total = 0

    def visit(eqn: JaxprEqn, count: int, _scope: str) -> None:
        nonlocal total
        total += count * _eqn_flops(eqn, count_padding)

    _walk(jaxpr.jaxpr if isinstance(jaxpr, ClosedJaxpr) else jaxpr, visit)
    return total


def count_flops(fn: Callable, *args: Any, **kwargs: Any) -> int:
    """FLOPs of ``fn(*args, **kwargs)``: 2 x the multiply-adds of its convolutions and matrix products.

    ``fn`` is only traced (:func:`jax.make_jaxpr`), so ``args`` may be :class:`jax.ShapeDtypeStruct`
    pytrees (e.g. ``jax.eval_shape(model.init, ...)``): nothing is compiled or allocated. ``kwargs`` are
    passed to ``fn`` as static Python values (e.g. ``train=False``).
    """
    return jaxpr_flops(jax.make_jaxpr(functools.partial(fn, **kwargs))(*args))


def count_macs(fn: Callable, *args: Any, **kwargs: Any) -> int:
    """Multiply-adds of ``fn(*args, **kwargs)``: :func:`count_flops` // 2."""
    return count_flops(fn, *args, **kwargs) // 2


def flops_by_layer(fn: Callable, *args: Any, **kwargs: Any) -> dict[str, int]:
    """:func:`count_flops` broken down by name scope (Flax module path, e.g. ``"ImageNetResNet/conv3_block0/
    conv2"``) and primitive: ``{"<scope>:<primitive>": flops}``, in order of first appearance, only
    entries with FLOPs; the values sum to :func:`count_flops`."""
    table: dict[str, int] = defaultdict(int)

    def visit(eqn: JaxprEqn, count: int, scope: str) -> None:
        flops = _eqn_flops(eqn, True)
        if flops:
            table[f"{scope or '<top>'}:{eqn.primitive.name}"] += count * flops

    _walk(jax.make_jaxpr(functools.partial(fn, **kwargs))(*args).jaxpr, visit)
    return dict(table)


def xla_flops(fn: Callable, *args: Any) -> float:
    """XLA's FLOP count of ``jax.jit(fn)`` for ``args`` (arrays or :class:`jax.ShapeDtypeStruct`), from
    ``lower(...).compile().cost_analysis()``; NaN, with a warning, where the backend reports none.

    Compiles ``fn`` (unlike :func:`count_flops`). XLA counts elementwise operations too and counts
    only convolution taps inside the input; see the module docstring.
    """
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older JAX: one dict per computation/device
        analysis = analysis[0] if analysis else None
    flops = analysis.get("flops") if isinstance(analysis, dict) else None
    if flops is None or flops < 0:
        warnings.warn(f"xla_flops: the {jax.default_backend()} backend reported no FLOP count", stacklevel=2)
        return float("nan")
    return float(flops)


__all__ = ["conv_flops", "count_flops", "count_macs", "dot_flops", "flops_by_layer", "jaxpr_flops", "xla_flops"]
