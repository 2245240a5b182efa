"""The context-model codec's training task (:class:`CPMTask`) and its objective's weights."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxcomp.checks import finite_number
from jaxcomp.codecs.cpm.model import (
    CPM,
    FACTOR,
    rate_terms,
    rd_objective,
    spec_from_config,
    unmasked_count,
)
from jaxcomp.metrics import ms_ssim, mse, psnr_from_mse
from jaxcomp.train import TrainState, l2_penalty, make_optimizer


def objective_weights(loss: ml_collections.ConfigDict) -> dict[str, float]:
    """``config.loss`` as the weights of one formula (:func:`rd_objective`): ``ms_ssim`` and
    ``mse`` (distortion weights), ``beta`` and ``H_target`` (bits per symbol)."""
    if loss.distortion == "ms_ssim":
        d = dict(ms_ssim=loss.K_ms_ssim, mse=loss.get("mix_mse", 0.0))
    elif loss.distortion == "mse":
        d = dict(ms_ssim=0.0, mse=loss.K_mse)
    else:
        raise ValueError(f"loss.distortion must be 'ms_ssim' or 'mse', not {loss.distortion!r}")
    weights = dict(d, beta=loss.beta, H_target=loss.H_target)
    for key, value in weights.items():  # H_target -1 kept the rate penalty always on, beta < 0 paid for bits
        weights[key] = finite_number(value, f"config.loss: the weight {key!r}", strict=False)
    return weights



class CPMTask:
    """The trainer's task: pure init / train_step / eval_step.

    ``config.loss``: ``distortion`` ("ms_ssim": ``K_ms_ssim * (1 - MS-SSIM) + mix_mse * MSE``;
    "mse": ``K_mse * MSE``), ``beta``, ``H_target`` (bits per symbol; the target bpp is
    ``H_target * C / 64``), ``weight_decay`` (autoencoder kernels), ``center_decay``.
    ``config.init_from`` (read by the trainer): a workdir or exported ``.msgpack`` of a CPM model
    to start from (e.g. a medium-rate model fine-tuned to another operating point).
    """

    def __init__(self, config: ml_collections.ConfigDict):
        self.spec = spec_from_config(config.model)
        self.model = CPM(self.spec)
        self.loss_config = config.loss
        self.weights = objective_weights(config.loss)
        self.tx, self.schedule = make_optimizer(config.optimizer)

    def check_batch(self, image_shape: tuple[int, ...]) -> None:
        if len(image_shape) != 4 or image_shape[-1] != 3:
            raise ValueError(f"the context-model codec expects images [B, H, W, 3], got shape {image_shape}")
        if image_shape[1] % FACTOR or image_shape[2] % FACTOR or min(image_shape[1:3]) < 16:
            raise ValueError(f"training crops must be multiples of {FACTOR} and at least 16 pixels, "
                             f"got {image_shape[1]}x{image_shape[2]}")

    def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TrainState:
        self.check_batch(batch["image"].shape)
        params = self.model.init(rng, batch["image"][:1].astype(jnp.float32))["params"]
        return TrainState.create(params, self.tx)

    def metrics(self, params: Any, image: jax.Array) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
        m, rates, _ = self.forward(params, image)
        return m, rates

    def forward(self, params: Any, image: jax.Array) -> tuple[dict, dict, dict]:
        """``(per-example metrics [B], rate terms [B], the model's outputs)`` of ``image`` (``[B, H, W, 3]``
        in [0, 255]); the outputs hold ``q`` (the quantized latent ``[B, H/8, W/8, C]``) and ``x_hat``."""
        x = image.astype(jnp.float32)
        out = self.model.apply({"params": params}, x)
        rates = rate_terms(self.spec, out)
        pixels = float(x.shape[1] * x.shape[2])
        m = dict(ms_ssim=ms_ssim(x, out["x_hat"]), mse=mse(x, out["x_hat"]),
                 bpp=rates["bits"] / pixels, bpp_all=rates["H_real"] * self.spec.channels / FACTOR**2,
                 H_soft=rates["H_soft"], H_real=rates["H_real"], kmap_bpp=rates["kmap_bits"] / pixels,
                 importance=jnp.mean(unmasked_count(out["mask"]), axis=(1, 2)) / self.spec.channels)
        return m, rates, out

    def objective(self, params: Any, image: jax.Array) -> tuple[jax.Array, dict[str, jax.Array], dict]:
        """``(training loss, batch-mean metrics, the model's outputs)``; :meth:`loss` without the outputs
        (a joint task adds its own term on ``outputs["q"]``)."""
        c = self.loss_config
        m, rates, out = self.forward(params, image)
        distortion, rate_penalty = rd_objective(self.weights, m["ms_ssim"], m["mse"], rates["H_soft"])
        fit = jnp.mean(rates["H_fit"])  # trains the context model and the importance-map prior on every step
        ae = {k: v for k, v in params.items() if k in ("encoder", "decoder")}
        wd = l2_penalty(ae, c.weight_decay, min_ndim=2)
        cd = 0.5 * c.center_decay * jnp.sum(jnp.square(params["centers"]))
        total = distortion + rate_penalty + fit + wd + cd
        metrics = {k: jnp.mean(v) for k, v in m.items()}
        metrics.update(loss=total, distortion=distortion, rate_penalty=rate_penalty)
        metrics["psnr"] = jnp.mean(psnr_from_mse(m["mse"]))
        return total, metrics, out

    def loss(self, params: Any, image: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        total, metrics, _ = self.objective(params, image)
        return total, metrics

    def train_step(self, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array
                   ) -> tuple[TrainState, dict[str, jax.Array]]:
        del rng
        (_, metrics), grads = jax.value_and_grad(self.loss, has_aux=True)(state.params, batch["image"])
        metrics["learning_rate"] = self.schedule(state.step)
        return state.apply_gradients(grads), metrics

    def eval_step(self, state: TrainState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        m, _ = self.metrics(state.params, batch["image"])
        m["psnr"] = psnr_from_mse(m["mse"])
        return m

