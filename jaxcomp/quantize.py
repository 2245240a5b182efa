"""Quantizers with straight-through gradients: hard values forward, soft values backward."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.checks import is_whole


def uniform_levels(levels: int, x_min: float = -1.0, x_max: float = 1.0) -> jax.Array:
    """``levels`` (>= 2, a Python or NumPy integer) evenly spaced centres in ``[x_min, x_max]`` (numbers,
    traced ones too), ``float32 [levels]``."""
    if not is_whole(levels) or levels < 2:
        raise ValueError(f"uniform_levels needs an integer number of levels >= 2, got {levels!r}")
    traced = any(isinstance(v, jax.core.Tracer) for v in (x_min, x_max))  # under jit: no numbers to compare
    if not traced and not float(x_min) < float(x_max):  # equal ends gave identical centres
        raise ValueError(f"uniform_levels needs x_min < x_max, got {x_min!r} and {x_max!r}")
    return jnp.linspace(x_min, x_max, levels, dtype=jnp.float32)


def soft_hard_quantize(x: jax.Array, centers: jax.Array, sigma: float) -> tuple[jax.Array, jax.Array]:
    """Soft-to-hard vector quantization (Agustsson et al. 2017; L3C).

    Args:
      x: ``float32 [...]`` values to quantize.
      centers: ``float32 [L]`` quantization centres.
      sigma: softness of the soft assignment ``softmax(-sigma * (x - c)^2)``, finite and > 0
        (a concrete value is checked; ``inf`` made the values NaN).

    Returns:
      ``(values, symbols)``: ``float32 [...]`` equal to the nearest centre in the forward
      pass whose gradient is that of the soft assignment ``sum_l softmax_l * c_l``; and
      ``int32 [...]`` indices of the nearest centres. A NaN in ``x`` gives symbol 0 and a NaN
      value (traced inputs cannot be refused: check the encoder's output upstream).
    """
    if np.ndim(centers) != 1 or np.shape(centers)[0] < 1:  # shapes are static: checked at trace time
        raise ValueError(f"soft_hard_quantize expects centres float32 [L] with L >= 1, got shape {np.shape(centers)}")
    if not isinstance(sigma, jax.core.Tracer) and not (np.all(np.isfinite(sigma)) and np.all(np.asarray(sigma) > 0)):
        raise ValueError(f"soft_hard_quantize: sigma must be finite and > 0, got {sigma!r}")
    d = jnp.square(x[..., None] - centers)
    soft = jnp.sum(jax.nn.softmax(-sigma * d, axis=-1) * centers, axis=-1)
    symbols = jnp.argmin(d, axis=-1).astype(jnp.int32)
    hard = centers[symbols]
    return soft + jax.lax.stop_gradient(hard - soft), symbols
