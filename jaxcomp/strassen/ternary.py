"""Ternary weights with straight-through gradients (TWN, Li et al. 2016), as StrassenNets uses them.

A latent full-precision matrix ``w`` is mapped to ``scale * t`` with ``t`` in {-1, 0, 1}:

* ``method="twn"``: ``t = sign(w) * [|w| > delta]`` with ``delta = threshold * mean|w|`` (0.7 in
  the TWN paper) and the least-squares optimal scale ``mean(|w| over the kept entries)``;
* ``method="round"``: ``t = clip(round(w), -1, 1)`` with scale 1 -- the exact integer algorithms
  of matrix-multiplication SPNs (Strassen's W's are in {-1, 0, 1} with no scale);
* ``learned_scale=True`` (either method): the scale is a learned per-matrix parameter
  (a leaf ``<name>_scale`` beside the weight, see :func:`add_learned_scales`).

The backward pass is the straight-through estimator: d(quantized)/d(w) = identity; a learned
scale receives ``sum(grad * t) / nnz(t)`` (the mean over the kept entries, a preconditioning:
the plain sum diverges at the weights' learning rate). ``mix`` in [0, 1] blends full precision (0) and
ternary (1) weights linearly for gradual ternarization; it may be a traced scalar.

Quantization is a transform of the parameter tree (:func:`ternarize_params`), applied by the
task before ``model.apply``: the SPN layers themselves only compute sum-products with whatever
weights they are given, so one module serves full-precision, ternary and frozen phases.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

#: Parameter names of the matrices that are ternarized (in :mod:`jaxcomp.strassen.layers`): the SPN
#: matrices ``wa``/``wb``/``wc`` and a TWN layer's kernel ``wt``.
TERNARY_KEYS = ("wa", "wb", "wc", "wt")
METHODS = ("twn", "round")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown ternary method {method!r}; use one of {METHODS}")


def ternary_pattern(w: jax.Array, method: str = "twn", threshold: float = 0.7) -> jax.Array:
    """The ternary pattern ``t`` of ``w``: same shape and dtype, values in {-1, 0, 1}.

    ``twn``: zero where ``|w| <= threshold * mean|w|`` (over the whole matrix), else ``sign(w)``.
    ``round``: ``clip(round(w), -1, 1)``.
    """
    _check_method(method)
    if not isinstance(threshold, jax.core.Tracer) and (isinstance(threshold, bool) or not threshold >= 0):
        raise ValueError(f"the ternary threshold must be a number >= 0 (a fraction of mean |w|), got {threshold!r}")
    if not jnp.issubdtype(jnp.asarray(w).dtype, jnp.floating):
        raise ValueError(f"ternary_pattern expects float weights, got dtype {jnp.asarray(w).dtype}")
    if method == "round":
        return jnp.clip(jnp.round(w), -1, 1)
    delta = threshold * jnp.mean(jnp.abs(w), dtype=jnp.promote_types(w.dtype, jnp.float32))
    return jnp.where(jnp.abs(w) > delta, jnp.sign(w), 0.0).astype(w.dtype)


def optimal_scale(w: jax.Array, t: jax.Array) -> jax.Array:
    """The TWN scale ``argmin_s ||w - s t||^2 = sum |w| |t| / sum |t|`` (1 if ``t`` is all zero);
    ``w`` and its ternary pattern ``t`` have one shape. Scalar."""
    if tuple(jnp.shape(w)) != tuple(jnp.shape(t)):
        raise ValueError(f"optimal_scale: w {tuple(jnp.shape(w))} and its pattern t {tuple(jnp.shape(t))} must have "
                         "the same shape")
    # sums in float32 at least: a float16 kernel of ~80k entries overflows both sums (inf / inf = NaN)
    acc = jnp.promote_types(jnp.result_type(w, t), jnp.float32)
    kept = jnp.sum(jnp.abs(t), dtype=acc)
    scale = jnp.where(kept > 0, jnp.sum(jnp.abs(w).astype(acc) * jnp.abs(t).astype(acc)) / jnp.maximum(kept, 1.0), 1.0)
    return scale.astype(jnp.result_type(w, t))


def ternarize(w: jax.Array, method: str = "twn", threshold: float = 0.7,
              scale: jax.Array | None = None) -> jax.Array:
    """``scale * t(w)`` forward, straight-through backward.

    Args:
      w: latent weights, any shape, float.
      method: ``"twn"`` or ``"round"`` (see module docstring).
      threshold: TWN's ``delta / mean|w|``.
      scale: a learned scalar; ``None`` uses the TWN optimal scale (``twn``) or 1 (``round``),
        both without gradient.

    Returns:
      Same shape and dtype as ``w``; the value is exactly ``scale * t`` with ``t`` in {-1, 0, 1}.
    """
    t = jax.lax.stop_gradient(ternary_pattern(w, method, threshold))
    if scale is None:
        s = optimal_scale(w, t) if method == "twn" else jnp.ones((), w.dtype)
        # q + (w - w): exactly q forward (``w + sg(q - w)`` is not, in floats), identity backward
        return jax.lax.stop_gradient(s * t) + (w - jax.lax.stop_gradient(w))
    # Forward: exactly scale * t. Backward: w straight through; the scale gets the *mean* of g * t
    # over the kept entries -- one scalar summing thousands of gradients diverges at the
    # learning rates the weights use (an SGD 0.05 ResNet run lost all accuracy that way).
    kept = jnp.maximum(jnp.sum(jnp.abs(t), dtype=jnp.promote_types(t.dtype, jnp.float32)), 1.0)
    scale_path = jax.lax.stop_gradient(scale) + (scale - jax.lax.stop_gradient(scale)) / kept
    return (scale_path * t).astype(w.dtype) + (w - jax.lax.stop_gradient(w))


def mix_ternary(w: jax.Array, mix: jax.Array | float, method: str = "twn", threshold: float = 0.7,
                scale: jax.Array | None = None) -> jax.Array:
    """``(1 - mix) * w + mix * ternarize(w)``: 0 is full precision, 1 ternary (gradient identity in w).
    Same shape and dtype as ``w``. A concrete ``mix`` outside ``[0, 1]`` is refused."""
    if jnp.ndim(mix) != 0:
        raise ValueError(f"mix must be a scalar in [0, 1], got shape {jnp.shape(mix)}")
    if not isinstance(mix, jax.core.Tracer) and (isinstance(mix, bool) or not 0.0 <= float(mix) <= 1.0):
        raise ValueError(f"mix must be in [0, 1] (0 full precision, 1 ternary), got {mix!r}")
    return ((1.0 - mix) * w + mix * ternarize(w, method, threshold, scale)).astype(w.dtype)


def add_learned_scales(params: Any, method: str = "twn", threshold: float = 0.7) -> Any:
    """Adds a scalar leaf ``<key>_scale`` beside every ternarized matrix, initialised to its TWN scale."""
    def visit(node):
        if not isinstance(node, dict):
            return node
        out = {k: visit(v) for k, v in node.items()}
        for key in TERNARY_KEYS:
            if key in node and not isinstance(node[key], dict):
                w = node[key]
                out[key + "_scale"] = optimal_scale(w, ternary_pattern(w, method, threshold)).astype(w.dtype)
        return out
    return visit(_to_dict(params))


def ternarize_params(params: Any, mix: jax.Array | float, method: str = "twn", threshold: float = 0.7) -> Any:
    """The effective parameters: every ``wa``/``wb``/``wc``/``wt`` leaf blended towards ternary by ``mix``.

    Learned scales (leaves ``<key>_scale`` from :func:`add_learned_scales`) are used and removed,
    so the result has the structure the model's ``apply`` expects. Other leaves pass through.
    """
    _check_method(method)

    def visit(node):
        if not isinstance(node, dict):
            return node
        out = {}
        for k, v in node.items():
            if k.endswith("_scale") and k[: -len("_scale")] in TERNARY_KEYS:
                continue
            if k in TERNARY_KEYS and not isinstance(v, dict):
                out[k] = mix_ternary(v, mix, method, threshold, node.get(k + "_scale"))
            else:
                out[k] = visit(v)
        return out
    return visit(_to_dict(params))


def ternary_leaves(params: Any, method: str = "twn", threshold: float = 0.7) -> dict[str, tuple[Any, Any]]:
    """``{path: (t int8 array, scale float)}`` of every ternarized matrix: the deployable weights."""
    import numpy as np

    found: dict[str, tuple[Any, Any]] = {}

    def visit(node, path):
        if not isinstance(node, dict):
            return
        for k, v in node.items():
            if k in TERNARY_KEYS and not isinstance(v, dict):
                t = ternary_pattern(jnp.asarray(v), method, threshold)
                s = node.get(k + "_scale")
                if s is None:
                    s = optimal_scale(jnp.asarray(v), t) if method == "twn" else 1.0
                found["/".join(path + [k])] = (np.asarray(t).astype(np.int8), float(s))
            elif isinstance(v, dict):
                visit(v, path + [k])
    visit(_to_dict(params), [])
    return found


def _to_dict(tree: Any) -> Any:
    try:
        from flax.core import unfreeze
        return unfreeze(tree)
    except (ImportError, TypeError):
        return tree
