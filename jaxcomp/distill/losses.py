"""Distillation losses as pure functions (Born-Again Networks, Furlanello et al., ICML 2018; Hinton et al., 2015).

Shapes: ``logits`` are ``float [..., C]`` over any leading axes (``[B, C]`` for images,
``[B, T, C]`` for a language model); ``labels`` are ``int [...]``. Every ``*_loss`` returns a
``float32`` scalar: the mean over all leading positions (or, for CWTM, the weighted sum its
definition asks for). An optional ``mask [...]`` excludes positions (padding): boolean, or non-negative
weights (a position counts with its weight: the weighted mean ``sum(w * loss) / sum(w)``; 0 excludes
it, whatever its logits or label hold; an all-zero mask gives 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

LOSSES = ("ce", "kd", "ban", "ban_label", "cwtm", "dkpp")


def _check_mask(values: jax.Array, mask: jax.Array | None) -> None:
    if mask is None:
        return
    if tuple(mask.shape) != tuple(values.shape):
        raise ValueError(f"mask has shape {tuple(mask.shape)}; expected the positions' shape {tuple(values.shape)}")
    # a concrete mask (outside a trace) is checked for weights that would subtract a position's loss
    if not isinstance(mask, jax.core.Tracer) and not np.all(np.asarray(mask) >= 0):
        raise ValueError("mask must be boolean or non-negative weights; it holds negative (or NaN) entries")


def _mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    if mask is None:
        return jnp.mean(values)
    _check_mask(values, mask)
    weight = mask.astype(values.dtype)  # a bool mask, or non-negative weights
    # where, not only a product: a masked position's value (e.g. NaN for a padding label) must not count
    # the weighted mean: weights summing to less than 1 (e.g. normalised importances) are not scaled
    # down by a floor at 1; only an all-zero mask gives 0
    total = jnp.sum(weight)
    return jnp.sum(jnp.where(weight > 0, values * weight, 0.0)) / jnp.where(total > 0, total, 1.0)


def _check_pair(student_logits: jax.Array, teacher_logits: jax.Array) -> None:
    if tuple(student_logits.shape) != tuple(teacher_logits.shape):
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} must have the same shape [..., C]")


def _is_zero(weight: float | jax.Array) -> bool:
    """True only for a concrete 0 (Python, numpy or a JAX array outside a trace); a traced weight is
    never skipped (its value is unknown when the loss is built)."""
    if isinstance(weight, jax.core.Tracer) or np.ndim(weight) != 0:
        return False
    return float(weight) == 0


def _with_label_term(loss: jax.Array, student_logits: jax.Array, labels: jax.Array | None,
                     label_weight: float | jax.Array, mask: jax.Array | None) -> jax.Array:
    """``loss + label_weight * label cross-entropy``; nothing added for a concrete 0 (labels may then be
    ``None``). A traced weight needs the labels, and where it is 0 the term is dropped exactly, in the
    value and in the derivative by the weight (a padding label's NaN stayed in the loss as ``0 * NaN``
    under ``jit``, while the eager call gave a number)."""
    if _is_zero(label_weight):
        return loss
    if labels is None:
        raise ValueError("this loss needs the labels (int [...]) for its label term, got None; a traced "
                         "label_weight is never skipped: pass the labels, or a concrete label_weight=0")
    return loss + label_weight * jnp.where(label_weight == 0, 0.0, label_loss(student_logits, labels, mask))


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-position cross-entropy with integer labels: ``float [..., C], int [...] -> float32 [...]``.

    A label outside ``0..C-1`` (e.g. a padding label such as -1 or ``C``) gives NaN at its
    position, never another class's value; the losses' ``mask`` drops such positions.
    """
    if labels is None:
        raise ValueError("this loss needs the labels (int [...]), got None")
    if tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"labels have shape {tuple(labels.shape)}; expected the logits' leading shape "
                         f"{tuple(logits.shape[:-1])} (logits {tuple(logits.shape)} = [..., C])")
    if jnp.issubdtype(labels.dtype, jnp.floating) or jnp.issubdtype(labels.dtype, jnp.complexfloating):
        raise TypeError(f"labels must be integers (class indices), got dtype {labels.dtype}")
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    labels = labels.astype(jnp.int32)
    valid = (labels >= 0) & (labels < logits.shape[-1])
    ce = -jnp.take_along_axis(logp, jnp.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    return jnp.where(valid, ce, jnp.nan)


def soft_cross_entropy(logits: jax.Array, target_probs: jax.Array) -> jax.Array:
    """Per-position cross-entropy to a target distribution: ``[..., C], [..., C] -> [...]``.

    ``target_probs`` is treated as a constant (no gradient flows into it).
    """
    if tuple(logits.shape) != tuple(target_probs.shape):
        raise ValueError(f"logits {tuple(logits.shape)} and target_probs {tuple(target_probs.shape)} must have "
                         "the same shape [..., C]")
    target_probs = jax.lax.stop_gradient(target_probs.astype(jnp.float32))
    return -jnp.sum(target_probs * jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1), axis=-1)


