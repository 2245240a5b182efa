"""GC training as a two-player task of the one trainer (:mod:`jaxcomp.gan.training`).

Generator player: E, the quantizer, G and the factorized prior. Discriminator player: a
:class:`~jaxcomp.gan.MultiScaleDiscriminator` on images in ``[-1, 1]``.

Generator loss (the paper's, with pix2pixHD's feature matching; no VGG loss, which would need
downloaded weights):  ``adversarial * (g_loss + lambda_fm * FM) + lambda_mse * MSE + prior``, where
MSE is over images in ``[-1, 1]`` and ``prior`` is the factorized prior's cross-entropy (bits per
symbol) on the *constant* symbols, so it fits the prior without pulling on the encoder. With
``loss.beta > 0`` a rate term ``beta * bits per symbol`` of the soft-quantized latent under the prior is
added (the paper's ``beta H(w_hat)``; 0 for GC, whose rate is fixed by C).

SC (``model.semantic_classes > 0``): batches carry ``semantic int32 [B, H, W]`` beside ``image``;
every step draws a heatmap from its key (``config.sc``, :mod:`jaxcomp.codecs.gc.semantic`) that
zeroes the latent where G must synthesise; the MSE is over the preserved pixels only (the
upsampled heatmap), the adversarial and feature-matching terms stay on the whole image, and the
discriminator sees the one-hot label map beside the image (a conditional GAN, as the paper's SC).

Logged per training step (scalars, which the trainer averages over a logging window, step by step):
``loss``, ``g_adv``, ``fm``, ``prior_bits_per_symbol``, ``bpp_prior`` (SC: of the coded symbols only)
and, for GC, ``mse`` / ``psnr`` of the decoded images (255 scale, per image, then the batch mean).
SC logs no per-step MSE of the preserved pixels, which a step that keeps none does not have (it
read 0, a PSNR of 148 dB, averaged into the window): ``mse_image`` / ``psnr_image`` of the whole
image decoded under the step's heatmap (synthesised regions included), ``preserved`` (fraction of
the latent, and so of the pixels, coded) and ``preserved_sq_err`` (the squared error averaged over all
subpixels, 0 where synthesised, :func:`jaxcomp.codecs.gc.semantic.preserved_sq_err`): a window's
``preserved_sq_err / preserved`` is the MSE of its preserved pixels (255 scale).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from jaxcomp.codecs.gc import semantic as sc
from jaxcomp.codecs.gc.model import FACTOR, GC, prior_bits, soft_prior_bits, spec_from_config, to_pixels, to_unit
from jaxcomp.gan import (
    MultiScaleDiscriminator,
    d_loss,
    feature_matching,
    g_loss,
    logits_of,
    schedule_from_config,
    two_player_step,
)
from jaxcomp.metrics import ms_ssim, psnr_from_mse
from jaxcomp.train import TwoPlayerState, make_optimizer


class GCTask:
    """The trainer's task for GC (``config.task = "gc"``): pure ``init`` / ``train_step`` / ``eval_step``.

    ``config.loss``: ``gan`` (``lsgan``, ``nonsaturating``, ``hinge``), ``lambda_mse`` (10 in the
    paper), ``lambda_fm`` (feature matching in pix2pixHD's units, :func:`jaxcomp.gan.feature_matching`: 10 as
    pix2pixHD and the paper; the CPU configs keep 2.5), ``beta`` (rate; 0).
    ``config.gan``: ``mode``, ``d_steps``, ``warmup_steps`` (:class:`~jaxcomp.gan.GANSchedule`).
    ``config.optimizer`` (generator) and ``config.optimizer_d`` (discriminator).
    """

    def __init__(self, config: ml_collections.ConfigDict):
        self.spec = spec_from_config(config.model)
        self.model = GC(self.spec)
        self.disc = MultiScaleDiscriminator(self.spec.disc_scales, self.spec.disc_features, self.spec.disc_layers)
        self.loss_config = config.loss
        if config.loss.gan not in ("lsgan", "nonsaturating", "hinge"):
            raise ValueError(f"config.loss.gan must be 'lsgan', 'nonsaturating' or 'hinge' for GC, "
                             f"not {config.loss.gan!r}")
        self.schedule = schedule_from_config(config.gan)
        self.tx_g, self.lr_g = make_optimizer(config.optimizer)
        self.tx_d, _ = make_optimizer(config.optimizer_d)
        self.classes = self.spec.semantic_classes
        if self.classes:
            self.sc = sc.settings_from_config(config.get("sc"))
            labels = config.data.get("label_classes", self.classes)
            if labels != self.classes:
                raise ValueError(f"config.data.label_classes={labels} but config.model.semantic_classes="
                                 f"{self.classes}: the label maps must have the model's classes")
        elif "sc" in config:
            raise ValueError("config.sc is set but config.model.semantic_classes is 0 (a GC model, not SC)")

    def check_batch(self, shape: tuple[int, ...], semantic: tuple[int, ...] | None = None) -> None:
        """Image batch shape ``[B, H, W, 3]`` and (SC) the label map's shape ``[B, H, W]``."""
        if len(shape) != 4 or shape[-1] != 3:
            raise ValueError(f"GC expects images [B, H, W, 3], got shape {shape}")
        if shape[1] % FACTOR or shape[2] % FACTOR:
            raise ValueError(f"GC training crops must be multiples of {FACTOR} pixels, got {shape[1]}x{shape[2]}")
        if self.classes and (semantic is None or tuple(semantic) != tuple(shape[:3])):
            raise ValueError(f"an SC model trains on batches with a label map 'semantic' int32 {tuple(shape[:3])} "
                             f"beside the images (config.data.labels); got {semantic}")

    def noise(self, rng: jax.Array, image: jax.Array) -> jax.Array | None:
        """Noise channels for G, ``float32 [B, H/16, W/16, noise_channels]`` (None without)."""
        if not self.spec.noise_channels:
            return None
        b, h, w = image.shape[:3]
        return jax.random.normal(rng, (b, h // FACTOR, w // FACTOR, self.spec.noise_channels), jnp.float32)

    def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TwoPlayerState:
        self.check_batch(batch["image"].shape, batch["semantic"].shape if "semantic" in batch else None)
        g_rng, d_rng = jax.random.split(rng)
        image = batch["image"][:1]
        semantic = batch["semantic"][:1] if self.classes else None
        g = self.model.init(g_rng, image, self.noise(g_rng, image), semantic)["params"]
        d = self.disc.init(d_rng, to_unit(image), self.cond(semantic))["params"]
        return TwoPlayerState.create(g, d, self.tx_g, self.tx_d)

    def cond(self, semantic: jax.Array | None) -> jax.Array | None:
        """What the discriminator is conditioned on: the one-hot label map (SC), else nothing."""
        return None if semantic is None else jax.nn.one_hot(semantic, self.classes, dtype=jnp.float32)

    def heatmap(self, batch: dict[str, jax.Array], rng: jax.Array) -> jax.Array | None:
        """SC: this step's heatmap ``float32 [B, H/16, W/16]``, drawn from ``rng`` (GC: None)."""
        if not self.classes:
            return None
        # a key of its own, so the noise channels are drawn as in GC
        return sc.sample_heatmap(self.sc, jax.random.fold_in(rng, 0x5C), batch["semantic"], self.classes)

    def forward(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array,
                heatmap: jax.Array | None = None) -> dict[str, jax.Array]:
        noise = self.noise(rng, batch["image"])
        if not self.classes:
            return self.model.apply({"params": params["generator"]}, batch["image"], noise)
        heatmap = self.heatmap(batch, rng) if heatmap is None else heatmap
        out = self.model.apply({"params": params["generator"]}, batch["image"], noise, batch["semantic"], heatmap)
        return dict(out, heatmap=heatmap)

    def generate(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array) -> jax.Array:
        return self.forward(params, batch, rng)["x_hat"]

    def generator_loss(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array, adversarial: jax.Array
                       ) -> tuple[jax.Array, tuple[dict[str, jax.Array], jax.Array]]:
        c = self.loss_config
        out = self.forward(params, batch, rng)
        x, x_hat = to_unit(batch["image"]), out["x_hat"]
        heat = out.get("heatmap")
        # SC: the distortion of the preserved region only; the synthesised one is judged by D alone
        mse = jnp.mean(jnp.square(x - x_hat)) if heat is None else sc.masked_mse(x, x_hat, heat)
        d_params = {"params": params["discriminator"]}
        cond = self.cond(batch.get("semantic") if self.classes else None)
        fake_feats = self.disc.apply(d_params, x_hat, cond)
        real_feats = self.disc.apply(d_params, x, cond)
        adv = g_loss(c.gan, logits_of(fake_feats))
        fm = feature_matching(real_feats, fake_feats)
        symbols = jax.lax.stop_gradient(out["symbols"])
        prior_fit = jnp.mean(prior_bits(out["prior_logits"], symbols)) / self.spec.channels
        rate = 0.0
        if c.get("beta", 0.0):
            bits = soft_prior_bits(out["w"], out["prior_logits"], self.spec.sigma)  # [B, h, w]
            if heat is not None:  # SC: only the preserved symbols are sent
                bits = bits * heat
            rate = c.beta * jnp.mean(bits) / self.spec.channels
        loss = adversarial * (adv + c.lambda_fm * fm) + c.lambda_mse * mse + prior_fit + rate
        pixels = float(x.shape[1] * x.shape[2])
        image, decoded = batch["image"].astype(jnp.float32), to_pixels(x_hat)
        # each image's MSE over all its pixels (255 scale): defined whatever the heatmap, so its PSNR is real
        mse255 = jnp.mean(jnp.square(decoded - image), axis=(1, 2, 3))
        bits = prior_bits(out["prior_logits"], symbols)
        metrics = dict(loss=loss, g_adv=adv, fm=fm, prior_bits_per_symbol=prior_fit)
        if heat is None:
            metrics.update(mse=jnp.mean(mse255), psnr=jnp.mean(psnr_from_mse(mse255)))
        else:
            # SC: no MSE of the preserved pixels per step (a step that keeps none has no such MSE, and the
            # trainer averages a window's steps unweighted); their squared error averaged over all subpixels
            # instead, so that mean(preserved_sq_err) / mean(preserved) over a window is their MSE
            bits = bits * heat  # only the preserved symbols are sent
            metrics.update(mse_image=jnp.mean(mse255), psnr_image=jnp.mean(psnr_from_mse(mse255)),
                           preserved=jnp.mean(heat), preserved_sq_err=sc.preserved_sq_err(image, decoded, heat))
        metrics["bpp_prior"] = jnp.mean(bits.sum((1, 2))) / pixels
        return loss, (metrics, x_hat)

    def discriminator_loss(self, params: Any, batch: dict[str, jax.Array], fake: jax.Array, rng: jax.Array
                           ) -> tuple[jax.Array, dict[str, jax.Array]]:
        del rng
        d_params = {"params": params["discriminator"]}
        cond = self.cond(batch.get("semantic") if self.classes else None)
        real = logits_of(self.disc.apply(d_params, to_unit(batch["image"]), cond))
        fake_logits = logits_of(self.disc.apply(d_params, fake, cond))
        loss = d_loss(self.loss_config.gan, real, fake_logits)
        return loss, dict(loss=loss, real=sum(jnp.mean(r) for r in real) / len(real),
                          fake=sum(jnp.mean(f) for f in fake_logits) / len(fake_logits))

    def train_step(self, state: TwoPlayerState, batch: dict[str, jax.Array], rng: jax.Array
                   ) -> tuple[TwoPlayerState, dict[str, jax.Array]]:
        lr = self.lr_g(state.step)
        state, metrics = two_player_step(state, batch, rng, self.schedule, self.generate, self.generator_loss,
                                         self.discriminator_loss)
        return state, dict(metrics, learning_rate=lr)

    def eval_step(self, state: TwoPlayerState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Per image: ``mse``, ``psnr``, ``ms_ssim`` of the decoded image and ``bpp_prior``. SC: those
        of the image decoded from its whole latent (all preserved), and under heatmaps drawn with a
        fixed key: ``mse_preserved`` (MSE of the preserved pixels; 0 where an image has none),
        ``preserved`` (fraction of the latent coded), ``bpp_prior`` (the coded symbols only)."""
        image = batch["image"].astype(jnp.float32)
        pixels = float(image.shape[1] * image.shape[2])
        full = None if not self.classes else jnp.ones((image.shape[0], image.shape[1] // FACTOR,
                                                         image.shape[2] // FACTOR), jnp.float32)
        out = self.forward(state.params, batch, jax.random.PRNGKey(0), full)
        x_hat = jnp.round(to_pixels(out["x_hat"]))
        mse255 = jnp.mean(jnp.square(x_hat - image), axis=(1, 2, 3))
        metrics = dict(mse=mse255, psnr=psnr_from_mse(mse255), ms_ssim=ms_ssim(image, x_hat),
                       bpp_prior=prior_bits(out["prior_logits"], out["symbols"]).sum((1, 2)) / pixels)
        if self.classes:
            out = self.forward(state.params, batch, jax.random.PRNGKey(0))
            heat = out["heatmap"]
            x_sel = jnp.round(to_pixels(out["x_hat"]))
            metrics.update(mse_preserved=sc.masked_mse_per_image(image, x_sel, heat), preserved=jnp.mean(heat, (1, 2)),
                           bpp_prior=(prior_bits(out["prior_logits"], out["symbols"]) * heat).sum((1, 2)) / pixels)
        return metrics


