"""Counting multiplications and additions of SPN layers and of the full-precision layers they replace.

Convention (per example, inference, batch norm folded where it folds):

* full-precision dense ``D_in -> D_out``: ``D_in D_out`` multiplications and ``(D_in - 1) D_out``
  additions (+ ``D_out`` for a bias); a conv: the same per output element with ``D_in = k_h k_w C_in``.
* SPN layers: multiplications by a ternary weight are not multiplications: ``+-x`` is an
  addition/subtraction and ``0 x`` is skipped. The count of additions is the *dense upper bound*
  (every ternary entry counted as non-zero), so it does not depend on the learned sparsity.
  The per-matrix scales of ``W_b`` and ``W_c`` and the batch norm after ``W_b`` fold into
  ``a_tilde`` (``W_c s_c ((W_b s_b x) g + h) a = W_c ((W_b x)(s_b s_c g a) + s_c h a)``), so the
  only multiplications are the ``r`` products with ``a_tilde`` per hidden position, and the
  batch norm's shift adds ``r`` additions there.
* SPN dense: ``r`` multiplications; ``r (D_in - 1) + D_out (r - 1)`` additions (+ bias, + ``r``
  for the shift of its batch norm after ``W_b``; the LSTM's projections have none).
* TWN layers (the ternary-weight baseline: the replaced layer's own kernel ternary times one scale):
  one multiplication per output for the scale, into which a following batch norm's scale folds;
  additions as the full-precision layer's (dense upper bound). Counted as replaced layers (``spn = 1``).
* SPN conv: ``H_h W_h r`` multiplications (hidden grid ``H_h x W_h``); additions
  ``H_h W_h r (K_h K_w C_in - 1)`` for ``W_b``, ``H_h W_h r`` for the batch-norm shift and
  ``H' W' C_out (r - 1)`` for ``W_c`` (each output sums the ``r`` channels of one hidden position).
* A batch norm applied directly to a layer's output (the zoo's conv -> BN): after a full-precision
  layer its scale folds into the weights (and its shift into a bias), free. After an SPN layer it
  does **not** fold: its per-output-channel scale ``g_o`` multiplies ``W_c``'s output, and
  ``W_c`` mixes the ``r`` hidden units into the output channels, so ``g_o`` can neither become a
  per-hidden-unit factor of ``a_tilde`` (``W_c diag(d) = diag(g) W_c`` has no solution for a
  general ``g``) nor enter ternary ``W_c`` (``W_c diag(g)`` is not ternary times one scale). It
  costs one multiplication per output element (``H' W' C_out`` for a conv, ``D_out`` for a dense),
  counted in ``muls`` of the SPN layer's row and also reported as ``bn_muls``, so
  ``muls - bn_muls`` is the convention that leaves these batch norms out. The shift is a
  per-channel addition in both networks and is not counted (as before). Batch norms that do not
  take a layer's output directly (pre-activation blocks: BN -> ReLU -> conv) are not counted in
  either network.

Layers sow ``{"muls", "adds", "fp_muls", "fp_adds", "spn", "bn_muls"}`` into the ``op_counts``
collection; :func:`count_ops` runs a model once, collects them per layer and adds the batch norms
that follow SPN layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np

from jaxcomp.checks import is_whole


def _check_sizes(name: str, **sizes: int) -> None:
    """Layer sizes are positive integers (a float or 0 would give counts of a layer that cannot exist)."""
    bad = {k: v for k, v in sizes.items() if not is_whole(v) or v < 1}
    if bad:
        raise ValueError(f"{name}: sizes must be positive integers, got {bad}")


def _counts(muls: int, adds: int, fp_muls: int, fp_adds: int, spn: bool, bn_muls: int = 0) -> dict[str, int]:
    return dict(muls=int(muls), adds=int(adds), fp_muls=int(fp_muls), fp_adds=int(fp_adds), spn=int(spn),
                bn_muls=int(bn_muls))


def arithmetic_counts(muls: int, adds: int, full_precision: bool = True, bn_muls: int = 0) -> dict[str, int]:
    """A row of elementwise arithmetic that is not a replaced layer (``spn = 0``): the same in both networks
    (``full_precision``: e.g. an LSTM's gate products), or present in the SPN network only (its
    full-precision counts 0: e.g. a batch norm the SPN model adds, ``bn_muls`` of its ``muls``)."""
    fp_muls, fp_adds = (muls, adds) if full_precision else (0, 0)
    return _counts(muls, adds, fp_muls, fp_adds, False, bn_muls)


def dense_counts(d_in: int, d_out: int, bias: bool = False) -> dict[str, int]:
    """A full-precision dense layer (it is its own reference)."""
    _check_sizes("dense_counts", d_in=d_in, d_out=d_out)
    muls, adds = d_in * d_out, (d_in - 1) * d_out + (d_out if bias else 0)
    return _counts(muls, adds, muls, adds, False)


def conv_counts(h_out: int, w_out: int, c_in: int, c_out: int, kh: int, kw: int,
                bias: bool = False) -> dict[str, int]:
    """A full-precision ``kh x kw`` conv with an ``h_out x w_out x c_out`` output."""
    _check_sizes("conv_counts", h_out=h_out, w_out=w_out, c_in=c_in, c_out=c_out, kh=kh, kw=kw)
    n = h_out * w_out * c_out
    fan_in = kh * kw * c_in
    muls, adds = n * fan_in, n * (fan_in - 1) + (n if bias else 0)
    return _counts(muls, adds, muls, adds, False)


def spn_dense_counts(d_in: int, d_out: int, r: int, bias: bool = False, batch_norm: bool = False) -> dict[str, int]:
    """An SPN dense layer with ``r`` hidden units (and a batch norm after ``W_b``: ``r`` more additions,
    its shift), and the dense layer it replaces."""
    _check_sizes("spn_dense_counts", r=r)
    fp = dense_counts(d_in, d_out, bias)
    adds = r * (d_in - 1) + (r if batch_norm else 0) + d_out * (r - 1) + (d_out if bias else 0)
    return _counts(r, adds, fp["muls"], fp["adds"], True)


def spn_conv_counts(h_hidden: int, w_hidden: int, h_out: int, w_out: int, c_in: int, c_out: int, r: int,
                    kh_b: int, kw_b: int, kh: int, kw: int, bias: bool = False,
                    batch_norm: bool = True, identity_wc: bool = False) -> dict[str, int]:
    """An SPN conv and the ``kh x kw`` conv it replaces.

    ``h_hidden x w_hidden``: the hidden grid; ``kh_b x kw_b``: W_b's kernel ``(p-1)s + k``;
    ``h_out x w_out x c_out``: the output; ``batch_norm``: its shift after ``W_b`` adds ``r``
    additions per hidden position; ``identity_wc``: ``W_c`` is the identity (no additions).
    """
    _check_sizes("spn_conv_counts", h_hidden=h_hidden, w_hidden=w_hidden, r=r, kh_b=kh_b, kw_b=kw_b)
    fp = conv_counts(h_out, w_out, c_in, c_out, kh, kw, bias)
    pos = h_hidden * w_hidden
    adds = pos * r * (kh_b * kw_b * c_in - 1) + (pos * r if batch_norm else 0)
    adds += 0 if identity_wc else h_out * w_out * c_out * (r - 1)
    adds += h_out * w_out * c_out if bias else 0
    return _counts(pos * r, adds, fp["muls"], fp["adds"], True)


def twn_dense_counts(d_in: int, d_out: int, bias: bool = False) -> dict[str, int]:
    """A TWN dense layer (ternary kernel times one scale) and the dense layer it replaces.

    The products with ternary weights are additions (dense upper bound, as for SPNs); the scale
    costs one multiplication per output, ``d_out``. A batch norm after the layer joins that scale
    (``g_o s`` is one per-channel factor), so it adds nothing: the count is the same in both
    conventions. ``spn`` is 1: the layer is one of the replaced ones.
    """
    fp = dense_counts(d_in, d_out, bias)
    return _counts(d_out, fp["adds"], fp["muls"], fp["adds"], True)


def twn_conv_counts(h_out: int, w_out: int, c_in: int, c_out: int, kh: int, kw: int,
                    bias: bool = False) -> dict[str, int]:
    """A TWN ``kh x kw`` conv: ``H' W' C_out`` multiplications (the scale; see :func:`twn_dense_counts`)."""
    fp = conv_counts(h_out, w_out, c_in, c_out, kh, kw, bias)
    return _counts(h_out * w_out * c_out, fp["adds"], fp["muls"], fp["adds"], True)


def count_ops(model: nn.Module, variables: dict[str, Any], *inputs: Any, **kwargs: Any) -> list[tuple[str, dict]]:
    """Traces ``model.apply(variables, *inputs, **kwargs)`` once and returns ``[(layer path, counts)]``.

    Only shapes matter: nothing is compiled or run (``jax.eval_shape``), and ``variables`` may hold
    ``jax.ShapeDtypeStruct`` leaves. Inputs should hold one example (counts are per example).
    Layers that do not sow (plain ``nn.Conv``) are not counted: build the model with
    :class:`~jaxcomp.strassen.layers.CountedConv` / ``CountedDense`` for its full-precision layers.
    Layers inside ``nn.scan`` cannot sow; count those from their shapes (see ``lm_op_counts``).

    A :class:`flax.linen.BatchNorm` (with a scale) whose input is the very array an SPN layer
    returned adds its scale's multiplications to that layer's row (``muls`` and ``bn_muls``; see
    the module docstring: it cannot fold into ternary weights); found by intercepting module calls
    while tracing. After a full-precision layer it folds and adds nothing.
    """
    from jaxcomp.strassen.layers import SPNConv, SPNDense  # the layers import this module

    variables = {k: v for k, v in variables.items() if k != "op_counts"}
    captured: dict[str, Any] = {}
    bn_muls: dict[tuple[str, int], int] = {}  # (SPN layer path, its k-th call) -> BN scale multiplications
    calls: dict[str, int] = {}  # SPN layer path -> calls so far
    spn_outputs: dict[int, tuple[Any, tuple[str, int], int]] = {}  # id(output) -> (output, row key, per example)

    def interceptor(next_fun, args, kw, context):
        out = next_fun(*args, **kw)
        module = context.module
        if context.method_name != "__call__":
            return out
        if isinstance(module, (SPNConv, SPNDense)):
            path = "/".join(module.path)
            calls[path] = calls.get(path, 0) + 1
            # per example: a conv's H' W' C_out outputs, a dense layer's D_out per vector (as its own counts)
            per_example = int(np.prod(out.shape[-3:])) if isinstance(module, SPNConv) else int(out.shape[-1])
            spn_outputs[id(out)] = (out, (path, calls[path] - 1), per_example)  # keeps `out` alive: ids stay unique
        elif isinstance(module, nn.BatchNorm) and module.use_scale and args and id(args[0]) in spn_outputs:
            _, key, per_example = spn_outputs[id(args[0])]
            bn_muls[key] = bn_muls.get(key, 0) + per_example
        return out

    def trace(variables, *inputs):
        with nn.intercept_methods(interceptor):
            out, state = model.apply(variables, *inputs, mutable=["op_counts"], **kwargs)
        captured.update(state.get("op_counts", {}))  # python ints, read at trace time
        return out

    jax.eval_shape(trace, variables, *inputs)
    rows: list[tuple[str, dict]] = []

    def visit(node, path):
        for key, value in node.items():
            if key == "ops":
                name = "/".join(path)
                for i, entry in enumerate(value):
                    counts = {k: int(v) for k, v in entry.items()}
                    extra = bn_muls.get((name, i), 0)
                    counts["muls"] += extra
                    counts["bn_muls"] = counts.get("bn_muls", 0) + extra
                    rows.append((name, counts))
            else:
                visit(value, path + [key])
    visit(captured, [])  # a plain walk: pytree utilities would sort the keys, we keep call order
    return rows


def summarize(rows: Sequence[tuple[str, dict]]) -> dict[str, float]:
    """Totals over a network: all layers, and the SPN layers alone, with the reductions vs full precision.

    ``*_muls`` include the batch-norm scales after SPN layers (``*_bn_muls``); the
    ``*_mul_reduction_without_bn`` reductions leave those out (the convention of counting only the
    ``r`` products with ``a_tilde``).
    """
    if not len(rows):
        raise ValueError("summarize: no counted layers (count_ops found no layer it counts in this model: a "
                         "reduction of nothing would read as 100%)")
    keys = ("muls", "adds", "fp_muls", "fp_adds", "bn_muls")
    total = {k: sum(c.get(k, 0) for _, c in rows) for k in keys}
    spn = {k: sum(c.get(k, 0) for _, c in rows if c["spn"]) for k in keys}
    out = {f"net_{k}": v for k, v in total.items()}
    out.update({f"spn_{k}": v for k, v in spn.items()})
    out["net_mul_reduction"] = 1.0 - total["muls"] / max(total["fp_muls"], 1)
    out["spn_mul_reduction"] = 1.0 - spn["muls"] / max(spn["fp_muls"], 1)
    out["net_mul_reduction_without_bn"] = 1.0 - (total["muls"] - total["bn_muls"]) / max(total["fp_muls"], 1)
    out["spn_mul_reduction_without_bn"] = 1.0 - (spn["muls"] - spn["bn_muls"]) / max(spn["fp_muls"], 1)
    out["spn_layers"] = sum(1 for _, c in rows if c["spn"])
    return out


def format_table(rows: Sequence[tuple[str, dict]]) -> str:
    """A Markdown table of per-layer counts with totals (``muls`` include the batch-norm scales after
    SPN layers; the next column gives that part)."""
    lines = ["| layer | SPN | muls | of which BN scale | adds | full-precision muls | full-precision adds |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for path, c in rows:
        lines.append(f"| {path} | {'yes' if c['spn'] else 'no'} | {c['muls']:,} | {c.get('bn_muls', 0):,} | "
                     f"{c['adds']:,} | {c['fp_muls']:,} | {c['fp_adds']:,} |")
    s = summarize(rows)
    lines.append(f"| **network** | | {s['net_muls']:,} | {s['net_bn_muls']:,} | {s['net_adds']:,} | "
                 f"{s['net_fp_muls']:,} | {s['net_fp_adds']:,} |")
    return "\n".join(lines)