def label_loss(student_logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Ordinary training: mean cross-entropy to the labels. Scalar."""
    return _mean(cross_entropy(student_logits, labels), mask)


def check_kd_temperature(temperature: float) -> None:
    """``ValueError`` unless ``temperature > 0`` (:func:`kd_loss` divides the logits by it: NaN losses
    from the first step otherwise). Drivers call it before anything trains."""
    if isinstance(temperature, bool) or not temperature > 0:
        raise ValueError(f"distill.temperature must be > 0 for a 'kd' student (the logits are divided by it), "
                         f"got {temperature!r}")


def kd_loss(student_logits: jax.Array, teacher_logits: jax.Array, temperature: float = 4.0,
            mask: jax.Array | None = None) -> jax.Array:
    """Hinton et al.'s knowledge distillation: ``T^2 * KL(softmax(t/T) || softmax(s/T))``, mean. Scalar.

    The ``T^2`` factor keeps the gradient's scale independent of ``T`` (the soft gradient scales
    as ``1/T^2``). KL and cross-entropy differ by the teacher's entropy, a constant, so the
    gradient is that of the cross-entropy; the KL form is 0 when the student equals the teacher.
    Args: student_logits, teacher_logits ``float [..., C]``; temperature ``T > 0``; mask ``bool [...]``.
    """
    _check_pair(student_logits, teacher_logits)
    if not isinstance(temperature, jax.core.Tracer):  # a traced T is the caller's to check
        check_kd_temperature(temperature)
    t = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32)) / temperature
    s = student_logits.astype(jnp.float32) / temperature
    p_t, logp_t = jax.nn.softmax(t, axis=-1), jax.nn.log_softmax(t, axis=-1)
    kl = jnp.sum(p_t * (logp_t - jax.nn.log_softmax(s, axis=-1)), axis=-1)
    return temperature**2 * _mean(kl, mask)


def ban_loss(student_logits: jax.Array, teacher_logits: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """BAN: cross-entropy to the teacher's softmax at temperature 1 (no labels). Scalar."""
    _check_pair(student_logits, teacher_logits)
    return _mean(soft_cross_entropy(student_logits, jax.nn.softmax(teacher_logits.astype(jnp.float32))), mask)


def ban_label_loss(student_logits: jax.Array, teacher_logits: jax.Array, labels: jax.Array,
                   label_weight: float = 1.0, mask: jax.Array | None = None) -> jax.Array:
    """BAN+L: :func:`ban_loss` plus ``label_weight`` times the label cross-entropy. Scalar."""
    return _with_label_term(ban_loss(student_logits, teacher_logits, mask), student_logits, labels, label_weight, mask)


