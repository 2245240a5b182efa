"""Adversarial losses, gradient penalty, feature matching and MMD: pure JAX functions.

The discriminator's outputs are *logits* (any real number) given as one array or a list of arrays
(one per scale of a multi-scale discriminator); a loss over a list is the **sum** over its
scales, as pix2pixHD and the GC paper use. Each per-scale term is a mean over its elements.

Kinds (``d_loss(kind, real, fake)`` / ``g_loss(kind, fake)``):
  * ``"lsgan"`` (Mao et al. 2017): D: ``(D(x) - 1)^2 + D(G)^2``; G: ``(D(G) - 1)^2``.
  * ``"nonsaturating"`` (Goodfellow et al. 2014): D: ``softplus(-D(x)) + softplus(D(G))``;
    G: ``softplus(-D(G))``.
  * ``"hinge"``: D: ``relu(1 - D(x)) + relu(1 + D(G))``; G: ``-D(G)``.
  * ``"wgan"`` (a critic; add :func:`gradient_penalty` for WGAN-GP): D: ``D(G) - D(x)``; G: ``-D(G)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxcomp.checks import finite_number

KINDS = ("lsgan", "nonsaturating", "hinge", "wgan")
Logits = jax.Array | Sequence[jax.Array]


def _as_list(x: Logits, name: str = "logits") -> list[jax.Array]:
    """Per-scale logits as a non-empty list of arrays; ValueError for no scale (a loss of 0: no
    adversarial signal) and for a list of lists (a multi-scale discriminator's whole output: take
    :func:`~jaxcomp.gan.logits_of` first)."""
    out = list(x) if isinstance(x, (list, tuple)) else [x]
    if not out:
        raise ValueError(f"{name}: no discriminator output (an empty list would give a loss of 0)")
    if any(isinstance(v, (list, tuple)) for v in out):
        raise ValueError(f"{name}: expected logits [B, ...] or one array per scale, got a list of lists (a "
                         f"MultiScaleDiscriminator's features and logits: pass logits_of(outputs))")
    return out


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown GAN loss {kind!r}; known: {', '.join(KINDS)}")


def d_loss(kind: str, real: Logits, fake: Logits) -> jax.Array:
    """The discriminator's (critic's) loss, to minimise; ``float32 []``. ``real``, ``fake``: logits
    ``[B, ...]`` or lists of them (one per scale), summed over scales."""
    _check_kind(kind)
    real, fake = _as_list(real, "d_loss real"), _as_list(fake, "d_loss fake")
    if len(real) != len(fake):
        raise ValueError(f"{len(real)} real and {len(fake)} fake discriminator outputs")
    total = jnp.zeros((), jnp.float32)
    for r, f in zip(real, fake):
        if kind == "lsgan":
            total += jnp.mean(jnp.square(r - 1.0)) + jnp.mean(jnp.square(f))
        elif kind == "nonsaturating":
            total += jnp.mean(jax.nn.softplus(-r)) + jnp.mean(jax.nn.softplus(f))
        elif kind == "hinge":
            total += jnp.mean(jax.nn.relu(1.0 - r)) + jnp.mean(jax.nn.relu(1.0 + f))
        else:  # wgan
            total += jnp.mean(f) - jnp.mean(r)
    return total


def g_loss(kind: str, fake: Logits) -> jax.Array:
    """The generator's adversarial loss, to minimise; ``float32 []`` summed over scales."""
    _check_kind(kind)
    total = jnp.zeros((), jnp.float32)
    for f in _as_list(fake, "g_loss"):
        if kind == "lsgan":
            total += jnp.mean(jnp.square(f - 1.0))
        elif kind == "nonsaturating":
            total += jnp.mean(jax.nn.softplus(-f))
        else:  # hinge and wgan
            total += -jnp.mean(f)
    return total


def gradient_penalty(critic: Callable[[jax.Array], jax.Array], real: jax.Array, fake: jax.Array,
                     rng: jax.Array, target: float = 1.0) -> jax.Array:
    """WGAN-GP's penalty (Gulrajani et al. 2017): ``E[(||grad_x critic(x_hat)||_2 - target)^2]``
    at ``x_hat = eps * real + (1 - eps) * fake``, ``eps ~ U[0, 1]`` per example.

    ``critic(x [B, ...]) -> [B]`` (or any shape whose sum over an example is its score; per-example
    scores must not mix examples, e.g. no batch norm). ``real``, ``fake``: ``float32 [B, ...]``.
    Returns ``float32 []``; multiply by the weight (10 in the paper) yourself. A critic's term: its
    gradient flows to the critic's parameters (and ``real``), not to ``fake``, whose gradient is
    stopped (it is exactly 0 with respect to ``fake``, so the penalty cannot train a generator).
    """
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty: real {real.shape} and fake {fake.shape} differ in shape")
    for name, a in (("real", real), ("fake", fake)):
        if not jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating):
            raise ValueError(f"gradient_penalty: {name} must be floating point (images as float, e.g. "
                             f"uint8 / 127.5 - 1), got dtype {jnp.asarray(a).dtype}")
    eps = jax.random.uniform(rng, (real.shape[0],) + (1,) * (real.ndim - 1), real.dtype)
    x_hat = eps * real + (1.0 - eps) * jax.lax.stop_gradient(fake)
    grads = jax.grad(lambda x: jnp.sum(critic(x)))(x_hat)
    grads = grads.astype(jnp.float32)  # the norms in float32 whatever the critic's dtype
    norms = jnp.sqrt(jnp.sum(jnp.square(grads.reshape(grads.shape[0], -1)), axis=1) + 1e-12)
    return jnp.mean(jnp.square(norms - target))


