"""DPLC training as two tasks of the one trainer (two-player: :mod:`jaxcomp.gan.training`).

**Stage 1, the generative model** (``config.task = "dplc_generator"``, ``config.objective``):

* ``wgan``: WGAN-GP. G maps prior samples to images; the critic is trained 5:1 with the gradient
  penalty (``gan.mode="alternate"``, ``gan.d_steps=5``); G's loss is ``-E[critic(G(z))]``.
* ``wae``: the Wasserstein auto-encoder, ``d(x, G(F(x))) + lambda * MMD(F(x), z)`` with the IMQ
  kernel (``gan.mode="none"``: the critic is never trained).
* ``wpp``: Wasserstein++, WAE's loss plus ``lambda_gan * (-E[critic(G(F(x)))])`` (F not updated by
  that term), with a WGAN-GP critic that sees real images against ``G(a F(x) + (1 - a) z)``,
  ``a ~ U[0, 1]`` per example: samples of G from the prior, from the encoder, and between
  (the reference's ``--useencdist --intencprior``).

``d`` is the distortion: ``rmse`` (the reference's ``sqrt(MSELoss)`` over the batch) or ``mse``.

**Stage 2, compression** (``config.task = "dplc"``): the rate-constrained encoder E, the stochastic
map B and the decoder (G's architecture, initialised from a stage-1 model ``compress.generator``).
The loss is ``d(x, G(B(E(x), u))) + lambda * MMD(B(E(x), u), z) + beta * adversarial``.
``compress.decoder``: ``frozen`` (DPLC: G's parameters are not trained, the optimizer's update of
them is zero, so they stay bit-equal) or ``train`` (the baselines: with ``beta = 0`` and
``lambda = 0`` the compressive auto-encoder with MSE; with ``beta > 0`` the GAN-compression
objective, adversarial + MSE, no constraint on the latent distribution). The rate is
``m * g^2 * log2(L)`` bits per image, fixed by ``model.code_channels`` and ``model.levels``.

Both stages keep the image critic as the discriminator player; its loss is WGAN-GP
(``loss.adversarial="wgan"``) or any of :func:`jaxcomp.gan.d_loss`'s kinds (``lsgan`` for the
GAN-compression baseline, as GC).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxcomp.codecs.dplc.model import (
    Critic,
    DPLCSpec,
    Generator,
    RateEncoder,
    StochasticMap,
    WAEEncoder,
    map_noise,
    sample_prior,
    spec_from_config,
    to_model_range,
    to_pixels,
)
from jaxcomp.gan import d_loss, g_loss, gradient_penalty, mmd_imq, schedule_from_config, two_player_step
from jaxcomp.metrics import psnr_from_mse
from jaxcomp.train import TwoPlayerState, make_optimizer

OBJECTIVES = ("wgan", "wae", "wpp")
DISTORTIONS = ("mse", "rmse")
ADVERSARIAL = ("wgan", "lsgan", "nonsaturating", "hinge")


def distortion(kind: str, x: jax.Array, x_hat: jax.Array) -> jax.Array:
    """``mse`` (mean over everything) or ``rmse`` (its square root, the reference's loss), ``[]``."""
    mse = jnp.mean(jnp.square(x - x_hat))
    return jnp.sqrt(mse + 1e-12) if kind == "rmse" else mse


def per_image_mse(image: jax.Array, x_hat: jax.Array) -> jax.Array:
    """MSE of the decoded ``x_hat`` (``[-1, 1]``) against ``image`` (``uint8``) in ``[0, 255]^2``, ``[B]``."""
    return jnp.mean(jnp.square(to_pixels(x_hat) - image.astype(jnp.float32)), axis=(1, 2, 3))


class _CriticLoss:
    """The discriminator player's loss shared by both stages."""

    def __init__(self, spec: DPLCSpec, loss: ml_collections.ConfigDict):
        self.critic = Critic(spec)
        self.kind = loss.get("adversarial", "wgan")
        if self.kind not in ADVERSARIAL:
            raise ValueError(f"config.loss.adversarial must be one of {ADVERSARIAL}, got {self.kind!r}")
        self.gp = loss.get("gp", 10.0)

    def score(self, params: Any, x: jax.Array) -> jax.Array:
        return self.critic.apply({"params": params["discriminator"]}, x)

    def __call__(self, params: Any, real: jax.Array, fake: jax.Array, rng: jax.Array
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
        r, f = self.score(params, real), self.score(params, fake)
        if self.kind != "wgan":
            loss = d_loss(self.kind, r, f)
            return loss, {"loss": loss, "real": jnp.mean(r), "fake": jnp.mean(f)}
        penalty = gradient_penalty(lambda x: self.score(params, x), real, fake, rng)
        wasserstein = jnp.mean(r) - jnp.mean(f)
        return -wasserstein + self.gp * penalty, {"wasserstein": wasserstein, "gp": penalty}

    def generator_term(self, params: Any, fake: jax.Array) -> jax.Array:
        return g_loss(self.kind, self.score(params, fake))


class _ImageCriticTask:
    """What both stages share: the critic player's loss on real images against ``generate``'s
    output and the trainer step (subclasses give ``critic``, ``schedule``, ``generate``,
    ``generator_loss``)."""

    critic: _CriticLoss

    def discriminator_loss(self, params, batch, fake, rng):
        return self.critic(params, to_model_range(batch["image"]), fake, rng)

    def train_step(self, state: TwoPlayerState, batch: dict[str, jax.Array], rng: jax.Array):
        return two_player_step(state, batch, rng, self.schedule, self.generate, self.generator_loss,
                               self.discriminator_loss)


def _check_images(shape: tuple[int, ...], spec: DPLCSpec) -> None:
    want = (spec.image_size, spec.image_size, spec.channels)
    if len(shape) != 4 or tuple(shape[1:]) != want:
        raise ValueError(f"this DPLC model takes images [B, {want[0]}, {want[1]}, {want[2]}], got {tuple(shape)} "
                         "(set data.crop / data.pad_to / model.image_size / model.channels to agree)")


class DPLCGeneratorTask(_ImageCriticTask):
    """Stage 1 (``config.task = "dplc_generator"``): WGAN-GP, WAE or Wasserstein++ (``config.objective``).

    Generator player ``{"decoder": G, "encoder": F}`` (no F for ``wgan``); discriminator player the
    image critic. ``config.loss``: ``distortion``, ``mmd`` (lambda), ``gan`` (lambda_gan, the weight
    of the adversarial term in G's loss: 1 for wgan), ``gp``. Batches ``{"image": uint8 [B, S, S, C]}``.
    """

    def __init__(self, config: ml_collections.ConfigDict):
        self.spec = spec_from_config(config.model)
        self.objective = config.objective
        if self.objective not in OBJECTIVES:
            raise ValueError(f"config.objective must be one of {OBJECTIVES}, got {self.objective!r}")
        self.loss = config.loss
        if self.loss.distortion not in DISTORTIONS:
            raise ValueError(f"config.loss.distortion must be one of {DISTORTIONS}, got {self.loss.distortion!r}")
        self.generator, self.encoder = Generator(self.spec), WAEEncoder(self.spec)
        self.critic = _CriticLoss(self.spec, config.loss)
        self.schedule = schedule_from_config(config.gan)
        if self.objective == "wae" and self.schedule.mode != "none":
            raise ValueError("objective 'wae' has no critic: set gan.mode='none'")
        if self.objective != "wae" and self.schedule.mode == "none":
            raise ValueError(f"objective {self.objective!r} trains a critic: gan.mode must be 'alternate' or 'joint'")
        self.tx_g, self.lr_g = make_optimizer(config.optimizer)
        self.tx_d, _ = make_optimizer(config.optimizer_d)

    def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TwoPlayerState:
        _check_images(batch["image"].shape, self.spec)
        g_rng, e_rng, d_rng = jax.random.split(rng, 3)
        x = to_model_range(batch["image"][:1])
        g = {"decoder": self.generator.init(g_rng, jnp.zeros((1, self.spec.latent)))["params"]}
        if self.objective != "wgan":
            g["encoder"] = self.encoder.init(e_rng, x)["params"]
        d = self.critic.critic.init(d_rng, x)["params"]
        return TwoPlayerState.create(g, d, self.tx_g, self.tx_d)

    def decode(self, params: Any, z: jax.Array) -> jax.Array:
        return self.generator.apply({"params": params["generator"]["decoder"]}, z)

    def encode(self, params: Any, x: jax.Array) -> jax.Array:
        return self.encoder.apply({"params": params["generator"]["encoder"]}, x)

    def generate(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array) -> jax.Array:
        """What the critic sees as fake: ``G(z)`` (wgan) or ``G(a F(x) + (1 - a) z)`` (wpp)."""
        z_rng, a_rng = jax.random.split(jax.random.fold_in(rng, 1))
        n = batch["image"].shape[0]
        z = sample_prior(self.spec, z_rng, n)
        if self.objective == "wpp":
            fz = jax.lax.stop_gradient(self.encode(params, to_model_range(batch["image"])))
            a = jax.random.uniform(a_rng, (n, 1))
            z = a * fz + (1.0 - a) * z
        return self.decode(params, z)

    def generator_loss(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array, adversarial: jax.Array
                       ) -> tuple[jax.Array, tuple[dict[str, jax.Array], jax.Array]]:
        x = to_model_range(batch["image"])
        metrics: dict[str, jax.Array] = {}
        loss = jnp.zeros((), jnp.float32)
        fake = None
        if self.objective in ("wae", "wpp"):
            fx = self.encode(params, x)
            x_hat = self.decode(params, fx)
            rec = distortion(self.loss.distortion, x, x_hat)
            mmd = mmd_imq(fx, sample_prior(self.spec, jax.random.fold_in(rng, 2), x.shape[0]), self.spec.prior_var)
            loss = rec + self.loss.mmd * mmd
            mse255 = per_image_mse(batch["image"], x_hat)
            metrics.update(reconstruction=rec, mmd=mmd, mse=jnp.mean(mse255), psnr=jnp.mean(psnr_from_mse(mse255)))
        if self.objective == "wgan":
            fake = self.generate(params, batch, rng)
            adv = self.critic.generator_term(params, fake)
            loss = loss + adversarial * adv
            metrics["g_adv"] = adv
        elif self.objective == "wpp":
            # the critic's gradient reaches G through its reconstructions, not F (no --upencwgan)
            adv = self.critic.generator_term(params, self.decode(params, jax.lax.stop_gradient(fx)))
            loss = loss + adversarial * self.loss.gan * adv
            metrics["g_adv"] = adv
        if fake is None:
            fake = self.generate(params, batch, rng)
        metrics["loss"] = loss
        return loss, (metrics, fake)

    def eval_step(self, state: TwoPlayerState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Per-example: the critic's scores of the image and of a sample (fixed key); for wae/wpp the
        reconstruction MSE (``[0, 255]^2``) and PSNR of ``G(F(x))``."""
        x = to_model_range(batch["image"])
        n = x.shape[0]
        sample = self.decode(state.params, sample_prior(self.spec, jax.random.PRNGKey(0), n))
        out = {"critic_gap": self.critic.score(state.params, x) - self.critic.score(state.params, sample)}
        if self.objective != "wgan":
            mse255 = per_image_mse(batch["image"], self.decode(state.params, self.encode(state.params, x)))
            out.update(mse=mse255, psnr=psnr_from_mse(mse255))
        return out


class DPLCTask(_ImageCriticTask):
    """Stage 2 (``config.task = "dplc"``): E, B and the decoder at the rate of ``model.code_channels``
    and ``model.levels``. See the module docstring for ``config.compress`` and ``config.loss``.

    Generator player ``{"encoder": E, "map": B, "decoder": G}``; the decoder starts as the stage-1
    model ``compress.generator`` (``compress.decoder_init="generator"``) or from scratch.
    """

    def __init__(self, config: ml_collections.ConfigDict, generator_params: Any = None):
        self.spec = spec_from_config(config.model)
        c = config.compress
        if c.decoder not in ("frozen", "train"):
            raise ValueError(f"config.compress.decoder must be 'frozen' or 'train', got {c.decoder!r}")
        if c.decoder_init not in ("generator", "scratch"):
            raise ValueError(f"config.compress.decoder_init must be 'generator' or 'scratch', got {c.decoder_init!r}")
        if c.decoder == "frozen" and c.decoder_init != "generator":
            raise ValueError("a frozen decoder must be a trained generator: compress.decoder_init='generator'")
        self.frozen = c.decoder == "frozen"
        self.loss = config.loss
        if self.loss.distortion not in DISTORTIONS:
            raise ValueError(f"config.loss.distortion must be one of {DISTORTIONS}, got {self.loss.distortion!r}")
        self.generator_params = generator_params
        if c.decoder_init == "generator" and generator_params is None:
            if not c.generator:
                raise ValueError("config.compress.generator must name a stage-1 model (a dplc_generator workdir "
                                 "or .msgpack, or a shipped name) when compress.decoder_init='generator'")
            self.generator_params = load_generator(c.generator, self.spec)
        self.encoder, self.map = RateEncoder(self.spec), StochasticMap(self.spec)
        self.generator = Generator(self.spec)
        self.critic = _CriticLoss(self.spec, config.loss)
        self.schedule = schedule_from_config(config.gan)
        if (self.loss.get("gan", 0.0) > 0) != (self.schedule.mode != "none"):
            raise ValueError("loss.gan > 0 (an adversarial term) and gan.mode != 'none' go together "
                             f"(got loss.gan={self.loss.get('gan', 0.0)}, gan.mode={self.schedule.mode!r})")
        tx_g, self.lr_g = make_optimizer(config.optimizer)
        if self.frozen:  # G's update is zero: its parameters stay bit-equal
            tx_g = optax.multi_transform({"train": tx_g, "frozen": optax.set_to_zero()}, _decoder_frozen)
        self.tx_g = tx_g
        self.tx_d, _ = make_optimizer(config.optimizer_d)

    def init(self, rng: jax.Array, batch: dict[str, jax.Array]) -> TwoPlayerState:
        _check_images(batch["image"].shape, self.spec)
        e_rng, b_rng, g_rng, d_rng = jax.random.split(rng, 4)
        x = to_model_range(batch["image"][:1])
        e_params = self.encoder.init(e_rng, x).get("params", {})  # none at 0 bits
        code, _ = self.encoder.apply({"params": e_params}, x)
        g = {"encoder": e_params, "map": self.map.init(b_rng, code, map_noise(self.spec, b_rng, 1))["params"]}
        if self.generator_params is not None:
            g["decoder"] = jax.tree.map(jnp.asarray, self.generator_params)
        else:
            g["decoder"] = self.generator.init(g_rng, jnp.zeros((1, self.spec.latent)))["params"]
        d = self.critic.critic.init(d_rng, x)["params"]
        return TwoPlayerState.create(g, d, self.tx_g, self.tx_d)

    def encode(self, params: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``x [B, S, S, C]`` in ``[-1, 1]`` -> ``(code float32 [B, g, g, m], symbols int32 [B, g, g, m])``."""
        return self.encoder.apply({"params": params["generator"]["encoder"]}, x)

    def latent(self, params: Any, code: jax.Array, noise: jax.Array) -> jax.Array:
        """B: ``(code, noise [B, g, g, k]) -> float32 [B, nz]``."""
        return self.map.apply({"params": params["generator"]["map"]}, code, noise)

    def decode(self, params: Any, z: jax.Array) -> jax.Array:
        g = params["generator"]["decoder"]
        if self.frozen:
            g = jax.lax.stop_gradient(g)
        return self.generator.apply({"params": g}, z)

    def forward(self, params: Any, image: jax.Array, rng: jax.Array) -> dict[str, jax.Array]:
        code, symbols = self.encode(params, to_model_range(image))
        z = self.latent(params, code, map_noise(self.spec, rng, image.shape[0]))
        return {"code": code, "symbols": symbols, "z": z, "x_hat": self.decode(params, z)}

    def generate(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array) -> jax.Array:
        return self.forward(params, batch["image"], rng)["x_hat"]

    def generator_loss(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array, adversarial: jax.Array
                       ) -> tuple[jax.Array, tuple[dict[str, jax.Array], jax.Array]]:
        out = self.forward(params, batch["image"], rng)
        x = to_model_range(batch["image"])
        rec = distortion(self.loss.distortion, x, out["x_hat"])
        loss = rec
        metrics = {"reconstruction": rec}
        if self.loss.mmd > 0:
            prior = sample_prior(self.spec, jax.random.fold_in(rng, 2), x.shape[0])
            mmd = mmd_imq(out["z"], prior, self.spec.prior_var)
            loss = loss + self.loss.mmd * mmd
            metrics["mmd"] = mmd
        if self.loss.get("gan", 0.0) > 0:
            adv = self.critic.generator_term(params, out["x_hat"])
            loss = loss + adversarial * self.loss.gan * adv
            metrics["g_adv"] = adv
        mse255 = per_image_mse(batch["image"], out["x_hat"])
        metrics.update(loss=loss, mse=jnp.mean(mse255), psnr=jnp.mean(psnr_from_mse(mse255)),
                       bits=jnp.float32(self.spec.bits))
        return loss, (metrics, out["x_hat"])

    def eval_step(self, state: TwoPlayerState, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        """Per-example MSE (``[0, 255]^2``) and PSNR of one stochastic decoding (fixed key), and the
        MMD-free latent statistic ``|z|^2 / nz`` (1 for latents like the N(0, I) prior)."""
        out = self.forward(state.params, batch["image"], jax.random.PRNGKey(0))
        mse255 = per_image_mse(batch["image"], out["x_hat"])
        return {"mse": mse255, "psnr": psnr_from_mse(mse255),
                "latent_power": jnp.mean(jnp.square(out["z"]), -1)}


def _decoder_frozen(params: dict[str, Any]) -> dict[str, Any]:
    """``multi_transform`` labels of the generator player: ``"frozen"`` for the decoder, else ``"train"``."""
    return {k: jax.tree.map(lambda _, label="frozen" if k == "decoder" else "train": label, v)
            for k, v in params.items()}


# The model fields that decide G's parameters (and the prior it was trained for): a stage-2 run takes
# them from its stage-1 model, whose G it freezes.
GENERATOR_FIELDS = ("image_size", "channels", "latent", "features", "prior", "prior_var", "upsample")


def load_generator(checkpoint: str, spec: DPLCSpec) -> Any:
    """G's parameters from a stage-1 model (workdir, ``.msgpack`` or shipped name); its
    :data:`GENERATOR_FIELDS` must match ``spec``'s."""
    from jaxcomp.codecs.dplc.codec import resolve_model
    from jaxcomp.modelfile import ModelLoadError, load_model

    config, params, _ = load_model(resolve_model(checkpoint), task="dplc_generator")
    theirs = spec_from_config(config.model)
    for field in GENERATOR_FIELDS:
        if getattr(theirs, field) != getattr(spec, field):
            raise ModelLoadError(f"{checkpoint}: its generator has model.{field}={getattr(theirs, field)!r} but this "
                                 f"config has {getattr(spec, field)!r}")
    return params["generator"]["decoder"]