def cwtm_weights(teacher_logits: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """CWTM sample weights ``max_c p_t(c | x_i) / sum_j max_c p_t(c | x_j)``: ``[..., C] -> [...]``, summing to 1
    over the (unmasked) positions of the batch (all 0 when every position is masked)."""
    conf = jnp.max(jax.nn.softmax(jax.lax.stop_gradient(teacher_logits.astype(jnp.float32)), axis=-1), axis=-1)
    if mask is not None:
        _check_mask(conf, mask)
        weight = mask.astype(conf.dtype)
        conf = jnp.where(weight > 0, conf * weight, 0.0)
    total = jnp.sum(conf)
    return conf / jnp.where(total > 0, total, 1.0)


def cwtm_loss(student_logits: jax.Array, teacher_logits: jax.Array, labels: jax.Array,
              mask: jax.Array | None = None) -> jax.Array:
    """Confidence-Weighted by Teacher Max: label cross-entropy weighted by :func:`cwtm_weights`. Scalar.

    The teacher contributes only its confidence in each sample, not its distribution over
    classes (BAN paper, section 3.2).
    """
    _check_pair(student_logits, teacher_logits)
    w = cwtm_weights(teacher_logits, mask)
    return jnp.sum(jnp.where(w > 0, w * cross_entropy(student_logits, labels), 0.0))


def dkpp_targets(teacher_logits: jax.Array, rng: jax.Array, row_keys: jax.Array | None = None) -> jax.Array:
    """Dark Knowledge with Permuted Predictions: the teacher's softmax with the argmax entry kept
    and every other entry permuted at random (independently per position). ``[..., C] -> [..., C]``.

    ``row_keys`` (``[N]`` PRNG keys, ``N`` = the positions, e.g. one per training example): each
    position's permutation drawn from its own key instead of from ``rng``, so the same key gives
    the same permutation whatever the step or the position in the batch.
    """
    if rng is None and row_keys is None:
        raise ValueError("dkpp_targets needs rng (a PRNG key) or row_keys to draw the permutations, got neither")
    probs = jax.nn.softmax(jax.lax.stop_gradient(teacher_logits.astype(jnp.float32)), axis=-1)
    shape = probs.shape
    probs = probs.reshape(-1, shape[-1])
    n, c = probs.shape
    top = jnp.argmax(probs, axis=-1)
    is_top = jnp.arange(c)[None, :] == top[:, None]
    if row_keys is None:
        noise = jax.random.uniform(rng, (n, c))
    else:
        if row_keys.shape[0] != n:
            raise ValueError(f"dkpp_targets: {row_keys.shape[0]} row keys for {n} positions")
        noise = jax.vmap(lambda key: jax.random.uniform(key, (c,)))(row_keys)
    # Sorting with the argmax forced first: src lists [argmax, others in random order], dst lists
    # [argmax, others in index order]; moving src[j] to dst[j] fixes the argmax, permutes the rest.
    keys = jnp.where(is_top, -1.0, noise)
    src = jnp.argsort(keys, axis=-1)
    dst = jnp.argsort(jnp.where(is_top, -1, jnp.arange(c)[None, :]), axis=-1)
    rows = jnp.arange(n)[:, None]
    out = jnp.zeros_like(probs).at[rows, dst].set(probs[rows, src])
    return out.reshape(shape)


def dkpp_loss(student_logits: jax.Array, teacher_logits: jax.Array, rng: jax.Array,
              labels: jax.Array | None = None, label_weight: float = 0.0,
              mask: jax.Array | None = None, row_keys: jax.Array | None = None) -> jax.Array:
    """Cross-entropy to :func:`dkpp_targets` (plus ``label_weight`` x label cross-entropy). Scalar."""
    _check_pair(student_logits, teacher_logits)
    loss = _mean(soft_cross_entropy(student_logits, dkpp_targets(teacher_logits, rng, row_keys)), mask)
    return _with_label_term(loss, student_logits, labels, label_weight, mask)


def ensemble_log_probs(logits: jax.Array) -> jax.Array:
    """Log of the mean of the members' softmax (BANE): ``[M, ..., C] -> [..., C]``.

    The result is a valid logits array (its softmax is the averaged distribution), so it can
    serve as the teacher of another generation.
    """
    if logits.ndim < 2 or logits.shape[0] == 0:
        raise ValueError(f"ensemble_log_probs needs the members' logits stacked as [M >= 1, ..., C], got shape "
                         f"{tuple(logits.shape)}")
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jax.scipy.special.logsumexp(logp, axis=0) - jnp.log(logits.shape[0])


def distillation_loss(name: str, student_logits: jax.Array, teacher_logits: jax.Array | None,
                      labels: jax.Array, rng: jax.Array, temperature: float = 4.0, label_weight: float = 1.0,
                      mask: jax.Array | None = None, dkpp_keys: jax.Array | None = None) -> jax.Array:
    """The loss called ``name`` (one of :data:`LOSSES`); ``ce`` ignores the teacher. Scalar.

    ``kd`` mixes ``label_weight`` x labels + the soft term (Hinton's usual combination, the
    soft term already scaled by ``T^2``); ``ban_label`` and ``dkpp`` use ``label_weight`` as in
    :func:`ban_label_loss` / :func:`dkpp_loss` (``dkpp_keys``: its per-position keys, ``row_keys``).
    """
    if not isinstance(label_weight, jax.core.Tracer):  # a traced weight is the caller's to check
        values = np.asarray(label_weight, dtype=np.float64)
        if not (np.all(np.isfinite(values)) and np.all(values >= 0)):
            raise ValueError(f"label_weight must be finite and >= 0, got {label_weight!r}")
    if name == "ce":
        return label_loss(student_logits, labels, mask)
    if name not in LOSSES:
        raise ValueError(f"unknown distillation loss {name!r}; use one of {', '.join(LOSSES)}")
    if teacher_logits is None:
        raise ValueError(f"distillation loss {name!r} needs a teacher")
    if name == "kd":
        return _with_label_term(kd_loss(student_logits, teacher_logits, temperature, mask), student_logits, labels,
                                label_weight, mask)
    if name == "ban":
        return ban_loss(student_logits, teacher_logits, mask)
    if name == "ban_label":
        return ban_label_loss(student_logits, teacher_logits, labels, label_weight, mask)
    if name == "cwtm":
        return cwtm_loss(student_logits, teacher_logits, labels, mask)
    return dkpp_loss(student_logits, teacher_logits, rng, labels, label_weight, mask, dkpp_keys)