def feature_matching(real_feats: Sequence[Sequence[jax.Array]], fake_feats: Sequence[Sequence[jax.Array]]
                     ) -> jax.Array:
    """pix2pixHD's discriminator feature-matching loss: for every scale and every intermediate
    layer (all but the last entry, the logits), the mean absolute difference between the
    activations on the real and on the generated image, weighted ``4 / (#layers * #scales)`` as
    pix2pixHD weights it (``D_weights * feat_weights = 1 / num_D * 4 / (n_layers_D + 1)``, its D
    having ``n_layers_D + 1`` intermediate layers), so the loss is 4x the average L1 over layers
    and scales and ``lambda_fm`` means what pix2pixHD's ``lambda_feat`` (10) means. The real
    activations are constants.

    ``real_feats``, ``fake_feats``: per scale, the lists :class:`~jaxcomp.gan.PatchDiscriminator`
    returns. Returns ``float32 []``.
    """
    if len(real_feats) != len(fake_feats):
        raise ValueError(f"{len(real_feats)} real and {len(fake_feats)} fake scales")
    if not real_feats:
        raise ValueError("feature_matching: no scale (an empty list would give a loss of 0)")
    total = jnp.zeros((), jnp.float32)
    for s, (r_scale, f_scale) in enumerate(zip(real_feats, fake_feats)):
        if not all(isinstance(v, (list, tuple)) for v in (r_scale, f_scale)):  # arrays: batch read as layers
            raise ValueError("feature_matching expects, per scale, a list of layer activations (one "
                             "PatchDiscriminator's output: wrap it as [feats]; a MultiScaleDiscriminator's "
                             f"output as it is), got {type(r_scale).__name__} at scale {s}")
        if len(r_scale) != len(f_scale):  # zip would drop layers without a word
            raise ValueError(f"scale {s}: {len(r_scale)} real and {len(f_scale)} fake layers")
        layers = list(zip(r_scale[:-1], f_scale[:-1]))
        for i, (r, f) in enumerate(layers):
            if r.shape != f.shape:  # broadcasting would compare other examples
                raise ValueError(f"feature_matching: scale {s} layer {i}: real {r.shape} and fake {f.shape} differ")
            total += 4.0 * jnp.mean(jnp.abs(jax.lax.stop_gradient(r) - f)) / (len(layers) * len(real_feats))
    return total


def imq_kernel(x: jax.Array, y: jax.Array, scale: float) -> jax.Array:
    """Inverse multiquadratic kernel ``k(x, y) = C / (C + ||x - y||^2)`` between rows: ``x [n, d]``,
    ``y [m, d]`` -> ``float32 [n, m]`` (computed in float32 whatever the inputs' dtype)."""
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    d2 = jnp.sum(jnp.square(x[:, None, :] - y[None, :, :]), -1)
    return scale / (scale + d2)


WAE_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


def mmd_imq(x: jax.Array, y: jax.Array, prior_var: float = 1.0, scales: Sequence[float] = WAE_SCALES) -> jax.Array:
    """Unbiased MMD^2 between samples ``x [n, d]`` and ``y [m, d]`` (n, m >= 2) with the inverse
    multiquadratic kernel, summed over ``C = s * 2 * d * prior_var`` for each ``s`` in ``scales``,
    as the Wasserstein auto-encoder (Tolstikhin et al. 2018) and DPLC use (``2 d var`` is the
    expected squared distance of two prior samples). ``float32 []``; may be slightly negative.
    ``prior_var`` and ``scales`` may be traced (e.g. annealed under ``jit``); concrete ones are checked.
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"mmd_imq expects [n, d] and [m, d], got {x.shape} and {y.shape}")
    n, m, d = x.shape[0], y.shape[0], x.shape[1]
    if n < 2 or m < 2:
        raise ValueError(f"mmd_imq needs at least 2 samples on each side, got {n} and {m}")
    scales = tuple(scales)
    if not scales or not all(isinstance(c, jax.core.Tracer) or float(c) > 0 for c in scales):
        raise ValueError(f"mmd_imq needs kernel scales > 0 (none gives 0), got {scales!r}")
    if not isinstance(prior_var, jax.core.Tracer):
        finite_number(prior_var, "mmd_imq: prior_var (the prior's variance)")
    off_x = 1.0 - jnp.eye(n, dtype=x.dtype)
    off_y = 1.0 - jnp.eye(m, dtype=y.dtype)
    total = jnp.zeros((), jnp.float32)
    for s in scales:
        c = s * 2.0 * d * prior_var
        kxx = jnp.sum(imq_kernel(x, x, c) * off_x) / (n * (n - 1))
        kyy = jnp.sum(imq_kernel(y, y, c) * off_y) / (m * (m - 1))
        kxy = jnp.mean(imq_kernel(x, y, c))
        total += kxx + kyy - 2.0 * kxy
    return total
