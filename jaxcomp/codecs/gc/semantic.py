"""Heatmaps of selective generative compression (SC): where the latent is coded and where G synthesises.

A heatmap is ``float32 [B, H/16, W/16]`` at latent resolution: 1 = preserve (the latent is coded),
0 = synthesise (the latent is zeroed and G draws the content from the label map). Pure JAX, drawn
inside the jitted train step from the step's key (``config.sc``, :class:`SCSettings`):

* ``mode="none"``: everything preserved (the SC network as a conditional GC);
* ``mode="box"``: the paper's random box (RB): one axis-aligned box per image, its height and width
  uniform in ``[box_min, box_max]`` of the latent's, its place uniform among those that fit;
* ``mode="classes"``: the paper's random instances (RI) with classes standing in for instances
  (neither tfds ``cityscapes`` nor the colour clusters carry instance maps): every label class is
  chosen independently with probability ``class_fraction``, and the chosen classes' pixels form the
  region. A latent cell belongs to a region when any of its 16x16 pixels does.

``chosen`` says what the drawn region is: ``"preserve"`` (the paper: RI keeps the chosen instances,
RB keeps the box, the rest is synthesised) or ``"synthesize"`` (the region is zeroed, the rest kept).
With probability ``1 - p_mask`` an image keeps its whole latent (a mix of SC and conditional GC).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from jaxcomp.codecs.gc.model import FACTOR
from jaxcomp.configs import spec_from_section

MODES = ("none", "box", "classes")
CHOSEN = ("preserve", "synthesize")


@dataclasses.dataclass(frozen=True)
class SCSettings:
    """``config.sc``: how training draws heatmaps (see the module docstring)."""

    mode: str = "classes"
    chosen: str = "preserve"
    class_fraction: float = 0.25   # RI: each class is chosen with this probability (the paper: 25% of instances)
    box_min: float = 0.25          # RB: box side, as a fraction of the latent's height / width
    box_max: float = 0.75
    p_mask: float = 1.0            # probability that an image gets a drawn heatmap (else all preserved)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"config.sc.mode must be one of {MODES}, not {self.mode!r}")
        if self.chosen not in CHOSEN:
            raise ValueError(f"config.sc.chosen must be one of {CHOSEN}, not {self.chosen!r}")
        if not (0.0 <= self.class_fraction <= 1.0 and 0.0 <= self.p_mask <= 1.0):
            raise ValueError(f"config.sc.class_fraction and p_mask are probabilities, got {self}")
        if not 0.0 < self.box_min <= self.box_max <= 1.0:
            raise ValueError(f"config.sc needs 0 < box_min <= box_max <= 1, got {self.box_min}, {self.box_max}")


def settings_from_config(sc: ml_collections.ConfigDict | None) -> SCSettings:
    if sc is None:
        return SCSettings(mode="none")
    return spec_from_section(SCSettings, sc, "selective compression", where="config.sc")


def cells_touched(mask: jax.Array) -> jax.Array:
    """``bool [B, H, W]`` pixels -> ``float32 [B, H/16, W/16]``: 1 where any pixel of the 16x16 cell is set."""
    b, h, w = mask.shape
    cells = mask.reshape(b, h // FACTOR, FACTOR, w // FACTOR, FACTOR)
    return jnp.any(cells, axis=(2, 4)).astype(jnp.float32)


def class_region(semantic: jax.Array, chosen: jax.Array) -> jax.Array:
    """Latent cells holding a pixel of a chosen class: ``semantic int32 [B, H, W]``,
    ``chosen bool [B, K]`` -> ``float32 [B, H/16, W/16]``."""
    picked = jnp.take_along_axis(chosen, semantic.reshape(semantic.shape[0], -1), axis=1)
    return cells_touched(picked.reshape(semantic.shape))


def box_region(boxes: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """``boxes int32 [B, 4]`` (top, left, height, width in latent cells) -> ``float32 [B, h, w]``."""
    h, w = shape
    ys = jnp.arange(h)[None, :, None]
    xs = jnp.arange(w)[None, None, :]
    top, left, bh, bw = (boxes[:, i, None, None] for i in range(4))
    return ((ys >= top) & (ys < top + bh) & (xs >= left) & (xs < left + bw)).astype(jnp.float32)


def draw_boxes(rng: jax.Array, batch: int, shape: tuple[int, int], box_min: float, box_max: float) -> jax.Array:
    """One random box per image, ``int32 [B, 4]`` (top, left, height, width), inside ``shape``."""
    h, w = shape
    k_size, k_place = jax.random.split(rng)
    frac = jax.random.uniform(k_size, (batch, 2), minval=box_min, maxval=box_max)
    sides = jnp.clip(jnp.round(frac * jnp.asarray([h, w], jnp.float32)), 1, jnp.asarray([h, w])).astype(jnp.int32)
    room = jnp.asarray([h, w], jnp.int32) - sides + 1  # places where the box fits
    place = jnp.floor(jax.random.uniform(k_place, (batch, 2)) * room).astype(jnp.int32)
    return jnp.concatenate([place, sides], -1)


def sample_heatmap(settings: SCSettings, rng: jax.Array, semantic: jax.Array, classes: int,
                   return_choice: bool = False) -> jax.Array | tuple[jax.Array, dict[str, jax.Array]]:
    """A training heatmap ``float32 [B, H/16, W/16]`` for label maps ``semantic int32 [B, H, W]``.

    With ``return_choice``, also what was drawn: ``{"classes": bool [B, K]}`` or
    ``{"boxes": int32 [B, 4]}`` (empty for ``"none"``) and ``{"masked": bool [B]}`` (whether the
    image got the drawn heatmap, see ``p_mask``).
    """
    b, h, w = semantic.shape
    shape = (h // FACTOR, w // FACTOR)
    k_region, k_use = jax.random.split(rng)
    choice: dict[str, jax.Array] = {}
    if settings.mode == "none":
        heat = jnp.ones((b,) + shape, jnp.float32)
    else:
        if settings.mode == "box":
            choice["boxes"] = draw_boxes(k_region, b, shape, settings.box_min, settings.box_max)
            region = box_region(choice["boxes"], shape)
        else:
            choice["classes"] = jax.random.bernoulli(k_region, settings.class_fraction, (b, classes))
            region = class_region(semantic, choice["classes"])
        heat = region if settings.chosen == "preserve" else 1.0 - region
        masked = jax.random.bernoulli(k_use, settings.p_mask, (b,))
        heat = jnp.where(masked[:, None, None], heat, 1.0)
        choice["masked"] = masked
    return (heat, choice) if return_choice else heat


def upsample(heatmap: jax.Array) -> jax.Array:
    """``[B, h, w]`` latent heatmap -> ``[B, 16h, 16w, 1]`` pixel mask (nearest)."""
    return jnp.repeat(jnp.repeat(heatmap, FACTOR, 1), FACTOR, 2)[..., None]


def masked_mse(x: jax.Array, x_hat: jax.Array, heatmap: jax.Array) -> jax.Array:
    """Mean squared error over the preserved pixels only (``x``, ``x_hat`` ``[B, H, W, 3]``,
    ``heatmap [B, H/16, W/16]``): ``sum(m (x - x_hat)^2) / (3 sum m)``, 0 when nothing is preserved."""
    m = upsample(heatmap)
    return jnp.sum(m * jnp.square(x - x_hat)) / jnp.maximum(3.0 * jnp.sum(m), 1.0)


def preserved_sq_err(x: jax.Array, x_hat: jax.Array, heatmap: jax.Array) -> jax.Array:
    """The preserved pixels' squared error over all subpixels of the batch (``x``, ``x_hat`` ``[B, H, W, 3]``,
    ``heatmap [B, H/16, W/16]``), a scalar: ``sum(m (x - x_hat)^2) / (3 B H W)``; 0 when nothing is
    preserved, which is true of a sum. Divided by the preserved fraction ``mean(heatmap)`` it is
    :func:`masked_mse`; averaged over steps of one batch shape, then divided by the average fraction,
    it is the MSE of all those steps' preserved pixels, each pixel counted once."""
    return jnp.mean(upsample(heatmap) * jnp.square(x - x_hat))


def masked_mse_per_image(x: jax.Array, x_hat: jax.Array, heatmap: jax.Array) -> jax.Array:
    """:func:`masked_mse` of each image, ``float32 [B]``."""
    m = upsample(heatmap)
    return jnp.sum(m * jnp.square(x - x_hat), (1, 2, 3)) / jnp.maximum(3.0 * jnp.sum(m, (1, 2, 3)), 1.0)
