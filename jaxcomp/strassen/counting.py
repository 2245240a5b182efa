"""Counting multiplications and additions of SPN layers and of the full-precision layers they replace.

Convention (per example, inference, batch norm folded):

* full-precision dense ``D_in -> D_out``: ``D_in D_out`` multiplications and ``(D_in - 1) D_out``
  additions (+ ``D_out`` for a bias); a conv: the same per output element with ``D_in = k_h k_w C_in``.
* SPN layers: multiplications by a ternary weight are not multiplications: ``+-x`` is an
  addition/subtraction and ``0 x`` is skipped. The count of additions is the *dense upper bound*
  (every ternary entry counted as non-zero), so it does not depend on the learned sparsity.
  The per-matrix scales of ``W_b`` and ``W_c`` and the batch norm after ``W_b`` fold into
  ``a_tilde`` (``W_c s_c ((W_b s_b x) g + h) a = W_c ((W_b x)(s_b s_c g a) + s_c h a)``), so the
  only multiplications are the ``r`` products with ``a_tilde`` per hidden position, and the
  batch norm's shift adds ``r`` additions there.
* SPN dense: ``r`` multiplications; ``r (D_in - 1) + D_out (r - 1)`` additions (+ bias).
* SPN conv: ``H_h W_h r`` multiplications (hidden grid ``H_h x W_h``); additions
  ``H_h W_h r (K_h K_w C_in - 1)`` for ``W_b``, ``H_h W_h r`` for the batch-norm shift and
  ``H' W' C_out (r - 1)`` for ``W_c`` (each output sums the ``r`` channels of one hidden position).

Layers sow ``{"muls", "adds", "fp_muls", "fp_adds", "spn"}`` into the ``op_counts`` collection;
:func:`count_ops` runs a model once and collects them per layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax


def _counts(muls: int, adds: int, fp_muls: int, fp_adds: int, spn: bool) -> dict[str, int]:
    return dict(muls=int(muls), adds=int(adds), fp_muls=int(fp_muls), fp_adds=int(fp_adds), spn=int(spn))


def dense_counts(d_in: int, d_out: int, bias: bool = False) -> dict[str, int]:
    """A full-precision dense layer (it is its own reference)."""
    muls, adds = d_in * d_out, (d_in - 1) * d_out + (d_out if bias else 0)
    return _counts(muls, adds, muls, adds, False)


def conv_counts(h_out: int, w_out: int, c_in: int, c_out: int, kh: int, kw: int,
                bias: bool = False) -> dict[str, int]:
    """A full-precision ``kh x kw`` conv with an ``h_out x w_out x c_out`` output."""
    n = h_out * w_out * c_out
    fan_in = kh * kw * c_in
    muls, adds = n * fan_in, n * (fan_in - 1) + (n if bias else 0)
    return _counts(muls, adds, muls, adds, False)


def spn_dense_counts(d_in: int, d_out: int, r: int, bias: bool = False) -> dict[str, int]:
    """An SPN dense layer with ``r`` hidden units, and the dense layer it replaces."""
    fp = dense_counts(d_in, d_out, bias)
    adds = r * (d_in - 1) + d_out * (r - 1) + (d_out if bias else 0)
    return _counts(r, adds, fp["muls"], fp["adds"], True)


def spn_conv_counts(h_hidden: int, w_hidden: int, h_out: int, w_out: int, c_in: int, c_out: int, r: int,
                    kh_b: int, kw_b: int, kh: int, kw: int, bias: bool = False) -> dict[str, int]:
    """An SPN conv and the ``kh x kw`` conv it replaces.

    ``h_hidden x w_hidden``: the hidden grid; ``kh_b x kw_b``: W_b's kernel ``(p-1)s + k``;
    ``h_out x w_out x c_out``: the output.
    """
    fp = conv_counts(h_out, w_out, c_in, c_out, kh, kw, bias)
    pos = h_hidden * w_hidden
    adds = pos * r * (kh_b * kw_b * c_in - 1) + pos * r + h_out * w_out * c_out * (r - 1)
    adds += h_out * w_out * c_out if bias else 0
    return _counts(pos * r, adds, fp["muls"], fp["adds"], True)


def count_ops(model: nn.Module, variables: dict[str, Any], *inputs: Any, **kwargs: Any) -> list[tuple[str, dict]]:
    """Traces ``model.apply(variables, *inputs, **kwargs)`` once and returns ``[(layer path, counts)]``.

    Only shapes matter: nothing is compiled or run (``jax.eval_shape``), and ``variables`` may hold
    ``jax.ShapeDtypeStruct`` leaves. Inputs should hold one example (counts are per example).
    Layers that do not sow (plain ``nn.Conv``) are not counted: build the model with
    :class:`~jaxcomp.strassen.layers.CountedConv` / ``CountedDense`` for its full-precision layers.
    Layers inside ``nn.scan`` cannot sow; count those from their shapes (see ``lm_op_counts``).
    """
    variables = {k: v for k, v in variables.items() if k != "op_counts"}
    captured: dict[str, Any] = {}

    def trace(variables, *inputs):
        out, state = model.apply(variables, *inputs, mutable=["op_counts"], **kwargs)
        captured.update(state.get("op_counts", {}))  # python ints, read at trace time
        return out

    jax.eval_shape(trace, variables, *inputs)
    rows: list[tuple[str, dict]] = []

    def visit(node, path):
        for key, value in node.items():
            if key == "ops":
                rows.extend(("/".join(path), {k: int(v) for k, v in entry.items()}) for entry in value)
            else:
                visit(value, path + [key])
    visit(captured, [])  # a plain walk: pytree utilities would sort the keys, we keep call order
    return rows


def summarize(rows: Sequence[tuple[str, dict]]) -> dict[str, float]:
    """Totals over a network: all layers, and the SPN layers alone, with the reductions vs full precision."""
    total = {k: sum(c[k] for _, c in rows) for k in ("muls", "adds", "fp_muls", "fp_adds")}
    spn = {k: sum(c[k] for _, c in rows if c["spn"]) for k in ("muls", "adds", "fp_muls", "fp_adds")}
    out = {f"net_{k}": v for k, v in total.items()}
    out.update({f"spn_{k}": v for k, v in spn.items()})
    out["net_mul_reduction"] = 1.0 - total["muls"] / max(total["fp_muls"], 1)
    out["spn_mul_reduction"] = 1.0 - spn["muls"] / max(spn["fp_muls"], 1)
    out["spn_layers"] = sum(1 for _, c in rows if c["spn"])
    return out


def format_table(rows: Sequence[tuple[str, dict]]) -> str:
    """A Markdown table of per-layer counts with totals."""
    lines = ["| layer | SPN | muls | adds | full-precision muls | full-precision adds |",
             "|---|---|---:|---:|---:|---:|"]
    for path, c in rows:
        lines.append(f"| {path} | {'yes' if c['spn'] else 'no'} | {c['muls']:,} | {c['adds']:,} | "
                     f"{c['fp_muls']:,} | {c['fp_adds']:,} |")
    s = summarize(rows)
    lines.append(f"| **network** | | {s['net_muls']:,} | {s['net_adds']:,} | {s['net_fp_muls']:,} | "
                 f"{s['net_fp_adds']:,} |")
    return "\n".join(lines)
