"""Sampling images from a GC model: a WGAN-GP that generates the quantized latent (the paper's
Section 6.3, "sampling"), trained on the latents ``w_hat = q(E(x))`` of a frozen GC model.

A sample is ``G(q(S(z)))``: the latent generator ``S`` maps Gaussian noise ``z [B, noise]`` to a
latent ``[B, h, w, C]`` that is quantized to the 5 centres with the straight-through quantizer,
and GC's frozen generator decodes it. The critic ``D`` (convolutions, no normalisation, so the
gradient penalty is per example) scores latents. Training is a two-player task of the one trainer
with WGAN-GP's alternating schedule (``gan.mode="alternate"``, ``gan.d_steps=5``). The frozen GC
parameters travel in the state's ``model_state`` (constant, checkpointed with the run).

The baseline a sample is compared with: symbols drawn independently from GC's own factorized
prior (what the entropy model alone knows about the latent).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxcomp.codecs.gc.model import FACTOR, GC, LEVELS, GCSpec, centers, spec_from_config, to_pixels
from jaxcomp.gan import d_loss, g_loss, gradient_penalty, schedule_from_config, two_player_step
from jaxcomp.nn import StridedConv
from jaxcomp.train import TwoPlayerState, make_optimizer, per_task


class LatentGenerator(nn.Module):
    """DCGAN-style: ``z [B, noise] -> [B, h, w, channels]`` (before quantization), through a dense
    layer to ``[h/4, w/4, 4f]`` and two x2 upsampling stages (resize + 3x3 conv, batch-free norm)."""

    height: int
    width: int
    channels: int
    features: int = 64

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        h0, w0 = -(-self.height // 4), -(-self.width // 4)
        x = nn.Dense(h0 * w0 * 4 * self.features, name="dense")(z).reshape(z.shape[0], h0, w0, 4 * self.features)
        x = nn.relu(nn.LayerNorm(name="norm0")(x))
        for i, f in enumerate((2 * self.features, self.features)):
            b, h, w, c = x.shape
            x = jax.image.resize(x, (b, 2 * h, 2 * w, c), "nearest")
            x = nn.relu(nn.LayerNorm(name=f"norm{i + 1}")(nn.Conv(f, (3, 3), name=f"conv{i}")(x)))
        x = nn.Conv(self.channels, (3, 3), name="out")(x)[:, : self.height, : self.width]
        return 2.5 * jnp.tanh(x)  # the centres span [-2, 2]


class LatentCritic(nn.Module):
    """``[B, h, w, C] -> [B]``: 3x3 convs with LeakyReLU, one stride-2 stage, a dense score."""

    features: int = 64

    @nn.compact
    def __call__(self, w: jax.Array) -> jax.Array:
        x = nn.leaky_relu(nn.Conv(self.features, (3, 3), name="conv0")(w), 0.2)
        x = nn.leaky_relu(StridedConv(2 * self.features, 3, 2, (1, 1), name="conv1")(x), 0.2)
        x = nn.leaky_relu(nn.Conv(2 * self.features, (3, 3), name="conv2")(x), 0.2)
        return nn.Dense(1, name="score")(x.reshape(x.shape[0], -1))[:, 0]


def quantize(w: jax.Array) -> jax.Array:
    """Nearest of the 5 centres, straight-through (identity gradient)."""
    c = centers()
    hard = c[jnp.argmin(jnp.abs(w[..., None] - c), -1)]
    return w + jax.lax.stop_gradient(hard - w)


class LatentSamplerTask:
    """``config.task = "gc_sampler"``: WGAN-GP on the latents of the frozen GC model
    ``config.gc_model`` (a shipped name like ``c4``, a ``.msgpack`` or a workdir of a global GC model,
    not a selective one: its encoder and generator take no label map), for crops of
    ``config.data.crop`` pixels (latents ``crop/16`` a side). Both are checked when the task is
    built, before the trainer writes anything into its workdir.

    ``config.model``: ``noise`` (z's size), ``features`` (generator), ``critic_features``.
    ``config.loss``: ``gp`` (the gradient penalty's weight, 10).
    """

    def __init__(self, config: ml_collections.ConfigDict, gc_config: ml_collections.ConfigDict | None = None,
                 gc_params: Any = None):
        name = "the GC model given"
        if gc_params is None:
            name = f"config.gc_model={config.get('gc_model', '')}"
            gc_config, gc_params = load_frozen_gc(config.get("gc_model", ""))
        self.gc_spec = spec_from_config(gc_config.model)
        check_global(self.gc_spec, name)
        self.gc = GC(self.gc_spec)
        self.gc_params = gc_params
        if config.data.crop % FACTOR:
            raise ValueError(f"data.crop must be a multiple of {FACTOR}, got {config.data.crop}")
        self.side = config.data.crop // FACTOR
        self.noise = config.model.noise
        self.generator = LatentGenerator(self.side, self.side, self.gc_spec.channels, config.model.features)
        self.critic = LatentCritic(config.model.critic_features)
        self.gp = config.loss.gp
        self.schedule = schedule_from_config(config.gan)
        self.tx_g, self.lr_g = make_optimizer(config.optimizer)
        self.tx_d, _ = make_optimizer(config.optimizer_d)

    def latents(self, gc_params: Any, image: jax.Array) -> jax.Array:
        """``w_hat`` of the frozen GC encoder, ``float32 [B, crop/16, crop/16, C]`` (centres)."""
        w = self.gc.apply({"params": gc_params}, image, method=GC.encode)
        return jax.lax.stop_gradient(self.gc.apply({"params": gc_params}, w, method=GC.quantize)[0])

    def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TwoPlayerState:
        g_rng, d_rng = jax.random.split(rng)
        g = self.generator.init(g_rng, jnp.zeros((1, self.noise)))["params"]
        d = self.critic.init(d_rng, jnp.zeros((1, self.side, self.side, self.gc_spec.channels)))["params"]
        state = TwoPlayerState.create(g, d, self.tx_g, self.tx_d)
        return state.replace(model_state={"gc": jax.tree.map(jnp.asarray, self.gc_params)})

    def sample_latents(self, params: Any, rng: jax.Array, n: int) -> jax.Array:
        z = jax.random.normal(rng, (n, self.noise))
        return quantize(self.generator.apply({"params": params["generator"]}, z))

    def generate(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array) -> jax.Array:
        return self.sample_latents(params, rng, batch["image"].shape[0])

    def generator_loss(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array, adversarial: jax.Array
                       ) -> tuple[jax.Array, tuple[dict[str, jax.Array], jax.Array]]:
        fake = self.generate(params, batch, rng)
        loss = g_loss("wgan", self.critic.apply({"params": params["discriminator"]}, fake))
        return loss, ({"g_loss": loss}, fake)

    def train_step(self, state: TwoPlayerState, batch: dict[str, jax.Array], rng: jax.Array
                   ) -> tuple[TwoPlayerState, dict[str, jax.Array]]:
        real = self.latents(state.model_state["gc"], batch["image"])

        def discriminator_loss(params, batch, fake, rng):
            return self.critic_loss(params, real, fake, rng)

        return two_player_step(state, batch, rng, self.schedule, self.generate, self.generator_loss,
                               discriminator_loss)

    def critic_loss(self, params: Any, real: jax.Array, fake: jax.Array, rng: jax.Array
                    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """WGAN-GP's critic loss on latents ``[B, h, w, C]``: ``-(E[c(real)] - E[c(fake)]) + gp *
        penalty`` (the penalty at interpolates of real and fake, drawn with ``rng``)."""
        critic = lambda w: self.critic.apply({"params": params["discriminator"]}, w)  # noqa: E731
        wasserstein = -d_loss("wgan", critic(real), critic(fake))
        penalty = gradient_penalty(critic, real, fake, rng)
        return -wasserstein + self.gp * penalty, {"wasserstein": wasserstein, "gp": penalty}

    def eval_step(self, state: TwoPlayerState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Per-example critic scores of real latents and of as many samples (fixed key): their
        mean difference estimates the Wasserstein distance the critic sees."""
        real = self.latents(state.model_state["gc"], batch["image"])
        fake = self.sample_latents(state.params, jax.random.PRNGKey(0), real.shape[0])
        critic = lambda w: self.critic.apply({"params": state.params["discriminator"]}, w)
        return {"critic_real": critic(real), "critic_fake": critic(fake), "gap": critic(real) - critic(fake)}


def load_frozen_gc(checkpoint: str) -> tuple[ml_collections.ConfigDict, Any]:
    """``(config, generator params)`` of a GC model: a shipped name (``c4`` ...), ``.msgpack`` or workdir.

    Raises:
      ValueError: ``checkpoint`` is empty (``config.gc_model`` unset).
      jaxcomp.modelfile.ModelLoadError: not found, or not a GC model.
    """
    from jaxcomp.codecs.gc.codec import CHECKPOINTS, load_gc_model, shipped_model

    if not isinstance(checkpoint, str) or not checkpoint.strip():
        raise ValueError(f"config.gc_model must name a trained GC model (a shipped name: {', '.join(CHECKPOINTS)}; "
                         f"an exported .msgpack or a training workdir of configs/gc.py), got {checkpoint!r}")
    config, _, params = load_gc_model(shipped_model(checkpoint) if checkpoint in CHECKPOINTS else checkpoint)
    return config, params["generator"]


def check_global(spec: GCSpec, name: str) -> None:
    """``ModelLoadError`` unless ``spec`` is a global GC model: a selective (SC) one's encoder and
    generator need a label map, which the sampler's images and samples do not have."""
    from jaxcomp.modelfile import ModelLoadError

    if spec.semantic_classes:
        raise ModelLoadError(f"{name}: a selective (SC) model (semantic_classes="
                             f"{spec.semantic_classes}); the latent sampler needs a global, non-selective GC "
                             f"model (model.semantic_classes=0), whose encoder and generator need no label map")


def _jitted(task: LatentSamplerTask, name: str, fn: Callable, **jit_kwargs: Any) -> Callable:
    """``jax.jit(fn)``, made once per task (:func:`jaxcomp.train.trainer.per_task`): the host-side
    helpers below compile each shape once instead of running the networks op by op (hundreds of
    small compilations)."""
    return per_task(f"gc-sampler-{name}", task, lambda: jax.jit(fn, **jit_kwargs))


def image_latents(task: LatentSamplerTask, images: np.ndarray) -> jax.Array:
    """The frozen GC's latents of ``images`` (``uint8`` or float ``[n, crop, crop, 3]`` in [0, 255]):
    ``float32 [n, h, w, C]`` (centres), jitted."""
    latents = _jitted(task, "latents", task.latents)
    return latents(jax.tree.map(jnp.asarray, task.gc_params), jnp.asarray(images))


def sample_images(task: LatentSamplerTask, params: Any, n: int, seed: int = 0) -> np.ndarray:
    """``n`` images ``uint8 [n, crop, crop, 3]`` decoded from sampled latents."""
    w = _jitted(task, "sample", task.sample_latents, static_argnums=2)(params, jax.random.PRNGKey(seed), n)
    return decode_latents(task, w)


def prior_sample_latents(task: LatentSamplerTask, n: int, seed: int = 0) -> jax.Array:
    """Latents ``float32 [n, h, w, C]`` (centres) whose symbols are drawn i.i.d. from GC's factorized
    prior, each channel from its own row of ``prior_logits [C, 5]``."""
    shape = (n, task.side, task.side, task.gc_spec.channels)

    def draw(logits, key, shape):
        return centers()[jax.random.categorical(key, jnp.broadcast_to(logits, shape + (LEVELS,)))]

    logits = jnp.asarray(task.gc_params["prior_logits"])  # [C, 5]
    return _jitted(task, "prior", draw, static_argnums=2)(logits, jax.random.PRNGKey(seed), shape)


def prior_sample_images(task: LatentSamplerTask, n: int, seed: int = 0) -> np.ndarray:
    """The baseline: latent symbols drawn i.i.d. from GC's factorized prior, decoded by G."""
    return decode_latents(task, prior_sample_latents(task, n, seed))


def decode_latents(task: LatentSamplerTask, w_hat: jax.Array, seed: int = 0) -> np.ndarray:
    """GC's generator on latents ``[n, h, w, C]`` -> ``uint8 [n, 16h, 16w, 3]`` (noise channels,
    if the model has them, drawn with ``seed``)."""
    noise = None
    if task.gc_spec.noise_channels:
        noise = jax.random.normal(jax.random.PRNGKey(seed), w_hat.shape[:3] + (task.gc_spec.noise_channels,))
    def decode(params, w, noise):
        return jnp.round(to_pixels(task.gc.apply({"params": params}, w, noise, method=GC.decode))).astype(jnp.uint8)

    return np.asarray(_jitted(task, "decode", decode)(jax.tree.map(jnp.asarray, task.gc_params), w_hat, noise))
